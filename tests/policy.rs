//! Policy through MCP: a Rego policy file in the data directory decides what each agent may
//! sign — allowed, denied, TTL capped, rate-limited, approval needed — and is reloaded when it
//! changes; `agentseal policy check` explains a decision.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use common::hub::{Answer, Hub, Installation, call_tool, cli_output, structured};
use serde_json::{Value, json};

const DEPLOYER: &str = "agent://acme.example/deployer";
const BURSTY: &str = "agent://acme.example/bursty";
const PEER: &str = "agent://acme.example/peer";

/// Deployers may deploy (tokens capped at 2 minutes, 3 per hour) and refund with a person's
/// approval; anything else is denied with a reason.
const POLICY: &str = r#"package agentseal

import rego.v1

default decision := {"allow": false, "reasons": ["no rule allows this action"]}

decision := {
	"allow": true,
	"max_ttl": 120,
	"rate_limit": {"count": 3, "per_seconds": 3600},
} if {
	input.role == "deployer"
	input.action == "deploy"
}

decision := {"allow": true, "approval": true} if {
	input.role == "deployer"
	input.action == "payments.refund"
}
"#;

fn installation() -> Installation {
    let installation = Installation::new(&[]);
    for agent in [DEPLOYER, BURSTY] {
        installation.cli(&["agent", "create", agent, "--meta", "role=deployer"]);
    }
    installation.cli(&["agent", "create", PEER]);
    std::fs::write(installation.dir.join("policy.rego"), POLICY).unwrap();
    installation
}

async fn sign(hub: &Hub, token: &str, arguments: Value) -> Answer {
    call_tool(hub, Some(token), "sign_action", arguments).await
}

