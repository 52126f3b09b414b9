//! One call to the database as the core makes it: a future run on the store's runtime while
//! the calling thread waits, and its errors, told apart into "refused" and "unreachable now".

use std::future::Future;

use deadpool_postgres::{Object, Pool, PoolError};

use super::CONNECT_TIMEOUT;
use crate::store::StoreError;

/// Errors inside a call, before they are given the database's name.
pub(super) enum PgError {
    Pool(PoolError),
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<PoolError> for PgError {
    fn from(e: PoolError) -> Self {
        PgError::Pool(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl From<crate::store::SealRefused> for PgError {
    fn from(e: crate::store::SealRefused) -> Self {
        PgError::Store(e.into())
    }
}

impl PgError {
    pub(super) fn into_store(self, location: &str) -> StoreError {
        let unavailable = |detail: String| StoreError::Unavailable {
            location: location.to_owned(),
            detail,
        };
        match self {
            PgError::Store(e) => e,
            PgError::Pool(PoolError::Backend(e)) | PgError::Db(e) if lost_connection(&e) => {
                unavailable(crate::store::postgres_summary(&e))
            }
            PgError::Pool(PoolError::Backend(e)) | PgError::Db(e) => StoreError::Postgres {
                location: location.to_owned(),
                source: e,
            },
            PgError::Pool(PoolError::Timeout(kind)) => unavailable(format!(
                "no connection within {} s ({kind:?})",
                CONNECT_TIMEOUT.as_secs()
            )),
            PgError::Pool(other) => unavailable(other.to_string()),
        }
    }
}

/// Whether `e` says the server could not be reached or went away (as against refusing the
/// statement): the call may succeed later unchanged.
fn lost_connection(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code);
    }
    // No SQL state: the error came from the connection (I/O, TLS, a timeout), not the server.
    true
}

/// Runs `call` on the runtime `handle` drives and waits for it, from any thread (an event
/// loop's included: it only blocks this thread, as a SQLite commit does).
pub(super) fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    shown: &str,
    call: impl Future<Output = Result<T, PgError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = reply.send(call.await);
    });
    match answer.recv() {
        Ok(outcome) => outcome.map_err(|e| e.into_store(shown)),
        // The task was dropped: the runtime is shutting down.
        Err(_) => Err(StoreError::WriterStopped(shown.to_owned())),
    }
}

pub(super) async fn get(pool: &Pool) -> Result<Object, PgError> {
    Ok(pool.get().await?)
}

/// Commits `tx`, timing the commit for the hub's metrics.
pub(super) async fn commit(tx: deadpool_postgres::Transaction<'_>) -> Result<(), PgError> {
    let started = std::time::Instant::now();
    tx.commit().await?;
    crate::metrics::committed("postgres", started.elapsed());
    Ok(())
}
