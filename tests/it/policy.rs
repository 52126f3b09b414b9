//! Policy through MCP: a Rego policy file in the data directory decides what each agent may
//! sign — allowed, denied, TTL capped, rate-limited, approval needed — and is reloaded when it
//! changes; `agentseal policy check` explains a decision.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::{Duration, Instant};

use crate::common::hub::{Answer, Hub, Installation, call_tool, cli_output, structured};
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

/// A hub on the policy above, with access tokens for the deployer and the peer.
struct Setup {
    installation: Installation,
    hub: Hub,
    deployer: String,
    peer: String,
}

fn setup() -> Setup {
    let installation = installation();
    let hub = installation.serve(&[]);
    let deployer = installation.access_token(&hub, DEPLOYER, &[]);
    let peer = installation.access_token(&hub, PEER, &[]);
    Setup {
        installation,
        hub,
        deployer,
        peer,
    }
}

impl Setup {
    async fn verify(&self, token: &Value) -> Value {
        structured(
            &call_tool(
                &self.hub,
                Some(&self.peer),
                "verify_peer",
                json!({"token": token, "expected_action": "deploy"}),
            )
            .await,
        )
    }

    /// The deployer's audit records of `sign_action` with `decision`.
    fn signings(&self, decision: &str) -> Vec<Value> {
        self.installation
            .cli(&["audit", "export", "--actor", DEPLOYER])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].clone())
            .filter(|r| r["op"] == "mcp.sign_action" && r["decision"] == decision)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_action_is_signed_and_verifies() {
    let s = setup();
    let signed = structured(
        &sign(
            &s.hub,
            &s.deployer,
            json!({"action": "deploy", "audience": PEER}),
        )
        .await,
    );
    assert_eq!(s.verify(&signed["token"]).await["valid"], true);
    assert_eq!(s.signings("allowed").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_action_is_refused_with_the_policys_reasons_and_audited() {
    let s = setup();
    let denied = refusal(
        &sign(
            &s.hub,
            &s.deployer,
            json!({"action": "delete", "audience": PEER}),
        )
        .await,
    );
    assert_eq!(
        denied["reasons"],
        json!(["policy_denied", "no rule allows this action"]),
        "{denied}"
    );
    // An agent without the role is denied the action the deployer may do.
    let denied = refusal(
        &sign(
            &s.hub,
            &s.peer,
            json!({"action": "deploy", "audience": DEPLOYER}),
        )
        .await,
    );
    assert_eq!(denied["reasons"][0], "policy_denied");
    let audited = s.signings("denied");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["reasons"][0], "policy_denied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_longer_lifetime_than_the_policy_allows_is_capped() {
    let s = setup();
    let capped = structured(
        &sign(
            &s.hub,
            &s.deployer,
            json!({"action": "deploy", "audience": PEER, "ttl_seconds": 3600}),
        )
        .await,
    );
    let claims = &s.verify(&capped["token"]).await["token"];
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120,
        "{claims}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_past_the_rate_limit_is_refused_and_says_when_to_retry() {
    let s = setup();
    let bursty = s.installation.access_token(&s.hub, BURSTY, &[]);
    for _ in 0..3 {
        structured(
            &sign(
                &s.hub,
                &bursty,
                json!({"action": "deploy", "audience": PEER}),
            )
            .await,
        );
    }
    let limited = refusal(
        &sign(
            &s.hub,
            &bursty,
            json!({"action": "deploy", "audience": PEER}),
        )
        .await,
    );
    assert_eq!(limited["reasons"], json!(["rate_limited"]), "{limited}");
    assert!(limited["retry_after"].as_i64().unwrap() > 3000, "{limited}");
    // Other agents have their own windows.
    structured(
        &sign(
            &s.hub,
            &s.deployer,
            json!({"action": "deploy", "audience": PEER}),
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_needing_approval_is_not_signed_without_a_person() {
    let s = setup();
    // This client declared no elicitation, so nobody can approve here: it waits for a person out
    // of band (tests/it/approval.rs), and says so.
    let held = refusal(
        &sign(
            &s.hub,
            &s.deployer,
            json!({"action": "payments.refund", "audience": PEER}),
        )
        .await,
    );
    assert_eq!(held["reasons"], json!(["approval_pending"]), "{held}");
    assert!(held["approval_id"].is_string(), "{held}");
    assert!(
        held["message"].as_str().unwrap().contains("approve"),
        "{held}"
    );
    assert!(s.signings("allowed").is_empty());
    // With a client that can ask, the person decides: tests/approval.rs.
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
