//! The operator's CLI end to end, with a real SQLite file and the kernel keyutils key store.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::{Command, Output};

use agentseal::jose::JwkSet;
use agentseal::token::revocation::RevocationList;
use agentseal::token::trust::RevocationSource;
use agentseal::token::trust::TrustAnchor;
use serde_json::Value;

const AGENT: &str = "agent://acme.example/reviewer";

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .env("AGENTSEAL_DATA_DIR", dir)
        .env("AGENTSEAL_KEY_STORE", "keyutils")
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Destroys the installation (its keyutils keys included) when the test ends, pass or fail, so
/// runs do not fill the user's persistent keyring.
struct Cleanup(#[allow(dead_code)] tempfile::TempDir, std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let status = run(&self.1, &["status"]);
        if let Ok(status) = serde_json::from_slice::<Value>(&status.stdout) {
            let ca_id = status["ca_id"].as_str().unwrap_or("");
            run(&self.1, &["destroy", "--confirm", ca_id]);
        }
    }
}

fn setup() -> (Cleanup, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ok(&dir, &["init"]);
    let meta = ["--meta", "role=reviewer", "--meta", "team=infra"];
    ok(&dir, &[&["agent", "create", AGENT][..], &meta].concat());
    (Cleanup(tmp, dir.clone()), dir)
}

fn sign(dir: &Path) -> String {
    ok(
        dir,
        &[
            "token", "sign", "--agent", AGENT, "--action", "deploy", "--aud", "svc", "--arg",
            "repo=web", "--arg", "n=2",
        ],
    )
}

