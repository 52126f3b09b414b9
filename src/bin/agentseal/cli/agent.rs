//! `agentseal agent ...`: create and list agents.

use std::collections::BTreeMap;

use agentseal::authority::{Installation, KeyChoice, ServiceError};
use clap::{Args, Subcommand};
use serde_json::json;

use super::input::{parse_duration, parse_key_value};
use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Create an agent: make its keys in the key store and issue its certificate.
    Create(CreateArgs),
    /// List agents.
    List(ListArgs),
}

impl AgentCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            AgentCommand::Create(create) => create,
            AgentCommand::List(list) => list,
        }
    }
}

/// `agentseal agent create`.
#[derive(Args)]
pub struct CreateArgs {
    /// The agent id, a URI such as agent://acme.example/code-reviewer.
    agent_id: String,
    /// The agent's keys.
    #[arg(
        long,
        default_value = "ed25519",
        value_name = "ed25519|ml-dsa-65|hybrid"
    )]
    alg: KeyChoice,
    /// Certificate metadata, repeatable: --meta role=reviewer --meta team=infra.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    meta: Vec<(String, String)>,
    /// Certificate lifetime, e.g. 90d, 12h.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<i64>,
}

impl Operation for CreateArgs {
    fn facts(&self) -> Facts {
        Facts::new("agent.create").with("agent_id", &self.agent_id)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let meta: BTreeMap<String, String> = self.meta.iter().cloned().collect();
        let certificate = installation.create_agent(&self.agent_id, self.alg, meta, self.ttl)?;
        tracing::info!(agent = %self.agent_id, serial = %certificate.claims.jti, "agent created");
        Ok(Outcome::Json(json!({
            "agent_id": self.agent_id,
            "serial": certificate.claims.jti,
            "expires_at": certificate.claims.exp,
            "key_ids": certificate.keys.iter().map(agentseal::jose::thumbprint).collect::<Vec<_>>(),
            "certificate": certificate.encoded,
        })))
    }
}

/// `agentseal agent list`.
#[derive(Args)]
pub struct ListArgs {}

impl Operation for ListArgs {
    fn facts(&self) -> Facts {
        Facts::new("agent.list")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        Ok(Outcome::Json(json!(installation.agents()?)))
    }
}
