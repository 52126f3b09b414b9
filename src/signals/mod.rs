//! Security signals pushed to an operator's endpoint as webhooks signed per Standard Webhooks
//! (<https://www.standardwebhooks.com/>).
//!
//! A [`Signal`] (a token was rejected, a certificate revoked, ...) is recorded with
//! [`Outbox::enqueue`]: one committed INSERT into the installation's SQLite database and no
//! network, so any process (CLI or server) can record an event, none is lost if the process then
//! crashes, and a dead receiver never slows the caller. A [`Dispatcher`] task in the long-running
//! server delivers the outbox: one HTTP POST per entry carrying the `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` headers, retried with exponential backoff and
//! jitter until a 2xx answer or [`WebhookConfig::max_attempts`].
//!
//! Delivery is at least once: an entry keeps its `webhook-id` across retries, so a receiver drops
//! duplicates by id. Each attempt is signed anew with the attempt's own timestamp.
//!
//! # Signing and verifying
//!
//! ```
//! use agentseal::signals::{WebhookSecret, sign, verify};
//!
//! let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let header = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
//! assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//! assert!(verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#, &header));
//! ```
//!
//! # Wiring
//!
//! ```no_run
//! # async fn run(db: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use agentseal::signals::{Dispatcher, Outbox, Signal, SignalKind, WebhookConfig, WebhookSecret};
//!
//! let wake = Arc::new(tokio::sync::Notify::new());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let config = WebhookConfig::new(
//!     "https://ops.example/hooks/agentseal".parse()?,
//!     WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?,
//! );
//! let task = Dispatcher::spawn(config, db, wake.clone(), shutdown.clone())?;
//! // Enqueueing blocks on SQLite: from async code, call it in `spawn_blocking`.
//! let outbox = Outbox::open(db)?.notifying(wake);
//! let signal = Signal::new(SignalKind::TokenRevoked, Some("agent://acme/reviewer".into()),
//!     serde_json::json!({"jti": "tok-1"}));
//! let id = outbox.enqueue(&signal)?;
//! shutdown.cancel();
//! task.await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, Seed};

/// Longest the dispatcher sleeps between two looks at the outbox when nothing wakes it: entries
/// enqueued by other processes are picked up this way.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at one entry.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long, beyond the request timeout, a claimed entry stays reserved for the dispatcher that
/// claimed it. If that process dies mid-attempt, the entry is tried again once this has passed.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The prefix of a serialized Standard Webhooks symmetric secret.
const SECRET_PREFIX: &str = "whsec_";
/// Key lengths Standard Webhooks allows: 192 to 512 bits.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 24..=64;
/// Length of the keys [`WebhookSecret::generate`] makes.
const GENERATED_SECRET_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// What happened: the webhook's `type`, hierarchical and full-stop delimited as Standard
/// Webhooks recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SignalKind {
    /// A presented action token failed verification.
    #[serde(rename = "token.rejected")]
    TokenRejected,
    /// An action token was revoked.
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// An agent certificate was revoked.
    #[serde(rename = "certificate.revoked")]
    CertificateRevoked,
    /// An agent hit a rate limit.
    #[serde(rename = "rate.limited")]
    RateLimited,
    /// An action waits for a human's approval.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// An agent was revoked automatically (for instance after repeated rejections).
    #[serde(rename = "agent.auto_revoked")]
    AgentAutoRevoked,
}

impl SignalKind {
    /// Every kind, for listings and tests.
    pub const ALL: [SignalKind; 6] = [
        SignalKind::TokenRejected,
        SignalKind::TokenRevoked,
        SignalKind::CertificateRevoked,
        SignalKind::RateLimited,
        SignalKind::ApprovalRequested,
        SignalKind::AgentAutoRevoked,
    ];

    /// The wire name, as in the webhook's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::TokenRejected => "token.rejected",
            SignalKind::TokenRevoked => "token.revoked",
            SignalKind::CertificateRevoked => "certificate.revoked",
            SignalKind::RateLimited => "rate.limited",
            SignalKind::ApprovalRequested => "approval.requested",
            SignalKind::AgentAutoRevoked => "agent.auto_revoked",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One security event to tell the operator about.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Signal {
    /// What happened.
    pub kind: SignalKind,
    /// The agent concerned, if any; sent as `data.agent_id`.
    pub agent: Option<String>,
    /// Details: a JSON object (or null for none). It leaves the installation in clear: never
    /// put tokens, keys or other secrets in it, only identifiers (token ids, serials, reasons).
    pub data: serde_json::Value,
    /// When it happened, in seconds since the Unix epoch.
    pub time: i64,
}

/// The webhook body, in the shape Standard Webhooks recommends.
#[derive(serde::Serialize)]
struct Payload<'a> {
    r#type: SignalKind,
    timestamp: String,
    data: &'a serde_json::Map<String, serde_json::Value>,
}

