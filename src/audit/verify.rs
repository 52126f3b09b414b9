//! Verifying the audit log: each record's hash, signature, place in the chain and actor, and the
//! log as a whole against heads and checkpoints kept earlier.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::Checkpoint;
use super::merkle::{Frontier, Hash};
use super::record::{GENESIS, SealedRecord, hex, signed_message};
use crate::crypto::PublicKey;
use crate::jose::{b64_decode, thumbprint};

/// Why the log does not verify, naming the first record (by position) that does not hold, or
/// what the log as a whole fails. Codes ([`AuditFault::code`]) are stable.
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
    /// The stored actor, by which an agent's records are found, is not the signed body's.
    #[error(
        "record {seq} is filed under another actor than the one it names (the index was edited)"
    )]
    ActorMismatch {
        /// Its position.
        seq: i64,
    },
    /// The log ends before a head or checkpoint kept earlier: records at the end were deleted,
    /// or the database was put back to an older copy.
    #[error(
        "records after {last} are missing: the log had {head} records (deleted, or an older copy of the database)"
    )]
    Truncated {
        /// The last record present.
        last: i64,
        /// How many records the head or checkpoint saw.
        head: i64,
    },
    /// Every record is gone, yet a head or checkpoint saw some.
    #[error("the log is empty: every record was deleted (it had {head})")]
    Emptied {
        /// How many records the head or checkpoint saw.
        head: i64,
    },
    /// The log ends with the right position but another hash than its recorded head.
    #[error("record {seq} is not the record the log's head names")]
    HeadMismatch {
        /// The head's position.
        seq: i64,
    },
    /// The log's first `size` records are not the ones a checkpoint of that size commits to.
    #[error(
        "the first {size} records are not those the checkpoint of size {size} commits to: they were rewritten, or the database was rolled back and the log grew again"
    )]
    Rewritten {
        /// The checkpoint's size.
        size: i64,
    },
    /// A checkpoint does not verify against the trust anchor (or is not this log's).
    #[error("checkpoint does not verify: {detail}")]
    BadCheckpoint {
        /// Why.
        detail: String,
    },
    /// The log does not pass through the last checkpoint this installation signed, whose mark
    /// the key store keeps: records at the end were deleted, or the database was put back to
    /// an older copy (and perhaps grew again).
    #[error(
        "the log does not reach the last checkpoint this installation signed (its mark is in the key store): records at the end were deleted, or an older copy of the database was put back"
    )]
    RolledBack,
    /// The CA keys recorded in the database are not those of the key store: whoever could
    /// write the database replaced or added a key (and could sign records with it).
    #[error(
        "the CA keys recorded in the database are not the key store's: the database's trust anchor was replaced"
    )]
    KeysReplaced,
}

impl AuditFault {
    /// The position of the first bad record, when the fault is about one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            AuditFault::Missing { seq, .. }
            | AuditFault::Malformed { seq, .. }
            | AuditFault::Moved { seq, .. }
            | AuditFault::Edited { seq }
            | AuditFault::ChainBroken { seq }
            | AuditFault::BadSignature { seq }
            | AuditFault::ActorMismatch { seq }
            | AuditFault::HeadMismatch { seq } => Some(*seq),
            AuditFault::Truncated { last, .. } => Some(last + 1),
            AuditFault::Emptied { .. } => Some(1),
            AuditFault::Rewritten { .. }
            | AuditFault::BadCheckpoint { .. }
            | AuditFault::RolledBack
            | AuditFault::KeysReplaced => None,
        }
    }

    /// The stable code: `missing`, `malformed`, `moved`, `edited`, `chain_broken`,
    /// `bad_signature`, `actor_mismatch`, `truncated`, `emptied`, `head_mismatch`, `rewritten`,
    /// `bad_checkpoint`, `rolled_back`, `ca_keys_replaced`.
    pub fn code(&self) -> &'static str {
        match self {
            AuditFault::Missing { .. } => "missing",
            AuditFault::Malformed { .. } => "malformed",
            AuditFault::Moved { .. } => "moved",
            AuditFault::Edited { .. } => "edited",
            AuditFault::ChainBroken { .. } => "chain_broken",
            AuditFault::BadSignature { .. } => "bad_signature",
            AuditFault::ActorMismatch { .. } => "actor_mismatch",
            AuditFault::Truncated { .. } => "truncated",
            AuditFault::Emptied { .. } => "emptied",
            AuditFault::HeadMismatch { .. } => "head_mismatch",
            AuditFault::Rewritten { .. } => "rewritten",
            AuditFault::BadCheckpoint { .. } => "bad_checkpoint",
            AuditFault::RolledBack => "rolled_back",
            AuditFault::KeysReplaced => "ca_keys_replaced",
        }
    }
}

