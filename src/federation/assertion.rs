//! Verifying a workload's JWT against a trust rule, in the order of RFC 8725: shape, algorithm
//! allow-list, signature by one of the issuer's keys, issuer, audience, time, lifetime, subject,
//! then the agent it maps to.

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::keys::IssuerKey;
use super::rule::{AgentTemplate, TrustRule};
use super::{GrantError, HubIdentity};

/// Largest assertion accepted (Kubernetes tokens are about 1 KiB, GitHub's about 1.5 KiB).
pub const MAX_ASSERTION_LEN: usize = 16 * 1024;
/// Longest `jti` kept as a replay record.
const MAX_JTI_LEN: usize = 256;

/// What an assertion says before anything is verified: enough to find its rule and key.
#[derive(Debug, Clone)]
pub struct Peeked {
    /// The claimed `iss`.
    pub issuer: String,
    /// The claimed `sub`, if it is a string.
    pub subject: Option<String>,
    /// The header's `alg`.
    pub alg: String,
    /// The header's `kid`.
    pub kid: Option<String>,
}

/// An assertion that verified against a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// Its issuer.
    pub issuer: String,
    /// Its subject.
    pub subject: String,
    /// The agent it maps to (not yet checked to exist).
    pub agent_id: String,
    /// What it is remembered by against replay: its `jti`, or its digest when it has none.
    pub replay_id: String,
    /// Its `exp`.
    pub expires_at: i64,
}

fn b64_json(part: &str, what: &str) -> Result<Map<String, Value>, GrantError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| GrantError::Malformed(format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(GrantError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
    }
}

/// Reads an assertion's header and issuer without verifying anything.
pub fn peek(token: &str) -> Result<Peeked, GrantError> {
    if token.len() > MAX_ASSERTION_LEN {
        return Err(GrantError::Oversized(MAX_ASSERTION_LEN));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, _signature] = parts[..] else {
        return Err(GrantError::Malformed(
            "the assertion is not a compact JWS (three dot-separated parts)".into(),
        ));
    };
    let header = b64_json(header, "header")?;
    let claims = b64_json(payload, "payload")?;
    let text = |map: &Map<String, Value>, name: &str| {
        map.get(name).and_then(Value::as_str).map(str::to_owned)
    };
    if header.contains_key("crit") {
        return Err(GrantError::Malformed(
            "critical header parameters are not understood".into(),
        ));
    }
    Ok(Peeked {
        issuer: text(&claims, "iss")
            .ok_or_else(|| GrantError::Malformed("the assertion has no string iss".into()))?,
        subject: text(&claims, "sub"),
        alg: text(&header, "alg")
            .ok_or_else(|| GrantError::Malformed("the header has no string alg".into()))?,
        kid: text(&header, "kid"),
    })
}

/// The algorithm an `alg` names, if it is one an issuer key may verify.
fn allowed_alg(alg: &str) -> Option<Algorithm> {
    match alg {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// The claims of `token` if one of `keys` (of the header's algorithm and `kid`) signed it.
fn verify_signature(
    token: &str,
    peeked: &Peeked,
    keys: &[IssuerKey],
) -> Result<Map<String, Value>, GrantError> {
    let alg = allowed_alg(&peeked.alg).ok_or_else(|| {
        GrantError::AlgNotAllowed(format!(
            "{:?} is not accepted: RS256, ES256 or EdDSA",
            peeked.alg
        ))
    })?;
    let candidates: Vec<&IssuerKey> = keys
        .iter()
        .filter(|key| key.alg == alg)
        .filter(|key| peeked.kid.is_none() || key.kid == peeked.kid)
        .collect();
    if candidates.is_empty() {
        return Err(GrantError::BadSignature(match &peeked.kid {
            Some(kid) => format!("the issuer has no {} key with kid {kid:?}", peeked.alg),
            None => format!("the issuer has no {} key", peeked.alg),
        }));
    }
    // Signature only: every claim is checked below, with this module's reason codes.
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    for key in candidates {
        if let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            return Ok(data.claims);
        }
    }
    Err(GrantError::BadSignature(
        "no key of the issuer verifies the signature".into(),
    ))
}

/// A NumericDate claim (RFC 7519 §2), if present; fractions are dropped.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, GrantError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| GrantError::Malformed(format!("{name} is not a number"))),
    }
}

/// Verifies `token` (already [`peek`]ed) against `rule`, with the issuer's `keys`, for the hub
/// `hub`, at `now` with `skew` seconds of clock tolerance.
pub fn verify(
    token: &str,
    peeked: &Peeked,
    rule: &TrustRule,
    keys: &[IssuerKey],
    hub: &HubIdentity,
    now: i64,
    skew: i64,
) -> Result<VerifiedAssertion, GrantError> {
    let claims = verify_signature(token, peeked, keys)?;
    if claims.get("iss").and_then(Value::as_str) != Some(rule.issuer.as_str()) {
        return Err(GrantError::UnknownIssuer(peeked.issuer.clone()));
    }
    // The audience: the rule's, which must name this hub.
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&rule.audience.as_str()) {
        return Err(GrantError::WrongAudience(format!(
            "the assertion's aud {audiences:?} does not contain {:?}",
            rule.audience
        )));
    }
    if !hub.is_named_by(&rule.audience) {
        return Err(GrantError::WrongAudience(format!(
            "rule {} wants audience {:?}, which does not name this hub ({})",
            rule.name,
            rule.audience,
            hub.issuer()
        )));
    }
    let exp = numeric_date(&claims, "exp")?
        .ok_or_else(|| GrantError::Malformed("the assertion has no exp".into()))?;
    let nbf = numeric_date(&claims, "nbf")?;
    let iat = numeric_date(&claims, "iat")?;
    if now > exp.saturating_add(skew) {
        return Err(GrantError::Expired(exp));
    }
    for start in [nbf, iat].into_iter().flatten() {
        if now.saturating_add(skew) < start {
            return Err(GrantError::NotYetValid(start));
        }
    }
    let lifetime = exp.saturating_sub(iat.or(nbf).unwrap_or(now));
    if lifetime > rule.max_assertion_lifetime {
        return Err(GrantError::LifetimeTooLong {
            lifetime,
            max: rule.max_assertion_lifetime,
        });
    }
    let subject = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => sub.to_owned(),
        _ => return Err(GrantError::Malformed("the assertion has no sub".into())),
    };
    if !rule.admits(&subject) {
        return Err(GrantError::SubjectNotAllowed(subject));
    }
    let template =
        AgentTemplate::parse(&rule.agent).map_err(|e| GrantError::Unmapped(e.to_string()))?;
    let agent_id = template
        .render(&Value::Object(claims.clone()))
        .map_err(|e| GrantError::Unmapped(format!("rule {}: {e}", rule.name)))?;
    let replay_id = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_LEN => {
            format!("jti:{jti}")
        }
        Some(_) => {
            return Err(GrantError::Malformed(format!(
                "jti must be a string of 1-{MAX_JTI_LEN} bytes"
            )));
        }
        None => format!("sha256:{:x}", Sha256::digest(token.as_bytes())),
    };
    Ok(VerifiedAssertion {
        issuer: rule.issuer.clone(),
        subject,
        agent_id,
        replay_id,
        expires_at: exp,
    })
}
