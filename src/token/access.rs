//! Access tokens for the HTTP hub: RFC 9068 JWTs (`typ` `at+jwt`) signed by the CA, each bound
//! to one agent (`sub`, `client_id`) and one resource server (`aud`), with scopes that say which
//! of the agent's operations the bearer may use.
//!
//! Access tokens are compact JWS signed with the CA's first key only, so that even a hybrid CA's
//! tokens fit an `Authorization` header; they are verified by the hub that issued them.

use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoError, PublicKey, SigningKey};
use crate::jose::{self, EdAlgName, Jws};
use crate::reason::VerifyError;
use crate::token::trust::RevocationSource;
use crate::token::trust::TrustAnchor;

/// The `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TYP: &str = "at+jwt";
/// Default access token lifetime: one hour.
pub const DEFAULT_ACCESS_TTL: i64 = 3_600;
/// Longest lifetime an access token may be issued for: one day.
pub const MAX_ACCESS_TTL: i64 = 86_400;
/// Largest access token accepted: it travels in an HTTP header.
pub const MAX_ACCESS_TOKEN_LEN: usize = 8 * 1024;

/// What an access token lets its bearer do as its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Scope {
    /// Sign with the agent's keys: action tokens and proofs of possession.
    #[serde(rename = "agentseal:sign")]
    Sign,
    /// Read the agent's identity, issue challenges, verify peers, check revocation.
    #[serde(rename = "agentseal:verify")]
    Verify,
    /// Revoke the agent's own tokens and certificates.
    #[serde(rename = "agentseal:revoke")]
    Revoke,
}

impl Scope {
    /// Every scope, the default grant.
    pub const ALL: [Scope; 3] = [Scope::Sign, Scope::Verify, Scope::Revoke];

    /// The scope's name in the `scope` claim.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Sign => "agentseal:sign",
            Scope::Verify => "agentseal:verify",
            Scope::Revoke => "agentseal:revoke",
        }
    }

    /// The scope called `name`, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Parses a space-separated scope list, refusing names it does not know (for issuing).
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::new();
        for name in text.split_whitespace() {
            let scope = Scope::from_name(name).ok_or_else(|| {
                format!(
                    "unknown scope {name:?}: use {}",
                    Scope::ALL.map(Scope::name).join(", ")
                )
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err("give at least one scope".into());
        }
        scopes.sort();
        Ok(scopes)
    }
}

/// The claims of an access token (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The CA id.
    pub iss: String,
    /// The agent the bearer acts as.
    pub sub: String,
    /// The resource server (the hub's MCP endpoint URL).
    pub aud: String,
    /// The client: the agent itself.
    pub client_id: String,
    /// Issued at.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Expires at.
    pub exp: i64,
    /// Token id, revocable like any token's.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
}

/// A verified access token: who the bearer acts as, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The agent.
    pub agent_id: String,
    /// The scopes granted (names this version does not know are dropped).
    pub scopes: Vec<Scope>,
    /// The token id (`None` for a grant made without a token).
    pub jti: Option<String>,
    /// When the token expires.
    pub exp: Option<i64>,
}

impl AccessGrant {
    /// A grant of every scope to `agent_id` without a token: only for a server the operator
    /// explicitly runs without authorization, on loopback.
    pub fn unauthenticated(agent_id: &str) -> Self {
        AccessGrant {
            agent_id: agent_id.to_owned(),
            scopes: Scope::ALL.to_vec(),
            jti: None,
            exp: None,
        }
    }

