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
    verify_with(installation, &[])
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

/// An installation whose log holds a few CLI operations (no hub: quicker).
fn quiet_installation() -> Installation {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    installation.cli(&["cert", "renew", A]);
    installation
}

/// `audit verify` with extra arguments: passed, and its report.
fn verify_with(installation: &Installation, args: &[&str]) -> (bool, Value) {
    let args = [&["audit", "verify"], args].concat();
    let out = cli_output(&installation.dir, &args);
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

#[test]
fn a_ca_key_swapped_into_the_database_and_a_re_signed_log_do_not_pass_audit_verify() {
    use agentseal::audit::{self, AuditEvent, RecordBody, SealedRecord};
    use agentseal::crypto::{Algorithm, Seed, SigningKey};
    use agentseal::jose::{Jwk, JwkSet};

    let installation = quiet_installation();
    let genuine = installation.dir.join("genuine-jwks.json");
    std::fs::write(&genuine, installation.cli(&["jwks"])).unwrap();
    // Someone who can write the database but not read the key store: their own CA key in
    // `meta.ca_jwks`, every record re-chained and re-signed with it (one of them rewritten),
    // the recorded head moved and the kept checkpoints dropped.
    let forger = SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().unwrap());
    let db = database(&installation);
    let jwks = JwkSet {
        keys: vec![Jwk::from_public_key(forger.public_key())],
    };
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'ca_jwks'",
        [serde_json::to_string(&jwks).unwrap()],
    )
    .unwrap();
    let bodies: Vec<RecordBody> = bodies(&installation)
        .into_iter()
        .map(|b| serde_json::from_value(b).unwrap())
        .collect();
    let mut previous: Option<SealedRecord> = None;
    for body in bodies {
        let mut event = AuditEvent::new(body.actor, body.op, body.decision);
        event.details = body.details;
        if body.seq == 2 {
            event
                .details
                .insert("agent_id".into(), "agent://acme.example/mallory".into());
        }
        let record = audit::seal(&event, previous.as_ref(), body.time, &forger).unwrap();
        db.execute(
            "UPDATE audit_log SET body = ?2, hash = ?3, kid = ?4, sig = ?5 WHERE seq = ?1",
            params![record.seq, record.body, record.hash, record.kid, record.sig],
        )
        .unwrap();
        previous = Some(record);
    }
    let last = previous.unwrap();
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'audit_head'",
        [format!("{}:{}", last.seq, last.hash)],
    )
    .unwrap();
    db.execute("DELETE FROM audit_checkpoints", []).unwrap();
    drop(db);

    // The key store's keys are the anchor, not the database's.
    let (valid, report) = verify(&installation);
    assert!(!valid);
    assert_eq!(report["reasons"], json!(["ca_keys_replaced"]), "{report}");
    // A verifier holding only the public keys finds the first re-signed record.
    let (valid, report) = verify_with(&installation, &["--ca-jwks", genuine.to_str().unwrap()]);
    assert!(!valid);
    assert_eq!(report["reasons"], json!(["bad_signature"]), "{report}");
    assert_eq!(report["first_bad_record"], 1);
    // And no checkpoint is signed over it.
    let out = cli_output(&installation.dir, &["audit", "checkpoint"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key"),
        "{out:?}"
    );
}

#[test]
fn an_edited_actor_column_is_found() {
    let installation = quiet_installation();
    database(&installation)
        .execute("UPDATE audit_log SET actor = ?1 WHERE seq = 2", [B])
        .unwrap();
    let (valid, report) = verify(&installation);
    assert!(!valid);
    assert_eq!(report["reasons"], json!(["actor_mismatch"]), "{report}");
    assert_eq!(report["first_bad_record"], 2);
}

/// A consistent copy of the database file (as a backup would be).
fn snapshot(installation: &Installation, name: &str) -> std::path::PathBuf {
    let path = installation.dir.parent().unwrap().join(name);
    database(installation)
        .execute("VACUUM INTO ?1", [path.to_str().unwrap()])
        .unwrap();
    path
}

/// Puts `copy` back as the installation's database.
fn restore(installation: &Installation, copy: &std::path::Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(installation.dir.join(format!("agentseal.db{suffix}")));
    }
    std::fs::copy(copy, installation.dir.join("agentseal.db")).unwrap();
}

/// What someone covering their tracks does after deleting records: rewinds the recorded head
/// to the last record left and drops the checkpoints kept in the database.
fn cover_tracks(installation: &Installation) {
    let db = database(installation);
    let head: Option<(i64, String)> = db
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    match head {
        Some((seq, hash)) => db.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'audit_head'",
            [format!("{seq}:{hash}")],
        ),
        None => db.execute("DELETE FROM meta WHERE key = 'audit_head'", []),
    }
    .unwrap();
    db.execute("DELETE FROM audit_checkpoints", []).unwrap();
}

