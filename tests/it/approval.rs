//! Human approval through a real client: the Python `mcp` SDK (2.x) over stdio, whose
//! elicitation callback answers as the person would, on both protocol revisions (2025-11-25:
//! `elicitation/create` during the call; 2026-07-28: input required, sealed request state, retry).
//! Approved → a token that verifies; declined → no token, and the audit log says so.
#![cfg(target_os = "linux")]

use std::process::Command;

use crate::common::hub::{Hub, Installation, call_tool, cli_output};
use crate::common::python::{python, repo, run_ok};
use serde_json::{Value, json};

pub(crate) const PAYER: &str = "agent://acme.example/payer";
pub(crate) const BANK: &str = "agent://acme.example/bank";

/// Refunds need a person's approval; everything else is allowed.
pub(crate) const POLICY: &str = r#"package agentseal

import rego.v1

default decision := {"allow": true}

decision := {"allow": true, "approval": true} if input.action == "payments.refund"
"#;

fn installation() -> Installation {
    let installation = Installation::new(&[(PAYER, "ed25519"), (BANK, "ed25519")]);
    std::fs::write(installation.dir.join("policy.rego"), POLICY).unwrap();
    installation
}

/// Runs the Python client against `serve --agent PAYER`; returns its report.
fn ask(installation: &Installation, mode: &str, answer: &str, extra: &[&str]) -> Value {
    let out = run_ok(
        Command::new(python())
            .arg(repo().join("tools/interop/approval_client.py"))
            .args(["--agentseal", env!("CARGO_BIN_EXE_agentseal"), "--data-dir"])
            .arg(&installation.dir)
            .args([
                "--agent",
                PAYER,
                "--audience",
                BANK,
                "--action",
                "payments.refund",
            ])
            .args(["--mode", mode, "--answer", answer])
            .args(extra),
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn signed_records(installation: &Installation) -> Vec<Value> {
    installation
        .cli(&["audit", "export", "--actor", PAYER])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].clone())
        .filter(|r| r["op"] == "mcp.sign_action")
        .collect()
}

#[test]
fn the_person_approves_through_the_client_and_the_token_verifies_on_both_revisions() {
    let installation = installation();
    // A webhook nobody answers: its outbox keeps every approval.requested signal recorded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", closed.local_addr().unwrap());
    drop(closed);
    installation.cli(&["signals", "webhook", &url]);
    for (mode, revision) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let report = ask(&installation, mode, "approve", &[]);
        assert_eq!(report["protocol"], revision, "{report}");
        assert_eq!(report["asked"].as_array().unwrap().len(), 1, "{report}");
        let question = report["asked"][0]["message"].as_str().unwrap();
        assert!(
            question.contains("payments.refund") && question.contains(BANK),
            "{question}"
        );
        assert_eq!(report["is_error"], false, "{report}");
        let token = report["structured"]["token"].as_str().unwrap();
        let verified = installation.cli(&[
            "verify",
            token,
            "--aud",
            BANK,
            "--action",
            "payments.refund",
            "--args-json",
            r#"{"amount":"12.00"}"#,
        ]);
        assert_eq!(
            serde_json::from_str::<Value>(&verified).unwrap()["valid"],
            true
        );
    }
    let records = signed_records(&installation);
    let decisions: Vec<&str> = records
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    // 2025-11-25: one call, allowed. 2026-07-28: the call that asked, then the retry.
    assert_eq!(decisions, ["allowed", "pending", "allowed"], "{records:?}");
    // One approval.requested per approval asked, not one per round trip.
    let status: Value = serde_json::from_str(&installation.cli(&["signals", "status"])).unwrap();
    let outbox = &status["outbox"];
    assert_eq!(
        outbox["pending"].as_u64().unwrap() + outbox["given_up"].as_u64().unwrap(),
        2,
        "{status}"
    );
}

#[test]
fn a_declined_approval_signs_nothing_on_both_revisions() {
    let installation = installation();
    for mode in ["legacy", "auto"] {
        for answer in ["decline", "reject", "cancel"] {
            let report = ask(&installation, mode, answer, &[]);
            assert_eq!(report["is_error"], true, "{mode} {answer}: {report}");
            assert_eq!(
                report["structured"]["reasons"],
                json!(["approval_declined"]),
                "{mode} {answer}: {report}"
            );
            assert!(report["structured"].get("token").is_none());
        }
    }
    // No token was ever signed: no sign_action was allowed, each was denied.
    let records = signed_records(&installation);
    assert!(
        records.iter().all(|r| r["decision"] != "allowed"),
        "{records:?}"
    );
    assert_eq!(
        records.iter().filter(|r| r["decision"] == "denied").count(),
        6,
        "{records:?}"
    );
}

