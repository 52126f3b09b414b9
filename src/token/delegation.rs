//! Delegation chains (RFC 8693 actor chains): an agent lets another act for it, within bounds.
//!
//! A **grant** is a JWT signed by the delegating agent (`typ` `agent-delegation+jwt`) that names
//! the delegate, the principal the whole chain acts for, the actions, audiences and scopes the
//! delegate may use (a subset of the delegator's own), and a lifetime inside the delegator's.
//! A delegate can delegate further; each grant names its parent grant's id.
//!
//! A token made under a chain has `sub` = the principal, `act` = the RFC 8693 actor chain
//! (current actor, the signer, outermost) and `dlg` = the grants, root first. A verifier checks
//! the whole chain offline: each grant's signature by its delegator's certified keys, that the
//! links connect, that actions, audiences and scopes only narrow and lifetimes only shrink, that
//! nothing in it is revoked, that no party appears twice, and that it is no deeper than allowed.
//!
//! The principal is either an agent (then the first grant is signed by it) or a person outside
//! the CA, a `user:` id named by the first agent: that first link is the agent's assertion, which
//! every grant and the token then carry unchanged. Only `user:` principals may be asserted, so a
//! token can never name another agent as its principal without that agent's grant.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crypto::{CryptoError, SigningKey};
use crate::jose::{self, EdAlgName, Jws};
use crate::reason::VerifyError;
use crate::request::{RequestError, check_text};
use crate::token::certificate::AgentCertificate;

/// The `typ` of a delegation grant.
pub const GRANT_TYP: &str = "agent-delegation+jwt";
/// Default bound on the number of actors in a chain (the signer included).
pub const DEFAULT_MAX_DEPTH: usize = 5;
/// Longest lifetime of a grant: one day.
pub const MAX_GRANT_TTL: i64 = 86_400;
/// The action pattern that allows every action (only a root grant may use it).
pub const ANY_ACTION: &str = "*";
/// The scheme of principals outside the CA (people): only these may be named on an agent's
/// word; any other principal must have signed the chain's first grant.
pub const USER_SCHEME: &str = "user:";

/// `principal` with a `user:` scheme written in any case (`User:`, `USER:`) spelled `user:`, so
/// that one person has one spelling in every grant and token; anything else unchanged.
pub fn normalize_principal(principal: &str) -> std::borrow::Cow<'_, str> {
    match principal.get(..USER_SCHEME.len()) {
        Some(scheme) if scheme != USER_SCHEME && scheme.eq_ignore_ascii_case(USER_SCHEME) => {
            format!("{USER_SCHEME}{}", &principal[USER_SCHEME.len()..]).into()
        }
        _ => principal.into(),
    }
}

/// Whether `principal` is a well-formed party outside the CA: `user:` then 1 to 250 printable
/// ASCII characters (no spaces or look-alike Unicode that could pass for an agent id).
pub fn is_user_principal(principal: &str) -> bool {
    principal.strip_prefix(USER_SCHEME).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 250 && rest.bytes().all(|b| b.is_ascii_graphic())
    })
}

/// The claims of a delegation grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantClaims {
    /// The delegating agent.
    pub iss: String,
    /// The delegate.
    pub sub: String,
    /// The principal the chain acts for (an agent id, or a party outside the CA).
    pub principal: String,
    /// Serial of the delegator's certificate.
    pub cert: String,
    /// Issued at.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Expires at.
    pub exp: i64,
    /// Grant id (revocable like a token id).
    pub jti: String,
    /// Id of the grant the delegator itself acts under (`None` for the first grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Actions the delegate may authorize ([`ANY_ACTION`] for any).
    pub actions: Vec<String>,
    /// Audiences the delegate may address (`None`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// Space-separated scopes the delegate may use in its tokens (`None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What a delegator grants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrantRequest {
    /// The delegate's agent id.
    pub delegate: String,
    /// Allowed actions ([`ANY_ACTION`] for any).
    pub actions: Vec<String>,
    /// Allowed audiences (`None`: any).
    pub audiences: Option<Vec<String>>,
    /// Allowed scopes, space-separated.
    pub scope: Option<String>,
    /// Lifetime in seconds.
    pub ttl: i64,
}

