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
        "token", "sign", "--agent", BOB, "--action", "x", "--aud", ALICE,
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
    // One of alice's signings was made above, through B.
    assert_eq!(allowed, 120 - 1);

    // The revocation (recorded through A's command line) and the refusals of both hubs reach
    // the receiver once each: the dispatchers of both hubs claim from one queue.
    let got = receiver
        .wait_until("the revocation and ten refusals", |got| {
            let kinds: Vec<String> = got
                .iter()
                .map(|d| d.payload()["type"].as_str().unwrap_or_default().to_owned())
                .collect();
            kinds.iter().any(|k| k == "token.revoked")
                && kinds.iter().filter(|k| *k == "rate.limited").count() >= 130 - allowed
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

/// Allows everything, without a rate limit: the load below is about the database.
const ALLOW_ALL: &str = "package agentseal\n\nimport rego.v1\n\ndecision := {\"allow\": true}\n";

/// What a successful `sign_action` answered: its token id and token.
fn signed(answer: &crate::common::hub::Answer) -> Option<(String, String)> {
    if answer.status != 200 {
        return None;
    }
    let message = answer.message();
    let result = &message["result"];
    if result["isError"] == true {
        return None;
    }
    let content = &result["structuredContent"];
    Some((
        content["token_id"].as_str()?.to_owned(),
        content["token"].as_str()?.to_owned(),
    ))
}

/// Two hubs, 10,000 concurrent calls spread over both, and hub B killed (SIGKILL) half-way,
/// while revocations go through it: every call either hub acknowledged has its audit record,
/// every revocation B acknowledged is in the database, and the one log verifies. One call in
/// five signs (its token id finds its record); the others are `whoami`, audited the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_calls_over_two_hubs_and_a_killed_hub_lose_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const CALLS: usize = 10_000;
    const CONCURRENCY: usize = 48;

    let database = postgres::database();
    let a = Replica::new(&database);
    a.cli(&["init", "--alg", "ed25519"]);
    a.cli(&["agent", "create", ALICE, "--alg", "ed25519"]);
    let b = Replica::new(&database);
    let file = a.dir.parent().unwrap().join("replica.age");
    a.cli(&["replica", "export", file.to_str().unwrap()]);
    b.cli(&["replica", "join", file.to_str().unwrap()]);
    let policy = a.dir.parent().unwrap().join("allow.rego");
    std::fs::write(&policy, ALLOW_ALL).unwrap();
    let policy = policy.to_str().unwrap().to_owned();
    let serve =
        |replica: &Replica| spawn_hub(&replica.dir, "file", &["--policy", &policy], &replica.env());
    let hub_a = serve(&a);
    let hub_b = serve(&b);
    let urls = [hub_a.mcp_url(), hub_b.mcp_url()];
    let tokens = [a.access_token(&hub_a, ALICE), a.access_token(&hub_b, ALICE)];

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let on_b = Arc::new(Mutex::new(Vec::<String>::new()));
    let revoked = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let whoamis = Arc::new(AtomicUsize::new(0));
    let b_alive = Arc::new(AtomicBool::new(true));
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    // Connections kept alive between calls, as a client fleet's would be.
    let client = reqwest::Client::new();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..CALLS {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (url, token) = (urls[n % 2].clone(), tokens[n % 2].clone());
        let (acknowledged, b_signed, done) = (acknowledged.clone(), on_b.clone(), done.clone());
        let client = client.clone();
        let (acknowledged_calls, tool) = (
            whoamis.clone(),
            if n % 5 == 0 { "sign_action" } else { "whoami" },
        );
        calls.spawn(async move {
            let arguments = if tool == "whoami" {
                json!({})
            } else {
                json!({"action": "deploy", "audience": BOB, "arguments": {"n": n}})
            };
            let answer =
                crate::common::hub::try_call_tool_on(&client, &url, Some(&token), tool, arguments)
                    .await;
            if tool == "whoami" {
                if answer.is_ok_and(|a| a.status == 200 && a.message()["result"]["isError"] != true)
                {
                    acknowledged_calls.fetch_add(1, Ordering::Relaxed);
                }
            } else if let Some((jti, signed_token)) = answer.ok().as_ref().and_then(signed) {
                acknowledged.lock().unwrap().push(jti);
                if n % 2 == 1 {
                    b_signed.lock().unwrap().push(signed_token);
                }
                acknowledged_calls.fetch_add(1, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        // Revocations through B while it lives: one for every 50 calls.
        if n % 50 == 49 && b_alive.load(Ordering::Relaxed) {
            let token = on_b.lock().unwrap().pop();
            if let Some(token) = token {
                let (url, bearer, revoked) = (urls[1].clone(), tokens[1].clone(), revoked.clone());
                calls.spawn(async move {
                    let answer = crate::common::hub::try_call_tool(
                        &url,
                        Some(&bearer),
                        "revoke",
                        json!({"token": token, "reason": "load test"}),
                    )
                    .await;
                    if let Ok(answer) = answer
                        && answer.status == 200
                        && answer.message()["result"]["isError"] != true
                    {
                        let ids = &answer.message()["result"]["structuredContent"]["ids"];
                        for id in ids.as_array().into_iter().flatten() {
                            revoked
                                .lock()
                                .unwrap()
                                .push(id.as_str().unwrap().to_owned());
                        }
                    }
                });
            }
        }
        if n == CALLS / 2 {
            // Hub B dies with calls in flight.
            let status = Command::new("kill")
                .args(["-KILL", &hub_b.pid().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            b_alive.store(false, Ordering::Relaxed);
        }
    }
    while calls.join_next().await.is_some() {}
    assert_eq!(done.load(Ordering::Relaxed), CALLS);
    let acknowledged = acknowledged.lock().unwrap().clone();
    let revoked = revoked.lock().unwrap().clone();
    // Every call to A and the first half of B's were answered.
    let answered = whoamis.load(Ordering::Relaxed);
    assert!(
        answered >= CALLS / 2 + CALLS / 4 - CONCURRENCY,
        "only {answered} calls acknowledged"
    );
    assert!(
        revoked.len() >= 10,
        "only {} revocations acknowledged",
        revoked.len()
    );

    let store =
        agentseal::store::Store::connect(&agentseal::store::Location::parse(&database).unwrap())
            .unwrap();
    for jti in &revoked {
        assert!(
            store
                .revocation(agentseal::token::trust::RevokedKind::Token, jti)
                .unwrap()
                .is_some(),
            "acknowledged revocation {jti} lost"
        );
    }
    let mut recorded = std::collections::HashSet::new();
    store
        .audit_records(1, &mut |record| {
            let body: Value = serde_json::from_str(&record.body).unwrap();
            if let Some(id) = body["details"]["result"]["token_id"].as_str() {
                recorded.insert(id.to_owned());
            }
            true
        })
        .unwrap();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|jti| !recorded.contains(*jti))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged calls have no audit record: {lost:?}",
        lost.len()
    );

    drop(hub_a);
    let verified: Value = serde_json::from_str(&a.cli(&["audit", "verify"])).unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
    assert!(verified["records"].as_u64().unwrap() as usize >= answered);
}

/// PostgreSQL stopped and started again under load: while it is down calls fail promptly with
/// a clear, retryable error; once it is back the hub's pool reconnects and calls succeed; no
/// acknowledged call lacks its audit record and the log verifies (nothing half-written).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_under_load_fails_calls_cleanly_and_they_succeed_after() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let cluster = postgres::Cluster::start();
    let database = cluster.database();
    let a = Replica::new(&database);
    a.cli(&["init", "--alg", "ed25519"]);
    a.cli(&["agent", "create", ALICE, "--alg", "ed25519"]);
    let policy = a.dir.parent().unwrap().join("allow.rego");
    std::fs::write(&policy, ALLOW_ALL).unwrap();
    let hub = spawn_hub(
        &a.dir,
        "file",
        &["--policy", policy.to_str().unwrap()],
        &a.env(),
    );
    let token = a.access_token(&hub, ALICE);
    let url = hub.mcp_url();

    /// What one call came to.
    #[derive(Debug, Clone, PartialEq)]
    enum Outcome {
        Signed(String),
        /// A tool error or HTTP status, with the error's code or message.
        Failed(String),
    }
    let outcomes = Arc::new(Mutex::new(Vec::<(Instant, Duration, Outcome)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::new();
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        let (outcomes, stop) = (outcomes.clone(), stop.clone());
        load.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let answer = crate::common::hub::try_call_tool_on(
                    &client,
                    &url,
                    Some(&token),
                    "sign_action",
                    json!({"action": "deploy", "audience": BOB, "arguments": {"w": worker, "n": n}}),
                )
                .await
                .unwrap();
                let outcome = match signed(&answer) {
                    Some((jti, _)) => Outcome::Signed(jti),
                    None if answer.status != 200 => {
                        Outcome::Failed(format!("HTTP {}: {}", answer.status, answer.body))
                    }
                    None => Outcome::Failed(answer.message()["result"].to_string()),
                };
                outcomes
                    .lock()
                    .unwrap()
                    .push((started, started.elapsed(), outcome));
            }
        });
    }
    let count = |since: Instant, signed: bool| {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _, o)| *at >= since && matches!(o, Outcome::Signed(_)) == signed)
            .count()
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let start = Instant::now();
    wait_for("calls before the stop", &|| count(start, true) >= 50);

    cluster.pg_ctl_stop();
    let down = Instant::now();
    wait_for("failures while down", &|| count(down, false) >= 30);
    cluster.pg_ctl_start();
    let up = Instant::now();
    wait_for("calls after the restart", &|| count(up, true) >= 50);
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}

    let outcomes = outcomes.lock().unwrap().clone();
    // While the database was down, calls failed with the retryable code, promptly.
    let failures: Vec<_> = outcomes
        .iter()
        .filter_map(|(at, took, o)| match o {
            Outcome::Failed(why) if *at >= down && *at < up => Some((took, why)),
            _ => None,
        })
        .collect();
    assert!(failures.len() >= 30);
    for (took, why) in &failures {
        assert!(why.contains("database_unavailable"), "{why}");
        assert!(
            **took < Duration::from_secs(15),
            "a call took {took:?} to fail"
        );
    }
    // Every acknowledged signature has its audit record; the log verifies.
    let store =
        agentseal::store::Store::connect(&agentseal::store::Location::parse(&database).unwrap())
            .unwrap();
    let mut recorded = std::collections::HashSet::new();
    store
        .audit_records(1, &mut |record| {
            let body: Value = serde_json::from_str(&record.body).unwrap();
            if let Some(id) = body["details"]["result"]["token_id"].as_str() {
                recorded.insert(id.to_owned());
            }
            true
        })
        .unwrap();
    for (_, _, outcome) in &outcomes {
        if let Outcome::Signed(jti) = outcome {
            assert!(
                recorded.contains(jti),
                "acknowledged {jti} has no audit record"
            );
        }
    }
    drop(hub);
    let verified: Value = serde_json::from_str(&a.cli(&["audit", "verify"])).unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
}

