//! The durable outbox: every signal is one committed row in the installation's database before the
//! caller goes on, and the dispatcher claims rows under a lease.
//!
//! The queue's engine is an [`OutboxQueue`]: a table in the SQLite file ([`SqliteQueue`], here),
//! or in a shared PostgreSQL database (`store::postgres`), where several hubs' dispatchers claim
//! from one queue and none sends an entry another holds.

use super::*;

/// How long, beyond the request timeout, a claimed entry stays reserved for the dispatcher that
/// claimed it. If that process dies mid-attempt, the entry is tried again once this has passed.
pub(super) const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// One outbox entry as stored. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxEntry {
    /// The `webhook-id`, the same for every attempt.
    pub id: String,
    /// The exact body sent.
    pub body: String,
    /// When it was enqueued.
    pub created_at: i64,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it is tried next; `None` once delivered or given up.
    pub next_attempt_at: Option<i64>,
    /// When a 2xx answer came; `None` while pending or once given up.
    pub delivered_at: Option<i64>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
}

/// The state of the outbox, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OutboxCounts {
    /// Entries waiting for delivery (or for their next attempt).
    pub pending: u64,
    /// Entries given up on after the last attempt failed.
    pub given_up: u64,
}

/// What [`OutboxQueue::claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// An entry due now, reserved for this dispatcher.
    Due(OutboxEntry),
    /// Nothing due; the earliest next attempt, if any entry is pending.
    Idle {
        /// When the next pending entry is due.
        next_at: Option<i64>,
    },
}

/// A pending entry has `next_attempt_at` set; delivering it or giving up clears it, so the
/// partial index holds only pending entries, however many delivered ones accumulate.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              TEXT PRIMARY KEY,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    delivered_at    INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_pending
    ON webhook_outbox(created_at) WHERE next_attempt_at IS NOT NULL;
";

pub(super) const ENTRY_COLUMNS: &str =
    "id, body, created_at, attempts, next_attempt_at, delivered_at, last_error";

pub(super) fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: row.get(0)?,
        body: row.get(1)?,
        created_at: row.get(2)?,
        attempts: row.get(3)?,
        next_attempt_at: row.get(4)?,
        delivered_at: row.get(5)?,
        last_error: row.get(6)?,
    })
}

/// The queue's operations, whichever database holds it. Every write is committed (durably)
/// before it returns; times are milliseconds since the Unix epoch.
pub trait OutboxQueue: Send + Sync {
    /// Records a new entry, due at once.
    fn insert(&self, id: &str, body: &str, now: i64) -> Result<(), SignalError>;
    /// One entry by its `webhook-id`.
    fn entry(&self, id: &str) -> Result<Option<OutboxEntry>, SignalError>;
    /// Up to `limit` entries not delivered (pending or given up), oldest first.
    fn undelivered(&self, limit: i64) -> Result<Vec<OutboxEntry>, SignalError>;
    /// How many entries wait for delivery, and how many were given up on.
    fn counts(&self) -> Result<OutboxCounts, SignalError>;
    /// Deletes entries delivered before `delivered_before` and entries given up on that were
    /// created before `given_up_before`; returns how many.
    fn prune(&self, delivered_before: i64, given_up_before: i64) -> Result<usize, SignalError>;
    /// Makes every entry given up on due again at `now` with its attempts reset; returns how
    /// many.
    fn requeue_given_up(&self, now: i64) -> Result<usize, SignalError>;
    /// Reserves the oldest due entry until `lease_until` and counts the attempt, atomically:
    /// two dispatchers never hold the same entry at once.
    fn claim(&self, now: i64, lease_until: i64) -> Result<Claim, SignalError>;
    /// Records a delivery.
    fn mark_delivered(&self, id: &str, now: i64) -> Result<(), SignalError>;
    /// Records a failed attempt; `next_at` `None` gives up on the entry.
    fn mark_failed(&self, id: &str, error: &str, next_at: Option<i64>) -> Result<(), SignalError>;
    /// Makes a claimed entry due again at `now` (its attempt was cut short).
    fn release(&self, id: &str, now: i64) -> Result<(), SignalError>;
}

/// The durable queue of webhooks, in the installation's database (table `webhook_outbox`).
pub struct Outbox {
    queue: Arc<dyn OutboxQueue>,
    wake: Option<Arc<Notify>>,
}

impl Outbox {
    /// Opens the outbox in the SQLite database at `path` (creating its table if needed), with its
    /// own connection: every write commits durably (WAL, `synchronous=FULL`) before returning.
    pub fn open(path: &Path) -> Result<Outbox, SignalError> {
        Ok(Outbox::on(Arc::new(SqliteQueue::open(path)?)))
    }

    /// The outbox kept by `queue`.
    pub fn on(queue: Arc<dyn OutboxQueue>) -> Outbox {
        Outbox { queue, wake: None }
    }

    /// Wakes `wake` after each enqueue, so a [`Dispatcher`] in this process given the same
    /// `Notify` delivers at once instead of at its next poll.
    pub fn notifying(mut self, wake: Arc<Notify>) -> Outbox {
        self.wake = Some(wake);
        self
    }

    /// Records `signal` for delivery and returns its `webhook-id`. The entry is committed when
    /// this returns; nothing here waits on the network.
    pub fn enqueue(&self, signal: &Signal) -> Result<String, SignalError> {
        let body = signal.payload()?;
        let id = format!("msg_{}", crate::clock::random_id()?);
        self.queue.insert(&id, &body, now_ms())?;
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
        Ok(id)
    }

    /// One entry by its `webhook-id`.
    pub fn entry(&self, id: &str) -> Result<Option<OutboxEntry>, SignalError> {
        self.queue.entry(id)
    }

