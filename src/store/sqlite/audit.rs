//! The audit log's table: one signed, hash-chained record per operation, appended under the
//! database's write lock so that processes sharing the database append to one chain.

use super::*;

/// [`Backend::append_audit`]: in the writer's transaction, which holds the database's write
/// lock. Durable against a killed process when it returns, on disk within [`FLUSH_INTERVAL`].
pub(super) fn append(
    store: &SqliteStore,
    seal: SealNext<'static>,
) -> Result<SealedRecord, StoreError> {
    let path = store.shown.clone();
    store.writer.write(Durability::Committed, move |tx| {
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

/// [`Backend::audit_records`], in one read transaction.
pub(super) fn records(
    store: &SqliteStore,
    from: i64,
    visit: &mut dyn FnMut(SealedRecord) -> bool,
) -> Result<(), StoreError> {
    store.with(|c| {
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

/// [`Backend::audit_recent`].
pub(super) fn recent(
    store: &SqliteStore,
    actor: &str,
    limit: i64,
) -> Result<Vec<SealedRecord>, StoreError> {
    store.with(|c| {
        c.prepare_cached(
            "SELECT seq, actor, body, hash, kid, sig FROM audit_log WHERE actor = ?1
             ORDER BY seq DESC LIMIT ?2",
        )?
        .query_map(params![actor, limit], sealed_record)?
        .collect()
    })
}

/// [`Backend::audit_record`].
pub(super) fn record(store: &SqliteStore, seq: i64) -> Result<Option<SealedRecord>, StoreError> {
    store.with(|c| {
        c.prepare_cached("SELECT seq, actor, body, hash, kid, sig FROM audit_log WHERE seq = ?1")?
            .query_row([seq], sealed_record)
            .optional()
    })
}

fn sealed_record(row: &rusqlite::Row) -> rusqlite::Result<SealedRecord> {
    Ok(SealedRecord {
        seq: row.get(0)?,
        actor: row.get(1)?,
        body: row.get(2)?,
        hash: row.get(3)?,
        kid: row.get(4)?,
        sig: row.get(5)?,
    })
}

/// [`Backend::save_checkpoint`]: one per size, replacing one kept before.
pub(super) fn save_checkpoint(
    store: &SqliteStore,
    checkpoint: StoredCheckpoint,
) -> Result<(), StoreError> {
    store.write(Durability::Committed, move |tx| {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO audit_checkpoints(size, note, tree, signed_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            checkpoint.size,
            checkpoint.note,
            checkpoint.tree,
            checkpoint.signed_at
        ])
        .map(drop)
    })
}

/// [`Backend::latest_checkpoint`].
pub(super) fn latest_checkpoint(
    store: &SqliteStore,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    store.with(|c| {
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
