//! `agentseal agent ...`: create, list and rotate agents.

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
    /// Give an agent new keys and a certificate for them, and revoke its current certificate
    /// (at once, or after --grace): for a key that may have leaked, or routine rotation.
    Rotate(RotateArgs),
}

impl AgentCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            AgentCommand::Create(create) => create,
            AgentCommand::List(list) => list,
            AgentCommand::Rotate(rotate) => rotate,
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
            "certificate": agentseal::jose::as_json_value(&certificate.encoded),
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

/// `agentseal agent rotate`.
#[derive(Args)]
pub struct RotateArgs {
    /// The agent id.
    agent_id: String,
    /// The new keys' algorithms [default: the ones it has].
    #[arg(long, value_name = "ed25519|ml-dsa-65|hybrid")]
    alg: Option<KeyChoice>,
    /// Keep the previous certificate (and the tokens signed under it) working this long, e.g.
    /// 10m (at most 7 days) [default: revoked at once]. Its keys sign nothing from now on.
    #[arg(long, value_parser = parse_duration)]
    grace: Option<i64>,
    /// The new certificate's lifetime, e.g. 90d.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<i64>,
    /// The new certificate's metadata, repeatable [default: the current certificate's, which
    /// must verify]. Needed to rotate an agent whose certificate retired CA keys signed.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    meta: Vec<(String, String)>,
}

impl Operation for RotateArgs {
    fn facts(&self) -> Facts {
        let grace = self.grace.map(|g| g.to_string());
        Facts::new("agent.rotate")
            .with("agent_id", &self.agent_id)
            .with_some("grace", grace.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let rotated = installation.rotate_agent(
            &self.agent_id,
            self.alg,
            self.grace.unwrap_or(0),
            self.ttl,
            (!self.meta.is_empty()).then(|| self.meta.iter().cloned().collect()),
        )?;
        let certificate = &rotated.certificate;
        Ok(Outcome::Json(json!({
            "agent_id": self.agent_id,
            "serial": certificate.claims.jti,
            "expires_at": certificate.claims.exp,
            "key_ids": certificate.keys.iter().map(agentseal::jose::thumbprint).collect::<Vec<_>>(),
            "key_generation": rotated.generation,
            "previous_serial": rotated.previous_serial,
            "previous_revoked_at": rotated.previous_revoked_at,
            "revoked_serials": rotated.revoked_serials,
            "certificate": agentseal::jose::as_json_value(&certificate.encoded),
        })))
    }
}
