//! The operator console (`/console`): pending approvals to approve or deny, agents and their
//! certificates, revocations and refusals, the audit log. Server-rendered pages, no JavaScript.
//!
//! Who gets in: only someone holding a session opened with a one-time login link (`agentseal
//! console login`; [`agentseal::authority::ConsoleSession`]). An `Authorization` header is never
//! looked at here, so an agent's access token opens nothing. The session cookie is `HttpOnly`,
//! `SameSite=Strict`, `Secure` unless the hub is reached over plain HTTP on loopback, and
//! scoped to `/console`. Every state change is a POST that must come from the hub's own origin
//! (`Origin`, and `Sec-Fetch-Site` when sent) with the session's CSRF token, to an allowed
//! `Host`. Every answer carries a content security policy that allows nothing but this origin's
//! stylesheet and forms, and forbids framing.

// A refusal here is the HTTP answer itself, made at most once per request: boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use agentseal::audit::{AuditEvent, Decision, RecordBody};
use agentseal::authority::{ApprovalStatus, ConsoleSession, Installation, KeptState, ServiceError};
use agentseal::token::trust::{RevocationSource as _, RevokedKind};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

use super::Hub;

mod pages;

/// The session cookie's name. `__Host-`: only this host may set it, `Secure`, `Path=/`, so
/// another site cannot plant one (browsers accept `Secure` on loopback HTTP too).
const COOKIE: &str = "__Host-agentseal_console";
/// Largest console form accepted.
const MAX_FORM: usize = 16 * 1024;
/// Most audit records one page shows.
const AUDIT_PAGE: usize = 200;
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Where the console is allowed to be used from, and how its cookie is set.
#[derive(Debug, Clone)]
pub struct ConsoleSite {
    /// Origins a form may be posted from (the hub's own).
    pub origins: Vec<String>,
    /// Host names the hub answers to.
    pub hosts: Vec<String>,
}

/// The console's routes.
pub fn routes() -> Router<Arc<Hub>> {
    let forms = axum::extract::DefaultBodyLimit::max(MAX_FORM);
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/approvals") }),
        )
        .route("/console/style.css", get(style))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/approvals", get(approvals))
        .route("/console/approvals/{id}/{decision}", post(decide))
        .route("/console/agents", get(agents))
        .route("/console/agents/revoke", post(revoke))
        .route("/console/revocations", get(revocations))
        .route("/console/audit", get(audit))
        .layer(forms)
}

/// The headers every console answer carries.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: browsers then send `Origin: null` with forms, which the origin check
        // must refuse.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn page(status: StatusCode, markup: Markup) -> Response {
    secured(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            markup.into_string(),
        )
            .into_response(),
    )
}

fn refused(status: StatusCode, title: &str, message: &str) -> Response {
    page(status, pages::problem(title, message))
}

async fn style() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("style.css"),
        )
            .into_response(),
    )
}

/// Runs a core call off the event loop; a failure becomes a 500 page (the log has the detail).
async fn core<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, Response> {
    match crate::core_call(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::error!(%error, "console request failed");
            Err(refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something failed",
                &format!("{}: see the hub's log", error.code()),
            ))
        }
        Err(_) => Err(refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something failed",
            "see the hub's log",
        )),
    }
}

/// The session secret the request's cookie holds, if any.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty() && value.len() <= 128).then(|| value.to_owned())
        })
}

/// The session of a page request, or a redirect to sign in.
async fn session(
    hub: &Arc<Hub>,
    headers: &HeaderMap,
) -> Result<(String, ConsoleSession), Response> {
    let Some(secret) = cookie(headers) else {
        return Err(secured(Redirect::to("/console/login").into_response()));
    };
    let (installation, lookup) = (hub.installation.clone(), secret.clone());
    match core(move || installation.console_session(&lookup)).await? {
        Some(session) => Ok((secret, session)),
        None => Err(secured(Redirect::to("/console/login").into_response())),
    }
}

