//! The signed revocation list the CA publishes, so peers check revocation offline.

use base64::Engine as _;

use super::*;
use crate::token::revocation::CheckpointRef;

/// A signed revocation list as published, with what its cache headers need.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    /// The signed list.
    pub encoded: String,
    /// Its number.
    pub number: u64,
    /// When it was issued.
    pub issued_at: i64,
    /// When the next list is due.
    pub next_update: i64,
}

impl Installation {
    /// Issues a signed revocation list with the next number, valid for `validity` seconds.
    pub fn issue_crl(&self, validity: Option<i64>) -> Result<String, ServiceError> {
        let validity = self.limits()?.crl_validity(validity)?;
        let now = clock::now();
        // Entries are kept until every token or certificate they could match has expired
        // (plus clock skew): keeps the list small without un-revoking anything still usable.
        let (number, revoked_certificates, revoked_tokens) = self.store.crl_snapshot(
            now - clock::DEFAULT_SKEW,
            action::MAX_TTL + 2 * clock::DEFAULT_SKEW,
        )?;
        let claims = CrlClaims {
            iss: self.anchor().ca_id.clone(),
            number,
            iat: now,
            next_update: now.saturating_add(validity),
            revoked_certificates,
            revoked_tokens,
            audit_checkpoint: self.checkpoint_for_crl(),
            ca_keys: Some(
                self.anchor()
                    .keys
                    .iter()
                    .map(crate::jose::thumbprint)
                    .collect(),
            ),
        };
        let ca = self.ca_signers()?;
        let refs: Vec<&SigningKey> = ca.iter().collect();
        Ok(RevocationList::issue(&claims, &refs)?)
    }

    /// The audit log's checkpoint for a list issued now. A log that does not verify gets none,
    /// but revocations keep being published: the failure is logged, and `audit verify` says
    /// what is wrong.
    fn checkpoint_for_crl(&self) -> Option<CheckpointRef> {
        match self.audit_checkpoint() {
            Ok(checkpoint) => Some(CheckpointRef {
                origin: self.audit_origin(),
                size: checkpoint.size.unsigned_abs(),
                root: base64::engine::general_purpose::STANDARD.encode(checkpoint.root),
            }),
            Err(error) => {
                tracing::error!(%error, "the revocation list names no audit checkpoint");
                None
            }
        }
    }

    /// The revocation list to publish: the last one issued while it is in its first half of
    /// validity and nothing was revoked since, otherwise a freshly issued one. Peers polling a
    /// hub thus see every revocation at once without each read consuming a list number.
    pub fn published_crl(&self, validity: Option<i64>) -> Result<PublishedCrl, ServiceError> {
        let validity = self.limits()?.crl_validity(validity)?;
        // A new list after a revocation, and after the CA's keys changed (it names them).
        let state = (self.store.revocation_state()?, self.anchor());
        let now = clock::now();
        let mut cache = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_state, crl)) = cache.as_ref()
            && cached_state.0 == state.0
            && std::ptr::eq(cached_state.1, state.1)
            && crl.next_update - crl.issued_at == validity
            && now < crl.issued_at + validity / 2
        {
            return Ok(crl.clone());
        }
        let encoded = self.issue_crl(Some(validity))?;
        let (number, issued_at, next_update) = {
            let jws = crate::jose::Jws::parse_limited(&encoded, crate::jose::MAX_CRL_LEN)
                .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
            let claims: CrlClaims =
                crate::jose::parse_strict_object(&jws.payload, "revocation list")
                    .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
            (claims.number, claims.iat, claims.next_update)
        };
        let crl = PublishedCrl {
            encoded,
            number,
            issued_at,
            next_update,
        };
        *cache = Some((state, crl.clone()));
        Ok(crl)
    }
}
