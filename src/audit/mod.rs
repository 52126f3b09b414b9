//! The tamper-evident audit log: every tool call and CLI operation, hash-chained and signed.
//!
//! Each record's body is JSON that names the previous record's hash (`prev`) and its own
//! position (`seq`); its hash is SHA-256 over the body's exact bytes, and the installation's CA
//! key signs that hash. Editing a record breaks its hash (or, if the hash is recomputed, its
//! signature); deleting, inserting or reordering records breaks the chain of `seq` and `prev`.
//! [`verify`] walks the log and names the first record that does not hold.
//!
//! Records never hold secrets: front-ends put in identifiers (agent ids, token ids, serials,
//! actions, audiences) and decisions, never keys, tokens or tool arguments' values.
//!
//! ```
//! use agentseal::audit::{self, AuditEvent, Decision};
//! use agentseal::crypto::{Algorithm, Seed, SigningKey};
//!
//! let key = SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().unwrap());
//! let event = AuditEvent::new("agent://acme.example/reviewer", "mcp.sign_action", Decision::Allowed);
//! let first = audit::seal(&event, None, 1_700_000_000, &key).unwrap();
//! let second = audit::seal(&event, Some(&first), 1_700_000_001, &key).unwrap();
//!
//! let keys = [key.public_key().clone()];
//! assert_eq!(audit::verify([first.clone(), second.clone()].into_iter(), &keys, None).unwrap().records, 2);
//!
//! // Dropping the first record breaks the chain, and verification says where.
//! let fault = audit::verify([second].into_iter(), &keys, None).unwrap_err();
//! assert_eq!(fault.seq(), 1);
//! ```

pub mod checkpoint;
pub mod merkle;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::crypto::{CryptoError, PublicKey, SigningKey};
use crate::jose::{b64, b64_decode, thumbprint};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedRecord {
    /// Position in the log (also inside the body; the two must agree).
    pub seq: i64,
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
        body,
        hash,
        kid: thumbprint(key.public_key()),
        sig: b64(&sig),
    })
}

fn signed_message(hash: &str) -> Vec<u8> {
    [SIGNING_CONTEXT, hash.as_bytes()].concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the log does not verify, naming the first record (by position) that does not hold.
/// Codes ([`AuditFault::code`]) are stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditFault {
    /// Records are missing: the log jumps from `seq - 1` to a later position, or starts late.
    #[error("record {seq} is missing (deleted): the log goes on at record {found}")]
    Missing {
        /// The first missing position.
        seq: i64,
        /// The position found instead.
        found: i64,
    },
    /// The body is not a record.
    #[error("record {seq} is malformed: {detail}")]
    Malformed {
        /// Its position.
        seq: i64,
        /// What is wrong.
        detail: String,
    },
    /// The body says it belongs elsewhere: records were moved.
    #[error("record {seq} holds the body of record {claims} (records were reordered)")]
    Moved {
        /// The position it is stored at.
        seq: i64,
        /// The position its signed body names.
        claims: i64,
    },
    /// The body does not hash to the stored hash.
    #[error("record {seq} was edited: its content does not match its hash")]
    Edited {
        /// Its position.
        seq: i64,
    },
    /// The record does not follow the one before it.
    #[error(
        "record {seq} does not follow record {}: a record before it was inserted, removed or replaced",
        .seq - 1
    )]
    ChainBroken {
        /// Its position.
        seq: i64,
    },
    /// The signature does not verify, or is not by a key of this CA.
    #[error("record {seq} has no valid signature by this CA (forged or edited and re-hashed)")]
    BadSignature {
        /// Its position.
        seq: i64,
    },
    /// The log ends before its recorded head: records at the end were deleted.
    #[error("records after {last} are missing: the log's head was record {head}")]
    Truncated {
        /// The last record present.
        last: i64,
        /// The head the installation recorded.
        head: i64,
    },
    /// The log ends with the right position but another hash than its recorded head.
    #[error("record {seq} is not the record the log's head names")]
    HeadMismatch {
        /// The head's position.
        seq: i64,
    },
}

impl AuditFault {
    /// The position of the first bad record.
    pub fn seq(&self) -> i64 {
        match self {
            AuditFault::Missing { seq, .. }
            | AuditFault::Malformed { seq, .. }
            | AuditFault::Moved { seq, .. }
            | AuditFault::Edited { seq }
            | AuditFault::ChainBroken { seq }
            | AuditFault::BadSignature { seq }
            | AuditFault::HeadMismatch { seq } => *seq,
            AuditFault::Truncated { last, .. } => last + 1,
        }
    }

