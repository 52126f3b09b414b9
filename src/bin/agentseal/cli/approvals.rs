//! `agentseal approvals list`, `agentseal approve ID`, `agentseal deny ID`: a person deciding
//! the actions the policy wants approved, for agents whose client cannot ask anyone.

use agentseal::authority::{Installation, PendingApproval, ServiceError};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List the approvals waiting for a person (JSON), each with exactly what would be signed.
    List(ListArgs),
}

impl ApprovalsCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            ApprovalsCommand::List(list) => list,
        }
    }
}

/// An approval as shown: what will be signed, and where it stands.
fn shown(approval: &PendingApproval, now: i64) -> Value {
    json!({
        "approval_id": approval.id,
        "status": approval.status(now),
        "agent_id": approval.request.agent_id,
        "action": approval.request.action,
        "audience": approval.request.audience,
        "arguments": approval.request.args,
        "args_sha256": approval.request.args_sha256,
        "ttl_seconds": approval.request.ttl,
        "scope": approval.request.scope,
        "on_behalf_of": approval.request.on_behalf_of,
        "requested_at": approval.requested_at,
        "expires_at": approval.expires_at,
        "decision": approval.decision,
        "used_at": approval.used_at,
    })
}

/// `agentseal approvals list`.
#[derive(Args)]
pub struct ListArgs {
    /// Also list decided, used and expired approvals.
    #[arg(long)]
    all: bool,
}

impl Operation for ListArgs {
    fn facts(&self) -> Facts {
        Facts::new("approvals.list")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let now = agentseal::clock::now();
        let approvals: Vec<Value> = installation
            .approvals()?
            .iter()
            .filter(|a| self.all || a.status(now) == agentseal::authority::ApprovalStatus::Pending)
            .map(|a| shown(a, now))
            .collect();
        Ok(Outcome::Json(json!({ "approvals": approvals })))
    }
}

/// `agentseal approve`.
#[derive(Args)]
pub struct ApproveArgs {
    /// The approval's id (`approvals list`).
    id: String,
}

impl Operation for ApproveArgs {
    fn facts(&self) -> Facts {
        Facts::new("approve").with("approval_id", &self.id)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let decided =
            installation.decide_approval(&self.id, true, &super::operator_name(), None)?;
        Ok(Outcome::Json(shown(&decided, agentseal::clock::now())))
    }
}

/// `agentseal deny`.
#[derive(Args)]
pub struct DenyArgs {
    /// The approval's id (`approvals list`).
    id: String,
    /// Why: the agent is told.
    #[arg(long)]
    reason: String,
}

impl Operation for DenyArgs {
    fn facts(&self) -> Facts {
        Facts::new("deny")
            .with("approval_id", &self.id)
            .with("reason", &self.reason)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let decided = installation.decide_approval(
            &self.id,
            false,
            &super::operator_name(),
            Some(&self.reason),
        )?;
        Ok(Outcome::Json(shown(&decided, agentseal::clock::now())))
    }
}
