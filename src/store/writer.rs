//! Group commit: one thread owns the database's write connection, takes every write waiting for
//! it, and commits them in one transaction, so concurrent calls share one commit (and, when one
//! of them needs it, one fsync).
//!
//! A write is a job run inside its own savepoint: a job that fails is rolled back alone and its
//! error goes to its caller; the others commit. No caller hears "done" before the commit that
//! holds its write has returned.
//!
//! How durable a commit is depends on what its jobs asked for ([`Durability`]):
//! - [`Durability::Synced`]: the commit fsyncs the write-ahead log (`synchronous=FULL`) before
//!   anyone is answered. Revocations and replay records ask for this.
//! - [`Durability::Committed`]: the commit writes the log without an fsync
//!   (`synchronous=NORMAL`). The write survives the process being killed at once (it is in the
//!   operating system's cache); the writer fsyncs within [`FLUSH_INTERVAL`], so it survives a
//!   power loss from then on. Audit records ask for this.
//!
//! [`SyncPolicy::EveryWrite`] makes every commit `Synced`: the operator's option to trade
//! throughput for "nothing acknowledged is lost even to a power cut".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
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

/// The handle the store keeps: a queue to the writer thread.
pub(super) struct Writer {
    queue: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    every_write: Arc<AtomicBool>,
    path: std::path::PathBuf,
}

impl Writer {
    /// Starts the writer thread on `conn`, which must be the only connection of this process
    /// that writes.
    pub(super) fn start(conn: Connection, path: &std::path::Path) -> Result<Writer, StoreError> {
        let (send, receive) = mpsc::channel();
        let every_write = Arc::new(AtomicBool::new(false));
        let thread = {
            let every_write = every_write.clone();
            let owned = path.to_owned();
            std::thread::Builder::new()
                .name("agentseal-writer".into())
                .spawn(move || Loop::new(conn, owned, every_write).run(&receive))
                .map_err(|source| StoreError::Io {
                    path: path.to_owned(),
                    source,
                })?
        };
        Ok(Writer {
            queue: Mutex::new(Some(send)),
            thread: Mutex::new(Some(thread)),
            every_write,
            path: path.to_owned(),
        })
    }

    pub(super) fn set_policy(&self, policy: SyncPolicy) {
        self.every_write
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
        let stopped = || StoreError::WriterStopped(self.path.clone()).into();
        {
            let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let Some(queue) = queue.as_ref() else {
                return Err(stopped());
            };
            if queue.send(Job { durability, run }).is_err() {
                return Err(stopped());
            }
        }
        answer.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Stops the writer after the jobs already queued, with everything committed fsynced.
    pub(super) fn stop(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread's state.
struct Loop {
    conn: Connection,
    path: std::path::PathBuf,
    every_write: Arc<AtomicBool>,
    /// The connection's current `synchronous` setting is FULL.
    full: bool,
    /// Commits since the last fsync that are not yet on disk: when they must be.
    flush_by: Option<Instant>,
}

impl Loop {
    fn new(conn: Connection, path: std::path::PathBuf, every_write: Arc<AtomicBool>) -> Loop {
        Loop {
            conn,
            path,
            every_write,
            full: true,
            flush_by: None,
        }
    }

    fn run(mut self, queue: &Receiver<Job>) {
        loop {
            let first = match self.flush_by {
                None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(by) => queue.recv_timeout(by.saturating_duration_since(Instant::now())),
            };
            let first = match first {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.flush();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH
                && let Ok(job) = queue.try_recv()
            {
                batch.push(job);
            }
            self.commit(batch);
        }
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
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

    /// Commits `batch` in one transaction and answers every job.
    fn commit(&mut self, batch: Vec<Job>) {
        let sync = self.every_write.load(Ordering::Relaxed)
            || batch.iter().any(|job| job.durability == Durability::Synced);
        let mut delivers = Vec::with_capacity(batch.len());
        let outcome = self.synchronous(sync).and_then(|()| {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.sqlite(e))?;
            for job in batch {
                delivers.extend(self.run_job(job));
            }
            self.conn.execute_batch("COMMIT").map_err(|e| {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.sqlite(e)
            })
        });
        let outcome = outcome.map_err(Arc::new);
        match &outcome {
            Ok(()) if sync => self.flush_by = None,
            Ok(()) => {
                self.flush_by
                    .get_or_insert_with(|| Instant::now() + FLUSH_INTERVAL);
            }
            Err(_) => {}
        }
        for deliver in delivers {
            deliver(match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(StoreError::Batch(error.clone())),
            });
        }
    }

    /// Runs one job in its own savepoint; a job that fails or panics is rolled back alone.
    fn run_job(&self, job: Job) -> Option<Deliver> {
        let begun = self.conn.execute_batch("SAVEPOINT job");
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
        let end = if keep {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(error) = self.conn.execute_batch(end) {
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
