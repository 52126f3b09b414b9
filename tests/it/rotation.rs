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
