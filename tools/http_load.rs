//! Load test of the HTTP hub: many agents, each with its own MCP session over streamable HTTP,
//! signing action tokens for one another and verifying the tokens addressed to them, all at once
//! against one `agentseal serve --http` process.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example http_load -- --sessions 1,10,50 --calls 200 [--alg ed25519] \
//!     [--consume]
//! ```
//!
//! What it does:
//!
//! 1. locates the release `agentseal` binary (default `target/release/agentseal` under this
//!    crate; it does not build it, run `cargo build --release` first);
//! 2. creates a throw-away installation (hybrid CA, the default of `init`) in a temporary
//!    directory with the kernel keyutils key store, and as many agents as the largest session
//!    count, all with `--alg` (default ed25519);
//! 3. per session count C (`--sessions` takes a comma-separated list): starts a fresh hub,
//!    `agentseal serve --http 127.0.0.1:0`, so that its peak RSS belongs to this level alone;
//!    issues one access token per agent (`access-token issue --audience <hub>/mcp`); opens C
//!    MCP sessions at once, each authorized as its own agent (`Authorization: Bearer`);
//! 4. arranges the agents in a ring: in every round, session i signs a token for agent i+1
//!    (`sign_action`, audience = that agent, arguments naming the round) and hands it over;
//!    session i+1 verifies it as the receiving agent (`verify_peer` with `expected_action` and
//!    `arguments`; the hub checks the token is addressed to the caller). So every call is real:
//!    each verification is of a distinct, fresh token signed by another agent through the hub.
//!    With `--consume`, `verify_peer` also records the token as used (`consume: true`, what an
//!    agent acting on it does: a durable database write). A few warm-up rounds are not counted; then all sessions pass a barrier together and do N
//!    (`--calls`) timed rounds each;
//! 5. checks every answer: a `sign_action` token must be signed as the calling agent (`iss` and
//!    `sub`) for the agent asked, and its id must be the `token_id` returned; a `verify_peer`
//!    verdict must be valid, name the signer as `agent_id`, and carry the same token id. A
//!    failed call or check is counted as an error (with the first few printed), not fatal;
//! 6. prints, per level, throughput (tool calls per second of wall time across all sessions),
//!    p50/p99 latency per tool, errors, session set-up time, and the hub's peak RSS (`VmHWM`),
//!    thread count and CPU time per call, from `/proc/PID/status` and `/proc/PID/stat`;
//! 7. stops each hub (SIGTERM) and destroys the installation (`destroy --confirm <ca_id>`,
//!    which deletes the keys from the keyring), also on error or panic (guards' `Drop`). Only a
//!    kill of this harness leaves it behind: then run
//!    `agentseal --data-dir <printed dir> --key-store keyutils destroy --confirm <ca_id>`.
//!
//! Latencies are client-side wall-clock around one `tools/call` round trip (an HTTP POST whose
//! answer is an SSE event): client serialization, the hub's access-token check, the MCP
//! session's dispatch, the core's `spawn_blocking` work, the response. The harness runs on the
//! same machine as the hub and competes with it for CPU; its own CPU time is printed too.

#[path = "harness.rs"]
mod harness;

use harness::{
    Installation, ProcessSample, Result, fsync_latency, machine_note, object, sample, warn_if_stale,
};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::sync::{Barrier, mpsc};

/// An MCP client session authorized as one agent.
type Session = RunningService<RoleClient, ()>;

/// Values `--alg` accepts (those of `agentseal agent create --alg`).
const ALGORITHMS: [&str; 3] = ["ed25519", "ml-dsa-65", "hybrid"];

/// How many failures are printed in full; the rest are only counted.
const ERRORS_SHOWN: usize = 5;

/// Command-line options.
struct Options {
    /// Concurrent sessions, one run (and one fresh hub) per value.
    sessions: Vec<usize>,
    /// What each session does.
    plan: Plan,
    /// `--alg` of every agent.
    alg: String,
    /// The `agentseal` binary under test.
    agentseal: PathBuf,
    /// Hub processes per level, all on the installation's one database; sessions are spread
    /// over them in turn.
    hubs: usize,
}

/// The rounds of each session.
#[derive(Clone, Copy)]
struct Plan {
    /// Untimed rounds before the timed ones.
    warm_up: usize,
    /// Timed rounds (one `sign_action` + one `verify_peer`).
    calls: usize,
    /// Verify with `consume: true`, as an agent acting on the token does: the hub records the
    /// token as used (a durable SQLite write) so that a replay is refused.
    consume: bool,
}

