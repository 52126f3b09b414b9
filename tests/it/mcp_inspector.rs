//! The MCP server driven by the official MCP Inspector CLI (`@modelcontextprotocol/inspector`,
//! `--cli` mode), a client that shares no code with rmcp: tools/list, a tools/call of every tool
//! with `--tool-arg key=value` arguments, and resources/list, over stdio; and over streamable
//! HTTP (`--transport http`, `--header "Authorization: Bearer ..."`) against a hub serving two
//! agents, in both protocol eras, with `--tool-args-json` arguments. Uses the kernel keyutils key
//! store.
//!
//! The Inspector and the Node 22 it needs are pinned in `tools/inspector/package-lock.json` and
//! installed into `tools/inspector/node_modules` by `bash tools/install-test-deps.sh`. Without
//! them these tests fail (they never skip).
#![cfg(target_os = "linux")]

use crate::common;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::hub::{self, cli, cli_output};
use serde_json::{Value, json};

const AGENT: &str = "agent://acme.example/alice";
const PEER: &str = "agent://acme.example/bob";
const CHALLENGE: &str = "bob-challenge-6f1d2e3c4b5a";
const TOOLS: [&str; 8] = [
    "whoami",
    "sign_action",
    "present_certificate",
    "verify_peer",
    "check_revocation",
    "revoke",
    "new_challenge",
    "delegate",
];
/// The Inspector's `--protocol-era` values: 2025-11-25 (initialize, sessions) and 2026-07-28
/// (`server/discover`, stateless).
const ERAS: [&str; 2] = ["legacy", "modern"];
/// One Inspector run (Node start-up, server start-up, one request) takes about a second.
const INSPECTOR_TIMEOUT: Duration = Duration::from_secs(120);
use crate::common::node::INSTALL_HINT;

/// The pinned Node 22 and the Inspector's launcher script.
fn inspector_paths() -> (PathBuf, PathBuf) {
    common::node::tool(
        "inspector",
        "@modelcontextprotocol/inspector/clients/launcher/build/index.js",
        "the MCP Inspector",
    )
}

/// The Inspector CLI aimed at one server.
struct Inspector {
    node: PathBuf,
    entry: PathBuf,
    /// The Inspector keeps its catalog, client config and OAuth state under $HOME: this
    /// temporary directory, not the user's.
    home: tempfile::TempDir,
    /// The server: its command line (stdio), or its URL and how to reach it (HTTP).
    target: Vec<OsString>,
}

impl Inspector {
    fn new(target: Vec<OsString>) -> Inspector {
        let (node, entry) = inspector_paths();
        Inspector {
            node,
            entry,
            home: tempfile::tempdir().unwrap(),
            target,
        }
    }

    /// `agentseal ... serve --agent AGENT` on stdio. The server needs no $HOME (explicit data
    /// dir).
    fn stdio(dir: &Path) -> Inspector {
        let mut target: Vec<OsString> = vec![env!("CARGO_BIN_EXE_agentseal").into()];
        target.extend(["--data-dir".into(), dir.into()]);
        target.extend(["--key-store", "keyutils", "serve", "--agent", AGENT].map(OsString::from));
        Inspector::new(target)
    }

    /// The hub's MCP endpoint `url` over streamable HTTP in protocol `era` (legacy or modern),
    /// sending `Authorization: Bearer <token>` if there is one. Never an interactive OAuth login:
    /// a missing or refused token fails the run.
    fn http(url: &str, token: Option<&str>, era: &str) -> Inspector {
        let mut target = vec![
            url,
            "--transport",
            "http",
            "--protocol-era",
            era,
            "--stored-auth-only",
        ];
        let header = token.map(|token| format!("Authorization: Bearer {token}"));
        if let Some(header) = &header {
            target.extend(["--header", header]);
        }
        Inspector::new(target.into_iter().map(OsString::from).collect())
    }

