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

/// The async runtime both servers run on: `workers` worker threads (one per core if `None`), and
/// a bounded set of threads for blocking work (SQLite, key stores), so that fifty sessions mean
/// eight threads, not fifty. Calls beyond the bound queue, and share the database's next group
/// commit.
fn runtime(
    workers: Option<usize>,
) -> Result<tokio::runtime::Runtime, agentseal::authority::ServiceError> {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
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
