//! The installation's policy: which file governs it, and what it decides for an agent's request.

use super::*;

impl Installation {
    /// What the policy in force decides about `input`; a denial is an error with its reasons.
    /// Evaluating has no effect: rate limits are counted only when signing.
    pub(super) fn decide(&self, input: &PolicyInput) -> Result<Decision, ServiceError> {
        let decision = self.policy()?.current().evaluate(input)?;
        if !decision.allow {
            return Err(ServiceError::PolicyDenied(if decision.reasons.is_empty() {
                vec!["the policy does not allow this".into()]
            } else {
                decision.reasons
            }));
        }
        Ok(decision)
    }

    /// A policy input for `operation` by `agent_id`, with its role and certificate metadata.
    pub(super) fn agent_policy_input(
        &self,
        agent_id: &str,
        operation: &str,
    ) -> Result<PolicyInput, ServiceError> {
        let record = self.agent(agent_id)?;
        let mut input = PolicyInput::new(agent_id, operation);
        input.role = record.meta.get("role").cloned();
        input.meta = record.meta;
        Ok(input)
    }

    /// The input the policy sees when `agent_id` asks to sign `request` (for `on_behalf_of`).
    pub fn policy_input(
        &self,
        agent_id: &str,
        request: &ActionRequest,
        on_behalf_of: Option<&str>,
    ) -> Result<PolicyInput, ServiceError> {
        let mut input = self.agent_policy_input(agent_id, "sign_action")?;
        input.action = Some(request.action.clone());
        input.audience = Some(request.audience.clone());
        input.ttl = Some(request.ttl);
        input.scope = request.scope.clone();
        input.on_behalf_of = on_behalf_of.filter(|p| *p != agent_id).map(str::to_owned);
        Ok(input)
    }

    /// The policy in force: the installation's `policy.rego` (reloaded when it changes), or
    /// the built-in default.
    pub fn policy(&self) -> Result<&PolicySource, ServiceError> {
        if let Some(policy) = self.policy.get() {
            return Ok(policy);
        }
        let loaded = PolicySource::load(&self.data_dir.join(crate::policy::POLICY_FILE))?;
        Ok(self.policy.get_or_init(|| loaded))
    }

    /// Uses the policy file at `path` instead of the data directory's (before first use).
    pub fn use_policy_file(&self, path: &Path) -> Result<(), ServiceError> {
        if !path.exists() {
            return Err(ServiceError::InvalidInput(format!(
                "policy file {} does not exist",
                path.display()
            )));
        }
        let loaded = PolicySource::load(path)?;
        self.policy.set(loaded).map_err(|_| {
            ServiceError::InvalidInput("the policy is already in use; set it before serving".into())
        })
    }
}