    /// Whether the grant includes `scope`.
    pub fn permits(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Signs `claims` with the CA's key.
pub fn issue(claims: &AccessClaims, ca_key: &SigningKey) -> Result<String, CryptoError> {
    jose::sign(claims, ACCESS_TYP, &[ca_key], EdAlgName::EdDsa)
}

/// Verifies an access token for the resource server `audience`: size, compact form, `typ`,
/// the CA's signature (first CA key, `alg` allow-listed), `iss`, then ([`check_current`]) `aud`,
/// `exp`, `nbf` and revocation of its id.
pub fn verify(
    token: &str,
    anchor: &TrustAnchor,
    audience: &str,
    revocation: &dyn RevocationSource,
    now: i64,
    skew: i64,
) -> Result<AccessGrant, VerifyError> {
    check_current(
        verify_signed(token, anchor)?,
        audience,
        revocation,
        now,
        skew,
    )
}

/// What cannot change about an access token: size, compact form, `typ`, `iss` and the CA's
/// signature (first CA key, `alg` allow-listed). Its claims, for [`check_current`].
pub fn verify_signed(token: &str, anchor: &TrustAnchor) -> Result<AccessClaims, VerifyError> {
    let jws = Jws::parse_limited(token, MAX_ACCESS_TOKEN_LEN)?;
    if jws.signatures.len() != 1 || token.starts_with('{') {
        return Err(VerifyError::malformed(
            "an access token is a compact JWS with one signature",
        ));
    }
    jws.check_typ(ACCESS_TYP)?;
    let claims: AccessClaims = jose::parse_strict_object(&jws.payload, "access token claims")?;
    let Some(first) = anchor.keys.first() else {
        return Err(VerifyError::UnknownIssuer(claims.iss));
    };
    if claims.iss != anchor.ca_id {
        return Err(VerifyError::UnknownIssuer(claims.iss));
    }
    // Signed with the CA's first key; during a rotation's overlap, either generation's.
    let keys: Vec<PublicKey> = anchor
        .keys
        .iter()
        .filter(|k| k.algorithm() == first.algorithm())
        .cloned()
        .collect();
    jws.verify_by_generation(&keys)?;
    Ok(claims)
}

/// What must hold at every use of signature-verified `claims`: the audience is `audience`, the
/// token is within its lifetime, names one agent, and is not revoked. The grant it carries.
pub fn check_current(
    claims: AccessClaims,
    audience: &str,
    revocation: &dyn RevocationSource,
    now: i64,
    skew: i64,
) -> Result<AccessGrant, VerifyError> {
    if claims.aud != audience {
        return Err(VerifyError::WrongAudience {
            expected: audience.to_owned(),
            found: claims.aud,
        });
    }
    if now > claims.exp.saturating_add(skew) {
        return Err(VerifyError::Expired(claims.exp));
    }
    if now.saturating_add(skew) < claims.nbf.max(claims.iat) {
        return Err(VerifyError::NotYetValid(claims.nbf));
    }
    if claims.sub.is_empty() || claims.client_id != claims.sub {
        return Err(VerifyError::malformed(
            "access token sub and client_id must name the same agent",
        ));
    }
    if let Some(entry) = revocation.token_revocation(&claims.jti, now)? {
        return Err(VerifyError::Revoked {
            jti: claims.jti,
            reason: entry.reason,
        });
    }
    Ok(AccessGrant {
        agent_id: claims.sub,
        scopes: claims
            .scope
            .split_whitespace()
            .filter_map(Scope::from_name)
            .collect(),
        jti: Some(claims.jti),
        exp: Some(claims.exp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Algorithm, Seed};
    use crate::token::revocation::{CrlClaims, RevocationList};
    use crate::token::trust::RevocationEntry;

    const AUD: &str = "http://127.0.0.1:7777/mcp";

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_seed(Algorithm::Ed25519, &Seed::from_slice(&[byte; 32]).unwrap())
    }

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "urn:ca".into(),
            sub: "agent://a".into(),
            aud: AUD.into(),
            client_id: "agent://a".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: "jti-1".into(),
            scope: "agentseal:verify agentseal:future".into(),
        }
    }

    fn crl(revoked: &[&str]) -> RevocationList {
        RevocationList::from_claims(
            CrlClaims {
                iss: "urn:ca".into(),
                number: 1,
                iat: 0,
                next_update: i64::MAX / 2,
                revoked_certificates: vec![],
                revoked_tokens: revoked
                    .iter()
                    .map(|id| RevocationEntry {
                        id: (*id).into(),
                        revoked_at: 0,
                        reason: "r".into(),
                    })
                    .collect(),
                audit_checkpoint: None,
                ca_keys: None,
            },
            0,
        )
    }

    #[test]
    fn access_tokens_verify_only_as_issued_for_this_hub() {
        let now = crate::clock::now();
        let ca = key(1);
        let anchor = TrustAnchor {
            ca_id: "urn:ca".into(),
            keys: vec![ca.public_key().clone(), key(3).public_key().clone()],
        };
        let check = |token: &str, revoked: &[&str]| {
            verify(token, &anchor, AUD, &crl(revoked), now, 60).map_err(|e| e.code())
        };
        let good = issue(&claims(now), &ca).unwrap();
        let grant = check(&good, &[]).unwrap();
        assert_eq!(grant.agent_id, "agent://a");
        // Unknown scope names are dropped, known ones kept.
        assert_eq!(grant.scopes, vec![Scope::Verify]);
        assert!(!grant.permits(Scope::Sign));

        assert_eq!(check(&good, &["jti-1"]), Err("revoked"));
        // Another kind of object with the same claims (type confusion).
        let cert_typ =
            jose::sign(&claims(now), "agent-cert+jwt", &[&ca], EdAlgName::EdDsa).unwrap();
        assert_eq!(check(&cert_typ, &[]), Err("wrong_type"));
        // Signed by a key that is not the CA's.
        assert_eq!(
            check(&issue(&claims(now), &key(2)).unwrap(), &[]),
            Err("bad_signature")
        );
        // Two keys of the first key's algorithm are two generations of the CA (a rotation's
        // overlap): either signs; once one is retired, only the other.
        assert!(check(&issue(&claims(now), &key(3)).unwrap(), &[]).is_ok());
        let retired = TrustAnchor {
            ca_id: "urn:ca".into(),
            keys: vec![ca.public_key().clone()],
        };
        let old = issue(&claims(now), &key(3)).unwrap();
        assert_eq!(
            verify(&old, &retired, AUD, &crl(&[]), now, 60).map_err(|e| e.code()),
            Err("bad_signature")
        );
        // The JSON serialization, even validly signed, is not an access token.
        let json = jose::sign(&claims(now), ACCESS_TYP, &[&ca, &ca], EdAlgName::EdDsa).unwrap();
        assert_eq!(check(&json, &[]), Err("malformed"));
        for (adjust, code) in [
            (
                Box::new(|c: &mut AccessClaims| c.iss = "urn:other".into())
                    as Box<dyn Fn(&mut AccessClaims)>,
                "unknown_issuer",
            ),
            (
                Box::new(|c| c.aud = "http://elsewhere/mcp".into()),
                "wrong_audience",
            ),
            (Box::new(|c| c.exp = now - 61), "expired"),
            (Box::new(|c| c.nbf = now + 61), "not_yet_valid"),
            (Box::new(|c| c.iat = now + 61), "not_yet_valid"),
            (Box::new(|c| c.client_id = "agent://b".into()), "malformed"),
            (Box::new(|c| c.sub = String::new()), "malformed"),
        ] {
            let mut bad = claims(now);
            adjust(&mut bad);
            assert_eq!(check(&issue(&bad, &ca).unwrap(), &[]), Err(code), "{bad:?}");
        }
        let oversized = format!("{good}{}", "A".repeat(MAX_ACCESS_TOKEN_LEN));
        assert_eq!(check(&oversized, &[]), Err("oversized"));
    }

    #[test]
    fn scope_lists_parse_strictly_and_dedupe() {
        assert_eq!(
            Scope::parse_list("agentseal:verify agentseal:sign agentseal:verify").unwrap(),
            vec![Scope::Sign, Scope::Verify]
        );
        assert!(Scope::parse_list("agentseal:admin").is_err());
        assert!(Scope::parse_list("  ").is_err());
    }
}
