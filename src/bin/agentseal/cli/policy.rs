//! `agentseal policy ...`: explain what the policy decides, print the default one.

use std::path::PathBuf;
use std::sync::Arc;

use agentseal::authority::{Installation, ServiceError};
use agentseal::policy::Policy;
use agentseal::token::action::ActionRequest;
use clap::{Args, Subcommand};
use serde_json::json;

use super::input::parse_duration;
use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// What the policy decides if --agent asks to sign --action for --aud: allowed or denied
    /// and why, the lifetime it caps to, the rate limit, whether a person must approve. Exits 1
    /// when denied. Counts nothing against rate limits.
    Check(CheckArgs),
    /// Print the built-in default policy (a starting point for your own).
    Default(DefaultArgs),
}

impl PolicyCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            PolicyCommand::Check(check) => check,
            PolicyCommand::Default(default) => default,
        }
    }
}

/// `agentseal policy check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The agent asking.
    #[arg(long)]
    agent: String,
    /// The action.
    #[arg(long)]
    action: String,
    /// The audience.
    #[arg(long)]
    aud: String,
    /// Requested lifetime, e.g. 5m (default).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<i64>,
    /// Requested scopes.
    #[arg(long)]
    scope: Option<String>,
    /// For whom the agent acts.
    #[arg(long, value_name = "PRINCIPAL")]
    on_behalf_of: Option<String>,
    /// Evaluate this policy file (a draft) instead of the one in force.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

impl Operation for CheckArgs {
    fn facts(&self) -> Facts {
        Facts::new("policy")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let mut request = ActionRequest::new(&self.action, &self.aud, json!({}));
        request.ttl = self.ttl.unwrap_or(request.ttl);
        request.scope = self.scope.clone();
        let input =
            installation.policy_input(&self.agent, &request, self.on_behalf_of.as_deref())?;
        let (policy, problem) = match &self.file {
            Some(file) => (Arc::new(Policy::from_file(file)?), None),
            None => {
                let source = installation.policy()?;
                (source.current(), source.problem())
            }
        };
        let decision = policy.evaluate(&input)?;
        let outcome = match (decision.allow, decision.approval) {
            (false, _) => "denied",
            (true, true) => "allowed once a person approves",
            (true, false) => "allowed",
        };
        let mut report = json!({
            "policy": policy.name(),
            "outcome": outcome,
            "decision": decision,
            "ttl": decision.capped_ttl(request.ttl),
            "input": input,
        });
        if let Some(problem) = problem {
            report["problem"] = json!(problem.to_string());
        }
        Ok(if decision.allow {
            Outcome::Json(report)
        } else {
            report["valid"] = json!(false);
            report["reasons"] = json!(["policy_denied"]);
            Outcome::Invalid(report)
        })
    }
}

/// `agentseal policy default`.
#[derive(Args)]
pub struct DefaultArgs {}

impl Operation for DefaultArgs {
    fn facts(&self) -> Facts {
        Facts::new("policy")
    }

    fn run(&self, _: &Installation) -> Result<Outcome, ServiceError> {
        Ok(Outcome::Text(
            agentseal::policy::DEFAULT_POLICY.trim_end().to_owned(),
        ))
    }
}
