//! Fifty agents at once on one HTTP hub, each in its own MCP session (rmcp's streamable HTTP
//! client) authorized by its own access token: every call acts as the agent of its own session,
//! never another's, however the requests interleave. The agents form a ring: each signs tokens
//! for the next one and verifies (and consumes, as an agent acting on them does) those the
//! previous one signed for it. Kernel keyutils key store.
#![cfg(target_os = "linux")]

use std::sync::Arc;

use crate::common::hub::Installation;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::sync::{Barrier, mpsc};

const AGENTS: usize = 50;
const ROUNDS: usize = 4;

type Session = RunningService<RoleClient, ()>;

fn agent(i: usize) -> String {
    format!("agent://fleet.example/agent-{i:02}")
}

/// A token handed from its signer to the agent it is addressed to.
struct Delivery {
    token: String,
    token_id: String,
    signer: String,
    arguments: Map<String, Value>,
}

/// One `tools/call`; a transport, JSON-RPC or tool error is returned as text.
async fn call(session: &Session, tool: &str, arguments: Value) -> Result<Value, String> {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    let result = session
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .map_err(|e| format!("{tool}: {e}"))?;
    if result.is_error == Some(true) {
        return Err(format!("{tool} failed: {result:?}"));
    }
    result
        .structured_content
        .ok_or_else(|| format!("{tool} returned no structured content"))
}

