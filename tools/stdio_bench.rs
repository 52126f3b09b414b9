//! End-to-end benchmark of the MCP server over stdio: what an MCP client (Claude Desktop, Cursor,
//! an agent framework) actually pays per tool call, JSON-RPC framing and pipes included.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example stdio_bench -- [--calls N] [--starts M] [--agentseal PATH]
//! ```
//!
//! What it does:
//!
//! 1. locates the release `agentseal` binary (default `target/release/agentseal` under this
//!    crate; it does not build it, run `cargo build --release` first);
//! 2. creates a throw-away installation in a temporary directory with the kernel keyutils key
//!    store (Linux) and three agents: Ed25519, ML-DSA-65 and hybrid (both);
//! 3. per algorithm, measures server start-up M times (default 10): spawning
//!    `agentseal serve --agent ID` to a received `initialize` reply, i.e. the session is ready
//!    (desktop clients spawn the server on demand, so this is latency a user can see);
//! 4. per algorithm, over ONE stdio session: N (default 500) sequential `sign_action` calls, then
//!    N sequential `verify_peer` calls, each verifying one of the tokens just signed, with
//!    `expected_action` and `arguments` (the full check a receiving agent does);
//! 5. prints p50, p99, mean and calls/second per tool and algorithm as a Markdown table;
//! 6. destroys the installation (`destroy --confirm <ca_id>`, which also deletes the keys from
//!    the keyring), on success, on error and on panic (a guard's `Drop`). Only a kill (SIGKILL,
//!    or Ctrl-C, which this harness does not trap) leaves it behind: then run
//!    `agentseal --data-dir <printed dir> --key-store keyutils destroy --confirm <ca_id>`.
//!
//! Timings are client-side wall-clock (`std::time::Instant`) around one request/response each,
//! so they include: client serialization, the pipe write, the server's parse, its
//! `spawn_blocking` hop, the cryptography and SQLite work, the response serialization, the pipe
//! read and the client's parse. A few warm-up calls per session are not counted.

#[path = "harness.rs"]
mod harness;

use harness::{Installation, Result, fsync_latency, machine_note, object, sample, warn_if_stale};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};

/// The three agents, one per signature algorithm: (label in the table, `--alg`, agent id).
const AGENTS: [(&str, &str, &str); 3] = [
    ("Ed25519", "ed25519", "agent://bench.example/ed25519"),
    ("ML-DSA-65", "ml-dsa-65", "agent://bench.example/ml-dsa-65"),
    ("hybrid", "hybrid", "agent://bench.example/hybrid"),
];

/// Calls made before timing starts in each session (first-use allocations, page faults, the
/// SQLite page cache), so that the figures describe a warm, long-lived server.
const WARM_UP_CALLS: usize = 10;

/// Command-line options.
struct Options {
    /// Timed calls per tool and algorithm.
    calls: usize,
    /// Timed server start-ups per algorithm.
    starts: usize,
    /// The `agentseal` binary under test.
    agentseal: PathBuf,
}