/// TLS to the database: with `sslmode=require` and the server's CA as `sslrootcert` the store
/// connects over TLS; a CA that did not issue the server's certificate, or a name the
/// certificate does not carry, is refused.
#[test]
fn tls_to_the_database_verifies_the_servers_certificate() {
    let (cluster, ca) = postgres::Cluster::start_tls();
    let name = cluster.database().rsplit('/').next().unwrap().to_owned();
    let url = |host: &str, root: &std::path::Path| {
        format!(
            "postgres://agentseal@{host}:{}/{name}?sslmode=require&hostaddr=127.0.0.1&sslrootcert={}",
            cluster.port,
            root.display()
        )
    };
    let open = |url: String| {
        agentseal::store::Store::connect(&agentseal::store::Location::parse(&url).unwrap())
    };
    let store = open(url("localhost", &ca)).unwrap();
    store.set_meta(&[("k", "over tls")]).unwrap();
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("over tls"));
    let encrypted = cluster.psql(
        &name,
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'agentseal'",
    );
    assert_eq!(encrypted.trim(), "t", "the store's connections are not TLS");

    // Another CA: the server's certificate does not chain to it.
    let (_other, other_ca) = postgres::Cluster::start_tls();
    let refused = open(url("localhost", &other_ca)).err().expect("connected");
    assert!(
        refused.is_retryable() || refused.to_string().contains("certificate"),
        "{refused}"
    );
    // A name the certificate does not carry.
    let refused = open(url("db.example", &ca)).err().expect("connected");
    assert!(refused.to_string().contains("database"), "{refused}");
}

