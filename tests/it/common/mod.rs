//! Shared fixtures for integration tests: a CA, agents and tokens built directly from the core
//! API with fixed seeds, so verification tests need no key store.
#![allow(dead_code, unused_imports)]

pub mod hub;
pub mod node;
pub mod postgres;
pub mod python;

use agentseal::crypto::{Algorithm, Seed, SigningKey};
use agentseal::jose::{self, EdAlgName};
use agentseal::token::action::{self, ActionRequest, SignedAction};
use agentseal::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
use agentseal::token::revocation::{CrlClaims, RevocationList};
use agentseal::token::trust::RevocationEntry;
use agentseal::token::trust::TrustAnchor;
use agentseal::verify::{PresentedCertificates, Verifier};
use serde_json::{Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub const CA_ID: &str = "urn:agentseal:ca:test";
pub const AGENT: &str = "agent://acme.example/reviewer";
pub const AUD: &str = "https://deploy.acme.example";

pub fn now() -> i64 {
    agentseal::clock::now()
}

pub fn key(alg: Algorithm, byte: u8) -> SigningKey {
    SigningKey::from_seed(alg, &Seed::from_slice(&[byte; 32]).unwrap())
}

pub fn keys(algs: &[Algorithm], byte: u8) -> Vec<SigningKey> {
    algs.iter().map(|&a| key(a, byte)).collect()
}

pub fn refs(keys: &[SigningKey]) -> Vec<&SigningKey> {
    keys.iter().collect()
}

/// A CA, one agent with a certificate, and empty revocation data.
pub struct World {
    pub ca: Vec<SigningKey>,
    pub anchor: TrustAnchor,
    pub agent: Vec<SigningKey>,
    pub certificate: AgentCertificate,
    pub crl: RevocationList,
    pub presented: PresentedCertificates,
}

pub fn cert_claims(
    ca_id: &str,
    agent_keys: &[SigningKey],
    iat: i64,
    ttl: i64,
) -> CertificateClaims {
    let public: Vec<_> = agent_keys.iter().map(|k| k.public_key().clone()).collect();
    CertificateClaims {
        iss: ca_id.to_owned(),
        sub: AGENT.to_owned(),
        iat,
        nbf: iat,
        exp: iat + ttl,
        jti: format!("serial-{iat}-{}", public.len()),
        cnf: Confirmation::for_keys(&public),
        meta: Default::default(),
    }
}

impl World {
    /// A world whose agent holds keys of `agent_algs`, with a hybrid CA.
    pub fn new(agent_algs: &[Algorithm]) -> World {
        Self::with_certificate(agent_algs, |claims| claims)
    }

    /// As [`World::new`], with the certificate claims adjusted before the CA signs them.
    pub fn with_certificate(
        agent_algs: &[Algorithm],
        adjust: impl FnOnce(CertificateClaims) -> CertificateClaims,
    ) -> World {
        let ca = keys(&Algorithm::ALL, 1);
        let anchor = TrustAnchor {
            ca_id: CA_ID.to_owned(),
            keys: ca.iter().map(|k| k.public_key().clone()).collect(),
        };
        let agent = keys(agent_algs, 2);
        let claims = adjust(cert_claims(CA_ID, &agent, now(), 86_400));
        let encoded = AgentCertificate::issue(&claims, &refs(&ca)).unwrap();
        let public = claims.cnf.keys().unwrap();
        let certificate = AgentCertificate {
            claims,
            keys: public,
            encoded: encoded.clone(),
        };
        World {
            ca,
            anchor,
            agent,
            certificate,
            crl: revocations(&[], &[]),
            presented: PresentedCertificates(vec![encoded]),
        }
    }

    pub fn verifier(&self) -> Verifier<'_> {
        Verifier {
            anchor: &self.anchor,
            certificates: &self.presented,
            revocation: &self.crl,
            skew: 60,
            cache: None,
        }
    }

    /// Signs a token for `AUD`, action `deploy`, args `{"repo":"web"}`, issued at `iat`.
    pub fn sign_at(&self, iat: i64) -> SignedAction {
        let request = ActionRequest::new("deploy", AUD, json!({"repo": "web"}));
        action::sign(&self.certificate, &refs(&self.agent), &request, iat).unwrap()
    }

    pub fn sign(&self) -> String {
        self.sign_at(now()).token
    }

    /// Signs arbitrary header and payload JSON with the agent's first key, compact form.
    pub fn compact(&self, header: &Value, payload: &Value) -> String {
        compact_with(&self.agent[0], header, payload)
    }

    /// The claims a valid token would carry.
    pub fn claims(&self) -> Value {
        let t = now();
        json!({
            "iss": AGENT, "sub": AGENT, "aud": AUD, "iat": t, "nbf": t, "exp": t + 300,
            "jti": "jti-1", "action": "deploy",
            "args_sha256": action::args_sha256(&json!({"repo": "web"})),
            "cert": self.certificate.claims.jti,
        })
    }

    pub fn header(&self, alg: &str) -> Value {
        json!({"alg": alg, "typ": action::TOKEN_TYP})
    }
}