/// Refuses a state change that did not come from the console's own pages: another origin (or
/// none), a cross-site fetch, or a foreign `Host`.
fn same_site(hub: &Hub, headers: &HeaderMap) -> Result<(), Response> {
    let site = &hub.console;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| {
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        });
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let problem = if !host.is_some_and(|h| site.hosts.contains(&h)) {
        Some("this request names a host the hub does not answer to")
    } else if !origin.is_some_and(|o| site.origins.iter().any(|allowed| allowed == o)) {
        Some("this form did not come from the console's own pages (Origin)")
    } else if fetch_site.is_some_and(|s| s != "same-origin") {
        Some("this form did not come from the console's own pages (Sec-Fetch-Site)")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => {
            tracing::warn!(?origin, ?fetch_site, "console form refused: {problem}");
            Err(refused(StatusCode::FORBIDDEN, "Refused", problem))
        }
    }
}

/// A posted form's fields.
fn form(body: &Bytes) -> Result<Vec<(String, String)>, Response> {
    if body.len() > MAX_FORM {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Refused",
            "form too large",
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|_| refused(StatusCode::BAD_REQUEST, "Refused", "not a form"))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The session of a state-changing request: same site, signed in, and the form's CSRF token.
async fn authorized(
    hub: &Arc<Hub>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, ConsoleSession, Vec<(String, String)>), Response> {
    same_site(hub, headers)?;
    let fields = form(body)?;
    let (secret, session) = match session(hub, headers).await {
        Ok(found) => found,
        Err(_) => {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "Signed out",
                "your console session ended: sign in again",
            ));
        }
    };
    if !field(&fields, "csrf").is_some_and(|t| session.csrf_matches(t)) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "Refused",
            "this form's token is not this session's: reload the page and try again",
        ));
    }
    Ok((secret, session, fields))
}

/// Records a console action in the audit log before its result is acted on (a change that
/// cannot be recorded is reported as failed).
fn audited<T>(
    installation: &Installation,
    operation: &str,
    session: &ConsoleSession,
    details: serde_json::Map<String, serde_json::Value>,
    outcome: Result<T, ServiceError>,
) -> Result<T, ServiceError> {
    let decision = match &outcome {
        Ok(_) => Decision::Allowed,
        Err(_) => Decision::Failed,
    };
    let mut event = AuditEvent::new("operator", operation, decision);
    if let Err(error) = &outcome {
        event.reasons = vec![error.code().to_owned()];
    }
    event.details = details;
    event.details.insert("transport".into(), "console".into());
    event
        .details
        .insert("by".into(), session.operator.clone().into());
    installation
        .release(&event, outcome)
        .map_err(ServiceError::from)
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    page(StatusCode::OK, pages::login(query.token.as_deref(), None))
}

async fn login(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = same_site(&hub, &headers) {
        return refusal;
    }
    let fields = match form(&body) {
        Ok(fields) => fields,
        Err(refusal) => return refusal,
    };
    let Some(token) = field(&fields, "token").map(str::to_owned) else {
        return page(
            StatusCode::BAD_REQUEST,
            pages::login(None, Some("no login link given")),
        );
    };
    let installation = hub.installation.clone();
    let opened = match core(move || {
        let opened = installation.open_console_session(&token)?;
        // A link that never existed is anyone's guess: logged, not audited (nobody may fill the
        // audit log from outside). A real link's use and misuse are audited.
        if let Err(agentseal::authority::ConsoleError::UnknownLink) = &opened {
            tracing::info!("console sign-in with an unknown link refused");
            return Ok(opened);
        }
        let (actor, decision) = match &opened {
            Ok(_) => ("operator", Decision::Allowed),
            Err(_) => ("anonymous", Decision::Denied),
        };
        let mut event = AuditEvent::new(actor, "console.login", decision);
        event.details.insert("transport".into(), "console".into());
        match &opened {
            Ok((_, session)) => {
                event
                    .details
                    .insert("by".into(), session.operator.clone().into());
            }
            Err(error) => event.reasons = vec![error.code().to_owned()],
        }
        installation
            .release(&event, Ok(opened))
            .map_err(ServiceError::from)
    })
    .await
    {
        Ok(opened) => opened,
        Err(response) => return response,
    };
    match opened {
        Ok((secret, _)) => {
            let cookie = format!(
                "{COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                agentseal::authority::SESSION_TTL
            );
            let mut response = Redirect::to("/console/approvals").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            secured(response)
        }
        Err(error) => page(
            StatusCode::FORBIDDEN,
            pages::login(None, Some(&error.to_string())),
        ),
    }
}