#[test]
fn verify_exits_0_for_valid_1_for_invalid_and_2_for_errors() {
    let (_tmp, dir) = setup();
    let token = sign(&dir);
    let valid = run(
        &dir,
        &[
            "verify", &token, "--aud", "svc", "--action", "deploy", "--arg", "repo=web", "--arg",
            "n=2",
        ],
    );
    assert_eq!(valid.status.code(), Some(0));
    let claims = json(&String::from_utf8_lossy(&valid.stdout));
    assert_eq!(claims["valid"], true);
    assert_eq!(claims["claims"]["iss"], AGENT);
    assert_eq!(claims["certificate"]["meta"]["team"], "infra");

    let wrong = run(
        &dir,
        &[
            "verify", &token, "--aud", "svc", "--arg", "repo=api", "--arg", "n=2",
        ],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(
        json(&String::from_utf8_lossy(&wrong.stdout))["reasons"][0],
        "args_mismatch"
    );

    let garbage = run(&dir, &["verify", "not-a-token", "--any-audience"]);
    assert_eq!(garbage.status.code(), Some(1));
    assert_eq!(
        json(&String::from_utf8_lossy(&garbage.stdout))["reasons"][0],
        "malformed"
    );

    let usage = run(&dir, &["verify"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn global_flags_work_before_and_after_the_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flags");
    let _cleanup = Cleanup(tmp, dir.clone());
    let d = dir.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .args([
            "--data-dir",
            d,
            "--key-store",
            "keyutils",
            "init",
            "--alg",
            "ed25519",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .args(["status", "--data-dir", d, "--key-store", "keyutils"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["algorithms"][0],
        "ed25519"
    );
}

#[test]
fn init_is_idempotent_and_keeps_the_existing_ca() {
    let (_tmp, dir) = setup();
    let before = json(&ok(&dir, &["status"]));
    let again = json(&ok(&dir, &["init", "--alg", "ed25519"]));
    assert_eq!(before["ca_id"], again["ca_id"]);
    assert_eq!(before["key_ids"], again["key_ids"]);
}

#[test]
fn a_different_explicit_key_store_is_refused_with_a_clear_error() {
    let (_tmp, dir) = setup();
    let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .env("AGENTSEAL_DATA_DIR", &dir)
        .env("AGENTSEAL_PASSPHRASE", "x")
        .args(["--key-store", "file", "agent", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps its keys in keyutils"));
}

#[test]
fn commands_on_a_missing_installation_say_to_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&tmp.path().join("none"), &["agent", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agentseal init"));
}

#[test]
fn bad_agent_ids_and_unknown_agents_get_clear_errors() {
    let (_tmp, dir) = setup();
    for bad in [
        "",
        "no-scheme",
        "agent://has space",
        "1bad://x",
        // Look-alikes of agent://acme.example/reviewer: Cyrillic letters, a zero-width space,
        // a right-to-left override, an upper-case host.
        "agent://\u{430}cme.example/reviewer",
        "agent://acme.example/rev\u{456}ewer",
        "agent://acme.example/re\u{200B}viewer",
        "agent://acme.example/\u{202E}reweiver",
        "agent://ACME.example/reviewer",
        // Not agents: a file, a person in any case.
        "file:///etc/passwd",
        "User:bob",
        "USER:bob",
    ] {
        let out = run(&dir, &["agent", "create", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid agent id"),
            "{bad:?}"
        );
    }
    let out = run(&dir, &["agent", "create", AGENT]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = run(
        &dir,
        &[
            "token",
            "sign",
            "--agent",
            "agent://nobody",
            "--action",
            "a",
            "--aud",
            "b",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown agent"));
    let out = run(
        &dir,
        &[
            "token", "sign", "--agent", AGENT, "--action", "a", "--aud", "b", "--ttl", "2d",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn agents_made_before_the_id_rule_get_a_warning_from_status() {
    let (_tmp, dir) = setup();
    let status = json(&ok(&dir, &["status"]));
    assert!(status.get("warnings").is_none(), "{status}");
    // An agent recorded under an id the rule now refuses (an upper-case host), as an older
    // version could have made it.
    let legacy = "agent://Acme.example/reviewer";
    let db = rusqlite::Connection::open(dir.join("agentseal.db")).unwrap();
    db.execute(
        "INSERT INTO agents(agent_id, algorithms, meta, created_at) VALUES (?1, '[\"ed25519\"]', '{}', 0)",
        [legacy],
    )
    .unwrap();
    drop(db);
    let out = run(&dir, &["status"]);
    assert_eq!(out.status.code(), Some(0));
    let status = json(&String::from_utf8_lossy(&out.stdout));
    let warnings = status["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{status}");
    assert!(warnings[0].as_str().unwrap().contains(legacy), "{status}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not follow the agent-id rule"));
}

#[test]
fn a_user_principal_has_one_spelling_whatever_the_case_of_its_scheme() {
    let (_tmp, dir) = setup();
    for given in [
        "user:ann@acme.example",
        "User:ann@acme.example",
        "USER:ann@acme.example",
    ] {
        let token = ok(
            &dir,
            &[
                "token",
                "sign",
                "--agent",
                AGENT,
                "--action",
                "deploy",
                "--aud",
                "svc",
                "--on-behalf-of",
                given,
            ],
        );
        let verdict = json(&ok(
            &dir,
            &["verify", token.trim(), "--aud", "svc", "--action", "deploy"],
        ));
        assert_eq!(
            verdict["claims"]["sub"], "user:ann@acme.example",
            "{given}: {verdict}"
        );
    }
}

#[test]
fn agents_of_every_key_choice_sign_tokens_that_verify() {
    let (_tmp, dir) = setup();
    for alg in ["ml-dsa-65", "hybrid"] {
        let agent = format!("agent://acme.example/{alg}");
        ok(&dir, &["agent", "create", &agent, "--alg", alg]);
        let token = ok(
            &dir,
            &[
                "token", "sign", "--agent", &agent, "--action", "x", "--aud", "y",
            ],
        );
        let out = json(&ok(&dir, &["verify", &token, "--aud", "y"]));
        assert_eq!(out["claims"]["sub"], agent.as_str());
    }
    let list = json(&ok(&dir, &["agent", "list"]));
    assert_eq!(list.as_array().unwrap().len(), 3);
}

#[test]
fn revoked_certificate_blocks_signing_and_cannot_be_renewed() {
    let (_tmp, dir) = setup();
    let token = sign(&dir);
    let shown = json(&ok(&dir, &["cert", "show", AGENT]));
    let serial = shown["claims"]["jti"].as_str().unwrap().to_owned();
    ok(
        &dir,
        &["revoke", "cert", &serial, "--reason", "key compromise"],
    );
    let out = run(&dir, &["verify", &token, "--any-audience"]);
    let answer = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(answer["reasons"][0], "certificate_revoked");
    let out = run(&dir, &["cert", "verify", AGENT]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(
        &dir,
        &[
            "token", "sign", "--agent", AGENT, "--action", "a", "--aud", "b",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("create a new agent"));
    // Renewal would re-certify keys the operator declared compromised.
    let out = run(&dir, &["cert", "renew", AGENT]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be re-certified"));
}

#[test]
fn renewal_issues_a_new_serial_for_the_same_keys() {
    let (_tmp, dir) = setup();
    let before = json(&ok(&dir, &["cert", "show", AGENT]));
    let old_token = sign(&dir);
    let renewed = json(&ok(&dir, &["cert", "renew", AGENT, "--ttl", "10d"]));
    assert_ne!(renewed["serial"], before["claims"]["jti"]);
    let after = json(&ok(&dir, &["cert", "show", AGENT]));
    assert_eq!(after["claims"]["jti"], renewed["serial"]);
    assert_eq!(after["claims"]["cnf"], before["claims"]["cnf"]);
    assert_eq!(
        after["claims"]["exp"].as_i64().unwrap() - after["claims"]["iat"].as_i64().unwrap(),
        864_000
    );
    // Tokens under the previous certificate stay valid until it expires or is revoked.
    ok(&dir, &["verify", &old_token, "--any-audience"]);
    let token = sign(&dir);
    let verified = json(&ok(&dir, &["verify", &token, "--aud", "svc"]));
    assert_eq!(verified["claims"]["cert"], renewed["serial"]);
}

#[test]
fn unsafe_inputs_are_refused_with_clear_errors() {
    let (_tmp, dir) = setup();
    // Integers beyond 2^53 cannot be bound exactly by RFC 8785.
    let out = run(
        &dir,
        &[
            "token",
            "sign",
            "--agent",
            AGENT,
            "--action",
            "pay",
            "--aud",
            "b",
            "--arg",
            "amount=9007199254740993",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("as a string"));
    ok(
        &dir,
        &[
            "token",
            "sign",
            "--agent",
            AGENT,
            "--action",
            "pay",
            "--aud",
            "b",
            "--arg",
            "amount=\"9007199254740993\"",
        ],
    );
    // Revocation reasons are published in every list: bounded.
    let long = "x".repeat(300);
    let out = run(&dir, &["revoke", "cert", AGENT, "--reason", &long]);
    assert_eq!(out.status.code(), Some(2));
    // A service must say who it is.
    let out = run(&dir, &["verify", &sign(&dir)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--aud"));
}

#[test]
fn certificate_lifetimes_and_revocation_list_validity_are_capped() {
    let (_tmp, dir) = setup();
    let refused = |args: &[&str], what: &str| {
        let out = run(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(what), "{args:?}: {stderr}");
    };
    let other = "agent://acme.example/long-lived";
    refused(
        &["agent", "create", other, "--ttl", "100000d"],
        "certificate lifetime must be between 1 s and 366 days",
    );
    refused(
        &["cert", "renew", AGENT, "--ttl", "367d"],
        "certificate lifetime must be between 1 s and 366 days",
    );
    refused(
        &["crl", "--validity", "1000d"],
        "revocation list validity must be between 1 s and 7 days",
    );
    // A hub with an over-long list validity does not start.
    refused(
        &["serve", "--http", "127.0.0.1:0", "--crl-validity", "8d"],
        "revocation list validity must be between 1 s and 7 days",
    );
    // At the caps, both are issued.
    let created = json(&ok(&dir, &["agent", "create", other, "--ttl", "366d"]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let lifetime = created["expires_at"].as_i64().unwrap() - now;
    assert!((lifetime - 366 * 86_400).abs() < 60, "{created}");
    ok(&dir, &["crl", "--validity", "7d"]);

    // The operator sets shorter limits: the default lifetime shrinks to them, nothing passes them.
    let limits = json(&ok(
        &dir,
        &[
            "limits",
            "--max-cert-ttl",
            "30d",
            "--max-crl-validity",
            "1h",
        ],
    ));
    assert_eq!(
        limits,
        serde_json::json!({"max_cert_ttl": 30 * 86_400, "max_crl_validity": 3_600})
    );
    refused(
        &["cert", "renew", AGENT, "--ttl", "31d"],
        "certificate lifetime must be between 1 s and 30 days",
    );
    refused(
        &["crl", "--validity", "2h"],
        "revocation list validity must be between 1 s and 3600 s",
    );
    let renewed = json(&ok(&dir, &["cert", "renew", AGENT]));
    let lifetime = renewed["expires_at"].as_i64().unwrap() - now;
    assert!((lifetime - 30 * 86_400).abs() < 60, "{renewed}");
    let status = json(&ok(&dir, &["status"]));
    assert_eq!(status["limits"]["max_cert_ttl"], 30 * 86_400);
    // Within fixed ceilings, at init as later.
    refused(
        &["limits", "--max-cert-ttl", "3654d"],
        "between 1 s and 3653 days",
    );
    refused(
        &["limits", "--max-crl-validity", "91d"],
        "between 1 s and 90 days",
    );
    let other = tempfile::tempdir().unwrap();
    let other_dir = other.path().join("data");
    let out = run(
        &other_dir,
        &["init", "--alg", "ed25519", "--max-cert-ttl", "20y"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!other_dir.exists(), "refused before anything was created");
}

#[test]
fn revoking_a_token_by_jti_or_whole_token_is_reported_by_check_revocation() {
    let (_tmp, dir) = setup();
    let first = sign(&dir);
    let second = json(&ok(
        &dir,
        &[
            "token", "sign", "--agent", AGENT, "--action", "a", "--aud", "b", "--json",
        ],
    ));
    ok(&dir, &["revoke", "token", &first]);
    ok(
        &dir,
        &[
            "revoke",
            "token",
            second["jti"].as_str().unwrap(),
            "--reason",
            "by id",
        ],
    );
    for token in [first.as_str(), second["token"].as_str().unwrap()] {
        let status = json(&ok(&dir, &["check-revocation", "token", token]));
        assert_eq!(status["revoked"], true);
        assert_eq!(status["freshness"]["source"], "local");
        let out = run(&dir, &["verify", token, "--any-audience"]);
        assert_eq!(
            json(&String::from_utf8_lossy(&out.stdout))["reasons"][0],
            "revoked"
        );
    }
    let fresh = sign(&dir);
    assert_eq!(
        json(&ok(&dir, &["check-revocation", "token", &fresh]))["revoked"],
        false
    );
    let out = run(&dir, &["revoke", "token", "not a token!"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn revocation_list_is_signed_numbered_and_verifiable_offline() {
    let (_tmp, dir) = setup();
    let token = json(&ok(
        &dir,
        &[
            "token", "sign", "--agent", AGENT, "--action", "a", "--aud", "b", "--json",
        ],
    ));
    let jti = token["jti"].as_str().unwrap();
    ok(&dir, &["revoke", "token", jti, "--reason", "leaked"]);
    ok(&dir, &["revoke", "cert", AGENT, "--reason", "retired"]);
    let first = ok(&dir, &["crl"]);
    let second = ok(&dir, &["crl", "--validity", "10m"]);

    // A peer that has only the CA's public keys.
    let status = json(&ok(&dir, &["status"]));
    let jwks: JwkSet = serde_json::from_str(&ok(&dir, &["jwks", "--with-agents"])).unwrap();
    let ca_kids: Vec<&str> = status["key_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let anchor = TrustAnchor {
        ca_id: status["ca_id"].as_str().unwrap().to_owned(),
        keys: jwks
            .keys
            .iter()
            .filter(|k| ca_kids.contains(&k.kid.as_deref().unwrap()))
            .map(|k| k.to_public_key().unwrap())
            .collect(),
    };
    assert_eq!(anchor.keys.len(), 2);
    let a = RevocationList::verify(&first, &anchor, 0).unwrap();
    let b = RevocationList::verify(&second, &anchor, 0).unwrap();
    assert!(b.claims.number > a.claims.number);
    // A replayed older list is refused by a verifier that saw a newer one.
    assert!(RevocationList::verify_newer(&first, &anchor, 0, Some(b.claims.number)).is_err());
    assert!(RevocationList::verify_newer(&second, &anchor, 0, Some(a.claims.number)).is_ok());
    assert!(b.claims.next_update - b.claims.iat == 600);
    let now = agentseal::clock::now();
    assert_eq!(
        b.token_revocation(jti, now).unwrap().unwrap().reason,
        "leaked"
    );
    assert!(
        b.certificate_revocation(token_serial(&dir).as_str(), now)
            .unwrap()
            .is_some()
    );
    // A tampered list is refused.
    let mut tampered: Value = serde_json::from_str(&second).unwrap();
    tampered["payload"] = Value::String(agentseal::jose::b64(br#"{"iss":"x"}"#));
    assert!(RevocationList::verify(&tampered.to_string(), &anchor, 0).is_err());
}

fn token_serial(dir: &Path) -> String {
    json(&ok(dir, &["cert", "show", AGENT]))["claims"]["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn destroy_needs_the_ca_id_and_removes_keys_and_database() {
    let (_cleanup, dir) = setup();
    let status = json(&ok(&dir, &["status"]));
    let wrong = run(&dir, &["destroy", "--confirm", "urn:wrong"]);
    assert_eq!(wrong.status.code(), Some(2));
    ok(&dir, &["status"]);

    let store = agentseal::store::Store::open(&dir.join("agentseal.db")).unwrap();
    let install = store.meta("install_id").unwrap().unwrap();
    drop(store);
    let out = json(&ok(
        &dir,
        &["destroy", "--confirm", status["ca_id"].as_str().unwrap()],
    ));
    assert_eq!(out["keys_deleted"], 3); // CA hybrid + one Ed25519 agent
    let keys =
        agentseal::keystore::open(agentseal::keystore::KeyStoreKind::Keyutils, &dir).unwrap();
    let name =
        agentseal::keystore::KeyName::agent(&install, AGENT, agentseal::crypto::Algorithm::Ed25519);
    assert!(matches!(
        keys.get(&name),
        Err(agentseal::keystore::KeyStoreError::NotFound(_))
    ));
    let gone = run(&dir, &["status"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("agentseal init"));
}

/// The `verify_offline` example, which `cargo test` builds alongside the tests.
fn example(name: &str) -> std::path::PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("examples").join(name)
}

#[test]
fn a_verify_only_service_decides_offline_from_published_files() {
    let (_cleanup, dir) = setup();
    let files = dir.parent().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let ca_id = json(&ok(&dir, &["status"]))["ca_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca_jwks = write("ca.json", &ok(&dir, &["jwks"]));
    // A hybrid certificate is shown as the JWS JSON object it is; a file holds its text.
    let cert = match &json(&ok(&dir, &["cert", "show", AGENT]))["certificate"] {
        Value::String(compact) => compact.clone(),
        object => object.to_string(),
    };
    let cert = write("cert.jwt", &cert);
    let token = write("token.jwt", &sign(&dir));
    let decide = |crl: &str, args: &str| {
        let out = Command::new(example("verify_offline"))
            .args([&ca_id, &ca_jwks, crl, &cert, &token, "svc", "deploy", args])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let crl = write("crl.jwt", &ok(&dir, &["crl"]));
    let (code, out) = decide(&crl, r#"{"n":2,"repo":"web"}"#);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = decide(&crl, r#"{"n":3,"repo":"web"}"#);
    assert_eq!(
        (code, out.contains("args_mismatch")),
        (Some(1), true),
        "{out}"
    );
    ok(&dir, &["revoke", "cert", AGENT]);
    let crl = write("crl2.jwt", &ok(&dir, &["crl"]));
    let (code, out) = decide(&crl, r#"{"n":2,"repo":"web"}"#);
    assert_eq!(
        (code, out.contains("certificate_revoked")),
        (Some(1), true),
        "{out}"
    );
}

#[test]
fn a_presented_certificate_proves_possession_over_a_fresh_challenge() {
    let (_cleanup, dir) = setup();
    let challenge = "peer-challenge-0123456789";
    let presented = json(&ok(
        &dir,
        &[
            "cert",
            "present",
            "--agent",
            AGENT,
            "--challenge",
            challenge,
            "--aud",
            "agent://peer",
        ],
    ));
    let cert = presented["certificate"].as_str().unwrap();
    let proof = presented["proof"].as_str().unwrap();
    let verified = json(&ok(
        &dir,
        &[
            "cert",
            "verify",
            cert,
            "--proof",
            proof,
            "--challenge",
            challenge,
            "--aud",
            "agent://peer",
        ],
    ));
    assert_eq!(verified["proof"]["nonce"], challenge);
    let replay = run(
        &dir,
        &[
            "cert",
            "verify",
            cert,
            "--proof",
            proof,
            "--challenge",
            "another-challenge-98765",
            "--aud",
            "agent://peer",
        ],
    );
    assert_eq!(replay.status.code(), Some(1));
    assert_eq!(
        json(&String::from_utf8_lossy(&replay.stdout))["reasons"][0],
        "wrong_challenge"
    );
    let bare = json(&ok(&dir, &["cert", "present", "--agent", AGENT]));
    assert!(bare.get("proof").is_none());
}

/// Token ids and serials are base64url, so one in 64 starts with `-`: commands must take them as
/// values, not as flags.
#[test]
fn ids_that_start_with_a_dash_are_values_not_flags() {
    let (_cleanup, dir) = setup();
    let jti = "-E0y3D906Omndhuxs9Bbmw";
    assert_eq!(
        json(&ok(&dir, &["check-revocation", "token", jti]))["revoked"],
        false
    );
    ok(&dir, &["revoke", "token", jti, "--reason", "leaked"]);
    assert_eq!(
        json(&ok(&dir, &["check-revocation", "token", jti]))["revoked"],
        true
    );
    let out = run(&dir, &["revoke", "cert", "-no-such-serial"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no certificate or agent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the CLI with `stdout` as its standard output.
fn run_into(dir: &Path, args: &[&str], stdout: impl Into<std::process::Stdio>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .env("AGENTSEAL_DATA_DIR", dir)
        .env("AGENTSEAL_KEY_STORE", "keyutils")
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn output_that_cannot_be_written_exits_2_and_the_revocation_stays_committed() {
    let (_tmp, dir) = setup();
    let token = sign(&dir);
    let jti = json(&ok(&dir, &["check-revocation", "token", &token]))["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A full disk: the revocation is committed, the command says so and exits 2, no panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = run_into(&dir, &["revoke", "token", &jti, "--reason", "leaked"], full);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the operation was done, but its output could not be written"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let status = json(&ok(&dir, &["check-revocation", "token", &jti]));
    assert_eq!(status["revoked"], true, "{status}");

    // A reader that went away (`| true`): exit 2, no panic, for a "not valid" answer too.
    for args in [
        &["cert", "show", AGENT][..],
        &["verify", &token, "--aud", "svc"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = run_into(&dir, args, writer);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The mode bits of `path` that give others access (group and world).
fn open_to_others(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o077
}

#[test]
fn the_database_and_its_wal_and_shm_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_tmp, dir) = setup();
    sign(&dir);
    let files: Vec<_> = ["agentseal.db", "agentseal.db-wal", "agentseal.db-shm"]
        .iter()
        .map(|name| dir.join(name))
        .collect();
    // The last connection to close removes -wal and -shm: hold one open to see them, as a
    // running server does.
    let reader = rusqlite::Connection::open(&files[0]).unwrap();
    let agents: i64 = reader
        .query_row("SELECT COUNT(*) FROM agents", [], |row| row.get(0))
        .unwrap();
    assert_eq!(agents, 1);
    for path in &files {
        assert!(path.exists(), "{} is missing", path.display());
        assert_eq!(
            open_to_others(path),
            0,
            "{} is open to others",
            path.display()
        );
    }
    drop(reader);
    // A database made readable by others (an older version, a careless copy) is narrowed at
    // the next command.
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&dir, &["status"]);
    assert_eq!(open_to_others(&files[0]), 0);
}

#[test]
fn serve_takes_a_durability_mode_records_it_and_refuses_an_unknown_one() {
    let (_cleanup, dir) = setup();
    let out = run(&dir, &["serve", "--durability", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use grouped or every-write"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A stdio server whose client leaves at once (stdin at end of file) ends normally; its
    // audit record says which durability it ran with.
    for mode in ["every-write", "grouped"] {
        let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
            .env("AGENTSEAL_DATA_DIR", &dir)
            .env("AGENTSEAL_KEY_STORE", "keyutils")
            .env("AGENTSEAL_DURABILITY", mode)
            .args(["serve", "--agent", AGENT])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let modes: Vec<String> = ok(&dir, &["audit", "export", "--format", "jsonl"])
        .lines()
        .map(|line| json(line)["record"].clone())
        .filter(|record| record["op"] == "cli.serve")
        .map(|record| record["details"]["durability"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(modes, ["every-write", "grouped"]);
}
