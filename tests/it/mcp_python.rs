//! Interop: the official Python MCP SDK (2.x, `mcp` on PyPI) drives the MCP server over real stdio
//! pipes and over streamable HTTP, in both protocol revisions: 2025-11-25 (`Client(mode="legacy")`,
//! the initialize handshake) and 2026-07-28 (`Client(mode="auto")`, `server/discover` and the
//! per-request envelope).
//!
//! A fresh installation (kernel keyutils key store) gets agents A (hybrid) and B (Ed25519); the
//! script `tools/interop/mcp_client.py` connects to both, lists the tools, calls every one of them
//! (A signs and presents, B verifies, A revokes, B sees the revocation), reads every resource and
//! checks that bad arguments are a JSON-RPC -32602 error. Over stdio it spawns `agentseal serve
//! --agent A` and `--agent B` through the SDK's stdio transport; over HTTP both agents share one
//! hub (`agentseal serve --http`), each client sending its own bearer access token. The SDK is
//! installed into `<repo>/.venv` from `tools/interop/requirements.txt` on first use, as
//! `tests/interop_python.rs` does (needs `python3` and PyPI access once).
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const A: &str = "agent://acme.example/alice";
const B: &str = "agent://acme.example/bob";

use crate::common::hub;
use crate::common::python::{python, repo, run, run_ok};

/// The CLI on `dir` with the keyutils key store, ignoring the caller's environment.
fn agentseal(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentseal"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--key-store", "keyutils"])
        .env_remove("AGENTSEAL_DATA_DIR")
        .env_remove("AGENTSEAL_KEY_STORE");
    command
}

/// An installation with agents A (hybrid) and B (Ed25519); its keys and database are destroyed
/// when dropped, also when the test fails.
struct Fleet {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let tmp = tempfile::tempdir().expect("temp dir");
        let fleet = Fleet {
            dir: tmp.path().join("data"),
            _tmp: tmp,
        };
        run_ok(agentseal(&fleet.dir).arg("init"));
        run_ok(agentseal(&fleet.dir).args(["agent", "create", A, "--alg", "hybrid"]));
        run_ok(agentseal(&fleet.dir).args(["agent", "create", B]));
        fleet
    }

    /// Runs `tools/interop/mcp_client.py` with A and `agent_b`; returns its output and stdout.
    /// (The SDK starts the servers with a minimal environment, not this process's: the data
    /// directory and key store reach them as flags.)
    fn python_client(&self, agent_b: &str) -> (Output, String) {
        let output = run(Command::new(python())
            .arg(repo().join("tools/interop/mcp_client.py"))
            .arg("--agentseal")
            .arg(env!("CARGO_BIN_EXE_agentseal"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--agent-a", A, "--agent-b", agent_b]));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        (output, stdout)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let Ok(status) = agentseal(&self.dir).arg("status").output() else {
            return;
        };
        if let Ok(status) = serde_json::from_slice::<Value>(&status.stdout)
            && let Some(ca_id) = status["ca_id"].as_str()
        {
            let _ = agentseal(&self.dir)
                .args(["destroy", "--confirm", ca_id])
                .output();
        }
    }
}

fn passed_lines<'a>(stdout: &'a str, revision: &str) -> Vec<&'a str> {
    let tag = format!("PASS  [{revision}] ");
    stdout.lines().filter(|l| l.starts_with(&tag)).collect()
}

/// The checks the script passes in each revision on every transport.
const EVERY_TRANSPORT: [&str; 18] = [
    "tools/list lists 8 tools",
    "every tool has an output schema",
    "A whoami",
    "B whoami",
    "A sign_action for audience B",
    "A present_certificate with challenge for B",
    "B verify_peer: valid",
    "B check_revocation: not revoked",
    "A revoke own token",
    "B verify_peer after revoke: reasons [\"revoked\"]",
    "B check_revocation after revoke: revoked",
    "resources/list lists the 4 resources",
    "resources/read agentseal://agent/certificate",
    "resources/read agentseal://ca/jwks",
    "resources/read agentseal://ca/crl",
    "resources/read agentseal://agent/audit",
    "sign_action without audience is JSON-RPC error -32602",
    "A still serves after the error",
];