    /// The stable code: `missing`, `malformed`, `moved`, `edited`, `chain_broken`,
    /// `bad_signature`, `truncated`, `head_mismatch`.
    pub fn code(&self) -> &'static str {
        match self {
            AuditFault::Missing { .. } => "missing",
            AuditFault::Malformed { .. } => "malformed",
            AuditFault::Moved { .. } => "moved",
            AuditFault::Edited { .. } => "edited",
            AuditFault::ChainBroken { .. } => "chain_broken",
            AuditFault::BadSignature { .. } => "bad_signature",
            AuditFault::Truncated { .. } => "truncated",
            AuditFault::HeadMismatch { .. } => "head_mismatch",
        }
    }
}

/// The head of the log: its last position and that record's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Position of the last record (0: empty log).
    pub seq: i64,
    /// Its hash ([`GENESIS`] for an empty log).
    pub hash: String,
}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    /// How many records.
    pub records: i64,
    /// The last one.
    pub head: AuditHead,
}

/// Checks a log record by record, in stored order, against the CA's keys: for logs too large
/// to hold in memory. [`verify`] is the one-call form.
pub struct AuditVerifier {
    keys: Vec<(String, PublicKey)>,
    last: AuditHead,
    head: Option<AuditHead>,
}

impl AuditVerifier {
    /// A verifier for a log signed by one of `keys`, starting from its first record. With
    /// `head` (the head the installation last wrote, or one an operator kept aside), the log
    /// must pass through exactly that record: a rolled-back log fails even after it grew again.
    pub fn new(keys: &[PublicKey], head: Option<&AuditHead>) -> Self {
        AuditVerifier {
            keys: keys.iter().map(|k| (thumbprint(k), k.clone())).collect(),
            last: AuditHead {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
            head: head.cloned(),
        }
    }

    /// Checks the next record.
    pub fn push(&mut self, record: &SealedRecord) -> Result<(), AuditFault> {
        let expected = self.last.seq + 1;
        if record.seq != expected {
            // Positions only grow in stored order: a gap means deletion, anything else a move.
            return Err(if record.seq > expected {
                AuditFault::Missing {
                    seq: expected,
                    found: record.seq,
                }
            } else {
                AuditFault::Moved {
                    seq: record.seq,
                    claims: record.seq,
                }
            });
        }
        let seq = record.seq;
        let body = record.parsed().map_err(|e| AuditFault::Malformed {
            seq,
            detail: e.to_string(),
        })?;
        if body.seq != seq {
            return Err(AuditFault::Moved {
                seq,
                claims: body.seq,
            });
        }
        if hex(&Sha256::digest(record.body.as_bytes())) != record.hash {
            return Err(AuditFault::Edited { seq });
        }
        if body.prev != self.last.hash {
            return Err(AuditFault::ChainBroken { seq });
        }
        let signed = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == record.kid)
            .is_some_and(|(_, key)| {
                b64_decode(&record.sig)
                    .is_ok_and(|sig| key.verify(&signed_message(&record.hash), &sig))
            });
        if !signed {
            return Err(AuditFault::BadSignature { seq });
        }
        if self
            .head
            .as_ref()
            .is_some_and(|head| head.seq == seq && head.hash != record.hash)
        {
            return Err(AuditFault::HeadMismatch { seq });
        }
        self.last = AuditHead {
            seq,
            hash: record.hash.clone(),
        };
        Ok(())
    }

    /// Ends the walk; the log must reach the head given to [`AuditVerifier::new`].
    pub fn finish(self) -> Result<AuditSummary, AuditFault> {
        if let Some(head) = &self.head
            && self.last.seq < head.seq
        {
            return Err(AuditFault::Truncated {
                last: self.last.seq,
                head: head.seq,
            });
        }
        Ok(AuditSummary {
            records: self.last.seq,
            head: self.last,
        })
    }
}

