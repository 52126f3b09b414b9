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
/// Most keys tried for an assertion that names no `kid`: bounds the work one request can cause.
const MAX_KEYS_WITHOUT_KID: usize = 4;

/// `text` cut to `max` characters, for messages that quote what a caller sent.
fn quoted(text: &str, max: usize) -> String {
    let cut: String = text.chars().take(max).collect();
    format!("{cut:?}")
}

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
            "{} is not accepted: RS256, ES256 or EdDSA",
            quoted(&peeked.alg, 32)
        ))
    })?;
    let candidates: Vec<&IssuerKey> = keys
        .iter()
        .filter(|key| key.alg == alg)
        .filter(|key| peeked.kid.is_none() || key.kid == peeked.kid)
        .collect();
    if candidates.is_empty() {
        return Err(GrantError::BadSignature(match &peeked.kid {
            Some(kid) => format!(
                "the issuer has no {} key with kid {}",
                peeked.alg,
                quoted(kid, 64)
            ),
            None => format!("the issuer has no {} key", peeked.alg),
        }));
    }
    // Signature only: every claim is checked below, with this module's reason codes.
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    for key in candidates.into_iter().take(MAX_KEYS_WITHOUT_KID) {
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
    let claims = Value::Object(claims);
    if let Some(claim) = rule.unmet_condition(&claims) {
        return Err(GrantError::ClaimMismatch(format!(
            "claim {claim} does not hold the value rule {} requires",
            rule.name
        )));
    }
    let template =
        AgentTemplate::parse(&rule.agent).map_err(|e| GrantError::Unmapped(e.to_string()))?;
    let agent_id = template
        .render(&claims)
        .map_err(|e| GrantError::Unmapped(format!("rule {}: {e}", rule.name)))?;
    let replay_id = replay_id(token, &claims)?;
    Ok(VerifiedAssertion {
        issuer: rule.issuer.clone(),
        subject,
        agent_id,
        replay_id,
        expires_at: exp,
    })
}

