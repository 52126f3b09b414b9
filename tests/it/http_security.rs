//! The HTTP hub's authorization and transport safety, against a real hub process on 127.0.0.1:
//! each check here fails if the check it names is removed from the hub.
#![cfg(target_os = "linux")]

use std::time::Duration;

use crate::common;

use crate::common::hub::{
    Answer, Hub, Installation, call_tool, initialize_request, mcp_request, mcp_request_to, send,
    structured,
};
use agentseal::crypto::{Algorithm, SigningKey};
use agentseal::keystore::{self, KeyName, KeyStoreKind};
use agentseal::token::access::{self, AccessClaims};
use reqwest::StatusCode;
use serde_json::{Value, json};

const A: &str = "agent://acme.example/alice";
const B: &str = "agent://acme.example/bob";

/// Asserts a 401 whose challenge points at the resource metadata and, if given, names `code`.
fn assert_unauthorized(answer: &Answer, hub: &Hub, code: Option<&str>) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    let challenge = answer.www_authenticate();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(&format!(
                "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
                hub.url
            )),
        "{challenge}"
    );
    if let Some(code) = code {
        assert!(challenge.contains(code), "{challenge} lacks {code}");
    }
}

/// An access token signed with this installation's CA key, with claims of the test's choosing
/// (the CLI refuses to issue expired or foreign ones).
fn forge(installation: &Installation, adjust: impl FnOnce(&mut AccessClaims)) -> String {
    let store = agentseal::store::Store::open(&installation.dir.join("agentseal.db")).unwrap();
    let install = store.meta("install_id").unwrap().unwrap();
    let status: Value = serde_json::from_str(&installation.cli(&["status"])).unwrap();
    let keys = keystore::open(KeyStoreKind::Keyutils, &installation.dir).unwrap();
    let seed = keys
        .get(&KeyName::ca(&install, Algorithm::Ed25519))
        .unwrap();
    let ca = SigningKey::from_seed(Algorithm::Ed25519, &seed);
    let now = agentseal::clock::now();
    let mut claims = AccessClaims {
        iss: status["ca_id"].as_str().unwrap().to_owned(),
        sub: A.to_owned(),
        aud: String::new(),
        client_id: A.to_owned(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: format!("forged-{now}"),
        scope: "agentseal:sign agentseal:verify agentseal:revoke".into(),
    };
    adjust(&mut claims);
    access::issue(&claims, &ca).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_access_token_get_401_with_the_metadata_pointer() {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    let hub = installation.serve(&[]);

    // No token at all.
    let answer = call_tool(&hub, None, "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, None);
    // The metadata it points at names this hub's MCP endpoint as the resource (RFC 9728).
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        hub.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(metadata["resource"], hub.mcp_url());
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));

    // Malformed tokens and schemes.
    for bad in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let answer = call_tool(&hub, Some(bad), "whoami", json!({})).await;
        assert_unauthorized(&answer, &hub, Some("invalid_token"));
    }
    let token = installation.access_token(&hub, A, &[]);
    let answer = send(
        mcp_request(
            &hub,
            "tools/call",
            Some("whoami"),
            json!({"name": "whoami", "arguments": {}}),
        )
        .header("authorization", format!("Basic {token}")),
    )
    .await;
    assert_unauthorized(&answer, &hub, Some("invalid_request"));

    // Expired (beyond the 60 s clock skew), not yet valid, foreign audience.
    let expired = forge(&installation, |c| {
        c.aud = hub.mcp_url();
        c.iat -= 600;
        c.nbf -= 600;
        c.exp = c.iat + 60;
    });
    let answer = call_tool(&hub, Some(&expired), "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, Some("expired"));
    let future = forge(&installation, |c| {
        c.aud = hub.mcp_url();
        c.nbf += 600;
    });
    let answer = call_tool(&hub, Some(&future), "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, Some("not_yet_valid"));
    let foreign = installation.cli(&[
        "access-token",
        "issue",
        "--agent",
        A,
        "--audience",
        "http://127.0.0.1:1/mcp",
    ]);
    let answer = call_tool(&hub, Some(&foreign), "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, Some("wrong_audience"));
    // A token whose agent claims disagree.
    let confused = forge(&installation, |c| {
        c.aud = hub.mcp_url();
        c.client_id = B.to_owned();
    });
    let answer = call_tool(&hub, Some(&confused), "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, Some("malformed"));

    // Another CA's token for this very hub URL.
    let other = Installation::new(&[(A, "ed25519")]);
    let stranger = other.cli(&[
        "access-token",
        "issue",
        "--agent",
        A,
        "--audience",
        &hub.mcp_url(),
    ]);
    let answer = call_tool(&hub, Some(&stranger), "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, Some("unknown_issuer"));

    // Never from the query string, even a valid token.
    let answer = send(mcp_request_to(
        &format!("{}?access_token={token}", hub.mcp_url()),
        "tools/call",
        Some("whoami"),
        json!({"name": "whoami", "arguments": {}}),
    ))
    .await;
    assert_unauthorized(&answer, &hub, Some("invalid_request"));

    // The same token in the header works.
    let me = structured(&call_tool(&hub, Some(&token), "whoami", json!({})).await);
    assert_eq!(me["agent_id"], A);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_access_token_is_refused_at_once() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&[]);
    let token = installation.access_token(&hub, A, &[]);
    structured(&call_tool(&hub, Some(&token), "whoami", json!({})).await);
    installation.cli(&["revoke", "token", &token, "--reason", "leaked"]);
    let answer = call_tool(&hub, Some(&token), "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, Some("revoked"));

    // Revoking the agent's certificate cuts off its other access tokens too.
    let other = installation.access_token(&hub, A, &[]);
    structured(&call_tool(&hub, Some(&other), "whoami", json!({})).await);
    installation.cli(&["revoke", "cert", A, "--reason", "compromised"]);
    let answer = call_tool(&hub, Some(&other), "whoami", json!({})).await;
    assert_unauthorized(&answer, &hub, Some("certificate_revoked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_token_acts_as_its_own_agent_only() {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    let hub = installation.serve(&[]);
    let alice = installation.access_token(&hub, A, &[]);
    let bob = installation.access_token(&hub, B, &[]);

    // Alice's token signs as Alice, Bob's as Bob; nothing in a call chooses the agent.
    for (token, agent) in [(&alice, A), (&bob, B)] {
        let signed = structured(
            &call_tool(
                &hub,
                Some(token),
                "sign_action",
                json!({"action": "deploy", "audience": "svc"}),
            )
            .await,
        );
        let verdict = installation.cli(&[
            "verify",
            signed["token"].as_str().unwrap(),
            "--aud",
            "svc",
            "--action",
            "deploy",
        ]);
        let verdict: Value = serde_json::from_str(&verdict).unwrap();
        assert_eq!(verdict["claims"]["iss"], agent);
        assert_eq!(verdict["claims"]["sub"], agent);
    }
    // An attempt to name the other agent is refused as bad input, not obeyed.
    let answer = call_tool(
        &hub,
        Some(&alice),
        "sign_action",
        json!({"action": "deploy", "audience": "svc", "agent": B}),
    )
    .await;
    assert_eq!(answer.message()["error"]["code"], -32602, "{}", answer.body);

    // Sessions belong to the agent that opened them: Bob cannot use or close Alice's.
    let init = send(initialize_request(&hub, &alice)).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let session = init.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let on_session = |token: &str, method: reqwest::Method| {
        reqwest::Client::new()
            .request(method, hub.mcp_url())
            .bearer_auth(token)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
    };
    let hijack = send(
        on_session(&bob, reqwest::Method::POST)
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
    )
    .await;
    assert_eq!(hijack.status, StatusCode::NOT_FOUND, "{}", hijack.body);
    let close = send(on_session(&bob, reqwest::Method::DELETE)).await;
    assert_eq!(close.status, StatusCode::NOT_FOUND, "{}", close.body);
    // The owner's session is intact.
    let own = send(
        on_session(&alice, reqwest::Method::POST)
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
    )
    .await;
    assert!(own.status.is_success(), "{}: {}", own.status, own.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_limit_what_a_token_may_do_with_403() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&[]);
    let verify_only = installation.access_token(&hub, A, &["--scope", "agentseal:verify"]);
    // Verification tools work.
    structured(&call_tool(&hub, Some(&verify_only), "whoami", json!({})).await);
    // Signing and revoking do not.
    for (tool, arguments, scope) in [
        (
            "sign_action",
            json!({"action": "deploy", "audience": "svc"}),
            "agentseal:sign",
        ),
        ("present_certificate", json!({}), "agentseal:sign"),
        (
            "revoke",
            json!({"own_certificate": true, "reason": "x"}),
            "agentseal:revoke",
        ),
    ] {
        let answer = call_tool(&hub, Some(&verify_only), tool, arguments).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{tool}: {}",
            answer.body
        );
        let challenge = answer.www_authenticate();
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && challenge.contains(&format!("scope=\"{scope}\"")),
            "{challenge}"
        );
    }
    // A batch cannot smuggle a call past the check.
    let answer = send(
        reqwest::Client::new()
            .post(hub.mcp_url())
            .bearer_auth(&verify_only)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&json!([
                {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": "sign_action", "arguments": {"action": "a", "audience": "b"}}},
            ])),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    // The certificate is still not revoked.
    let status: Value =
        serde_json::from_str(&installation.cli(&["check-revocation", "certificate", A])).unwrap();
    assert_eq!(status["revoked"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_origins_get_403_and_oversized_bodies_are_refused() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&["--allow-origin", "https://console.acme.example"]);
    let token = installation.access_token(&hub, A, &[]);
    let whoami = || {
        mcp_request(
            &hub,
            "tools/call",
            Some("whoami"),
            json!({"name": "whoami", "arguments": {}}),
        )
        .bearer_auth(&token)
    };
    let foreign = send(whoami().header("origin", "https://evil.example")).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{}", foreign.body);
    for allowed in [hub.url.as_str(), "https://console.acme.example"] {
        let answer = send(whoami().header("origin", allowed)).await;
        assert_eq!(answer.status, StatusCode::OK, "{allowed}: {}", answer.body);
    }
    // A foreign Host (DNS rebinding) too.
    let rebound = send(whoami().header("host", "evil.example")).await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN, "{}", rebound.body);

    // Bodies above the 1 MiB default limit are refused before parsing.
    let padding = "x".repeat(2 << 20);
    let answer = call_tool(
        &hub,
        Some(&token),
        "sign_action",
        json!({"action": "deploy", "audience": "svc", "arguments": {"pad": padding}}),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    // And the hub still serves.
    structured(&call_tool(&hub, Some(&token), "whoami", json!({})).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn running_without_authorization_is_explicit_and_loopback_only() {
    let installation = Installation::new(&[(A, "ed25519")]);
    // Refused off loopback.
    let out = common::hub::cli_output(
        &installation.dir,
        &[
            "serve",
            "--http",
            "0.0.0.0:0",
            "--insecure-no-auth",
            "--agent",
            A,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // On loopback it serves the one agent, and says so loudly.
    let hub = installation.serve(&["--insecure-no-auth", "--agent", A]);
    let me = structured(&call_tool(&hub, None, "whoami", json!({})).await);
    assert_eq!(me["agent_id"], A);
    assert!(hub.log().contains("WITHOUT AUTHORIZATION"), "{}", hub.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_open_unbounded_sessions() {
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519")]);
    let hub = installation.serve(&[]);
    let alice = installation.access_token(&hub, A, &[]);
    let bob = installation.access_token(&hub, B, &[]);
    let initialize = |token: &str| initialize_request(&hub, token);
    let mut sessions = Vec::new();
    for _ in 0..64 {
        let answer = send(initialize(&alice)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        sessions.push(
            answer.headers["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let refused = send(initialize(&alice)).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    // Other agents are not affected, and closing a session frees a place.
    assert_eq!(send(initialize(&bob)).await.status, StatusCode::OK);
    let closed = send(
        reqwest::Client::new()
            .delete(hub.mcp_url())
            .bearer_auth(&alice)
            .header("mcp-session-id", &sessions[0])
            .header("mcp-protocol-version", "2025-11-25"),
    )
    .await;
    assert!(closed.status.is_success(), "{}", closed.status);
    assert_eq!(send(initialize(&alice)).await.status, StatusCode::OK);
}

/// The hub's address, `127.0.0.1:PORT`, for raw TCP clients.
fn socket_address(hub: &Hub) -> String {
    hub.url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Whether the hub closed `stream` (end of file or a reset) within `deadline`, while the client
/// keeps sending one header byte every 200 ms and never finishes the header.
async fn closed_while_trickling(mut stream: tokio::net::TcpStream, deadline: Duration) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let header = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'));
    let until = tokio::time::Instant::now() + deadline;
    let mut buffer = [0u8; 512];
    for byte in header {
        if tokio::time::Instant::now() > until {
            return false;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        // Nothing to read yet, or an answer (the hub may send 408 before it closes): go on.
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_header_connections_are_closed_while_other_clients_are_served() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&["--header-timeout", "2s"]);
    let token = installation.access_token(&hub, A, &[]);
    let address = socket_address(&hub);
    let mut slow = Vec::new();
    for _ in 0..200 {
        let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        // Well past the 2 s header timeout, so a hub without one fails the test.
        slow.push(tokio::spawn(closed_while_trickling(
            stream,
            Duration::from_secs(20),
        )));
    }
    // Normal clients are served meanwhile.
    for _ in 0..5 {
        let me = structured(&call_tool(&hub, Some(&token), "whoami", json!({})).await);
        assert_eq!(me["agent_id"], A);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut open = 0;
    for task in slow {
        if !task.await.unwrap() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} of 200 slow connections were never closed");
    let me = structured(&call_tool(&hub, Some(&token), "whoami", json!({})).await);
    assert_eq!(me["agent_id"], A);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&["--max-connections", "3", "--header-timeout", "60s"]);
    let address = socket_address(&hub);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // Let the hub accept the three before the fourth client arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("{}/healthz", hub.url);
    let fourth = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !fourth.is_finished(),
        "a fourth connection was served at a cap of 3"
    );
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(20), fourth)
        .await
        .expect("served once a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn the_hub_raises_its_soft_open_file_limit_to_the_hard_limit() {
    use std::io::BufRead as _;
    let installation = Installation::new(&[(A, "ed25519")]);
    // Started with a soft limit of 256, below any hard limit a test machine has.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(&installation.dir)
        .args(["--key-store", "keyutils", "serve", "--http", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let listening = stderr
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("agentseal: listening on "));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the hub did not start");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "{line}");
    assert_eq!(soft, hard, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_json_gets_a_json_rpc_parse_error() {
    let installation = Installation::new(&[(A, "ed25519")]);
    let hub = installation.serve(&[]);
    let token = installation.access_token(&hub, A, &[]);
    for body in [
        r#"{"jsonrpc":"2.0","id":7,"method":"#,
        "not json",
        "{\"a\":1} trailing",
    ] {
        let answer = send(
            mcp_request(&hub, "tools/call", Some("whoami"), json!({}))
                .bearer_auth(&token)
                .body(body),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
        let reply = answer.message();
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
        assert_eq!(reply["id"], Value::Null, "{reply}");
        assert_eq!(reply["error"]["code"], -32700, "{reply}");
    }
    // The same call with a well-formed body is answered.
    let me = structured(&call_tool(&hub, Some(&token), "whoami", json!({})).await);
    assert_eq!(me["agent_id"], A);
}
