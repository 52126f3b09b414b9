//! Replay protection: `verify_peer` with `consume: true` records the token id until it expires;
//! any later verification of it answers `replayed`, also after the server restarts.
#![cfg(target_os = "linux")]

use crate::common::hub::{Hub, Installation, call_tool, structured};
use serde_json::{Value, json};

const A: &str = "agent://acme.example/alice";
const B: &str = "agent://acme.example/bob";

async fn verify(hub: &Hub, bob: &str, token: &str, consume: bool) -> Value {
    structured(
        &call_tool(
            hub,
            Some(bob),
            "verify_peer",
            json!({"token": token, "expected_action": "refund", "consume": consume}),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumed_token_is_replayed_ever_after_even_across_restarts() {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    let mut hub = installation.serve(&[]);
    let bob = installation.access_token(&hub, B, &[]);
    let sign = || {
        installation.cli(&[
            "token", "sign", "--agent", A, "--action", "refund", "--aud", B,
        ])
    };
    let token = sign();

    // Looking is not using: verifying without consume leaves the token usable.
    assert_eq!(verify(&hub, &bob, &token, false).await["valid"], true);
    let first = verify(&hub, &bob, &token, true).await;
    assert_eq!(first["valid"], true, "{first}");
    // The second use, and any later look, is a replay.
    for consume in [true, false] {
        let again = verify(&hub, &bob, &token, consume).await;
        assert_eq!(again["valid"], false);
        assert_eq!(again["reasons"], json!(["replayed"]), "{again}");
    }
    // A token that fails another check is not recorded: it stays refused for its own reason.
    let wrong = structured(
        &call_tool(
            &hub,
            Some(&bob),
            "verify_peer",
            json!({"token": sign(), "expected_action": "delete", "consume": true}),
        )
        .await,
    );
    assert_eq!(wrong["reasons"], json!(["wrong_action"]), "{wrong}");

    // Other tokens are unaffected.
    let other = sign();
    assert_eq!(verify(&hub, &bob, &other, true).await["valid"], true);

    // After a restart the record is still there.
    assert!(hub.terminate().success());
    let hub = installation.serve(&[]);
    let bob = installation.access_token(&hub, B, &[]);
    for used in [&token, &other] {
        let after = verify(&hub, &bob, used, true).await;
        assert_eq!(after["reasons"], json!(["replayed"]), "{after}");
    }
}
