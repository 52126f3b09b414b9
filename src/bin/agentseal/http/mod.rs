//! The HTTP hub: the MCP tools of every agent of the installation over streamable HTTP at
//! `/mcp`, each request authorized by a bearer access token bound to one agent; plus what a
//! fleet needs to verify offline: `/.well-known/jwks.json`, `/.well-known/agentseal-ca.json`,
//! `/crl`, and `/healthz`; and, as its agents' authorization server, the token endpoint where
//! workloads exchange their platform's JWT for an access token (`/oauth/token`, with RFC 8414
//! metadata). Metrics are served on a listener of their own (`--metrics`).
//!
//! This layer parses HTTP and calls the core: token verification, scopes and revocation
//! publishing are `agentseal::authority` operations; DNS-rebinding (Host) and Origin checks and the
//! MCP protocol itself are rmcp's streamable HTTP service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentseal::authority::{Installation, ServiceError};
use agentseal::federation::{HubIdentity, IssuerKeys};
use agentseal::reason::VerifyError;
use agentseal::token::access::{AccessGrant, Scope};
use agentseal::verify::remote::HubTrust;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::mcp::{AgentServer, required_scope};

mod console;
pub mod listener;
mod oauth;
mod observe;

pub use observe::RequestId;
use observe::{metrics_listener, serve_metrics, with_request_id};

/// Largest request body accepted on `/mcp`.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// How long a client may take to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the hub remembers the owner of an idle MCP session (rmcp closes them after 5 min).
const SESSION_MEMORY: Duration = Duration::from_secs(15 * 60);
/// How long rmcp keeps an idle MCP session (its `LocalSessionManager` default).
const SESSION_IDLE: Duration = Duration::from_secs(300);
/// Most open MCP sessions one agent may hold.
pub const MAX_SESSIONS_PER_AGENT: usize = 64;
/// Most MCP sessions the hub keeps in all.
pub const MAX_SESSIONS: usize = 10_000;
/// How long in-flight requests get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How old a published audit checkpoint may be: one walk and signature per second at most.
const CHECKPOINT_MAX_AGE: Duration = Duration::from_secs(1);

/// How the hub is run.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The URL clients reach the hub at (scheme, host, port; no path) [default: `http://` and
    /// the address listened on]. Access tokens carry `<public_url>/mcp` as audience.
    pub public_url: Option<String>,
    /// Extra origins allowed to call `/mcp` (besides the hub's own).
    pub allowed_origins: Vec<String>,
    /// Serve this agent to every request without authorization (loopback only).
    pub insecure_agent: Option<String>,
    /// Validity of published revocation lists, in seconds.
    pub crl_validity: Option<i64>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Another hub whose CA's agents this hub's agents also verify.
    pub trust: Option<Arc<HubTrust>>,
    /// Header-read timeout and connection cap.
    pub limits: listener::Limits,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// How long out-of-band approvals wait for a person.
    pub approval_ttl: Option<i64>,
}

impl HubOptions {
    /// Options for listening on `addr`, reached at `http://addr`.
    pub fn new(addr: SocketAddr) -> Self {
        HubOptions {
            addr,
            public_url: None,
            allowed_origins: Vec::new(),
            insecure_agent: None,
            crl_validity: None,
            max_body: DEFAULT_MAX_BODY,
            trust: None,
            limits: listener::Limits::default(),
            metrics: None,
            approval_ttl: None,
        }
    }
}

/// Shared state of the hub's handlers.
struct Hub {
    installation: Arc<Installation>,
    /// Where the operator console may be used from.
    console: console::ConsoleSite,
    /// This hub's URLs, as an authorization server.
    identity: HubIdentity,
    /// The workload issuers' keys, fetched and cached.
    issuer_keys: IssuerKeys,
    resource: String,
    metadata_url: String,
    insecure: Option<AccessGrant>,
    crl_validity: Option<i64>,
    max_body: usize,
    /// Which agent opened each MCP session, and when it was last used: another agent may not
    /// use or close it.
    sessions: Mutex<HashMap<String, (String, Instant)>>,
}

