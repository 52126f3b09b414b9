//! Human approval through a real client: the Python `mcp` SDK (2.x) over stdio, whose
//! elicitation callback answers as the person would, on both protocol revisions (2025-11-25:
//! `elicitation/create` during the call; 2026-07-28: input required, sealed request state, retry).
//! Approved → a token that verifies; declined → no token, and the audit log says so.
#![cfg(target_os = "linux")]

use std::process::Command;

use crate::common::hub::Installation;
use crate::common::python::{python, repo, run_ok};
use serde_json::{Value, json};

const PAYER: &str = "agent://acme.example/payer";
const BANK: &str = "agent://acme.example/bank";

const POLICY: &str = r#"package agentseal

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
fn a_client_that_cannot_ask_a_person_is_refused_with_a_reason_that_says_so() {
    let installation = installation();
    for mode in ["legacy", "auto"] {
        let report = ask(&installation, mode, "approve", &["--no-elicitation"]);
        assert_eq!(report["is_error"], true, "{report}");
        assert_eq!(
            report["structured"]["reasons"],
            json!(["approval_unavailable"]),
            "{report}"
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
