//! Workload identity federation (see [`crate::federation`]): the operator's trust rules, kept in
//! the database so that every hub sharing it applies them, and the token exchange itself.

use std::sync::Arc;

use crate::audit::Decision;
use crate::federation::assertion::{self, Peeked, VerifiedAssertion};
use crate::federation::request::TokenRequest;
use crate::federation::{Grant, GrantError, HubIdentity, IssuerKey, IssuerKeys, TrustRule};

use super::*;

/// Where each rule is kept: one metadata entry per rule, named after it.
const RULE_PREFIX: &str = "federation.rule.";
/// The public base URL the hub last ran at.
const PUBLIC_URL: &str = "hub.public_url";
/// Longest string an audit record or signal takes from an assertion.
const MAX_RECORDED: usize = 256;

fn shorten(text: &str) -> String {
    text.chars().take(MAX_RECORDED).collect()
}

/// A store failure as a refusal of the exchange.
fn server(error: ServiceError) -> GrantError {
    GrantError::Server {
        code: error.code(),
        retryable: matches!(
            error.code(),
            "database_unavailable" | "revocation_unavailable"
        ),
        message: error.to_string(),
    }
}

impl Installation {
    /// Records a trust rule. A rule of the same name is replaced only with `replace`; all rules
    /// of one issuer must use the same keys (an issuer has one key set).
    pub fn trust_workloads(&self, rule: &TrustRule, replace: bool) -> Result<(), ServiceError> {
        rule.validate()
            .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
        for other in self.federation_rules()? {
            if other.name == rule.name {
                if !replace {
                    return Err(ServiceError::InvalidInput(format!(
                        "a rule named {} exists: remove it first, or pass --replace",
                        rule.name
                    )));
                }
                continue;
            }
            if other.issuer == rule.issuer && other.keys != rule.keys {
                return Err(ServiceError::InvalidInput(format!(
                    "rule {} trusts issuer {} with other keys: one issuer has one key set, so give the same --jwks-url or --jwks-file, or remove that rule",
                    other.name, rule.issuer
                )));
            }
        }
        let json = serde_json::to_string(rule)
            .map_err(|e| ServiceError::InvalidInput(format!("rule: {e}")))?;
        self.store
            .set_meta(&[(&format!("{RULE_PREFIX}{}", rule.name), &json)])?;
        tracing::info!(rule = %rule.name, issuer = %rule.issuer, "workload trust rule recorded");
        Ok(())
    }

