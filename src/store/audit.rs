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
        actor: &str,
        seal: impl FnOnce(Option<&SealedRecord>) -> Result<SealedRecord, E> + Send + 'static,
    ) -> Result<SealedRecord, E>
    where
        E: From<StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        let actor = actor.to_owned();
        self.writer.write(Durability::Committed, move |tx| {
            let sqlite = |source| StoreError::Sqlite {
                path: path.clone(),
                source,
            };
            let last = tx
                .prepare_cached(
                    "SELECT seq, body, hash, kid, sig FROM audit_log ORDER BY seq DESC LIMIT 1",
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
                    actor,
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
                    "SELECT seq, body, hash, kid, sig FROM audit_log WHERE seq >= ?1 ORDER BY seq",
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

    /// The last `limit` audit records indexed under `actor`, newest first (callers check the
    /// signed body's actor: the index is not evidence).
    pub fn audit_recent(&self, actor: &str, limit: i64) -> Result<Vec<SealedRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT seq, body, hash, kid, sig FROM audit_log WHERE actor = ?1
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
        body: row.get(1)?,
        hash: row.get(2)?,
        kid: row.get(3)?,
        sig: row.get(4)?,
    })
}
