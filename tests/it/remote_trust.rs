//! Two hubs: hub B trusts hub A's CA, fetched over HTTP. After a revocation at A, B rejects
//! the revoked token and certificate once it has refreshed; with A stopped past the grace, B
//! fails closed with `revocation_unavailable`.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use crate::common::hub::{Hub, Installation, call_tool, structured};
use serde_json::{Value, json};

const ALICE: &str = "agent://a.example/alice";
const BOB: &str = "agent://b.example/bob";

/// Bob's verdict on a token Alice signed for him, with her certificate.
async fn verdict(hub: &Hub, bob: &str, token: &str, certificate: &str) -> Value {
    structured(
        &call_tool(
            hub,
            Some(bob),
            "verify_peer",
            json!({
                "token": token,
                "certificate": certificate,
                "expected_action": "deploy",
            }),
        )
        .await,
    )
}

/// Polls Bob's verdict until `done` holds (at most 30 s: the lists here last 2 s, and a hub he
/// trusts may take a refresh to follow); `what` names the wait in a failure.
async fn until(
    hub: &Hub,
    bob: &str,
    token: &str,
    certificate: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let verdict = verdict(hub, bob, token, certificate).await;
        if done(&verdict) {
            return verdict;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}; last verdict {verdict}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls until Bob's verdict names `reason`.
async fn until_reason(hub: &Hub, bob: &str, token: &str, certificate: &str, reason: &str) -> Value {
    let what = format!("saw {reason}");
    until(hub, bob, token, certificate, &what, |v| {
        v["reasons"] == json!([reason])
    })
    .await
}

/// Polls until Bob's verdict is valid.
async fn until_valid(hub: &Hub, bob: &str, token: &str, certificate: &str) -> Value {
    until(hub, bob, token, certificate, "valid", |v| {
        v["valid"] == true
    })
    .await
}

/// Polls until Bob's verdict is invalid.
async fn until_invalid(hub: &Hub, bob: &str, token: &str, certificate: &str) -> Value {
    until(hub, bob, token, certificate, "refused", |v| {
        v["valid"] == false
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verifier_hub_follows_the_issuing_hubs_revocations_and_fails_closed_without_them() {
    let a = Installation::new(&[(ALICE, "ed25519")]);
    let mut hub_a = a.serve(&["--crl-validity", "2s"]);
    let b = Installation::new(&[(BOB, "ed25519")]);
    let hub_b = b.serve(&["--trust-hub", &hub_a.url, "--trust-grace", "2s"]);
    let bob = b.access_token(&hub_b, BOB, &[]);

    let shown: Value = serde_json::from_str(&a.cli(&["cert", "show", ALICE])).unwrap();
    let certificate = shown["certificate"].as_str().unwrap().to_owned();
    let serial = shown["claims"]["jti"].as_str().unwrap().to_owned();
    let sign = || {
        a.cli(&[
            "token", "sign", "--agent", ALICE, "--action", "deploy", "--aud", BOB,
        ])
    };

    // Valid, verified against hub A's CA and list, which the verdict describes.
    let first = sign();
    let valid = verdict(&hub_b, &bob, &first, &certificate).await;
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["agent_id"], ALICE);
    assert_eq!(valid["revocation_freshness"]["source"], "crl");
    assert!(
        valid["revocation_freshness"]["next_update"]
            .as_i64()
            .is_some()
    );
    // Without the trust, hub B knows nothing of A's CA.
    let unaware = b.serve(&[]);
    let bob_unaware = b.access_token(&unaware, BOB, &[]);
    let stranger = verdict(&unaware, &bob_unaware, &first, &certificate).await;
    assert_eq!(stranger["reasons"], json!(["unknown_issuer"]), "{stranger}");

    // A token revoked at hub A is rejected at B after its next refresh.
    a.cli(&["revoke", "token", &first, "--reason", "leaked"]);
    until_reason(&hub_b, &bob, &first, &certificate, "revoked").await;
    let status = structured(
        &call_tool(
            &hub_b,
            Some(&bob),
            "check_revocation",
            json!({"token": first}),
        )
        .await,
    );
    assert_eq!(status["revoked"], true, "{status}");
    assert_eq!(status["freshness"]["source"], "crl");

    // So is everything signed under a certificate revoked at A.
    let second = sign();
    assert_eq!(
        verdict(&hub_b, &bob, &second, &certificate).await["valid"],
        true
    );
    a.cli(&["revoke", "cert", &serial, "--reason", "key compromise"]);
    until_reason(&hub_b, &bob, &second, &certificate, "certificate_revoked").await;
    let status = structured(
        &call_tool(
            &hub_b,
            Some(&bob),
            "check_revocation",
            json!({"certificate": certificate}),
        )
        .await,
    );
    assert_eq!(status["revoked"], true, "{status}");
    assert_eq!(status["freshness"]["source"], "crl");
    // A bare serial says nothing of its issuer: it is answered from B's own records only.
    let local = structured(
        &call_tool(
            &hub_b,
            Some(&bob),
            "check_revocation",
            json!({"serial": serial}),
        )
        .await,
    );
    assert_eq!(local["freshness"]["source"], "local", "{local}");

    // Hub A goes away: once its last list is older than next_update + grace, B fails closed.
    assert!(hub_a.terminate().success());
    until_reason(
        &hub_b,
        &bob,
        &second,
        &certificate,
        "revocation_unavailable",
    )
    .await;
    let answer = call_tool(
        &hub_b,
        Some(&bob),
        "check_revocation",
        json!({"certificate": certificate}),
    )
    .await;
    let message = answer.message();
    assert!(
        message["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("revocation_unavailable")),
        "{message}"
    );
}

/// A trusted hub cannot speak for the verifier's own agents: not by taking the verifier's CA
/// id, nor by certifying one of its agent ids under its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_hub_cannot_impersonate_the_verifiers_own_agents() {
    let home = Installation::new(&[(ALICE, "ed25519"), (BOB, "ed25519")]);
    let status: Value = serde_json::from_str(&home.cli(&["status"])).unwrap();
    let ca_id = status["ca_id"].as_str().unwrap().to_owned();
    let sign = |installation: &Installation| {
        installation.cli(&[
            "token", "sign", "--agent", ALICE, "--action", "deploy", "--aud", BOB,
        ])
    };
    let certificate = |installation: &Installation| {
        let shown: Value =
            serde_json::from_str(&installation.cli(&["cert", "show", ALICE])).unwrap();
        shown["certificate"].as_str().unwrap().to_owned()
    };
    for (init, expected) in [
        (vec!["--ca-id", ca_id.as_str()], "bad_signature"),
        (vec![], "unknown_issuer"),
    ] {
        let rogue = Installation::with_init(&init, &[(ALICE, "ed25519")]);
        let rogue_hub = rogue.serve(&["--crl-validity", "1m"]);
        let hub = home.serve(&["--trust-hub", &rogue_hub.url]);
        let bob = home.access_token(&hub, BOB, &[]);
        let forged = verdict(&hub, &bob, &sign(&rogue), &certificate(&rogue)).await;
        assert_eq!(forged["valid"], false, "{init:?}: {forged}");
        assert_eq!(forged["reasons"], json!([expected]), "{init:?}: {forged}");
        // The real Alice still verifies.
        let real = verdict(&hub, &bob, &sign(&home), &certificate(&home)).await;
        assert_eq!(real["valid"], true, "{init:?}: {real}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verifier_hub_follows_a_ca_key_rotation_endorsed_by_the_old_keys_and_a_retirement() {
    let a = Installation::new(&[(ALICE, "ed25519")]);
    let hub_a = a.serve(&["--crl-validity", "2s"]);
    let b = Installation::new(&[(BOB, "ed25519")]);
    let hub_b = b.serve(&["--trust-hub", &hub_a.url, "--trust-grace", "2s"]);
    let bob = b.access_token(&hub_b, BOB, &[]);
    let certificate_of = |agent: &str| {
        let shown: Value = serde_json::from_str(&a.cli(&["cert", "show", agent])).unwrap();
        shown["certificate"].as_str().unwrap().to_owned()
    };
    let sign = |agent: &str| {
        a.cli(&[
            "token", "sign", "--agent", agent, "--action", "deploy", "--aud", BOB,
        ])
    };
    let old_certificate = certificate_of(ALICE);
    let old_token = sign(ALICE);
    let valid = verdict(&hub_b, &bob, &old_token, &old_certificate).await;
    assert_eq!(valid["valid"], true, "{valid}");

    // A rotates its CA keys while both hubs run; an agent created now is certified by the new
    // keys. Hub A follows the database, hub B follows hub A on the old keys' word.
    let rotated: Value = serde_json::from_str(&a.cli(&["ca", "rotate"])).unwrap();
    let old_kid = rotated["previous_key_ids"][0].as_str().unwrap().to_owned();
    const CAROL: &str = "agent://a.example/carol";
    a.cli(&["agent", "create", CAROL, "--alg", "ed25519"]);
    let new_certificate = certificate_of(CAROL);
    let new_token = sign(CAROL);
    until_valid(&hub_b, &bob, &new_token, &new_certificate).await;
    let anchor: Value = reqwest::get(format!("{}/.well-known/agentseal-ca.json", hub_a.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        anchor["keys"].as_array().unwrap().len(),
        2,
        "old and new keys: {anchor}"
    );
    assert!(anchor["rotation"].is_string(), "{anchor}");
    // During the overlap, what the old keys certified still verifies.
    let valid = verdict(&hub_b, &bob, &old_token, &old_certificate).await;
    assert_eq!(valid["valid"], true, "{valid}");

    // Alice renewed under the new keys, then the old keys retired: what they certified fails
    // at hub B once it follows; Alice's renewed certificate verifies.
    a.cli(&["cert", "renew", ALICE]);
    let renewed = certificate_of(ALICE);
    a.cli(&["ca", "retire", &old_kid]);
    let refused = until_invalid(&hub_b, &bob, &old_token, &old_certificate).await;
    assert_eq!(refused["reasons"], json!(["bad_signature"]), "{refused}");
    let token = sign(ALICE);
    until_valid(&hub_b, &bob, &token, &renewed).await;
    let valid = verdict(&hub_b, &bob, &new_token, &new_certificate).await;
    assert_eq!(valid["valid"], true, "{valid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_ca_key_a_stale_document_still_shows_is_dropped_on_the_revocation_lists_word() {
    let a = Installation::new(&[(ALICE, "ed25519")]);
    let hub_a = a.serve(&[]);
    let get = |path: &str| {
        let url = format!("{}{path}", hub_a.url);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let certificate_of = || {
        let shown: Value = serde_json::from_str(&a.cli(&["cert", "show", ALICE])).unwrap();
        shown["certificate"].as_str().unwrap().to_owned()
    };
    let sign = || {
        a.cli(&[
            "token", "sign", "--agent", ALICE, "--action", "deploy", "--aud", BOB,
        ])
    };
    let old_certificate = certificate_of();
    let old_token = sign();
    let rotated: Value = serde_json::from_str(&a.cli(&["ca", "rotate"])).unwrap();
    // The document of the overlap, with the old key and the rotation statement.
    let deadline = Instant::now() + Duration::from_secs(30);
    let overlap_document = loop {
        let document = get("/.well-known/agentseal-ca.json").await;
        let parsed: Value = serde_json::from_str(&document).unwrap();
        if parsed["rotation"].is_string() && parsed["keys"].as_array().unwrap().len() == 2 {
            break document;
        }
        assert!(Instant::now() < deadline, "hub A never showed the rotation");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    a.cli(&["cert", "renew", ALICE]);
    a.cli(&[
        "ca",
        "retire",
        rotated["previous_key_ids"][0].as_str().unwrap(),
    ]);
    // Once hub A follows the retirement, its list names only the new key.
    let crl = loop {
        let crl = get("/crl").await;
        let jws = agentseal::jose::Jws::parse(&crl).unwrap();
        let claims: Value = serde_json::from_slice(&jws.payload).unwrap();
        if claims["ca_keys"] == rotated["key_ids"] {
            break crl;
        }
        assert!(
            Instant::now() < deadline,
            "hub A's list never dropped the old key: {claims}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // A stale copy of hub A (a cache, or someone in between) keeps the overlap's document but
    // must pass on the current list, which only the CA's keys can sign.
    let stale = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(stale.path().join(".well-known")).unwrap();
    std::fs::write(
        stale.path().join(".well-known/agentseal-ca.json"),
        &overlap_document,
    )
    .unwrap();
    std::fs::write(stale.path().join("crl"), &crl).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(stale.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stale_url = format!("http://127.0.0.1:{port}");
    while reqwest::get(format!("{stale_url}/crl")).await.is_err() {
        assert!(Instant::now() < deadline, "the stale copy never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Installation::new(&[(BOB, "ed25519")]);
    let hub_b = b.serve(&["--trust-hub", &stale_url]);
    let bob = b.access_token(&hub_b, BOB, &[]);
    let refused = verdict(&hub_b, &bob, &old_token, &old_certificate).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(refused["valid"], false, "{refused}");
    assert_eq!(refused["reasons"], json!(["bad_signature"]), "{refused}");
}