    /// Every trust rule, by name.
    pub fn federation_rules(&self) -> Result<Vec<TrustRule>, ServiceError> {
        let mut rules = Vec::new();
        for (key, json) in self.store.meta_prefixed(RULE_PREFIX)? {
            let rule: TrustRule = serde_json::from_str(&json)
                .map_err(|e| ServiceError::CorruptRecord(format!("trust rule {key}: {e}")))?;
            rules.push(rule);
        }
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rules)
    }

    /// Removes the rule `name`; false if there was none.
    pub fn remove_federation_rule(&self, name: &str) -> Result<bool, ServiceError> {
        let key = format!("{RULE_PREFIX}{name}");
        if self.store.meta(&key)?.is_none() {
            return Ok(false);
        }
        self.store.remove_meta(&[&key])?;
        Ok(true)
    }

    /// Records the public base URL the hub runs at, for `access-token issue` and `federation
    /// trust` to default to.
    pub fn record_public_url(&self, base: &str) -> Result<(), ServiceError> {
        if self.store.meta(PUBLIC_URL)?.as_deref() != Some(base) {
            self.store.set_meta(&[(PUBLIC_URL, base)])?;
        }
        Ok(())
    }

    /// The public base URL the hub last ran at (`http(s)://host[:port]/`), if it ever ran.
    pub fn public_url(&self) -> Result<Option<String>, ServiceError> {
        Ok(self.store.meta(PUBLIC_URL)?)
    }

    /// The rules that trust `peeked`'s issuer, the one for its (claimed) subject first.
    fn rules_for(&self, peeked: &Peeked) -> Result<Vec<TrustRule>, GrantError> {
        let mut rules: Vec<TrustRule> = self
            .federation_rules()
            .map_err(server)?
            .into_iter()
            .filter(|rule| rule.issuer == peeked.issuer)
            .collect();
        if rules.is_empty() {
            return Err(GrantError::UnknownIssuer(shorten(&peeked.issuer)));
        }
        if let Some(subject) = &peeked.subject
            && let Some(at) = rules.iter().position(|rule| rule.admits(subject))
        {
            rules.swap(0, at);
        }
        Ok(rules)
    }

    /// Issues the access token for a verified assertion: the agent must exist and not be
    /// revoked, the scopes asked for must be the rule's, and the assertion is consumed once.
    fn grant_for(
        &self,
        verified: &VerifiedAssertion,
        rule: &TrustRule,
        request: &TokenRequest,
        hub: &HubIdentity,
        now: i64,
    ) -> Result<IssuedAccess, GrantError> {
        let scopes = match &request.scope {
            None => rule.scopes.clone(),
            Some(asked) => {
                let asked = Scope::parse_list(asked).map_err(GrantError::ScopeExceeded)?;
                if let Some(beyond) = asked.iter().find(|s| !rule.scopes.contains(s)) {
                    return Err(GrantError::ScopeExceeded(format!(
                        "rule {} does not grant {}",
                        rule.name,
                        beyond.name()
                    )));
                }
                asked
            }
        };
        match self.agent_cut_off(&verified.agent_id, now) {
            Ok(None) => {}
            Ok(Some(why)) => return Err(GrantError::UnknownAgent(why)),
            Err(error) => return Err(server(error)),
        }
        // Never longer than the rule allows, nor than the assertion itself lives.
        let ttl = rule.max_ttl.min(verified.expires_at.saturating_sub(now));
        if ttl <= 0 {
            return Err(GrantError::Expired(verified.expires_at));
        }
        let fresh = self
            .store
            .consume(
                &format!("workload:{}", verified.issuer),
                &verified.replay_id,
                verified.expires_at.saturating_add(clock::DEFAULT_SKEW),
                now,
            )
            .map_err(|e| server(e.into()))?;
        if !fresh {
            return Err(GrantError::Replayed);
        }
        self.issue_access_token(&verified.agent_id, &hub.resource(), Some(ttl), &scopes)
            .map_err(server)
    }

    /// Why `agent_id` may not be granted access now (unknown, or its current certificate
    /// revoked), if so.
    fn agent_cut_off(&self, agent_id: &str, now: i64) -> Result<Option<String>, ServiceError> {
        let Some(agent) = self.store.agent(agent_id)? else {
            return Ok(Some(format!("no agent {agent_id:?} in this installation")));
        };
        let serial = agent.current_serial.unwrap_or_default();
        Ok(self
            .store
            .certificate_revocation(&serial, now)
            .map_err(ServiceError::Unverifiable)?
            .map(|_| format!("agent {agent_id}'s certificate {serial} is revoked")))
    }

    /// The synchronous part of an exchange, once the issuer's keys are at hand: verify, grant,
    /// and record the outcome in the audit log and signals. A token whose issuance cannot be
    /// audited is withheld.
    fn complete_exchange(
        &self,
        request: &TokenRequest,
        peeked: &Peeked,
        rule: &TrustRule,
        keys: Result<Arc<Vec<IssuerKey>>, GrantError>,
        hub: &HubIdentity,
    ) -> Result<IssuedAccess, GrantError> {
        let now = clock::now();
        let verified = keys.and_then(|keys| {
            assertion::verify(
                &request.assertion,
                peeked,
                rule,
                &keys,
                hub,
                now,
                clock::DEFAULT_SKEW,
            )
        });
        let outcome = verified
            .clone()
            .and_then(|verified| self.grant_for(&verified, rule, request, hub, now));
        self.record_exchange(
            request.grant,
            peeked,
            Some(rule),
            verified.ok().as_ref(),
            &outcome,
        )
    }

    /// Appends the exchange's audit record and signal; passes the outcome on, or withholds a
    /// token that could not be recorded.
    fn record_exchange(
        &self,
        grant: Grant,
        peeked: &Peeked,
        rule: Option<&TrustRule>,
        verified: Option<&VerifiedAssertion>,
        outcome: &Result<IssuedAccess, GrantError>,
    ) -> Result<IssuedAccess, GrantError> {
        let actor = match (verified, outcome) {
            (Some(verified), _) => verified.agent_id.clone(),
            _ => format!("workload:{}", shorten(&peeked.issuer)),
        };
        let decision = match outcome {
            Ok(_) => Decision::Allowed,
            Err(error) if error.is_server_side() => Decision::Failed,
            Err(_) => Decision::Denied,
        };
        let mut event = AuditEvent::new(&actor, "oauth.token", decision);
        let mut details = serde_json::Map::new();
        details.insert("grant_type".into(), grant.name().into());
        details.insert("issuer".into(), shorten(&peeked.issuer).into());
        if let Some(rule) = rule {
            details.insert("rule".into(), rule.name.clone().into());
        }
        if let Some(subject) = verified
            .map(|v| v.subject.as_str())
            .or(peeked.subject.as_deref())
        {
            details.insert("subject".into(), shorten(subject).into());
        }
        match outcome {
            Ok(issued) => {
                details.insert("agent_id".into(), issued.agent_id.clone().into());
                details.insert("token_id".into(), issued.jti.clone().into());
                details.insert("scope".into(), issued.scope.clone().into());
                details.insert("expires_at".into(), issued.exp.into());
            }
            Err(error) => event.reasons = vec![error.reason().to_owned()],
        }
        event.details = details.clone();
        let (kind, agent) = match outcome {
            Ok(issued) => (
                SignalKind::WorkloadTokenIssued,
                Some(issued.agent_id.as_str()),
            ),
            Err(_) => (SignalKind::WorkloadTokenRefused, None),
        };
        if let Err(error) = outcome {
            details.insert("reason".into(), error.reason().into());
        }
        details.remove("token_id");
        self.signal(kind, agent, Value::Object(details));
        match self.release(&event, outcome.clone()) {
            Ok(issued) => Ok(issued),
            Err(Withheld::Failed(error)) => Err(error),
            Err(Withheld::Unaudited(error)) => Err(server(error)),
        }
    }
}

