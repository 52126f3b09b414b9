//! The HTTP hub (`agentseal serve --http`) against the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`), a client that shares no code with rmcp. Each test is one
//! scenario in one suite invocation, against its own hub started with `--insecure-no-auth` (the
//! suite cannot send an access token). A scenario passes when none of its checks is a FAILURE or
//! a WARNING, apart from the few listed here that need the suite's own fixture tools; a scenario
//! the suite skips is a failure. `docs/conformance.md` says which scenarios run, and why the
//! others cannot.
//!
//! Two release lines are pinned in `tools/conformance/package-lock.json` under the aliases
//! `conformance-stable` (0.1.16: the 2025-11-25 wire) and `conformance-next` (0.2.0-alpha.12: the
//! 2025-11-25 and 2026-07-28 wires), with the Node 22 that runs them; `bash
//! tools/install-test-deps.sh` installs them into `tools/conformance/node_modules`. Without them
//! these tests fail (they never skip).
#![cfg(target_os = "linux")]

use crate::common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::hub::Installation;

const AGENT: &str = "agent://acme.example/alice";
/// 0.1.16: drives the 2025-11-25 wire with the official TypeScript SDK client.
const STABLE: &str = "conformance-stable";
/// 0.2.0-alpha.12: the 2025-11-25 wire, and the 2026-07-28 wire with raw HTTP requests.
const NEXT: &str = "conformance-next";
/// One scenario takes about a second, most of it Node start-up; 0.2.0 gives up on a scenario
/// after 30 s by itself.
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);
use crate::common::node::INSTALL_HINT;

/// A check that cannot pass against agentseal: its id, the status it gets, and how its message
/// starts (SKIPPED checks have none).
type Known = (&'static str, &'static str, &'static str);

/// `caching` also asks prompts/list for caching hints; agentseal has no prompts capability.
const CACHING_WITHOUT_PROMPTS: &[Known] = &[(
    "sep-2549-prompts-list-caching-hints",
    "FAILURE",
    "prompts/list returned JSON-RPC error -32601",
)];

/// `server-stateless` calls the suite's diagnostic tools, which agentseal does not have, and
/// opens `subscriptions/listen`, which agentseal does not offer (nothing it serves changes).
const STATELESS_WITHOUT_FIXTURES: &[Known] = &[
    (
        "sep-2575-server-rejects-undeclared-capability",
        "FAILURE",
        "Not testable: server does not list the diagnostic tool 'test_missing_capability'",
    ),
    (
        "sep-2575-missing-capability-http-400",
        "FAILURE",
        "Not testable: server does not list the diagnostic tool 'test_missing_capability'",
    ),
    (
        "sep-2575-http-server-no-independent-requests-on-stream",
        "FAILURE",
        "Not testable: server does not list the diagnostic tool 'test_streaming_elicitation'",
    ),
    (
        "sep-2575-server-no-log-without-loglevel",
        "FAILURE",
        "Not testable: server does not list the diagnostic tool 'test_logging_tool'",
    ),
    ("sep-2575-server-sends-subscription-ack", "SKIPPED", ""),
    ("sep-2575-server-tags-subscription-id", "SKIPPED", ""),
    ("sep-2575-server-honors-notification-filter", "SKIPPED", ""),
    (
        "sep-2575-server-sends-prompts-list-changed-on-subscription",
        "SKIPPED",
        "",
    ),
    (
        "sep-2575-server-sends-tools-list-changed-on-subscription",
        "SKIPPED",
        "",
    ),
];

/// The pinned Node 22 and the entry script of the `suite` alias. (Both aliases ship a bin named
/// `conformance`, so `.bin/conformance` is either.)
fn suite_paths(suite: &str) -> (PathBuf, PathBuf) {
    common::node::tool(
        "conformance",
        &format!("{suite}/dist/index.js"),
        "the conformance suite",
    )
}

/// Runs `scenario` of `suite` at spec version `wire` against a fresh hub and fails, with the
/// suite's output and the hub's log, unless every check passed or is one of `known`.
fn passes(suite: &str, wire: &str, scenario: &str, known: &[Known]) {
    let (node, entry) = suite_paths(suite);
    let installation = Installation::new(&[(AGENT, "ed25519")]);
    let hub = installation.serve(&["--insecure-no-auth", "--agent", AGENT]);
    let work = tempfile::tempdir().unwrap();
    let results = work.path().join("results");
    let mut command = Command::new(node);
    command
        .arg(entry)
        .arg("server")
        .args(["--url", &hub.mcp_url(), "--scenario", scenario])
        .args(["--spec-version", wire])
        .arg("-o")
        .arg(&results)
        .current_dir(work.path());
    let shown = format!("{suite} server --scenario {scenario} --spec-version {wire}");
    let started = Instant::now();
    let (status, output) = run(command, &work.path().join("suite.log"), &shown);
    eprintln!("{shown}: {:.2?}", started.elapsed());

    let mut problems = Vec::new();
    if output.contains("SKIPPED: scenario") {
        problems.push("the suite skipped the scenario".to_owned());
    }
    let checks = read_checks(&results, scenario);
    if checks.is_empty() {
        problems.push("the suite recorded no checks".to_owned());
    }
    let mut failures = 0;
    for check in &checks {
        let field = |name: &str| check[name].as_str().unwrap_or_default();
        let (id, status) = (field("id"), field("status"));
        failures += usize::from(status == "FAILURE");
        if !matches!(status, "FAILURE" | "WARNING" | "SKIPPED") {
            continue;
        }
        let message = field("errorMessage");
        let expected = known.iter().any(|&(known_id, known_status, start)| {
            known_id == id && known_status == status && message.starts_with(start)
        });
        if !expected {
            problems.push(format!("{status} {id}: {message}"));
        }
    }
    if !status.success() && failures == 0 {
        problems.push(format!(
            "the suite exited with {status} without a failed check"
        ));
    }
    // The suite's output ends with its own summary; the frame keeps it from passing for ours.
    assert!(
        problems.is_empty(),
        "{shown}:\n  {}\n--- suite output ---\n{output}\n--- hub log ---\n{}--- end ---",
        problems.join("\n  "),
        hub.log()
    );
}

/// Runs the suite with its output (stdout and stderr) going to `log`; returns how it exited and
/// that output without colour codes. Fails after `SUITE_TIMEOUT`.
fn run(mut command: Command, log: &Path, shown: &str) -> (ExitStatus, String) {
    let file = File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: cannot start Node: {e}: {INSTALL_HINT}"));
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = without_colour(&std::fs::read_to_string(log).unwrap_or_default());
    let status = status.unwrap_or_else(|| {
        panic!(
            "{shown}: no result within {SUITE_TIMEOUT:?}\n--- suite output ---\n{output}--- end ---"
        )
    });
    (status, output)
}

/// The checks the suite wrote to `<results>/server-<scenario>-<time>/checks.json` (none when it
/// wrote no such file).
fn read_checks(results: &Path, scenario: &str) -> Vec<Value> {
    let prefix = format!("server-{scenario}-");
    let Ok(entries) = std::fs::read_dir(results) else {
        return Vec::new();
    };
    let files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|dir| {
            dir.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix))
        })
        .map(|dir| dir.join("checks.json"))
        .filter(|file| file.is_file())
        .collect();
    assert!(
        files.len() <= 1,
        "more than one result for {scenario}: {files:?}"
    );
    files
        .first()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not a JSON array of checks ({e})", file.display()))
        })
        .unwrap_or_default()
}

