//! The tamper-evident audit log: every MCP tool call and CLI operation is recorded, hash-chained
//! and signed by the CA; `agentseal audit verify` finds any record edited, deleted, inserted or
//! reordered directly in SQLite and names the first bad one.
#![cfg(target_os = "linux")]

use crate::common::hub::{Installation, call_tool, cli_output, mcp_request, send, structured};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

const A: &str = "agent://acme.example/alice";
const B: &str = "agent://acme.example/bob";
/// A value that must never reach the log (it is an action argument).
const MARKER: &str = "s3cr3t-argument-value";

/// An installation with a log of CLI operations and MCP tool calls by two agents.
async fn busy_installation() -> (Installation, String) {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    let hub = installation.serve(&[]);
    let alice = installation.access_token(&hub, A, &[]);
    let bob = installation.access_token(&hub, B, &[]);
    let signed = structured(
        &call_tool(
            &hub,
            Some(&alice),
            "sign_action",
            json!({"action": "refund", "audience": B, "arguments": {"note": MARKER}}),
        )
        .await,
    );
    let token = signed["token"].as_str().unwrap().to_owned();
    let verdict = structured(
        &call_tool(
            &hub,
            Some(&bob),
            "verify_peer",
            json!({"token": token, "expected_action": "delete"}),
        )
        .await,
    );
    assert_eq!(verdict["valid"], false);
    structured(&call_tool(&hub, Some(&alice), "whoami", json!({})).await);
    installation.cli(&["revoke", "token", signed["token_id"].as_str().unwrap()]);
    (installation, token)
}

