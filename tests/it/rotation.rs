//! Agent key rotation while a hub runs: the next call signs with the new key, and tokens of
//! the old key keep verifying through the grace, then fail as revoked. Time moves through the
//! test clock (`AGENTSEAL_TEST_CLOCK_FILE`, debug builds only), not by sleeping.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::hub::{Installation, call_tool, structured};

const A: &str = "agent://acme.example/alice";
const B: &str = "agent://acme.example/bob";

/// Runs the CLI on the installation under the test clock.
fn cli_at(installation: &Installation, clock: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .env(agentseal::clock::TEST_CLOCK_FILE, clock)
        .arg("--data-dir")
        .arg(&installation.dir)
        .args(["--key-store", "keyutils"])
        .args(args)
        .output()
        .unwrap();
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| json!({ "stderr": String::from_utf8_lossy(&out.stderr) }));
    (out.status.code(), value)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_agent_signs_with_its_new_key_and_old_tokens_fail_as_revoked_after_the_grace() {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    let clock = installation.dir.parent().unwrap().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let hub = installation.serve_with_env(
        &[],
        &[(agentseal::clock::TEST_CLOCK_FILE, clock.as_os_str())],
    );
    let alice = installation.access_token(&hub, A, &[]);
    let bob = installation.access_token(&hub, B, &[]);
    let sign = || async {
        structured(
            &call_tool(
                &hub,
                Some(&alice),
                "sign_action",
                json!({"action": "deploy", "audience": B, "ttl_seconds": 7200}),
            )
            .await,
        )
    };
    let verify_peer = |token: Value| {
        let hub = &hub;
        let bob = bob.clone();
        async move {
            let answer = call_tool(
                hub,
                Some(&bob),
                "verify_peer",
                json!({"token": token, "expected_action": "deploy"}),
            )
            .await;
            let value = structured(&answer);
            assert!(!value.is_null(), "{}", answer.body);
            value
        }
    };
    let old = sign().await;
    let old_token = old["token"].clone();

    // Rotated while the hub runs, with ten minutes' grace (the CLI is another process).
    let (code, rotated) = cli_at(
        &installation,
        &clock,
        &["agent", "rotate", A, "--grace", "10m"],
    );
    assert_eq!(code, Some(0), "{rotated}");
    assert_eq!(rotated["key_generation"], 1);
    let new = sign().await;
    assert!(new["token"].is_string(), "{new}");
    let verdict = verify_peer(new["token"].clone()).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(
        verdict["certificate"]["jti"], rotated["serial"],
        "signed under the new certificate: {verdict}"
    );
    // The old token still verifies during the grace.
    let verdict = verify_peer(old_token.clone()).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["certificate"]["jti"], rotated["previous_serial"]);

    // Eleven minutes later (clock moved for the hub and the CLI alike): revoked.
    std::fs::write(&clock, "660").unwrap();
    let verdict = verify_peer(old_token.clone()).await;
    assert_eq!(verdict["valid"], false, "{verdict}");
    assert_eq!(
        verdict["reasons"],
        json!(["certificate_revoked"]),
        "{verdict}"
    );
    let (code, report) = cli_at(
        &installation,
        &clock,
        &["verify", old_token.as_str().unwrap(), "--aud", B],
    );
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report["reasons"],
        json!(["certificate_revoked"]),
        "{report}"
    );
    let verdict = verify_peer(new["token"].clone()).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    // The revocation list names the old certificate.
    let (code, crl) = cli_at(
        &installation,
        &clock,
        &[
            "check-revocation",
            "certificate",
            rotated["previous_serial"].as_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{crl}");
    assert_eq!(crl["revoked"], true, "{crl}");

    // Without a grace, the old certificate is revoked at once; the old seeds are gone from
    // the key store (only generation 2's remain).
    let (code, again) = cli_at(&installation, &clock, &["agent", "rotate", A]);
    assert_eq!(code, Some(0), "{again}");
    let (_, status) = cli_at(
        &installation,
        &clock,
        &[
            "check-revocation",
            "certificate",
            again["previous_serial"].as_str().unwrap(),
        ],
    );
    assert_eq!(status["revoked"], true, "{status}");
    let install = rusqlite::Connection::open(installation.dir.join("agentseal.db"))
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'install_id'", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap();
    let keys = agentseal::keystore::open(
        agentseal::keystore::KeyStoreKind::Keyutils,
        &installation.dir,
    )
    .unwrap();
    use agentseal::keystore::KeyName;
    let ed = agentseal::crypto::Algorithm::Ed25519;
    for generation in [0, 1] {
        assert!(
            keys.get(&KeyName::agent_key(&install, A, ed, generation))
                .is_err(),
            "generation {generation} deleted"
        );
    }
    assert!(keys.get(&KeyName::agent_key(&install, A, ed, 2)).is_ok());
    let signed = sign().await;
    assert!(signed["token"].is_string(), "{signed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_hub_renews_a_certificate_at_the_configured_share_of_its_lifetime() {
    let installation = Installation::empty();
    installation.cli(&["init", "--alg", "ed25519"]);
    installation.cli(&["agent", "create", A, "--alg", "ed25519", "--ttl", "1d"]);
    installation.cli(&["agent", "create", B, "--alg", "ed25519", "--ttl", "1d"]);
    let clock = installation.dir.parent().unwrap().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let env = [(agentseal::clock::TEST_CLOCK_FILE, clock.as_os_str())];
    let hub = installation.serve_with_env(&["--renew-at", "0.5"], &env);
    let alice = installation.access_token(&hub, A, &["--ttl", "1d"]);
    let whoami = || async { structured(&call_tool(&hub, Some(&alice), "whoami", json!({})).await) };
    let sign = || async {
        let signed = structured(
            &call_tool(
                &hub,
                Some(&alice),
                "sign_action",
                json!({"action": "deploy", "audience": B}),
            )
            .await,
        );
        assert!(signed["token"].is_string(), "{signed}");
        signed
    };
    let first = whoami().await;
    let (iat, exp) = (
        first["certificate_not_before"].as_i64().unwrap(),
        first["certificate_expires_at"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 86_400);
    assert_eq!(first["certificate_renews_at"], iat + 43_200, "{first}");

    // Eleven hours on: not yet.
    std::fs::write(&clock, (11 * 3600).to_string()).unwrap();
    sign().await;
    assert_eq!(
        whoami().await["certificate_serial"],
        first["certificate_serial"]
    );

    // Thirteen hours on: the next call renews (and succeeds), same keys, a day's lifetime again.
    std::fs::write(&clock, (13 * 3600).to_string()).unwrap();
    sign().await;
    let renewed = whoami().await;
    assert_ne!(
        renewed["certificate_serial"], first["certificate_serial"],
        "{renewed}"
    );
    assert_eq!(renewed["key_ids"], first["key_ids"]);
    let new_iat = renewed["certificate_not_before"].as_i64().unwrap();
    assert!(new_iat >= iat + 13 * 3600, "{renewed}");
    assert_eq!(
        renewed["certificate_expires_at"].as_i64().unwrap() - new_iat,
        86_400
    );
    assert_eq!(
        renewed["certificate_renews_at"],
        new_iat + 43_200,
        "{renewed}"
    );
    // Recorded in the audit log, as the server's doing.
    let log = installation.cli(&["audit", "export", "--actor", "server"]);
    assert!(
        log.contains("server.cert.renew") && log.contains(A),
        "{log}"
    );
    // B made no call. A hub's sweep renews idle agents too: at start and every 30 s.
    let serial_of_b = || {
        let shown: Value = serde_json::from_str(&installation.cli(&["cert", "show", B])).unwrap();
        shown["claims"]["jti"].clone()
    };
    let before = serial_of_b();
    assert!(before.is_string());
    drop(hub);
    let _hub = installation.serve_with_env(&["--renew-at", "0.5"], &env);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while serial_of_b() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "B was not renewed by the sweep"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_rotated_ca_keeps_what_its_old_keys_signed_valid_until_they_are_retired() {
    let installation = Installation::empty();
    installation.cli(&["init", "--alg", "hybrid"]);
    installation.cli(&["agent", "create", A, "--alg", "ed25519"]);
    let sign = |agent: &str| {
        installation.cli(&[
            "token", "sign", "--agent", agent, "--action", "deploy", "--aud", "svc",
        ])
    };
    let verify = |token: &str| -> Value {
        let out =
            crate::common::hub::cli_output(&installation.dir, &["verify", token, "--aud", "svc"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let old_token = sign(A);
    installation.cli(&["audit", "checkpoint"]);
    let rotated: Value = serde_json::from_str(&installation.cli(&["ca", "rotate"])).unwrap();
    assert_eq!(rotated["generation"], 1);
    let status: Value = serde_json::from_str(&installation.cli(&["status"])).unwrap();
    assert_eq!(status["ca_generation"], 1);
    assert_eq!(status["key_ids"], rotated["key_ids"]);
    assert_eq!(status["previous_key_ids"], rotated["previous_key_ids"]);
    // The published anchor holds both generations (hybrid: two keys each).
    let jwks: Value = serde_json::from_str(&installation.cli(&["jwks"])).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4, "{jwks}");

    // New certificates are signed by the new keys; old and new both verify in the overlap.
    installation.cli(&["agent", "create", B, "--alg", "hybrid"]);
    let new_token = sign(B);
    assert_eq!(verify(&old_token)["valid"], true);
    assert_eq!(verify(&new_token)["valid"], true);
    let shown: Value = serde_json::from_str(&installation.cli(&["cert", "show", B])).unwrap();
    let signed_by: Vec<String> = {
        let jws: Value = serde_json::from_str(shown["certificate"].as_str().unwrap()).unwrap();
        jws["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let header = agentseal::jose::b64_decode(s["protected"].as_str().unwrap()).unwrap();
                serde_json::from_slice::<Value>(&header).unwrap()["kid"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let new_kids: Vec<String> = serde_json::from_value(rotated["key_ids"].clone()).unwrap();
    assert_eq!(signed_by, new_kids, "certified by the new generation");
    // The audit log verifies across the rotation (records and checkpoints of both generations).
    installation.cli(&["audit", "checkpoint"]);
    let report: Value = serde_json::from_str(&installation.cli(&["audit", "verify"])).unwrap();
    assert_eq!(report["valid"], true, "{report}");

    // Retired: what the old keys certified fails; the current generation cannot be retired.
    let old_kid = rotated["previous_key_ids"][0].as_str().unwrap();
    let out = crate::common::hub::cli_output(
        &installation.dir,
        &["ca", "retire", rotated["key_ids"][0].as_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotate first"));
    // A is still certified by the old keys: retiring them now would strand it.
    let out = crate::common::hub::cli_output(&installation.dir, &["ca", "retire", old_kid]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(A) && stderr.contains("renew them first"),
        "{stderr}"
    );
    installation.cli(&["cert", "renew", A]);
    installation.cli(&["ca", "retire", old_kid]);
    let refused = verify(&old_token);
    assert_eq!(refused["valid"], false, "{refused}");
    assert_eq!(refused["reasons"], json!(["bad_signature"]), "{refused}");
    assert_eq!(verify(&new_token)["valid"], true);
    let jwks: Value = serde_json::from_str(&installation.cli(&["jwks"])).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    // The audit log still verifies: its older records keep the old keys' signatures, checked
    // against the seeds the key store keeps.
    let report: Value = serde_json::from_str(&installation.cli(&["audit", "verify"])).unwrap();
    assert_eq!(report["valid"], true, "{report}");
    // A, renewed before the retirement, signs under the new keys.
    assert_eq!(verify(&sign(A))["valid"], true);
}

/// A database writer's certificate (another CA under the same CA id, its own key for agent A)
/// put in as A's current certificate: the CA must not re-certify that key.
#[test]
fn renewal_and_rotation_recertify_only_what_the_ca_certified() {
    let victim = Installation::new(&[(A, "ed25519")]);
    let status: Value = serde_json::from_str(&victim.cli(&["status"])).unwrap();
    let ca_id = status["ca_id"].as_str().unwrap();
    let attacker = Installation::with_init(&["--ca-id", ca_id], &[(A, "ed25519")]);
    let forged: Value = serde_json::from_str(&attacker.cli(&["cert", "show", A])).unwrap();
    let db = rusqlite::Connection::open(victim.dir.join("agentseal.db")).unwrap();
    let serial = forged["claims"]["jti"].as_str().unwrap();
    db.execute(
        "INSERT INTO certificates(serial, agent_id, issued_at, expires_at, encoded) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![
            serial,
            A,
            forged["claims"]["iat"].as_i64().unwrap(),
            forged["claims"]["exp"].as_i64().unwrap(),
            forged["certificate"].as_str().unwrap()
        ],
    )
    .unwrap();
    db.execute(
        "UPDATE agents SET current_serial = ?1 WHERE agent_id = ?2",
        rusqlite::params![serial, A],
    )
    .unwrap();
    drop(db);
    for args in [&["cert", "renew", A][..], &["agent", "rotate", A][..]] {
        let out = crate::common::hub::cli_output(&victim.dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("certificate is not usable"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn rotation_revokes_every_certificate_of_the_old_keys_and_a_grace_can_be_cut_short() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let sign = || {
        installation.cli(&[
            "token", "sign", "--agent", A, "--action", "deploy", "--aud", "svc",
        ])
    };
    let verify = |token: &str| -> Value {
        let out =
            crate::common::hub::cli_output(&installation.dir, &["verify", token, "--aud", "svc"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // A token under the first certificate, then a renewal (same keys), then a rotation.
    let first = sign();
    installation.cli(&["cert", "renew", A]);
    let second = sign();
    let rotated: Value =
        serde_json::from_str(&installation.cli(&["agent", "rotate", A, "--grace", "7d"])).unwrap();
    assert_eq!(
        rotated["revoked_serials"].as_array().unwrap().len(),
        2,
        "{rotated}"
    );
    assert_eq!(verify(&first)["valid"], true, "in the grace");
    // The leaked key turns out to matter: revoking now cuts the grace short.
    installation.cli(&["revoke", "cert", A, "--reason", "leaked after all"]);
    for token in [&first, &second] {
        let refused = verify(token);
        assert_eq!(
            refused["reasons"],
            json!(["certificate_revoked"]),
            "{refused}"
        );
    }
}

#[test]
fn a_server_refuses_ca_keys_the_key_store_does_not_hold() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let serve = |installation: &Installation| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
            .arg("--data-dir")
            .arg(&installation.dir)
            .args(["--key-store", "keyutils", "serve", "--agent", A])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let db = || rusqlite::Connection::open(installation.dir.join("agentseal.db")).unwrap();
    // An extra trusted key, added as an earlier generation.
    let stranger = Installation::new(&[]);
    let jwks: Value = serde_json::from_str(&stranger.cli(&["jwks"])).unwrap();
    installation.cli(&["ca", "rotate"]);
    let before: String = db()
        .query_row(
            "SELECT value FROM meta WHERE key = 'ca_previous_jwks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut previous: Value = serde_json::from_str(&before).unwrap();
    previous[0]["keys"]["keys"]
        .as_array_mut()
        .unwrap()
        .push(jwks["keys"][0].clone());
    db().execute(
        "UPDATE meta SET value = ?1 WHERE key = 'ca_previous_jwks'",
        [previous.to_string()],
    )
    .unwrap();
    let (code, stderr) = serve(&installation);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not the key store's"), "{stderr}");
    // The database put back to before the rotation.
    db().execute(
        "UPDATE meta SET value = ?1 WHERE key = 'ca_previous_jwks'",
        [before.as_str()],
    )
    .unwrap();
    let gen0 = previous[0]["keys"].clone();
    let mut gen0 = gen0;
    gen0["keys"].as_array_mut().unwrap().pop();
    db().execute_batch("DELETE FROM meta WHERE key IN ('ca_previous_jwks', 'ca_generation')")
        .unwrap();
    db().execute(
        "UPDATE meta SET value = ?1 WHERE key = 'ca_jwks'",
        [gen0.to_string()],
    )
    .unwrap();
    let (code, stderr) = serve(&installation);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("put back to before a rotation"), "{stderr}");
}