#[test]
fn a_client_that_cannot_ask_a_person_is_told_the_action_waits_for_one_out_of_band() {
    let installation = installation();
    for mode in ["legacy", "auto"] {
        let report = ask(&installation, mode, "approve", &["--no-elicitation"]);
        assert_eq!(report["is_error"], true, "{report}");
        assert_eq!(
            report["structured"]["reasons"],
            json!(["approval_pending"]),
            "{report}"
        );
        let id = report["structured"]["approval_id"].as_str().unwrap();
        let listed: Value =
            serde_json::from_str(&installation.cli(&["approvals", "list"])).unwrap();
        assert!(
            listed["approvals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["approval_id"] == id && a["status"] == "pending"),
            "{listed}"
        );
        assert!(
            report["structured"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot ask"),
            "{report}"
        );
        assert!(report["asked"].as_array().unwrap().is_empty());
    }
}

/// Calls `sign_action` on the hub as the bearer of `token` (a stateless client that declares no
/// elicitation: nobody at it can be asked).
async fn refund(hub: &Hub, token: &str, amount: i64, approval_id: Option<&str>) -> Value {
    let mut arguments = json!({
        "action": "payments.refund",
        "audience": BANK,
        "arguments": {"order": "o-1", "amount": amount},
    });
    if let Some(id) = approval_id {
        arguments["approval_id"] = json!(id);
    }
    let answer = call_tool(hub, Some(token), "sign_action", arguments).await;
    let message = answer.message();
    message["result"]["structuredContent"].clone()
}

/// The id of the approval a refund of `amount` waits under.
async fn held(hub: &Hub, token: &str, amount: i64) -> String {
    let answer = refund(hub, token, amount, None).await;
    assert_eq!(answer["reasons"], json!(["approval_pending"]), "{answer}");
    answer["approval_id"].as_str().unwrap().to_owned()
}

/// Asserts that `signed` (a `sign_action` result) holds a refund token that verifies for
/// exactly the arguments `args` (JSON).
pub(crate) fn assert_refund_verifies(installation: &Installation, signed: &Value, args: &str) {
    let token = signed["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{signed}"));
    let verified: Value = serde_json::from_str(&installation.cli(&[
        "verify",
        token,
        "--aud",
        BANK,
        "--action",
        "payments.refund",
        "--args-json",
        args,
    ]))
    .unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
}

fn cli_fails(installation: &Installation, args: &[&str], code: &str) {
    let out = cli_output(&installation.dir, args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(code), "{args:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_given_out_of_band_signs_exactly_its_request_once() {
    let installation = installation();
    let hub = installation.serve(&[]);
    let payer = installation.access_token(&hub, PAYER, &[]);
    let bank = installation.access_token(&hub, BANK, &[]);

    let pending = refund(&hub, &payer, 120, None).await;
    assert_eq!(pending["reasons"], json!(["approval_pending"]), "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    // The person sees exactly what will be signed.
    let listed: Value = serde_json::from_str(&installation.cli(&["approvals", "list"])).unwrap();
    let shown = &listed["approvals"][0];
    assert_eq!(shown["approval_id"], id.as_str(), "{listed}");
    assert_eq!(shown["agent_id"], PAYER);
    assert_eq!(shown["audience"], BANK);
    assert_eq!(shown["arguments"], json!({"order": "o-1", "amount": 120}));
    // Asked again before anyone decided: still waiting, under the same approval (asking again
    // without the id does not ask the person twice).
    let again = refund(&hub, &payer, 120, Some(&id)).await;
    assert_eq!(again["reasons"], json!(["approval_pending"]), "{again}");
    let anew = refund(&hub, &payer, 120, None).await;
    assert_eq!(anew["approval_id"], id.as_str(), "{anew}");
    // The agent is not told how to approve its own request.
    assert!(!anew.to_string().contains("agentseal approve"), "{anew}");

    let approved: Value = serde_json::from_str(&installation.cli(&["approve", &id])).unwrap();
    assert_eq!(approved["status"], "approved", "{approved}");
    assert!(
        approved["decision"]["by"]
            .as_str()
            .unwrap()
            .starts_with("operator"),
        "{approved}"
    );
    // Not for other arguments, and not for another agent.
    let other_args = refund(&hub, &payer, 9_999, Some(&id)).await;
    assert_eq!(
        other_args["reasons"],
        json!(["approval_mismatch"]),
        "{other_args}"
    );
    let other_agent = refund(&hub, &bank, 120, Some(&id)).await;
    assert_eq!(
        other_agent["reasons"],
        json!(["approval_mismatch"]),
        "{other_agent}"
    );
    // The request itself: a token that verifies for exactly these arguments.
    let signed = refund(&hub, &payer, 120, Some(&id)).await;
    assert_refund_verifies(&installation, &signed, r#"{"order":"o-1","amount":120}"#);
    // Once.
    let twice = refund(&hub, &payer, 120, Some(&id)).await;
    assert_eq!(twice["reasons"], json!(["approval_used"]), "{twice}");
    cli_fails(&installation, &["approve", &id], "approval_decided");
    let unknown = refund(&hub, &payer, 120, Some("apr_nonexistent")).await;
    assert_eq!(unknown["reasons"], json!(["approval_unknown"]), "{unknown}");

    // The audit log: the wait, the person who decided, and the token.
    let records: Vec<Value> = installation
        .cli(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].clone())
        .collect();
    let waits: Vec<&Value> = records
        .iter()
        .filter(|r| r["op"] == "mcp.sign_action" && r["decision"] == "pending")
        .collect();
    assert!(!waits.is_empty());
    assert_eq!(waits[0]["details"]["result"]["approval_id"], id.as_str());
    let decided = records
        .iter()
        .find(|r| r["op"] == "cli.approve")
        .expect("the approval is audited");
    assert_eq!(decided["actor"], "operator");
    assert_eq!(decided["details"]["approval_id"], id.as_str());
    assert!(
        records
            .iter()
            .any(|r| r["op"] == "mcp.sign_action" && r["decision"] == "allowed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_or_expired_approval_signs_nothing() {
    let installation = installation();
    let hub = installation.serve(&["--approval-ttl", "2s"]);
    let payer = installation.access_token(&hub, PAYER, &[]);

    let denied = held(&hub, &payer, 50).await;
    installation.cli(&["deny", &denied, "--reason", "not this customer"]);
    let answer = refund(&hub, &payer, 50, Some(&denied)).await;
    assert_eq!(answer["reasons"], json!(["approval_denied"]), "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("not this customer"),
        "{answer}"
    );
    cli_fails(&installation, &["approve", &denied], "approval_decided");

    // Two people deciding at once (two processes): exactly one decision stands.
    let raced = held(&hub, &payer, 55).await;
    let (dir_a, dir_b, id_a, id_b) = (
        installation.dir.clone(),
        installation.dir.clone(),
        raced.clone(),
        raced.clone(),
    );
    let approve = std::thread::spawn(move || cli_output(&dir_a, &["approve", &id_a]));
    let deny =
        std::thread::spawn(move || cli_output(&dir_b, &["deny", &id_b, "--reason", "raced"]));
    let outcomes = [approve.join().unwrap(), deny.join().unwrap()];
    assert_eq!(
        outcomes.iter().filter(|o| o.status.success()).count(),
        1,
        "{:?}",
        outcomes
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );

    let approved_late = held(&hub, &payer, 60).await;
    let never_decided = held(&hub, &payer, 70).await;
    installation.cli(&["approve", &approved_late]);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // Approved, but not used before it expired.
    let answer = refund(&hub, &payer, 60, Some(&approved_late)).await;
    assert_eq!(answer["reasons"], json!(["approval_expired"]), "{answer}");
    // Nobody may approve it once it expired.
    cli_fails(
        &installation,
        &["approve", &never_decided],
        "approval_expired",
    );
    let answer = refund(&hub, &payer, 70, Some(&never_decided)).await;
    assert_eq!(answer["reasons"], json!(["approval_expired"]), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_flood_the_people_who_decide() {
    let installation = installation();
    let hub = installation.serve(&[]);
    let payer = installation.access_token(&hub, PAYER, &[]);
    for amount in 0..20 {
        let answer = refund(&hub, &payer, amount, None).await;
        assert_eq!(answer["reasons"], json!(["approval_pending"]), "{answer}");
    }
    let refused = refund(&hub, &payer, 20, None).await;
    assert_eq!(refused["reasons"], json!(["approval_refused"]), "{refused}");
    let listed: Value = serde_json::from_str(&installation.cli(&["approvals", "list"])).unwrap();
    assert_eq!(listed["approvals"].as_array().unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_is_not_lost_when_its_token_cannot_be_signed_after_all() {
    let installation = installation();
    // One refund an hour, each approved by a person.
    std::fs::write(
        installation.dir.join("policy.rego"),
        POLICY.replace(
            r#"decision := {"allow": true, "approval": true}"#,
            r#"decision := {"allow": true, "approval": true, "rate_limit": {"count": 1, "per_seconds": 3600}}"#,
        ),
    )
    .unwrap();
    let hub = installation.serve(&[]);
    let payer = installation.access_token(&hub, PAYER, &[]);
    let first = held(&hub, &payer, 80).await;
    let second = held(&hub, &payer, 90).await;
    installation.cli(&["approve", &first]);
    installation.cli(&["approve", &second]);
    assert!(refund(&hub, &payer, 80, Some(&first)).await["token"].is_string());
    // The second is approved, but the hour's one refund is spent: not signed, and the person's
    // approval is not used up by a refusal that was no one's to prevent.
    let limited = refund(&hub, &payer, 90, Some(&second)).await;
    assert_eq!(limited["reasons"][0], "rate_limited", "{limited}");
    let listed: Value =
        serde_json::from_str(&installation.cli(&["approvals", "list", "--all"])).unwrap();
    let status = listed["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["approval_id"] == second.as_str())
        .map(|a| a["status"].clone());
    assert_eq!(status, Some(json!("approved")), "{listed}");
}