/// Signs raw JSON texts (exactly as given) with `key`, compact form.
pub fn compact_raw(key: &SigningKey, header: &str, payload: &str) -> String {
    let h = jose::b64(header.as_bytes());
    let p = jose::b64(payload.as_bytes());
    let sig = key.sign(format!("{h}.{p}").as_bytes()).unwrap();
    format!("{h}.{p}.{}", jose::b64(&sig))
}

pub fn compact_with(key: &SigningKey, header: &Value, payload: &Value) -> String {
    compact_raw(key, &header.to_string(), &payload.to_string())
}

/// A revocation list (already trusted) with these revoked serials and token ids.
pub fn revocations(certs: &[&str], tokens: &[&str]) -> RevocationList {
    let entry = |id: &&str| RevocationEntry {
        id: id.to_string(),
        revoked_at: now(),
        reason: "compromised".into(),
    };
    RevocationList::from_claims(
        CrlClaims {
            iss: CA_ID.into(),
            number: 1,
            iat: now(),
            next_update: now() + 3600,
            revoked_certificates: certs.iter().map(entry).collect(),
            revoked_tokens: tokens.iter().map(entry).collect(),
            audit_checkpoint: None,
            ca_keys: None,
        },
        0,
    )
}

pub use agentseal::jose::b64;
pub use agentseal::jose::b64_decode;

pub fn ed_alg() -> EdAlgName {
    EdAlgName::EdDsa
}

/// Byte strings that would appear if `secret` were written in a common encoding: raw, hex, and
/// base64 / base64url at each of the three byte alignments (edge groups dropped, since they mix
/// in neighbouring bytes).
pub fn secret_needles(secret: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![
        secret.to_vec(),
        hex.to_uppercase().into_bytes(),
        hex.into_bytes(),
    ];
    for shift in 0..3 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(secret);
        for encoded in [STANDARD.encode(&shifted), URL_SAFE_NO_PAD.encode(&shifted)] {
            let inner = &encoded[4..encoded.trim_end_matches('=').len() - 4];
            out.push(inner.as_bytes().to_vec());
        }
    }
    out
}

/// The encoding of `secret` found in `haystack`, if any.
pub fn find_secret(haystack: &[u8], secret: &[u8]) -> Option<String> {
    secret_needles(secret)
        .into_iter()
        .find(|needle| {
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        })
        .map(|needle| String::from_utf8_lossy(&needle).into_owned())
}

/// Every secret derived from `seed` that must never leak: the seed, the Ed25519 expanded key
/// halves, and windows of the ML-DSA-65 secret key (K, s1, s2, t0; rho and tr are public).
pub fn secrets_of(seed: &[u8; 32], algorithm: Algorithm) -> Vec<(String, Vec<u8>)> {
    use fips204::traits::{KeyGen as _, SerDes as _};
    use sha2::{Digest, Sha512};
    let mut secrets = vec![("seed".to_owned(), seed.to_vec())];
    match algorithm {
        Algorithm::Ed25519 => {
            let expanded = Sha512::digest(seed);
            secrets.push(("ed25519 expanded scalar".into(), expanded[..32].to_vec()));
            secrets.push(("ed25519 nonce prefix".into(), expanded[32..].to_vec()));
        }
        Algorithm::MlDsa65 => {
            let (_, sk) = fips204::ml_dsa_65::KG::keygen_from_seed(seed);
            let sk = sk.into_bytes();
            secrets.push(("ml-dsa-65 K".into(), sk[32..64].to_vec()));
            for at in [128usize, 640, 1280, 2000, 3000, 4000] {
                secrets.push((format!("ml-dsa-65 sk[{at}..]"), sk[at..at + 32].to_vec()));
            }
        }
        // A new algorithm must say here what of its keys must never leak.
        other => panic!("no secrets known for {other:?}: list them in secrets_of"),
    }
    secrets
}