/// Runs the hub until SIGTERM or Ctrl-C, then lets in-flight requests finish.
pub fn serve_http(installation: Installation, options: HubOptions) -> Result<(), ServiceError> {
    if options.insecure_agent.is_some() && !options.addr.ip().is_loopback() {
        return Err(ServiceError::InvalidInput(format!(
            "--insecure-no-auth is refused on {}: only a loopback address may run without authorization",
            options.addr
        )));
    }
    if let Some(url) = &options.public_url {
        public_base(url)?;
    }
    if let Some(agent) = &options.insecure_agent {
        installation.present_certificate(agent, None, "")?;
    }
    let limits = listener::fit_open_file_limit(options.limits);
    let runtime = crate::runtime(crate::EventLoop::PerCore)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|e| ServiceError::InvalidInput(format!("cannot listen on {}: {e}", options.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| ServiceError::InvalidInput(format!("listener address: {e}")))?;
        let public = public_base(
            options
                .public_url
                .as_deref()
                .unwrap_or(&format!("http://{local}")),
        )?;
        let resource = format!("{}mcp", public.as_str());
        // `access-token issue` and `federation trust` default to the URL the hub runs at.
        if let Err(error) = installation.record_public_url(public.as_str()) {
            tracing::warn!(%error, "the hub's public URL was not recorded");
        }
        let metrics = match options.metrics {
            Some(addr) => Some(metrics_listener(addr).await?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let installation = Arc::new(installation);
        let signals = CancellationToken::new();
        let delivery = installation.spawn_signal_delivery(signals.clone());
        let _stop_delivery = signals.clone().drop_guard();
        let _renewal = installation.spawn_renewal(None, signals.clone());
        let app = router(
            installation.clone(),
            &options,
            &public,
            local,
            shutdown.child_token(),
        )?;
        if let Some(listener) = metrics {
            tokio::spawn(serve_metrics(listener, installation, shutdown.child_token()));
        }
        if let Some(agent) = &options.insecure_agent {
            tracing::warn!(
                agent = %agent,
                "serving WITHOUT AUTHORIZATION (--insecure-no-auth): every local process can act as this agent"
            );
        }
        tracing::info!(addr = %local, %resource, "serving MCP over HTTP");
        // One line on stderr that scripts and tests can wait for.
        eprintln!("agentseal: listening on http://{local} (MCP at {resource})");
        let signal = shutdown_signal();
        let stop = shutdown.clone();
        listener::serve(listener, app, limits, async move {
            signal.await;
            tracing::info!("shutting down: finishing in-flight requests");
            // Open event streams never end by themselves: close them after the grace.
            tokio::spawn(async move {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                stop.cancel();
            });
        })
        .await;
        shutdown.cancel();
        // Signals recorded by the last requests are still delivered by the next start.
        signals.cancel();
        let _ = delivery.await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The hub's public base URL, normalized to end in `/`; it must be a bare http(s) origin.
fn public_base(url: &str) -> Result<reqwest::Url, ServiceError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ServiceError::InvalidInput(format!("public URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.path() != "/"
        || parsed.query().is_some()
    {
        return Err(ServiceError::InvalidInput(format!(
            "public URL {url:?} must be http(s)://host[:port], without a path"
        )));
    }
    Ok(parsed)
}

fn origin_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

fn router(
    installation: Arc<Installation>,
    options: &HubOptions,
    public: &reqwest::Url,
    local: SocketAddr,
    cancel: CancellationToken,
) -> Result<Router, ServiceError> {
    let own_origins = vec![
        origin_of(public),
        format!("http://127.0.0.1:{}", local.port()),
        format!("http://localhost:{}", local.port()),
    ];
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = public.host_str() {
        hosts.push(host.trim_matches(['[', ']']).to_owned());
    }
    let hub = Arc::new(Hub {
        installation: installation.clone(),
        // Only the hub's own origins post console forms (not --allow-origin's, which are for
        // browser MCP clients).
        console: console::ConsoleSite {
            origins: own_origins.clone(),
            hosts: hosts.clone(),
        },
        identity: HubIdentity::new(public.as_str()),
        issuer_keys: IssuerKeys::new()
            .map_err(|e| ServiceError::InvalidInput(format!("issuer key fetcher: {e}")))?,
        metadata_url: format!(
            "{}.well-known/oauth-protected-resource/mcp",
            public.as_str()
        ),
        resource: format!("{}mcp", public.as_str()),
        insecure: options
            .insecure_agent
            .as_deref()
            .map(AccessGrant::unauthenticated),
        crl_validity: options.crl_validity,
        max_body: options.max_body,
        sessions: Mutex::default(),
    });
    // Browsers may call only from the hub's own origin or ones the operator allowed; requests
    // without an Origin header (agents, CLIs) pass.
    let mut origins = own_origins;
    origins.extend(options.allowed_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(options.max_body)
        .with_cancellation_token(cancel);
    let server = AgentServer::per_request(installation.clone())
        .trusting(options.trust.clone())
        .with_crl_validity(options.crl_validity)
        .with_approval_ttl(options.approval_ttl);
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let mcp = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_TIMEOUT,
        ))
        .service(mcp);
    let protected = Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(hub.clone(), authorize));
    let token = Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/authorize", get(oauth::authorize))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_TIMEOUT,
        ));
    Ok(Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(resource_metadata),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/agentseal-ca.json", get(ca_keys))
        .route("/crl", get(crl))
        .route("/audit/checkpoint", get(audit_checkpoint))
        .route("/healthz", get(healthz))
        .merge(token)
        .merge(
            console::routes().layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                BODY_TIMEOUT,
            )),
        )
        .with_state(hub)
        .merge(protected)
        .layer(axum::middleware::from_fn(with_request_id)))
}

