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

mod dispatcher;
mod outbox;
mod webhook;

use outbox::LEASE_MARGIN;
use webhook::backoff;

pub use dispatcher::{Dispatcher, OpenOutbox, StillCurrent};
pub use outbox::{Claim, Outbox, OutboxCounts, OutboxEntry, OutboxQueue, SqliteQueue};
pub use webhook::{
    SecretError, WebhookConfig, WebhookSecret, WebhookUrlError, check_url, sign, verify,
};

/// Longest the dispatcher sleeps between two looks at the outbox when nothing wakes it: entries
/// enqueued by other processes are picked up this way.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at one entry.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What happened: the webhook's `type`, hierarchical and full-stop delimited as Standard
/// Webhooks recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
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
    /// A workload exchanged its platform's token for an access token (federation).
    #[serde(rename = "workload.token_issued")]
    WorkloadTokenIssued,
    /// A workload's token exchange was refused.
    #[serde(rename = "workload.token_refused")]
    WorkloadTokenRefused,
}

impl SignalKind {
    /// Every kind, for listings and tests.
    pub const ALL: [SignalKind; 8] = [
        SignalKind::TokenRejected,
        SignalKind::TokenRevoked,
        SignalKind::CertificateRevoked,
        SignalKind::RateLimited,
        SignalKind::ApprovalRequested,
        SignalKind::AgentAutoRevoked,
        SignalKind::WorkloadTokenIssued,
        SignalKind::WorkloadTokenRefused,
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
            SignalKind::WorkloadTokenIssued => "workload.token_issued",
            SignalKind::WorkloadTokenRefused => "workload.token_refused",
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
#[non_exhaustive]
pub enum SignalError {
    /// SQLite failed.
    #[error("webhook outbox in {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database file could not be created or made private.
    #[error("webhook outbox in {path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
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
    /// Another engine's queue failed (the message names the database, never a secret).
    #[error("webhook outbox: {0}")]
    Database(String),
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

#[cfg(test)]
mod tests;
