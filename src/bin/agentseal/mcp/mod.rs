//! The MCP front-end: one agent's identity as MCP tools and resources (rmcp 3.x).
//!
//! Each tool parses its typed parameters, runs one core operation through [`crate::core_call`]
//! (SQLite and keyring calls block) and shapes the result. No security logic
//! lives here: every check is in `agentseal::authority` and below.

use std::sync::Arc;

use agentseal::token::access::{AccessGrant, Scope};
use agentseal::token::delegation::GrantRequest;

mod approval;
mod handler;
mod schema;
mod tools;

use agentseal::authority::{
    Approval, ApprovalError, ApprovalRequest, Installation, IssuedGrant, PeerEvidence, PeerVerdict,
    Presentation, RevocationStatus, ServiceError, Withheld,
};
use agentseal::jose::JwkSet;
use agentseal::token::action::ActionRequest;
use agentseal::token::trust::{RevocationEntry, RevokedKind};
use agentseal::verify::remote::{HubSnapshot, HubTrust};
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::tool::{
    InputResponses as InputAnswers, IntoCallToolResult, RequestState,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::schemars::JsonSchema;
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, Json, RoleServer, ServerHandler, tool, tool_handler, tool_router,
};
use schema::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const CERTIFICATE_URI: &str = "agentseal://agent/certificate";
const JWKS_URI: &str = "agentseal://ca/jwks";
const CRL_URI: &str = "agentseal://ca/crl";
const AUDIT_URI: &str = "agentseal://agent/audit";
/// How many of its records an agent's audit resource shows.
const AUDIT_RESOURCE_RECORDS: i64 = 50;

/// The MCP server of one agent (stdio), or of whichever agent each request is authorized as
/// (HTTP hub).
#[derive(Clone)]
pub struct AgentServer {
    installation: Arc<Installation>,
    /// The agent every call acts as; `None` on the hub, where each request's verified access
    /// grant names it.
    agent_id: Option<Arc<str>>,
    /// Another hub whose CA peers may also be certified by.
    trust: Option<Arc<HubTrust>>,
    /// Validity of the revocation lists it publishes (default: the core's).
    crl_validity: Option<i64>,
    /// Pending and used approvals (the key sealing 2026-07-28 request states).
    approvals: Arc<approval::Approvals>,
    /// How long an out-of-band approval waits for a person.
    approval_ttl: i64,
    tool_router: ToolRouter<Self>,
}

/// One approvals book per process: the HTTP hub makes a server per session, and a 2026-07-28
/// retry must find the key that sealed its state.
fn approvals() -> Arc<approval::Approvals> {
    static APPROVALS: std::sync::OnceLock<Arc<approval::Approvals>> = std::sync::OnceLock::new();
    APPROVALS
        .get_or_init(|| Arc::new(approval::Approvals::new().expect("the OS provides randomness")))
        .clone()
}

/// The agent a call acts as.
pub struct Caller(pub Arc<str>);

impl FromContextPart<ToolCallContext<'_, AgentServer>> for Caller {
    fn from_context_part(context: &mut ToolCallContext<AgentServer>) -> Result<Self, McpError> {
        context.service.caller(&context.request_context).map(Caller)
    }
}

/// The scope an MCP request needs, by JSON-RPC method and, for `tools/call`, tool name.
/// `None`: any authorized agent may make it (initialize, ping, listings).
pub fn required_scope(method: &str, tool: Option<&str>) -> Option<Scope> {
    match (method, tool) {
        ("tools/call", Some("sign_action" | "present_certificate" | "delegate")) => {
            Some(Scope::Sign)
        }
        ("tools/call", Some("revoke")) => Some(Scope::Revoke),
        // Unknown tools too: the call fails anyway, but only after the scope check.
        ("tools/call", _) | ("resources/read", _) => Some(Scope::Verify),
        _ => None,
    }
}

/// Runs a blocking core call off the runtime and maps its errors to MCP errors.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, McpError> {
    crate::core_call(f)
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?
        .map_err(to_mcp_error)
}

/// Bad input is the caller's to fix (invalid params); everything else is an internal error whose
/// message never holds key material (service errors carry none).
fn to_mcp_error(error: ServiceError) -> McpError {
    match error {
        ServiceError::InvalidInput(_)
        | ServiceError::Request(_)
        | ServiceError::Evidence(_)
        | ServiceError::UnknownAgent(_)
        | ServiceError::UnknownCertificate(_)
        | ServiceError::NotPermitted(_) => McpError::invalid_params(error.to_string(), None),
        other => McpError::internal_error(other.to_string(), None),
    }
}

/// A policy's refusal is a tool error the model can read and act on (`valid: false` with
/// reason codes, like a failed verification); other errors stay protocol errors.
fn refusal(error: ServiceError) -> Result<CallToolResult, McpError> {
    let mut reasons = vec![error.code().to_owned()];
    match &error {
        ServiceError::PolicyDenied(why) => reasons.extend(why.iter().cloned()),
        ServiceError::RateLimited(_) | ServiceError::ApprovalRequired(_) => {}
        _ => return Err(to_mcp_error(error)),
    }
    let mut result = refused(reasons, error.to_string());
    if let (ServiceError::RateLimited(seconds), Some(refusal)) =
        (&error, result.structured_content.as_mut())
    {
        refusal["retry_after"] = (*seconds).into();
    }
    Ok(result)
}