/// RFC 9728 protected resource metadata.
async fn resource_metadata(State(hub): State<Arc<Hub>>) -> Response {
    axum::Json(json!({
        "resource": hub.resource,
        "authorization_servers": [hub.identity.issuer()],
        "bearer_methods_supported": ["header"],
        "scopes_supported": Scope::ALL.map(Scope::name),
        "resource_name": "agentseal hub",
        "resource_documentation": "https://github.com/agentseal/agentseal#http-hub",
    }))
    .into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, Response> {
    match crate::core_call(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::error!(%error, "request failed");
            Err(problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                &error.to_string(),
            ))
        }
        Err(error) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("task failed: {error}"),
        )),
    }
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Every key a fleet verifier may meet: the CA's and each agent's current ones (OKP and AKP).
async fn jwks(State(hub): State<Arc<Hub>>) -> Response {
    let installation = hub.installation.clone();
    match blocking(move || installation.jwks()).await {
        Ok(set) => (
            [
                (header::CONTENT_TYPE, "application/jwk-set+json"),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            serde_json::to_string(&set).unwrap_or_default(),
        )
            .into_response(),
        Err(response) => response,
    }
}

/// The trust anchor: the CA id and the CA's keys only (a JWK Set with a `ca_id` member), and
/// after a CA key rotation the `rotation` statement by which the previous keys endorse the new.
async fn ca_keys(State(hub): State<Arc<Hub>>) -> Response {
    let installation = hub.installation.clone();
    let rotation = match blocking(move || installation.ca_rotation_statement()).await {
        Ok(rotation) => rotation,
        Err(response) => return response,
    };
    let anchor = hub.installation.trust_anchor();
    let mut body = serde_json::to_value(anchor.jwks()).unwrap_or(Value::Null);
    body["ca_id"] = Value::String(anchor.ca_id.clone());
    if let Some(rotation) = rotation {
        body["rotation"] = Value::String(rotation);
    }
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The signed revocation list, cacheable until a fresh one may exist.
async fn crl(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let installation = hub.installation.clone();
    let validity = hub.crl_validity;
    let crl = match blocking(move || installation.published_crl(validity)).await {
        Ok(crl) => crl,
        Err(response) => return response,
    };
    let now = agentseal::clock::now();
    // Short enough that a revocation reaches fleet caches quickly, never past next_update.
    let max_age = (crl.next_update - now).clamp(0, 60);
    let etag = format!("\"crl-{}\"", crl.number);
    let cache = [
        (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
        (header::ETAG, etag.clone()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let media = if crl.encoded.starts_with('{') {
        "application/jose+json"
    } else {
        "application/jwt"
    };
    (cache, [(header::CONTENT_TYPE, media)], crl.encoded).into_response()
}

/// The audit log's latest checkpoint (a C2SP signed note), at most a second old: witnesses and
/// auditors keep it to check later that the log only grew (`agentseal audit verify
/// --checkpoint`).
async fn audit_checkpoint(State(hub): State<Arc<Hub>>) -> Response {
    let installation = hub.installation.clone();
    match blocking(move || installation.published_checkpoint(CHECKPOINT_MAX_AGE)).await {
        Ok(checkpoint) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            checkpoint.note,
        )
            .into_response(),
        Err(response) => response,
    }
}

async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "ca_id": hub.installation.trust_anchor().ca_id,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// A 401 or 403 with an RFC 6750 challenge that points at the resource metadata (RFC 9728).
fn challenge(
    hub: &Hub,
    status: StatusCode,
    error: Option<(&str, &str)>,
    scope: Option<Scope>,
) -> Response {
    let mut value = format!("Bearer resource_metadata=\"{}\"", hub.metadata_url);
    if let Some((code, description)) = error {
        let description: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        value.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    if let Some(scope) = scope {
        value.push_str(&format!(", scope=\"{}\"", scope.name()));
    }
    let message = match error {
        Some((code, description)) => format!("{code}: {description}"),
        None => "an access token is required: Authorization: Bearer <token>".to_owned(),
    };
    let mut response = problem(status, &message);
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The bearer token of a request, if it sent exactly one well-formed `Authorization: Bearer`.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("send one Authorization header");
    }
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not ASCII")?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err("use the Bearer scheme: Authorization: Bearer <token>"),
    }
}

/// The methods and tool names of a JSON-RPC message or batch (none for JSON that is not one:
/// rmcp answers that).
fn calls(value: Value) -> Vec<(String, Option<String>)> {
    let messages = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    messages
        .iter()
        .filter_map(|m| {
            let method = m.get("method")?.as_str()?.to_owned();
            let name = m
                .pointer("/params/name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some((method, name))
        })
        .collect()
}

/// Authorizes every `/mcp` request: a valid access token for this hub (never from the query
/// string), the session belonging to the same agent, a body within bounds, and the scope each
/// call needs. The token is removed before the request goes further.
async fn authorize(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let grant = match authenticate(&hub, &parts).await {
        Ok(grant) => grant,
        Err(refusal) => return refusal,
    };
    parts.headers.remove(header::AUTHORIZATION);
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(session) = &session
        && !touch_session(&hub, session, &grant)
    {
        // Indistinguishable from an unknown session: another agent's session is not yours to
        // use or close.
        return problem(StatusCode::NOT_FOUND, "session not found");
    }
    let body = if parts.method == Method::POST {
        match admit_body(&hub, body, session.is_none(), &grant).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        }
    } else {
        body
    };
    let agent = grant.agent_id.clone();
    let deleting = parts.method == Method::DELETE;
    parts.extensions.insert(grant);
    let response = next.run(Request::from_parts(parts, body)).await;
    track_session(&hub, session.as_deref(), agent, deleting, &response);
    response
}

/// The access grant of a request: its bearer token verified for this hub (or the insecure
/// test agent). A token in the query string is refused, not ignored.
async fn authenticate(hub: &Arc<Hub>, parts: &Parts) -> Result<AccessGrant, Response> {
    if parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    }) {
        return Err(challenge(
            hub,
            StatusCode::UNAUTHORIZED,
            Some((
                "invalid_request",
                "access tokens are not accepted in the query string",
            )),
            None,
        ));
    }
    let token = match (&hub.insecure, bearer(&parts.headers)) {
        (Some(grant), _) => return Ok(grant.clone()),
        (None, Err(problem)) => {
            return Err(challenge(
                hub,
                StatusCode::UNAUTHORIZED,
                Some(("invalid_request", problem)),
                None,
            ));
        }
        (None, Ok(None)) => return Err(challenge(hub, StatusCode::UNAUTHORIZED, None, None)),
        (None, Ok(Some(token))) => token.to_owned(),
    };
    let (installation, resource) = (hub.installation.clone(), hub.resource.clone());
    match crate::core_call(move || installation.authorize(&token, &resource)).await {
        Ok(Ok(grant)) => Ok(grant),
        // The hub's own database did not answer: the token may be fine. A 401 would tell the
        // client to get a new one; this is the server's trouble, and passes.
        Ok(Err(VerifyError::RevocationUnavailable)) => {
            tracing::warn!("access token not checked: the database is unavailable");
            let mut response = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable: the access token could not be checked now; retry",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(response)
        }
        Ok(Err(error)) => {
            tracing::info!(reason = error.code(), "access token refused");
            agentseal::metrics::verification_failed(error.code());
            let text = error.to_string();
            let description = if text.starts_with(error.code()) {
                text
            } else {
                format!("{}: {text}", error.code())
            };
            Err(challenge(
                hub,
                StatusCode::UNAUTHORIZED,
                Some(("invalid_token", &description)),
                None,
            ))
        }
        Err(_) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "authorization failed",
        )),
    }
}

