//! Audit records: what a front-end reports about an operation, and the record the log keeps of
//! it: a body that names its position and the previous record's hash, signed by the CA.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::merkle::{self, Hash};
use crate::crypto::{CryptoError, SigningKey};
use crate::jose::{b64, thumbprint};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Version of the record body format.
pub const FORMAT: u32 = 1;
/// Domain separation for record signatures: a record signature is never a valid signature over
/// anything else the CA signs.
const SIGNING_CONTEXT: &[u8] = b"agentseal-audit-v1:";

/// What became of the operation a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Decision {
    /// Done as asked.
    Allowed,
    /// Refused: a failed verification, a policy denial, a declined approval.
    Denied,
    /// Could not be done (bad input, an unknown agent, a storage failure).
    Failed,
    /// Waiting for a person's answer (an approval asked through the client).
    Pending,
}

/// What a front-end reports about one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Who asked: an agent id, or `operator` for the CLI.
    pub actor: String,
    /// The delegation chain the actor acted under, outermost first (empty when not delegated).
    pub chain: Vec<String>,
    /// The operation, prefixed by its front-end: `mcp.sign_action`, `cli.revoke.cert`.
    pub operation: String,
    /// The outcome.
    pub decision: Decision,
    /// Stable reason codes of a denial or failure.
    pub reasons: Vec<String>,
    /// Request metadata and identifiers of what was touched (never secrets).
    pub details: Map<String, Value>,
}

impl AuditEvent {
    /// An event with no chain, reasons or details.
    pub fn new(actor: impl Into<String>, operation: impl Into<String>, decision: Decision) -> Self {
        AuditEvent {
            actor: actor.into(),
            chain: Vec::new(),
            operation: operation.into(),
            decision,
            reasons: Vec::new(),
            details: Map::new(),
        }
    }
}

/// The signed body of a record, as stored (field order is the serialization order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordBody {
    /// Format version ([`FORMAT`]).
    pub v: u32,
    /// Position in the log, from 1.
    pub seq: i64,
    /// Hash of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// Unix time of the operation.
    pub time: i64,
    /// See [`AuditEvent::actor`].
    pub actor: String,
    /// See [`AuditEvent::chain`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// See [`AuditEvent::operation`].
    pub op: String,
    /// See [`AuditEvent::decision`].
    pub decision: Decision,
    /// See [`AuditEvent::reasons`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// See [`AuditEvent::details`].
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

/// One record as stored and exported: the body's exact bytes, their hash, and the signature.
/// Every field is either signed or checked against what is: `seq` and `actor` against the
/// body, `hash` against the body's bytes, `sig` (by the key `kid` names) over the hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedRecord {
    /// Position in the log (also inside the body; the two must agree).
    pub seq: i64,
    /// The body's actor, kept beside it to find an agent's records (must agree with the body).
    pub actor: String,
    /// The body, exactly as hashed.
    pub body: String,
    /// Lowercase hex SHA-256 of `body`.
    pub hash: String,
    /// Thumbprint of the CA key that signed.
    pub kid: String,
    /// base64url signature over the hash.
    pub sig: String,
}

impl SealedRecord {
    /// The parsed body (records from [`seal`] always parse; stored ones may not).
    pub fn parsed(&self) -> Result<RecordBody, serde_json::Error> {
        serde_json::from_str(&self.body)
    }

    /// The record's leaf in the log's Merkle tree: the body's exact bytes.
    pub fn leaf(&self) -> Hash {
        merkle::leaf_hash(self.body.as_bytes())
    }
}

/// Seals `event` as the record after `previous` (`None`: the first record).
pub fn seal(
    event: &AuditEvent,
    previous: Option<&SealedRecord>,
    time: i64,
    key: &SigningKey,
) -> Result<SealedRecord, CryptoError> {
    let body = RecordBody {
        v: FORMAT,
        seq: previous.map_or(1, |p| p.seq + 1),
        prev: previous.map_or_else(|| GENESIS.to_owned(), |p| p.hash.clone()),
        time,
        actor: event.actor.clone(),
        chain: event.chain.clone(),
        op: event.operation.clone(),
        decision: event.decision,
        reasons: event.reasons.clone(),
        details: event.details.clone(),
    };
    let body = serde_json::to_string(&body).expect("record bodies serialize");
    let hash = hex(&Sha256::digest(body.as_bytes()));
    let sig = key.sign(&signed_message(&hash))?;
    Ok(SealedRecord {
        seq: previous.map_or(1, |p| p.seq + 1),
        actor: event.actor.clone(),
        body,
        hash,
        kid: thumbprint(key.public_key()),
        sig: b64(&sig),
    })
}

pub(super) fn signed_message(hash: &str) -> Vec<u8> {
    [SIGNING_CONTEXT, hash.as_bytes()].concat()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
