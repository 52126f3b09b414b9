//! The MCP server over real stdio pipes, driven by rmcp's client in a child process: every tool
//! and resource, both protocol revisions, the two-agent flow, bad input, and no key material in
//! anything the model sees. Uses the kernel keyutils key store.
#![cfg(target_os = "linux")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use agentseal::crypto::Algorithm;
use agentseal::keystore::{self, KeyName, KeyStoreKind};
use rmcp::model::{
    CallToolRequestParams, ErrorCode, ProtocolVersion, ReadResourceRequestParams, ResourceContents,
};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError, ServiceExt, object};
use serde_json::{Value, json};

const A: &str = "agent://acme.example/alice";
const B: &str = "agent://acme.example/bob";
const CHALLENGE: &str = "bob-challenge-6f1d2e3c4b5a";

fn cli(dir: &Path, args: &[&str]) -> String {
    let out = StdCommand::new(env!("CARGO_BIN_EXE_agentseal"))
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

/// An installation with agents A (hybrid) and B (Ed25519), destroyed when dropped.
struct Fleet {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        cli(&dir, &["init"]);
        cli(
            &dir,
            &[
                "agent",
                "create",
                A,
                "--alg",
                "hybrid",
                "--meta",
                "role=deployer",
            ],
        );
        cli(&dir, &["agent", "create", B]);
        Fleet { _tmp: tmp, dir }
    }

    async fn connect(
        &self,
        agent: &str,
        mode: Option<ClientLifecycleMode>,
    ) -> RunningService<RoleClient, ()> {
        let command =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_agentseal")).configure(|c| {
                c.arg("--data-dir").arg(&self.dir);
                c.args(["--key-store", "keyutils", "serve", "--agent", agent]);
            });
        let transport = TokioChildProcess::new(command).unwrap();
        match mode {
            None => ().serve(transport).await.unwrap(),
            Some(mode) => ().serve_with_lifecycle(transport, mode).await.unwrap(),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let out = StdCommand::new(env!("CARGO_BIN_EXE_agentseal"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--key-store", "keyutils", "status"])
            .output();
        if let Ok(out) = out
            && let Ok(status) = serde_json::from_slice::<Value>(&out.stdout)
        {
            let _ = StdCommand::new(env!("CARGO_BIN_EXE_agentseal"))
                .arg("--data-dir")
                .arg(&self.dir)
                .args(["--key-store", "keyutils", "destroy", "--confirm"])
                .arg(status["ca_id"].as_str().unwrap_or(""))
                .output();
        }
    }
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    args: Value,
) -> Result<Value, ServiceError> {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await?;
    assert_ne!(result.is_error, Some(true), "{tool} failed: {result:?}");
    Ok(result.structured_content.expect("structured content"))
}

fn invalid_params(result: Result<Value, ServiceError>) -> String {
    match result {
        Err(ServiceError::McpError(e)) if e.code == ErrorCode::INVALID_PARAMS => {
            e.message.to_string()
        }
        other => panic!("expected invalid params, got {other:?}"),
    }
}

#[tokio::test]
async fn tools_are_listed_with_schemas_descriptions_and_honest_annotations() {
    let fleet = Fleet::new();
    let client = fleet.connect(A, None).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "whoami",
        "sign_action",
        "present_certificate",
        "verify_peer",
        "check_revocation",
        "revoke",
        "new_challenge",
        "delegate",
    ] {
        let tool = tools
            .iter()
            .find(|t| t.name == expected)
            .unwrap_or_else(|| panic!("{expected} missing: {names:?}"));
        assert!(
            tool.description.as_ref().is_some_and(|d| d.len() > 60),
            "{expected} needs a description"
        );
        assert!(
            tool.output_schema.is_some(),
            "{expected} needs an output schema"
        );
        let annotations = tool.annotations.as_ref().unwrap();
        let read_only = matches!(
            expected,
            "whoami" | "present_certificate" | "check_revocation"
        );
        assert_eq!(annotations.read_only_hint, Some(read_only), "{expected}");
        assert_eq!(
            annotations.destructive_hint,
            Some(expected == "revoke"),
            "{expected}"
        );
        assert_eq!(annotations.open_world_hint, Some(false), "{expected}");
    }
    assert_eq!(tools.len(), 8);
    let sign = tools.iter().find(|t| t.name == "sign_action").unwrap();
    let props = &sign.input_schema["properties"];
    assert!(
        props["audience"]["description"]
            .as_str()
            .unwrap()
            .contains("send")
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn two_agents_sign_present_verify_and_see_a_revocation() {
    let fleet = Fleet::new();
    let alice = fleet.connect(A, None).await;
    let bob = fleet.connect(B, None).await;

    let me = call(&alice, "whoami", json!({})).await.unwrap();
    assert_eq!(me["agent_id"], A);
    assert_eq!(me["algorithms"], json!(["ed25519", "ml-dsa-65"]));
    assert_eq!(me["meta"]["role"], "deployer");

    let args = json!({"service": "web", "version": "1.4.2"});
    let signed = call(
        &alice,
        "sign_action",
        json!({"action": "deploy", "audience": B, "arguments": args}),
    )
    .await
    .unwrap();
    // Bob issues a fresh challenge; Alice answers it.
    let challenge = call(&bob, "new_challenge", json!({})).await.unwrap()["challenge"].clone();
    let presented = call(
        &alice,
        "present_certificate",
        json!({"challenge": challenge, "audience": B}),
    )
    .await
    .unwrap();

    let evidence = json!({
        "token": signed["token"], "certificate": presented["certificate"], "proof": presented["proof"],
        "challenge": challenge, "expected_action": "deploy", "arguments": args,
    });
    let verdict = call(&bob, "verify_peer", evidence.clone()).await.unwrap();
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["agent_id"], A);
    assert_eq!(verdict["proof_verified"], true);
    assert_eq!(verdict["token"]["action"], "deploy");

    // A replayed proof, a made-up challenge, tampered arguments, a token for someone else:
    // each a normal `valid: false`.
    assert_eq!(
        call(&bob, "verify_peer", evidence.clone()).await.unwrap()["reasons"],
        json!(["wrong_challenge"])
    );
    let invented = call(
        &alice,
        "present_certificate",
        json!({"challenge": CHALLENGE, "audience": B}),
    )
    .await
    .unwrap();
    let mut made_up = evidence.clone();
    made_up["proof"] = invented["proof"].clone();
    made_up["challenge"] = json!(CHALLENGE);
    assert_eq!(
        call(&bob, "verify_peer", made_up).await.unwrap()["reasons"],
        json!(["wrong_challenge"])
    );
    let token_only = json!({
        "token": signed["token"], "certificate": presented["certificate"],
        "expected_action": "deploy", "arguments": args,
    });
    assert_eq!(
        call(&bob, "verify_peer", token_only.clone()).await.unwrap()["valid"],
        true
    );
    let cert_only = json!({"certificate": presented["certificate"]});
    assert_eq!(
        call(&bob, "verify_peer", cert_only).await.unwrap()["reasons"],
        json!(["proof_required"])
    );
    let mut other_args = token_only.clone();
    other_args["arguments"] = json!({"service": "web", "version": "6.6.6"});
    assert_eq!(
        call(&bob, "verify_peer", other_args).await.unwrap()["reasons"],
        json!(["args_mismatch"])
    );
    let for_someone_else = call(
        &alice,
        "sign_action",
        json!({"action": "deploy", "audience": "agent://x", "arguments": args}),
    )
    .await
    .unwrap();
    let verdict = call(
        &bob,
        "verify_peer",
        json!({"token": for_someone_else["token"], "expected_action": "deploy", "arguments": args}),
    )
    .await
    .unwrap();
    assert_eq!(verdict["reasons"], json!(["wrong_audience"]));
    let garbage = call(
        &bob,
        "verify_peer",
        json!({"token": "garbage", "expected_action": "deploy"}),
    )
    .await
    .unwrap();
    assert_eq!(
        (garbage["valid"].clone(), garbage["reasons"].clone()),
        (json!(false), json!(["malformed"]))
    );

    // The operator revokes Alice's certificate; Bob sees it.
    cli(
        &fleet.dir,
        &["revoke", "cert", A, "--reason", "laptop stolen"],
    );
    let verdict = call(&bob, "verify_peer", token_only).await.unwrap();
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["reasons"], json!(["certificate_revoked"]));
    let status = call(
        &bob,
        "check_revocation",
        json!({"certificate": presented["certificate"]}),
    )
    .await
    .unwrap();
    assert_eq!(status["revoked"], true);
    assert_eq!(status["reason"], "laptop stolen");
    assert_eq!(status["freshness"]["source"], "local");
    // And Alice can no longer sign.
    let refused = call(
        &alice,
        "sign_action",
        json!({"action": "deploy", "audience": B}),
    )
    .await;
    assert!(
        matches!(refused, Err(ServiceError::McpError(_))),
        "{refused:?}"
    );

    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
}