impl Signal {
    /// A signal that happens now.
    pub fn new(kind: SignalKind, agent: Option<String>, data: serde_json::Value) -> Signal {
        Signal {
            kind,
            agent,
            data,
            time: crate::clock::now(),
        }
    }

    /// The webhook body: `{"type": ..., "timestamp": <RFC 3339>, "data": {..., "agent_id": ...}}`.
    /// `data.agent_id` is always the signal's agent (null if none), so each type has one schema.
    pub fn payload(&self) -> Result<String, SignalError> {
        let mut data = match &self.data {
            serde_json::Value::Object(map) => map.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            _ => return Err(SignalError::DataNotObject(self.kind)),
        };
        data.insert("agent_id".into(), self.agent.clone().into());
        let payload = Payload {
            r#type: self.kind,
            timestamp: rfc3339(self.time),
            data: &data,
        };
        Ok(serde_json::to_string(&payload).expect("a JSON map serializes"))
    }
}

/// Seconds since the epoch as RFC 3339 UTC, clamped to the years 1970 to 9999 that the format
/// (and humantime) can express.
fn rfc3339(time: i64) -> String {
    const LAST_SECOND_OF_9999: i64 = 253_402_300_799;
    let seconds = time.clamp(0, LAST_SECOND_OF_9999) as u64;
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

/// Errors from the outbox and the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// SQLite failed.
    #[error("webhook outbox in {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The signal's data is neither a JSON object nor null.
    #[error("{0} signal: data must be a JSON object or null")]
    DataNotObject(SignalKind),
    /// No randomness for a webhook id.
    #[error("webhook id: {0}")]
    Random(#[from] CryptoError),
    /// The webhook URL cannot be posted to.
    #[error("webhook URL must be http:// or https:// with a host")]
    BadUrl,
    /// The HTTP client could not be built.
    #[error("webhook HTTP client: {0}")]
    Client(String),
}

/// Why a webhook secret was refused. Never includes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret starts with \"whsec_\"")]
    MissingPrefix,
    /// What follows `whsec_` is not standard (padded) base64.
    #[error("a webhook secret is standard base64 after \"whsec_\"")]
    NotBase64,
    /// The key is shorter than 24 or longer than 64 bytes.
    #[error("a webhook secret holds 24 to 64 bytes, not {0}")]
    Length(usize),
}

/// The HMAC key shared with the webhook receiver. Zeroized on drop; `Debug` hides it.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Zeroizing<Vec<u8>>,
}

impl WebhookSecret {
    /// Reads a secret in the Standard Webhooks form `whsec_<base64 key>`; the key is 24 to 64
    /// bytes.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| SecretError::NotBase64)?,
        );
        if !SECRET_LEN.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(WebhookSecret { key })
    }

    /// A fresh random 32-byte secret, for an operator registering a new endpoint.
    pub fn generate() -> Result<WebhookSecret, CryptoError> {
        let mut key = Zeroizing::new(vec![0u8; GENERATED_SECRET_LEN]);
        getrandom::fill(&mut key).map_err(|_| CryptoError::Rng)?;
        Ok(WebhookSecret { key })
    }

    /// The secret kept in a key store as a 32-byte seed.
    pub fn from_seed(seed: &Seed) -> WebhookSecret {
        WebhookSecret {
            key: Zeroizing::new(seed.expose().to_vec()),
        }
    }

    /// The secret as a seed for a key store, which keeps 32-byte secrets: `None` for another
    /// length.
    pub fn to_seed(&self) -> Option<Seed> {
        Seed::from_slice(&self.key)
    }

    /// The secret in its `whsec_` form, to show the operator once or store in configuration.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&*self.key)))
    }

    /// The MAC over Standard Webhooks' signed content `{id}.{timestamp}.{body}`.
    fn mac(&self, id: &str, timestamp: i64, body: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` value for one attempt: `v1,<base64 HMAC-SHA256>` over
/// `{id}.{timestamp}.{body}`. `id` must not contain `.` (the outbox's ids never do).
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str) -> String {
    let tag = secret.mac(id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Whether `header` (a `webhook-signature` value: space-separated `v1,<base64>` entries, other
/// versions ignored) holds a valid signature of this webhook, compared in constant time. Checks
/// the signature only: a receiver must also refuse timestamps far from its clock (Standard
/// Webhooks suggests 5 minutes) and ids it has already processed.
pub fn verify(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let mac = secret.mac(id, timestamp, body);
    header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok())
}

/// Where and how webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receiver's endpoint (http or https).
    pub url: reqwest::Url,
    /// The secret shared with the receiver.
    pub secret: WebhookSecret,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// Attempts per entry, the first included, before giving up on it.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; it doubles after each further failure, up to
    /// [`MAX_BACKOFF`], and each wait is randomly shortened by up to half.
    pub first_backoff: Duration,
}

impl WebhookConfig {
    /// Default for [`WebhookConfig::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default for [`WebhookConfig::max_attempts`].
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 30;
    /// Default for [`WebhookConfig::first_backoff`].
    pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_secs(1);

    /// Delivery to `url` signed with `secret`, with the default timeout and retries.
    pub fn new(url: reqwest::Url, secret: WebhookSecret) -> WebhookConfig {
        WebhookConfig {
            url,
            secret,
            timeout: Self::DEFAULT_TIMEOUT,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            first_backoff: Self::DEFAULT_FIRST_BACKOFF,
        }
    }
}

