//! What a hub operator watches: counters and histograms of this process, encoded as OpenMetrics
//! text (which Prometheus scrapes) by [`encode`].
//!
//! One registry per process, as Prometheus clients keep: the core counts what it alone sees
//! (revocations, verification failures, tokens issued, database commits, webhook deliveries) and
//! a front-end what it alone sees (tool calls and their latency, open sessions). Counting never
//! fails and never blocks on I/O.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a tool call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    outcome: String,
}

/// Labels of a tool's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolName {
    tool: String,
}

/// A reason code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// A revocation's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

/// Labels of a token request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    grant: String,
    outcome: String,
}

/// A database engine.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Engine {
    engine: String,
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 100 µs to about 13 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

struct Metrics {
    registry: Registry,
    tool_calls: Family<ToolLabels, Counter>,
    tool_seconds: Latencies<ToolName>,
    verification_failures: Family<Reason, Counter>,
    revocations: Family<Kind, Counter>,
    tokens_issued: Family<GrantLabels, Counter>,
    open_sessions: Gauge,
    outbox_depth: Gauge,
    webhook_failures: Counter,
    commit_seconds: Latencies<Engine>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("agentseal");
    let metrics = Metrics {
        tool_calls: Family::default(),
        tool_seconds: Family::new_with_constructor(latency),
        verification_failures: Family::default(),
        revocations: Family::default(),
        tokens_issued: Family::default(),
        open_sessions: Gauge::default(),
        outbox_depth: Gauge::default(),
        webhook_failures: Counter::default(),
        commit_seconds: Family::new_with_constructor(latency),
        registry: Registry::default(),
    };
    registry.register(
        "tool_calls",
        "MCP tool calls, by tool and outcome (ok, or the reason code of the error)",
        metrics.tool_calls.clone(),
    );
    registry.register(
        "tool_call_seconds",
        "Time to answer an MCP tool call, by tool",
        metrics.tool_seconds.clone(),
    );
    registry.register(
        "verification_failures",
        "Tokens, certificates and presentations that failed verification, by reason code",
        metrics.verification_failures.clone(),
    );
    registry.register(
        "revocations",
        "Revocations recorded, by kind (certificate, token)",
        metrics.revocations.clone(),
    );
    registry.register(
        "access_tokens",
        "Access token requests, by grant (operator, token_exchange, jwt_bearer) and outcome",
        metrics.tokens_issued.clone(),
    );
    registry.register(
        "open_sessions",
        "MCP sessions the hub holds open",
        metrics.open_sessions.clone(),
    );
    registry.register(
        "outbox_depth",
        "Webhook signals waiting for delivery",
        metrics.outbox_depth.clone(),
    );
    registry.register(
        "webhook_delivery_failures",
        "Webhook delivery attempts that failed",
        metrics.webhook_failures.clone(),
    );
    registry.register(
        "database_commit_seconds",
        "Time to commit a write transaction, by engine",
        metrics.commit_seconds.clone(),
    );
    Metrics {
        registry,
        ..metrics
    }
});

/// Counts a tool call that ended with `outcome` (`ok` or a reason code) after `elapsed`.
pub fn tool_call(tool: &str, outcome: &str, elapsed: Duration) {
    METRICS
        .tool_calls
        .get_or_create(&ToolLabels {
            tool: tool.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
    METRICS
        .tool_seconds
        .get_or_create(&ToolName {
            tool: tool.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

/// Counts a failed verification.
pub fn verification_failed(reason: &str) {
    METRICS
        .verification_failures
        .get_or_create(&Reason {
            reason: reason.to_owned(),
        })
        .inc();
}

/// Counts `count` new revocations of `kind` (`certificate`, `token`).
pub fn revoked(kind: &str, count: usize) {
    METRICS
        .revocations
        .get_or_create(&Kind {
            kind: kind.to_owned(),
        })
        .inc_by(count as u64);
}

/// Counts an access token request by `grant`, refused for `refused` (a reason code) or issued.
pub fn access_token(grant: &str, refused: Option<&str>) {
    METRICS
        .tokens_issued
        .get_or_create(&GrantLabels {
            grant: grant.to_owned(),
            outcome: refused.unwrap_or("issued").to_owned(),
        })
        .inc();
}

/// Sets the number of open MCP sessions.
pub fn set_open_sessions(count: usize) {
    METRICS.open_sessions.set(count as i64);
}

/// Sets the number of signals waiting for delivery.
pub fn set_outbox_depth(count: usize) {
    METRICS.outbox_depth.set(count as i64);
}

/// Counts a failed webhook delivery attempt.
pub fn webhook_failed() {
    METRICS.webhook_failures.inc();
}

/// Records a committed write transaction of `engine` that took `elapsed`.
pub fn committed(engine: &'static str, elapsed: Duration) {
    METRICS
        .commit_seconds
        .get_or_create(&Engine {
            engine: engine.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

/// Every metric of this process as OpenMetrics text.
pub fn encode() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &METRICS.registry);
    text
}

/// The media type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
