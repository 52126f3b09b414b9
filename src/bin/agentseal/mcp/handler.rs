//! The MCP server handler: server info, the audited tool call (every result is released only
//! after its audit record), tool listing, and the agent's resources.

use super::*;

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
        // Over HTTP, the call runs in the session's task: its logs get the request's id here.
        let span = match request_id(&context) {
            Some(id) => tracing::info_span!("request", request_id = %id.id),
            None => tracing::Span::none(),
        };
        tracing::Instrument::instrument(self.audited_call(request, context), span).await
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

/// The id the hub gave the HTTP request carrying this call (`X-Request-Id`).
fn request_id(context: &RequestContext<RoleServer>) -> Option<&crate::http::RequestId> {
    let parts = context.extensions.get::<axum::http::request::Parts>()?;
    parts.extensions.get::<crate::http::RequestId>()
}

impl AgentServer {
    /// The tool call, audited: see `call_tool`.
    async fn audited_call(
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
        let started = std::time::Instant::now();
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
        // Waiting for a person out of band: pending, not denied.
        if event.reasons == ["approval_pending"] {
            event.decision = agentseal::audit::Decision::Pending;
        }
        // Metrics by tool and outcome: `ok`, or the first reason code.
        let label = if event.decision == agentseal::audit::Decision::Allowed {
            "ok".to_owned()
        } else {
            event
                .reasons
                .first()
                .cloned()
                .unwrap_or_else(|| "error".into())
        };
        let tool = operation.trim_start_matches("mcp.").to_owned();
        let installation = self.installation.clone();
        let released = crate::core_call(move || installation.release(&event, response))
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        agentseal::metrics::tool_call(&tool, &label, started.elapsed());
        released.map_err(|withheld| match withheld {
            Withheld::Failed(error) => error,
            Withheld::Unaudited(_) => McpError::internal_error(
                "the audit log could not record this call, so its result is withheld",
                None,
            ),
            _ => McpError::internal_error("result withheld", None),
        })
    }
}

/// Where a tool call came from: transport, protocol revision, client, and on the hub the MCP
/// session and the access token used.
pub(super) fn request_details(
    context: &RequestContext<RoleServer>,
) -> serde_json::Map<String, Value> {
    let mut details = serde_json::Map::new();
    let parts = context.extensions.get::<axum::http::request::Parts>();
    details.insert(
        "transport".into(),
        if parts.is_some() { "http" } else { "stdio" }.into(),
    );
    if let Some(id) = request_id(context) {
        // One the client chose is kept apart: it is the client's word.
        let field = if id.from_client {
            "client_request_id"
        } else {
            "request_id"
        };
        details.insert(field.into(), id.id.clone().into());
    }
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
pub(super) fn error_code(error: &McpError) -> &'static str {
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
pub(super) fn jose_media_type(encoded: &str) -> &'static str {
    if encoded.trim_start().starts_with('{') {
        "application/jose+json"
    } else {
        "application/jwt"
    }
}