async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
    let (secret, _, _) = match authorized(&hub, &headers, &body).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let installation = hub.installation.clone();
    if let Err(response) = core(move || installation.close_console_session(&secret)).await {
        return response;
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-agentseal_console=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    secured(response)
}

async fn approvals(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let (_, session) = match session(&hub, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let installation = hub.installation.clone();
    let now = agentseal::clock::now();
    match core(move || installation.approvals()).await {
        Ok(all) => {
            let pending: Vec<_> = all
                .into_iter()
                .filter(|a| a.status(now) == ApprovalStatus::Pending)
                .collect();
            page(
                StatusCode::OK,
                pages::approvals(&pending, &session.csrf, now),
            )
        }
        Err(response) => response,
    }
}

async fn decide(
    State(hub): State<Arc<Hub>>,
    Path((id, decision)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, session, fields) = match authorized(&hub, &headers, &body).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let approved = match decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return refused(StatusCode::NOT_FOUND, "Not found", "no such decision"),
    };
    let reason = field(&fields, "reason").map(str::to_owned);
    if !approved && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return refused(
            StatusCode::BAD_REQUEST,
            "Refused",
            "give a reason to deny: the agent is told",
        );
    }
    let installation = hub.installation.clone();
    let by = format!("console: {}", session.operator);
    let outcome = crate::core_call(move || {
        let decided = installation.decide_approval(&id, approved, &by, reason.as_deref());
        let mut details = serde_json::Map::new();
        details.insert("approval_id".into(), id.clone().into());
        // What was decided, in the record itself: the approval is pruned a day after it expires.
        if let Ok(approval) = &decided {
            let request = &approval.request;
            for (name, value) in [
                ("agent_id", Some(&request.agent_id)),
                ("action", Some(&request.action)),
                ("audience", Some(&request.audience)),
                ("args_sha256", Some(&request.args_sha256)),
                ("on_behalf_of", request.on_behalf_of.as_ref()),
            ] {
                if let Some(value) = value {
                    let value: String = value.chars().take(256).collect();
                    details.insert(name.into(), value.into());
                }
            }
            details.insert("ttl_seconds".into(), request.ttl.into());
        }
        if let Some(reason) = &reason {
            details.insert(
                "reason".into(),
                reason.chars().take(256).collect::<String>().into(),
            );
        }
        let operation = if approved {
            "console.approve"
        } else {
            "console.deny"
        };
        audited(&installation, operation, &session, details, decided)
    })
    .await;
    match outcome {
        Ok(Ok(_)) => secured(Redirect::to("/console/approvals").into_response()),
        Ok(Err(error)) => refused(
            StatusCode::CONFLICT,
            "Not decided",
            &format!("{}: {error}", error.code()),
        ),
        Err(_) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something failed",
            "see the hub's log",
        ),
    }
}

async fn agents(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let (_, session) = match session(&hub, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let installation = hub.installation.clone();
    let rows = core(move || {
        let now = agentseal::clock::now();
        let mut rows = Vec::new();
        for agent in installation.agents()? {
            let certificate = match &agent.current_serial {
                Some(serial) => installation.store().certificate(serial)?,
                None => None,
            };
            let revoked = match &agent.current_serial {
                Some(serial) => installation
                    .store()
                    .certificate_revocation(serial, now)
                    .map_err(ServiceError::Unverifiable)?
                    .is_some(),
                None => false,
            };
            let last_activity = installation
                .recent_audit(&agent.agent_id, 1)?
                .into_iter()
                .next()
                .map(|(_, body)| (body.op, body.time));
            rows.push(pages::AgentRow {
                expires_at: certificate.map(|c| c.expires_at),
                revoked,
                last_activity,
                agent,
            });
        }
        Ok(rows)
    })
    .await;
    match rows {
        Ok(rows) => page(StatusCode::OK, pages::agents(&rows, &session.csrf)),
        Err(response) => response,
    }
}

async fn revoke(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, session, fields) = match authorized(&hub, &headers, &body).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let (Some(serial), Some(reason)) = (
        field(&fields, "serial").map(str::to_owned),
        field(&fields, "reason").map(str::to_owned),
    ) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Refused",
            "give the certificate and a reason",
        );
    };
    let installation = hub.installation.clone();
    let outcome = crate::core_call(move || {
        let revoked = installation.revoke_certificate(&serial, &reason);
        let mut details = serde_json::Map::new();
        details.insert(
            "serial".into(),
            serial.chars().take(256).collect::<String>().into(),
        );
        details.insert(
            "reason".into(),
            reason.chars().take(256).collect::<String>().into(),
        );
        audited(
            &installation,
            "console.revoke.cert",
            &session,
            details,
            revoked,
        )
    })
    .await;
    match outcome {
        Ok(Ok(_)) => secured(Redirect::to("/console/agents").into_response()),
        Ok(Err(error)) => refused(
            StatusCode::BAD_REQUEST,
            "Not revoked",
            &format!("{}: {error}", error.code()),
        ),
        Err(_) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something failed",
            "see the hub's log",
        ),
    }
}