/// What a token is remembered by against replay: its `jti`, or without one the digest of its
/// signed part only. An ECDSA signature can be re-encoded without the key (`s` and `n - s` both
/// verify), so a digest over the signature would let one token pass twice.
fn replay_id(token: &str, claims: &Value) -> Result<String, GrantError> {
    match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_LEN => {
            Ok(format!("jti:{jti}"))
        }
        Some(_) => Err(GrantError::Malformed(format!(
            "jti must be a string of 1-{MAX_JTI_LEN} bytes"
        ))),
        None => {
            let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
            Ok(format!("sha256:{:x}", Sha256::digest(signed.as_bytes())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_without_jti_is_one_token_whatever_its_signature_bytes() {
        let claims = json!({"sub": "s"});
        let one = replay_id("aGVhZA.Ym9keQ.c2lnMQ", &claims).unwrap();
        assert_eq!(one, replay_id("aGVhZA.Ym9keQ.c2lnMg", &claims).unwrap());
        assert_ne!(one, replay_id("aGVhZA.Ym9keTI.c2lnMQ", &claims).unwrap());
        assert_eq!(
            replay_id("a.b.c", &json!({"jti": "j-1"})).unwrap(),
            "jti:j-1"
        );
        assert!(replay_id("a.b.c", &json!({"jti": 7})).is_err());
        assert!(replay_id("a.b.c", &json!({"jti": "x".repeat(300)})).is_err());
    }

    use crate::crypto::{Seed, SigningKey};
    use crate::federation::KeySource;
    use crate::federation::rule::TrustRule;
    use crate::token::access::Scope;

    const NOW: i64 = 1_800_000_000;

    fn issuer_key(byte: u8) -> (SigningKey, IssuerKey) {
        let key = SigningKey::from_seed(
            crate::crypto::Algorithm::Ed25519,
            &Seed::from_slice(&[byte; 32]).unwrap(),
        );
        let x = crate::jose::b64(&key.public_key().to_bytes());
        let verifying = IssuerKey {
            kid: Some(crate::jose::thumbprint(key.public_key())),
            alg: jsonwebtoken::Algorithm::EdDSA,
            key: jsonwebtoken::DecodingKey::from_ed_components(&x).unwrap(),
        };
        (key, verifying)
    }

    fn rule() -> TrustRule {
        TrustRule {
            name: "k8s".into(),
            issuer: "https://issuer.example".into(),
            keys: KeySource::Url("https://issuer.example/jwks".into()),
            audience: "https://hub.example".into(),
            subject: "system:serviceaccount:prod:*".into(),
            agent: "agent://k8s/{/kubernetes.io/serviceaccount/name}".into(),
            conditions: Vec::new(),
            scopes: vec![Scope::Verify],
            max_ttl: 3_600,
            max_assertion_lifetime: 3_600,
            jwks_refresh: 300,
            jwks_grace: 3_600,
            created_at: 0,
        }
    }

    fn claims() -> Value {
        json!({
            "iss": "https://issuer.example",
            "sub": "system:serviceaccount:prod:billing",
            "aud": ["https://hub.example"],
            "iat": NOW - 10,
            "exp": NOW + 600,
            "jti": "j-1",
            "kubernetes.io": {"serviceaccount": {"name": "billing"}},
        })
    }

    /// Verifies `claims` signed by key 1 against `rule`, with key 1 as the issuer's.
    fn check(
        claims: &Value,
        rule: &TrustRule,
        hub: &str,
    ) -> Result<VerifiedAssertion, &'static str> {
        let (signer, verifying) = issuer_key(1);
        let token =
            crate::jose::sign(claims, "JWT", &[&signer], crate::jose::EdAlgName::EdDsa).unwrap();
        let peeked = peek(&token).map_err(|e| e.reason())?;
        verify(
            &token,
            &peeked,
            rule,
            &[verifying],
            &HubIdentity::new(hub),
            NOW,
            60,
        )
        .map_err(|e| e.reason())
    }

    #[test]
    fn every_claim_check_refuses_with_its_reason() {
        let hub = "https://hub.example";
        let verified = check(&claims(), &rule(), hub).unwrap();
        assert_eq!(verified.agent_id, "agent://k8s/billing");
        assert_eq!(verified.replay_id, "jti:j-1");
        assert_eq!(verified.expires_at, NOW + 600);
        let with = |change: &dyn Fn(&mut Value)| {
            let mut claims = claims();
            change(&mut claims);
            check(&claims, &rule(), hub)
        };
        assert_eq!(
            with(&|c| c["aud"] = json!("https://other.example")).unwrap_err(),
            "wrong_audience"
        );
        assert_eq!(
            with(&|c| c["exp"] = json!(NOW - 61)).unwrap_err(),
            "expired"
        );
        // Within the skew, still good.
        assert!(with(&|c| c["exp"] = json!(NOW - 59)).is_ok());
        assert_eq!(
            with(&|c| c["nbf"] = json!(NOW + 61)).unwrap_err(),
            "not_yet_valid"
        );
        assert_eq!(
            with(&|c| c["iat"] = json!(NOW + 61)).unwrap_err(),
            "not_yet_valid"
        );
        assert_eq!(
            with(&|c| c["exp"] = json!(NOW - 10 + 3_601)).unwrap_err(),
            "lifetime_too_long"
        );
        assert_eq!(
            with(&|c| c["exp"] = json!("soon")).unwrap_err(),
            "malformed"
        );
        assert_eq!(
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })
            .unwrap_err(),
            "malformed"
        );
        assert_eq!(
            with(&|c| c["sub"] = json!("system:serviceaccount:dev:billing")).unwrap_err(),
            "subject_not_allowed"
        );
        assert_eq!(
            with(&|c| c["kubernetes.io"]["serviceaccount"]["name"] = json!("a/b")).unwrap_err(),
            "unmapped_subject"
        );
        assert_eq!(
            with(&|c| c["iss"] = json!("https://evil.example")).unwrap_err(),
            "unknown_issuer"
        );
        // The rule's audience must name the hub the assertion is presented to.
        assert_eq!(
            check(&claims(), &rule(), "https://other-hub.example").unwrap_err(),
            "wrong_audience"
        );
        let mut pinned = rule();
        pinned.conditions = vec![("/kubernetes.io/serviceaccount/name".into(), "other".into())];
        assert_eq!(
            check(&claims(), &pinned, hub).unwrap_err(),
            "claim_mismatch"
        );
    }

    #[test]
    fn the_header_never_chooses_the_key() {
        let (signer, _) = issuer_key(1);
        let (_, stranger) = issuer_key(2);
        let token =
            crate::jose::sign(&claims(), "JWT", &[&signer], crate::jose::EdAlgName::EdDsa).unwrap();
        let hub = HubIdentity::new("https://hub.example");
        let mut peeked = peek(&token).unwrap();
        // Signed by a key the issuer does not have (under its kid or none).
        let mut stranger_no_kid = stranger.clone();
        stranger_no_kid.kid = None;
        peeked.kid = None;
        let refused = verify(&token, &peeked, &rule(), &[stranger_no_kid], &hub, NOW, 60);
        assert_eq!(refused.unwrap_err().reason(), "bad_signature");
        // A header naming another algorithm finds no key of that algorithm: the key's own
        // algorithm decides, never the header.
        let (_, right) = issuer_key(1);
        for alg in ["RS256", "ES256"] {
            peeked.alg = alg.into();
            let refused = verify(
                &token,
                &peeked,
                &rule(),
                std::slice::from_ref(&right),
                &hub,
                NOW,
                60,
            )
            .unwrap_err();
            assert!(
                refused.to_string().contains(&format!("has no {alg} key")),
                "{refused}"
            );
        }
        for alg in ["none", "HS256", "PS256"] {
            peeked.alg = alg.into();
            let refused = verify(
                &token,
                &peeked,
                &rule(),
                std::slice::from_ref(&right),
                &hub,
                NOW,
                60,
            );
            assert_eq!(refused.unwrap_err().reason(), "alg_not_allowed");
        }
    }

    #[test]
    fn peek_refuses_what_is_not_a_jwt_and_critical_headers() {
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let header = b64(&json!({"alg": "RS256", "kid": "k"}));
        let claims = b64(&json!({"iss": "https://issuer.example", "sub": "s"}));
        let peeked = peek(&format!("{header}.{claims}.sig")).unwrap();
        assert_eq!(peeked.issuer, "https://issuer.example");
        assert_eq!(peeked.kid.as_deref(), Some("k"));
        let crit = b64(&json!({"alg": "RS256", "crit": ["exp"], "exp": 1}));
        for bad in [
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            format!("{header}.bm90IGpzb24.sig"),
            format!("{crit}.{claims}.sig"),
            format!("{header}.{}.sig", b64(&json!({"sub": "no issuer"}))),
        ] {
            assert_eq!(peek(&bad).unwrap_err().reason(), "malformed", "{bad}");
        }
        let huge = format!("{header}.{}.sig", "A".repeat(MAX_ASSERTION_LEN));
        assert_eq!(peek(&huge).unwrap_err().reason(), "oversized");
    }
}