/// The answer to a `sign_action` a person must approve out of band: an error result (no token
/// yet) with reason `approval_pending`, the approval's id, and what to do.
fn still_pending(id: &str, expires_at: i64) -> CallToolResult {
    // Not how to approve it: that is for a person, told by the webhook and the console.
    let mut result = refused(
        vec!["approval_pending".to_owned()],
        format!(
            "a person must approve this action first, and your MCP client cannot ask one: it \
             waits as approval {id} until {expires_at}. Call sign_action again with exactly \
             the same arguments and approval_id \"{id}\" later; until a person decides, the \
             answer is the same"
        ),
    );
    if let Some(content) = result.structured_content.as_mut() {
        content["approval_id"] = id.into();
        content["expires_at"] = expires_at.into();
    }
    result
}

/// An error result: `valid: false`, the reason codes, and a sentence for the model.
fn refused(reasons: Vec<String>, message: String) -> CallToolResult {
    CallToolResult::structured_error(serde_json::json!({
        "valid": false,
        "reasons": reasons,
        "message": message,
    }))
}

/// Tool arguments, parsed strictly. Unlike rmcp's `Parameters`, whose parse failures become an
/// in-band tool error, a malformed call here is a JSON-RPC invalid-params error (-32602) whose
/// message names the field to fix.
pub struct Args<T>(pub T);

impl<S, T: serde::de::DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Args<T> {
    fn from_context_part(context: &mut ToolCallContext<S>) -> Result<Self, McpError> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_path_to_error::deserialize(Value::Object(arguments))
            .map(Args)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    String::new()
                } else {
                    format!(" at `{path}`")
                };
                McpError::invalid_params(
                    format!("invalid arguments{field}: {}", e.into_inner()),
                    None,
                )
            })
    }
}

/// The input schema of `T`, for tools that take [`Args<T>`].
fn input_schema<T: JsonSchema + 'static>() -> Arc<rmcp::model::JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>()
        .expect("parameter types are JSON objects")
}

/// The stdio transport's two ends.
type Stdio = (
    std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
);

/// stdin and stdout as the transport. Each one that is a pipe, as MCP clients start servers, is
/// read or written through the runtime's event loop (a non-blocking duplicate of its file
/// descriptor). Anything else (a terminal, a file, `/dev/null`) goes through tokio's stdin or
/// stdout, which hand every read and write to a blocking thread: on this machine that hand-off
/// cost about 100 µs a call (docs/benchmarks.md). Each end is decided alone; one that is not a
/// pipe is left as it was (blocking). Must be called inside the runtime.
fn stdio() -> Stdio {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        use tokio::net::unix::pipe;
        // `from_owned_fd` refuses anything but a FIFO before it makes the descriptor
        // non-blocking, so a refused end stays as it was for tokio's stdin or stdout.
        let input: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> = match std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(pipe::Receiver::from_owned_fd)
        {
            Ok(pipe) => Box::pin(pipe),
            Err(_) => Box::pin(tokio::io::stdin()),
        };
        let output: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> = match std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .and_then(pipe::Sender::from_owned_fd)
        {
            Ok(pipe) => Box::pin(pipe),
            Err(_) => Box::pin(tokio::io::stdout()),
        };
        (input, output)
    }
    #[cfg(not(unix))]
    (Box::pin(tokio::io::stdin()), Box::pin(tokio::io::stdout()))
}

/// Serves `agent_id` over stdio until the client closes the connection.
pub fn serve_stdio(
    installation: Installation,
    agent_id: String,
    trust: Option<Arc<HubTrust>>,
    approval_ttl: Option<i64>,
) -> Result<(), ServiceError> {
    // One client on one pipe: a second thread would only add wake-ups between the two.
    let runtime = crate::runtime(crate::EventLoop::OneThread)?;
    // Load the agent's keys (once per process) and check its certificate before accepting
    // requests, so a broken identity fails at start, not at the first call.
    installation.present_certificate(&agent_id, None, "")?;
    let installation = Arc::new(installation);
    runtime.block_on(async move {
        use rmcp::ServiceExt as _;
        let signals = tokio_util::sync::CancellationToken::new();
        let delivery = installation.spawn_signal_delivery(signals.clone());
        let _stop_delivery = signals.clone().drop_guard();
        let _renewal = installation.spawn_renewal(Some(agent_id.clone()), signals.clone());
        let server = AgentServer::new(installation, &agent_id)
            .trusting(trust)
            .with_approval_ttl(approval_ttl);
        let running = match server.serve(stdio()).await {
            Ok(running) => running,
            // A client that only probed (server/discover) and left, or closed before the
            // handshake, is a normal end of a stdio session, not a failure.
            Err(rmcp::service::ServerInitializeError::ConnectionClosed(context)) => {
                tracing::debug!(%context, "client closed the connection before any request");
                return Ok(());
            }
            Err(e) => {
                return Err(ServiceError::InvalidInput(format!(
                    "MCP start-up failed: {e}"
                )));
            }
        };
        tracing::info!(agent = %agent_id, "serving MCP on stdio");
        let ended = running
            .waiting()
            .await
            .map_err(|e| ServiceError::InvalidInput(format!("MCP service failed: {e}")));
        // An attempt in flight is released for the next server to send.
        signals.cancel();
        let _ = delivery.await;
        ended.map(drop)
    })
}
