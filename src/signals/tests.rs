use super::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

/// The Standard Webhooks reference libraries' test key
/// (standard-webhooks/standard-webhooks, libraries/php/tests/WebhookTest.php).
const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn secret() -> WebhookSecret {
    WebhookSecret::parse(VECTOR_SECRET).unwrap()
}

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        first_backoff: Duration::from_millis(50),
        ..WebhookConfig::new(url.parse().unwrap(), secret())
    }
}

fn revoked(n: usize) -> Signal {
    Signal::new(
        SignalKind::TokenRevoked,
        Some("agent://acme.example/reviewer".into()),
        json!({"jti": format!("tok-{n}")}),
    )
}

/// Waits until `done` holds, polling; panics after a generous bound so a bug fails the test
/// instead of hanging it.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

/// A webhook endpoint on 127.0.0.1 that records every request and answers 500 to the
/// first `failures` of them, 200 afterwards.
#[derive(Clone)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    failures: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(failures: usize) -> (Receiver, String) {
        let receiver = Receiver {
            received: Arc::default(),
            failures: Arc::new(AtomicUsize::new(failures)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(Receiver::record))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    async fn record(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        receiver
            .received
            .lock()
            .unwrap()
            .push(Received { headers, body });
        let failing = receiver
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request.headers[name].to_str().unwrap()
}

/// Checks a request the way a Standard Webhooks receiver would, returning its id.
fn assert_signed(request: &Received) -> String {
    let id = header(request, "webhook-id");
    let timestamp: i64 = header(request, "webhook-timestamp").parse().unwrap();
    let signature = header(request, "webhook-signature");
    assert!(
        verify(&secret(), id, timestamp, &request.body, signature),
        "signature {signature} does not verify"
    );
    assert!((timestamp - crate::clock::now()).abs() < 300);
    assert_eq!(header(request, "content-type"), "application/json");
    id.to_owned()
}

#[test]
fn a_secret_survives_the_key_store_only_at_32_bytes() {
    let secret = WebhookSecret::generate().unwrap();
    let seed = secret.to_seed().expect("generated secrets are 32 bytes");
    assert_eq!(*WebhookSecret::from_seed(&seed).reveal(), *secret.reveal());
    let short = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(short.to_seed().is_none());
}

#[test]
fn signatures_reproduce_the_standard_webhooks_test_vectors() {
    // From the reference libraries' tests: PHP (testSignFunctionWorks) and Rust (test_sign)
    // in standard-webhooks/standard-webhooks. A round trip through our own `verify` would
    // pass with a wrong delimiter or key decoding; these prove receivers' libraries agree.
    let body = r#"{"test": 2432232314}"#;
    let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert_eq!(
        sign(&secret(), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
        expected
    );
    let other = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    assert_eq!(
        sign(
            &other,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
}

#[test]
fn verify_accepts_only_the_exact_webhook() {
    let (id, ts, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        r#"{"test": 2432232314}"#,
    );
    let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert!(verify(&secret(), id, ts, body, good));
    // Several signatures (secret rotation): one valid one suffices; other versions and
    // garbage are skipped.
    let rotated = format!("v1a,AAAA v1,bm9wZQ== v2,{} junk {good}", &good[3..]);
    assert!(verify(&secret(), id, ts, body, &rotated));
    assert!(!verify(&secret(), id, ts, r#"{"test": 2432232315}"#, good));
    assert!(!verify(&secret(), "msg_other", ts, body, good));
    assert!(!verify(&secret(), id, ts + 1, body, good));
    assert!(!verify(
        &WebhookSecret::generate().unwrap(),
        id,
        ts,
        body,
        good
    ));
    assert!(!verify(
        &secret(),
        id,
        ts,
        body,
        &good.replacen("v1,", "v2,", 1)
    ));
    assert!(!verify(&secret(), id, ts, body, &good[..good.len() - 4]));
    assert!(!verify(&secret(), id, ts, body, ""));
}

#[test]
fn bad_secrets_are_refused_with_a_typed_error() {
    assert_eq!(
        WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
        SecretError::MissingPrefix
    );
    assert_eq!(
        WebhookSecret::parse("whsec_not base64!").unwrap_err(),
        SecretError::NotBase64
    );
    assert_eq!(
        WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
        SecretError::Length(5)
    );
    let too_long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
    assert_eq!(
        WebhookSecret::parse(&too_long).unwrap_err(),
        SecretError::Length(65)
    );
    let error = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!").unwrap_err();
    assert!(!error.to_string().contains("MfKQ9r8"), "{error}");
}

#[test]
fn debug_output_never_shows_the_key() {
    let secret = secret();
    let key_bytes = format!("{:?}", &*secret.key);
    let config = WebhookConfig::new("https://ops.example/hooks".parse().unwrap(), secret.clone());
    for shown in [format!("{secret:?}"), format!("{config:?}")] {
        assert!(
            !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{shown}"
        );
        assert!(!shown.contains(&key_bytes), "{shown}");
        assert!(shown.contains("WebhookSecret(<redacted>)"), "{shown}");
    }
    // Revealing is explicit, and round-trips.
    assert_eq!(secret.reveal().as_str(), VECTOR_SECRET);
    let fresh = WebhookSecret::generate().unwrap();
    assert_eq!(
        *WebhookSecret::parse(&fresh.reveal()).unwrap().key,
        *fresh.key
    );
}

#[test]
fn kinds_serialize_under_their_documented_names() {
    let names: Vec<_> = SignalKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "token.rejected",
            "token.revoked",
            "certificate.revoked",
            "rate.limited",
            "approval.requested",
            "agent.auto_revoked",
            "workload.token_issued",
            "workload.token_refused",
        ]
    );
    for kind in SignalKind::ALL {
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        let back: SignalKind = serde_json::from_value(json!(kind.as_str())).unwrap();
        assert_eq!(back, kind);
    }
}

#[test]
fn payload_has_the_recommended_shape_with_the_agent_in_data() {
    let signal = Signal {
        kind: SignalKind::TokenRejected,
        agent: Some("agent://acme.example/reviewer".into()),
        data: json!({"reason": "expired", "jti": "tok-1"}),
        time: 1614265330,
    };
    let body: serde_json::Value = serde_json::from_str(&signal.payload().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "type": "token.rejected",
            "timestamp": "2021-02-25T15:02:10Z",
            "data": {"reason": "expired", "jti": "tok-1", "agent_id": "agent://acme.example/reviewer"},
        })
    );
    let none = Signal {
        agent: None,
        data: serde_json::Value::Null,
        ..signal.clone()
    };
    let body: serde_json::Value = serde_json::from_str(&none.payload().unwrap()).unwrap();
    assert_eq!(body["data"], json!({"agent_id": null}));
    let scalar = Signal {
        data: json!("expired"),
        ..signal
    };
    assert!(matches!(
        scalar.payload(),
        Err(SignalError::DataNotObject(SignalKind::TokenRejected))
    ));
}

#[test]
fn backoff_doubles_with_jitter_and_stops_at_ten_minutes() {
    let first = Duration::from_secs(1);
    for attempts in 1..=40 {
        let full = Duration::from_secs(1 << (attempts - 1).min(20)).min(MAX_BACKOFF);
        for _ in 0..20 {
            let wait = backoff(first, attempts);
            assert!(wait >= full / 2 && wait <= full, "{attempts}: {wait:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueued_signal_arrives_signed_with_its_type_and_data() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("t.db");
    let (receiver, url) = Receiver::start(0).await;
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let task = Dispatcher::spawn(config(&url), &db, wake.clone(), shutdown.clone()).unwrap();
    let outbox = Outbox::open(&db).unwrap().notifying(wake);

    let signal = Signal::new(
        SignalKind::CertificateRevoked,
        Some("agent://acme.example/reviewer".into()),
        json!({"serial": "serial-1", "reason": "key_compromise"}),
    );
    let id = outbox.enqueue(&signal).unwrap();
    eventually("the webhook is recorded as delivered", || {
        outbox.entry(&id).unwrap().unwrap().delivered_at.is_some()
    })
    .await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(assert_signed(&received[0]), id);
    let body: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["type"], "certificate.revoked");
    assert_eq!(body["timestamp"], rfc3339(signal.time));
    assert_eq!(
        body["data"],
        json!({"serial": "serial-1", "reason": "key_compromise", "agent_id": "agent://acme.example/reviewer"})
    );
    let entry = outbox.entry(&id).unwrap().unwrap();
    assert_eq!((entry.attempts, entry.next_attempt_at), (1, None));
    assert_eq!(entry.last_error, None);

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_under_the_same_id_until_one_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("t.db");
    let (receiver, url) = Receiver::start(2).await;
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let task = Dispatcher::spawn(config(&url), &db, wake.clone(), shutdown.clone()).unwrap();
    let outbox = Outbox::open(&db).unwrap().notifying(wake);

    let id = outbox.enqueue(&revoked(1)).unwrap();
    eventually("the webhook is recorded as delivered", || {
        outbox.entry(&id).unwrap().unwrap().delivered_at.is_some()
    })
    .await;

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        // Every attempt is signed afresh, and keeps the id receivers deduplicate on.
        assert_eq!(assert_signed(request), id);
        assert_eq!(request.body, received[0].body);
    }
    let entry = outbox.entry(&id).unwrap().unwrap();
    assert_eq!((entry.attempts, entry.next_attempt_at), (3, None));
    assert_eq!(
        entry.last_error.as_deref(),
        Some("HTTP 500 Internal Server Error")
    );

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_gives_up_after_max_attempts_and_keeps_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("t.db");
    let (receiver, url) = Receiver::start(usize::MAX).await;
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let config = WebhookConfig {
        max_attempts: 3,
        first_backoff: Duration::from_millis(10),
        ..config(&url)
    };
    let task = Dispatcher::spawn(config, &db, wake.clone(), shutdown.clone()).unwrap();
    let outbox = Outbox::open(&db).unwrap().notifying(wake);

    let id = outbox.enqueue(&revoked(1)).unwrap();
    eventually("the dispatcher gives up", || {
        let entry = outbox.entry(&id).unwrap().unwrap();
        entry.attempts == 3 && entry.next_attempt_at.is_none()
    })
    .await;

    let entry = outbox.entry(&id).unwrap().unwrap();
    assert_eq!(entry.delivered_at, None);
    assert_eq!(
        entry.last_error.as_deref(),
        Some("HTTP 500 Internal Server Error")
    );
    assert_eq!(outbox.undelivered(10).unwrap(), [entry]);
    assert_eq!(receiver.received().len(), 3);

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_receivers_are_recorded_as_failed_attempts() {
    // A port nobody listens on: bind one, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", free.local_addr().unwrap());
    drop(free);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("t.db");
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let task = Dispatcher::spawn(config(&url), &db, wake.clone(), shutdown.clone()).unwrap();
    let outbox = Outbox::open(&db).unwrap().notifying(wake);

    let id = outbox.enqueue(&revoked(1)).unwrap();
    eventually("a failed attempt is recorded", || {
        outbox.entry(&id).unwrap().unwrap().last_error.is_some()
    })
    .await;
    let entry = outbox.entry(&id).unwrap().unwrap();
    let error = entry.last_error.unwrap();
    assert!(
        !error.contains(&url),
        "the URL stays out of errors: {error}"
    );
    assert!(entry.next_attempt_at.is_some() && entry.delivered_at.is_none());

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_does_not_wait_for_a_stuck_receiver_and_the_outbox_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("t.db");

    // A receiver that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let black_hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let stuck = WebhookConfig {
        timeout: Duration::from_secs(3600),
        ..config(&url)
    };
    let task = Dispatcher::spawn(stuck, &db, wake.clone(), shutdown.clone()).unwrap();
    let outbox = Outbox::open(&db).unwrap().notifying(wake);

    let mut ids = BTreeSet::new();
    ids.insert(outbox.enqueue(&revoked(0)).unwrap());
    eventually("the dispatcher is stuck sending", || {
        accepted.load(Ordering::SeqCst) == 1
    })
    .await;
    // The dispatcher now waits on a receiver that will never answer; enqueueing does not.
    for n in 1..=100 {
        ids.insert(outbox.enqueue(&revoked(n)).unwrap());
    }
    let queued = outbox.undelivered(1000).unwrap();
    assert_eq!(queued.len(), 101);
    assert!(queued.iter().all(|e| e.delivered_at.is_none()));
    assert_eq!(
        queued[0].attempts, 1,
        "the oldest entry is the one in flight"
    );
    assert!(queued[1..].iter().all(|e| e.attempts == 0));

    // Shutdown abandons the hung attempt; then everything goes, as after a crash.
    shutdown.cancel();
    task.await.unwrap();
    black_hole.abort();
    drop(outbox);

    let outbox = Outbox::open(&db).unwrap();
    let queued = outbox.undelivered(1000).unwrap();
    assert_eq!(
        queued.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>(),
        ids
    );
    assert!(queued.iter().all(|e| e.next_attempt_at.is_some()));

    let (receiver, url) = Receiver::start(0).await;
    let shutdown = CancellationToken::new();
    let task = Dispatcher::spawn(config(&url), &db, Arc::default(), shutdown.clone()).unwrap();
    eventually("every queued webhook is delivered", || {
        outbox.undelivered(1000).unwrap().is_empty()
    })
    .await;
    let received = receiver.received();
    let delivered: BTreeSet<_> = received.iter().map(assert_signed).collect();
    assert_eq!(delivered, ids);
    assert_eq!(received.len(), 101);

    shutdown.cancel();
    task.await.unwrap();
}