fn usage() -> String {
    "usage: stdio_bench [--calls N (default 500)] [--starts M (default 10)] \
     [--agentseal PATH (default target/release/agentseal)]"
        .to_owned()
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        calls: 500,
        starts: 10,
        agentseal: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("release")
            .join(format!("agentseal{}", std::env::consts::EXE_SUFFIX)),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--calls" => options.calls = value()?.parse()?,
            "--starts" => options.starts = value()?.parse()?,
            "--agentseal" => options.agentseal = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
        }
    }
    if options.calls == 0 || options.starts == 0 {
        return Err("--calls and --starts must be at least 1".into());
    }
    if !options.agentseal.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release` first, or pass --agentseal PATH",
            options.agentseal.display()
        )
        .into());
    }
    warn_if_stale(&options.agentseal);
    Ok(options)
}

impl Installation {
    /// Starts `agentseal serve --agent ID` as a child process and completes the MCP handshake
    /// (`initialize` request, its reply, then the `initialized` notification). Returns the
    /// session and the time from just before the spawn to the handshake's completion.
    async fn connect(&self, agent: &str) -> Result<(Session, Duration)> {
        let command = tokio::process::Command::new(&self.agentseal).configure(|c| {
            c.arg("--data-dir").arg(&self.dir);
            c.args(["--key-store", "keyutils", "serve", "--agent", agent]);
        });
        let start = Instant::now();
        let transport = TokioChildProcess::new(command)?;
        let pid = transport.id().ok_or("the server exited at once")?;
        // `()` is rmcp's no-op client handler; `serve` returns once the server has answered
        // `initialize` and the client has sent `initialized`.
        let session = ().serve(transport).await?;
        Ok((
            Session {
                client: session,
                pid: pid.to_string(),
            },
            start.elapsed(),
        ))
    }
}

/// A client session with a server process of its own.
struct Session {
    client: RunningService<RoleClient, ()>,
    /// The server's process id, for `/proc`.
    pid: String,
}

/// One `tools/call` round trip; a JSON-RPC error or a tool error (`isError`) is an error here.
/// Returns the tool's structured result.
async fn call(session: &Session, tool: &str, args: Map<String, Value>) -> Result<Value> {
    let result = session
        .client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .map_err(|e| format!("{tool}: {e}"))?;
    if result.is_error == Some(true) {
        return Err(format!("{tool} failed: {result:?}").into());
    }
    result
        .structured_content
        .ok_or_else(|| format!("{tool} returned no structured content").into())
}

/// Summary statistics of a set of latencies.
struct Stats {
    count: usize,
    p50: Duration,
    p99: Duration,
    mean: Duration,
    /// Throughput of the sequential loop: calls / wall time of the whole loop.
    per_second: Option<f64>,
    /// The server's CPU time (user + system) per call, and its peak RSS after the loop.
    server: Option<(Duration, u64)>,
}

impl Stats {
    /// `wall` is the whole loop's duration, for throughput; `None` for start-ups (which are not
    /// a loop whose rate means anything).
    fn new(mut samples: Vec<Duration>, wall: Option<Duration>) -> Stats {
        samples.sort_unstable();
        let count = samples.len();
        // Nearest-rank percentile: the smallest sample with at least p% of samples <= it.
        let rank = |p: f64| samples[((p * count as f64).ceil() as usize).clamp(1, count) - 1];
        Stats {
            count,
            p50: rank(0.50),
            p99: rank(0.99),
            mean: samples.iter().sum::<Duration>() / count as u32,
            per_second: wall.map(|w| count as f64 / w.as_secs_f64()),
            server: None,
        }
    }
}

/// Formats a latency in the unit that keeps three significant figures readable.
fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1_000.0)
    }
}

/// Times `calls` sequential round trips; `make_args(i)` gives the arguments of call `i` and
/// `check(i, result)` validates its result after timing (so it is not measured).
async fn time_calls(
    session: &Session,
    tool: &str,
    calls: usize,
    make_args: impl Fn(usize) -> Map<String, Value>,
    mut check: impl FnMut(usize, Value) -> Result<()>,
) -> Result<Stats> {
    // Build every request up front so argument construction is outside the timed region.
    let requests: Vec<Map<String, Value>> = (0..calls).map(make_args).collect();
    let mut samples = Vec::with_capacity(calls);
    let mut results = Vec::with_capacity(calls);
    let before = sample(&session.pid)?;
    let loop_start = Instant::now();
    for args in requests {
        let start = Instant::now();
        let result = call(session, tool, args).await?;
        samples.push(start.elapsed());
        results.push(result);
    }
    let wall = loop_start.elapsed();
    let after = sample(&session.pid)?;
    for (i, result) in results.into_iter().enumerate() {
        check(i, result)?;
    }
    let mut stats = Stats::new(samples, Some(wall));
    stats.server = Some((
        after.cpu.saturating_sub(before.cpu) / calls.max(1) as u32,
        after.peak_rss_kib,
    ));
    Ok(stats)
}

/// The benchmark proper; the caller owns the installation so it is destroyed whatever happens.
async fn run(installation: &Installation, options: &Options) -> Result<Vec<(String, Stats)>> {
    let mut rows = Vec::new();
    // The arguments every token binds (by their JCS SHA-256) and every verification re-checks.
    let arguments = json!({"service": "web", "version": "1.4.2", "replicas": 3});
    for (label, _, agent) in AGENTS {
        eprintln!("{label}: {} start-ups ...", options.starts);
        let mut starts = Vec::with_capacity(options.starts);
        for _ in 0..options.starts {
            let (session, elapsed) = installation.connect(agent).await?;
            starts.push(elapsed);
            session.client.cancel().await?;
        }
        rows.push((
            format!("| {label} | start-up (spawn → `initialize` reply)"),
            Stats::new(starts, None),
        ));

        // One long-lived session for both tools, as a client holding the server open would.
        let (session, _) = installation.connect(agent).await?;
        let sign_args = |i: usize| {
            object(json!({
                "action": "deploy",
                // Addressed to the agent itself so that `verify_peer` in this same session
                // (whose expected audience defaults to its own id) accepts it.
                "audience": agent,
                "arguments": arguments,
                "ttl_seconds": 3600,
                "scope": format!("bench call-{i}"),
            }))
        };
        for i in 0..WARM_UP_CALLS {
            let signed = call(&session, "sign_action", sign_args(i)).await?;
            let verify = json!({
                "token": signed["token"],
                "expected_action": "deploy",
                "arguments": arguments,
            });
            call(&session, "verify_peer", object(verify)).await?;
        }

        eprintln!("{label}: {} sign_action calls ...", options.calls);
        let mut tokens = vec![Value::Null; options.calls];
        let sign = time_calls(&session, "sign_action", options.calls, sign_args, |i, r| {
            if !r["token"].is_string() {
                return Err(format!("sign_action returned no token: {r}").into());
            }
            tokens[i] = r["token"].clone();
            Ok(())
        })
        .await?;
        rows.push((format!("| {label} | `sign_action`"), sign));

        // Each call verifies a different token (one of those just signed): the full check a
        // receiving agent makes, signature, certificate chain, revocation, action and arguments.
        eprintln!("{label}: {} verify_peer calls ...", options.calls);
        let verify_args = |i: usize| {
            object(json!({
                "token": tokens[i],
                "expected_action": "deploy",
                "arguments": arguments,
            }))
        };
        let verify = time_calls(
            &session,
            "verify_peer",
            options.calls,
            verify_args,
            |i, r| {
                if r["valid"] != true {
                    return Err(format!("verify_peer rejected token {i}: {r}").into());
                }
                Ok(())
            },
        )
        .await?;
        rows.push((format!("| {label} | `verify_peer`"), verify));
        session.client.cancel().await?;
    }
    Ok(rows)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match main_inner().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stdio_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_inner() -> Result<()> {
    let options = parse_options()?;
    let before = machine_note();
    eprintln!("agentseal: {}", options.agentseal.display());
    let installation = Installation::create(
        &options.agentseal,
        AGENTS.map(|(_, alg, agent)| (agent, alg)),
    )?;
    eprintln!(
        "installation: {} (CA {}), keyutils",
        installation.dir.display(),
        installation.ca_id
    );
    // On error the `?` below drops `installation`, whose `Drop` destroys it; on success
    // `destroy` does so and reports any failure.
    let rows = run(&installation, &options).await?;
    let (fsync_p50, fsync_p99) = fsync_latency(&installation.dir, 200)?;
    installation.destroy()?;
    eprintln!("installation destroyed");

    println!(
        "{} timed calls per tool and algorithm ({WARM_UP_CALLS} warm-up calls not counted), \
         {} start-ups per algorithm; sequential, one stdio session per algorithm.",
        options.calls, options.starts
    );
    println!(
        "Machine: {before} at the start, {} at the end.",
        machine_note()
    );
    println!(
        "fsync of the data directory's disk (4 KiB appended, then fsync), same run: p50 {} / p99 {}.",
        fmt(fsync_p50),
        fmt(fsync_p99)
    );
    println!();
    println!(
        "| agent | operation | n | p50 | p99 | mean | calls/s | server CPU per call | server peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (prefix, s) in rows {
        let rate = s.per_second.map_or("–".to_owned(), |r| format!("{r:.0}"));
        let (cpu, rss) = s
            .server
            .map_or(("–".to_owned(), "–".to_owned()), |(cpu, rss)| {
                (fmt(cpu), format!("{:.1} MiB", rss as f64 / 1024.0))
            });
        println!(
            "{prefix} | {} | {} | {} | {} | {rate} | {cpu} | {rss} |",
            s.count,
            fmt(s.p50),
            fmt(s.p99),
            fmt(s.mean)
        );
    }
    Ok(())
}
