//! The webhook outbox in PostgreSQL: one queue for every hub's dispatcher. A claim takes the
//! oldest due entry with `FOR UPDATE SKIP LOCKED` and leases it in the same statement, so two
//! dispatchers never send one entry at once and neither waits for the other.

use deadpool_postgres::Pool;

use super::{PgError, get, run_on};
use crate::signals::{Claim, OutboxCounts, OutboxEntry, OutboxQueue, SignalError};

const COLUMNS: &str = "id, body, created_at, attempts, next_attempt_at, delivered_at, last_error";

/// The outbox of one store: its runtime and pool.
pub(super) struct PgOutbox {
    handle: tokio::runtime::Handle,
    pool: Pool,
    shown: String,
}

impl PgOutbox {
    pub(super) fn new(handle: tokio::runtime::Handle, pool: Pool, shown: String) -> PgOutbox {
        PgOutbox {
            handle,
            pool,
            shown,
        }
    }

    fn run<T: Send + 'static>(
        &self,
        call: impl std::future::Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, SignalError> {
        run_on(&self.handle, &self.shown, call).map_err(|e| SignalError::Database(e.to_string()))
    }

    /// Runs one statement that changes rows; returns how many.
    fn execute(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
    ) -> Result<usize, SignalError> {
        let pool = self.pool.clone();
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c.prepare_cached(sql).await?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as _).collect();
            Ok(c.execute(&stmt, &refs).await? as usize)
        })
    }
}

fn entry(row: &tokio_postgres::Row) -> Result<OutboxEntry, PgError> {
    let attempts: i64 = row.try_get(3)?;
    Ok(OutboxEntry {
        id: row.try_get(0)?,
        body: row.try_get(1)?,
        created_at: row.try_get(2)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get(4)?,
        delivered_at: row.try_get(5)?,
        last_error: row.try_get(6)?,
    })
}

impl OutboxQueue for PgOutbox {
    fn insert(&self, id: &str, body: &str, now: i64) -> Result<(), SignalError> {
        self.execute(
            "INSERT INTO webhook_outbox(id, body, created_at, attempts, next_attempt_at)
             VALUES ($1, $2, $3, 0, $3)",
            vec![
                Box::new(id.to_owned()),
                Box::new(body.to_owned()),
                Box::new(now),
            ],
        )
        .map(drop)
    }

    fn entry(&self, id: &str) -> Result<Option<OutboxEntry>, SignalError> {
        let (pool, id) = (self.pool.clone(), id.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM webhook_outbox WHERE id = $1"),
                &[&id],
            )
            .await?
            .map(|row| entry(&row))
            .transpose()
        })
    }

    fn undelivered(&self, limit: i64) -> Result<Vec<OutboxEntry>, SignalError> {
        let pool = self.pool.clone();
        self.run(async move {
            let c = get(&pool).await?;
            c.query(
                &format!(
                    "SELECT {COLUMNS} FROM webhook_outbox WHERE delivered_at IS NULL
                     ORDER BY created_at, seq LIMIT $1"
                ),
                &[&limit],
            )
            .await?
            .iter()
            .map(entry)
            .collect()
        })
    }

    fn counts(&self) -> Result<OutboxCounts, SignalError> {
        let pool = self.pool.clone();
        self.run(async move {
            let c = get(&pool).await?;
            let row = c
                .query_one(
                    "SELECT COUNT(*) FILTER (WHERE next_attempt_at IS NOT NULL),
                            COUNT(*) FILTER (WHERE next_attempt_at IS NULL AND delivered_at IS NULL)
                     FROM webhook_outbox",
                    &[],
                )
                .await?;
            let (pending, given_up): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            Ok(OutboxCounts {
                pending: pending.unsigned_abs(),
                given_up: given_up.unsigned_abs(),
            })
        })
    }

    fn prune(&self, delivered_before: i64, given_up_before: i64) -> Result<usize, SignalError> {
        self.execute(
            "DELETE FROM webhook_outbox
             WHERE (delivered_at IS NOT NULL AND delivered_at < $1)
                OR (delivered_at IS NULL AND next_attempt_at IS NULL AND created_at < $2)",
            vec![Box::new(delivered_before), Box::new(given_up_before)],
        )
    }

    fn requeue_given_up(&self, now: i64) -> Result<usize, SignalError> {
        self.execute(
            "UPDATE webhook_outbox SET attempts = 0, next_attempt_at = $1
             WHERE delivered_at IS NULL AND next_attempt_at IS NULL",
            vec![Box::new(now)],
        )
    }

    fn claim(&self, now: i64, lease_until: i64) -> Result<Claim, SignalError> {
        let pool = self.pool.clone();
        self.run(async move {
            let c = get(&pool).await?;
            let claim = c
                .prepare_cached(&format!(
                    "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = $2
                     WHERE id = (SELECT id FROM webhook_outbox
                                 WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1
                                 ORDER BY created_at, seq LIMIT 1
                                 FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}"
                ))
                .await?;
            if let Some(row) = c.query_opt(&claim, &[&now, &lease_until]).await? {
                return Ok(Claim::Due(entry(&row)?));
            }
            let next = c
                .prepare_cached(
                    "SELECT MIN(next_attempt_at) FROM webhook_outbox
                     WHERE next_attempt_at IS NOT NULL",
                )
                .await?;
            let next_at: Option<i64> = c.query_one(&next, &[]).await?.try_get(0)?;
            Ok(Claim::Idle { next_at })
        })
    }

    fn mark_delivered(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.execute(
            "UPDATE webhook_outbox SET delivered_at = $2, next_attempt_at = NULL WHERE id = $1",
            vec![Box::new(id.to_owned()), Box::new(now)],
        )
        .map(drop)
    }

    fn mark_failed(&self, id: &str, error: &str, next_at: Option<i64>) -> Result<(), SignalError> {
        self.execute(
            "UPDATE webhook_outbox SET last_error = $2, next_attempt_at = $3
             WHERE id = $1 AND delivered_at IS NULL",
            vec![
                Box::new(id.to_owned()),
                Box::new(error.to_owned()),
                Box::new(next_at),
            ],
        )
        .map(drop)
    }

    fn release(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.execute(
            "UPDATE webhook_outbox SET next_attempt_at = $2
             WHERE id = $1 AND next_attempt_at IS NOT NULL",
            vec![Box::new(id.to_owned()), Box::new(now)],
        )
        .map(drop)
    }
}
