//! Signing action tokens for an agent, after the policy has had its say.

use super::*;

/// Whether a person approved an operation the policy marks for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Approval {
    /// Nobody was asked (or the caller cannot ask).
    NotGiven,
    /// The person at the agent's MCP client approved this very request.
    Given,
    /// The operator ran it from the CLI: the operator is the approving person.
    Operator,
}

/// Parses arguments given as JSON text, strictly.
pub fn parse_args_json(text: &str) -> Result<Value, ServiceError> {
    crate::jose::parse_strict_json(text.as_bytes())
        .map_err(|e| ServiceError::InvalidInput(format!("arguments are not valid JSON: {e}")))
}

impl Installation {
    /// Signs an action token as `agent_id`, with its current certificate, which must be valid.
    pub fn sign_action(
        &self,
        agent_id: &str,
        request: &ActionRequest,
    ) -> Result<SignedAction, ServiceError> {
        request.validate()?;
        let (certificate, keys) = self.usable_signer(agent_id)?;
        let refs: Vec<&SigningKey> = keys.iter().collect();
        Ok(action::sign(&certificate, &refs, request, clock::now())?)
    }

    /// Signs an action token as `agent_id` acting for `on_behalf_of`: an agent that granted it
    /// a delegation (directly or through a chain), or a party outside the CA, such as a user,
    /// that the agent names on its own word. The token carries the chain (`sub`, `act`, `dlg`);
    /// its lifetime is capped at the grant's.
    ///
    /// The installation's policy decides first (see [`crate::policy`]): it may deny, cap the
    /// lifetime, rate-limit, or ask for a person's approval, which `approval` says was given.
    /// Refusals of the agent's own requests (not the operator's) count towards the auto-revoke
    /// rule, if it is on.
    pub fn sign_action_for(
        &self,
        agent_id: &str,
        request: &ActionRequest,
        on_behalf_of: Option<&str>,
        approval: Approval,
    ) -> Result<SignedAction, ServiceError> {
        // `User:ann` and `user:ann` are one person, spelled one way in the token.
        let on_behalf_of = on_behalf_of.map(crate::token::delegation::normalize_principal);
        let on_behalf_of = on_behalf_of.as_deref();
        let signed = self.sign_action_decided(agent_id, request, on_behalf_of, approval);
        if let Err(error) = &signed
            && approval != Approval::Operator
        {
            self.request_refused(agent_id, error);
        }
        signed
    }

    pub(super) fn sign_action_decided(
        &self,
        agent_id: &str,
        request: &ActionRequest,
        on_behalf_of: Option<&str>,
        approval: Approval,
    ) -> Result<SignedAction, ServiceError> {
        // What no policy can make valid is refused before the policy sees it.
        request.validate()?;
        let decision = self.decide(&self.policy_input(agent_id, request, on_behalf_of)?)?;
        if decision.approval && approval == Approval::NotGiven {
            return Err(ServiceError::ApprovalRequired(format!(
                "{agent_id} may {} for {} only once a person approves",
                request.action, request.audience
            )));
        }
        let mut request = request.clone();
        request.ttl = decision.capped_ttl(request.ttl);
        let now = clock::now();
        if let Some(limit) = decision.rate_limit
            && let Err(retry_after) =
                self.store
                    .admit_rate(agent_id, limit.count, limit.per_seconds, now)?
        {
            self.signal(
                SignalKind::RateLimited,
                Some(agent_id),
                serde_json::json!({
                    "operation": "sign_action",
                    "action": request.action,
                    "audience": request.audience,
                    "retry_after": retry_after,
                }),
            );
            return Err(ServiceError::RateLimited(retry_after));
        }
        let Some(principal) = on_behalf_of.filter(|p| *p != agent_id) else {
            return self.sign_action(agent_id, &request);
        };
        let (chain, last) = self.chain_for(agent_id, principal, now)?;
        if let Some(last) = &last {
            let refused = |what: String| {
                ServiceError::NotPermitted(format!(
                    "{what} is not delegated to {agent_id} for {principal}"
                ))
            };
            if !delegation::action_allowed(last, &request.action) {
                return Err(refused(format!("action {:?}", request.action)));
            }
            if !delegation::audience_allowed(last, &request.audience) {
                return Err(refused(format!("audience {:?}", request.audience)));
            }
            delegation::scope_within(last.scope.as_deref(), request.scope.as_deref())
                .map_err(|extra| refused(format!("scope {extra:?}")))?;
            request.ttl = request.ttl.min(last.exp - now);
        }
        request.delegation = Some(chain);
        self.sign_action(agent_id, &request)
    }
}
