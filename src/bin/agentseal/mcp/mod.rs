//! The MCP front-end: one agent's identity as MCP tools and resources (rmcp 3.x).
//!
//! Each tool parses its typed parameters, runs one core operation off the async runtime
//! (`spawn_blocking`: SQLite and keyring calls block) and shapes the result. No security logic
//! lives here: every check is in `agentseal::authority` and below.

use std::sync::Arc;

use agentseal::token::access::{AccessGrant, Scope};
use agentseal::token::delegation::GrantRequest;

mod approval;
use agentseal::authority::{
    Approval, Installation, PeerEvidence, PeerVerdict, Presentation, RevocationStatus, ServiceError,
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
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| McpError::internal_error(format!("task failed: {e}"), None))?
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

/// Who this agent is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WhoAmI {
    /// The agent id (a URI).
    pub agent_id: String,
    /// The CA that certified it.
    pub ca_id: String,
    /// Serial of the current certificate.
    pub certificate_serial: String,
    /// Certificate validity start (seconds since the epoch).
    pub certificate_not_before: i64,
    /// Certificate expiry (seconds since the epoch).
    pub certificate_expires_at: i64,
    /// Signature algorithms this agent signs with (both for a hybrid agent).
    pub algorithms: Vec<String>,
    /// RFC 7638 thumbprints of the agent's public keys.
    pub key_ids: Vec<String>,
    /// Operator-set attributes (role, team, ...).
    pub meta: std::collections::BTreeMap<String, String>,
}

/// Parameters of `sign_action`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignActionParams {
    /// The action to authorize, e.g. "deploy" or "payments.refund".
    pub action: String,
    /// Who will act on the token: the service or peer agent id you will send it to.
    pub audience: String,
    /// The exact arguments of the action (a JSON object). The token binds their SHA-256, so the
    /// receiver can check it acts on exactly these. Integers beyond 2^53 must be strings.
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// Lifetime in seconds (default 300, at most 86400). Keep it short.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Space-separated scopes to record in the token.
    #[serde(default)]
    pub scope: Option<String>,
    /// Act for someone else: an agent that delegated to you with `delegate` (the token then
    /// carries the whole delegation chain), or the user you act for (named on your word).
    /// Omit it when you act for yourself.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
}

/// Parameters of `delegate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateParams {
    /// The agent id that may act for you (or for whom you act) from now on.
    pub delegate: String,
    /// The actions it may authorize, e.g. ["deploy"]; "*" for every action you may do.
    pub actions: Vec<String>,
    /// The audiences it may address (default: any you may).
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// Space-separated scopes it may put in its tokens (default: none).
    #[serde(default)]
    pub scope: Option<String>,
    /// Lifetime in seconds (default 3600, at most 86400, and never beyond your own delegation).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Pass on a delegation you hold: the principal you act for (default: yourself).
    #[serde(default)]
    pub on_behalf_of: Option<String>,
}

/// A delegation grant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrantResult {
    /// The signed grant. The delegate's server already has it; send it along only to a
    /// delegate served elsewhere.
    pub grant: String,
    /// Its id: revoke the grant (and everything under it) with `revoke` and this grant.
    pub grant_id: String,
    /// For whom the delegate may act.
    pub principal: String,
    /// The delegate.
    pub delegate: String,
    /// When it expires.
    pub expires_at: i64,
    /// Actors in the chain, the delegate included.
    pub depth: usize,
}

/// A signed action token.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SignedToken {
    /// The token: send it with the request to the audience.
    pub token: String,
    /// The token id (jti), to revoke or look it up later.
    pub token_id: String,
    /// Expiry (seconds since the epoch).
    pub expires_at: i64,
}

/// A fresh challenge.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NewChallenge {
    /// Send this to the peer; it answers with `present_certificate` using it.
    pub challenge: String,
    /// After this time (seconds since the epoch) the challenge is no longer accepted.
    pub expires_at: i64,
}

/// Parameters of `present_certificate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PresentParams {
    /// The fresh challenge the peer sent you (16-256 printable characters). With it, the result
    /// includes a proof that you hold the certified keys.
    #[serde(default)]
    pub challenge: Option<String>,
    /// The peer's agent id or URL: the proof is valid only for it. Required with `challenge`.
    #[serde(default)]
    pub audience: Option<String>,
}

