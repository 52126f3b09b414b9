//! Asking a person, through the agent's MCP client, to approve an action the policy marks.
//!
//! On 2025-11-25 clients the server sends an elicitation request while the tool call waits; on
//! 2026-07-28 clients the call answers "input required" with an elicitation and a sealed request
//! state (HMAC, bound to the agent and to exactly this request, short-lived, single-use), and the
//! client retries with the person's answer. A client that declared no elicitation capability
//! cannot ask: the action is refused with a reason that says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use agentseal::authority::ApprovalRequest;
use rmcp::ErrorData as McpError;
use rmcp::RoleServer;
use rmcp::model::{
    ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema,
    InputRequest, InputRequests, InputRequiredResult, ProtocolVersion, RequestStateCodec,
    SealOptions,
};
use rmcp::service::RequestContext;
use serde::{Deserialize, Serialize};

/// How long a person has to answer.
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a sealed request state stays valid.
const STATE_TTL: Duration = Duration::from_secs(600);
/// The key of the approval in `inputRequests` / `inputResponses`.
const INPUT_KEY: &str = "approval";

/// What is to be approved: everything that makes the token what it is (the core's
/// [`ApprovalRequest`], which out-of-band approvals store too).
pub type Request = ApprovalRequest;

/// The sealed state: the request and a single-use nonce.
#[derive(Serialize, Deserialize)]
struct Pending {
    request: Request,
    nonce: String,
}

/// The person's answer, or why there is none.
pub enum Answer {
    /// Approved: sign.
    Approved,
    /// No approval: the reason code (`approval_declined`, `approval_timeout`,
    /// `approval_unavailable`) and a sentence for the model.
    Refused(&'static str, String),
    /// 2026-07-28: return this to the client, which asks and retries.
    Ask(InputRequiredResult),
}

/// Approvals of one server process: the key sealing request states (a restart forgets pending
/// approvals) and the nonces already used.
pub struct Approvals {
    codec: RequestStateCodec,
    used: Mutex<HashMap<String, i64>>,
}

impl Approvals {
    /// A fresh key.
    pub fn new() -> Result<Self, McpError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| McpError::internal_error(format!("no randomness: {e}"), None))?;
        let codec = RequestStateCodec::try_new(key.to_vec())
            .map_err(|e| McpError::internal_error(format!("request state key: {e}"), None))?;
        Ok(Approvals {
            codec,
            used: Mutex::default(),
        })
    }

    /// Asks the person at the client behind `context` to approve `request` (a client that
    /// cannot ask is refused here; see [`client_can_ask`]). `state` and
    /// `responses` are the retry's `requestState` and `inputResponses` (2026-07-28).
    pub async fn ask(
        &self,
        context: &RequestContext<RoleServer>,
        state: Option<String>,
        responses: Option<rmcp::model::InputResponses>,
        request: Request,
    ) -> Result<Answer, McpError> {
        if !client_can_ask(context) {
            return Ok(Answer::Refused(
                "approval_unavailable",
                "a person must approve this, but your MCP client cannot ask one (it declared no \
                 elicitation capability): use a client that can, or ask the operator to sign it \
                 with `agentseal token sign`"
                    .into(),
            ));
        }
        let modern = context
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
        if !modern {
            let asked = context
                .peer
                .create_elicitation_with_timeout(question(&request), Some(APPROVAL_TIMEOUT));
            let result = tokio::select! {
                result = asked => result,
                () = context.ct.cancelled() => {
                    return Ok(Answer::Refused("approval_declined", "the call was cancelled".into()));
                }
            };
            return Ok(match result {
                Ok(answer) => verdict(&answer),
                Err(rmcp::service::ServiceError::Timeout { .. }) => Answer::Refused(
                    "approval_timeout",
                    format!("nobody answered within {} s", APPROVAL_TIMEOUT.as_secs()),
                ),
                Err(error) => Answer::Refused(
                    "approval_unavailable",
                    format!("the client could not ask: {error}"),
                ),
            });
        }
        let bound = format!("sign_action\n{}", request.agent_id);
        let Some(state) = state else {
            return self.ask_by_input(&request, &bound).map(Answer::Ask);
        };
        let pending: Pending = self
            .codec
            .open_json_with(&state, bound.as_bytes())
            .map_err(|_| {
                McpError::invalid_params(
                    "requestState is invalid or expired: call sign_action again without it",
                    None,
                )
            })?;
        if pending.request != request {
            return Err(McpError::invalid_params(
                "requestState belongs to another request: call sign_action again without it",
                None,
            ));
        }
        let Some(answer) = responses.as_ref().and_then(|r| r.get(INPUT_KEY)) else {
            // No answer yet: ask again (the spec's advice) rather than fail.
            return self.ask_by_input(&request, &bound).map(Answer::Ask);
        };
        let answer: ElicitResult = serde_json::from_value(answer.clone()).map_err(|e| {
            McpError::invalid_params(format!("inputResponses.{INPUT_KEY}: {e}"), None)
        })?;
        let verdict = verdict(&answer);
        if matches!(verdict, Answer::Approved) && !self.first_use(&pending.nonce) {
            return Err(McpError::invalid_params(
                "this approval was already used: call sign_action again without requestState",
                None,
            ));
        }
        Ok(verdict)
    }

    fn ask_by_input(
        &self,
        request: &Request,
        bound: &str,
    ) -> Result<InputRequiredResult, McpError> {
        let pending = Pending {
            request: request.clone(),
            nonce: agentseal::clock::random_id()
                .map_err(|e| McpError::internal_error(e.to_string(), None))?,
        };
        let sealed = self
            .codec
            .seal_json_with(
                &pending,
                &SealOptions::new()
                    .associated_data(bound.as_bytes())
                    .ttl(STATE_TTL),
            )
            .map_err(|e| McpError::internal_error(format!("request state: {e}"), None))?;
        let mut requests = InputRequests::new();
        requests.insert(
            INPUT_KEY.to_owned(),
            InputRequest::Elicitation(ElicitRequest::new(question(request))),
        );
        Ok(InputRequiredResult::new(Some(requests), Some(sealed)))
    }

    /// Records `nonce` as used; false if it already was.
    fn first_use(&self, nonce: &str) -> bool {
        let now = agentseal::clock::now();
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, expires| *expires > now);
        used.insert(nonce.to_owned(), now + STATE_TTL.as_secs() as i64)
            .is_none()
    }
}

