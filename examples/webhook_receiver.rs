//! A webhook receiver for agentseal's signals: checks each webhook as Standard Webhooks asks
//! (signature, timestamp within 5 minutes, each id once) and prints the events it accepts.
//!
//! ```text
//! agentseal signals webhook http://127.0.0.1:8787/hooks      # prints {"secret": "whsec_..."}
//! AGENTSEAL_WEBHOOK_SECRET=whsec_... cargo run --example webhook_receiver -- 127.0.0.1:8787
//! agentseal revoke cert agent://acme.example/old --reason retired   # with a server running
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use agentseal::signals::{WebhookSecret, verify};
use axum::http::{HeaderMap, StatusCode};

/// How far a webhook's timestamp may be from this clock.
const TOLERANCE_SECONDS: i64 = 300;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8787".into());
    let secret = WebhookSecret::parse(&std::env::var("AGENTSEAL_WEBHOOK_SECRET").map_err(
        |_| "set AGENTSEAL_WEBHOOK_SECRET to the secret `agentseal signals webhook` printed",
    )?)?;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (secret, seen) = (secret.clone(), seen.clone());
            async move { receive(&secret, &seen, &headers, &body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("receiving webhooks at http://{addr}/hooks");
    axum::serve(listener, app).await?;
    Ok(())
}

/// 2xx tells agentseal the webhook arrived; anything else makes it retry later.
fn receive(
    secret: &WebhookSecret,
    seen: &Mutex<HashSet<String>>,
    headers: &HeaderMap,
    body: &str,
) -> StatusCode {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(sent) = timestamp.parse::<i64>() else {
        return StatusCode::BAD_REQUEST;
    };
    if (agentseal::clock::now() - sent).abs() > TOLERANCE_SECONDS
        || !verify(secret, id, sent, body, signature)
    {
        eprintln!("refused a webhook that does not check out");
        return StatusCode::UNAUTHORIZED;
    }
    // Delivery is at least once: a retried webhook keeps its id.
    if !seen.lock().unwrap().insert(id.to_owned()) {
        return StatusCode::OK;
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(event) => println!(
            "{} {}: {}",
            event["timestamp"], event["type"], event["data"]
        ),
        Err(_) => return StatusCode::BAD_REQUEST,
    }
    StatusCode::OK
}
