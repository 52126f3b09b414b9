//! Several hubs on one PostgreSQL database (a real server: `common::postgres`). Each replica has
//! a data directory and a file key store of its own, holding only its key-encryption key; the
//! seeds are sealed in the database.
#![cfg(target_os = "linux")]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

use agentseal::keystore::Passphrase;
use agentseal::keystore::backup::{BackupSecret, KeyBackup};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::hub::{Hub, call_tool, spawn_hub, structured};
use crate::common::postgres;
use crate::signals::Receiver;

const ALICE: &str = "agent://acme.example/alice";
const BOB: &str = "agent://acme.example/bob";
const PASSPHRASE: &str = "this replica's file store";
const OPERATOR: &str = "the operator's replica secret";

/// One replica: its own data directory and key store, the shared database.
struct Replica {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    database: String,
}

impl Replica {
    fn new(database: &str) -> Replica {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        Replica {
            _tmp: tmp,
            dir,
            database: database.to_owned(),
        }
    }

    fn env(&self) -> Vec<(&'static str, &OsStr)> {
        vec![
            ("AGENTSEAL_PASSPHRASE", OsStr::new(PASSPHRASE)),
            ("AGENTSEAL_BACKUP_PASSPHRASE", OsStr::new(OPERATOR)),
            ("AGENTSEAL_DATABASE_URL", OsStr::new(&self.database)),
        ]
    }

    fn cli_output(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_agentseal"))
            .envs(self.env())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--key-store", "file"])
            .args(args)
            .output()
            .unwrap()
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn serve(&self) -> Hub {
        spawn_hub(&self.dir, "file", &[], &self.env())
    }

    fn access_token(&self, hub: &Hub, agent: &str) -> String {
        self.cli(&[
            "access-token",
            "issue",
            "--agent",
            agent,
            "--audience",
            &hub.mcp_url(),
        ])
    }
}

async fn tool(hub: &Hub, token: &str, name: &str, arguments: Value) -> Value {
    structured(&call_tool(hub, Some(token), name, arguments).await)
}

/// A replica without the key-encryption key refuses to start; with the operator's file it
/// joins; then two hubs share revocations, challenges, replay records and rate limits.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_joins_with_the_operators_file_and_two_hubs_share_one_state() {
    let database = postgres::database();
    let a = Replica::new(&database);
    a.cli(&["init", "--alg", "ed25519"]);
    a.cli(&["agent", "create", ALICE, "--alg", "ed25519"]);
    a.cli(&["agent", "create", BOB, "--alg", "ed25519"]);

    // Replica B shares the database but has no key-encryption key yet.
    let b = Replica::new(&database);
    let refused = b.cli_output(&["serve", "--http", "127.0.0.1:0"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("agentseal replica join"), "{stderr}");
    let signing = b.cli_output(&[
        "token", "sign", "--agent", ALICE, "--action", "x", "--aud", BOB,
    ]);
    assert_eq!(signing.status.code(), Some(2), "signed without the key");

    // The operator carries A's key-encryption key to B.
    let file = a.dir.parent().unwrap().join("replica.age");
    a.cli(&["replica", "export", file.to_str().unwrap()]);
    // A file for another installation is refused.
    let other = Replica::new(&postgres::database());
    other.cli(&["init", "--alg", "ed25519"]);
    let wrong = other.cli_output(&["replica", "join", file.to_str().unwrap()]);
    assert_eq!(wrong.status.code(), Some(2));
    b.cli(&["replica", "join", file.to_str().unwrap()]);

    // Both hubs deliver webhooks from the one outbox in the database.
    let receiver = Receiver::start(true).await;
    a.cli(&["signals", "webhook", &receiver.url]);

    let hub_a = a.serve();
    let hub_b = b.serve();
    let alice_a = a.access_token(&hub_a, ALICE);
    let alice_b = b.access_token(&hub_b, ALICE);
    let bob_a = a.access_token(&hub_a, BOB);
    let bob_b = a.access_token(&hub_b, BOB);

    // A challenge issued through A is answered through B.
    let challenge = tool(&hub_a, &bob_a, "new_challenge", json!({})).await["challenge"].clone();
    let signed = tool(
        &hub_b,
        &alice_b,
        "sign_action",
        json!({"action": "deploy", "audience": BOB}),
    )
    .await;
    let presented = tool(
        &hub_b,
        &alice_b,
        "present_certificate",
        json!({"challenge": challenge, "audience": BOB}),
    )
    .await;
    let evidence = json!({
        "token": signed["token"], "certificate": presented["certificate"],
        "proof": presented["proof"], "challenge": challenge, "expected_action": "deploy",
        "consume": true,
    });
    let verdict = tool(&hub_b, &bob_b, "verify_peer", evidence.clone()).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["proof_verified"], true, "{verdict}");

