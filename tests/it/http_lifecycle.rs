//! The HTTP hub's life: it starts on a fresh machine with embedded defaults, and on SIGTERM
//! calls in flight finish, the process exits 0, and every revocation it acknowledged is in the
//! database afterwards.
#![cfg(target_os = "linux")]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::hub::{Installation, try_call_tool};
use reqwest::StatusCode;
use serde_json::{Value, json};

const A: &str = "agent://acme.example/alice";

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_calls_and_loses_no_acknowledged_revocation() {
    let installation = Installation::new(&[(A, "ed25519")]);
    // Signing as fast as it can, one agent would hit the default policy's rate limit.
    std::fs::write(
        installation.dir.join("policy.rego"),
        "package agentseal\ndefault decision := {\"allow\": true}\n",
    )
    .unwrap();
    let mut hub = installation.serve(&[]);
    let token = Arc::new(installation.access_token(&hub, A, &[]));
    let url = Arc::new(hub.mcp_url());
    let started = Arc::new(AtomicUsize::new(0));

    // Clients that sign then revoke, again and again, while the hub is told to stop.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (token, url, started) = (token.clone(), url.clone(), started.clone());
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            loop {
                let Ok(signed) = try_call_tool(
                    &url,
                    Some(&token),
                    "sign_action",
                    json!({"action": "deploy", "audience": "svc"}),
                )
                .await
                else {
                    break;
                };
                if signed.status != StatusCode::OK {
                    break;
                }
                let token_text = signed.message()["result"]["structuredContent"]["token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                started.fetch_add(1, Ordering::SeqCst);
                let Ok(revoked) = try_call_tool(
                    &url,
                    Some(&token),
                    "revoke",
                    json!({"token": token_text, "reason": "shutdown test"}),
                )
                .await
                else {
                    break;
                };
                if revoked.status != StatusCode::OK {
                    break;
                }
                let message = revoked.message();
                let Some(ids) = message["result"]["structuredContent"]["ids"].as_array() else {
                    break;
                };
                acknowledged.extend(ids.iter().map(|id| id.as_str().unwrap().to_owned()));
            }
            acknowledged
        }));
    }
    while started.load(Ordering::SeqCst) < 16 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = hub.terminate();
        (status, hub.log())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit {:?}: {}", status.0, status.1);
    assert!(status.1.contains("shutting down"), "{}", status.1);

    let mut acknowledged: Vec<String> = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert!(!acknowledged.is_empty());
    for jti in &acknowledged {
        let status: Value =
            serde_json::from_str(&installation.cli(&["check-revocation", "token", jti])).unwrap();
        assert_eq!(
            status["revoked"], true,
            "acknowledged revocation of {jti} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_starts_on_a_fresh_data_directory_and_serves_agents_created_later() {
    let installation = Installation::empty();
    let hub = installation.serve(&[]);
    assert!(hub.log().contains("new installation"), "{}", hub.log());
    let health: Value = get_json(format!("{}/healthz", hub.url)).await;
    assert_eq!(health["status"], "ok");
    // The default CA is hybrid: its JWKS has an OKP and an AKP key.
    let jwks: Value = get_json(format!("{}/.well-known/jwks.json", hub.url)).await;
    let types: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["OKP", "AKP"]);
    // An agent the operator creates while the hub runs is served at once.
    installation.cli(&["agent", "create", A]);
    let token = installation.access_token(&hub, A, &[]);
    let me = common::hub::structured(
        &common::hub::call_tool(&hub, Some(&token), "whoami", json!({})).await,
    );
    assert_eq!(me["agent_id"], A);
    // Its key is published for fleet verifiers too.
    let jwks: Value = get_json(format!("{}/.well-known/jwks.json", hub.url)).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}