/// The head of the log's hash chain: its last position and that record's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Position of the last record (0: empty log).
    pub seq: i64,
    /// Its hash ([`GENESIS`] for an empty log).
    pub hash: String,
}

impl AuditHead {
    /// The head of the chain whose last record is `record`, hashed from its body.
    pub fn of(record: &SealedRecord) -> Self {
        AuditHead {
            seq: record.seq,
            hash: hex(&Sha256::digest(record.body.as_bytes())),
        }
    }

    /// The head of the empty log.
    pub fn empty() -> Self {
        AuditHead {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// The mark of a checkpoint: what the installation keeps of the last one it signed, in its key
/// store. A hash of the size and head, so it fits where seeds go.
pub fn mark(size: u64, root: &Hash) -> Hash {
    Sha256::new()
        .chain_update(b"agentseal-audit-mark-v1:")
        .chain_update(size.to_be_bytes())
        .chain_update(root)
        .finalize()
        .into()
}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    /// How many records.
    pub records: i64,
    /// The last one.
    pub head: AuditHead,
    /// The head of the Merkle tree of all records (what a checkpoint of this size signs).
    #[serde(skip)]
    pub root: Hash,
}

/// Checks a log record by record, in stored order, against the CA's keys: for logs too large
/// to hold in memory. [`verify`] is the one-call form.
#[derive(Debug, Clone)]
pub struct AuditVerifier {
    keys: Vec<(String, PublicKey)>,
    last: AuditHead,
    head: Option<AuditHead>,
    tree: Frontier,
    /// Checkpoints whose size the walk has not reached yet, smallest first.
    checkpoints: Vec<Checkpoint>,
    /// A checkpoint mark the walk has not passed yet.
    mark: Option<Hash>,
}

impl AuditVerifier {
    /// A verifier for a log signed by one of `keys`, starting from its first record. With
    /// `head` (the head the installation last wrote, or one an operator kept aside), the log
    /// must pass through exactly that record: a rolled-back log fails even after it grew again.
    pub fn new(keys: &[PublicKey], head: Option<&AuditHead>) -> Self {
        AuditVerifier::resume(keys, AuditHead::empty(), Frontier::new(), head)
    }

    /// A verifier that goes on after record `last.seq`, whose chain head is `last` and whose
    /// Merkle tree is `tree`: both must come from a verified walk or a signed checkpoint.
    pub fn resume(
        keys: &[PublicKey],
        last: AuditHead,
        tree: Frontier,
        head: Option<&AuditHead>,
    ) -> Self {
        AuditVerifier {
            keys: keys.iter().map(|k| (thumbprint(k), k.clone())).collect(),
            last,
            head: head.cloned(),
            tree,
            checkpoints: Vec::new(),
            mark: None,
        }
    }

    /// Also requires the log to pass through the checkpoint whose [`mark`] is `mark` (at the
    /// current position or later).
    pub fn expect_mark(&mut self, expected: Hash) {
        self.mark = (mark(self.tree.size(), &self.tree.root()) != expected).then_some(expected);
    }

    /// Also requires the log to be a consistent extension of `checkpoint` (verified by the
    /// caller): its first `size` records must be the ones the checkpoint commits to, and the
    /// log must be at least that long.
    pub fn expect(&mut self, checkpoint: Checkpoint) -> Result<(), AuditFault> {
        let size = i64::try_from(checkpoint.size).unwrap_or(i64::MAX);
        if size == self.last.seq {
            return self.check_root(&checkpoint);
        }
        if size < self.last.seq {
            // Only a resumed walk starts past a checkpoint: it cannot look back.
            return Err(AuditFault::BadCheckpoint {
                detail: format!("checkpoint of size {size} is behind the resumed walk"),
            });
        }
        let at = self
            .checkpoints
            .partition_point(|c| c.size <= checkpoint.size);
        self.checkpoints.insert(at, checkpoint);
        Ok(())
    }

    fn check_root(&self, checkpoint: &Checkpoint) -> Result<(), AuditFault> {
        if checkpoint.root == self.tree.root() {
            Ok(())
        } else {
            Err(AuditFault::Rewritten {
                size: self.last.seq,
            })
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
        if record.actor != body.actor {
            return Err(AuditFault::ActorMismatch { seq });
        }
        if self
            .head
            .as_ref()
            .is_some_and(|head| head.seq == seq && head.hash != record.hash)
        {
            return Err(AuditFault::HeadMismatch { seq });
        }
        self.tree.push(record.leaf());
        self.last = AuditHead {
            seq,
            hash: record.hash.clone(),
        };
        if let Some(expected) = self.mark
            && mark(self.tree.size(), &self.tree.root()) == expected
        {
            self.mark = None;
        }
        while let Some(checkpoint) = self.checkpoints.first() {
            if checkpoint.size > self.tree.size() {
                break;
            }
            self.check_root(checkpoint)?;
            self.checkpoints.remove(0);
        }
        Ok(())
    }

    /// The chain head and tree so far.
    pub fn position(&self) -> (&AuditHead, &Frontier) {
        (&self.last, &self.tree)
    }

    /// Whether the log may end here: it reaches the head and every checkpoint given. The
    /// verifier can go on afterwards (a server checking its log as it grows).
    pub fn check_end(&self) -> Result<AuditSummary, AuditFault> {
        let reached = self
            .head
            .as_ref()
            .map(|h| h.seq)
            .into_iter()
            .chain(
                self.checkpoints
                    .iter()
                    .map(|c| i64::try_from(c.size).unwrap_or(i64::MAX)),
            )
            .max()
            .filter(|&seen| seen > self.last.seq);
        if let Some(head) = reached {
            return Err(if self.last.seq == 0 {
                AuditFault::Emptied { head }
            } else {
                AuditFault::Truncated {
                    last: self.last.seq,
                    head,
                }
            });
        }
        // After the named checks: a checkpoint or head kept aside says more than the mark.
        if self.mark.is_some() {
            return Err(AuditFault::RolledBack);
        }
        Ok(AuditSummary {
            records: self.last.seq,
            head: self.last.clone(),
            root: self.tree.root(),
        })
    }

    /// Ends the walk; the log must reach the head and checkpoints given.
    pub fn finish(self) -> Result<AuditSummary, AuditFault> {
        self.check_end()
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
    use crate::audit::record::{AuditEvent, Decision, seal};
    use crate::crypto::{Algorithm, Seed, SigningKey};

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
        assert_eq!(fault.seq(), Some(3));
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

    #[test]
    fn an_actor_index_that_disagrees_with_the_body_is_found() {
        let key = key();
        let mut records = log(&key, 3);
        records[1].actor = "agent://someone-else".into();
        assert_eq!(
            check(&records, &key).unwrap_err(),
            AuditFault::ActorMismatch { seq: 2 }
        );
    }

    fn checkpoint_of(records: &[SealedRecord]) -> Checkpoint {
        let mut tree = Frontier::new();
        records.iter().for_each(|r| tree.push(r.leaf()));
        Checkpoint {
            origin: "agentseal/test/audit".into(),
            size: records.len() as u64,
            root: tree.root(),
        }
    }

    fn check_against(
        records: &[SealedRecord],
        key: &SigningKey,
        checkpoint: &Checkpoint,
    ) -> Result<AuditSummary, AuditFault> {
        let mut verifier = AuditVerifier::new(&[key.public_key().clone()], None);
        verifier.expect(checkpoint.clone())?;
        records.iter().try_for_each(|r| verifier.push(r))?;
        verifier.finish()
    }

    #[test]
    fn a_log_must_extend_a_checkpoint_kept_earlier() {
        let key = key();
        let records = log(&key, 6);
        let kept = checkpoint_of(&records[..4]);
        let summary = check_against(&records, &key, &kept).unwrap();
        assert_eq!(summary.root, checkpoint_of(&records).root);
        assert_eq!(
            check_against(&records[..4], &key, &kept).unwrap().records,
            4
        );
        // The tail deleted, every record deleted.
        assert_eq!(
            check_against(&records[..3], &key, &kept).unwrap_err(),
            AuditFault::Truncated { last: 3, head: 4 }
        );
        assert_eq!(
            check_against(&[], &key, &kept).unwrap_err(),
            AuditFault::Emptied { head: 4 }
        );
        // Rolled back to record 2 and grown again: a valid chain, but not the one kept.
        let mut regrown = records[..2].to_vec();
        for i in 0..4 {
            let event = AuditEvent::new("agent://b", format!("mcp.other{i}"), Decision::Allowed);
            let record = seal(&event, regrown.last(), 1_800_000_000, &key).unwrap();
            regrown.push(record);
        }
        assert!(check(&regrown, &key).is_ok());
        assert_eq!(
            check_against(&regrown, &key, &kept).unwrap_err(),
            AuditFault::Rewritten { size: 4 }
        );
    }

    #[test]
    fn a_resumed_walk_goes_on_from_a_verified_position() {
        let key = key();
        let records = log(&key, 7);
        let keys = [key.public_key().clone()];
        let mut first = AuditVerifier::new(&keys, None);
        records[..5].iter().for_each(|r| first.push(r).unwrap());
        let (last, tree) = first.position();
        let mut resumed = AuditVerifier::resume(&keys, last.clone(), tree.clone(), None);
        resumed.expect(checkpoint_of(&records[..5])).unwrap();
        records[5..].iter().for_each(|r| resumed.push(r).unwrap());
        assert_eq!(
            resumed.check_end().unwrap().root,
            checkpoint_of(&records).root
        );
        // A record of a fork after record 4 does not follow the resumed position.
        let event = AuditEvent::new("agent://fork", "mcp.revoke", Decision::Allowed);
        let fork = seal(&event, Some(&records[3]), 1_800_000_000, &key).unwrap();
        let fork = seal(&event, Some(&fork), 1_800_000_001, &key).unwrap();
        let mut resumed = AuditVerifier::resume(&keys, last.clone(), tree.clone(), None);
        assert_eq!(
            resumed.push(&fork).unwrap_err(),
            AuditFault::ChainBroken { seq: 6 }
        );
    }

    #[test]
    fn a_log_must_pass_through_the_marked_checkpoint() {
        let key = key();
        let records = log(&key, 5);
        let keys = [key.public_key().clone()];
        let marked = checkpoint_of(&records[..3]);
        let walk = |records: &[SealedRecord]| {
            let mut verifier = AuditVerifier::new(&keys, None);
            verifier.expect_mark(mark(marked.size, &marked.root));
            records.iter().try_for_each(|r| verifier.push(r))?;
            verifier.finish()
        };
        assert!(walk(&records).is_ok());
        assert!(walk(&records[..3]).is_ok());
        assert_eq!(walk(&records[..2]).unwrap_err(), AuditFault::RolledBack);
        // Rolled back to record 2 and grown again past the marked size.
        let mut regrown = records[..2].to_vec();
        for i in 0..3 {
            let event = AuditEvent::new("agent://b", format!("mcp.other{i}"), Decision::Allowed);
            let record = seal(&event, regrown.last(), 1_800_000_000, &key).unwrap();
            regrown.push(record);
        }
        assert_eq!(walk(&regrown).unwrap_err(), AuditFault::RolledBack);
    }
}
