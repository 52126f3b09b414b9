//! A workload issuer's signing keys: read from a JWKS, each with the one algorithm it may verify,
//! and, for a JWKS URL, fetched and cached with a fail-closed refresh.
//!
//! A fetched JWKS is used for the rule's `jwks_refresh` seconds, then fetched again. If that
//! fails, the keys already fetched stay usable until `jwks_refresh + jwks_grace` seconds after
//! they were fetched; past that every exchange for the issuer is refused
//! ([`GrantError::IssuerKeysUnavailable`]). An assertion naming a `kid` the cache does not have
//! makes one early fetch (a key rotation at the issuer), at most once per [`RETRY_AFTER`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::GrantError;
use super::rule::{KeySource, MAX_JWKS_LEN, TrustRule};

/// Most keys read from one JWKS.
const MAX_KEYS: usize = 64;
/// Least time between two fetches of one URL that are not due by age (a `kid` miss, a retry
/// after a failure): an assertion cannot make the hub hammer its issuer.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS: usize = 256;

/// One verification key of an issuer.
#[derive(Clone)]
pub struct IssuerKey {
    /// Its `kid`, if the JWKS gave one.
    pub kid: Option<String>,
    /// The one algorithm it verifies (never chosen by the assertion's header).
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The algorithm a JWK verifies, if it is a signature key of a kind accepted: RSA of at least
/// 2048 bits (RS256), EC P-256 (ES256), OKP Ed25519 (EdDSA). Never a symmetric key.
fn key_of(jwk: &Value) -> Option<IssuerKey> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops")
        && !ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op == "verify"))
    {
        return None;
    }
    let (alg, key) = match (text("kty")?, text("crv")) {
        ("RSA", _) => {
            let n = text("n")?;
            let modulus = crate::jose::b64_decode(n).ok()?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS {
                return None;
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_components(n, text("e")?).ok()?,
            )
        }
        ("EC", Some("P-256")) => (
            Algorithm::ES256,
            DecodingKey::from_ec_components(text("x")?, text("y")?).ok()?,
        ),
        ("OKP", Some("Ed25519")) => (
            Algorithm::EdDSA,
            DecodingKey::from_ed_components(text("x")?).ok()?,
        ),
        _ => return None,
    };
    // A key that names its algorithm is used with that one only.
    let named = match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "EdDSA",
    };
    if text("alg").is_some_and(|a| a != named && !(a == "Ed25519" && named == "EdDSA")) {
        return None;
    }
    Some(IssuerKey {
        kid: text("kid").map(str::to_owned),
        alg,
        key,
    })
}

/// The usable keys of a JWKS document (`{"keys": [...]}`); keys of other kinds are skipped
/// (RFC 7517 §5).
pub fn usable_keys(jwks: &Value) -> Result<Vec<IssuerKey>, String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWK Set: no \"keys\" array")?;
    if keys.len() > MAX_KEYS {
        return Err(format!("more than {MAX_KEYS} keys"));
    }
    Ok(keys.iter().filter_map(key_of).collect())
}

/// Parses a JWKS document's bytes.
pub fn parse_jwks(bytes: &[u8]) -> Result<Value, String> {
    if bytes.len() > MAX_JWKS_LEN {
        return Err(format!("larger than {MAX_JWKS_LEN} bytes"));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))
}

/// Keys fetched from one URL.
struct Fetched {
    keys: Arc<Vec<IssuerKey>>,
    /// When they were fetched.
    at: Instant,
}

#[derive(Default)]
struct UrlState {
    fetched: Option<Fetched>,
    /// When a fetch was last tried.
    tried: Option<Instant>,
}

/// The keys of every issuer, cached per JWKS URL for the life of the process.
pub struct IssuerKeys {
    client: reqwest::Client,
    urls: Mutex<HashMap<String, UrlState>>,
    /// One fetch per URL at a time: concurrent exchanges wait for it rather than each fetching.
    /// (URLs come from the operator's rules only, so the maps stay small.)
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys").finish_non_exhaustive()
    }
}

/// What the cache decides for one lookup.
enum Plan {
    Use(Arc<Vec<IssuerKey>>),
    Fetch,
    /// A fetch failed moments ago and nothing usable is cached.
    Unavailable,
}

impl IssuerKeys {
    /// An empty cache.
    pub fn new() -> Result<IssuerKeys, GrantError> {
        Ok(IssuerKeys {
            client: crate::verify::remote::fetch_client()
                .map_err(GrantError::IssuerKeysUnavailable)?,
            urls: Mutex::default(),
            fetching: Mutex::default(),
        })
    }

