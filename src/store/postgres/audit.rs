//! The audit log and its checkpoints in PostgreSQL: one hash chain for every hub, its appends
//! serialized by an advisory lock that each append takes in its own transaction.

use super::*;

/// Serializes audit appends across every process sharing the database.
/// Records read per round trip when walking the audit log.
const RECORD_COLUMNS: &str = "SELECT seq, actor, body, hash, kid, sig FROM audit_log";

pub(super) fn append(store: &PgStore, seal: SealNext<'static>) -> Result<SealedRecord, StoreError> {
    let pool = store.pool();
    let relaxed = store.relaxed();
    store.write(async move {
        let mut c = get(&pool).await?;
        let tx = c.transaction().await?;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        let last = tx
            .prepare_cached(&format!("{RECORD_COLUMNS} ORDER BY seq DESC LIMIT 1"))
            .await?;
        // One round trip: the statements go out together and run in order, so the last
        // record is read after the lock is held (each statement takes a fresh snapshot).
        let (set, locked, last) = tokio::join!(
            tx.batch_execute(relaxed),
            tx.execute(&lock, &[&AUDIT_LOCK]),
            tx.query_opt(&last, &[])
        );
        set?;
        locked?;
        let last = last?.map(|row| sealed_record(&row)).transpose()?;
        let record = seal(last.as_ref())?;
        let insert = tx
            .prepare_cached(
                "WITH record AS (
                     INSERT INTO audit_log(seq, actor, body, hash, kid, sig)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq
                 )
                 INSERT INTO meta(key, value) SELECT 'audit_head', $7 FROM record
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .await?;
        tx.execute(
            &insert,
            &[
                &record.seq,
                &record.actor,
                &record.body,
                &record.hash,
                &record.kid,
                &record.sig,
                &format!("{}:{}", record.seq, record.hash),
            ],
        )
        .await?;
        commit(tx).await?;
        Ok(record)
    })
}

pub(super) fn records(
    store: &PgStore,
    from: i64,
    visit: &mut dyn FnMut(SealedRecord) -> bool,
) -> Result<(), StoreError> {
    // Page by position: appends commit in the order of their positions (one at a time,
    // under the audit lock), so pages read one after another see one prefix of the log.
    let mut next = from;
    loop {
        let pool = store.pool();
        let page = store.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "{RECORD_COLUMNS} WHERE seq >= $1 ORDER BY seq LIMIT $2"
                ))
                .await?;
            c.query(&stmt, &[&next, &AUDIT_PAGE])
                .await?
                .iter()
                .map(sealed_record)
                .collect::<Result<Vec<_>, _>>()
        })?;
        let full = page.len() as i64 == AUDIT_PAGE;
        for record in page {
            next = record.seq.saturating_add(1);
            if !visit(record) {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
    }
}

pub(super) fn recent(
    store: &PgStore,
    actor: &str,
    limit: i64,
) -> Result<Vec<SealedRecord>, StoreError> {
    let (pool, actor) = (store.pool(), actor.to_owned());
    store.run(async move {
        let c = get(&pool).await?;
        c.query(
            &format!("{RECORD_COLUMNS} WHERE actor = $1 ORDER BY seq DESC LIMIT $2"),
            &[&actor, &limit],
        )
        .await?
        .iter()
        .map(sealed_record)
        .collect()
    })
}

pub(super) fn record(store: &PgStore, seq: i64) -> Result<Option<SealedRecord>, StoreError> {
    let pool = store.pool();
    store.run(async move {
        let c = get(&pool).await?;
        c.query_opt(&format!("{RECORD_COLUMNS} WHERE seq = $1"), &[&seq])
            .await?
            .map(|row| sealed_record(&row))
            .transpose()
    })
}

pub(super) fn save_checkpoint(
    store: &PgStore,
    checkpoint: StoredCheckpoint,
) -> Result<(), StoreError> {
    let pool = store.pool();
    let relaxed = store.relaxed();
    store.write(async move {
        let mut c = get(&pool).await?;
        let tx = c.transaction().await?;
        tx.batch_execute(relaxed).await?;
        tx.execute(
            "INSERT INTO audit_checkpoints(size, note, tree, signed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT(size) DO UPDATE SET note = excluded.note, tree = excluded.tree,
                 signed_at = excluded.signed_at",
            &[
                &checkpoint.size,
                &checkpoint.note,
                &checkpoint.tree,
                &checkpoint.signed_at,
            ],
        )
        .await?;
        commit(tx).await
    })
}

pub(super) fn latest_checkpoint(store: &PgStore) -> Result<Option<StoredCheckpoint>, StoreError> {
    let pool = store.pool();
    store.run(async move {
        let c = get(&pool).await?;
        let Some(row) = c
            .query_opt(
                "SELECT size, note, tree, signed_at FROM audit_checkpoints
                 ORDER BY size DESC LIMIT 1",
                &[],
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(StoredCheckpoint {
            size: row.try_get(0)?,
            note: row.try_get(1)?,
            tree: row.try_get(2)?,
            signed_at: row.try_get(3)?,
        }))
    })
}

fn sealed_record(row: &tokio_postgres::Row) -> Result<SealedRecord, PgError> {
    Ok(SealedRecord {
        seq: row.try_get(0)?,
        actor: row.try_get(1)?,
        body: row.try_get(2)?,
        hash: row.try_get(3)?,
        kid: row.try_get(4)?,
        sig: row.try_get(5)?,
    })
}
