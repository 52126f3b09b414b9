//! Signals: a real hub process sends Standard Webhooks to a real receiver on 127.0.0.1 in this
//! test, for events caused through MCP and by the CLI in another process; a receiver that is
//! down or stuck holds up no tool call; and the auto-revoke rule revokes an agent whose own
//! tokens keep being rejected, while forged tokens in its name do not count.
#![cfg(target_os = "linux")]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::hub::{Hub, Installation, call_tool, structured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tokio::sync::watch;

const DEPLOYER: &str = "agent://acme.example/deployer";
const PEER: &str = "agent://acme.example/peer";
const BYSTANDER: &str = "agent://acme.example/bystander";

/// Deploys allowed once an hour; refunds need a person; wiping is never allowed.
const POLICY: &str = r#"package agentseal

import rego.v1

default decision := {"allow": true}

decision := {"allow": false, "reasons": ["nobody wipes"]} if {
	input.action == "wipe"
}

decision := {"allow": true, "rate_limit": {"count": 1, "per_seconds": 3600}} if {
	input.action == "deploy"
}

decision := {"allow": true, "approval": true} if {
	input.action == "payments.refund"
}
"#;

/// One webhook as the receiver got it.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Delivery {
    pub(crate) fn payload(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: records every request at once, then answers 200 only while
/// its gate is open (a closed gate keeps each request waiting, like a stuck endpoint).
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    answered: Arc<Mutex<usize>>,
    gate: watch::Sender<bool>,
}

impl Receiver {
    pub(crate) async fn start(open: bool) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, open)
    }

    fn on(listener: tokio::net::TcpListener, open: bool) -> Receiver {
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(0));
        let (gate, watcher) = watch::channel(open);
        let (sink, count) = (got.clone(), answered.clone());
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (sink, count, mut watcher) = (sink.clone(), count.clone(), watcher.clone());
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    sink.lock().unwrap().push(Delivery {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body,
                    });
                    let _ = watcher.wait_for(|open| *open).await;
                    *count.lock().unwrap() += 1;
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            got,
            answered,
            gate,
        }
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    fn answered(&self) -> usize {
        *self.answered.lock().unwrap()
    }

    /// The deliveries once `done` holds of them; panics after a minute (a guard against a hang,
    /// not a timing check).
    pub(crate) async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.deliveries();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never arrived; got {:#?}",
                got.iter().map(Delivery::payload).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The payloads of distinct webhook ids (delivery is at least once) of type `kind`.
fn of_type(deliveries: &[Delivery], kind: &str) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    deliveries
        .iter()
        .filter(|d| seen.insert(d.id.clone()))
        .map(Delivery::payload)
        .filter(|p| p["type"] == kind)
        .collect()
}

/// Checks a delivery's signature the way a receiver would, with HMAC-SHA256 computed here
/// (not with agentseal's own verifier) over `{id}.{timestamp}.{body}`.
fn signature_checks(secret: &str, delivery: &Delivery) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", delivery.id, delivery.timestamp, delivery.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    delivery.signature.split(' ').any(|s| s == expected)
}

