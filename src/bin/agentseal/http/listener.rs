//! The hub's accept loop: hyper's HTTP/1.1 server with the limits that `axum::serve` does not
//! set, so that slow or idle clients cannot hold the hub's file descriptors.
//!
//! - A client has [`Limits::header_timeout`] to send a request's headers. The same clock runs
//!   while a kept-alive connection waits for its next request, so idle connections close too.
//!   A response in progress (an MCP event stream) is not affected.
//! - At most [`Limits::max_connections`] connections are open at once. Beyond that the hub stops
//!   accepting: new clients wait in the kernel's backlog until a connection closes.
//! - At start ([`fit_open_file_limit`]) the soft open-file limit is raised to the hard limit, so
//!   the cap binds before the limit does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send a request's headers, or keep a connection idle.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// File descriptors kept for everything but client connections (database, key store, webhooks).
const RESERVED_FILES: u64 = 64;

/// The connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // back off briefly rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Raises the soft open-file limit to the hard one, and lowers the connection cap to what the
/// limit allows (with a warning) if it must. Called before the hub says it is listening.
pub fn fit_open_file_limit(limits: Limits) -> Limits {
    let wanted = limits.max_connections;
    let Some(limit) = raise_open_file_limit() else {
        return limits;
    };
    let allowed = usize::try_from(limit.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(wanted);
    if allowed < wanted {
        tracing::warn!(
            wanted,
            allowed,
            "the open-file limit allows fewer connections than --max-connections"
        );
    }
    Limits {
        max_connections: wanted.min(allowed),
        ..limits
    }
}

/// Raises the soft open-file limit to the hard limit; the soft limit now in force (`None`:
/// unlimited or unknown).
#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        limit.current = Some(hard);
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "could not raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}
