//! Two agents, end to end, from one command:
//!
//!     cargo run --example two_agents
//!
//! Creates a CA and two agents in a temporary installation, starts each agent's MCP server
//! over stdio, lets Alice sign an action token and prove possession of her keys, lets Bob verify
//! both offline, has the operator revoke Alice's certificate, and shows Bob rejecting her. Every
//! step is printed. The installation (keys included) is destroyed at the end.

use std::path::{Path, PathBuf};
use std::process::Command;

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const ALICE: &str = "agent://demo.example/alice";
const BOB: &str = "agent://demo.example/bob";

/// The `agentseal` binary next to this example, built on demand.
fn agentseal() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile.join(format!("agentseal{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        println!("building agentseal ...");
        let mut build = Command::new("cargo");
        build.args(["build", "--bin", "agentseal"]);
        if profile.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().expect("cargo").success(),
            "cargo build failed"
        );
    }
    bin
}

fn operator(bin: &Path, dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("agentseal");
    if !out.status.success() {
        panic!(
            "agentseal {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

async fn connect(bin: &Path, dir: &Path, agent: &str) -> RunningService<RoleClient, ()> {
    let command = tokio::process::Command::new(bin).configure(|c| {
        c.arg("--data-dir")
            .arg(dir)
            .args(["serve", "--agent", agent]);
    });
    ().serve(TokioChildProcess::new(command).expect("spawn"))
        .await
        .expect("initialize")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &'static str, args: Value) -> Value {
    let Value::Object(args) = args else {
        unreachable!()
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    result.structured_content.unwrap_or(Value::Null)
}

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

fn short(token: &Value) -> String {
    let t = token.as_str().unwrap_or("");
    format!("{}… ({} bytes)", &t[..t.len().min(32)], t.len())
}

#[tokio::main]
async fn main() {
    let bin = agentseal();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("demo");

    step(
        1,
        "The operator creates a CA (Ed25519 + ML-DSA-65) and two agents.",
    );
    let ca = operator(&bin, &dir, &["init"]);
    println!(
        "   CA {} — keys in the {} key store",
        ca["ca_id"], ca["key_store"]
    );
    operator(
        &bin,
        &dir,
        &[
            "agent",
            "create",
            ALICE,
            "--alg",
            "hybrid",
            "--meta",
            "role=deployer",
        ],
    );
    operator(&bin, &dir, &["agent", "create", BOB]);
    println!("   {ALICE} (hybrid keys) and {BOB} (Ed25519) certified");

    // Run the agents' part in its own task, so the installation is destroyed even if it fails.
    let outcome = tokio::spawn(run(bin.clone(), dir.clone())).await;

    println!("\nCleaning up: destroying the demo installation and its keys.");
    operator(
        &bin,
        &dir,
        &["destroy", "--confirm", ca["ca_id"].as_str().unwrap_or("")],
    );
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn run(bin: PathBuf, dir: PathBuf) {
    let (bin, dir) = (bin.as_path(), dir.as_path());
    step(
        2,
        "Each agent's MCP server starts on stdio (as Claude Desktop or Cursor would start it).",
    );
    let alice = connect(bin, dir, ALICE).await;
    let bob = connect(bin, dir, BOB).await;
    let me = call(&alice, "whoami", json!({})).await;
    println!(
        "   Alice's whoami: {} certified by {}, algorithms {}",
        me["agent_id"], me["ca_id"], me["algorithms"]
    );

    step(
        3,
        "Alice signs a token authorizing exactly one action for Bob.",
    );
    let args = json!({"service": "web", "version": "1.4.2"});
    let signed = call(
        &alice,
        "sign_action",
        json!({"action": "deploy", "audience": BOB, "arguments": args}),
    )
    .await;
    println!(
        "   token {}, id {}, expires at {}",
        short(&signed["token"]),
        signed["token_id"],
        signed["expires_at"]
    );

    step(
        4,
        "Bob issues a fresh challenge; Alice presents her certificate with a proof over it.",
    );
    let challenge = call(&bob, "new_challenge", json!({})).await["challenge"].clone();
    println!("   Bob's single-use challenge: {challenge}");
    let presented = call(
        &alice,
        "present_certificate",
        json!({"challenge": challenge, "audience": BOB}),
    )
    .await;
    println!(
        "   certificate {}, proof {}",
        short(&presented["certificate"]),
        short(&presented["proof"])
    );

    step(
        5,
        "Bob verifies everything offline (CA keys + revocation data; no call to Alice).",
    );
    let evidence = json!({
        "token": signed["token"], "certificate": presented["certificate"], "proof": presented["proof"],
        "challenge": challenge, "expected_action": "deploy", "arguments": args,
    });
    let verdict = call(&bob, "verify_peer", evidence.clone()).await;
    println!(
        "   valid: {}, agent {}, proof verified: {}",
        verdict["valid"], verdict["agent_id"], verdict["proof_verified"]
    );
    assert_eq!(verdict["valid"], true);

    step(
        6,
        "Someone replays Alice's proof, then alters the arguments: Bob refuses both.",
    );
    let verdict = call(&bob, "verify_peer", evidence.clone()).await;
    println!(
        "   replayed proof — valid: {}, reasons {}",
        verdict["valid"], verdict["reasons"]
    );
    let token_only = json!({
        "token": signed["token"], "certificate": presented["certificate"],
        "expected_action": "deploy", "arguments": args,
    });
    let mut altered = token_only.clone();
    altered["arguments"] = json!({"service": "web", "version": "6.6.6"});
    let verdict = call(&bob, "verify_peer", altered).await;
    println!(
        "   altered arguments — valid: {}, reasons {}",
        verdict["valid"], verdict["reasons"]
    );

    step(
        7,
        "The operator revokes Alice's certificate (laptop stolen).",
    );
    operator(
        bin,
        dir,
        &["revoke", "cert", ALICE, "--reason", "laptop stolen"],
    );
    println!("   revoked; durable before the command returned");

    step(
        8,
        "Bob verifies Alice's token and certificate again: rejected.",
    );
    let verdict = call(&bob, "verify_peer", token_only).await;
    println!(
        "   valid: {}, reasons {}: {}",
        verdict["valid"], verdict["reasons"], verdict["message"]
    );
    assert_eq!(verdict["reasons"], json!(["certificate_revoked"]));
    let status = call(
        &bob,
        "check_revocation",
        json!({"certificate": presented["certificate"]}),
    )
    .await;
    println!(
        "   check_revocation: revoked {}, reason {}",
        status["revoked"], status["reason"]
    );

    alice.cancel().await.ok();
    bob.cancel().await.ok();
    println!("\nDone: sign → prove → verify → revoke → reject.");
}