/// Parameters of `verify_peer`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyPeerParams {
    /// An action token the peer sent you.
    #[serde(default)]
    pub token: Option<String>,
    /// A certificate the peer presented.
    #[serde(default)]
    pub certificate: Option<String>,
    /// The peer's proof of possession (from its `present_certificate` with your challenge).
    #[serde(default)]
    pub proof: Option<String>,
    /// The challenge you sent the peer for `proof`: one from your `new_challenge`, usable once.
    #[serde(default)]
    pub challenge: Option<String>,
    /// The action you are about to perform; the token must authorize exactly it. Required with
    /// a token.
    #[serde(default)]
    pub expected_action: Option<String>,
    /// The arguments you are about to use; they must match the token's digest exactly. Omitted
    /// means no arguments.
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// Set when you act on the token: it is recorded as used, and any later verification of it
    /// answers `replayed` (also after a restart). Default false.
    #[serde(default)]
    pub consume: bool,
}

/// Parameters of `check_revocation`: give exactly one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRevocationParams {
    /// An action token.
    #[serde(default)]
    pub token: Option<String>,
    /// A token id (jti).
    #[serde(default)]
    pub token_id: Option<String>,
    /// A certificate.
    #[serde(default)]
    pub certificate: Option<String>,
    /// A certificate serial or an agent id.
    #[serde(default)]
    pub serial: Option<String>,
}

/// Revocation status.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RevocationResult {
    /// "token" or "certificate".
    pub kind: String,
    /// The token id or serial looked up.
    pub id: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it was revoked (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the revocation data came from and how fresh it is.
    pub freshness: Value,
}

impl From<RevocationStatus> for RevocationResult {
    fn from(s: RevocationStatus) -> Self {
        RevocationResult {
            kind: s.kind.name().to_owned(),
            id: s.id,
            revoked: s.revoked,
            revoked_at: s.revocation.as_ref().map(|r| r.revoked_at),
            reason: s.revocation.map(|r| r.reason),
            freshness: serde_json::to_value(s.freshness).unwrap_or(Value::Null),
        }
    }
}

/// Parameters of `revoke`: give `token` or `certificate_serial` (or `own_certificate`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeParams {
    /// A token or delegation grant you signed that must no longer be honoured.
    #[serde(default)]
    pub token: Option<String>,
    /// The serial of one of your own certificates.
    #[serde(default)]
    pub certificate_serial: Option<String>,
    /// Revoke your own current certificate: you will not be able to sign until the operator
    /// issues a new identity.
    #[serde(default)]
    pub own_certificate: bool,
    /// Why (published in the revocation list; at most 256 characters).
    pub reason: String,
}

/// What was revoked.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RevokeResult {
    /// "token" or "certificate".
    pub kind: String,
    /// The ids revoked (token id or certificate serials).
    pub ids: Vec<String>,
    /// When (seconds since the epoch).
    pub revoked_at: i64,
}

fn revoke_result(kind: RevokedKind, entries: Vec<RevocationEntry>) -> RevokeResult {
    RevokeResult {
        kind: kind.name().to_owned(),
        revoked_at: entries.first().map_or(0, |e| e.revoked_at),
        ids: entries.into_iter().map(|e| e.id).collect(),
    }
}

/// A presented certificate.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PresentedCertificate {
    /// Your certificate: send it to the peer.
    pub certificate: String,
    /// Proof of possession over the peer's challenge, if one was given: send it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

impl From<Presentation> for PresentedCertificate {
    fn from(p: Presentation) -> Self {
        PresentedCertificate {
            certificate: p.certificate,
            proof: p.proof,
        }
    }
}

fn one_of(values: &[(&str, bool)]) -> Result<(), McpError> {
    let given: Vec<&str> = values
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
    if given.len() != 1 {
        let names: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
        return Err(McpError::invalid_params(
            format!("give exactly one of {}", names.join(", ")),
            None,
        ));
    }
    Ok(())
}

#[tool_router]
impl AgentServer {
    /// A server acting as `agent_id` of `installation`.
    pub fn new(installation: Arc<Installation>, agent_id: &str) -> Self {
        AgentServer {
            installation,
            agent_id: Some(agent_id.into()),
            trust: None,
            crl_validity: None,
            approvals: approvals(),
            tool_router: Self::tool_router(),
        }
    }