/// The wait before the attempt after `attempts` failed ones: doubling from `first`, capped at
/// [`MAX_BACKOFF`], then between half and all of that at random so that entries failing together
/// do not retry together.
fn backoff(first: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    let full = first.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    let half = full / 2;
    half + half.mul_f64(random_unit())
}

/// A random number in [0, 1); 0.5 if the system has no randomness (jitter is not security).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// Milliseconds since the Unix epoch: outbox times are this fine because retries in tests (and
/// the first backoff, if configured so) are sub-second.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// One outbox entry as stored. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxEntry {
    /// The `webhook-id`, the same for every attempt.
    pub id: String,
    /// The exact body sent.
    pub body: String,
    /// When it was enqueued.
    pub created_at: i64,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it is tried next; `None` once delivered or given up.
    pub next_attempt_at: Option<i64>,
    /// When a 2xx answer came; `None` while pending or once given up.
    pub delivered_at: Option<i64>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
}

/// The state of the outbox, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OutboxCounts {
    /// Entries waiting for delivery (or for their next attempt).
    pub pending: u64,
    /// Entries given up on after the last attempt failed.
    pub given_up: u64,
}

/// What [`Outbox::claim`] found.
enum Claim {
    /// An entry due now, reserved for this dispatcher.
    Due(OutboxEntry),
    /// Nothing due; the earliest next attempt, if any entry is pending.
    Idle { next_at: Option<i64> },
}

/// The durable queue of webhooks, in the installation's database (table `webhook_outbox`).
pub struct Outbox {
    path: PathBuf,
    conn: Mutex<Connection>,
    wake: Option<Arc<Notify>>,
}

/// A pending entry has `next_attempt_at` set; delivering it or giving up clears it, so the
/// partial index holds only pending entries, however many delivered ones accumulate.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              TEXT PRIMARY KEY,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    delivered_at    INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_pending
    ON webhook_outbox(created_at) WHERE next_attempt_at IS NOT NULL;
";

const ENTRY_COLUMNS: &str =
    "id, body, created_at, attempts, next_attempt_at, delivered_at, last_error";

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: row.get(0)?,
        body: row.get(1)?,
        created_at: row.get(2)?,
        attempts: row.get(3)?,
        next_attempt_at: row.get(4)?,
        delivered_at: row.get(5)?,
        last_error: row.get(6)?,
    })
}

impl Outbox {
    /// Opens the outbox in the database at `path` (creating its table if needed), with its own
    /// connection: every write commits durably (WAL, `synchronous=FULL`) before returning.
    pub fn open(path: &Path) -> Result<Outbox, SignalError> {
        let sqlite = |source| SignalError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(Outbox {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            wake: None,
        })
    }