impl GrantRequest {
    /// Refuses what no policy can make a valid grant: no action, more than 64 actions or
    /// audiences, an entry empty, oversized or with control characters, a lifetime out of
    /// bounds. (Whether the delegate is a valid agent id, and the chain, are the authority's.)
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.actions.is_empty() {
            return Err(RequestError::NoAction);
        }
        for (field, values, limit) in [
            ("action", self.actions.as_slice(), 128),
            (
                "audience",
                self.audiences.as_deref().unwrap_or_default(),
                512,
            ),
        ] {
            if values.len() > 64
                || values
                    .iter()
                    .any(|v| v.is_empty() || check_text(field, v, limit).is_err())
            {
                return Err(RequestError::List {
                    field,
                    count: 64,
                    limit,
                });
            }
        }
        if self.ttl <= 0 || self.ttl > MAX_GRANT_TTL {
            return Err(RequestError::TtlOutOfRange {
                what: "delegation",
                max: MAX_GRANT_TTL,
            });
        }
        Ok(())
    }
}

/// The chain a token is signed under: what [`crate::token::action::sign`] writes into `sub`, `act` and
/// `dlg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// The principal.
    pub principal: String,
    /// The actors before the signer, principal side first (the signer is not in it).
    pub actors: Vec<String>,
    /// The grants, root first.
    pub grants: Vec<String>,
}

impl Chain {
    /// The RFC 8693 `act` claim for `signer`: `{"sub": signer, "act": {"sub": previous, ...}}`.
    pub fn act(&self, signer: &str) -> Value {
        let mut act: Option<Value> = None;
        for actor in self.actors.iter().map(String::as_str).chain([signer]) {
            let mut object = Map::new();
            object.insert("sub".into(), Value::String(actor.to_owned()));
            if let Some(inner) = act.take() {
                object.insert("act".into(), inner);
            }
            act = Some(Value::Object(object));
        }
        act.expect("the signer is always an actor")
    }
}

/// Signs a grant from the holder of `certificate` and `keys`, acting for `principal` under
/// `parent` (the grant it holds itself, `None` if it acts for itself or asserts a user).
pub fn grant(
    certificate: &AgentCertificate,
    keys: &[&SigningKey],
    principal: &str,
    parent: Option<&GrantClaims>,
    request: &GrantRequest,
    now: i64,
) -> Result<(String, GrantClaims), CryptoError> {
    let claims = GrantClaims {
        iss: certificate.claims.sub.clone(),
        sub: request.delegate.clone(),
        principal: principal.to_owned(),
        cert: certificate.claims.jti.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(request.ttl),
        jti: crate::clock::random_id()?,
        parent: parent.map(|p| p.jti.clone()),
        actions: request.actions.clone(),
        audiences: request.audiences.clone(),
        scope: request.scope.clone(),
    };
    let encoded = jose::sign(&claims, GRANT_TYP, keys, EdAlgName::EdDsa)?;
    Ok((encoded, claims))
}

/// Reads a grant's claims without verifying anything.
pub fn parse_unverified(encoded: &str) -> Result<(Jws, GrantClaims), VerifyError> {
    let jws = Jws::parse(encoded)?;
    jws.check_typ(GRANT_TYP)?;
    let claims = jose::parse_strict_object(&jws.payload, "grant claims")?;
    Ok((jws, claims))
}

/// Whether `child` allows nothing `parent` does not: actions, audiences and scopes.
pub fn narrows(parent: &GrantClaims, child: &GrantClaims) -> Result<(), String> {
    for action in &child.actions {
        if !action_allowed(parent, action) {
            return Err(format!(
                "action {action:?} is not granted to {}",
                parent.sub
            ));
        }
    }
    match (&parent.audiences, &child.audiences) {
        (None, _) => {}
        (Some(_), None) => {
            return Err(format!("{} may only address some audiences", parent.sub));
        }
        (Some(allowed), Some(asked)) => {
            if let Some(extra) = asked.iter().find(|a| !allowed.contains(a)) {
                return Err(format!(
                    "audience {extra:?} is not granted to {}",
                    parent.sub
                ));
            }
        }
    }
    scope_within(parent.scope.as_deref(), child.scope.as_deref())
        .map_err(|extra| format!("scope {extra:?} is not granted to {}", parent.sub))
}

