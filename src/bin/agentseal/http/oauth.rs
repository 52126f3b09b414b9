//! The hub as its agents' OAuth authorization server: RFC 8414 metadata and the token endpoint,
//! where a workload trades its platform's JWT for an access token
//! ([`agentseal::authority::federation::exchange`]). This layer reads the form and shapes the
//! OAuth answer; every check is the core's.

use std::sync::Arc;

use agentseal::authority::federation;
use agentseal::federation::{
    GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, Grant, GrantError, TOKEN_TYPE_ACCESS_TOKEN,
    TokenRequest,
};
use agentseal::token::access::Scope;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Hub;

/// Largest token request body: an assertion and a few parameters.
pub const MAX_TOKEN_REQUEST: usize = 64 * 1024;

/// RFC 8414 authorization server metadata.
pub async fn metadata(State(hub): State<Arc<Hub>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(json!({
            "issuer": hub.identity.issuer(),
            "token_endpoint": hub.identity.token_endpoint(),
            "grant_types_supported": [GRANT_TOKEN_EXCHANGE, GRANT_JWT_BEARER],
            "token_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": [],
            "scopes_supported": Scope::ALL.map(Scope::name),
            "service_documentation": "https://github.com/agentseal/agentseal/blob/main/docs/federation.md",
        })),
    )
        .into_response()
}

/// An OAuth error answer (RFC 6749 §5.2) with the reason code beside it; never cached.
fn refusal(error: &GrantError) -> Response {
    let status = match error {
        GrantError::IssuerKeysUnavailable(_)
        | GrantError::Server {
            retryable: true, ..
        } => StatusCode::SERVICE_UNAVAILABLE,
        GrantError::Server { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(json!({
            "error": error.oauth_error(),
            "error_description": error.to_string(),
            "reason": error.reason(),
        })),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `POST /oauth/token`: RFC 8693 token exchange or RFC 7523 JWT bearer.
pub async fn token(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return refusal(&GrantError::InvalidRequest(
            "send the parameters as application/x-www-form-urlencoded".into(),
        ));
    }
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(pairs) => pairs,
        Err(e) => return refusal(&GrantError::InvalidRequest(format!("the form: {e}"))),
    };
    let request = match TokenRequest::from_form(&pairs, &hub.identity) {
        Ok(request) => request,
        Err(error) => return refusal(&error),
    };
    let grant = request.grant;
    let outcome = federation::exchange(
        hub.installation.clone(),
        &hub.issuer_keys,
        request,
        hub.identity.clone(),
    )
    .await;
    agentseal::metrics::access_token(grant.name(), outcome.as_ref().err().map(GrantError::reason));
    match outcome {
        Ok(issued) => {
            tracing::info!(agent = %issued.agent_id, grant = grant.name(), "access token issued to a workload");
            let mut body = json!({
                "access_token": issued.token,
                "token_type": "Bearer",
                "expires_in": issued.exp - agentseal::clock::now(),
                "scope": issued.scope,
            });
            if grant == Grant::TokenExchange {
                body["issued_token_type"] = TOKEN_TYPE_ACCESS_TOKEN.into();
            }
            (
                [
                    (header::CACHE_CONTROL, "no-store"),
                    (header::PRAGMA, "no-cache"),
                ],
                axum::Json(body),
            )
                .into_response()
        }
        Err(error) => {
            tracing::info!(
                reason = error.reason(),
                grant = grant.name(),
                "token request refused"
            );
            refusal(&error)
        }
    }
}