/// Asserts that the script succeeded, ran both revisions to the end with the version negotiated
/// as each one should be, and passed every one of `checks` in each.
fn assert_passed(output: &Output, stdout: &str, checks: &[&str]) {
    assert!(
        output.status.success(),
        "the Python MCP client reported failures ({}):\n{stdout}",
        output.status
    );
    assert!(!stdout.contains("FAIL  "), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    for (revision, negotiated_via) in [
        ("2025-11-25", "protocol=2025-11-25 via=initialize"),
        ("2026-07-28", "protocol=2026-07-28 via=server/discover"),
    ] {
        assert!(
            stdout.contains(&format!("DONE  [{revision}] mode ran to the end")),
            "{revision} did not run to the end:\n{stdout}"
        );
        for agent in ["A", "B"] {
            let line = format!("INFO  [{revision}] agent {agent} negotiated {negotiated_via}");
            assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
        }
        for check in checks {
            assert_pass(stdout, revision, check);
        }
    }
}

fn assert_pass(stdout: &str, revision: &str, check: &str) {
    let tag = format!("PASS  [{revision}] {check}");
    assert!(
        passed_lines(stdout, revision)
            .iter()
            .any(|l| l.starts_with(&tag)),
        "{revision}: no passing {check:?} in:\n{stdout}"
    );
}

#[test]
fn python_mcp_sdk_drives_every_tool_over_stdio_in_both_protocol_revisions() {
    let fleet = Fleet::new();
    let (output, stdout) = fleet.python_client(B);
    assert!(stdout.contains("INFO  transport stdio"), "{stdout}");
    assert_passed(&output, &stdout, &EVERY_TRANSPORT);
}

#[test]
fn python_mcp_sdk_drives_every_tool_over_streamable_http_with_bearer_tokens() {
    let installation = hub::Installation::new(&[(A, "hybrid"), (B, "ed25519")]);
    let hub = installation.serve(&[]);
    // The tokens reach the script through its environment, never its command line.
    let output = run(Command::new(python())
        .arg(repo().join("tools/interop/mcp_client.py"))
        .args(["--hub", &hub.mcp_url(), "--agent-a", A, "--agent-b", B])
        .env(
            "AGENTSEAL_ACCESS_TOKEN_A",
            installation.access_token(&hub, A, &[]),
        )
        .env(
            "AGENTSEAL_ACCESS_TOKEN_B",
            installation.access_token(&hub, B, &[]),
        ));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("hub log:\n{}", hub.log());
    assert!(
        stdout.contains(&format!(
            "INFO  transport streamable HTTP {}",
            hub.mcp_url()
        )),
        "{stdout}"
    );
    let mut checks = EVERY_TRANSPORT.to_vec();
    checks.extend([
        "agent A HTTP: its bearer token on every request, none refused",
        "agent B HTTP: its bearer token on every request, none refused",
        "a request without an access token is refused: 401 with a Bearer challenge",
        "a malformed access token is refused: 401 invalid_token",
    ]);
    assert_passed(&output, &stdout, &checks);
    for (revision, checks) in [
        (
            "2025-11-25",
            [
                "HTTP: one session, from initialize, sent on every request, ended by DELETE",
                "HTTP: the ended session is gone (404)",
            ]
            .as_slice(),
        ),
        (
            "2026-07-28",
            &["HTTP: stateless, no session, MCP-Protocol-Version 2026-07-28 on every request"],
        ),
    ] {
        for agent in ["A", "B"] {
            for check in checks {
                assert_pass(&stdout, revision, &format!("agent {agent} {check}"));
            }
        }
    }
}

#[test]
fn the_python_client_exits_non_zero_when_an_agent_server_cannot_start() {
    let fleet = Fleet::new();
    let (output, stdout) = fleet.python_client("agent://acme.example/nobody");
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for revision in ["2025-11-25", "2026-07-28"] {
        assert!(
            stdout.contains(&format!("FAIL  [{revision}] run: ")),
            "{revision} should fail:\n{stdout}"
        );
        assert!(passed_lines(&stdout, revision).is_empty(), "{stdout}");
    }
}