    /// The keys of `rule`'s issuer with which to verify an assertion naming `kid`.
    pub async fn keys_for(
        &self,
        rule: &TrustRule,
        kid: Option<&str>,
    ) -> Result<Arc<Vec<IssuerKey>>, GrantError> {
        let url = match &rule.keys {
            KeySource::Inline(jwks) => {
                return usable_keys(jwks).map(Arc::new).map_err(|e| {
                    GrantError::IssuerKeysUnavailable(format!("the rule's JWKS: {e}"))
                });
            }
            KeySource::Url(url) => url,
        };
        // What the caller is told names no URL and no network detail; the log has them.
        let unavailable = || {
            GrantError::IssuerKeysUnavailable(format!(
                "the keys of {} could not be fetched, and none fetched earlier are within the grace",
                rule.issuer
            ))
        };
        match self.plan(rule, url, kid, Instant::now()) {
            Plan::Use(keys) => return Ok(keys),
            Plan::Unavailable => return Err(unavailable()),
            Plan::Fetch => {}
        }
        // One fetch per URL at a time; an issuer that does not answer holds up no other.
        let gate = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(url.clone())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        // Another exchange may have fetched while this one waited.
        match self.plan(rule, url, kid, Instant::now()) {
            Plan::Use(keys) => return Ok(keys),
            Plan::Unavailable => return Err(unavailable()),
            Plan::Fetch => {}
        }
        // Marked before the fetch: a caller who hangs up mid-fetch still counts as a try, so
        // no one can make the hub fetch more often than RETRY_AFTER allows.
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(url.clone())
            .or_default()
            .tried = Some(Instant::now());
        let fetched = self.fetch(url).await;
        let now = Instant::now();
        let mut urls = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        let state = urls.entry(url.clone()).or_default();
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                state.fetched = Some(Fetched {
                    keys: keys.clone(),
                    at: now,
                });
                Ok(keys)
            }
            Err(detail) => {
                tracing::warn!(url = %redacted(url), %detail, issuer = %rule.issuer, "issuer JWKS fetch failed");
                match &state.fetched {
                    Some(fetched) if within_grace(rule, fetched, now) => Ok(fetched.keys.clone()),
                    _ => Err(unavailable()),
                }
            }
        }
    }

    /// Whether the cached keys for `url` serve a lookup for `kid`, or a fetch is due.
    fn plan(&self, rule: &TrustRule, url: &str, kid: Option<&str>, now: Instant) -> Plan {
        let urls = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = urls.get(url) else {
            return Plan::Fetch;
        };
        let recently_tried = state
            .tried
            .is_some_and(|tried| now.duration_since(tried) < RETRY_AFTER);
        let Some(fetched) = &state.fetched else {
            // Never fetched: a failure moments ago is not retried at once.
            return if recently_tried {
                Plan::Unavailable
            } else {
                Plan::Fetch
            };
        };
        let age = now.duration_since(fetched.at);
        let fresh = age < Duration::from_secs(rule.jwks_refresh.max(0) as u64);
        let has_kid = kid.is_none_or(|kid| {
            fetched
                .keys
                .iter()
                .any(|key| key.kid.as_deref() == Some(kid))
        });
        if (fresh && has_kid) || recently_tried {
            if fresh || within_grace(rule, fetched, now) {
                return Plan::Use(fetched.keys.clone());
            }
            return Plan::Unavailable;
        }
        Plan::Fetch
    }

    async fn fetch(&self, url: &str) -> Result<Vec<IssuerKey>, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        let body =
            crate::verify::remote::fetch_limited(&self.client, &parsed, MAX_JWKS_LEN).await?;
        // An issuer that withdrew every key is taken at its word: nothing verifies.
        usable_keys(&parse_jwks(&body)?)
    }
}

/// A URL for logs: without user information or query, which may hold credentials.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

fn within_grace(rule: &TrustRule, fetched: &Fetched, now: Instant) -> bool {
    let limit = rule
        .jwks_refresh
        .max(0)
        .saturating_add(rule.jwks_grace.max(0)) as u64;
    now.duration_since(fetched.at) < Duration::from_secs(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa(extra: Value) -> Value {
        let mut key = json!({
            "kty": "RSA",
            "n": crate::jose::b64(&[0xC3; 256]),
            "e": "AQAB",
            "kid": "r",
        });
        for (k, v) in extra.as_object().unwrap() {
            key[k] = v.clone();
        }
        key
    }

    #[test]
    fn only_signature_keys_of_accepted_kinds_are_used_each_with_its_one_algorithm() {
        let count = |key: Value| usable_keys(&json!({"keys": [key]})).unwrap().len();
        assert_eq!(count(rsa(json!({}))), 1);
        assert_eq!(count(rsa(json!({"alg": "RS256", "use": "sig"}))), 1);
        // A key naming another algorithm than its type's is not used at all.
        assert_eq!(count(rsa(json!({"alg": "ES256"}))), 0);
        assert_eq!(count(rsa(json!({"alg": "PS256"}))), 0);
        assert_eq!(count(rsa(json!({"use": "enc"}))), 0);
        assert_eq!(count(rsa(json!({"key_ops": ["encrypt"]}))), 0);
        assert_eq!(count(rsa(json!({"n": crate::jose::b64(&[0xC3; 128])}))), 0);
        assert_eq!(count(json!({"kty": "oct", "k": "c2VjcmV0"})), 0);
        assert_eq!(
            count(json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"})),
            0
        );
        let keys = usable_keys(&json!({"keys": [rsa(json!({}))]})).unwrap();
        assert_eq!(keys[0].alg, Algorithm::RS256);
        assert!(usable_keys(&json!({"keys": "no"})).is_err());
        assert!(usable_keys(&json!({"keys": vec![rsa(json!({})); MAX_KEYS + 1]})).is_err());
    }

    #[test]
    fn urls_are_logged_without_credentials_or_query() {
        assert_eq!(
            redacted("https://user:pw@issuer.example/jwks?token=t"),
            "https://issuer.example/jwks"
        );
    }
}