    /// Runs `node <inspector> --cli <target> --method <method> <args> --format json`.
    fn run(&self, method: &str, args: &[&str]) -> (ExitStatus, String, String) {
        let home = self.home.path();
        let mut command = Command::new(&self.node);
        command
            .arg(&self.entry)
            .arg("--cli")
            .args(&self.target)
            .args(["--method", method])
            .args(args)
            .args(["--format", "json"])
            .env("HOME", home)
            .env("MCP_CATALOG_PATH", home.join("mcp.json"))
            .env("MCP_CLIENT_CONFIG_PATH", home.join("client.json"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = shown(method, args);
        let started = Instant::now();
        let output = run_with_timeout(command, INSPECTOR_TIMEOUT, &shown);
        eprintln!("{shown}: {:.2?}", started.elapsed());
        output
    }

    /// Runs `method` and returns the `result` of the Inspector's JSON output, failing on any
    /// error.
    fn inspect(&self, method: &str, args: &[&str]) -> Value {
        let (status, stdout, stderr) = self.run(method, args);
        let shown = shown(method, args);
        assert!(
            status.success(),
            "{shown} exited with {status}\nstdout: {stdout}\nstderr: {stderr}"
        );
        let output: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{shown}: stdout is not JSON ({e}): {stdout}\n{stderr}"));
        assert!(
            output.get("error").is_none(),
            "{shown} failed: {output}\n{stderr}"
        );
        output
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{shown}: no result in {output}"))
    }

    /// Calls `tool` with `--tool-arg key=value` pairs and returns its structured content.
    fn call(&self, tool: &str, pairs: &[(&str, &str)]) -> Value {
        let mut args = vec!["--tool-name".to_owned(), tool.to_owned()];
        if !pairs.is_empty() {
            args.push("--tool-arg".to_owned());
            args.extend(pairs.iter().map(|(key, value)| format!("{key}={value}")));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        structured(tool, self.inspect("tools/call", &args))
    }

    /// Calls `tool` with `arguments` passed verbatim (`--tool-args-json`: no key=value coercion,
    /// so a hybrid agent's JSON-serialized token stays a string) and returns its structured
    /// content.
    fn call_json(&self, tool: &str, arguments: Value) -> Value {
        let arguments = arguments.to_string();
        let args = ["--tool-name", tool, "--tool-args-json", &arguments];
        structured(tool, self.inspect("tools/call", &args))
    }
}

/// The structured content of a `tools/call` result, after checking that the call succeeded and
/// that its text content holds the same JSON.
fn structured(tool: &str, result: Value) -> Value {
    assert_eq!(result["isError"], false, "{tool} failed: {result}");
    let structured = result["structuredContent"].clone();
    assert!(
        structured.is_object(),
        "{tool}: no structured content in {result}"
    );
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{tool}: no text content in {result}"));
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        structured,
        "{tool}: text and structured content differ"
    );
    structured
}

/// An installation with one Ed25519 agent served on stdio, destroyed when dropped (also when a
/// test fails).
struct Installation {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    inspector: Inspector,
}

impl Installation {
    fn new() -> Installation {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let inspector = Inspector::stdio(&dir);
        cli(&dir, &["init"]);
        cli(&dir, &["agent", "create", AGENT]);
        Installation {
            _tmp: tmp,
            dir,
            inspector,
        }
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        if let Ok(status) =
            serde_json::from_slice::<Value>(&cli_output(&self.dir, &["status"]).stdout)
        {
            let ca_id = status["ca_id"].as_str().unwrap_or("");
            let _ = cli_output(&self.dir, &["destroy", "--confirm", ca_id]);
        }
    }
}

/// An Inspector command line for messages: without the target (which may hold an access token),
/// long arguments cut short.
fn shown(method: &str, args: &[&str]) -> String {
    format!("inspector --cli ... --method {method} {}", shorten(args))
}

/// The arguments for messages, long values (tokens) cut short.
fn shorten(args: &[&str]) -> String {
    let cut = |arg: &&str| match arg.char_indices().nth(60) {
        Some((end, _)) => format!("{}...", &arg[..end]),
        None => (*arg).to_owned(),
    };
    args.iter().map(cut).collect::<Vec<_>>().join(" ")
}

/// Runs `command` to completion, killing it (and failing) after `timeout`.
fn run_with_timeout(
    mut command: Command,
    timeout: Duration,
    shown: &str,
) -> (ExitStatus, String, String) {
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: cannot start Node: {e}: {INSTALL_HINT}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shown}: no answer within {timeout:?}\nstderr: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

/// Checks a `tools/list` result: the eight tools, each described, with object input and output
/// schemas, none open-world.
fn assert_lists_the_eight_tools(listed: &Value) {
    let tools = listed["tools"].as_array().expect("a tools array");
    let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort_unstable();
    let mut expected = TOOLS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "{listed}");
    for tool in tools {
        let name = &tool["name"];
        assert!(
            tool["description"].as_str().is_some_and(|d| d.len() > 60),
            "{name} needs a description"
        );
        assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
        assert_eq!(tool["outputSchema"]["type"], "object", "{name}");
        assert_eq!(tool["annotations"]["openWorldHint"], false, "{name}");
    }
}

#[test]
fn the_inspector_lists_the_eight_tools_and_the_four_resources() {
    let installation = Installation::new();
    let inspector = &installation.inspector;

    assert_lists_the_eight_tools(&inspector.inspect("tools/list", &[]));

    let resources = inspector.inspect("resources/list", &[]);
    let mut uris: Vec<&str> = resources["resources"]
        .as_array()
        .expect("a resources array")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    uris.sort_unstable();
    assert_eq!(
        uris,
        [
            "agentseal://agent/audit",
            "agentseal://agent/certificate",
            "agentseal://ca/crl",
            "agentseal://ca/jwks"
        ],
        "{resources}"
    );
}

#[test]
fn the_inspector_calls_every_tool_with_tool_args() {
    let installation = Installation::new();
    let inspector = &installation.inspector;

    let me = inspector.call("whoami", &[]);
    assert_eq!(me["agent_id"], AGENT);
    let challenge = inspector.call("new_challenge", &[]);
    assert!(
        challenge["challenge"]
            .as_str()
            .is_some_and(|c| c.len() >= 16)
    );
    assert_eq!(me["algorithms"], json!(["ed25519"]));
    let serial = me["certificate_serial"].as_str().unwrap().to_owned();

    // `--tool-arg` parses a value as JSON when it can, so `arguments` arrives as an object.
    let arguments = r#"{"service":"web","version":"1.4.2"}"#;
    let signed = inspector.call(
        "sign_action",
        &[
            ("action", "deploy"),
            // verify_peer accepts only tokens addressed to the verifying agent itself.
            ("audience", AGENT),
            ("arguments", arguments),
        ],
    );
    let token = signed["token"].as_str().expect("a token").to_owned();
    let token_id = signed["token_id"].as_str().expect("a token id").to_owned();
    assert!(signed["expires_at"].as_i64().is_some(), "{signed}");

    let presented = inspector.call(
        "present_certificate",
        &[("challenge", CHALLENGE), ("audience", PEER)],
    );
    assert!(
        presented["certificate"]
            .as_str()
            .is_some_and(|c| c.len() > 100)
    );
    assert!(presented["proof"].as_str().is_some(), "{presented}");

    let verdict = inspector.call(
        "verify_peer",
        &[
            ("token", &token),
            ("expected_action", "deploy"),
            ("arguments", arguments),
        ],
    );
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["reasons"], json!([]));
    assert_eq!(verdict["agent_id"], AGENT);
    assert_eq!(verdict["token"]["jti"], token_id.as_str());
    assert_eq!(verdict["certificate"]["jti"], serial.as_str());
    // The arguments really arrived as an object: other ones do not match the token's digest.
    let tampered = inspector.call(
        "verify_peer",
        &[
            ("token", &token),
            ("expected_action", "deploy"),
            ("arguments", r#"{"service":"web","version":"6.6.6"}"#),
        ],
    );
    assert_eq!(tampered["reasons"], json!(["args_mismatch"]), "{tampered}");

    let status = inspector.call("check_revocation", &[("token_id", &token_id)]);
    assert_eq!(
        (&status["kind"], &status["id"], &status["revoked"]),
        (&json!("token"), &json!(token_id), &json!(false)),
        "{status}"
    );

    let revoked = inspector.call(
        "revoke",
        &[("token", &token), ("reason", "leaked in a log")],
    );
    assert_eq!(revoked["kind"], "token");
    assert_eq!(revoked["ids"], json!([token_id]));

    let status = inspector.call("check_revocation", &[("token_id", &token_id)]);
    assert_eq!(status["revoked"], true, "{status}");
    assert_eq!(status["reason"], "leaked in a log");
}

#[test]
fn the_inspector_lists_the_tools_over_http_only_with_a_bearer_token_for_the_hub() {
    let installation = hub::Installation::new(&[(AGENT, "ed25519")]);
    let hub = installation.serve(&[]);
    let token = installation.access_token(&hub, AGENT, &[]);
    // A valid token, but for another hub: its audience binds it to that one.
    let elsewhere = installation.cli(&[
        "access-token",
        "issue",
        "--agent",
        AGENT,
        "--audience",
        "https://hub.elsewhere.example/mcp",
    ]);
    for era in ERAS {
        let listed = Inspector::http(&hub.mcp_url(), Some(&token), era).inspect("tools/list", &[]);
        assert_lists_the_eight_tools(&listed);

        for (without, token) in [
            ("no token", None),
            ("another hub's token", Some(&elsewhere)),
        ] {
            let inspector = Inspector::http(&hub.mcp_url(), token.map(String::as_str), era);
            let (status, stdout, stderr) = inspector.run("tools/list", &[]);
            let shown = format!("{era}, {without}");
            assert_eq!(
                status.code(),
                Some(3),
                "{shown}: the Inspector exits 3 when authorization is required\nstdout: {stdout}\nstderr: {stderr}"
            );
            assert!(!stdout.contains("\"result\""), "{shown}: {stdout}");
            let error = stderr
                .lines()
                .find_map(|line| serde_json::from_str::<Value>(line).ok())
                .unwrap_or_else(|| panic!("{shown}: no JSON error on stderr: {stderr}"));
            assert_eq!(error["error"]["code"], "auth_required", "{shown}: {error}");
        }
    }
}

#[test]
fn the_inspector_calls_every_tool_over_http_as_the_agent_of_its_bearer_token() {
    let installation = hub::Installation::new(&[(AGENT, "hybrid"), (PEER, "ed25519")]);
    let hub = installation.serve(&[]);
    let token_a = installation.access_token(&hub, AGENT, &[]);
    let token_b = installation.access_token(&hub, PEER, &[]);

    for era in ERAS {
        // One endpoint; the bearer token decides which agent each call acts as.
        let alice = Inspector::http(&hub.mcp_url(), Some(&token_a), era);
        let bob = Inspector::http(&hub.mcp_url(), Some(&token_b), era);

        let me = alice.call_json("whoami", json!({}));
        assert_eq!(me["agent_id"], AGENT, "{era}: {me}");
        assert_eq!(me["algorithms"], json!(["ed25519", "ml-dsa-65"]), "{era}");
        let serial = me["certificate_serial"].as_str().unwrap().to_owned();
        let peer = bob.call_json("whoami", json!({}));
        assert_eq!(peer["agent_id"], PEER, "{era}: {peer}");
        assert_eq!(peer["algorithms"], json!(["ed25519"]), "{era}");

        // Alice asks Bob to deploy: a token for Bob, bound to these arguments.
        let arguments = json!({"service": "web", "version": "1.4.2", "era": era});
        let signed = alice.call_json(
            "sign_action",
            json!({"action": "deploy", "audience": PEER, "arguments": arguments}),
        );
        let token = signed["token"].as_str().expect("a token").to_owned();
        let token_id = signed["token_id"].as_str().expect("a token id").to_owned();
        assert!(
            token.starts_with('{'),
            "{era}: a hybrid agent's token is a JWS JSON serialization: {token}"
        );

        // Bob challenges Alice; she proves she holds her certified keys.
        let challenge = bob.call_json("new_challenge", json!({}));
        let challenge = challenge["challenge"]
            .as_str()
            .expect("a challenge")
            .to_owned();
        let presented = alice.call_json(
            "present_certificate",
            json!({"challenge": challenge, "audience": PEER}),
        );
        assert!(presented["proof"].is_string(), "{era}: {presented}");

        let verdict = bob.call_json(
            "verify_peer",
            json!({
                "token": token,
                "certificate": presented["certificate"],
                "proof": presented["proof"],
                "challenge": challenge,
                "expected_action": "deploy",
                "arguments": arguments,
            }),
        );
        assert_eq!(verdict["valid"], true, "{era}: {verdict}");
        assert_eq!(verdict["reasons"], json!([]), "{era}");
        assert_eq!(verdict["agent_id"], AGENT, "{era}");
        assert_eq!(verdict["proof_verified"], true, "{era}");
        assert_eq!(verdict["token"]["jti"], token_id.as_str(), "{era}");
        assert_eq!(verdict["certificate"]["jti"], serial.as_str(), "{era}");

        let status = bob.call_json("check_revocation", json!({"token_id": token_id}));
        assert_eq!(
            (&status["kind"], &status["revoked"]),
            (&json!("token"), &json!(false)),
            "{era}: {status}"
        );

        let reason = format!("inspector over HTTP, {era}");
        let revoked = alice.call_json("revoke", json!({"token": token, "reason": reason}));
        assert_eq!(revoked["kind"], "token", "{era}: {revoked}");
        assert_eq!(revoked["ids"], json!([token_id]), "{era}");

        let status = bob.call_json("check_revocation", json!({"token": token}));
        assert_eq!(status["revoked"], true, "{era}: {status}");
        assert_eq!(status["reason"], reason.as_str(), "{era}");
    }
}