/// Runs `tools/interop/verify_webhooks.py` (the `standardwebhooks` library) on `request`.
fn reference_check(request: &Value) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(common::python::python())
        .arg(common::python::repo().join("tools/interop/verify_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn installation() -> Installation {
    let installation = Installation::new(&[]);
    for agent in [DEPLOYER, PEER, BYSTANDER] {
        installation.cli(&["agent", "create", agent]);
    }
    std::fs::write(installation.dir.join("policy.rego"), POLICY).unwrap();
    installation
}

/// Points the installation's webhook at `url`; returns the generated secret.
fn set_webhook(installation: &Installation, url: &str) -> String {
    let set: Value = serde_json::from_str(&installation.cli(&["signals", "webhook", url])).unwrap();
    assert_eq!(set["webhook_url"], url);
    set["secret"].as_str().unwrap().to_owned()
}

fn status(installation: &Installation) -> Value {
    serde_json::from_str(&installation.cli(&["signals", "status"])).unwrap()
}

fn certificate_revoked(installation: &Installation, agent: &str) -> bool {
    let status: Value =
        serde_json::from_str(&installation.cli(&["check-revocation", "certificate", agent]))
            .unwrap();
    status["revoked"].as_bool().unwrap()
}

async fn sign(hub: &Hub, token: &str, action: &str) -> Value {
    let answer = call_tool(
        hub,
        Some(token),
        "sign_action",
        json!({"action": action, "audience": PEER}),
    )
    .await;
    answer.message()["result"]["structuredContent"].clone()
}

async fn verify(hub: &Hub, token: &str, action_token: &str, action: &str) -> Value {
    structured(
        &call_tool(
            hub,
            Some(token),
            "verify_peer",
            json!({"token": action_token, "expected_action": action}),
        )
        .await,
    )
}

/// The same token with its signature altered: still names the deployer, but not signed by it.
fn forged(token: &str) -> String {
    let (rest, signature) = token.rsplit_once('.').unwrap();
    let mut signature: Vec<char> = signature.chars().collect();
    signature[3] = if signature[3] == 'A' { 'B' } else { 'A' };
    format!("{rest}.{}", signature.into_iter().collect::<String>())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_receiver_gets_each_event_with_a_valid_signature() {
    let receiver = Receiver::start(true).await;
    let installation = installation();
    let secret = set_webhook(&installation, &receiver.url);
    let hub = installation.serve(&[]);
    let deployer = installation.access_token(&hub, DEPLOYER, &[]);
    let peer = installation.access_token(&hub, PEER, &[]);

    // rate.limited: the second deploy within the hour.
    let signed = sign(&hub, &deployer, "deploy").await;
    let token = signed["token"].as_str().unwrap().to_owned();
    assert_eq!(
        sign(&hub, &deployer, "deploy").await["reasons"][0],
        "rate_limited"
    );
    // approval.requested: a refund, asked by a client that cannot ask a person: it waits for
    // one out of band.
    let pending = sign(&hub, &deployer, "payments.refund").await;
    assert_eq!(pending["reasons"][0], "approval_pending", "{pending}");
    // token.rejected: the peer is asked to act on the token for another action.
    let verdict = verify(&hub, &peer, &token, "delete").await;
    assert_eq!(verdict["valid"], false);
    // token.revoked: the deployer revokes its token through MCP.
    let revoked = call_tool(
        &hub,
        Some(&deployer),
        "revoke",
        json!({"token": token, "reason": "leaked"}),
    )
    .await;
    assert_eq!(structured(&revoked)["kind"], "token", "{}", revoked.body);
    // certificate.revoked: by the operator's CLI, another process than the hub that delivers.
    installation.cli(&["revoke", "cert", BYSTANDER, "--reason", "retired"]);

    let kinds = [
        "rate.limited",
        "approval.requested",
        "token.rejected",
        "token.revoked",
        "certificate.revoked",
    ];
    let got = receiver
        .wait_until("one webhook of each kind", |got| {
            kinds.iter().all(|kind| !of_type(got, kind).is_empty())
        })
        .await;

    for delivery in &got {
        assert!(
            signature_checks(&secret, delivery),
            "bad signature: {delivery:?}"
        );
        assert!(delivery.id.starts_with("msg_"), "{delivery:?}");
        let sent: i64 = delivery.timestamp.parse().unwrap();
        assert!((sent - agentseal::clock::now()).abs() < 300, "{delivery:?}");
        // Identifiers only: the token itself never leaves in a webhook.
        assert!(!delivery.body.contains(&token), "{}", delivery.body);
        assert!(!delivery.body.contains(&secret));
    }
    // Standard Webhooks' reference library (Python) accepts them too.
    let request = json!({
        "secret": secret,
        "deliveries": got.iter().map(|d| json!({
            "id": d.id, "timestamp": d.timestamp, "signature": d.signature, "body": d.body,
        })).collect::<Vec<_>>(),
    });
    let checked = reference_check(&request);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout)
            .matches("PASS")
            .count(),
        2 * got.len()
    );
    // A receiver checking signatures refuses a body that was altered on the way.
    let mut altered = got[0].clone();
    altered.body = altered.body.replace("agent", "agenT");
    assert!(!signature_checks(&secret, &altered));

    let jti = signed["token_id"].as_str().unwrap();
    let limited = &of_type(&got, "rate.limited")[0];
    assert_eq!(limited["data"]["agent_id"], DEPLOYER);
    assert_eq!(limited["data"]["action"], "deploy");
    assert!(limited["data"]["retry_after"].as_i64().unwrap() > 0);
    let approval = &of_type(&got, "approval.requested")[0];
    assert_eq!(approval["data"]["agent_id"], DEPLOYER);
    assert_eq!(approval["data"]["action"], "payments.refund");
    assert_eq!(approval["data"]["approval_id"], pending["approval_id"]);
    assert_eq!(
        approval["data"]["approve_with"],
        format!(
            "agentseal approve {}",
            pending["approval_id"].as_str().unwrap()
        )
    );
    assert_eq!(
        approval["data"]["console"],
        format!(
            "{}/console/approvals#approval-{}",
            hub.url,
            pending["approval_id"].as_str().unwrap()
        )
    );
    let rejected = &of_type(&got, "token.rejected")[0];
    assert_eq!(rejected["data"]["agent_id"], DEPLOYER);
    assert_eq!(rejected["data"]["jti"], jti);
    assert_eq!(rejected["data"]["authentic"], true);
    assert_eq!(rejected["data"]["reasons"], verdict["reasons"]);
    assert_eq!(rejected["data"]["verifier"], PEER);
    let token_revoked = &of_type(&got, "token.revoked")[0];
    assert_eq!(token_revoked["data"]["agent_id"], DEPLOYER);
    assert_eq!(token_revoked["data"]["jti"], jti);
    assert_eq!(token_revoked["data"]["reason"], "leaked");
    let cert_revoked = &of_type(&got, "certificate.revoked")[0];
    assert_eq!(cert_revoked["data"]["agent_id"], BYSTANDER);
    assert_eq!(cert_revoked["data"]["reason"], "retired");
    for payload in got.iter().map(Delivery::payload) {
        assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    // Everything delivered is marked so: nothing waits in the outbox.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&installation)["outbox"]["pending"] != 0 {
        assert!(Instant::now() < deadline, "{}", status(&installation));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The secret is in no log line of the hub.
    let key = secret.strip_prefix("whsec_").unwrap();
    assert!(!hub.log().contains(key), "{}", hub.log());
    // No webhook, no events: removing it stops new ones being recorded.
    installation.cli(&["signals", "webhook", "--remove"]);
    installation.cli(&["revoke", "cert", PEER, "--reason", "retired"]);
    assert_eq!(status(&installation)["outbox"]["pending"], 0);
    assert_eq!(status(&installation)["webhook_url"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_is_down_or_stuck_holds_up_no_tool_call() {
    // A port with nothing listening on it: every delivery is refused.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);
    let installation = installation();
    let secret = set_webhook(&installation, &format!("http://{addr}/hooks"));
    let hub = installation.serve(&[]);
    let peer = installation.access_token(&hub, PEER, &[]);

    // Each rejection records a token.rejected signal; each call still answers.
    for n in 0..3 {
        let verdict = verify(&hub, &peer, &format!("not.a.token{n}"), "deploy").await;
        assert_eq!(verdict["valid"], false);
    }
    assert_eq!(status(&installation)["outbox"]["pending"], 3);

    // The receiver comes up, but stuck: it takes requests and never answers them.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let receiver = Receiver::on(listener, false);
    receiver
        .wait_until("a retried delivery", |got| !got.is_empty())
        .await;
    for n in 3..6 {
        let verdict = verify(&hub, &peer, &format!("not.a.token{n}"), "deploy").await;
        assert_eq!(verdict["valid"], false);
    }
    // Every one of those calls answered while no delivery had been answered.
    assert_eq!(receiver.answered(), 0);

    // Unstuck, the receiver gets all six, each with a valid signature.
    receiver.gate.send(true).unwrap();
    let got = receiver
        .wait_until("all six signals", |got| {
            of_type(got, "token.rejected").len() == 6
        })
        .await;
    assert!(got.iter().all(|d| signature_checks(&secret, d)));
    let rejected = of_type(&got, "token.rejected");
    assert!(rejected.iter().all(|p| p["data"]["authentic"] == false));
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&installation)["outbox"]["pending"] != 0 {
        assert!(Instant::now() < deadline, "{}", status(&installation));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auto_revoke_rule_counts_what_the_agent_did_not_what_others_do_with_its_tokens() {
    let receiver = Receiver::start(true).await;
    let installation = installation();
    set_webhook(&installation, &receiver.url);
    installation.cli(&["signals", "auto-revoke", "--after", "3", "--within", "10m"]);
    let hub = installation.serve(&[]);
    let deployer = installation.access_token(&hub, DEPLOYER, &[]);
    let peer = installation.access_token(&hub, PEER, &[]);
    let bystander = installation.access_token(&hub, BYSTANDER, &[]);
    let signed = sign(&hub, &deployer, "build").await;
    let token = signed["token"].as_str().unwrap().to_owned();

    // Anyone can write the deployer's name into a token: forgeries are rejected and reported,
    // but do not count against the deployer.
    for _ in 0..5 {
        let verdict = verify(&hub, &peer, &forged(&token), "build").await;
        assert_eq!(verdict["reasons"], json!(["bad_signature"]));
    }
    // Nor what a verifier (or a thief of the token) can bring about: naming another action,
    // presenting the token again after consuming it, or presenting it where it was not sent.
    for _ in 0..5 {
        assert_eq!(verify(&hub, &peer, &token, "delete").await["valid"], false);
    }
    for _ in 0..4 {
        let consumed = structured(
            &call_tool(
                &hub,
                Some(&peer),
                "verify_peer",
                json!({"token": token, "expected_action": "build", "consume": true}),
            )
            .await,
        );
        assert!(consumed["valid"] == true || consumed["reasons"] == json!(["replayed"]));
    }
    for _ in 0..5 {
        let verdict = verify(&hub, &bystander, &token, "build").await;
        assert_eq!(verdict["reasons"], json!(["wrong_audience"]));
    }
    assert!(!certificate_revoked(&installation, DEPLOYER));

    // What the deployer itself asks and is refused counts: the third refusal trips the rule.
    for n in 1..=3 {
        assert_eq!(
            sign(&hub, &deployer, "wipe").await["reasons"][0],
            "policy_denied"
        );
        assert_eq!(certificate_revoked(&installation, DEPLOYER), n == 3);
    }
    // Revoked: the deployer is shut out of the hub, and its token no longer verifies.
    let refused = call_tool(
        &hub,
        Some(&deployer),
        "sign_action",
        json!({"action": "build", "audience": PEER}),
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.body.contains("certificate_revoked"),
        "{}",
        refused.body
    );
    assert_eq!(
        verify(&hub, &peer, &token, "build").await["reasons"],
        json!(["certificate_revoked"])
    );

    let got = receiver
        .wait_until("agent.auto_revoked", |got| {
            !of_type(got, "agent.auto_revoked").is_empty()
        })
        .await;
    let auto = of_type(&got, "agent.auto_revoked");
    assert_eq!(auto.len(), 1, "{auto:?}");
    assert_eq!(auto[0]["data"]["agent_id"], DEPLOYER);
    assert_eq!(auto[0]["data"]["rejections"], 3);
    assert_eq!(auto[0]["data"]["window_seconds"], 600);
    assert_eq!(auto[0]["data"]["last_reasons"], json!(["policy_denied"]));
    let forgeries = of_type(&got, "token.rejected")
        .into_iter()
        .filter(|p| p["data"]["authentic"] == false)
        .count();
    assert_eq!(forgeries, 5);
    receiver
        .wait_until("certificate.revoked", |got| {
            of_type(got, "certificate.revoked")
                .iter()
                .any(|p| p["data"]["agent_id"] == DEPLOYER)
        })
        .await;

    // The operator finds the revocation in the audit log, which still verifies.
    let export = installation.cli(&["audit", "export", "--actor", "agentseal"]);
    let record: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(record["record"]["op"], "rule.auto_revoke", "{record}");
    assert_eq!(record["record"]["details"]["agent_id"], DEPLOYER);
    let verified: Value = serde_json::from_str(&installation.cli(&["audit", "verify"])).unwrap();
    assert_eq!(verified["valid"], true);

    // Off, the rule revokes no one; and the operator's own refused requests never count.
    installation.cli(&["signals", "auto-revoke", "--off"]);
    for _ in 0..4 {
        assert_eq!(
            sign(&hub, &bystander, "wipe").await["reasons"][0],
            "policy_denied"
        );
    }
    installation.cli(&["signals", "auto-revoke", "--after", "1"]);
    for _ in 0..2 {
        let out = common::hub::cli_output(
            &installation.dir,
            &[
                "token", "sign", "--agent", BYSTANDER, "--action", "wipe", "--aud", PEER,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("denied by policy"), "{stderr}");
    }
    assert!(!certificate_revoked(&installation, BYSTANDER));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_follows_a_new_webhook_and_its_removal() {
    let (first, second) = (Receiver::start(true).await, Receiver::start(true).await);
    let installation = installation();
    let first_secret = set_webhook(&installation, &first.url);
    let _hub = installation.serve(&[]);
    installation.cli(&["revoke", "cert", BYSTANDER, "--reason", "one"]);
    first
        .wait_until("the first revocation", |got| got.len() == 1)
        .await;

    // A new URL and secret, set while the server runs: the next event goes there, signed anew.
    let second_secret = set_webhook(&installation, &second.url);
    assert_ne!(first_secret, second_secret);
    installation.cli(&["revoke", "cert", PEER, "--reason", "two"]);
    let got = second
        .wait_until("the second revocation", |got| !got.is_empty())
        .await;
    assert!(
        signature_checks(&second_secret, &got[0]),
        "first secret: {}, {got:?}",
        signature_checks(&first_secret, &got[0])
    );
    assert!(!signature_checks(&first_secret, &got[0]));
    assert_eq!(
        of_type(&got, "certificate.revoked")[0]["data"]["agent_id"],
        PEER
    );
    assert_eq!(first.deliveries().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_server_delivers_signals_too() {
    let receiver = Receiver::start(true).await;
    let installation = installation();
    let secret = set_webhook(&installation, &receiver.url);
    // A desktop client's server: it delivers what any process of the installation records.
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(&installation.dir)
        .args(["--key-store", "keyutils", "serve", "--agent", PEER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    installation.cli(&["revoke", "cert", BYSTANDER, "--reason", "retired"]);
    let got = receiver
        .wait_until("certificate.revoked", |got| {
            !of_type(got, "certificate.revoked").is_empty()
        })
        .await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(signature_checks(&secret, &got[0]));
    assert_eq!(
        of_type(&got, "certificate.revoked")[0]["data"]["agent_id"],
        BYSTANDER
    );
}

/// Runs the CLI with `AGENTSEAL_WEBHOOK_SECRET` set to `secret`.
fn cli_with_secret(
    installation: &Installation,
    secret: &str,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(&installation.dir)
        .args(["--key-store", "keyutils"])
        .args(args)
        .env("AGENTSEAL_WEBHOOK_SECRET", secret)
        .output()
        .unwrap()
}

#[test]
fn webhook_settings_refuse_bad_input_and_never_show_a_given_secret() {
    let installation = Installation::new(&[]);
    let refused = |args: &[&str], needle: &str| {
        let out = common::hub::cli_output(&installation.dir, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    refused(
        &["signals", "webhook", "ftp://ops.example/hook"],
        "http:// or https://",
    );
    refused(&["signals", "webhook", "not a url"], "webhook URL");
    refused(
        &["signals", "webhook", "https://user:pw@ops.example/hook"],
        "no credentials",
    );
    refused(&["signals", "auto-revoke", "--after", "0"], "at least 1");
    refused(
        &["signals", "auto-revoke", "--after", "3", "--within", "90d"],
        "30 days",
    );

    // A secret the operator gives is used, and not printed back.
    let secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    let out = cli_with_secret(
        &installation,
        &secret,
        &["signals", "webhook", "https://ops.example/hook"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("secret"), "{stdout}");
    // Secrets the key store cannot keep, or malformed ones, are refused with the reason.
    for (bad, why) in [
        (format!("whsec_{}", STANDARD.encode([7u8; 24])), "32-byte"),
        ("whsec_not base64!".to_owned(), "base64"),
        (STANDARD.encode([7u8; 32]), "whsec_"),
    ] {
        let out = cli_with_secret(
            &installation,
            &bad,
            &["signals", "webhook", "https://ops.example/hook"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(why),
            "{bad}: {stderr}"
        );
        assert!(
            !stderr.contains(&bad),
            "the refused secret was echoed: {stderr}"
        );
    }
    // No file of the installation (database, its log, the audit log in it) holds the secret.
    let (text, raw) = (STANDARD.encode([7u8; 32]), [7u8; 32]);
    for file in std::fs::read_dir(&installation.dir).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!bytes.windows(text.len()).any(|w| w == text.as_bytes()));
        assert!(!bytes.windows(raw.len()).any(|w| w == raw));
    }
    let status = status(&installation);
    assert_eq!(status["webhook_url"], "https://ops.example/hook");
    assert_eq!(status["auto_revoke"], Value::Null);

    // The secret is in the key store, and `destroy` deletes it with the keys.
    let install = agentseal::store::Store::open(&installation.dir.join("agentseal.db"))
        .unwrap()
        .meta("install_id")
        .unwrap()
        .unwrap();
    let keys = agentseal::keystore::open(
        agentseal::keystore::KeyStoreKind::Keyutils,
        &installation.dir,
    )
    .unwrap();
    let name = agentseal::keystore::KeyName::webhook(&install);
    assert_eq!(keys.get(&name).unwrap().expose(), &[7u8; 32]);
    let ca_id = installation.cli(&["status"]);
    let ca_id: Value = serde_json::from_str(&ca_id).unwrap();
    let destroyed: Value = serde_json::from_str(&installation.cli(&[
        "destroy",
        "--confirm",
        ca_id["ca_id"].as_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(destroyed["keys_deleted"], 2, "{destroyed}"); // the CA's key and the secret
    assert!(matches!(
        keys.get(&name),
        Err(agentseal::keystore::KeyStoreError::NotFound(_))
    ));
}
