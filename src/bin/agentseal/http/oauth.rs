//! The hub as its agents' OAuth authorization server: RFC 8414 metadata and the token endpoint,
//! where a workload trades its platform's JWT for an access token
//! ([`agentseal::authority::federation::exchange`]). This layer reads the form and shapes the
//! OAuth answer; every check is the core's.

use std::sync::Arc;

use agentseal::authority::federation;
use agentseal::federation::keys;
use agentseal::federation::{
    GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, Grant, GrantError,
    TOKEN_TYPE_ACCESS_TOKEN, TokenRequest,
};
use agentseal::token::access::Scope;
use axum::body::Body;
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
            // No interactive login; the endpoint is there because clients' metadata parsers
            // (the MCP Python SDK's among them) require one, and it says so.
            "authorization_endpoint": hub.identity.authorization_endpoint(),
            "grant_types_supported": [GRANT_TOKEN_EXCHANGE, GRANT_JWT_BEARER, GRANT_CLIENT_CREDENTIALS],
            // `none` for the two assertion grants; `private_key_jwt` is the client credentials
            // grant with the workload's JWT as client assertion.
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            "response_types_supported": [],
            // The keys access tokens are signed with (the CA's); their `iss` is the CA id.
            "jwks_uri": format!("{}.well-known/jwks.json", hub.identity.base),
            "scopes_supported": Scope::ALL.map(Scope::name),
            "service_documentation": "https://github.com/agentseal/agentseal/blob/main/docs/federation.md",
        })),
    )
        .into_response()
}

/// `/oauth/authorize`: there is no interactive authorization here (RFC 6749 §4.1.2.1's
/// `unsupported_response_type`, answered directly: no redirect to an unverified URI).
pub async fn authorize() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "error": "unsupported_response_type",
            "error_description": "this hub has no interactive authorization: exchange a workload's JWT at the token endpoint (docs/federation.md), or ask the operator for an access token",
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
        GrantError::ClientMismatch(_) => StatusCode::UNAUTHORIZED,
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
            "error_description": description(&error.to_string()),
            "reason": error.reason(),
        })),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // The issuer's keys are not fetched again sooner than this.
        let after = match error {
            GrantError::IssuerKeysUnavailable(_) => keys::RETRY_AFTER.as_secs(),
            _ => 1,
        };
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after));
    }
    response
}

/// An `error_description` within RFC 6749 §5.2's characters (printable ASCII but `"` and `\`)
/// and a bounded length, whatever a caller sent that it quotes.
fn description(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '\'',
        })
        .take(512)
        .collect()
}

/// `POST /oauth/token`: RFC 8693 token exchange, RFC 7523 JWT bearer, or client credentials with
/// a JWT client assertion.
pub async fn token(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Body) -> Response {
    let refused = |error: GrantError| {
        agentseal::metrics::access_token("unknown", Some(error.reason()));
        refusal(&error)
    };
    let body = match axum::body::to_bytes(body, MAX_TOKEN_REQUEST).await {
        Ok(body) => body,
        Err(_) => {
            let mut answer = refused(GrantError::InvalidRequest(format!(
                "the request is larger than {MAX_TOKEN_REQUEST} bytes"
            )));
            *answer.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return answer;
        }
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return refused(GrantError::InvalidRequest(
            "send the parameters as application/x-www-form-urlencoded".into(),
        ));
    }
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(pairs) => pairs,
        Err(e) => return refused(GrantError::InvalidRequest(format!("the form: {e}"))),
    };
    let request = match TokenRequest::from_form(&pairs, &hub.identity) {
        Ok(request) => request,
        Err(error) => return refused(error),
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
                "expires_in": issued.exp - issued.iat,
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