#[test]
fn a_checkpoint_kept_elsewhere_names_tail_deletion_rollback_and_wipe() {
    let installation = quiet_installation();
    let jwks = installation.dir.parent().unwrap().join("ca-jwks.json");
    std::fs::write(&jwks, installation.cli(&["jwks"])).unwrap();
    let jwks = jwks.to_str().unwrap();
    // Consistent on its own (checked with public keys alone), but not with the mark of the
    // last checkpoint signed, which the key store keeps.
    let consistent_alone = |what: &str| {
        let (valid, report) = verify_with(&installation, &["--ca-jwks", jwks]);
        assert!(valid, "{what}: {report}");
        let (valid, report) = verify(&installation);
        assert_eq!(
            (valid, &report["reasons"]),
            (false, &json!(["rolled_back"])),
            "{what}: {report}"
        );
    };
    let older = snapshot(&installation, "older.db");
    installation.cli(&[
        "agent",
        "create",
        "agent://acme.example/carol",
        "--alg",
        "ed25519",
    ]);
    installation.cli(&["revoke", "cert", B]);
    let note = installation.cli(&["audit", "checkpoint"]);
    let size: i64 = note.lines().nth(1).unwrap().parse().unwrap();
    let kept = installation.dir.parent().unwrap().join("kept-checkpoint");
    std::fs::write(&kept, format!("{note}\n")).unwrap();
    let kept = kept.to_str().unwrap();
    installation.cli(&["cert", "renew", A]);
    let (valid, report) = verify_with(&installation, &["--checkpoint", kept]);
    assert!(valid, "{report}");
    let now = snapshot(&installation, "now.db");

    // Records at the end deleted, tracks covered: consistent on its own, not with the kept
    // checkpoint or the mark.
    database(&installation)
        .execute("DELETE FROM audit_log WHERE seq >= ?1", [size - 1])
        .unwrap();
    cover_tracks(&installation);
    consistent_alone("tail deleted");
    let (valid, report) = verify_with(&installation, &["--checkpoint", kept]);
    assert!(!valid);
    assert_eq!(report["reasons"], json!(["truncated"]), "{report}");
    assert_eq!(report["first_bad_record"], size - 1);

    // The database put back to an older copy, then in use again.
    restore(&installation, &older);
    let (valid, report) = verify_with(&installation, &["--checkpoint", kept]);
    assert_eq!(
        (valid, &report["reasons"]),
        (false, &json!(["truncated"])),
        "{report}"
    );
    for name in ["dave", "erin", "frank", "grace", "heidi"] {
        installation.cli(&[
            "agent",
            "create",
            &format!("agent://acme.example/{name}"),
            "--alg",
            "ed25519",
        ]);
    }
    consistent_alone("rolled back and grown again");
    let (valid, report) = verify_with(&installation, &["--checkpoint", kept]);
    assert!(!valid);
    assert_eq!(report["reasons"], json!(["rewritten"]), "{report}");
    // Nor does the installation sign a checkpoint of the other history.
    let out = cli_output(&installation.dir, &["audit", "checkpoint"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rolled_back"),
        "{out:?}"
    );

    // Every record deleted.
    restore(&installation, &now);
    database(&installation)
        .execute("DELETE FROM audit_log", [])
        .unwrap();
    cover_tracks(&installation);
    consistent_alone("every record deleted");
    let (valid, report) = verify_with(&installation, &["--checkpoint", kept]);
    assert!(!valid);
    assert_eq!(report["reasons"], json!(["emptied"]), "{report}");

    // Without covering tracks, the checkpoint kept in the database is enough.
    restore(&installation, &now);
    database(&installation)
        .execute("DELETE FROM audit_log WHERE seq >= ?1", [size])
        .unwrap();
    let (valid, report) = verify(&installation);
    assert_eq!(
        (valid, &report["reasons"]),
        (false, &json!(["truncated"])),
        "{report}"
    );
    // A checkpoint of another log, or an altered one, is refused as such.
    let altered = installation.dir.parent().unwrap().join("altered");
    std::fs::write(
        &altered,
        note.replacen(&format!("\n{size}\n"), "\n1\n", 1) + "\n",
    )
    .unwrap();
    restore(&installation, &now);
    let (valid, report) = verify_with(&installation, &["--checkpoint", altered.to_str().unwrap()]);
    assert_eq!(
        (valid, &report["reasons"]),
        (false, &json!(["bad_checkpoint"])),
        "{report}"
    );
}

#[test]
fn no_checkpoint_is_signed_over_a_log_that_does_not_verify() {
    let installation = quiet_installation();
    installation.cli(&["audit", "checkpoint"]);
    installation.cli(&[
        "agent",
        "create",
        "agent://acme.example/carol",
        "--alg",
        "ed25519",
    ]);
    // A record appended since the last checkpoint, edited.
    let db = database(&installation);
    let last: i64 = db
        .query_row("SELECT MAX(seq) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    db.execute(
        "UPDATE audit_log SET body = replace(body, 'carol', 'carla') WHERE seq = ?1",
        [last],
    )
    .unwrap();
    drop(db);
    let out = cli_output(&installation.dir, &["audit", "checkpoint"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not verify (edited"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_publishes_checkpoints_and_every_revocation_list_names_one() {
    use agentseal::audit::checkpoint::Checkpoint;
    use agentseal::jose::{Jwk, JwkSet, Jws};
    use base64::Engine as _;

    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&[]);
    let alice = installation.access_token(&hub, A, &[]);
    structured(&call_tool(&hub, Some(&alice), "whoami", json!({})).await);
    let response = reqwest::get(format!("{}/audit/checkpoint", hub.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let note = response.text().await.unwrap();

    // It opens under the CA keys the hub publishes, for the origin `status` names.
    let status: Value = serde_json::from_str(&installation.cli(&["status"])).unwrap();
    let origin = status["audit_origin"].as_str().unwrap();
    let anchor: JwkSet = reqwest::get(format!("{}/.well-known/agentseal-ca.json", hub.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<_> = anchor
        .keys
        .iter()
        .map(|k| Jwk::to_public_key(k).unwrap())
        .collect();
    let checkpoint = Checkpoint::open(&note, origin, &keys).unwrap();
    assert!(
        checkpoint.size >= 3,
        "init, agent create, access token, whoami: {note}"
    );
    let kept = installation.dir.parent().unwrap().join("from-hub");
    std::fs::write(&kept, &note).unwrap();
    let (valid, report) = verify_with(&installation, &["--checkpoint", kept.to_str().unwrap()]);
    assert!(valid, "{report}");

    // A revocation list names the checkpoint of its moment: after a revocation, a later one.
    let crl_checkpoint = |crl: String| {
        let jws = Jws::parse(&crl).unwrap();
        let claims: Value = serde_json::from_slice(&jws.payload).unwrap();
        claims["audit_checkpoint"].clone()
    };
    let first = crl_checkpoint(
        reqwest::get(format!("{}/crl", hub.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(first["origin"], origin);
    installation.cli(&["revoke", "cert", A]);
    let second = crl_checkpoint(
        reqwest::get(format!("{}/crl", hub.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        second["size"].as_u64() > first["size"].as_u64(),
        "{first} {second}"
    );
    // The size and root are those of a checkpoint the hub signed and kept.
    let root = base64::engine::general_purpose::STANDARD
        .decode(second["root"].as_str().unwrap())
        .unwrap();
    let kept: String = database(&installation)
        .query_row(
            "SELECT note FROM audit_checkpoints WHERE size = ?1",
            [second["size"].as_i64().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        Checkpoint::open(&kept, origin, &keys)
            .unwrap()
            .root
            .to_vec(),
        root
    );
}

#[test]
fn kept_checkpoints_are_hints_checked_against_their_signatures_and_old_logs_need_no_migration() {
    let installation = quiet_installation();
    // A database from before checkpoints existed: no table of them.
    database(&installation)
        .execute("DROP TABLE audit_checkpoints", [])
        .unwrap();
    let first = installation.cli(&["audit", "checkpoint"]);
    let first_size: i64 = first.lines().nth(1).unwrap().parse().unwrap();
    assert!(verify(&installation).0);

    // A kept checkpoint's size column moved to the log's current size: its note is not passed
    // off as the current checkpoint.
    installation.cli(&["cert", "renew", A]);
    let records = record_count(&database(&installation));
    database(&installation)
        .execute("UPDATE audit_checkpoints SET size = ?1", [records])
        .unwrap();
    let second = installation.cli(&["audit", "checkpoint"]);
    let second_size: i64 = second.lines().nth(1).unwrap().parse().unwrap();
    assert_eq!(second_size, records, "{second}");
    assert_ne!(first_size, second_size);

    // A garbled stored tree: the next checkpoint walks the whole log instead, and so finds an
    // old record that was edited.
    installation.cli(&["cert", "renew", B]);
    let db = database(&installation);
    db.execute(
        "UPDATE audit_checkpoints SET tree = '{\"subtrees\":[],\"path\":[]}'",
        [],
    )
    .unwrap();
    db.execute(
        "UPDATE audit_log SET body = replace(body, 'allowed', 'denied') WHERE seq = 1",
        [],
    )
    .unwrap();
    drop(db);
    let out = cli_output(&installation.dir, &["audit", "checkpoint"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(edited"),
        "{out:?}"
    );
}