#[tokio::test]
async fn an_agent_revokes_its_own_token_but_not_another_agents() {
    let fleet = Fleet::new();
    let alice = fleet.connect(A, None).await;
    let bob = fleet.connect(B, None).await;
    let mine = call(
        &bob,
        "sign_action",
        json!({"action": "read", "audience": A}),
    )
    .await
    .unwrap();
    let hers = call(
        &alice,
        "sign_action",
        json!({"action": "read", "audience": B}),
    )
    .await
    .unwrap();
    let message = invalid_params(
        call(
            &bob,
            "revoke",
            json!({"token": hers["token"], "reason": "mine now"}),
        )
        .await,
    );
    assert!(message.contains("not permitted"), "{message}");
    let revoked = call(
        &bob,
        "revoke",
        json!({"token": mine["token"], "reason": "leaked"}),
    )
    .await
    .unwrap();
    assert_eq!(revoked["ids"], json!([mine["token_id"]]));
    let verdict = call(
        &alice,
        "verify_peer",
        json!({"token": mine["token"], "expected_action": "read"}),
    )
    .await
    .unwrap();
    assert_eq!(verdict["reasons"], json!(["revoked"]));
    let status = call(
        &alice,
        "check_revocation",
        json!({"token_id": mine["token_id"]}),
    )
    .await
    .unwrap();
    assert_eq!(status["revoked"], true);
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
}