/// Verifies a whole log, in stored order, against the CA's `keys` (see [`AuditVerifier`]).
pub fn verify(
    records: impl IntoIterator<Item = SealedRecord>,
    keys: &[PublicKey],
    head: Option<&AuditHead>,
) -> Result<AuditSummary, AuditFault> {
    let mut verifier = AuditVerifier::new(keys, head);
    for record in records {
        verifier.push(&record)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Algorithm, Seed};

    fn key() -> SigningKey {
        SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().unwrap())
    }

    fn log(key: &SigningKey, n: usize) -> Vec<SealedRecord> {
        let mut records: Vec<SealedRecord> = Vec::new();
        for i in 0..n {
            let mut event = AuditEvent::new("agent://a", "mcp.sign_action", Decision::Allowed);
            event.details.insert("i".into(), i.into());
            let record = seal(&event, records.last(), 1_700_000_000 + i as i64, key).unwrap();
            records.push(record);
        }
        records
    }

    fn check(records: &[SealedRecord], key: &SigningKey) -> Result<AuditSummary, AuditFault> {
        verify(records.iter().cloned(), &[key.public_key().clone()], None)
    }

    #[test]
    fn an_untouched_log_verifies_and_reports_its_head() {
        let key = key();
        let records = log(&key, 5);
        let summary = check(&records, &key).unwrap();
        assert_eq!(summary.records, 5);
        assert_eq!(summary.head.hash, records[4].hash);
        assert_eq!(check(&[], &key).unwrap().records, 0);
    }

    #[test]
    fn an_edited_body_is_named_by_its_hash() {
        let key = key();
        let mut records = log(&key, 4);
        records[2].body = records[2].body.replace("allowed", "denied");
        assert_eq!(
            check(&records, &key).unwrap_err(),
            AuditFault::Edited { seq: 3 }
        );
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_fails_the_signature() {
        let key = key();
        let mut records = log(&key, 4);
        records[1].body = records[1].body.replace("allowed", "denied");
        records[1].hash = hex(&Sha256::digest(records[1].body.as_bytes()));
        assert_eq!(
            check(&records, &key).unwrap_err(),
            AuditFault::BadSignature { seq: 2 }
        );
    }

    #[test]
    fn a_record_signed_by_another_key_is_refused() {
        let key = key();
        let records = log(&key, 3);
        let other = self::key();
        assert_eq!(
            check(&records, &other).unwrap_err(),
            AuditFault::BadSignature { seq: 1 }
        );
    }

    #[test]
    fn a_renumbered_deletion_breaks_the_chain() {
        let key = key();
        let mut records = log(&key, 4);
        records.remove(1);
        // Renumbering the stored positions alone: the signed body still says 3.
        records[1].seq = 2;
        records[2].seq = 3;
        assert_eq!(
            check(&records, &key).unwrap_err(),
            AuditFault::Moved { seq: 2, claims: 3 }
        );
    }

    #[test]
    fn a_record_forged_in_place_fails_its_signature_and_one_from_another_log_the_chain() {
        let key = key();
        let records = log(&key, 3);
        let forger = self::key();
        // Right position, right prev, right hash: only the signature gives it away.
        let mut event = AuditEvent::new("agent://a", "mcp.revoke", Decision::Allowed);
        event.reasons.push("forged".into());
        let mut forged = records.clone();
        forged[1] = seal(&event, Some(&records[0]), 1_700_000_001, &forger).unwrap();
        assert_eq!(
            check(&forged, &key).unwrap_err(),
            AuditFault::BadSignature { seq: 2 }
        );
        // A genuine record of another log at the same position does not follow this one.
        let other = seal(&event, None, 1_600_000_000, &key).unwrap();
        let second = seal(&event, Some(&other), 1_600_000_001, &key).unwrap();
        let mut spliced = records.clone();
        spliced[1] = second;
        assert_eq!(
            check(&spliced, &key).unwrap_err(),
            AuditFault::ChainBroken { seq: 2 }
        );
    }

    #[test]
    fn truncation_is_found_against_the_head() {
        let key = key();
        let records = log(&key, 4);
        let head = AuditHead {
            seq: 4,
            hash: records[3].hash.clone(),
        };
        let keys = [key.public_key().clone()];
        let fault = verify(records[..2].iter().cloned(), &keys, Some(&head)).unwrap_err();
        assert_eq!(fault, AuditFault::Truncated { last: 2, head: 4 });
        assert_eq!(fault.seq(), 3);
        let wrong = AuditHead {
            seq: 4,
            hash: GENESIS.into(),
        };
        assert_eq!(
            verify(records.iter().cloned(), &keys, Some(&wrong)).unwrap_err(),
            AuditFault::HeadMismatch { seq: 4 }
        );
    }

    #[test]
    fn a_rollback_is_found_against_a_kept_head_even_after_the_log_grew_again() {
        let key = key();
        let records = log(&key, 4);
        let kept = AuditHead {
            seq: 3,
            hash: records[2].hash.clone(),
        };
        // Rolled back to record 2, then records 3.. appended afresh.
        let mut regrown = records[..2].to_vec();
        for i in 0..3 {
            let event = AuditEvent::new("agent://b", format!("mcp.other{i}"), Decision::Allowed);
            let record = seal(&event, regrown.last(), 1_800_000_000, &key).unwrap();
            regrown.push(record);
        }
        let keys = [key.public_key().clone()];
        assert!(verify(regrown.iter().cloned(), &keys, None).is_ok());
        assert_eq!(
            verify(regrown.iter().cloned(), &keys, Some(&kept)).unwrap_err(),
            AuditFault::HeadMismatch { seq: 3 }
        );
    }

    #[test]
    fn garbage_bodies_and_signatures_are_typed_faults_not_panics() {
        let key = key();
        let mut records = log(&key, 2);
        records[1].body = "{not json".into();
        assert_eq!(check(&records, &key).unwrap_err().code(), "malformed");
        let mut records = log(&key, 2);
        records[0].sig = "%%%".into();
        assert_eq!(check(&records, &key).unwrap_err().code(), "bad_signature");
    }
}
