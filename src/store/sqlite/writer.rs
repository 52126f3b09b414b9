//! Group commit: the database's one write connection commits, in one transaction, every write
//! that is waiting for it, so concurrent calls share one commit (and, when one of them needs it,
//! one fsync).
//!
//! A caller queues its write, then takes the write connection. If the caller before it already
//! committed the write, the answer is waiting. Otherwise the caller commits everything queued,
//! its own write and those that arrived while the connection was busy. An uncontended write
//! therefore costs no thread hand-off, and under load one commit serves many calls. A small
//! flusher thread wakes only to fsync writes that were committed without one (see below).
//!
//! Each write runs inside its own savepoint. A write that fails is rolled back alone and its
//! error goes to its caller; the others commit. No caller hears "done" before the commit that
//! holds its write has returned.
//!
//! How durable a commit is depends on what its writes asked for ([`Durability`]):
//! - [`Durability::Synced`]: the commit fsyncs the write-ahead log (`synchronous=FULL`) before
//!   anyone is answered. Revocations and replay records ask for this.
//! - [`Durability::Committed`]: the commit writes the log without an fsync
//!   (`synchronous=NORMAL`). The write survives the process being killed at once, because it is
//!   in the operating system's cache. The flusher fsyncs it within [`FLUSH_INTERVAL`], so from
//!   then on it survives a power loss too. Audit records ask for this.
//!
//! [`SyncPolicy::EveryWrite`] makes every commit `Synced`. It is the operator's option to give up
//! some throughput so that nothing acknowledged is lost even to a power cut.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::StoreError;

/// The longest a [`Durability::Committed`] write stays in the operating system's cache before
/// the writer fsyncs it (plus the time the fsync takes).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Most jobs in one transaction: bounds how long the first waits for the last.
const MAX_BATCH: usize = 256;

/// How soon a write must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// On disk (fsynced) before the write is acknowledged.
    Synced,
    /// In the write-ahead log before the write is acknowledged (survives a killed process), on
    /// disk within [`FLUSH_INTERVAL`] (survives a power loss from then on).
    Committed,
}

/// When the writer fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// As each write asks ([`Durability`]): the default.
    #[default]
    AsRequested,
    /// Before acknowledging every write, whatever it asked.
    EveryWrite,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grouped" => Ok(SyncPolicy::AsRequested),
            "every-write" => Ok(SyncPolicy::EveryWrite),
            other => Err(format!(
                "unknown durability {other:?}: use grouped or every-write"
            )),
        }
    }
}

/// What the writer does with a job's outcome once the transaction holding it has committed (or
/// failed to).
type Deliver = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs a write on the write connection inside a savepoint, says whether it succeeded, and
/// returns how to answer its caller.
type Run = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;

/// One write and how durable it must be before it is acknowledged.
struct Job {
    durability: Durability,
    run: Run,
}

/// The handle the store keeps.
pub(super) struct Writer {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

/// What writers and the flusher share.
struct Shared {
    /// Writes waiting for the next commit.
    queue: Mutex<Vec<Job>>,
    /// The write connection; `None` once the writer stopped.
    conn: Mutex<Option<WriteSide>>,
    /// Wakes the flusher when a commit leaves something to fsync, or the writer stops.
    flush_due: Condvar,
    every_write: AtomicBool,
    path: std::path::PathBuf,
}

impl Shared {
    fn conn(&self) -> MutexGuard<'_, Option<WriteSide>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_queue(&self) -> Vec<Job> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The oldest queued writes, at most [`MAX_BATCH`].
    fn take_batch(&self) -> Vec<Job> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = queue.len().min(MAX_BATCH);
        queue.drain(..n).collect()
    }
}