fn verify(installation: &Installation) -> (bool, Value) {
    let out = cli_output(&installation.dir, &["audit", "verify"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    match out.status.code() {
        Some(0) => (true, report),
        Some(1) => (false, report),
        other => panic!(
            "audit verify exited {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn database(installation: &Installation) -> Connection {
    Connection::open(installation.dir.join("agentseal.db")).unwrap()
}

fn record_count(db: &Connection) -> i64 {
    db.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap()
}

fn bodies(installation: &Installation) -> Vec<Value> {
    installation
        .cli(&["audit", "export", "--format", "jsonl"])
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["record"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tool_call_and_cli_operation_is_recorded_without_secrets_and_the_log_verifies() {
    let (installation, token) = busy_installation().await;
    let records = bodies(&installation);
    let ops: Vec<&str> = records.iter().map(|r| r["op"].as_str().unwrap()).collect();
    for op in [
        "cli.init",
        "cli.agent.create",
        "cli.serve",
        "cli.access_token.issue",
        "mcp.sign_action",
        "mcp.verify_peer",
        "mcp.whoami",
        "cli.revoke.token",
    ] {
        assert!(ops.contains(&op), "{op} not in {ops:?}");
    }
    let signed = records
        .iter()
        .find(|r| r["op"] == "mcp.sign_action")
        .unwrap();
    assert_eq!(signed["actor"], A);
    assert_eq!(signed["decision"], "allowed");
    assert_eq!(signed["details"]["action"], "refund");
    assert_eq!(signed["details"]["transport"], "http");
    let token_id = signed["details"]["result"]["token_id"].as_str().unwrap();
    let denied = records
        .iter()
        .find(|r| r["op"] == "mcp.verify_peer")
        .unwrap();
    assert_eq!(denied["actor"], B);
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["reasons"], json!(["wrong_action"]));
    assert_eq!(denied["details"]["token_id"], token_id);

    // Neither the action's arguments nor the token itself are in the database's log.
    let db = database(&installation);
    let mut stmt = db.prepare("SELECT body FROM audit_log").unwrap();
    let all: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let all = all.join("\n");
    assert!(!all.contains(MARKER));
    assert!(!all.contains(&token));

    let (valid, report) = verify(&installation);
    assert!(valid, "{report}");
    assert_eq!(report["records"], records.len() as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_reads_its_own_recent_records_as_an_mcp_resource() {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    let hub = installation.serve(&[]);
    let alice = installation.access_token(&hub, A, &[]);
    let bob = installation.access_token(&hub, B, &[]);
    structured(
        &call_tool(
            &hub,
            Some(&alice),
            "sign_action",
            json!({"action": "refund", "audience": B}),
        )
        .await,
    );
    structured(&call_tool(&hub, Some(&bob), "whoami", json!({})).await);
    let read = |token: String| {
        let hub = &hub;
        async move {
            let answer = send(
                mcp_request(
                    hub,
                    "resources/read",
                    Some("agentseal://agent/audit"),
                    json!({"uri": "agentseal://agent/audit"}),
                )
                .bearer_auth(token),
            )
            .await;
            let message = answer.message();
            let text = message["result"]["contents"][0]["text"]
                .as_str()
                .unwrap_or_else(|| panic!("{message}"))
                .to_owned();
            serde_json::from_str::<Vec<Value>>(&text).unwrap()
        }
    };
    let mine = read(alice).await;
    assert_eq!(mine[0]["operation"], "mcp.sign_action", "{mine:?}");
    assert_eq!(mine[0]["details"]["action"], "refund");
    let bobs = read(bob).await;
    assert!(
        bobs.iter().all(|r| r["operation"] != "mcp.sign_action"),
        "Bob sees Alice's records: {bobs:?}"
    );
    assert!(bobs.iter().any(|r| r["operation"] == "mcp.whoami"));
}

/// Each tampering, and the record `audit verify` must name first.
#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_the_first_edited_deleted_inserted_or_reordered_record() {
    type Tamper = fn(&Connection) -> i64;
    let cases: [(&str, Tamper, &str); 6] = [
        (
            "edited",
            |db| {
                // Turn a denial into an approval: the record's hash no longer matches.
                let seq: i64 = db
                    .query_row(
                        "SELECT seq FROM audit_log WHERE body LIKE '%\"denied\"%'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                db.execute(
                    "UPDATE audit_log SET body = replace(body, '\"denied\"', '\"allowed\"') WHERE seq = ?1",
                    [seq],
                )
                .unwrap();
                seq
            },
            "edited",
        ),
        (
            "edited and re-hashed",
            |db| {
                let (seq, body): (i64, String) = db
                    .query_row("SELECT seq, body FROM audit_log WHERE seq = 3", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .unwrap();
                let body = body.replace("operator", "someone-else");
                let hash = sha256_hex(&body);
                db.execute(
                    "UPDATE audit_log SET body = ?1, hash = ?2 WHERE seq = ?3",
                    params![body, hash, seq],
                )
                .unwrap();
                seq
            },
            "bad_signature",
        ),
        (
            "deleted",
            |db| {
                db.execute("DELETE FROM audit_log WHERE seq = 4", [])
                    .unwrap();
                4
            },
            "missing",
        ),
        (
            "inserted",
            |db| {
                // Make room at 3 and put a copy of record 2 there.
                let rows: Vec<i64> = db
                    .prepare("SELECT seq FROM audit_log WHERE seq >= 3 ORDER BY seq DESC")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for seq in rows {
                    db.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq = ?1", [seq])
                        .unwrap();
                }
                db.execute(
                    "INSERT INTO audit_log(seq, actor, body, hash, kid, sig)
                     SELECT 3, actor, body, hash, kid, sig FROM audit_log WHERE seq = 2",
                    [],
                )
                .unwrap();
                3
            },
            "moved",
        ),
        (
            "reordered",
            |db| {
                db.execute_batch(
                    "UPDATE audit_log SET seq = -1 WHERE seq = 5;
                     UPDATE audit_log SET seq = 5 WHERE seq = 6;
                     UPDATE audit_log SET seq = 6 WHERE seq = -1;",
                )
                .unwrap();
                5
            },
            "moved",
        ),
        (
            "truncated",
            |db| {
                let last: i64 = db
                    .query_row("SELECT MAX(seq) FROM audit_log", [], |r| r.get(0))
                    .unwrap();
                db.execute("DELETE FROM audit_log WHERE seq = ?1", [last])
                    .unwrap();
                last
            },
            "truncated",
        ),
    ];
    for (what, tamper, code) in cases {
        let (installation, _) = busy_installation().await;
        let (valid, report) = verify(&installation);
        assert!(valid, "{what}: untouched log must verify: {report}");
        let db = database(&installation);
        let before = record_count(&db);
        assert!(before >= 8, "{before} records");
        let first_bad = tamper(&db);
        drop(db);
        let (valid, report) = verify(&installation);
        assert!(!valid, "{what} went unnoticed: {report}");
        assert_eq!(report["first_bad_record"], first_bad, "{what}: {report}");
        assert_eq!(report["reasons"], json!([code]), "{what}: {report}");
        assert!(
            report["message"]
                .as_str()
                .unwrap()
                .contains(&first_bad.to_string()),
            "{what}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_rolled_back_with_its_head_is_caught_by_a_head_kept_aside() {
    let (installation, _) = busy_installation().await;
    let (_, report) = verify(&installation);
    let head = report["head"].as_str().unwrap().to_owned();
    let seq: i64 = head.split(':').next().unwrap().parse().unwrap();
    // Roll back: drop the last record and rewind the recorded head to match.
    let db = database(&installation);
    let previous: String = db
        .query_row(
            "SELECT hash FROM audit_log WHERE seq = ?1",
            [seq - 1],
            |r| r.get(0),
        )
        .unwrap();
    db.execute("DELETE FROM audit_log WHERE seq = ?1", [seq])
        .unwrap();
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'audit_head'",
        [format!("{}:{previous}", seq - 1)],
    )
    .unwrap();
    drop(db);
    assert!(verify(&installation).0, "consistent on its own");
    let out = cli_output(&installation.dir, &["audit", "verify", "--head", &head]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reasons"], json!(["truncated"]), "{report}");
    assert_eq!(report["first_bad_record"], seq);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes every append to the audit log fail, as a full disk or a damaged database would: a
/// trigger in the real SQLite file refuses the insert.
fn break_the_audit_log(installation: &Installation) {
    database(installation)
        .execute_batch(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log
             BEGIN SELECT RAISE(ABORT, 'audit log refused by the test'); END;",
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_the_audit_log_cannot_record_is_withheld_by_the_cli_and_the_hub() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&[]);
    let alice = installation.access_token(&hub, A, &[]);
    structured(&call_tool(&hub, Some(&alice), "whoami", json!({})).await);
    break_the_audit_log(&installation);

    // The CLI signs, cannot record it, and prints no token.
    let sign = [
        "token", "sign", "--agent", A, "--action", "deploy", "--aud", B,
    ];
    let out = cli_output(&installation.dir, &sign);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "printed: {:?}", out.stdout);
    assert!(stderr.contains("its output is withheld"), "{stderr}");
    // A failure is still reported as itself.
    let nobody = ["token", "sign", "--agent", "agent://acme.example/nobody"];
    let out = cli_output(&installation.dir, &[&nobody[..], &sign[4..]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown agent"), "{stderr}");

    // The hub answers sign_action with an error and no token.
    let answer = call_tool(
        &hub,
        Some(&alice),
        "sign_action",
        json!({"action": "deploy", "audience": B}),
    )
    .await;
    let message = answer.message();
    assert!(message.get("result").is_none(), "{}", answer.body);
    let error = message["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("withheld"), "{}", answer.body);
    // A compact JWS starts with the base64url of `{"`.
    assert!(!answer.body.contains("eyJ"), "{}", answer.body);
}