    /// Wakes `wake` after each enqueue, so a [`Dispatcher`] in this process given the same
    /// `Notify` delivers at once instead of at its next poll.
    pub fn notifying(mut self, wake: Arc<Notify>) -> Outbox {
        self.wake = Some(wake);
        self
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SignalError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| SignalError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Records `signal` for delivery and returns its `webhook-id`. The entry is committed when
    /// this returns; nothing here waits on the network.
    pub fn enqueue(&self, signal: &Signal) -> Result<String, SignalError> {
        let body = signal.payload()?;
        let id = format!("msg_{}", crate::clock::random_id()?);
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT INTO webhook_outbox(id, body, created_at, attempts, next_attempt_at)
                 VALUES (?1, ?2, ?3, 0, ?3)",
                params![id, body, now],
            )
        })?;
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
        Ok(id)
    }

    /// One entry by its `webhook-id`.
    pub fn entry(&self, id: &str) -> Result<Option<OutboxEntry>, SignalError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM webhook_outbox WHERE id = ?1"),
                [id],
                entry_from_row,
            )
            .optional()
        })
    }

    /// Up to `limit` entries not delivered (pending or given up), oldest first.
    pub fn undelivered(&self, limit: usize) -> Result<Vec<OutboxEntry>, SignalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            c.prepare(&format!(
                "SELECT {ENTRY_COLUMNS} FROM webhook_outbox WHERE delivered_at IS NULL
                 ORDER BY created_at, rowid LIMIT ?1"
            ))?
            .query_map([limit], entry_from_row)?
            .collect()
        })
    }

    /// How many entries wait for delivery, and how many were given up on.
    pub fn counts(&self) -> Result<OutboxCounts, SignalError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FILTER (WHERE next_attempt_at IS NOT NULL),
                        COUNT(*) FILTER (WHERE next_attempt_at IS NULL AND delivered_at IS NULL)
                 FROM webhook_outbox",
                [],
                |r| {
                    Ok(OutboxCounts {
                        pending: r.get(0)?,
                        given_up: r.get(1)?,
                    })
                },
            )
        })
    }

    /// Deletes entries delivered before `delivered_before` and entries given up on that were
    /// created before `given_up_before` (milliseconds since the epoch); returns how many.
    pub fn prune(&self, delivered_before: i64, given_up_before: i64) -> Result<usize, SignalError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM webhook_outbox
                 WHERE (delivered_at IS NOT NULL AND delivered_at < ?1)
                    OR (delivered_at IS NULL AND next_attempt_at IS NULL AND created_at < ?2)",
                params![delivered_before, given_up_before],
            )
        })
    }

    /// Makes every entry given up on due again at `now` with its attempts reset; returns how
    /// many. Each keeps its `webhook-id`, so a receiver that did get one drops the repeat.
    pub fn requeue_given_up(&self, now: i64) -> Result<usize, SignalError> {
        let requeued = self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET attempts = 0, next_attempt_at = ?1
                 WHERE delivered_at IS NULL AND next_attempt_at IS NULL",
                [now],
            )
        })?;
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
        Ok(requeued)
    }

    /// Reserves the oldest due entry until `lease_until` and counts the attempt, in one
    /// statement, so two dispatchers on one database never send the same entry at once.
    fn claim(&self, now: i64, lease_until: i64) -> Result<Claim, SignalError> {
        self.with(|c| {
            let claimed = c
                .query_row(
                    &format!(
                        "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?2
                         WHERE id = (SELECT id FROM webhook_outbox
                                     WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1
                                     ORDER BY created_at, rowid LIMIT 1)
                         RETURNING {ENTRY_COLUMNS}"
                    ),
                    params![now, lease_until],
                    entry_from_row,
                )
                .optional()?;
            if let Some(entry) = claimed {
                return Ok(Claim::Due(entry));
            }
            let next_at = c.query_row(
                "SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE next_attempt_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(Claim::Idle { next_at })
        })
    }

    fn mark_delivered(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET delivered_at = ?2, next_attempt_at = NULL WHERE id = ?1",
                params![id, now],
            )
        })?;
        Ok(())
    }

    /// Records a failed attempt; `next_at` `None` gives up on the entry.
    fn mark_failed(&self, id: &str, error: &str, next_at: Option<i64>) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET last_error = ?2, next_attempt_at = ?3
                 WHERE id = ?1 AND delivered_at IS NULL",
                params![id, error, next_at],
            )
        })?;
        Ok(())
    }

    /// Makes a claimed entry due again at once (its attempt was cut short by shutdown).
    fn release(&self, id: &str, now: i64) -> Result<(), SignalError> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_outbox SET next_attempt_at = ?2
                 WHERE id = ?1 AND next_attempt_at IS NOT NULL",
                params![id, now],
            )
        })?;
        Ok(())
    }
}