impl Writer {
    /// Starts the writer on `conn`, which must be the only connection of this process that
    /// writes, and its flusher thread.
    pub(super) fn start(conn: Connection, path: &std::path::Path) -> Result<Writer, StoreError> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            conn: Mutex::new(Some(WriteSide::new(conn, path.to_owned()))),
            flush_due: Condvar::new(),
            every_write: AtomicBool::new(false),
            path: path.to_owned(),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("agentseal-flush".into())
                .spawn(move || flush_when_due(&shared))
                .map_err(|source| StoreError::Io {
                    path: path.to_owned(),
                    source,
                })?
        };
        Ok(Writer {
            shared,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    pub(super) fn set_policy(&self, policy: SyncPolicy) {
        self.shared
            .every_write
            .store(policy == SyncPolicy::EveryWrite, Ordering::Relaxed);
    }

    /// Runs `job` in the next group commit and returns its result once that commit is as
    /// durable as `durability` asks.
    pub(super) fn write<T, E>(
        &self,
        durability: Durability,
        job: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel::<Result<T, E>>(1);
        let run: Run = Box::new(move |conn: &Connection| -> (bool, Deliver) {
            let outcome = job(conn);
            let ok = outcome.is_ok();
            let deliver: Deliver = Box::new(move |committed| {
                let _ = reply.send(match committed {
                    Ok(()) => outcome,
                    Err(error) if ok => Err(error.into()),
                    // A failed job's own error says more than the batch's.
                    Err(_) => outcome,
                });
            });
            (ok, deliver)
        });
        let stopped = || StoreError::WriterStopped(self.shared.path.display().to_string()).into();
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Job { durability, run });
        let mut conn = self.shared.conn();
        loop {
            // A holder before us may have committed our write with its own.
            match answer.try_recv() {
                Ok(result) => return result,
                // Our job was taken and dropped: it panicked, or the writer stopped.
                Err(mpsc::TryRecvError::Disconnected) => return Err(stopped()),
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let Some(writer) = conn.as_mut() else {
                drop(self.shared.take_queue());
                return Err(stopped());
            };
            let batch = self.shared.take_batch();
            if writer.commit(batch, self.shared.every_write.load(Ordering::Relaxed)) {
                self.shared.flush_due.notify_one();
            }
        }
    }

    /// Stops the writer: everything committed is fsynced, later writes fail.
    pub(super) fn stop(&self) {
        if let Some(mut writer) = self.shared.conn().take() {
            writer.flush();
        }
        // Writes queued meanwhile are dropped; their callers hear that the writer stopped.
        drop(self.shared.take_queue());
        self.shared.flush_due.notify_all();
        if let Some(thread) = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The flusher thread: sleeps until a commit left writes un-fsynced, then fsyncs them when
/// their [`FLUSH_INTERVAL`] is up; returns when the writer stops.
fn flush_when_due(shared: &Shared) {
    let mut conn = shared.conn();
    loop {
        let Some(writer) = conn.as_mut() else {
            return;
        };
        conn = match writer.flush_by {
            None => shared
                .flush_due
                .wait(conn)
                .unwrap_or_else(|p| p.into_inner()),
            Some(by) if by <= Instant::now() => {
                writer.flush();
                conn
            }
            Some(by) => {
                shared
                    .flush_due
                    .wait_timeout(conn, by.saturating_duration_since(Instant::now()))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
}

/// The write connection and what it has left to fsync.
struct WriteSide {
    conn: Connection,
    path: std::path::PathBuf,
    /// The connection's current `synchronous` setting is FULL.
    full: bool,
    /// Commits since the last fsync that are not yet on disk: when they must be.
    flush_by: Option<Instant>,
}

impl WriteSide {
    fn new(conn: Connection, path: std::path::PathBuf) -> WriteSide {
        WriteSide {
            conn,
            path,
            full: true,
            flush_by: None,
        }
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Runs one transaction-control statement, parsed once per connection: these run several
    /// times per write.
    fn statement(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Sets `synchronous` for the next transaction (it cannot change inside one).
    fn synchronous(&mut self, full: bool) -> Result<(), StoreError> {
        if self.full != full {
            let value = if full { "FULL" } else { "NORMAL" };
            self.conn
                .pragma_update(None, "synchronous", value)
                .map_err(|e| self.sqlite(e))?;
            self.full = full;
        }
        Ok(())
    }

    /// Commits `batch` in one transaction and answers every job; `every_write` fsyncs whatever
    /// the jobs asked. Returns whether this commit newly left something to fsync.
    fn commit(&mut self, batch: Vec<Job>, every_write: bool) -> bool {
        let sync = every_write || batch.iter().any(|job| job.durability == Durability::Synced);
        let mut delivers = Vec::with_capacity(batch.len());
        let started = Instant::now();
        let outcome = self.synchronous(sync).and_then(|()| {
            self.statement("BEGIN IMMEDIATE")
                .map_err(|e| self.sqlite(e))?;
            for job in batch {
                delivers.extend(self.run_job(job));
            }
            self.statement("COMMIT").map_err(|e| {
                let _ = self.statement("ROLLBACK");
                self.sqlite(e)
            })
        });
        if outcome.is_ok() {
            crate::metrics::committed("sqlite", started.elapsed());
        }
        let outcome = outcome.map_err(Arc::new);
        let newly_due = match &outcome {
            Ok(()) if sync => {
                self.flush_by = None;
                false
            }
            Ok(()) if self.flush_by.is_none() => {
                self.flush_by = Some(Instant::now() + FLUSH_INTERVAL);
                true
            }
            _ => false,
        };
        for deliver in delivers {
            deliver(match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(StoreError::Batch(error.clone())),
            });
        }
        newly_due
    }

    /// Runs one job in its own savepoint; a job that fails or panics is rolled back alone.
    fn run_job(&self, job: Job) -> Option<Deliver> {
        let begun = self.statement("SAVEPOINT job");
        let ran = begun.map(|()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(&self.conn)))
        });
        let (keep, deliver) = match ran {
            Ok(Ok((ok, deliver))) => (ok, Some(deliver)),
            // The job panicked: its caller hears that the writer dropped it.
            Ok(Err(_)) => (false, None),
            // No savepoint: the job never ran; its caller is answered through the dropped
            // reply channel, as for a panic.
            Err(_) => return None,
        };
        let ended = if keep {
            self.statement("RELEASE job")
        } else {
            self.statement("ROLLBACK TO job")
                .and_then(|()| self.statement("RELEASE job"))
        };
        if let Err(error) = ended {
            tracing::error!(%error, "ending a write's savepoint failed");
        }
        deliver
    }

    /// Makes every commit so far durable: one small write committed with `synchronous=FULL`,
    /// whose fsync of the write-ahead log covers every frame before it.
    fn flush(&mut self) {
        if self.flush_by.is_none() {
            return;
        }
        let outcome = self.synchronous(true).and_then(|()| {
            self.conn
                .execute(
                    "INSERT INTO meta(key, value) VALUES ('flushed_at', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [crate::clock::now().to_string()],
                )
                .map_err(|e| self.sqlite(e))
        });
        match outcome {
            Ok(_) => self.flush_by = None,
            Err(error) => {
                tracing::error!(%error, "flushing the database to disk failed; retrying");
                self.flush_by = Some(Instant::now() + FLUSH_INTERVAL);
            }
        }
    }
}
