//! Signed documents whose signatures were already verified, so that a long-running server does
//! not verify the same bytes on every call: agent certificates (for a hybrid CA, an ML-DSA-65 and
//! an Ed25519 verification each time) and the hub's access tokens (an Ed25519 verification on
//! every HTTP request).
//!
//! Only what cannot change is remembered: that these exact bytes carry valid signatures of this
//! exact trust anchor. The lifetime, the audience and the revocation status are checked at every
//! use, so a revocation takes effect on the very next call.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::reason::VerifyError;
use crate::token::access::{self, AccessClaims, AccessGrant};
use crate::token::certificate::AgentCertificate;
use crate::token::trust::{RevocationSource, TrustAnchor};

/// How many documents a cache keeps by default: a hub's agents and the peers they talk to.
pub const DEFAULT_CAPACITY: usize = 4_096;

/// What a cache keeps of a verified document: cheap to clone, and when it stops mattering.
pub trait Verified: Clone {
    /// When the document expires; expired entries are the first to go when the cache is full.
    fn expires_at(&self) -> i64;
}

impl Verified for AgentCertificate {
    fn expires_at(&self) -> i64 {
        self.claims.exp
    }
}

impl Verified for AccessClaims {
    fn expires_at(&self) -> i64 {
        self.exp
    }
}

/// A bounded, thread-safe cache of signature-verified documents (see the module docs).
#[derive(Debug)]
pub struct SignatureCache<T> {
    entries: Mutex<HashMap<[u8; 32], Entry<T>>>,
    capacity: usize,
}

/// Certificates whose CA signatures were verified.
pub type CertificateCache = SignatureCache<AgentCertificate>;
/// Access tokens whose CA signature was verified.
pub type AccessTokenCache = SignatureCache<AccessClaims>;

#[derive(Debug, Clone)]
struct Entry<T> {
    /// The anchor the signatures were verified against: a hit counts only for the same one.
    anchor: TrustAnchor,
    value: T,
}