/// The result of a refused call: an error result (not a protocol error) with reason codes.
fn refusal(answer: &Answer) -> Value {
    let message = answer.message();
    assert_eq!(message["result"]["isError"], true, "{message}");
    let refusal = message["result"]["structuredContent"].clone();
    assert_eq!(refusal["valid"], false, "{message}");
    refusal
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_allows_denies_caps_rate_limits_and_asks_for_approval_through_mcp() {
    let installation = installation();
    let hub = installation.serve(&[]);
    let deployer = installation.access_token(&hub, DEPLOYER, &[]);
    let peer = installation.access_token(&hub, PEER, &[]);

    // Allowed: a token that verifies.
    let signed = structured(
        &sign(
            &hub,
            &deployer,
            json!({"action": "deploy", "audience": PEER}),
        )
        .await,
    );
    let verdict = structured(
        &call_tool(
            &hub,
            Some(&peer),
            "verify_peer",
            json!({"token": signed["token"], "expected_action": "deploy"}),
        )
        .await,
    );
    assert_eq!(verdict["valid"], true, "{verdict}");

    // Denied, with the policy's reason.
    let denied = refusal(
        &sign(
            &hub,
            &deployer,
            json!({"action": "delete", "audience": PEER}),
        )
        .await,
    );
    assert_eq!(
        denied["reasons"],
        json!(["policy_denied", "no rule allows this action"]),
        "{denied}"
    );
    // An agent without the role is denied the same action the deployer may do.
    let denied = refusal(
        &sign(
            &hub,
            &peer,
            json!({"action": "deploy", "audience": DEPLOYER}),
        )
        .await,
    );
    assert_eq!(denied["reasons"][0], "policy_denied");

    // TTL capped: an hour asked, two minutes given.
    let capped = structured(
        &sign(
            &hub,
            &deployer,
            json!({"action": "deploy", "audience": PEER, "ttl_seconds": 3600}),
        )
        .await,
    );
    let claims = &structured(
        &call_tool(
            &hub,
            Some(&peer),
            "verify_peer",
            json!({"token": capped["token"], "expected_action": "deploy"}),
        )
        .await,
    )["token"];
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120,
        "{claims}"
    );

    // Rate-limited: three deploys an hour per agent; the fourth is refused and says when.
    let bursty = installation.access_token(&hub, BURSTY, &[]);
    for _ in 0..3 {
        structured(&sign(&hub, &bursty, json!({"action": "deploy", "audience": PEER})).await);
    }
    let limited =
        refusal(&sign(&hub, &bursty, json!({"action": "deploy", "audience": PEER})).await);
    assert_eq!(limited["reasons"], json!(["rate_limited"]), "{limited}");
    assert!(limited["retry_after"].as_i64().unwrap() > 3000, "{limited}");
    // Other agents have their own windows.
    structured(
        &sign(
            &hub,
            &deployer,
            json!({"action": "deploy", "audience": PEER}),
        )
        .await,
    );

    // Approval needed: this client declared no elicitation, so nobody can approve: refused.
    let held = refusal(
        &sign(
            &hub,
            &deployer,
            json!({"action": "payments.refund", "audience": PEER}),
        )
        .await,
    );
    assert_eq!(held["reasons"][0], "approval_unavailable", "{held}");

    // Every refusal is in the audit log as a denial with its reasons.
    let log = installation.cli(&["audit", "export", "--actor", DEPLOYER]);
    let denials: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].clone())
        .filter(|r| r["op"] == "mcp.sign_action" && r["decision"] == "denied")
        .collect();
    let reasons: Vec<&Value> = denials.iter().map(|r| &r["reasons"][0]).collect();
    assert_eq!(
        reasons,
        [&json!("policy_denied"), &json!("approval_unavailable")],
        "{denials:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_policy_file_takes_effect_without_a_restart_and_a_broken_one_changes_nothing() {
    let installation = installation();
    let hub = installation.serve(&[]);
    let peer = installation.access_token(&hub, PEER, &[]);
    let ask = || sign(&hub, &peer, json!({"action": "ping", "audience": DEPLOYER}));
    assert_eq!(refusal(&ask().await)["reasons"][0], "policy_denied");

    // A broken edit: the previous policy stays in force.
    let path = installation.dir.join("policy.rego");
    std::fs::write(&path, "package agentseal\ndecision := {").unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(refusal(&ask().await)["reasons"][0], "policy_denied");
    let check = cli_output(
        &installation.dir,
        &[
            "policy", "check", "--agent", PEER, "--action", "ping", "--aud", DEPLOYER, "--file",
        ],
    );
    assert_eq!(check.status.code(), Some(2), "--file needs a value");

    // A good edit allows it, within a few seconds, without restarting the hub.
    std::fs::write(
        &path,
        POLICY.replace(
            "default decision := {\"allow\": false, \"reasons\": [\"no rule allows this action\"]}",
            "default decision := {\"allow\": true}",
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = ask().await;
        if answer.message()["result"]["isError"] != true {
            structured(&answer);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn policy_check_explains_the_decision_and_exits_1_when_denied() {
    let installation = installation();
    let check = |args: &[&str]| {
        let mut all = vec!["policy", "check"];
        all.extend_from_slice(args);
        let out = cli_output(&installation.dir, &all);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, report) = check(&[
        "--agent", DEPLOYER, "--action", "deploy", "--aud", PEER, "--ttl", "1h",
    ]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["outcome"], "allowed");
    assert_eq!(report["ttl"], 120);
    assert_eq!(report["decision"]["rate_limit"]["count"], 3);
    assert_eq!(report["input"]["role"], "deployer");
    assert!(report["policy"].as_str().unwrap().ends_with("policy.rego"));

    let (code, report) = check(&[
        "--agent",
        DEPLOYER,
        "--action",
        "payments.refund",
        "--aud",
        PEER,
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(report["outcome"], "allowed once a person approves");

    let (code, report) = check(&["--agent", PEER, "--action", "deploy", "--aud", DEPLOYER]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["outcome"], "denied");
    assert_eq!(
        report["decision"]["reasons"],
        json!(["no rule allows this action"])
    );

    // A draft is checked before it is installed; the built-in default without any file.
    let draft = installation.dir.join("draft.rego");
    std::fs::write(&draft, agentseal::policy::DEFAULT_POLICY).unwrap();
    let (code, report) = check(&[
        "--agent",
        PEER,
        "--action",
        "deploy",
        "--aud",
        DEPLOYER,
        "--file",
        draft.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["decision"]["max_ttl"], 900);
    std::fs::remove_file(installation.dir.join("policy.rego")).unwrap();
    let (_, report) = check(&["--agent", PEER, "--action", "x", "--aud", "y"]);
    assert_eq!(report["policy"], "built-in default");

    // The example team policy, as shipped in examples/policies.
    let team = common::python::repo().join("examples/policies/team.rego");
    let team = team.to_str().unwrap();
    let (code, report) = check(&[
        "--agent",
        DEPLOYER,
        "--action",
        "deploy",
        "--aud",
        "https://deploy.acme.example",
        "--file",
        team,
    ]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["decision"]["max_ttl"], 300);
    let (_, report) = check(&[
        "--agent",
        DEPLOYER,
        "--action",
        "rollback",
        "--aud",
        "https://deploy.acme.example",
        "--file",
        team,
    ]);
    assert_eq!(
        report["outcome"], "allowed once a person approves",
        "{report}"
    );
    let (code, report) = check(&[
        "--agent",
        DEPLOYER,
        "--action",
        "payments.refund",
        "--aud",
        "https://deploy.acme.example",
        "--file",
        team,
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report["decision"]["reasons"],
        json!(["role deployer may not payments.refund"])
    );
    let (code, report) = check(&[
        "--agent", PEER, "--action", "deploy", "--aud", "x", "--file", team,
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report["decision"]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("unknown role"),
        "{report}"
    );

    // A draft that does not compile is an error that says where.
    std::fs::write(&draft, "package agentseal\ndecision := {").unwrap();
    let out = cli_output(
        &installation.dir,
        &[
            "policy",
            "check",
            "--agent",
            PEER,
            "--action",
            "x",
            "--aud",
            "y",
            "--file",
            draft.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("draft.rego") && stderr.contains("does not compile"),
        "{stderr}"
    );
}