/// Whoever can write the database and knows the operator's age recipient (public) can make a
/// replica file for a key of their own and plant a check value sealed under it. `replica join`
/// still refuses: that key does not open the CA's sealed seeds.
#[test]
fn a_replica_file_for_someone_elses_key_is_refused_even_with_a_planted_check_value() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    let database = postgres::database();
    let a = Replica::new(&database);
    let status: Value = serde_json::from_str(&a.cli(&["init", "--alg", "hybrid"])).unwrap();
    let install_id = status["audit_origin"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .to_owned();

    // The attacker's key, and a check value sealed under it as the format says.
    let kek = [7u8; 32];
    let nonce = [9u8; 24];
    let aad = format!("agentseal sealed secret v1\0{install_id}\0replica#kek-check");
    let sealed = XChaCha20Poly1305::new(&kek.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: b"agentseal key-encryption key check",
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    let planted = format!(
        "v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([&nonce[..], &sealed].concat())
    );
    let name = database.rsplit('/').next().unwrap();
    postgres::shared().psql(
        name,
        &format!("UPDATE sealed_secrets SET sealed = '{planted}' WHERE name = 'replica#kek-check'"),
    );
    let file = a.dir.parent().unwrap().join("forged.age");
    let forged = KeyBackup {
        install_id: install_id.clone(),
        ca_id: status["ca_id"].as_str().unwrap().to_owned(),
        created_at: 0,
        entries: vec![agentseal::keystore::backup::BackupEntry {
            owner: "replica".into(),
            kind: "kek".into(),
            seed: agentseal::crypto::Seed::from_slice(&kek).unwrap(),
        }],
    };
    let bytes = forged
        .seal(&agentseal::keystore::backup::BackupKey::Passphrase(
            Passphrase::new(OPERATOR.into()),
        ))
        .unwrap();
    std::fs::write(&file, bytes).unwrap();

    let b = Replica::new(&database);
    let refused = b.cli_output(&["replica", "join", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("does not open the CA's"), "{stderr}");
    // Nothing was kept: B still cannot start.
    let serve = b.cli_output(&["serve", "--http", "127.0.0.1:0"]);
    assert_eq!(serve.status.code(), Some(2));
}

/// Hubs or operators creating an installation in one fresh database at once: exactly one
/// installation comes of it, and every process that says it made one made that one.
#[test]
fn installations_created_at_once_in_one_database_make_exactly_one() {
    let database = postgres::database();
    let replicas: Vec<Replica> = (0..4).map(|_| Replica::new(&database)).collect();
    let outcomes: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|r| scope.spawn(move || r.cli_output(&["init", "--alg", "ed25519"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let made: Vec<Value> = outcomes
        .iter()
        .filter(|o| o.status.success())
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .collect();
    let ca_ids: std::collections::BTreeSet<&str> =
        made.iter().map(|m| m["ca_id"].as_str().unwrap()).collect();
    assert_eq!(ca_ids.len(), 1, "{made:?}");
    // The installation works: its creator's keys are the ones on record.
    let winner = replicas
        .iter()
        .zip(&outcomes)
        .find(|(_, o)| {
            o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("already holds")
        })
        .map(|(r, _)| r)
        .expect("one creator");
    winner.cli(&["agent", "create", ALICE, "--alg", "ed25519"]);
    let verified: Value = serde_json::from_str(&winner.cli(&["audit", "verify"])).unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
}

/// A shared database put back to before a CA rotation takes the later generation's sealed
/// seeds with it, so nothing in it shows the rotation; the replica that saw it refuses to
/// serve, by the mark its own key store keeps.
#[test]
fn a_database_put_back_to_before_a_ca_rotation_is_refused_by_a_replica_that_saw_it() {
    let database = postgres::database();
    let name = database.rsplit('/').next().unwrap().to_owned();
    let a = Replica::new(&database);
    a.cli(&["init", "--alg", "ed25519"]);
    a.cli(&["agent", "create", ALICE, "--alg", "ed25519"]);
    let before = postgres::shared().dump(&name);
    a.cli(&["ca", "rotate"]);
    postgres::shared().restore(&name, &before);
    // The hub must refuse to start; one that starts is stopped and the test fails.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .envs(a.env())
        .arg("--data-dir")
        .arg(&a.dir)
        .args(["--key-store", "file", "serve", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "the hub started: {stderr}"
    );
    assert!(stderr.contains("put back to before a rotation"), "{stderr}");
}