/// Session `index`'s rounds: sign for the next agent, hand the token over, verify and consume
/// the one the previous agent signed; then check that a replay of that one is refused, and so
/// is its own token, addressed to another. Returns every failure seen (a failed signature hands
/// over `None` so the ring goes on).
async fn run_session(
    index: usize,
    session: Session,
    outbox: mpsc::UnboundedSender<Option<Delivery>>,
    mut inbox: mpsc::UnboundedReceiver<Option<Delivery>>,
    start: Arc<Barrier>,
) -> Vec<String> {
    let me = agent(index);
    let next = agent((index + 1) % AGENTS);
    let mut failures = Vec::new();
    let mut last_signed = None;
    let mut last_received = None;
    // Every session starts its first call together, so that the calls interleave.
    start.wait().await;
    for round in 0..ROUNDS {
        let arguments = json!({"service": "web", "round": round, "signer": me});
        let signed = call(
            &session,
            "sign_action",
            json!({"action": "deploy", "audience": next, "arguments": arguments}),
        )
        .await;
        let delivery = signed.and_then(|r| {
            let token = r["token"].as_str().ok_or("no token")?.to_owned();
            let token_id = r["token_id"].as_str().ok_or("no token_id")?.to_owned();
            let (_, claims) =
                agentseal::token::action::parse_unverified(&token).map_err(|e| e.to_string())?;
            if (
                claims.iss.as_str(),
                claims.sub.as_str(),
                claims.aud.as_str(),
            ) != (me.as_str(), me.as_str(), next.as_str())
                || claims.jti != token_id
            {
                return Err(format!(
                    "sign_action as {me} for {next} signed iss {} sub {} aud {} jti {} \
                     (token_id {token_id})",
                    claims.iss, claims.sub, claims.aud, claims.jti
                ));
            }
            let Value::Object(arguments) = arguments else {
                unreachable!()
            };
            Ok(Delivery {
                token,
                token_id,
                signer: me.clone(),
                arguments,
            })
        });
        match delivery {
            Ok(delivery) => {
                last_signed = Some(delivery.token.clone());
                outbox.send(Some(delivery)).unwrap();
            }
            Err(e) => {
                failures.push(format!("{me} round {round}: {e}"));
                outbox.send(None).unwrap();
            }
        }

        let Some(Some(delivery)) = inbox.recv().await else {
            failures.push(format!("{me} round {round}: nothing to verify"));
            continue;
        };
        let verdict = call(
            &session,
            "verify_peer",
            json!({
                "token": delivery.token,
                "expected_action": "deploy",
                "arguments": delivery.arguments,
                "consume": true,
            }),
        )
        .await;
        match verdict {
            Ok(v)
                if v["valid"] == true
                    && v["agent_id"] == delivery.signer.as_str()
                    && v["token"]["iss"] == delivery.signer.as_str()
                    && v["token"]["aud"] == me.as_str()
                    && v["token"]["jti"] == delivery.token_id.as_str() => {}
            Ok(v) => failures.push(format!(
                "{me} round {round}: verify_peer of {}'s token {}: {v}",
                delivery.signer, delivery.token_id
            )),
            Err(e) => failures.push(format!("{me} round {round}: {e}")),
        }
        last_received = Some(delivery);
    }

    // A consumed token is not accepted twice.
    if let Some(delivery) = last_received {
        let replay = json!({
            "token": delivery.token,
            "expected_action": "deploy",
            "arguments": delivery.arguments,
            "consume": true,
        });
        match call(&session, "verify_peer", replay).await {
            Ok(v) if v["valid"] == false && v["reasons"] == json!(["replayed"]) => {}
            other => failures.push(format!(
                "{me}: replaying {}'s token {}: {other:?}",
                delivery.signer, delivery.token_id
            )),
        }
    }

    // The hub takes the verifier's identity from the access token: a token this agent signed
    // for the next one is not addressed to it.
    if let Some(token) = last_signed {
        let arguments = json!({"service": "web", "round": ROUNDS - 1, "signer": me});
        match call(
            &session,
            "verify_peer",
            json!({"token": token, "expected_action": "deploy", "arguments": arguments}),
        )
        .await
        {
            Ok(v) if v["valid"] == false && v["reasons"] == json!(["wrong_audience"]) => {}
            other => failures.push(format!(
                "{me}: verifying its own token addressed to {next}: {other:?}"
            )),
        }
    }
    if let Err(e) = session.cancel().await {
        failures.push(format!("{me}: closing the session: {e}"));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_sign_and_verify_concurrently_each_as_itself() {
    let ids: Vec<String> = (0..AGENTS).map(agent).collect();
    let specs: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "ed25519")).collect();
    let installation = Installation::new(&specs);
    let mut hub = installation.serve(&[]);
    let tokens: Vec<String> = ids
        .iter()
        .map(|id| installation.access_token(&hub, id, &[]))
        .collect();

    // Every session opens at once.
    let mut connecting = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let config =
            StreamableHttpClientTransportConfig::with_uri(hub.mcp_url()).auth_header(token);
        connecting.spawn(async move {
            let session = ().serve(StreamableHttpClientTransport::from_config(config)).await;
            (i, session)
        });
    }
    let mut sessions: Vec<Option<Session>> = (0..AGENTS).map(|_| None).collect();
    while let Some(joined) = connecting.join_next().await {
        let (i, session) = joined.unwrap();
        let session = session.unwrap_or_else(|e| {
            panic!("{} could not open a session: {e}\n{}", agent(i), hub.log())
        });
        sessions[i] = Some(session);
    }

    // The ring: session i's outbox is session i+1's inbox.
    let (outboxes, mut inboxes): (Vec<_>, Vec<_>) =
        (0..AGENTS).map(|_| mpsc::unbounded_channel()).unzip();
    inboxes.rotate_right(1);
    let start = Arc::new(Barrier::new(AGENTS));
    let mut running = tokio::task::JoinSet::new();
    for (i, ((session, outbox), inbox)) in
        sessions.into_iter().zip(outboxes).zip(inboxes).enumerate()
    {
        running.spawn(run_session(
            i,
            session.unwrap(),
            outbox,
            inbox,
            start.clone(),
        ));
    }
    let mut failures = Vec::new();
    while let Some(joined) = running.join_next().await {
        failures.extend(joined.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nhub log:\n{}",
        failures.len(),
        failures.join("\n"),
        hub.log()
    );

    // All sessions are closed: the hub stops promptly and cleanly.
    let status = hub.terminate();
    assert!(status.success(), "hub exited with {status}: {}", hub.log());
}