async fn revocations(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let (_, session) = match session(&hub, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let installation = hub.installation.clone();
    let gathered = core(move || {
        let certificates = installation.store().revocations(RevokedKind::Certificate)?;
        let tokens = installation.store().revocations(RevokedKind::Token)?;
        let refusals = recent(&installation, |r| r.decision == Decision::Denied, 50)?;
        let signals = installation.signals_status()?;
        Ok((certificates, tokens, refusals, signals))
    })
    .await;
    match gathered {
        Ok((certificates, tokens, refusals, signals)) => page(
            StatusCode::OK,
            pages::revocations(&certificates, &tokens, &refusals, &signals, &session.csrf),
        ),
        Err(response) => response,
    }
}

/// How many of the latest audit records the console's pages search.
const SCAN: i64 = 5_000;

/// The last `limit` audit records that `keep` keeps, newest first, among the latest [`SCAN`].
fn recent(
    installation: &Installation,
    keep: impl Fn(&RecordBody) -> bool,
    limit: usize,
) -> Result<Vec<(i64, RecordBody)>, ServiceError> {
    let head = installation
        .store()
        .meta("audit_head")?
        .and_then(|head| head.split(':').next()?.parse::<i64>().ok())
        .unwrap_or(0);
    let mut kept = std::collections::VecDeque::with_capacity(limit + 1);
    installation.audit_records((head - SCAN).max(1), &mut |record| {
        if let Ok(body) = record.parsed()
            && keep(&body)
        {
            kept.push_back((record.seq, body));
            if kept.len() > limit {
                kept.pop_front();
            }
        }
        true
    })?;
    Ok(kept.into_iter().rev().collect())
}

#[derive(Deserialize)]
struct AuditQuery {
    agent: Option<String>,
    op: Option<String>,
    /// Walk and verify the whole log (on request: it costs a signature check per record).
    verify: Option<String>,
}

async fn audit(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Response {
    let (_, session) = match session(&hub, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let agent = query.agent.unwrap_or_default().trim().to_owned();
    let operation = query.op.unwrap_or_default().trim().to_owned();
    let installation = hub.installation.clone();
    let (want_agent, want_op) = (agent.clone(), operation.clone());
    let verify = query.verify.is_some();
    let gathered = core(move || {
        let records = recent(
            &installation,
            |r| {
                (want_agent.is_empty() || r.actor == want_agent)
                    && (want_op.is_empty() || r.op == want_op)
            },
            AUDIT_PAGE,
        )?;
        let verified = if verify {
            Some(match installation.audit_anchor()? {
                Ok(anchor) => match installation.verify_audit(&anchor, &KeptState::default())? {
                    Ok(summary) => Ok(summary.records),
                    Err(fault) => Err(fault.to_string()),
                },
                Err(fault) => Err(fault.to_string()),
            })
        } else {
            None
        };
        let checkpoint = installation.store().latest_checkpoint()?.map(|c| c.note);
        Ok((
            pages::AuditState {
                verified,
                checkpoint,
            },
            records,
        ))
    })
    .await;
    match gathered {
        Ok((state, records)) => page(
            StatusCode::OK,
            pages::audit(&records, &state, &agent, &operation, &session.csrf),
        ),
        Err(response) => response,
    }
}
