//! The MCP server driven by the official MCP Inspector CLI (`@modelcontextprotocol/inspector`,
//! `--cli` mode), a client that shares no code with rmcp: tools/list, a tools/call of every tool
//! with `--tool-arg key=value` arguments, and resources/list. Uses the kernel keyutils key store.
//!
//! The Inspector and the Node 22 it needs are pinned in `tools/inspector/package-lock.json` and
//! installed into `tools/inspector/node_modules` by `bash tools/install-test-deps.sh`. Without
//! them these tests fail (they never skip).
#![cfg(target_os = "linux")]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const AGENT: &str = "agent://acme.example/alice";
const PEER: &str = "agent://acme.example/bob";
const CHALLENGE: &str = "bob-challenge-6f1d2e3c4b5a";
const TOOLS: [&str; 7] = [
    "whoami",
    "sign_action",
    "present_certificate",
    "verify_peer",
    "check_revocation",
    "revoke",
    "new_challenge",
];
/// One Inspector run (Node start-up, server start-up, one request) takes about a second.
const INSPECTOR_TIMEOUT: Duration = Duration::from_secs(120);
const INSTALL_HINT: &str = "run `bash tools/install-test-deps.sh` to install it";

fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--key-store", "keyutils"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The pinned Node 22 and the Inspector's launcher script, or a failure saying how to install them.
fn inspector_paths() -> (PathBuf, PathBuf) {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/inspector/node_modules");
    let node = modules.join(".bin/node");
    let entry = modules.join("@modelcontextprotocol/inspector/clients/launcher/build/index.js");
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| panic!("Node 22 not found at {}: {INSTALL_HINT}", node.display()));
    let minor = version
        .strip_prefix("v22.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|minor| minor.parse::<u32>().ok());
    assert!(
        minor.is_some_and(|minor| minor >= 19),
        "{} is Node {version}; the MCP Inspector needs Node 22.19 or later: {INSTALL_HINT}",
        node.display()
    );
    assert!(
        entry.is_file(),
        "the MCP Inspector is not installed ({} is missing): {INSTALL_HINT}",
        entry.display()
    );
    (node, entry)
}

/// An installation with one Ed25519 agent, destroyed when dropped (also when a test fails).
struct Installation {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    node: PathBuf,
    inspector: PathBuf,
}

impl Installation {
    fn new() -> Installation {
        let (node, inspector) = inspector_paths();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let installation = Installation {
            tmp,
            dir,
            node,
            inspector,
        };
        cli(&installation.dir, &["init"]);
        cli(&installation.dir, &["agent", "create", AGENT]);
        installation
    }

    /// Runs `node <inspector> --cli <agentseal ... serve --agent AGENT> --method <method> <args>
    /// --format json` and returns the `result` of its JSON output, failing on any error.
    fn inspect(&self, method: &str, args: &[&str]) -> Value {
        // The Inspector keeps its catalog, client config and OAuth state under $HOME: keep them
        // in the temporary directory. The server it spawns needs no $HOME (explicit data dir).
        let home = self.tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut command = Command::new(&self.node);
        command
            .arg(&self.inspector)
            .arg("--cli")
            .arg(env!("CARGO_BIN_EXE_agentseal"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--key-store", "keyutils", "serve", "--agent", AGENT])
            .args(["--method", method])
            .args(args)
            .args(["--format", "json"])
            .env("HOME", &home)
            .env("MCP_CATALOG_PATH", home.join("mcp.json"))
            .env("MCP_CLIENT_CONFIG_PATH", home.join("client.json"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("inspector --cli ... --method {method} {}", shorten(args));
        let started = Instant::now();
        let (status, stdout, stderr) = run_with_timeout(command, INSPECTOR_TIMEOUT, &shown);
        eprintln!("{shown}: {:.2?}", started.elapsed());
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

    /// Calls `tool` with `--tool-arg key=value` pairs and returns its structured content, after
    /// checking that the call succeeded and that its text content holds the same JSON.
    fn call(&self, tool: &str, pairs: &[(&str, &str)]) -> Value {
        let mut args = vec!["--tool-name".to_owned(), tool.to_owned()];
        if !pairs.is_empty() {
            args.push("--tool-arg".to_owned());
            args.extend(pairs.iter().map(|(key, value)| format!("{key}={value}")));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = self.inspect("tools/call", &args);
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
}

impl Drop for Installation {
    fn drop(&mut self) {
        let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--key-store", "keyutils", "status"])
            .output();
        if let Ok(out) = out
            && let Ok(status) = serde_json::from_slice::<Value>(&out.stdout)
        {
            let _ = Command::new(env!("CARGO_BIN_EXE_agentseal"))
                .arg("--data-dir")
                .arg(&self.dir)
                .args(["--key-store", "keyutils", "destroy", "--confirm"])
                .arg(status["ca_id"].as_str().unwrap_or(""))
                .output();
        }
    }
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
) -> (std::process::ExitStatus, String, String) {
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

#[test]
fn the_inspector_lists_the_seven_tools_and_the_three_resources() {
    let installation = Installation::new();

    let listed = installation.inspect("tools/list", &[]);
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

    let resources = installation.inspect("resources/list", &[]);
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

    let me = installation.call("whoami", &[]);
    assert_eq!(me["agent_id"], AGENT);
    let challenge = installation.call("new_challenge", &[]);
    assert!(
        challenge["challenge"]
            .as_str()
            .is_some_and(|c| c.len() >= 16)
    );
    assert_eq!(me["algorithms"], json!(["ed25519"]));
    let serial = me["certificate_serial"].as_str().unwrap().to_owned();

    // `--tool-arg` parses a value as JSON when it can, so `arguments` arrives as an object.
    let arguments = r#"{"service":"web","version":"1.4.2"}"#;
    let signed = installation.call(
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

    let presented = installation.call(
        "present_certificate",
        &[("challenge", CHALLENGE), ("audience", PEER)],
    );
    assert!(
        presented["certificate"]
            .as_str()
            .is_some_and(|c| c.len() > 100)
    );
    assert!(presented["proof"].as_str().is_some(), "{presented}");

    let verdict = installation.call(
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
    let tampered = installation.call(
        "verify_peer",
        &[
            ("token", &token),
            ("expected_action", "deploy"),
            ("arguments", r#"{"service":"web","version":"6.6.6"}"#),
        ],
    );
    assert_eq!(tampered["reasons"], json!(["args_mismatch"]), "{tampered}");

    let status = installation.call("check_revocation", &[("token_id", &token_id)]);
    assert_eq!(
        (&status["kind"], &status["id"], &status["revoked"]),
        (&json!("token"), &json!(token_id), &json!(false)),
        "{status}"
    );

    let revoked = installation.call(
        "revoke",
        &[("token", &token), ("reason", "leaked in a log")],
    );
    assert_eq!(revoked["kind"], "token");
    assert_eq!(revoked["ids"], json!([token_id]));

    let status = installation.call("check_revocation", &[("token_id", &token_id)]);
    assert_eq!(status["revoked"], true, "{status}");
    assert_eq!(status["reason"], "leaked in a log");
}