fn usage() -> String {
    "usage: http_load [--sessions C[,C...] (default 10)] [--calls N rounds per session \
     (default 200)] [--warm-up W (default 5)] [--alg ed25519|ml-dsa-65|hybrid (default ed25519)] \
     [--consume] [--hubs H (default 1)] [--agentseal PATH (default target/release/agentseal)]; \
     AGENTSEAL_DATABASE_URL=postgres://... puts the installation in PostgreSQL"
        .to_owned()
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        sessions: vec![10],
        plan: Plan {
            warm_up: 5,
            calls: 200,
            consume: false,
        },
        alg: "ed25519".to_owned(),
        hubs: 1,
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
            "--sessions" => {
                options.sessions = value()?
                    .split(',')
                    .map(|c| c.trim().parse())
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--calls" => options.plan.calls = value()?.parse()?,
            "--warm-up" => options.plan.warm_up = value()?.parse()?,
            "--consume" => options.plan.consume = true,
            "--alg" => options.alg = value()?,
            "--agentseal" => options.agentseal = PathBuf::from(value()?),
            "--hubs" => options.hubs = value()?.parse()?,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
        }
    }
    if options.hubs == 0 {
        return Err("--hubs must be at least 1".into());
    }
    if options.plan.calls == 0 || options.sessions.contains(&0) {
        return Err("--calls and every --sessions value must be at least 1".into());
    }
    if !ALGORITHMS.contains(&options.alg.as_str()) {
        return Err(format!("--alg must be one of {}", ALGORITHMS.join(", ")).into());
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

/// The id of agent `i`.
fn agent_id(i: usize) -> String {
    format!("agent://load.example/agent-{i:03}")
}

impl Installation {
    /// Starts `agentseal serve --http 127.0.0.1:0` and waits for its "listening on" line.
    fn serve(&self) -> Result<Hub> {
        let mut child = StdCommand::new(&self.agentseal)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--key-store", "keyutils", "serve", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps reading after start-up, so that the hub never blocks on a full pipe and its
        // warnings can be shown if something fails.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(rest) = line.strip_prefix("agentseal: listening on ") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.to_owned());
                }
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut hub = Hub {
            child: Some(child),
            url: String::new(),
            log,
        };
        hub.url = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("the hub did not start: {}", hub.log()))?;
        Ok(hub)
    }

    /// An access token for agent `i` on `hub` (default lifetime, every scope).
    fn access_token(&self, hub: &Hub, i: usize) -> Result<String> {
        let (agent, audience) = (agent_id(i), hub.mcp_url());
        let token = self.cli(&[
            "access-token",
            "issue",
            "--agent",
            &agent,
            "--audience",
            &audience,
        ])?;
        Ok(token.trim().to_owned())
    }
}

/// A running hub, killed on drop unless [`Hub::terminate`] stopped it.
struct Hub {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    url: String,
    /// What the hub wrote on stderr.
    log: Arc<Mutex<String>>,
}