    // The challenge is spent on A too, and the token consumed on B is replayed on A.
    let again = tool(&hub_a, &bob_a, "verify_peer", evidence).await;
    assert_eq!(again["reasons"], json!(["wrong_challenge"]), "{again}");
    let token_only = json!({"token": signed["token"], "expected_action": "deploy"});
    let replayed = tool(&hub_a, &bob_a, "verify_peer", token_only).await;
    assert_eq!(replayed["reasons"], json!(["replayed"]), "{replayed}");

    // An access token revoked through A is refused by B on its next call.
    assert_eq!(
        tool(&hub_b, &alice_b, "whoami", json!({})).await["agent_id"],
        ALICE
    );
    a.cli(&["revoke", "token", &alice_b]);
    let after = call_tool(&hub_b, Some(&alice_b), "whoami", json!({})).await;
    assert_eq!(after.status, 401, "{}", after.body);

    // The built-in policy's 120 signatures a minute hold across both hubs together.
    let alice_b = b.access_token(&hub_b, ALICE);
    let mut allowed = 0;
    for n in 0..130 {
        let (hub, token) = if n % 2 == 0 {
            (&hub_a, &alice_a)
        } else {
            (&hub_b, &alice_b)
        };
        let answer = call_tool(
            hub,
            Some(token),
            "sign_action",
            json!({"action": "deploy", "audience": BOB}),
        )
        .await;
        let message = answer.message();
        if message["result"]["isError"] == true {
            let refusal = &message["result"]["structuredContent"];
            assert_eq!(refusal["reasons"], json!(["rate_limited"]), "{message}");
        } else {
            allowed += 1;
        }
    }
    // Two of alice's signings were admitted above: B's attempt without the key (admitted by
    // the policy before the key was missed) and the one through B.
    assert_eq!(allowed, 120 - 2);

    // The revocation (recorded through A's command line) and the refusals of both hubs reach
    // the receiver once each: the dispatchers of both hubs claim from one queue.
    let got = receiver
        .wait_until("the revocation and ten refusals", |got| {
            let kinds: Vec<String> = got
                .iter()
                .map(|d| d.payload()["type"].as_str().unwrap_or_default().to_owned())
                .collect();
            kinds.iter().any(|k| k == "token.revoked")
                && kinds.iter().filter(|k| *k == "rate.limited").count() >= 130 - 118
        })
        .await;
    let ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an entry was sent twice: {ids:?}");

    // Both hubs appended to one audit log, which verifies.
    drop((hub_a, hub_b));
    let verified: Value = serde_json::from_str(&a.cli(&["audit", "verify"])).unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(
        verified,
        serde_json::from_str::<Value>(&b.cli(&["audit", "verify"])).unwrap()
    );
}

/// What the database holds reveals no seed: a dump of it contains none of the seeds (from a
/// backup of the key store) in any common encoding.
#[test]
fn a_dump_of_the_database_holds_no_seed_in_any_encoding() {
    let database = postgres::database();
    let a = Replica::new(&database);
    a.cli(&["init", "--alg", "hybrid"]);
    a.cli(&["agent", "create", ALICE, "--alg", "hybrid"]);
    a.cli(&["signals", "webhook", "https://hooks.example/agentseal"]);
    let backup = a.dir.parent().unwrap().join("keys.age");
    a.cli(&["backup", backup.to_str().unwrap()]);
    let opened = KeyBackup::open(
        &std::fs::read(&backup).unwrap(),
        &BackupSecret::Passphrase(Passphrase::new(OPERATOR.into())),
    )
    .unwrap();
    assert!(
        opened.entries.len() >= 4,
        "CA and agent keys of both algorithms"
    );
    let name = database.rsplit('/').next().unwrap();
    let dump = postgres::shared().dump(name);
    assert!(dump.contains("sealed_secrets"), "the dump has the table");
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for entry in &opened.entries {
        let seed = entry.seed.expose();
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        for encoded in [
            hex.clone(),
            hex.to_uppercase(),
            b64.encode(seed),
            b64url.encode(seed),
            // PostgreSQL's bytea escape form, should a seed ever be stored raw.
            format!("\\x{hex}"),
        ] {
            assert!(
                !dump.contains(&encoded[..encoded.len().min(40)]),
                "{}#{} appears in the dump",
                entry.owner,
                entry.kind
            );
        }
        assert!(
            !dump.as_bytes().windows(seed.len()).any(|w| w == seed),
            "raw seed in the dump"
        );
    }
}
