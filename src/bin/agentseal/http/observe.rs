//! What an operator sees of the hub at work: an id for each request, on every log line of it
//! and in its answer, and the Prometheus metrics on a listener of their own.

use std::net::SocketAddr;
use std::sync::Arc;

use agentseal::authority::{Installation, ServiceError};
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::listener;

/// The id of one HTTP request: the client's `X-Request-Id` if it is a sane one, else a fresh
/// one. Every log line of the request carries it, the audit record of a tool call keeps it, and
/// the answer sends it back.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// The id.
    pub id: String,
    /// Whether the client chose it (then it says nothing the hub vouches for).
    pub from_client: bool,
}

const REQUEST_ID: &str = "x-request-id";

/// Gives each request its [`RequestId`] and a span that carries it.
pub(super) async fn with_request_id(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .map(str::to_owned);
    let from_client = given.is_some();
    let id = given
        .unwrap_or_else(|| agentseal::clock::random_id().unwrap_or_else(|_| "unavailable".into()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    request.extensions_mut().insert(RequestId {
        id: id.clone(),
        from_client,
    });
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Binds the metrics listener; refused before the hub starts if the address is taken.
pub(super) async fn metrics_listener(
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, ServiceError> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics served off loopback: anyone who reaches it sees call counts, tool names and refusal reasons");
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::InvalidInput(format!("cannot serve metrics on {addr}: {e}")))
}

/// Serves `GET /metrics` (OpenMetrics text, which Prometheus scrapes) until `cancel`.
pub(super) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    installation: Arc<Installation>,
    cancel: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        eprintln!("agentseal: metrics at http://{addr}/metrics");
    }
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let installation = installation.clone();
            async move {
                // The outbox is counted when scraped: it is shared by every hub of a database.
                if let Ok(Ok(status)) =
                    crate::core_call(move || installation.signals_status()).await
                {
                    agentseal::metrics::set_outbox_depth(status.outbox.pending as usize);
                }
                (
                    [(header::CONTENT_TYPE, agentseal::metrics::CONTENT_TYPE)],
                    agentseal::metrics::encode(),
                )
            }
        }),
    );
    listener::serve(
        listener,
        app,
        listener::Limits::default(),
        cancel.cancelled_owned(),
    )
    .await;
}
