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