/// Whether `grant` lets its delegate authorize `action`.
pub fn action_allowed(grant: &GrantClaims, action: &str) -> bool {
    grant.actions.iter().any(|a| a == ANY_ACTION || a == action)
}

/// Whether `grant` lets its delegate address `audience`.
pub fn audience_allowed(grant: &GrantClaims, audience: &str) -> bool {
    grant
        .audiences
        .as_ref()
        .is_none_or(|allowed| allowed.iter().any(|a| a == audience))
}

/// `Err(scope)` names the first scope in `asked` that `allowed` lacks.
pub fn scope_within(allowed: Option<&str>, asked: Option<&str>) -> Result<(), String> {
    let allowed: Vec<&str> = allowed.unwrap_or_default().split_whitespace().collect();
    match asked
        .unwrap_or_default()
        .split_whitespace()
        .find(|s| !allowed.contains(s))
    {
        Some(extra) => Err(extra.to_owned()),
        None => Ok(()),
    }
}

/// The actors an `act` claim names, outermost (the current actor) first.
pub fn actors_of(act: &Value) -> Result<Vec<String>, VerifyError> {
    let mut actors = Vec::new();
    let mut current = Some(act);
    while let Some(value) = current {
        let object = value
            .as_object()
            .ok_or_else(|| VerifyError::malformed("act is not an object"))?;
        if object.keys().any(|k| k != "sub" && k != "act") {
            return Err(VerifyError::malformed(
                "act has members other than sub and act",
            ));
        }
        let sub = object
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::malformed("act without a string sub"))?;
        actors.push(sub.to_owned());
        if actors.len() > 64 {
            return Err(VerifyError::malformed("act nests too deeply"));
        }
        current = object.get("act");
    }
    Ok(actors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(actions: &[&str], audiences: Option<&[&str]>, scope: Option<&str>) -> GrantClaims {
        GrantClaims {
            iss: "agent://p".into(),
            sub: "agent://c".into(),
            principal: "agent://p".into(),
            cert: "s".into(),
            iat: 0,
            nbf: 0,
            exp: 10,
            jti: "j".into(),
            parent: None,
            actions: actions.iter().map(|s| s.to_string()).collect(),
            audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
            scope: scope.map(str::to_owned),
        }
    }

    #[test]
    fn narrowing_allows_subsets_and_names_what_escalates() {
        let parent = claims(&["deploy", "read"], Some(&["svc"]), Some("a b"));
        assert!(narrows(&parent, &claims(&["read"], Some(&["svc"]), Some("a"))).is_ok());
        let more_actions = narrows(&parent, &claims(&["delete"], Some(&["svc"]), None));
        assert!(more_actions.unwrap_err().contains("delete"));
        let any_audience = narrows(&parent, &claims(&["read"], None, None));
        assert!(any_audience.is_err());
        let more_scope = narrows(&parent, &claims(&["read"], Some(&["svc"]), Some("a c")));
        assert!(more_scope.unwrap_err().contains("\"c\""));
        let star = claims(&["*"], None, Some("a"));
        assert!(narrows(&star, &claims(&["anything"], Some(&["x"]), Some("a"))).is_ok());
        assert!(narrows(&parent, &claims(&["*"], Some(&["svc"]), None)).is_err());
    }

    #[test]
    fn act_claims_nest_current_actor_outermost_and_parse_back() {
        let chain = Chain {
            principal: "user:ann".into(),
            actors: vec!["agent://p".into(), "agent://q".into()],
            grants: vec![],
        };
        let act = chain.act("agent://c");
        assert_eq!(
            act,
            serde_json::json!({"sub": "agent://c", "act": {"sub": "agent://q", "act": {"sub": "agent://p"}}})
        );
        assert_eq!(
            actors_of(&act).unwrap(),
            ["agent://c", "agent://q", "agent://p"]
        );
        assert!(actors_of(&serde_json::json!({"sub": 1})).is_err());
        assert!(actors_of(&serde_json::json!({"sub": "a", "x": 1})).is_err());
    }
}
