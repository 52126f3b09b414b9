//! The durable outbox: every signal is one committed row in the installation's database before the
//! caller goes on, and the dispatcher claims rows under a lease.

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

/// What [`Outbox::claim`] found.
pub(super) enum Claim {
    /// An entry due now, reserved for this dispatcher.
    Due(OutboxEntry),
    /// Nothing due; the earliest next attempt, if any entry is pending.
    Idle { next_at: Option<i64> },
}

/// The durable queue of webhooks, in the installation's database (table `webhook_outbox`).
pub struct Outbox {
    path: PathBuf,
    conn: Mutex<Connection>,
    wake: Option<Arc<Notify>>,
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

impl Outbox {
    /// Opens the outbox in the database at `path` (creating its table if needed), with its own
    /// connection: every write commits durably (WAL, `synchronous=FULL`) before returning.
    pub fn open(path: &Path) -> Result<Outbox, SignalError> {
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
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(Outbox {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            wake: None,
        })
    }

    /// Wakes `wake` after each enqueue, so a [`Dispatcher`] in this process given the same
    /// `Notify` delivers at once instead of at its next poll.
    pub fn notifying(mut self, wake: Arc<Notify>) -> Outbox {
        self.wake = Some(wake);
        self
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SignalError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| SignalError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Records `signal` for delivery and returns its `webhook-id`. The entry is committed when
    /// this returns; nothing here waits on the network.
    pub fn enqueue(&self, signal: &Signal) -> Result<String, SignalError> {
        let body = signal.payload()?;
        let id = format!("msg_{}", crate::clock::random_id()?);
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT INTO webhook_outbox(id, body, created_at, attempts, next_attempt_at)
                 VALUES (?1, ?2, ?3, 0, ?3)",
                params![id, body, now],
            )
        })?;
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
        Ok(id)
    }

    /// One entry by its `webhook-id`.
    pub fn entry(&self, id: &str) -> Result<Option<OutboxEntry>, SignalError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM webhook_outbox WHERE id = ?1"),
                [id],
                entry_from_row,
            )
            .optional()
        })
    }

    /// Up to `limit` entries not delivered (pending or given up), oldest first.
    pub fn undelivered(&self, limit: usize) -> Result<Vec<OutboxEntry>, SignalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            c.prepare(&format!(
                "SELECT {ENTRY_COLUMNS} FROM webhook_outbox WHERE delivered_at IS NULL
                 ORDER BY created_at, rowid LIMIT ?1"
            ))?
            .query_map([limit], entry_from_row)?
            .collect()
        })
    }

    /// How many entries wait for delivery, and how many were given up on.
    pub fn counts(&self) -> Result<OutboxCounts, SignalError> {
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

    /// Deletes entries delivered before `delivered_before` and entries given up on that were
    /// created before `given_up_before` (milliseconds since the epoch); returns how many.
    pub fn prune(&self, delivered_before: i64, given_up_before: i64) -> Result<usize, SignalError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM webhook_outbox
                 WHERE (delivered_at IS NOT NULL AND delivered_at < ?1)
                    OR (delivered_at IS NULL AND next_attempt_at IS NULL AND created_at < ?2)",
                params![delivered_before, given_up_before],
            )
        })
    }

    /// Makes every entry given up on due again at `now` with its attempts reset; returns how
    /// many. Each keeps its `webhook-id`, so a receiver that did get one drops the repeat.
    pub fn requeue_given_up(&self, now: i64) -> Result<usize, SignalError> {
        let requeued = self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET attempts = 0, next_attempt_at = ?1
                 WHERE delivered_at IS NULL AND next_attempt_at IS NULL",
                [now],
            )
        })?;
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
        Ok(requeued)
    }

    /// Reserves the oldest due entry until `lease_until` and counts the attempt, in one
    /// statement, so two dispatchers on one database never send the same entry at once.
    pub(super) fn claim(&self, now: i64, lease_until: i64) -> Result<Claim, SignalError> {
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

    pub(super) fn mark_delivered(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET delivered_at = ?2, next_attempt_at = NULL WHERE id = ?1",
                params![id, now],
            )
        })?;
        Ok(())
    }

    /// Records a failed attempt; `next_at` `None` gives up on the entry.
    pub(super) fn mark_failed(
        &self,
        id: &str,
        error: &str,
        next_at: Option<i64>,
    ) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET last_error = ?2, next_attempt_at = ?3
                 WHERE id = ?1 AND delivered_at IS NULL",
                params![id, error, next_at],
            )
        })?;
        Ok(())
    }

    /// Makes a claimed entry due again at once (its attempt was cut short by shutdown).
    pub(super) fn release(&self, id: &str, now: i64) -> Result<(), SignalError> {
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