/// `text` without ANSI colour codes (`ESC [ ... m`), which the suite writes even to a file.
fn without_colour(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.clone().next() == Some('[') {
            for c in chars.by_ref().skip(1) {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// One test per scenario, each against its own hub: `name => "scenario";`, or
/// `name => "scenario" but KNOWN;` for a scenario with checks that cannot pass against agentseal.
macro_rules! scenarios {
    (
        $suite:expr, $wire:expr;
        $($(#[$doc:meta])* $name:ident => $scenario:literal $(but $known:expr)?;)*
    ) => {
        $(
            $(#[$doc])*
            #[test]
            fn $name() {
                super::passes($suite, $wire, $scenario, scenarios!(@known $($known)?));
            }
        )*
    };
    (@known) => {
        &[]
    };
    (@known $known:expr) => {
        $known
    };
}

/// Suite 0.1.16 on the 2025-11-25 wire: initialize, then requests in a session, through the
/// TypeScript SDK's streamable HTTP client.
mod stable_0_1_16_wire_2025_11_25 {
    scenarios! { super::STABLE, "2025-11-25";
        server_initialize => "server-initialize";
        ping => "ping";
        tools_list => "tools-list";
        resources_list => "resources-list";
        dns_rebinding_protection => "dns-rebinding-protection";
        /// Three concurrent POSTs in one session, sent with `MCP-Protocol-Version: 2025-03-26`.
        server_sse_multiple_streams => "server-sse-multiple-streams";
    }
}

/// Suite 0.2.0-alpha.12 on the 2025-11-25 wire: as 0.1.16, plus a raw initialize, `Mcp-Method`
/// headers and a check of the wire schema of every message the hub sends.
mod next_0_2_0_wire_2025_11_25 {
    scenarios! { super::NEXT, "2025-11-25";
        server_initialize => "server-initialize";
        /// initialize, initialized, DELETE of the session, then a 404 for the deleted session.
        server_session_lifecycle => "server-session-lifecycle";
        ping => "ping";
        tools_list => "tools-list";
        resources_list => "resources-list";
        dns_rebinding_protection => "dns-rebinding-protection";
        server_sse_multiple_streams => "server-sse-multiple-streams";
    }
}

/// Suite 0.2.0-alpha.12 on the 2026-07-28 wire: stateless raw POSTs with the `_meta` envelope
/// and the `Mcp-Method` / `Mcp-Name` headers, no initialize.
mod next_0_2_0_wire_2026_07_28 {
    scenarios! { super::NEXT, "2026-07-28";
        tools_list => "tools-list";
        resources_list => "resources-list";
        dns_rebinding_protection => "dns-rebinding-protection";
        /// Mismatched, missing and miscased `Mcp-Method` / `Mcp-Name` headers are rejected with
        /// 400 and -32020; a tools/call of the first listed tool (whoami) with `{}` is served.
        http_header_validation => "http-header-validation";
        server_sse_multiple_streams => "server-sse-multiple-streams";
        input_required_result_unsupported_methods => "input-required-result-unsupported-methods";
        /// resources/read of an unknown URI: -32602 with the URI in `error.data`.
        sep_2164_resource_not_found => "sep-2164-resource-not-found";
        /// `ttlMs` and `cacheScope` on tools/list, resources/list, resources/templates/list and
        /// resources/read.
        caching => "caching" but super::CACHING_WITHOUT_PROMPTS;
        /// server/discover, `_meta` validation, unsupported versions, header/`_meta` mismatch,
        /// 404 for the methods removed in 2026-07-28, request ids echoed in errors.
        server_stateless => "server-stateless" but super::STATELESS_WITHOUT_FIXTURES;
    }
}