    /// Also verifies peers certified by the CA of the hub `trust` fetches from.
    pub fn trusting(mut self, trust: Option<Arc<HubTrust>>) -> Self {
        self.trust = trust;
        self
    }

    /// Publishes revocation lists valid for `validity` seconds.
    pub fn with_crl_validity(mut self, validity: Option<i64>) -> Self {
        self.crl_validity = validity;
        self
    }

    /// The other hub's current snapshot, refreshed when due, if `certificate` (or, with no
    /// certificate, a whole token) may come from another CA: evidence of this installation's
    /// own agents never waits for the other hub.
    async fn hub_snapshot(
        &self,
        certificate: Option<&str>,
        token: Option<&str>,
    ) -> Option<Arc<HubSnapshot>> {
        let trust = self.trust.as_ref()?;
        let foreign = match certificate {
            Some(certificate) => {
                agentseal::token::certificate::AgentCertificate::parse_unverified(certificate)
                    .is_ok_and(|(_, claims, _)| {
                        claims.iss != self.installation.trust_anchor().ca_id
                    })
            }
            None => token.is_some_and(|t| agentseal::token::action::parse_unverified(t).is_ok()),
        };
        if foreign { trust.current().await } else { None }
    }

    /// A server acting, for each request, as the agent of the request's verified
    /// [`AccessGrant`] (put in the HTTP request's extensions by the hub's authorization layer).
    pub fn per_request(installation: Arc<Installation>) -> Self {
        AgentServer {
            installation,
            agent_id: None,
            trust: None,
            crl_validity: None,
            approvals: approvals(),
            tool_router: Self::tool_router(),
        }
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Arc<str>, McpError> {
        if let Some(agent) = &self.agent_id {
            return Ok(agent.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<AccessGrant>())
            .map(|grant| Arc::from(grant.agent_id.as_str()))
            .ok_or_else(|| McpError::invalid_request("no authorized agent for this request", None))
    }

    /// Tells you who you are: your agent id, the CA that certified you, your certificate's serial
    /// and validity, your signature algorithms and key ids. Call it first, or whenever you need
    /// to state your identity. Never returns key material.
    #[tool(annotations(
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn whoami(&self, Caller(agent): Caller) -> Result<Json<WhoAmI>, McpError> {
        let installation = self.installation.clone();
        blocking(move || {
            let record = installation.agent(&agent)?;
            let encoded = installation.certificate(&agent)?;
            let (_, claims, keys) =
                agentseal::token::certificate::AgentCertificate::parse_unverified(&encoded)
                    .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
            Ok(Json(WhoAmI {
                agent_id: agent.to_string(),
                ca_id: installation.trust_anchor().ca_id.clone(),
                certificate_serial: claims.jti,
                certificate_not_before: claims.nbf,
                certificate_expires_at: claims.exp,
                algorithms: record.algorithms,
                key_ids: keys.iter().map(agentseal::jose::thumbprint).collect(),
                meta: claims.meta,
            }))
        })
        .await
    }

    /// Signs a short-lived action token that authorizes ONE action, for ONE audience, with
    /// EXACTLY the given arguments. Call it right before asking another agent or service to do
    /// something on your behalf, and send the token along; the receiver verifies it offline.
    /// Never reuse a token for another action or other arguments. The installation's policy may
    /// refuse, shorten the lifetime, limit how often you sign, or ask a person to approve first:
    /// a refusal is an error result whose `reasons` say why.
    #[tool(
        input_schema = input_schema::<SignActionParams>(),
        output_schema = rmcp::handler::server::tool::schema_for_output::<SignedToken>(),
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn sign_action(
        &self,
        Caller(agent): Caller,
        context: RequestContext<RoleServer>,
        RequestState(state): RequestState,
        InputAnswers(answers): InputAnswers,
        Args(p): Args<SignActionParams>,
    ) -> Result<CallToolResponse, McpError> {
        let installation = self.installation.clone();
        let mut request = ActionRequest::new(
            p.action,
            p.audience,
            Value::Object(p.arguments.unwrap_or_default()),
        );
        if let Some(ttl) = p.ttl_seconds {
            request.ttl = ttl;
        }
        request.scope = p.scope;
        let on_behalf_of = p.on_behalf_of;
        let sign = |approval: Approval| {
            let (installation, agent, request, on_behalf_of) = (
                installation.clone(),
                agent.clone(),
                request.clone(),
                on_behalf_of.clone(),
            );
            async move {
                tokio::task::spawn_blocking(move || {
                    installation.sign_action_for(
                        &agent,
                        &request,
                        on_behalf_of.as_deref(),
                        approval,
                    )
                })
                .await
                .map_err(|e| McpError::internal_error(format!("task failed: {e}"), None))
            }
        };
        let mut signed = sign(Approval::NotGiven).await?;
        if let Err(ServiceError::ApprovalRequired(_)) = &signed {
            // Signalled when first asked, not again when the answer comes back (2026-07-28).
            if answers.is_none() {
                let (installation, agent, request, on_behalf_of) = (
                    installation.clone(),
                    agent.clone(),
                    request.clone(),
                    on_behalf_of.clone(),
                );
                blocking(move || {
                    installation.approval_requested(&agent, &request, on_behalf_of.as_deref());
                    Ok(())
                })
                .await?;
            }
            // Ask the person in this task: the client's answer comes back on this request's
            // stream. Nothing was signed or counted yet.
            let asked = approval::Request {
                agent: agent.to_string(),
                action: request.action.clone(),
                audience: request.audience.clone(),
                args_sha256: agentseal::token::action::args_sha256(&request.args),
                ttl: request.ttl,
                scope: request.scope.clone(),
                on_behalf_of: on_behalf_of.clone(),
            };
            signed = match self.approvals.ask(&context, state, answers, asked).await? {
                approval::Answer::Approved => sign(Approval::Given).await?,
                approval::Answer::Ask(input) => return Ok(CallToolResponse::InputRequired(input)),
                approval::Answer::Refused(code, message) => {
                    return Ok(refused(vec![code.to_owned()], message).into());
                }
            };
        }
        match signed {
            Ok(signed) => Json(SignedToken {
                token: signed.token,
                token_id: signed.jti,
                expires_at: signed.exp,
            })
            .into_call_tool_result(),
            Err(error) => refusal(error).map(CallToolResponse::from),
        }
    }

    /// Lets another agent act for you (or pass on what you may do for someone): it may then
    /// call sign_action with on_behalf_of set to you, for the actions, audiences and time you
    /// grant here, never more than you hold yourself. Grant the least it needs; revoke the grant
    /// when the work is done.
    #[tool(input_schema = input_schema::<DelegateParams>(), annotations(
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn delegate(
        &self,
        Caller(agent): Caller,
        Args(p): Args<DelegateParams>,
    ) -> Result<Json<GrantResult>, McpError> {
        let installation = self.installation.clone();
        let request = GrantRequest {
            delegate: p.delegate,
            actions: p.actions,
            audiences: p.audiences,
            scope: p.scope,
            ttl: p.ttl_seconds.unwrap_or(3_600),
        };
        blocking(move || {
            let issued = installation.delegate(&agent, &request, p.on_behalf_of.as_deref())?;
            Ok(Json(GrantResult {
                grant: issued.grant,
                grant_id: issued.grant_id,
                principal: issued.principal,
                delegate: issued.delegate,
                expires_at: issued.expires_at,
                depth: issued.depth,
            }))
        })
        .await
    }

    /// Presents your certificate so a peer can check who you are. If the peer gave you a
    /// challenge, pass it with the peer's id as `audience`: the result then includes a proof
    /// that you hold the certified keys (a certificate alone proves nothing). Send both back.
    #[tool(input_schema = input_schema::<PresentParams>(), annotations(
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn present_certificate(
        &self,
        Caller(agent): Caller,
        Args(p): Args<PresentParams>,
    ) -> Result<Json<PresentedCertificate>, McpError> {
        if p.challenge.is_some() && p.audience.is_none() {
            return Err(McpError::invalid_params(
                "a challenge needs the peer's id as `audience`",
                None,
            ));
        }
        let installation = self.installation.clone();
        blocking(move || {
            let audience = p.audience.unwrap_or_default();
            Ok(Json(
                installation
                    .present_certificate(&agent, p.challenge.as_deref(), &audience)?
                    .into(),
            ))
        })
        .await
    }

    /// Creates a fresh, single-use challenge (valid 5 minutes) to send to a peer whose identity
    /// you want proven. The peer answers with `present_certificate` using it; pass the answer to
    /// `verify_peer`. Always use a new challenge: never invent one or reuse one.
    #[tool(annotations(
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn new_challenge(&self, Caller(agent): Caller) -> Result<Json<NewChallenge>, McpError> {
        let installation = self.installation.clone();
        blocking(move || {
            let (challenge, expires_at) = installation.issue_challenge(&agent)?;
            Ok(Json(NewChallenge {
                challenge,
                expires_at,
            }))
        })
        .await
    }

    /// Verifies what another agent sent you, offline: an action token (with the action and
    /// arguments you are about to use), a certificate with its proof of possession over a
    /// challenge from your `new_challenge`, or both. Tokens and proofs must be addressed to you;
    /// a certificate alone proves nothing. Call it before acting on a peer's request. A failed check is a normal answer: `valid: false` with reason codes (expired,
    /// revoked, bad_signature, wrong_audience, args_mismatch, malformed, ...). Act only on
    /// `valid: true`.
    // Not read-only nor idempotent: a verified proof consumes its challenge.
    #[tool(input_schema = input_schema::<VerifyPeerParams>(), annotations(
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn verify_peer(
        &self,
        Caller(agent): Caller,
        Args(p): Args<VerifyPeerParams>,
    ) -> Result<Json<PeerVerdict>, McpError> {
        let installation = self.installation.clone();
        let evidence = PeerEvidence {
            token: p.token,
            certificate: p.certificate,
            proof: p.proof,
            challenge: p.challenge,
            audience: agent.to_string(),
            action: p.expected_action,
            args: p.arguments.map(Value::Object),
            consume: p.consume,
            allow_unissued_challenge: false,
        };
        let snapshot = self
            .hub_snapshot(evidence.certificate.as_deref(), None)
            .await;
        blocking(move || {
            let trust = snapshot.as_deref().map(HubSnapshot::trust);
            Ok(Json(installation.verify_peer_trusting(&evidence, trust)?))
        })
        .await
    }

    /// Checks whether a token or certificate has been revoked, and how fresh that answer is.
    /// Give exactly one of `token`, `token_id`, `certificate`, `serial` (serial or agent id).
    #[tool(input_schema = input_schema::<CheckRevocationParams>(), annotations(
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn check_revocation(
        &self,
        Args(p): Args<CheckRevocationParams>,
    ) -> Result<Json<RevocationResult>, McpError> {
        one_of(&[
            ("token", p.token.is_some()),
            ("token_id", p.token_id.is_some()),
            ("certificate", p.certificate.is_some()),
            ("serial", p.serial.is_some()),
        ])?;
        let installation = self.installation.clone();
        let snapshot = self
            .hub_snapshot(p.certificate.as_deref(), p.token.as_deref())
            .await;
        blocking(move || {
            let (kind, subject) = match (p.token.or(p.token_id), p.certificate.or(p.serial)) {
                (Some(token), _) => (RevokedKind::Token, token),
                (None, Some(cert)) => (RevokedKind::Certificate, cert),
                (None, None) => unreachable!("one_of checked"),
            };
            let trust = snapshot.as_deref().map(HubSnapshot::trust);
            Ok(Json(
                installation
                    .check_revocation_trusting(kind, &subject, trust)?
                    .into(),
            ))
        })
        .await
    }

    /// Revokes a token or delegation grant you signed (for example one that leaked, or a
    /// delegation whose work is done: everything under it stops verifying), or your own
    /// certificate if your keys may be compromised. Irreversible: a revoked certificate stops you signing
    /// anything until the operator gives you a new identity. You cannot revoke other agents'
    /// tokens or certificates.
    #[tool(input_schema = input_schema::<RevokeParams>(), annotations(
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn revoke(
        &self,
        Caller(agent): Caller,
        Args(p): Args<RevokeParams>,
    ) -> Result<Json<RevokeResult>, McpError> {
        one_of(&[
            ("token", p.token.is_some()),
            ("certificate_serial", p.certificate_serial.is_some()),
            ("own_certificate", p.own_certificate),
        ])?;
        let installation = self.installation.clone();
        blocking(move || {
            if let Some(token) = p.token {
                let entry = installation.revoke_own_token(&agent, &token, &p.reason)?;
                return Ok(Json(revoke_result(RevokedKind::Token, vec![entry])));
            }
            let entries = installation.revoke_own_certificate(
                &agent,
                p.certificate_serial.as_deref(),
                &p.reason,
            )?;
            Ok(Json(revoke_result(RevokedKind::Certificate, entries)))
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AgentServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_resources()
                .enable_tools()
                .build(),
        )
        .with_server_info(Implementation::new("agentseal", env!("CARGO_PKG_VERSION")))
        .with_instructions(format!(
            "You are {}. Use sign_action before asking others to act for you, \
                 present_certificate to prove who you are, new_challenge then verify_peer before \
                 acting on another agent's request, check_revocation to check a token or certificate, and revoke \
                 for tokens that leaked. Secret keys never leave the keyring.",
            self.agent_id.as_deref().unwrap_or("the agent your access token names")
        ))
    }

    /// Runs the tool, then appends what happened to the audit log before answering: a result
    /// that cannot be recorded is withheld (no unaudited token leaves the server).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Ok(agent) = self.caller(&context) else {
            // Nobody to attribute it to: the call fails the same way inside the router.
            let call = ToolCallContext::new(self, request, context);
            return self.tool_router.call(call).await;
        };
        // Only tools that exist name an operation: a caller cannot write what it likes.
        let operation = if self.tool_router.has_route(&request.name) {
            format!("mcp.{}", request.name)
        } else {
            "mcp.unknown_tool".to_owned()
        };
        let arguments = request.arguments.clone().unwrap_or_default();
        let details = request_details(&context);
        let call = ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(call).await;
        let outcome = match &response {
            Ok(CallToolResponse::Complete(result)) if result.is_error == Some(true) => {
                match &result.structured_content {
                    Some(refusal) if refusal.get("reasons").is_some() => Ok(refusal.clone()),
                    _ => Err("tool_error"),
                }
            }
            Ok(CallToolResponse::Complete(result)) => {
                Ok(result.structured_content.clone().unwrap_or(Value::Null))
            }
            Ok(_) => Ok(Value::Null),
            Err(error) => Err(error_code(error)),
        };
        let mut event = crate::audit_event::event(
            &agent,
            &operation,
            &arguments,
            outcome.as_ref().map_err(|code| *code),
            details,
        );
        if let Ok(CallToolResponse::InputRequired(_)) = &response {
            event.decision = agentseal::audit::Decision::Pending;
            event.reasons = vec!["approval_requested".into()];
        }
        let installation = self.installation.clone();
        match blocking(move || installation.audit(&event)).await {
            Ok(_) => response,
            Err(error) => {
                tracing::error!(%error, operation, "audit log append failed; result withheld");
                Err(McpError::internal_error(
                    "the audit log could not record this call, so its result is withheld",
                    None,
                ))
            }
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // In the order a model meets them: who am I, act, prove, then check others.
        const ORDER: [&str; 8] = [
            "whoami",
            "sign_action",
            "delegate",
            "present_certificate",
            "new_challenge",
            "verify_peer",
            "check_revocation",
            "revoke",
        ];
        let mut tools = self.tool_router.list_all();
        tools.sort_by_key(|tool| ORDER.iter().position(|name| *name == tool.name));
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(CERTIFICATE_URI, "certificate")
                .with_description("This agent's current certificate (a JWS signed by the CA)"),
            Resource::new(JWKS_URI, "ca-jwks")
                .with_description("The CA's public keys (JWK Set): the trust anchor for verifying")
                .with_mime_type("application/jwk-set+json"),
            Resource::new(CRL_URI, "revocation-list")
                .with_description("The CA's current signed revocation list"),
            Resource::new(AUDIT_URI, "audit-log")
                .with_description(
                    "Your most recent audit records (newest first): every tool call you made, \
                     its decision and reason codes",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let installation = self.installation.clone();
        let uri = request.uri.clone();
        let contents = match uri.as_str() {
            CERTIFICATE_URI => {
                let agent = self.caller(&context)?;
                let cert = blocking(move || installation.certificate(&agent)).await?;
                let mime = jose_media_type(&cert);
                ResourceContents::text(cert, CERTIFICATE_URI).with_mime_type(mime)
            }
            JWKS_URI => {
                let jwks: JwkSet = installation.trust_anchor().jwks();
                let text = serde_json::to_string(&jwks).unwrap_or_default();
                ResourceContents::text(text, JWKS_URI).with_mime_type("application/jwk-set+json")
            }
            CRL_URI => {
                let validity = self.crl_validity;
                let crl =
                    blocking(move || Ok(installation.published_crl(validity)?.encoded)).await?;
                let mime = jose_media_type(&crl);
                ResourceContents::text(crl, CRL_URI).with_mime_type(mime)
            }
            AUDIT_URI => {
                let agent = self.caller(&context)?;
                let records =
                    blocking(move || installation.recent_audit(&agent, AUDIT_RESOURCE_RECORDS))
                        .await?;
                let records: Vec<Value> = records
                    .into_iter()
                    .map(|(seq, body)| {
                        serde_json::json!({
                            "seq": seq,
                            "time": body.time,
                            "operation": body.op,
                            "decision": body.decision,
                            "reasons": body.reasons,
                            "chain": body.chain,
                            "details": body.details,
                        })
                    })
                    .collect();
                let text = serde_json::to_string(&records).unwrap_or_default();
                ResourceContents::text(text, AUDIT_URI).with_mime_type("application/json")
            }
            other => {
                return Err(McpError::resource_not_found(
                    format!("unknown resource {other}: see resources/list"),
                    Some(serde_json::json!({ "uri": other })),
                ));
            }
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

/// Where a tool call came from: transport, protocol revision, client, and on the hub the MCP
/// session and the access token used.
fn request_details(context: &RequestContext<RoleServer>) -> serde_json::Map<String, Value> {
    let mut details = serde_json::Map::new();
    let parts = context.extensions.get::<axum::http::request::Parts>();
    details.insert(
        "transport".into(),
        if parts.is_some() { "http" } else { "stdio" }.into(),
    );
    if let Some(version) = context.protocol_version() {
        details.insert("protocol".into(), version.to_string().into());
    }
    if let Some(client) = context.client_info() {
        details.insert(
            "client".into(),
            format!("{} {}", client.name, client.version)
                .chars()
                .take(128)
                .collect::<String>()
                .into(),
        );
    }
    if let Some(parts) = parts {
        if let Some(session) = parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            details.insert(
                "session".into(),
                session.chars().take(128).collect::<String>().into(),
            );
        }
        if let Some(jti) = parts
            .extensions
            .get::<AccessGrant>()
            .and_then(|g| g.jti.clone())
        {
            details.insert("access_token_id".into(), jti.into());
        }
    }
    details
}

/// A stable name for an MCP error's JSON-RPC code.
fn error_code(error: &McpError) -> &'static str {
    match error.code.0 {
        -32602 => "invalid_params",
        -32601 => "method_not_found",
        -32600 => "invalid_request",
        -32002 => "resource_not_found",
        _ => "internal_error",
    }
}

/// The media type of a signed object: compact JWTs are `application/jwt`; hybrid objects use the
/// JWS JSON serialization, `application/jose+json` (RFC 7515 §9.2).
fn jose_media_type(encoded: &str) -> &'static str {
    if encoded.trim_start().starts_with('{') {
        "application/jose+json"
    } else {
        "application/jwt"
    }
}

/// Serves `agent_id` over stdio until the client closes the connection.
pub fn serve_stdio(
    installation: Installation,
    agent_id: String,
    trust: Option<Arc<HubTrust>>,
) -> Result<(), ServiceError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::InvalidInput(format!("cannot start the async runtime: {e}")))?;
    // Load the agent's keys (once per process) and check its certificate before accepting
    // requests, so a broken identity fails at start, not at the first call.
    installation.present_certificate(&agent_id, None, "")?;
    let installation = Arc::new(installation);
    runtime.block_on(async move {
        use rmcp::ServiceExt as _;
        let signals = tokio_util::sync::CancellationToken::new();
        let delivery = installation.spawn_signal_delivery(signals.clone());
        let _stop_delivery = signals.clone().drop_guard();
        let server = AgentServer::new(installation, &agent_id).trusting(trust);
        let running = match server.serve(rmcp::transport::stdio()).await {
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
