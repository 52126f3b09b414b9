//! What verifying any signed object relies on: the CA keys a verifier trusts ([`TrustAnchor`]) and
//! a place to look revocations up ([`RevocationSource`]). Both sit below every signed object, so
//! certificates and revocation lists can use them without importing each other.

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::jose::{Jwk, JwkSet, Jws};
use crate::reason::VerifyError;

/// The CA public keys a verifier trusts, under the CA id they sign as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The CA id (`iss` of its certificates and revocation lists).
    pub ca_id: String,
    /// Every key the CA signs with; each object must carry one valid signature per key.
    pub keys: Vec<PublicKey>,
}

impl TrustAnchor {
    /// The CA keys as a JWK Set.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().map(Jwk::from_public_key).collect(),
        }
    }

    /// Checks that `iss` names this CA, then every CA signature of `jws`.
    pub(crate) fn verify_issued(&self, jws: &Jws, iss: &str) -> Result<(), VerifyError> {
        if iss != self.ca_id {
            return Err(VerifyError::UnknownIssuer(iss.to_owned()));
        }
        jws.verify(&self.keys)
    }
}

/// What was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevokedKind {
    /// An action token, by `jti`.
    Token,
    /// A certificate, by serial (`jti` of the certificate).
    Certificate,
}

impl RevokedKind {
    /// The name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            RevokedKind::Token => "token",
            RevokedKind::Certificate => "certificate",
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    /// Token id or certificate serial.
    pub id: String,
    /// When it was revoked (seconds since the epoch); a time still to come schedules the
    /// revocation (a key rotation's grace).
    pub revoked_at: i64,
    /// The operator's reason.
    pub reason: String,
}

impl RevocationEntry {
    /// Whether the revocation applies at `now`. A scheduled one applies from its time minus the
    /// clock skew allowed ([`crate::clock::DEFAULT_SKEW`]): early rather than late, and a
    /// revocation recorded "now" applies at once to a check that began a moment before.
    pub fn in_effect(&self, now: i64) -> bool {
        self.revoked_at <= now.saturating_add(crate::clock::DEFAULT_SKEW)
    }
}

/// How current a source's revocation data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Where the data comes from: `local` (the installation's database) or `crl`.
    pub source: &'static str,
    /// The revocation list number, for a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// When the data was produced.
    pub issued_at: i64,
    /// When newer data is due, for a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_update: Option<i64>,
}

/// Somewhere revocations can be looked up. A source that cannot vouch for being current answers
/// [`VerifyError::RevocationUnavailable`] rather than "not revoked".
pub trait RevocationSource {
    /// The revocation of token `jti`, if any.
    fn token_revocation(&self, jti: &str, now: i64)
    -> Result<Option<RevocationEntry>, VerifyError>;
    /// The revocation of certificate `serial`, if any.
    fn certificate_revocation(
        &self,
        serial: &str,
        now: i64,
    ) -> Result<Option<RevocationEntry>, VerifyError>;
    /// How fresh the data is.
    fn freshness(&self, now: i64) -> Freshness;
}