#[tokio::test]
async fn the_2026_07_28_stateless_revision_and_2025_11_25_both_work() {
    let fleet = Fleet::new();
    let legacy = fleet.connect(B, None).await;
    assert_eq!(
        legacy.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_11_25
    );
    let modern = fleet
        .connect(
            B,
            Some(ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            }),
        )
        .await;
    assert_eq!(
        modern.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    for client in [&legacy, &modern] {
        let me = call(client, "whoami", json!({})).await.unwrap();
        assert_eq!(me["agent_id"], B);
        let signed = call(client, "sign_action", json!({"action": "a", "audience": B}))
            .await
            .unwrap();
        let verdict = call(
            client,
            "verify_peer",
            json!({"token": signed["token"], "expected_action": "a"}),
        )
        .await
        .unwrap();
        assert_eq!(verdict["valid"], true);
    }
    legacy.cancel().await.unwrap();
    modern.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_arguments_are_invalid_params_errors_that_say_what_to_fix() {
    let fleet = Fleet::new();
    let client = fleet.connect(B, None).await;
    let cases = [
        ("sign_action", json!({"action": "deploy"}), "audience"),
        (
            "sign_action",
            json!({"action": 7, "audience": "x"}),
            "action",
        ),
        (
            "sign_action",
            json!({"action": "a", "audience": "x", "ttl_seconds": "soon"}),
            "ttl_seconds",
        ),
        (
            "sign_action",
            json!({"action": "a".repeat(10_000), "audience": "x"}),
            "action must be at most",
        ),
        (
            "sign_action",
            json!({"action": "a", "audience": "x", "ttl_seconds": 999_999}),
            "TTL",
        ),
        (
            "sign_action",
            json!({"action": "a", "audience": "x", "arguments": {"n": 9_007_199_254_740_993u64}}),
            "as a string",
        ),
        (
            "sign_action",
            json!({"action": "a", "audience": "x", "surprise": 1}),
            "surprise",
        ),
        (
            "present_certificate",
            json!({"challenge": "short", "audience": "x"}),
            "challenge",
        ),
        (
            "present_certificate",
            json!({"challenge": CHALLENGE}),
            "audience",
        ),
        ("verify_peer", json!({}), "token, a certificate"),
        ("verify_peer", json!({"token": 5}), "token"),
        ("verify_peer", json!({"token": "t"}), "expected_action"),
        (
            "verify_peer",
            json!({"token": "t", "expected_action": "a", "expected_audience": "x"}),
            "expected_audience",
        ),
        (
            "verify_peer",
            json!({"certificate": "c", "challenge": CHALLENGE}),
            "proof",
        ),
        ("check_revocation", json!({}), "exactly one"),
        (
            "check_revocation",
            json!({"token_id": "a", "serial": "b"}),
            "exactly one",
        ),
        ("revoke", json!({"token": "x"}), "reason"),
        ("revoke", json!({"reason": "r"}), "exactly one"),
        (
            "revoke",
            json!({"own_certificate": true, "reason": "x".repeat(1000)}),
            "reason",
        ),
    ];
    for (tool, args, hint) in cases {
        let message = invalid_params(call(&client, tool, args.clone()).await);
        assert!(
            message.contains(hint),
            "{tool} {args}: {message:?} should mention {hint:?}"
        );
    }
    // Still serving.
    assert_eq!(
        call(&client, "whoami", json!({})).await.unwrap()["agent_id"],
        B
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_thousand_malformed_requests_are_all_answered_and_the_server_still_serves() {
    let fleet = Fleet::new();
    let client = fleet.connect(B, None).await;
    let tools = [
        "whoami",
        "sign_action",
        "present_certificate",
        "verify_peer",
        "check_revocation",
        "revoke",
        "nope",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..1_000u64 {
        let r = next();
        let tool = tools[(r % tools.len() as u64) as usize];
        let junk: Value = match (r >> 8) % 6 {
            0 => json!({"token": "x".repeat((r % 5000) as usize)}),
            1 => json!({"action": r, "audience": [r], "arguments": "nope"}),
            2 => {
                json!({"certificate": format!("{{\"payload\":\"{r}\",\"signatures\":[]}}"), "proof": "a.b.c"})
            }
            3 => json!({"token": format!("{}.{}.{}", r, i, r ^ i), "expected_action": {}}),
            4 => json!({"serial": Value::Null, "token_id": r.to_string(), "reason": r}),
            _ => {
                json!({"challenge": "\u{0}\u{1}", "audience": "", "arguments": {"deep": [[[[[r]]]]]}})
            }
        };
        let Value::Object(args) = junk else {
            unreachable!()
        };
        // Every request gets an answer: a result or a JSON-RPC error, never a hang or a crash.
        let _ = client
            .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
            .await;
    }
    let me = call(&client, "whoami", json!({})).await.unwrap();
    assert_eq!(me["agent_id"], B);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn nothing_the_model_sees_contains_key_material() {
    let fleet = Fleet::new();
    let alice = fleet.connect(A, None).await;
    let mut seen = String::new();
    let record = |seen: &mut String, v: &Value| seen.push_str(&v.to_string());
    record(&mut seen, &call(&alice, "whoami", json!({})).await.unwrap());
    record(
        &mut seen,
        &call(&alice, "new_challenge", json!({})).await.unwrap(),
    );
    let signed = call(
        &alice,
        "sign_action",
        json!({"action": "x", "audience": B, "arguments": {"a": 1}}),
    )
    .await
    .unwrap();
    record(&mut seen, &signed);
    let presented = call(
        &alice,
        "present_certificate",
        json!({"challenge": CHALLENGE, "audience": B}),
    )
    .await
    .unwrap();
    record(&mut seen, &presented);
    record(
        &mut seen,
        &call(
            &alice,
            "verify_peer",
            json!({"token": signed["token"], "expected_action": "x", "arguments": {"a": 1}}),
        )
        .await
        .unwrap(),
    );
    record(
        &mut seen,
        &call(
            &alice,
            "check_revocation",
            json!({"token": signed["token"]}),
        )
        .await
        .unwrap(),
    );
    record(
        &mut seen,
        &call(
            &alice,
            "revoke",
            json!({"token": signed["token"], "reason": "test"}),
        )
        .await
        .unwrap(),
    );
    for tool in alice.list_all_tools().await.unwrap() {
        seen.push_str(&serde_json::to_string(&tool).unwrap());
    }
    for resource in alice.list_all_resources().await.unwrap() {
        let read = alice
            .read_resource(ReadResourceRequestParams::new(resource.uri.clone()))
            .await
            .unwrap();
        for contents in read.contents {
            if let ResourceContents::TextResourceContents { text, .. } = contents {
                assert!(!text.is_empty(), "{}", resource.uri);
                seen.push_str(&text);
            }
        }
    }
    record(
        &mut seen,
        &call(
            &alice,
            "revoke",
            json!({"own_certificate": true, "reason": "test"}),
        )
        .await
        .unwrap(),
    );
    alice.cancel().await.unwrap();

    let store = agentseal::store::Store::open(&fleet.dir.join("agentseal.db")).unwrap();
    let install = store.meta("install_id").unwrap().unwrap();
    let keys = keystore::open(KeyStoreKind::Keyutils, &fleet.dir).unwrap();
    let names = [
        KeyName::ca(&install, Algorithm::Ed25519),
        KeyName::ca(&install, Algorithm::MlDsa65),
        KeyName::agent(&install, A, Algorithm::Ed25519),
        KeyName::agent(&install, A, Algorithm::MlDsa65),
    ];
    assert!(seen.len() > 10_000, "too little output to prove anything");
    for name in names {
        let seed = keys.get(&name).unwrap();
        for (what, secret) in common::secrets_of(seed.expose(), name.algorithm().unwrap()) {
            if let Some(found) = common::find_secret(seen.as_bytes(), &secret) {
                panic!("{what} of {name} visible to the model as {found:?}");
            }
        }
    }
}

#[tokio::test]
async fn unknown_resources_and_tools_are_protocol_errors() {
    let fleet = Fleet::new();
    let client = fleet.connect(B, None).await;
    let err = client
        .read_resource(ReadResourceRequestParams::new("agentseal://nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::McpError(ref e) if e.code == ErrorCode::RESOURCE_NOT_FOUND),
        "{err:?}"
    );
    let err = client
        .call_tool(CallToolRequestParams::new("nope").with_arguments(object!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::McpError(ref e) if e.code == ErrorCode::INVALID_PARAMS));
    client.cancel().await.unwrap();
}
