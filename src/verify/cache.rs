//! Certificates whose CA signatures were already verified, so that a long-running server does not
//! verify the same certificate's signatures on every call (for a hybrid CA, an ML-DSA-65 and an
//! Ed25519 verification each time).
//!
//! Only what cannot change is remembered: that these exact bytes carry valid signatures of this
//! exact trust anchor. The lifetime and the revocation status are checked at every use, so a
//! revocation takes effect on the very next call.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::reason::VerifyError;
use crate::token::certificate::AgentCertificate;
use crate::token::trust::{RevocationSource, TrustAnchor};

/// How many certificates a cache keeps by default: a hub's agents and the peers they talk to.
pub const DEFAULT_CAPACITY: usize = 4_096;

/// A bounded, thread-safe cache of signature-verified certificates (see the module docs).
#[derive(Debug)]
pub struct CertificateCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    capacity: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The anchor the signatures were verified against: a hit counts only for the same one.
    anchor: TrustAnchor,
    certificate: AgentCertificate,
}

impl Default for CertificateCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl CertificateCache {
    /// An empty cache keeping at most `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        CertificateCache {
            entries: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

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
        let key: [u8; 32] = Sha256::digest(encoded.as_bytes()).into();
        let cached = self
            .lock()
            .get(&key)
            .filter(|entry| entry.anchor == *anchor)
            .map(|entry| entry.certificate.clone());
        let certificate = match cached {
            Some(certificate) => certificate,
            None => {
                let certificate = AgentCertificate::verify_signed(encoded, anchor)?;
                self.insert(key, anchor, &certificate, now);
                certificate
            }
        };
        certificate.check_current(revocation, now, skew)?;
        Ok(certificate)
    }

    /// How many certificates the cache holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(
        &self,
        key: [u8; 32],
        anchor: &TrustAnchor,
        certificate: &AgentCertificate,
        now: i64,
    ) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            // Expired certificates first; if that frees nothing, start over (bounded memory
            // matters more than keeping every entry).
            entries.retain(|_, entry| entry.certificate.claims.exp >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                anchor: anchor.clone(),
                certificate: certificate.clone(),
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Revocations held in memory, changed by the test between two uses of the cache.
    #[derive(Default)]
    struct Revocations(RefCell<Vec<String>>);

    impl RevocationSource for Revocations {
        fn token_revocation(
            &self,
            _: &str,
            _: i64,
        ) -> Result<Option<RevocationEntry>, VerifyError> {
            Ok(None)
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
}
