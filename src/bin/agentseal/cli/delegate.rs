//! `agentseal delegate`: let one agent act for another.

use agentseal::authority::{Installation, ServiceError};
use agentseal::token::delegation::GrantRequest;
use clap::Args;
use serde_json::json;

use super::input::parse_duration;
use super::{Facts, Operation, Outcome};

/// `agentseal delegate`.
#[derive(Args)]
pub struct DelegateArgs {
    /// The delegating agent.
    #[arg(long)]
    from: String,
    /// The delegate.
    #[arg(long)]
    to: String,
    /// An action the delegate may authorize (repeatable; "*" for all).
    #[arg(long = "action", required = true)]
    actions: Vec<String>,
    /// An audience the delegate may address (repeatable; default: any).
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// Space-separated scopes the delegate may use.
    #[arg(long)]
    scope: Option<String>,
    /// Lifetime, e.g. 1h (default), at most 1 day.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    ttl: i64,
    /// Pass on a delegation --from holds: the principal it acts for.
    #[arg(long, value_name = "PRINCIPAL")]
    on_behalf_of: Option<String>,
}

impl Operation for DelegateArgs {
    fn facts(&self) -> Facts {
        Facts::new("delegate")
            .with("agent_id", &self.from)
            .with("delegate", &self.to)
            .with_some("on_behalf_of", self.on_behalf_of.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let request = GrantRequest {
            delegate: self.to.clone(),
            actions: self.actions.clone(),
            audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            scope: self.scope.clone(),
            ttl: self.ttl,
        };
        let grant = installation.delegate(&self.from, &request, self.on_behalf_of.as_deref())?;
        Ok(Outcome::Json(json!(grant)))
    }
}