impl Hub {
    fn mcp_url(&self) -> String {
        format!("{}/mcp", self.url)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM and waits (at most 15 s: the hub's grace is 5 s) for a clean exit.
    fn terminate(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        StdCommand::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    return Err(format!("the hub exited with {status}: {}", self.log()).into());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the hub did not stop within 15 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `tools/call` round trip; a JSON-RPC error or a tool error (`isError`) is an error here.
/// Returns the tool's structured result.
async fn call(session: &Session, tool: &str, args: Map<String, Value>) -> Result<Value> {
    let result = session
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

/// Opens an MCP session on `url` authorized by `access_token`; returns it and the time the
/// handshake took (`initialize` POST, its answer, the `initialized` notification).
async fn connect(url: String, access_token: String) -> Result<(Session, Duration)> {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(access_token);
    let start = Instant::now();
    let transport = StreamableHttpClientTransport::from_config(config);
    let session = ().serve(transport).await?;
    Ok((session, start.elapsed()))
}

/// A signed token on its way from the signing session to the agent it is addressed to.
struct Delivery {
    token: String,
    token_id: String,
    signer: String,
    /// The arguments it was signed for, which the receiver acts on (and so verifies).
    arguments: Map<String, Value>,
}

/// What one session measured and saw go wrong.
#[derive(Default)]
struct SessionReport {
    sign: Vec<Duration>,
    verify: Vec<Duration>,
    errors: Vec<String>,
}

/// A session's place in the ring of agents.
struct Seat {
    /// This session's agent is `agent_id(index)`.
    index: usize,
    /// How many sessions the ring has.
    ring: usize,
    /// Where this session's tokens go: the inbox of the next agent.
    outbox: mpsc::UnboundedSender<Option<Delivery>>,
    /// The tokens the previous agent signed for this one (`None` when its signature failed).
    inbox: mpsc::UnboundedReceiver<Option<Delivery>>,
}

/// One session's rounds: sign for the next agent, hand the token over, verify the one the
/// previous agent signed for us. Failures are recorded, never returned, so that every session
/// reaches the barrier and the ring keeps moving (a failed signature hands over `None`).
async fn run_session(
    session: Session,
    mut seat: Seat,
    barrier: Arc<Barrier>,
    plan: Plan,
) -> SessionReport {
    let Plan {
        warm_up,
        calls,
        consume,
    } = plan;
    let me = agent_id(seat.index);
    let next = agent_id((seat.index + 1) % seat.ring);
    let mut report = SessionReport {
        sign: Vec::with_capacity(calls),
        verify: Vec::with_capacity(calls),
        errors: Vec::new(),
    };
    for round in 0..warm_up + calls {
        if round == warm_up {
            barrier.wait().await;
        }
        let timed = round >= warm_up;
        let arguments = object(json!({
            "service": "web",
            "version": "1.4.2",
            "replicas": 3,
            "round": round,
        }));
        let request = object(json!({
            "action": "deploy",
            "audience": next,
            "arguments": arguments,
            "ttl_seconds": 3600,
        }));
        let start = Instant::now();
        let signed = call(&session, "sign_action", request).await;
        let elapsed = start.elapsed();
        let delivery =
            signed
                .and_then(|r| check_signed(&r, &me, &next))
                .map(|(token, token_id)| Delivery {
                    token,
                    token_id,
                    signer: me.clone(),
                    arguments,
                });
        match delivery {
            Ok(delivery) => {
                if timed {
                    report.sign.push(elapsed);
                }
                let _ = seat.outbox.send(Some(delivery));
            }
            Err(e) => {
                report.errors.push(format!("{me} round {round}: {e}"));
                let _ = seat.outbox.send(None);
            }
        }

        let Some(Some(delivery)) = seat.inbox.recv().await else {
            report.errors.push(format!(
                "{me} round {round}: no token to verify (the signer failed)"
            ));
            continue;
        };
        let request = object(json!({
            "token": delivery.token,
            "expected_action": "deploy",
            "arguments": delivery.arguments,
            "consume": consume,
        }));
        let start = Instant::now();
        let verdict = call(&session, "verify_peer", request).await;
        let elapsed = start.elapsed();
        match verdict.and_then(|v| check_verdict(&v, &delivery, &me)) {
            Ok(()) if timed => report.verify.push(elapsed),
            Ok(()) => {}
            Err(e) => report.errors.push(format!("{me} round {round}: {e}")),
        }
    }
    if let Err(e) = session.cancel().await {
        report
            .errors
            .push(format!("{me}: closing the session: {e}"));
    }
    report
}

/// Checks a `sign_action` result: a token signed as `me` (iss and sub), for `audience`, whose
/// id is the `token_id` returned. Returns the token and its id.
fn check_signed(result: &Value, me: &str, audience: &str) -> Result<(String, String)> {
    let (Some(token), Some(token_id)) = (result["token"].as_str(), result["token_id"].as_str())
    else {
        return Err(format!("sign_action returned no token or token_id: {result}").into());
    };
    let (_, claims) = agentseal::token::action::parse_unverified(token)
        .map_err(|e| format!("sign_action returned an unreadable token: {e}"))?;
    if claims.iss != me || claims.sub != me || claims.aud != audience || claims.jti != token_id {
        return Err(format!(
            "sign_action as {me} for {audience} gave a token with iss {}, sub {}, aud {}, jti {} \
             (token_id {token_id})",
            claims.iss, claims.sub, claims.aud, claims.jti
        )
        .into());
    }
    Ok((token.to_owned(), token_id.to_owned()))
}

/// Checks a `verify_peer` verdict on `delivery`, verified by `me`: valid, from the signer,
/// addressed to `me`, the very token signed.
fn check_verdict(verdict: &Value, delivery: &Delivery, me: &str) -> Result<()> {
    let claims = &verdict["token"];
    if verdict["valid"] != true
        || verdict["agent_id"] != delivery.signer.as_str()
        || claims["iss"] != delivery.signer.as_str()
        || claims["aud"] != me
        || claims["jti"] != delivery.token_id.as_str()
    {
        return Err(format!(
            "verify_peer by {me} of token {} from {}: {verdict}",
            delivery.token_id, delivery.signer
        )
        .into());
    }
    Ok(())
}

/// Latency summary of one set of samples (nearest-rank percentiles).
struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latency {
    fn new(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let count = samples.len();
        let rank = |p: f64| samples[((p * count as f64).ceil() as usize).clamp(1, count) - 1];
        Some(Latency {
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[count - 1],
        })
    }

    fn cell(latency: &Option<Latency>) -> String {
        latency.as_ref().map_or("–".to_owned(), |l| {
            format!("{} / {}", fmt(l.p50), fmt(l.p99))
        })
    }
}

/// Formats a latency in the unit that keeps three significant figures readable.
fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// The figures of one level (one session count).
struct Level {
    sessions: usize,
    /// Successful timed tool calls.
    calls: usize,
    errors: Vec<String>,
    /// From the barrier to the last session's last call.
    wall: Duration,
    sign: Option<Latency>,
    verify: Option<Latency>,
    connect: Option<Latency>,
    /// The (first) hub right after start-up, and after the run.
    hub_idle: ProcessSample,
    hub_after: ProcessSample,
    /// CPU time the hubs (all of them) and this harness spent in the timed phase.
    hub_cpu: Duration,
    client_cpu: Duration,
    /// What the hub logged (at its default level, warnings and errors) besides its start.
    hub_log: Vec<String>,
}

/// One level: a fresh hub, C sessions, their rounds; the hub is stopped before returning.
async fn run_level(
    installation: &Installation,
    options: &Options,
    sessions: usize,
) -> Result<Level> {
    let hubs = (0..options.hubs)
        .map(|_| installation.serve())
        .collect::<Result<Vec<Hub>>>()?;
    let pids: Vec<String> = hubs.iter().map(|h| h.pid().to_string()).collect();
    let hub_idle = sample(&pids[0])?;
    // Session i talks to hub i mod H.
    let tokens = (0..sessions)
        .map(|i| installation.access_token(&hubs[i % hubs.len()], i))
        .collect::<Result<Vec<String>>>()?;
    let logs = |hubs: &[Hub]| hubs.iter().map(Hub::log).collect::<Vec<_>>().join("");

    // All sessions connect at once, as a fleet of agents starting together would.
    let mut connecting = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let url = hubs[i % hubs.len()].mcp_url();
        connecting.spawn(async move { (i, connect(url, token).await) });
    }
    let mut opened: Vec<Option<Session>> = (0..sessions).map(|_| None).collect();
    let mut connect_times = Vec::with_capacity(sessions);
    while let Some(joined) = connecting.join_next().await {
        let (i, result) = joined?;
        let (session, elapsed) =
            result.map_err(|e| format!("{}: connecting: {e}\n{}", agent_id(i), logs(&hubs)))?;
        opened[i] = Some(session);
        connect_times.push(elapsed);
    }

    // The ring: session i sends to the inbox of session i+1.
    let (outboxes, mut inboxes): (Vec<_>, Vec<_>) =
        (0..sessions).map(|_| mpsc::unbounded_channel()).unzip();
    inboxes.rotate_right(1);
    let barrier = Arc::new(Barrier::new(sessions + 1));
    let mut running = tokio::task::JoinSet::new();
    for (i, ((session, outbox), inbox)) in opened.into_iter().zip(outboxes).zip(inboxes).enumerate()
    {
        let session = session.ok_or("a session was not opened")?;
        let seat = Seat {
            index: i,
            ring: sessions,
            outbox,
            inbox,
        };
        running.spawn(run_session(session, seat, barrier.clone(), options.plan));
    }
    barrier.wait().await;
    let start = Instant::now();
    let hubs_cpu =
        |pids: &[String]| -> Result<Duration> { pids.iter().map(|pid| Ok(sample(pid)?.cpu)).sum() };
    let (hub_before, client_before) = (hubs_cpu(&pids)?, sample("self")?);
    let mut reports = Vec::with_capacity(sessions);
    while let Some(report) = running.join_next().await {
        reports.push(report?);
    }
    let wall = start.elapsed();
    let (hub_cpu_after, hub_after, client_after) =
        (hubs_cpu(&pids)?, sample(&pids[0])?, sample("self")?);
    let log = logs(&hubs);
    for hub in hubs {
        hub.terminate()?;
    }

    let mut level = Level {
        sessions,
        calls: 0,
        errors: Vec::new(),
        wall,
        sign: None,
        verify: None,
        connect: Latency::new(connect_times),
        hub_idle,
        hub_after,
        hub_cpu: hub_cpu_after.saturating_sub(hub_before),
        client_cpu: client_after.cpu.saturating_sub(client_before.cpu),
        hub_log: log
            .lines()
            .filter(|l| !l.starts_with("agentseal: listening on "))
            .map(str::to_owned)
            .collect(),
    };
    let (mut sign, mut verify) = (Vec::new(), Vec::new());
    for report in reports {
        sign.extend(report.sign);
        verify.extend(report.verify);
        level.errors.extend(report.errors);
    }
    level.calls = sign.len() + verify.len();
    level.sign = Latency::new(sign);
    level.verify = Latency::new(verify);
    Ok(level)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match main_inner().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("http_load: some calls failed (see above)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("http_load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs every level; `Ok(false)` if any call failed.
async fn main_inner() -> Result<bool> {
    let options = parse_options()?;
    let agents = options.sessions.iter().copied().max().unwrap_or(1);
    eprintln!("agentseal: {}", options.agentseal.display());
    eprintln!(
        "creating an installation with {agents} {} agents ...",
        options.alg
    );
    let ids: Vec<String> = (0..agents).map(agent_id).collect();
    let installation = Installation::create(
        &options.agentseal,
        ids.iter().map(|id| (id.as_str(), options.alg.as_str())),
    )?;
    eprintln!(
        "installation: {} (CA {}), keyutils",
        installation.dir.display(),
        installation.ca_id
    );
    let before = machine_note();
    let mut levels = Vec::new();
    for &sessions in &options.sessions {
        eprintln!(
            "{sessions} sessions × ({} warm-up + {} timed) rounds ...",
            options.plan.warm_up, options.plan.calls
        );
        // On error the `?` drops `installation`, whose `Drop` destroys it.
        let level = run_level(&installation, &options, sessions).await?;
        for error in level.errors.iter().take(ERRORS_SHOWN) {
            eprintln!("  error: {error}");
        }
        for line in level.hub_log.iter().take(ERRORS_SHOWN) {
            eprintln!("  hub: {line}");
        }
        if level.errors.len() > ERRORS_SHOWN {
            eprintln!(
                "  ... and {} more errors",
                level.errors.len() - ERRORS_SHOWN
            );
        }
        levels.push(level);
    }
    let after = machine_note();
    let (fsync_p50, fsync_p99) = fsync_latency(&installation.dir, 200)?;
    installation.destroy()?;
    eprintln!("installation destroyed");

    let consume = if options.plan.consume {
        " with `consume: true`"
    } else {
        ""
    };
    println!(
        "{} agents, hybrid CA; per session {} timed rounds (one `sign_action` for the next agent \
         of the ring + one `verify_peer`{consume} of the token the previous agent signed for it), \
         {} warm-up rounds not counted; a fresh hub per row.",
        options.alg, options.plan.calls, options.plan.warm_up
    );
    let database = match std::env::var("AGENTSEAL_DATABASE_URL") {
        Ok(url) => agentseal::store::Location::parse(&url)
            .map(|l| format!("PostgreSQL ({l})"))
            .unwrap_or_else(|_| "an invalid AGENTSEAL_DATABASE_URL".into()),
        Err(_) => "SQLite in the data directory".into(),
    };
    println!(
        "Database: {database}; {} hub process(es) per row, sessions spread over them in turn; \
         CPU per call sums the hubs.",
        options.hubs
    );
    println!("Machine: {before} at the start, {after} at the end.");
    println!(
        "fsync of the data directory's disk (4 KiB appended, then fsync), same run: p50 {} / p99 {}.",
        fmt(fsync_p50),
        fmt(fsync_p99)
    );
    println!();
    println!(
        "| sessions | timed calls | errors | calls/s | `sign_action` p50 / p99 | \
         `verify_peer` p50 / p99 | slowest call | session set-up p50 / p99 | hub RSS idle → peak | \
         hub threads | CPU per call: hub / harness |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for level in &levels {
        let per_call = |cpu: Duration| {
            if level.calls == 0 {
                "–".to_owned()
            } else {
                fmt(cpu / level.calls as u32)
            }
        };
        let slowest = level
            .sign
            .iter()
            .chain(&level.verify)
            .map(|l| l.max)
            .max()
            .map_or("–".to_owned(), fmt);
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {slowest} | {} | {} → {} | {} | {} / {} |",
            level.sessions,
            level.calls,
            level.errors.len(),
            level.calls as f64 / level.wall.as_secs_f64(),
            Latency::cell(&level.sign),
            Latency::cell(&level.verify),
            Latency::cell(&level.connect),
            mib(level.hub_idle.rss_kib),
            mib(level.hub_after.peak_rss_kib),
            level.hub_after.threads,
            per_call(level.hub_cpu),
            per_call(level.client_cpu),
        );
    }
    Ok(levels.iter().all(|l| l.errors.is_empty()))
}
