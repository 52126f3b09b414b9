//! The audit log as the authority keeps it: appending events, releasing results only once they
//! are recorded, and reading and verifying records.

use super::*;
use crate::audit::checkpoint::Checkpoint;
use crate::audit::merkle::{self, Frontier, Hash};
use crate::jose::{b64, b64_decode};
use crate::store::StoredCheckpoint;

/// Why [`Installation::release`] did not hand a result over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Withheld<E> {
    /// The operation itself failed: its error, passed on whether or not the failure was recorded
    /// (an error carries nothing that must not leave unaudited).
    #[error(transparent)]
    Failed(E),
    /// The operation succeeded but its audit record could not be appended, so its result (a
    /// token, a revocation report, ...) is withheld.
    #[error(
        "the operation was done but the audit log could not record it ({0}); its result is withheld"
    )]
    Unaudited(ServiceError),
}

impl From<Withheld<ServiceError>> for ServiceError {
    fn from(withheld: Withheld<ServiceError>) -> Self {
        match withheld {
            Withheld::Failed(error) => error,
            Withheld::Unaudited(error) => ServiceError::Unaudited(Box::new(error)),
        }
    }
}

/// The log as far as a process verified it, and the checkpoint it signed or found there.
#[derive(Debug)]
pub(super) struct VerifiedLog {
    verifier: AuditVerifier,
    checkpoint: Option<SignedCheckpoint>,
    /// The key store's mark when this walk began or last signed.
    mark: Option<Hash>,
    /// When the walk last reached the end of the log.
    checked_at: std::time::Instant,
}

/// What an audit log must agree with that is kept outside its database.
#[derive(Debug, Clone, Default)]
pub struct KeptState {
    /// A head an earlier verify printed (instead of the one the database records).
    pub head: Option<AuditHead>,
    /// A signed checkpoint saved earlier: the log must extend it.
    pub checkpoint: Option<String>,
    /// The mark of the last checkpoint signed ([`Installation::audit_mark`]): the log must
    /// pass through it.
    pub mark: Option<Hash>,
}

/// A checkpoint of the audit log: the signed note, and the size and head it states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// How many records it covers.
    pub size: i64,
    /// The signed note (C2SP `tlog-checkpoint`).
    pub note: String,
    /// The Merkle tree head it signs.
    pub root: Hash,
}

/// That a record is in the log a checkpoint commits to (RFC 9162 inclusion proof).
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The record, as stored: its leaf is the body's exact bytes.
    pub record: SealedRecord,
    /// The size of the tree the proof is for.
    pub size: i64,
    /// The audit path, lowest node first.
    pub proof: Vec<Hash>,
    /// The signed checkpoint whose head the proof leads to.
    pub checkpoint: String,
}

/// Reads a stored tree ([`Frontier::parts`] as JSON); `None` if it is not one (it is only a
/// hint: [`Frontier::resume`] checks it).
fn parse_tree(json: &str) -> Option<(Vec<Hash>, Vec<Hash>)> {
    #[derive(serde::Deserialize)]
    struct Tree {
        subtrees: Vec<String>,
        path: Vec<String>,
    }
    let tree: Tree = serde_json::from_str(json).ok()?;
    let hashes = |list: Vec<String>| -> Option<Vec<Hash>> {
        list.iter()
            .map(|h| b64_decode(h).ok()?.try_into().ok())
            .collect()
    };
    Some((hashes(tree.subtrees)?, hashes(tree.path)?))
}

impl Installation {
    /// The one rule every front-end follows before answering: appends `event` (which describes
    /// `outcome`) to the audit log, then releases `outcome`. A success that cannot be recorded
    /// is withheld as [`Withheld::Unaudited`]: no unaudited token or decision leaves the
    /// installation. A failure is passed on either way; a failure to record it is logged.
    pub fn release<T, E>(
        &self,
        event: &AuditEvent,
        outcome: Result<T, E>,
    ) -> Result<T, Withheld<E>> {
        match (self.audit(event), outcome) {
            (Ok(_), outcome) => outcome.map_err(Withheld::Failed),
            (Err(error), Ok(_)) => {
                tracing::error!(%error, operation = %event.operation, "audit log append failed; result withheld");
                Err(Withheld::Unaudited(error))
            }
            (Err(error), Err(original)) => {
                tracing::warn!(%error, operation = %event.operation, "the audit log could not record this failure");
                Err(Withheld::Failed(original))
            }
        }
    }

