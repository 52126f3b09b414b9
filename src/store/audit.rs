//! The audit log's table: one signed, hash-chained record per operation, appended under the
//! database's write lock so that processes sharing the database append to one chain.

use super::*;

impl Store {
    /// Appends the audit record `seal` makes from the current last record (`None`: the log is
    /// empty), and moves the recorded head to it, in the writer's transaction, which holds the
    /// database's write lock: processes sharing the database append to one chain. Durable
    /// against a killed process when it returns, on disk within [`FLUSH_INTERVAL`]. `actor` only indexes the
    /// record for [`Store::audit_recent`]; the signed body is the evidence.
    pub fn append_audit<E>(
        &self,
        seal: impl FnOnce(Option<&SealedRecord>) -> Result<SealedRecord, E> + Send + 'static,
    ) -> Result<SealedRecord, E>
    where
        E: From<StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        self.writer.write(Durability::Committed, move |tx| {
            let sqlite = |source| StoreError::Sqlite {
                path: path.clone(),
                source,
            };
            let last = tx
                .prepare_cached(
                    "SELECT seq, actor, body, hash, kid, sig FROM audit_log ORDER BY seq DESC LIMIT 1",
                )
                .and_then(|mut stmt| stmt.query_row([], sealed_record).optional())
                .map_err(sqlite)?;
            let record = seal(last.as_ref())?;
            tx.prepare_cached(
                "INSERT INTO audit_log(seq, actor, body, hash, kid, sig)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    record.seq,
                    record.actor,
                    record.body,
                    record.hash,
                    record.kid,
                    record.sig
                ])
            })
            .map_err(sqlite)?;
            tx.prepare_cached(
                "INSERT INTO meta(key, value) VALUES ('audit_head', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute([format!("{}:{}", record.seq, record.hash)]))
            .map_err(sqlite)?;
            Ok(record)
        })
    }

    /// The head the last append recorded (`None`: nothing appended yet).
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let Some(value) = self.meta("audit_head")? else {
            return Ok(None);
        };
        value
            .split_once(':')
            .and_then(|(seq, hash)| {
                Some(AuditHead {
                    seq: seq.parse().ok()?,
                    hash: hash.to_owned(),
                })
            })
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(self.path.clone(), format!("audit_head {value:?}")))
    }

    /// Visits the audit records from position `from` on, in order of position, in one read
    /// transaction (a consistent snapshot while others append).
    pub fn audit_records(
        &self,
        from: i64,
        visit: &mut dyn FnMut(SealedRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare(
                    "SELECT seq, actor, body, hash, kid, sig FROM audit_log WHERE seq >= ?1 ORDER BY seq",
                )?;
                let mut rows = stmt.query([from])?;
                while let Some(row) = rows.next()? {
                    if !visit(sealed_record(row)?) {
                        break;
                    }
                }
            }
            tx.commit()
        })
    }

    /// The last `limit` audit records filed under `actor`, newest first (callers check the
    /// signed body's actor: the index is not evidence).
    pub fn audit_recent(&self, actor: &str, limit: i64) -> Result<Vec<SealedRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT seq, actor, body, hash, kid, sig FROM audit_log WHERE actor = ?1
                 ORDER BY seq DESC LIMIT ?2",
            )?
            .query_map(params![actor, limit], sealed_record)?
            .collect()
        })
    }
}

pub(super) fn sealed_record(row: &rusqlite::Row) -> rusqlite::Result<SealedRecord> {
    Ok(SealedRecord {
        seq: row.get(0)?,
        actor: row.get(1)?,
        body: row.get(2)?,
        hash: row.get(3)?,
        kid: row.get(4)?,
        sig: row.get(5)?,
    })
}

/// A checkpoint as kept beside the log: the signed note, and the parts of its Merkle tree that
/// let a later walk resume there instead of at the first record (checked against the note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// How many records it covers.
    pub size: i64,
    /// The signed note.
    pub note: String,
    /// [`crate::audit::merkle::Frontier::parts`] as JSON, unsigned: a hint, checked on use.
    pub tree: String,
    /// When it was signed (Unix time).
    pub signed_at: i64,
}

impl Store {
    /// Keeps a checkpoint (one per size: it replaces one kept before, which may have been
    /// planted).
    pub fn save_checkpoint(&self, checkpoint: StoredCheckpoint) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.writer.write(Durability::Committed, move |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO audit_checkpoints(size, note, tree, signed_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    checkpoint.size,
                    checkpoint.note,
                    checkpoint.tree,
                    checkpoint.signed_at
                ])
            })
            .map(drop)
            .map_err(|source| StoreError::Sqlite { path, source })
        })
    }

    /// The checkpoint of the most records kept so far.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT size, note, tree, signed_at FROM audit_checkpoints
                 ORDER BY size DESC LIMIT 1",
            )?
            .query_row([], |row| {
                Ok(StoredCheckpoint {
                    size: row.get(0)?,
                    note: row.get(1)?,
                    tree: row.get(2)?,
                    signed_at: row.get(3)?,
                })
            })
            .optional()
        })
    }

    /// The record at position `seq`, as stored.
    pub fn audit_record(&self, seq: i64) -> Result<Option<SealedRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT seq, actor, body, hash, kid, sig FROM audit_log WHERE seq = ?1",
            )?
            .query_row([seq], sealed_record)
            .optional()
        })
    }
}