/// The task that delivers the outbox to one endpoint.
pub struct Dispatcher {
    config: WebhookConfig,
    db_path: PathBuf,
    client: reqwest::Client,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    current: Option<StillCurrent>,
}

/// Asked (off the async threads) before each attempt: whether the configuration this
/// dispatcher was started with is still the one in force.
pub type StillCurrent = Arc<dyn Fn() -> bool + Send + Sync>;

impl Dispatcher {
    /// Starts delivering the outbox in the database at `db_path` on the current tokio runtime.
    /// The task looks for due entries at least every [`POLL_INTERVAL`] and at once when `wake` is
    /// notified (give the same `Notify` to [`Outbox::notifying`]); it ends soon after `shutdown`
    /// is cancelled, an attempt in flight then being abandoned and its entry left due. Fails if
    /// the URL is not http(s) or the HTTP client cannot be built.
    pub fn spawn(
        config: WebhookConfig,
        db_path: &Path,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, SignalError> {
        Self::spawn_while(config, db_path, wake, shutdown, None)
    }

    /// As [`Dispatcher::spawn`], and the task also ends, before sending anything more, once
    /// `current` answers false: an entry claimed then is left due for the dispatcher of the new
    /// configuration, so nothing recorded after a change goes to the old endpoint.
    pub fn spawn_while(
        config: WebhookConfig,
        db_path: &Path,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
        current: Option<StillCurrent>,
    ) -> Result<JoinHandle<()>, SignalError> {
        if !matches!(config.url.scheme(), "http" | "https") || config.url.host_str().is_none() {
            return Err(SignalError::BadUrl);
        }
        // Redirects are failures (Standard Webhooks): the operator fixes the URL instead.
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agentseal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SignalError::Client(e.to_string()))?;
        let dispatcher = Dispatcher {
            config,
            db_path: db_path.to_owned(),
            client,
            wake,
            shutdown,
            current,
        };
        Ok(tokio::spawn(dispatcher.run()))
    }

