//! The `agentseal` command: parses the command line and hands it to the CLI front-end.
#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

mod audit_event;
mod cli;
mod http;
mod mcp;

fn main() -> std::process::ExitCode {
    cli::run()
}

/// How many threads a server's event loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventLoop {
    /// The calling thread only: the stdio server, one client whose calls are answered in turn.
    /// Core calls run on it too (see [`core_call`]).
    OneThread,
    /// One worker per core: the hub, many sessions at once. Core calls go to the blocking pool.
    PerCore,
}

/// The async runtime both servers run on, and a bounded set of threads for blocking work
/// (SQLite, key stores), so that fifty sessions mean eight threads, not fifty. Calls beyond the
/// bound queue, and share the database's next group commit.
fn runtime(
    event_loop: EventLoop,
) -> Result<tokio::runtime::Runtime, agentseal::authority::ServiceError> {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let mut builder = match event_loop {
        EventLoop::OneThread => tokio::runtime::Builder::new_current_thread(),
        EventLoop::PerCore => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .max_blocking_threads((4 * cores).clamp(8, 64))
        .build()
        .map_err(|e| {
            agentseal::authority::ServiceError::InvalidInput(format!(
                "cannot start the async runtime: {e}"
            ))
        })
}

/// A core call that did not finish: it panicked, or the server is shutting down. Reported as an
/// internal error; a panic never takes the server down.
#[derive(Debug)]
struct CoreCallLost;

impl std::fmt::Display for CoreCallLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the operation did not finish")
    }
}

/// Runs a blocking core call (SQLite, the key store, signatures) for an async front-end.
///
/// On a one-thread event loop ([`EventLoop::OneThread`], the stdio server) the call runs right
/// here: its client's calls are answered in turn anyway, and handing the call to a pool thread
/// and back costs two thread wake-ups, which on a small virtual machine take longer than the
/// call itself. On the hub's per-core event loop it goes to the bounded blocking pool, so a
/// call waiting for the disk never holds a worker that other sessions need. Either way a panic
/// is caught and reported as [`CoreCallLost`].
///
/// On the one-thread loop nothing else runs while a call does, for as long as it waits (up to
/// SQLite's 10 s busy timeout when another process holds the database's write lock): the
/// client's next request would wait for this one anyway, and a webhook delivery in flight may
/// time out and be retried later (delivery is at least once, docs/signals.md). Key-store calls
/// that cannot run on a thread driving an event loop move off it themselves
/// (`keystore::off_runtime`).
async fn core_call<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoreCallLost> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    // What the call logs belongs to the request it serves (its request id).
    let span = tracing::Span::current();
    let call = move || span.in_scope(call);
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|_| CoreCallLost)
    } else {
        tokio::task::spawn_blocking(call)
            .await
            .map_err(|_| CoreCallLost)
    }
}