impl<T: Verified> Default for SignatureCache<T> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl<T: Verified> SignatureCache<T> {
    /// An empty cache keeping at most `capacity` documents.
    pub fn new(capacity: usize) -> Self {
        SignatureCache {
            entries: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// What `verify_signed` makes of `encoded` under `anchor`: taken from the cache when these
    /// exact bytes were verified against this exact anchor before, otherwise verified now and
    /// remembered if valid.
    fn signed(
        &self,
        encoded: &str,
        anchor: &TrustAnchor,
        now: i64,
        verify_signed: impl FnOnce() -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        let key: [u8; 32] = Sha256::digest(encoded.as_bytes()).into();
        let cached = self
            .lock()
            .get(&key)
            .filter(|entry| entry.anchor == *anchor)
            .map(|entry| entry.value.clone());
        match cached {
            Some(value) => Ok(value),
            None => {
                let value = verify_signed()?;
                self.insert(key, anchor, &value, now);
                Ok(value)
            }
        }
    }

    /// How many documents the cache holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, key: [u8; 32], anchor: &TrustAnchor, value: &T, now: i64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            // Expired documents first; if that frees nothing, start over (bounded memory
            // matters more than keeping every entry).
            entries.retain(|_, entry| entry.value.expires_at() >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                anchor: anchor.clone(),
                value: value.clone(),
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry<T>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SignatureCache<AgentCertificate> {
    /// Verifies `encoded` as [`AgentCertificate::verify`] does, taking the signature check from
    /// the cache when these exact bytes were verified against this exact `anchor` before.
    pub fn verify(
        &self,
        encoded: &str,
        anchor: &TrustAnchor,
        revocation: &dyn RevocationSource,
        now: i64,
        skew: i64,
    ) -> Result<AgentCertificate, VerifyError> {
        let certificate = self.signed(encoded, anchor, now, || {
            AgentCertificate::verify_signed(encoded, anchor)
        })?;
        certificate.check_current(revocation, now, skew)?;
        Ok(certificate)
    }
}

impl SignatureCache<AccessClaims> {
    /// Verifies an access token as [`access::verify`] does, taking the signature check from the
    /// cache when this exact token was verified against this exact `anchor` before.
    pub fn verify(
        &self,
        token: &str,
        anchor: &TrustAnchor,
        audience: &str,
        revocation: &dyn RevocationSource,
        now: i64,
        skew: i64,
    ) -> Result<AccessGrant, VerifyError> {
        // Refused before it is hashed: a bearer value can be as long as the HTTP server allows.
        if token.len() > access::MAX_ACCESS_TOKEN_LEN {
            return Err(VerifyError::Oversized {
                len: token.len(),
                limit: access::MAX_ACCESS_TOKEN_LEN,
            });
        }
        let claims = self.signed(token, anchor, now, || access::verify_signed(token, anchor))?;
        access::check_current(claims, audience, revocation, now, skew)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::crypto::{Algorithm, Seed, SigningKey};
    use crate::token::certificate::{CertificateClaims, Confirmation};
    use crate::token::trust::{Freshness, RevocationEntry};

    const NOW: i64 = 1_800_000_000;

    /// Revocations held in memory (certificate serials and token ids alike), changed by the test
    /// between two uses of the cache.
    #[derive(Default)]
    struct Revocations(RefCell<Vec<String>>);

    impl RevocationSource for Revocations {
        fn token_revocation(
            &self,
            jti: &str,
            now: i64,
        ) -> Result<Option<RevocationEntry>, VerifyError> {
            self.certificate_revocation(jti, now)
        }
        fn certificate_revocation(
            &self,
            serial: &str,
            now: i64,
        ) -> Result<Option<RevocationEntry>, VerifyError> {
            Ok(self
                .0
                .borrow()
                .iter()
                .find(|s| *s == serial)
                .map(|s| RevocationEntry {
                    id: s.clone(),
                    revoked_at: now,
                    reason: "test".into(),
                }))
        }
        fn freshness(&self, now: i64) -> Freshness {
            Freshness {
                source: "local",
                number: None,
                issued_at: now,
                next_update: None,
            }
        }
    }

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_seed(Algorithm::Ed25519, &Seed::from_slice(&[byte; 32]).unwrap())
    }

    fn anchor(ca: &SigningKey) -> TrustAnchor {
        TrustAnchor {
            ca_id: "urn:agentseal:ca:test".into(),
            keys: vec![ca.public_key().clone()],
        }
    }

    fn certificate(ca: &SigningKey, serial: &str, exp: i64) -> String {
        let agent = key(9);
        let claims = CertificateClaims {
            iss: "urn:agentseal:ca:test".into(),
            sub: "agent://acme.example/reviewer".into(),
            iat: NOW - 10,
            nbf: NOW - 10,
            exp,
            jti: serial.into(),
            cnf: Confirmation::for_keys(&[agent.public_key().clone()]),
            meta: Default::default(),
        };
        AgentCertificate::issue(&claims, &[ca]).unwrap()
    }

    #[test]
    fn a_cached_certificate_revoked_later_is_refused_at_the_next_use() {
        let ca = key(1);
        let (anchor, revocations, cache) = (
            anchor(&ca),
            Revocations::default(),
            CertificateCache::default(),
        );
        let encoded = certificate(&ca, "serial-1", NOW + 3_600);
        cache
            .verify(&encoded, &anchor, &revocations, NOW, 60)
            .unwrap();
        assert_eq!(cache.len(), 1);
        revocations.0.borrow_mut().push("serial-1".into());
        let error = cache
            .verify(&encoded, &anchor, &revocations, NOW, 60)
            .unwrap_err();
        assert_eq!(error.code(), "certificate_revoked");
    }

    #[test]
    fn a_cached_certificate_that_expires_is_refused() {
        let ca = key(1);
        let (anchor, revocations, cache) = (
            anchor(&ca),
            Revocations::default(),
            CertificateCache::default(),
        );
        let encoded = certificate(&ca, "serial-1", NOW + 100);
        cache
            .verify(&encoded, &anchor, &revocations, NOW, 60)
            .unwrap();
        let error = cache
            .verify(&encoded, &anchor, &revocations, NOW + 161, 60)
            .unwrap_err();
        assert_eq!(error.code(), "certificate_expired");
    }

    #[test]
    fn a_certificate_cached_under_one_anchor_counts_for_no_other() {
        let (ca, other) = (key(1), key(2));
        let revocations = Revocations::default();
        let cache = CertificateCache::default();
        let encoded = certificate(&ca, "serial-1", NOW + 3_600);
        cache
            .verify(&encoded, &anchor(&ca), &revocations, NOW, 60)
            .unwrap();
        // Same CA id, other keys: the cached verification must not be reused.
        let error = cache
            .verify(&encoded, &anchor(&other), &revocations, NOW, 60)
            .unwrap_err();
        assert_eq!(error.code(), "bad_signature");
    }

    #[test]
    fn a_bad_certificate_is_not_cached_and_the_cache_stays_bounded() {
        let ca = key(1);
        let (anchor, revocations, cache) = (
            anchor(&ca),
            Revocations::default(),
            CertificateCache::new(3),
        );
        let forged = certificate(&key(2), "serial-x", NOW + 3_600);
        assert!(
            cache
                .verify(&forged, &anchor, &revocations, NOW, 60)
                .is_err()
        );
        assert!(cache.is_empty());
        for serial in 0..10 {
            let encoded = certificate(&ca, &format!("serial-{serial}"), NOW + 3_600);
            cache
                .verify(&encoded, &anchor, &revocations, NOW, 60)
                .unwrap();
            assert!(cache.len() <= 3);
        }
    }

    const HUB: &str = "http://127.0.0.1:7777/mcp";

    fn access_token(ca: &SigningKey, jti: &str, exp: i64) -> String {
        let claims = AccessClaims {
            iss: "urn:agentseal:ca:test".into(),
            sub: "agent://acme.example/reviewer".into(),
            aud: HUB.into(),
            client_id: "agent://acme.example/reviewer".into(),
            iat: NOW - 10,
            nbf: NOW - 10,
            exp,
            jti: jti.into(),
            scope: "agentseal:verify".into(),
        };
        access::issue(&claims, ca).unwrap()
    }

    #[test]
    fn a_cached_access_token_is_rechecked_at_every_use() {
        let ca = key(1);
        let (anchor, revocations, cache) = (
            anchor(&ca),
            Revocations::default(),
            AccessTokenCache::default(),
        );
        let token = access_token(&ca, "at-1", NOW + 100);
        let check = |audience: &str, now: i64| {
            cache
                .verify(&token, &anchor, audience, &revocations, now, 60)
                .map_err(|e| e.code())
        };
        assert_eq!(
            check(HUB, NOW).unwrap().agent_id,
            "agent://acme.example/reviewer"
        );
        assert_eq!(cache.len(), 1);
        // Each of these comes from the cache's entry, and is refused all the same.
        assert_eq!(
            check("http://other.example/mcp", NOW),
            Err("wrong_audience")
        );
        assert_eq!(check(HUB, NOW + 161), Err("expired"));
        revocations.0.borrow_mut().push("at-1".into());
        assert_eq!(check(HUB, NOW), Err("revoked"));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_access_token_cached_under_one_anchor_counts_for_no_other() {
        let (ca, other) = (key(1), key(2));
        let (revocations, cache) = (Revocations::default(), AccessTokenCache::default());
        let token = access_token(&ca, "at-1", NOW + 3_600);
        cache
            .verify(&token, &anchor(&ca), HUB, &revocations, NOW, 60)
            .unwrap();
        let error = cache
            .verify(&token, &anchor(&other), HUB, &revocations, NOW, 60)
            .unwrap_err();
        assert_eq!(error.code(), "bad_signature");
        // A token the anchor never signed is refused and not remembered.
        let forged = access_token(&other, "at-2", NOW + 3_600);
        assert!(
            cache
                .verify(&forged, &anchor(&ca), HUB, &revocations, NOW, 60)
                .is_err()
        );
        assert_eq!(cache.len(), 1);
    }
}