    /// Up to `limit` entries not delivered (pending or given up), oldest first.
    pub fn undelivered(&self, limit: usize) -> Result<Vec<OutboxEntry>, SignalError> {
        self.queue
            .undelivered(i64::try_from(limit).unwrap_or(i64::MAX))
    }

    /// How many entries wait for delivery, and how many were given up on.
    pub fn counts(&self) -> Result<OutboxCounts, SignalError> {
        self.queue.counts()
    }

    /// Deletes entries delivered before `delivered_before` and entries given up on that were
    /// created before `given_up_before` (milliseconds since the epoch); returns how many.
    pub fn prune(&self, delivered_before: i64, given_up_before: i64) -> Result<usize, SignalError> {
        self.queue.prune(delivered_before, given_up_before)
    }

    /// Makes every entry given up on due again at `now` with its attempts reset; returns how
    /// many. Each keeps its `webhook-id`, so a receiver that did get one drops the repeat.
    pub fn requeue_given_up(&self, now: i64) -> Result<usize, SignalError> {
        let requeued = self.queue.requeue_given_up(now)?;
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
        Ok(requeued)
    }

    pub(super) fn claim(&self, now: i64, lease_until: i64) -> Result<Claim, SignalError> {
        self.queue.claim(now, lease_until)
    }

    pub(super) fn mark_delivered(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.queue.mark_delivered(id, now)
    }

    pub(super) fn mark_failed(
        &self,
        id: &str,
        error: &str,
        next_at: Option<i64>,
    ) -> Result<(), SignalError> {
        self.queue.mark_failed(id, error, next_at)
    }

    pub(super) fn release(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.queue.release(id, now)
    }
}

/// The queue as a table of the SQLite file, on a connection of its own.
pub struct SqliteQueue {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteQueue {
    /// Opens the table in the database at `path` (creating it if needed).
    pub fn open(path: &Path) -> Result<SqliteQueue, SignalError> {
        let sqlite = |source| SignalError::Sqlite {
            path: path.to_owned(),
            source,
        };
        crate::fsutil::private_database(path).map_err(|source| SignalError::Io {
            path: path.to_owned(),
            source,
        })?;
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite)?;
        crate::fsutil::write_ahead(&conn).map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(SqliteQueue {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SignalError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| SignalError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }
}

impl OutboxQueue for SqliteQueue {
    fn insert(&self, id: &str, body: &str, now: i64) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO webhook_outbox(id, body, created_at, attempts, next_attempt_at)
                 VALUES (?1, ?2, ?3, 0, ?3)",
                params![id, body, now],
            )
        })?;
        Ok(())
    }

    fn entry(&self, id: &str) -> Result<Option<OutboxEntry>, SignalError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM webhook_outbox WHERE id = ?1"),
                [id],
                entry_from_row,
            )
            .optional()
        })
    }

    fn undelivered(&self, limit: i64) -> Result<Vec<OutboxEntry>, SignalError> {
        self.with(|c| {
            c.prepare(&format!(
                "SELECT {ENTRY_COLUMNS} FROM webhook_outbox WHERE delivered_at IS NULL
                 ORDER BY created_at, rowid LIMIT ?1"
            ))?
            .query_map([limit], entry_from_row)?
            .collect()
        })
    }

    fn counts(&self) -> Result<OutboxCounts, SignalError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FILTER (WHERE next_attempt_at IS NOT NULL),
                        COUNT(*) FILTER (WHERE next_attempt_at IS NULL AND delivered_at IS NULL)
                 FROM webhook_outbox",
                [],
                |r| {
                    Ok(OutboxCounts {
                        pending: r.get(0)?,
                        given_up: r.get(1)?,
                    })
                },
            )
        })
    }

    fn prune(&self, delivered_before: i64, given_up_before: i64) -> Result<usize, SignalError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM webhook_outbox
                 WHERE (delivered_at IS NOT NULL AND delivered_at < ?1)
                    OR (delivered_at IS NULL AND next_attempt_at IS NULL AND created_at < ?2)",
                params![delivered_before, given_up_before],
            )
        })
    }

    fn requeue_given_up(&self, now: i64) -> Result<usize, SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET attempts = 0, next_attempt_at = ?1
                 WHERE delivered_at IS NULL AND next_attempt_at IS NULL",
                [now],
            )
        })
    }

    fn claim(&self, now: i64, lease_until: i64) -> Result<Claim, SignalError> {
        self.with(|c| {
            let claimed = c
                .query_row(
                    &format!(
                        "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?2
                         WHERE id = (SELECT id FROM webhook_outbox
                                     WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1
                                     ORDER BY created_at, rowid LIMIT 1)
                         RETURNING {ENTRY_COLUMNS}"
                    ),
                    params![now, lease_until],
                    entry_from_row,
                )
                .optional()?;
            if let Some(entry) = claimed {
                return Ok(Claim::Due(entry));
            }
            let next_at = c.query_row(
                "SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE next_attempt_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(Claim::Idle { next_at })
        })
    }

    fn mark_delivered(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET delivered_at = ?2, next_attempt_at = NULL WHERE id = ?1",
                params![id, now],
            )
        })?;
        Ok(())
    }

    fn mark_failed(&self, id: &str, error: &str, next_at: Option<i64>) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET last_error = ?2, next_attempt_at = ?3
                 WHERE id = ?1 AND delivered_at IS NULL",
                params![id, error, next_at],
            )
        })?;
        Ok(())
    }

    fn release(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET next_attempt_at = ?2
                 WHERE id = ?1 AND next_attempt_at IS NOT NULL",
                params![id, now],
            )
        })?;
        Ok(())
    }
}