    async fn run(self) {
        let Some(outbox) = self.open_outbox().await else {
            return;
        };
        let lease = millis(self.config.timeout.saturating_add(LEASE_MARGIN));
        while !self.shutdown.is_cancelled() {
            let now = now_ms();
            let claim = blocking(&outbox, "claiming an entry", move |o| {
                o.claim(now, now.saturating_add(lease))
            })
            .await;
            let pause = match claim {
                Some(Claim::Due(entry)) => {
                    if !self.still_current().await {
                        let (id, now) = (entry.id, now_ms());
                        blocking(&outbox, "releasing an entry", move |o| o.release(&id, now)).await;
                        return;
                    }
                    self.attempt(&outbox, entry).await;
                    continue;
                }
                Some(Claim::Idle { next_at: Some(at) }) => {
                    Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(POLL_INTERVAL)
                }
                Some(Claim::Idle { next_at: None }) | None => POLL_INTERVAL,
            };
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn still_current(&self) -> bool {
        let Some(current) = self.current.clone() else {
            return true;
        };
        // A check that cannot run counts as a change: the supervisor starts afresh.
        tokio::task::spawn_blocking(move || current())
            .await
            .unwrap_or(false)
    }

    /// Opens the outbox, retrying each poll interval until it opens or shutdown.
    async fn open_outbox(&self) -> Option<Arc<Outbox>> {
        loop {
            let path = self.db_path.clone();
            match tokio::task::spawn_blocking(move || Outbox::open(&path)).await {
                Ok(Ok(outbox)) => return Some(Arc::new(outbox)),
                Ok(Err(error)) => tracing::warn!(%error, "webhook outbox not opened"),
                Err(error) => tracing::error!(%error, "webhook outbox not opened"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Sends one claimed entry and records the outcome.
    async fn attempt(&self, outbox: &Arc<Outbox>, entry: OutboxEntry) {
        let timestamp = crate::clock::now();
        let request = self
            .client
            .post(self.config.url.clone())
            .header("webhook-id", &entry.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign(&self.config.secret, &entry.id, timestamp, &entry.body),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(entry.body)
            .send();
        let id = entry.id;
        let outcome = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {
                // Due again at once for the next run, rather than after the lease.
                let now = now_ms();
                blocking(outbox, "releasing an entry", move |o| o.release(&id, now)).await;
                return;
            }
            outcome = request => outcome,
        };
        let error = match outcome {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(%id, attempts = entry.attempts, "webhook delivered");
                let now = now_ms();
                blocking(outbox, "recording a delivery", move |o| {
                    o.mark_delivered(&id, now)
                })
                .await;
                return;
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(error) => describe(error),
        };
        let next_at = (entry.attempts < self.config.max_attempts).then(|| {
            now_ms().saturating_add(millis(backoff(self.config.first_backoff, entry.attempts)))
        });
        if next_at.is_none() {
            tracing::warn!(%id, attempts = entry.attempts, %error, "webhook abandoned");
        } else {
            tracing::debug!(%id, attempts = entry.attempts, %error, "webhook attempt failed");
        }
        blocking(outbox, "recording a failure", move |o| {
            o.mark_failed(&id, &error, next_at)
        })
        .await;
    }
}

/// A transport error with its causes, without the URL (which may carry credentials).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs an outbox call on the blocking pool; failures are logged (the next poll retries).
async fn blocking<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    what: &'static str,
    f: impl FnOnce(&Outbox) -> Result<T, SignalError> + Send + 'static,
) -> Option<T> {
    let outbox = outbox.clone();
    match tokio::task::spawn_blocking(move || f(&outbox)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::warn!(%error, "webhook outbox: {what} failed");
            None
        }
        Err(error) => {
            tracing::error!(%error, "webhook outbox: {what} failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
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
        let config =
            WebhookConfig::new("https://ops.example/hooks".parse().unwrap(), secret.clone());
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
                "agent.auto_revoked"
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

    #[test]
    fn given_up_entries_are_counted_requeued_on_demand_and_pruned_late() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&tmp.path().join("t.db")).unwrap();
        let (gone, kept) = (
            outbox.enqueue(&revoked(1)).unwrap(),
            outbox.enqueue(&revoked(2)).unwrap(),
        );
        let now = now_ms();
        outbox.mark_failed(&gone, "HTTP 500", None).unwrap();
        let delivered = outbox.enqueue(&revoked(3)).unwrap();
        outbox.mark_delivered(&delivered, now).unwrap();
        assert_eq!(
            outbox.counts().unwrap(),
            OutboxCounts {
                pending: 1,
                given_up: 1
            }
        );
        // Requeued: due at once, attempts reset, same id.
        assert_eq!(outbox.requeue_given_up(now).unwrap(), 1);
        let entry = outbox.entry(&gone).unwrap().unwrap();
        assert_eq!((entry.attempts, entry.next_attempt_at), (0, Some(now)));
        assert_eq!(
            outbox.counts().unwrap(),
            OutboxCounts {
                pending: 2,
                given_up: 0
            }
        );
        // Pruning takes delivered entries older than its first limit and given-up ones older
        // than its second; pending ones never.
        outbox.mark_failed(&gone, "HTTP 500", None).unwrap();
        assert_eq!(outbox.prune(now, 0).unwrap(), 0);
        assert_eq!(outbox.prune(now + 1, i64::MAX).unwrap(), 2);
        assert!(outbox.entry(&delivered).unwrap().is_none());
        assert!(outbox.entry(&gone).unwrap().is_none());
        assert!(outbox.entry(&kept).unwrap().is_some());
    }

    #[test]
    fn a_claimed_entry_is_not_sent_twice_until_its_lease_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&tmp.path().join("t.db")).unwrap();
        let id = outbox.enqueue(&revoked(1)).unwrap();
        let now = now_ms();
        let Claim::Due(entry) = outbox.claim(now, now + 10_000).unwrap() else {
            panic!("the new entry is due");
        };
        assert_eq!((entry.id.as_str(), entry.attempts), (id.as_str(), 1));
        // Another dispatcher looking now finds nothing due, only the lease's end.
        assert!(matches!(
            outbox.claim(now, now + 10_000).unwrap(),
            Claim::Idle { next_at: Some(at) } if at == now + 10_000
        ));
        // Once the lease has passed (its holder died), the entry is due again.
        let Claim::Due(again) = outbox.claim(now + 10_000, now + 20_000).unwrap() else {
            panic!("the lease has ended");
        };
        assert_eq!(again.attempts, 2);
        outbox.mark_delivered(&id, now).unwrap();
        // A late failure report from the first holder does not resurrect it.
        outbox.mark_failed(&id, "late", Some(now)).unwrap();
        let entry = outbox.entry(&id).unwrap().unwrap();
        assert_eq!(
            (entry.delivered_at, entry.next_attempt_at),
            (Some(now), None)
        );
        assert!(outbox.undelivered(10).unwrap().is_empty());
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
}