/// Marks a known session used; false if it belongs to another agent than the grant's.
fn touch_session(hub: &Hub, session: &str, grant: &AccessGrant) -> bool {
    let mut sessions = hub.sessions.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, last_used)) = sessions.get_mut(session) {
        if *owner != grant.agent_id {
            return false;
        }
        *last_used = Instant::now();
    }
    true
}

/// Reads a POST body within the size and time bounds, then checks what it asks for: a new
/// session only within the session quotas, each call only with the scope it needs.
async fn admit_body(
    hub: &Arc<Hub>,
    body: Body,
    new_session: bool,
    grant: &AccessGrant,
) -> Result<Body, Response> {
    let bytes =
        match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, hub.max_body)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body larger than {} bytes", hub.max_body),
                ));
            }
            Err(_) => {
                return Err(problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body too slow",
                ));
            }
        };
    let calls = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => calls(value),
        // An empty body is rmcp's to refuse (it depends on the method).
        Err(_) if bytes.is_empty() => Vec::new(),
        Err(error) => return Err(parse_error(&error)),
    };
    if new_session && calls.iter().any(|(method, _)| method == "initialize") {
        let sessions = hub.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // rmcp closes a session idle for 5 minutes: only younger ones count.
        let own = sessions
            .values()
            .filter(|(owner, used)| *owner == grant.agent_id && used.elapsed() < SESSION_IDLE)
            .count();
        if own >= MAX_SESSIONS_PER_AGENT || sessions.len() >= MAX_SESSIONS {
            return Err(problem(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many open MCP sessions (at most {MAX_SESSIONS_PER_AGENT} per agent): close some (DELETE /mcp) or use the stateless 2026-07-28 protocol"
                ),
            ));
        }
    }
    for (method, tool) in calls {
        if let Some(scope) = required_scope(&method, tool.as_deref())
            && !grant.permits(scope)
        {
            return Err(challenge(
                hub,
                StatusCode::FORBIDDEN,
                Some((
                    "insufficient_scope",
                    &format!(
                        "{method} {} needs scope {}",
                        tool.unwrap_or_default(),
                        scope.name()
                    ),
                )),
                Some(scope),
            ));
        }
    }
    Ok(Body::from(bytes))
}

/// A JSON-RPC parse error (-32700, `id` null: JSON-RPC 2.0 §5.1) for a body that is not JSON.
fn parse_error(error: &serde_json::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32700, "message": format!("Parse error: {error}")},
        })),
    )
        .into_response()
}

/// Remembers a session the server just created for `agent`, or forgets one it just closed.
fn track_session(
    hub: &Hub,
    session: Option<&str>,
    agent: String,
    deleting: bool,
    response: &Response,
) {
    let mut sessions = hub.sessions.lock().unwrap_or_else(|p| p.into_inner());
    match (session, response.headers().get("mcp-session-id")) {
        (None, Some(created)) => {
            if let Ok(created) = created.to_str() {
                // rmcp closes sessions idle for 5 minutes; forget them some time after.
                sessions.retain(|_, (_, used)| used.elapsed() < SESSION_MEMORY);
                sessions.insert(created.to_owned(), (agent, Instant::now()));
            }
        }
        (Some(session), _) if deleting && response.status().is_success() => {
            sessions.remove(session);
        }
        _ => {}
    }
    agentseal::metrics::set_open_sessions(
        sessions
            .values()
            .filter(|(_, used)| used.elapsed() < SESSION_IDLE)
            .count(),
    );
}