/// Exchanges a workload's JWT for an access token of the hub `hub`: finds the issuer's rule,
/// gets its keys through `keys` (fetching if due), verifies the assertion and grants. Every
/// outcome for an assertion that parses is in the audit log and signals; a request whose
/// assertion is not even a JWT is refused without a record.
pub async fn exchange(
    installation: Arc<Installation>,
    keys: &IssuerKeys,
    request: TokenRequest,
    hub: HubIdentity,
) -> Result<IssuedAccess, GrantError> {
    let peeked = assertion::peek(&request.assertion)?;
    let lost = |e: tokio::task::JoinError| GrantError::Server {
        code: "internal_error",
        message: e.to_string(),
        retryable: false,
    };
    let (rules, request, peeked) = {
        let installation = installation.clone();
        tokio::task::spawn_blocking(move || {
            let rules = installation.rules_for(&peeked);
            if let Err(refusal) = &rules {
                let refused = Err(refusal.clone());
                let _ = installation.record_exchange(request.grant, &peeked, None, None, &refused);
            }
            (rules, request, peeked)
        })
        .await
        .map_err(lost)?
    };
    let rule = rules?.swap_remove(0);
    let fetched = keys.keys_for(&rule, peeked.kid.as_deref()).await;
    tokio::task::spawn_blocking(move || {
        installation.complete_exchange(&request, &peeked, &rule, fetched, &hub)
    })
    .await
    .map_err(lost)?
}
