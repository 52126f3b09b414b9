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