/// Whether the client behind `context` can ask its user (it declared elicitation).
pub fn client_can_ask(context: &RequestContext<RoleServer>) -> bool {
    context
        .client_capabilities()
        .is_some_and(|c| c.elicitation.is_some())
}

/// The question the person sees.
fn question(request: &Request) -> ElicitRequestParams {
    let on_behalf = request
        .on_behalf_of
        .as_deref()
        .map(|p| format!(" on behalf of {p}"))
        .unwrap_or_default();
    ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!(
            "{agent} asks to sign `{action}` for {audience}{on_behalf} (arguments sha256 {digest}, \
             valid up to {ttl} s). Approve?",
            agent = request.agent_id,
            action = request.action,
            audience = request.audience,
            digest = request.args_sha256,
            ttl = request.ttl,
        ),
        requested_schema: ElicitationSchema::builder()
            .required_bool("approve")
            .build()
            .expect("a one-field schema builds"),
    }
}

/// Approved only on an explicit accept with `approve: true`.
fn verdict(answer: &ElicitResult) -> Answer {
    let approved = answer.action == ElicitationAction::Accept
        && answer
            .content
            .as_ref()
            .and_then(|c| c.get("approve"))
            .and_then(serde_json::Value::as_bool)
            == Some(true);
    if approved {
        Answer::Approved
    } else {
        Answer::Refused(
            "approval_declined",
            "the person did not approve this action: no token was signed".into(),
        )
    }
}