    /// Appends `event` to the audit log, signed by the CA's first key: in the database (safe from a
    /// killed process) before returning, on disk within [`crate::store::FLUSH_INTERVAL`].
    pub fn audit(&self, event: &AuditEvent) -> Result<SealedRecord, ServiceError> {
        let ca = self.ca_signers()?;
        let now = clock::now();
        let event = event.clone();
        self.store.append_audit(move |previous| {
            Ok::<_, ServiceError>(audit::seal(&event, previous, now, &ca[0])?)
        })
    }

    /// The origin of this installation's audit log: the first line of its checkpoints and the
    /// name their signatures are made under.
    pub fn audit_origin(&self) -> String {
        format!("agentseal/{}/audit", self.install_id)
    }

    /// The CA's public keys as the key store has them, every generation: the trust anchor for verifying the
    /// audit log, never the keys the database under test records. `Ok(Err(KeysReplaced))` when
    /// the database records other keys (one was replaced or added by someone who could write
    /// the database).
    pub fn audit_anchor(&self) -> Result<Result<Vec<PublicKey>, AuditFault>, ServiceError> {
        let store = self.key_store()?;
        let ca = self.ca_keys();
        let (mut current, mut all) = (Vec::new(), Vec::new());
        // Every generation: older records and checkpoints are signed by the keys of their time.
        for generation in 0..=ca.generation {
            for algorithm in Algorithm::ALL {
                let name = KeyName::ca_key(&self.install_id, algorithm, generation);
                match store.get(&name) {
                    Ok(seed) => {
                        let key = SigningKey::from_seed(algorithm, &seed).public_key().clone();
                        if generation == ca.generation {
                            current.push(key.clone());
                        }
                        all.push(key);
                    }
                    Err(keystore::KeyStoreError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if current.is_empty() {
            let missing = ca
                .current
                .iter()
                .map(|k| KeyName::ca_key(&self.install_id, k.algorithm(), ca.generation).user());
            return Err(self.keys_missing(missing.collect()));
        }
        // The database's current keys must be the key store's, and every key it has verifiers
        // trust must be one the key store holds.
        let recorded = &ca.current;
        if current.len() != recorded.len()
            || !current.iter().all(|k| recorded.contains(k))
            || !self.anchor().keys.iter().all(|k| all.contains(k))
        {
            return Ok(Err(AuditFault::KeysReplaced));
        }
        Ok(Ok(all))
    }

    /// The mark of the last checkpoint this installation signed, from the key store (`None`
    /// before the first, or after a reboot wiped a keyutils store).
    pub fn audit_mark(&self) -> Result<Option<Hash>, ServiceError> {
        match self
            .key_store()?
            .get(&KeyName::audit_mark(&self.install_id))
        {
            Ok(seed) => Ok(Some(*seed.expose())),
            Err(keystore::KeyStoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn set_audit_mark(&self, mark: &Hash) -> Result<(), ServiceError> {
        let name = KeyName::audit_mark(&self.install_id);
        let keys = self.key_store()?;
        // Delete first: a keyutils key another process read stays linked to it otherwise.
        keys.delete(&name)?;
        keys.put(&name, &Seed::from_slice(mark).expect("a mark is 32 bytes"))?;
        Ok(())
    }

    /// Verifies the whole audit log against the CA keys `anchor` (from [`Self::audit_anchor`]
    /// or a key file, never from the database), the head the last append recorded, the latest
    /// checkpoint kept in the database, and what `kept` holds from outside the database.
    /// `Ok(Err(fault))` names what does not hold.
    pub fn verify_audit(
        &self,
        anchor: &[PublicKey],
        kept: &KeptState,
    ) -> Result<Result<AuditSummary, AuditFault>, ServiceError> {
        let head = match &kept.head {
            Some(head) => Some(head.clone()),
            None => self.store.audit_head()?,
        };
        let mut verifier = AuditVerifier::new(anchor, head.as_ref());
        if let Some(mark) = kept.mark {
            verifier.expect_mark(mark);
        }
        let stored = self.store.latest_checkpoint()?.map(|c| c.note);
        for note in stored
            .iter()
            .map(String::as_str)
            .chain(kept.checkpoint.as_deref())
        {
            let expected = self
                .open_checkpoint(note, anchor)
                .and_then(|c| verifier.expect(c));
            if let Err(fault) = expected {
                return Ok(Err(fault));
            }
        }
        let mut fault = None;
        self.store
            .audit_records(1, &mut |record| match verifier.push(&record) {
                Ok(()) => true,
                Err(e) => {
                    fault = Some(e);
                    false
                }
            })?;
        Ok(match fault {
            Some(fault) => Err(fault),
            None => verifier.finish(),
        })
    }

    /// Opens a checkpoint of this log signed by every key of `anchor`.
    fn open_checkpoint(&self, note: &str, anchor: &[PublicKey]) -> Result<Checkpoint, AuditFault> {
        Checkpoint::open(note, &self.audit_origin(), anchor).map_err(|e| {
            AuditFault::BadCheckpoint {
                detail: e.to_string(),
            }
        })
    }

    /// The log's checkpoint now: verifies the records appended since this process (or the
    /// latest kept checkpoint) last looked, then signs a checkpoint with every CA key if the
    /// log grew, and keeps it. A log that does not verify gets no checkpoint
    /// ([`ServiceError::AuditInvalid`]).
    pub fn audit_checkpoint(&self) -> Result<SignedCheckpoint, ServiceError> {
        // Signed with the key store's keys, all of them: not a subset the database names.
        let anchor = self.audit_anchor()?.map_err(ServiceError::AuditInvalid)?;
        let ca = self.ca_signers()?;
        let mark = self.audit_mark()?;
        let mut state = self.audit_tree.lock().unwrap_or_else(|p| p.into_inner());
        // The latest kept checkpoint, opened: its stored size column is not evidence, the
        // signed note is.
        let stored = match self.store.latest_checkpoint()? {
            Some(stored) => Some(
                self.open_checkpoint(&stored.note, &anchor)
                    .map(|opened| (opened, stored))
                    .map_err(ServiceError::AuditInvalid)?,
            ),
            None => None,
        };
        // A fault leaves no state behind: the next call starts over, as it does when another
        // process signed since (the mark moved).
        let mut log = match state.take() {
            Some(log) if log.mark == mark => log,
            _ => self.resume_log(&anchor, stored.as_ref(), mark)?,
        };
        if let Some((opened, _)) = &stored {
            let size = i64::try_from(opened.size).unwrap_or(i64::MAX);
            if size >= log.verifier.position().0.seq
                && size > log.checkpoint.as_ref().map_or(-1, |c| c.size)
            {
                log.verifier
                    .expect(opened.clone())
                    .map_err(ServiceError::AuditInvalid)?;
            }
        }
        let from = log.verifier.position().0.seq + 1;
        let mut fault = None;
        self.store
            .audit_records(from, &mut |record| match log.verifier.push(&record) {
                Ok(()) => true,
                Err(e) => {
                    fault = Some(e);
                    false
                }
            })?;
        if let Some(fault) = fault {
            return Err(ServiceError::AuditInvalid(fault));
        }
        let summary = log
            .verifier
            .check_end()
            .map_err(ServiceError::AuditInvalid)?;
        let current = match (&log.checkpoint, stored) {
            (Some(ours), _) if ours.size == summary.records => ours.clone(),
            (_, Some((opened, stored)))
                if opened.size == summary.records.unsigned_abs() && opened.root == summary.root =>
            {
                SignedCheckpoint {
                    size: summary.records,
                    note: stored.note,
                    root: summary.root,
                }
            }
            _ => {
                let refs: Vec<&SigningKey> = ca.iter().collect();
                let note = Checkpoint {
                    origin: self.audit_origin(),
                    size: summary.records.unsigned_abs(),
                    root: summary.root,
                }
                .sign(&refs)
                .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
                let (subtrees, path) = log.verifier.position().1.parts();
                let tree = serde_json::json!({
                    "subtrees": subtrees.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                    "path": path.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                });
                self.store.save_checkpoint(StoredCheckpoint {
                    size: summary.records,
                    note: note.clone(),
                    tree: tree.to_string(),
                    signed_at: clock::now(),
                })?;
                SignedCheckpoint {
                    size: summary.records,
                    note,
                    root: summary.root,
                }
            }
        };
        let current_mark = audit::mark(current.size.unsigned_abs(), &current.root);
        if mark != Some(current_mark) {
            self.set_audit_mark(&current_mark)?;
        }
        log.mark = Some(current_mark);
        log.checkpoint = Some(current.clone());
        log.checked_at = std::time::Instant::now();
        *state = Some(log);
        Ok(current)
    }

    /// The checkpoint to publish: the one this process signed or found less than `max_age`
    /// ago, otherwise [`Self::audit_checkpoint`]. Readers polling a hub thus cost at most one
    /// walk and one signature per `max_age`, however many they are.
    pub fn published_checkpoint(
        &self,
        max_age: std::time::Duration,
    ) -> Result<SignedCheckpoint, ServiceError> {
        if let Some(log) = self
            .audit_tree
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && log.checked_at.elapsed() < max_age
            && let Some(checkpoint) = &log.checkpoint
        {
            return Ok(checkpoint.clone());
        }
        self.audit_checkpoint()
    }

    /// Where a walk of the log starts: at the latest kept checkpoint when its stored tree
    /// proves the checkpoint's signed head and last record, otherwise at the first record.
    fn resume_log(
        &self,
        anchor: &[PublicKey],
        stored: Option<&(Checkpoint, StoredCheckpoint)>,
        mark: Option<Hash>,
    ) -> Result<VerifiedLog, ServiceError> {
        let head = self.store.audit_head()?;
        let resumed = match stored {
            // Resumed only where the mark is, if there is one: a walk from there cannot check
            // an earlier mark.
            Some((checkpoint, stored))
                if checkpoint.size > 0
                    && mark.is_none_or(|m| m == audit::mark(checkpoint.size, &checkpoint.root)) =>
            {
                let seq = i64::try_from(checkpoint.size).unwrap_or(i64::MAX);
                self.store.audit_record(seq)?.and_then(|record| {
                    let (subtrees, path) = parse_tree(&stored.tree)?;
                    let tree = Frontier::resume(
                        checkpoint.size,
                        &checkpoint.root,
                        &record.leaf(),
                        subtrees,
                        path,
                    )?;
                    Some((AuditHead::of(&record), tree))
                })
            }
            _ => None,
        };
        let mut verifier = match resumed {
            Some((last, tree)) => AuditVerifier::resume(anchor, last, tree, head.as_ref()),
            None => AuditVerifier::new(anchor, head.as_ref()),
        };
        if let Some(mark) = mark {
            verifier.expect_mark(mark);
        }
        Ok(VerifiedLog {
            verifier,
            checkpoint: None,
            mark,
            checked_at: std::time::Instant::now(),
        })
    }

    /// The inclusion proof of record `seq` in the tree of the log's current checkpoint.
    pub fn audit_prove(&self, seq: i64) -> Result<InclusionProof, ServiceError> {
        let checkpoint = self.audit_checkpoint()?;
        if seq < 1 || seq > checkpoint.size {
            return Err(ServiceError::InvalidInput(format!(
                "no audit record {seq}: the log's checkpoint covers records 1 to {}",
                checkpoint.size
            )));
        }
        let mut leaves = Vec::new();
        let mut proved = None;
        self.store.audit_records(1, &mut |record| {
            leaves.push(record.leaf());
            if leaves.len() as i64 == seq {
                proved = Some(record);
            }
            (leaves.len() as i64) < checkpoint.size
        })?;
        let record = proved.filter(|_| merkle::root(&leaves) == checkpoint.root);
        let (Some(record), Some(proof)) =
            (record, merkle::inclusion_proof(seq as usize - 1, &leaves))
        else {
            // Records changed between the checkpoint's walk and this one.
            return Err(ServiceError::AuditInvalid(AuditFault::Rewritten {
                size: checkpoint.size,
            }));
        };
        Ok(InclusionProof {
            record,
            size: checkpoint.size,
            proof,
            checkpoint: checkpoint.note,
        })
    }

    /// Visits the audit records from position `from` on, as stored (verify before trusting).
    pub fn audit_records(
        &self,
        from: i64,
        visit: &mut dyn FnMut(SealedRecord) -> bool,
    ) -> Result<(), ServiceError> {
        Ok(self.store.audit_records(from, visit)?)
    }

    /// The `limit` most recent audit records about `actor`, newest first, as signed.
    pub fn recent_audit(
        &self,
        actor: &str,
        limit: i64,
    ) -> Result<Vec<(i64, RecordBody)>, ServiceError> {
        Ok(self
            .store
            .audit_recent(actor, limit)?
            .into_iter()
            .filter_map(|record| {
                let body = record.parsed().ok()?;
                (body.actor == actor).then_some((record.seq, body))
            })
            .collect())
    }
}
