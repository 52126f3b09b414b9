//! Revocation: revoked certificate serials and token ids, the [`RevocationSource`] every
//! verification consults, and the CA-signed revocation list (`typ` `agent-crl+jwt`) that lets
//! peers check revocation offline.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::trust::TrustAnchor;
use super::trust::{Freshness, RevocationEntry, RevocationSource};
use crate::crypto::{CryptoError, SigningKey};
use crate::jose::{self, EdAlgName, Jws};
use crate::reason::VerifyError;

/// The `typ` of a revocation list.
pub const CRL_TYP: &str = "agent-crl+jwt";

/// The claims of a revocation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlClaims {
    /// The CA id.
    pub iss: String,
    /// Monotonically increasing list number.
    pub number: u64,
    /// Issued at.
    pub iat: i64,
    /// When the next list is due; after it (plus grace) the list is stale.
    pub next_update: i64,
    /// Revoked certificate serials.
    pub revoked_certificates: Vec<RevocationEntry>,
    /// Revoked token ids.
    pub revoked_tokens: Vec<RevocationEntry>,
    /// The audit log's checkpoint when the list was issued: a verifier holding the list can
    /// ask the issuer for a proof that any later log extends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_checkpoint: Option<CheckpointRef>,
    /// RFC 7638 thumbprints of every key the CA vouched for when it issued the list: a verifier
    /// that follows the CA stops trusting any other (a retirement, signed by the current keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_keys: Option<Vec<String>>,
}

/// Names a checkpoint of the CA's audit log (`agentseal audit checkpoint` prints it whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    /// The log's origin.
    pub origin: String,
    /// How many records.
    pub size: u64,
    /// The tree head, standard base64 as in the checkpoint note.
    pub root: String,
}

/// A verified revocation list, indexed for lookups.
#[derive(Debug, Clone)]
pub struct RevocationList {
    /// The verified claims.
    pub claims: CrlClaims,
    /// Seconds past `next_update` during which the list is still used.
    pub grace: i64,
    certificates: HashMap<String, usize>,
    tokens: HashMap<String, usize>,
}

impl RevocationList {
    /// Signs `claims` with every CA key.
    pub fn issue(claims: &CrlClaims, ca_keys: &[&SigningKey]) -> Result<String, CryptoError> {
        jose::sign(claims, CRL_TYP, ca_keys, EdAlgName::EdDsa)
    }

    /// Verifies a list's `typ`, issuer and CA signatures, and indexes it. Staleness is checked
    /// at each lookup, so a cached list turns unusable once it is older than `grace` allows.
    pub fn verify(encoded: &str, anchor: &TrustAnchor, grace: i64) -> Result<Self, VerifyError> {
        let jws = Jws::parse_limited(encoded, jose::MAX_CRL_LEN)?;
        jws.check_typ(CRL_TYP)?;
        let claims: CrlClaims = jose::parse_strict_object(&jws.payload, "revocation list")?;
        anchor.verify_issued(&jws, &claims.iss)?;
        Ok(Self::from_claims(claims, grace))
    }

    /// As [`RevocationList::verify`], and refuses a list older than one already seen (a replayed
    /// list would hide later revocations while still looking fresh).
    pub fn verify_newer(
        encoded: &str,
        anchor: &TrustAnchor,
        grace: i64,
        last_seen: Option<u64>,
    ) -> Result<Self, VerifyError> {
        let list = Self::verify(encoded, anchor, grace)?;
        if let Some(last) = last_seen
            && list.claims.number < last
        {
            return Err(VerifyError::malformed(format!(
                "revocation list {} is older than list {last} already seen",
                list.claims.number
            )));
        }
        Ok(list)
    }

    /// Indexes already-trusted claims (for the CA's own use).
    pub fn from_claims(claims: CrlClaims, grace: i64) -> Self {
        let index = |entries: &[RevocationEntry]| {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.id.clone(), i))
                .collect()
        };
        RevocationList {
            certificates: index(&claims.revoked_certificates),
            tokens: index(&claims.revoked_tokens),
            claims,
            grace,
        }
    }

    fn fresh(&self, now: i64) -> Result<(), VerifyError> {
        if now > self.claims.next_update.saturating_add(self.grace) {
            return Err(VerifyError::RevocationUnavailable);
        }
        Ok(())
    }
}

impl RevocationSource for RevocationList {
    fn token_revocation(
        &self,
        jti: &str,
        now: i64,
    ) -> Result<Option<RevocationEntry>, VerifyError> {
        self.fresh(now)?;
        Ok(self
            .tokens
            .get(jti)
            .map(|&i| self.claims.revoked_tokens[i].clone())
            .filter(|e| e.in_effect(now)))
    }

    fn certificate_revocation(
        &self,
        serial: &str,
        now: i64,
    ) -> Result<Option<RevocationEntry>, VerifyError> {
        self.fresh(now)?;
        Ok(self
            .certificates
            .get(serial)
            .map(|&i| self.claims.revoked_certificates[i].clone())
            .filter(|e| e.in_effect(now)))
    }

    fn freshness(&self, _now: i64) -> Freshness {
        Freshness {
            source: "crl",
            number: Some(self.claims.number),
            issued_at: self.claims.iat,
            next_update: Some(self.claims.next_update),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_entry_applies_from_its_time_less_the_skew_and_an_immediate_one_at_once() {
        let entry = |id: &str, revoked_at| RevocationEntry {
            id: id.into(),
            revoked_at,
            reason: "r".into(),
        };
        let now = 1_800_000_000;
        let list = RevocationList::from_claims(
            CrlClaims {
                iss: "ca".into(),
                number: 1,
                iat: now,
                next_update: now + 86_400,
                revoked_certificates: vec![entry("later", now + 600), entry("now", now)],
                revoked_tokens: vec![entry("t", now + 1)],
                audit_checkpoint: None,
                ca_keys: None,
            },
            0,
        );
        assert!(list.certificate_revocation("later", now).unwrap().is_none());
        let skew = crate::clock::DEFAULT_SKEW;
        assert!(
            list.certificate_revocation("later", now + 600 - skew - 1)
                .unwrap()
                .is_none()
        );
        assert!(
            list.certificate_revocation("later", now + 600 - skew)
                .unwrap()
                .is_some()
        );
        // Recorded a moment after a check began: applies to that check.
        assert!(
            list.certificate_revocation("now", now - 1)
                .unwrap()
                .is_some()
        );
        assert!(list.token_revocation("t", now).unwrap().is_some());
        assert!(list.certificate_revocation("other", now).unwrap().is_none());
    }
}
