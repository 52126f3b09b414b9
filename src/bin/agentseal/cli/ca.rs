//! `agentseal ca ...`: rotate the CA's keys and retire earlier ones.

use agentseal::authority::{Installation, ServiceError};
use clap::{Args, Subcommand};
use serde_json::json;

use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum CaCommand {
    /// Make the CA's next keys (same algorithms) and sign with them from now on. The current
    /// keys stay published and trusted (certificates, lists and tokens they signed keep
    /// verifying) until `ca retire`; they endorse the new keys for verifiers following the hub.
    /// Restart running servers to sign with the new keys.
    Rotate(RotateArgs),
    /// Stop trusting an earlier generation of CA keys (the one holding KID): what it signed
    /// stops verifying. Restart running servers for them to stop trusting it.
    Retire(RetireArgs),
}

impl CaCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            CaCommand::Rotate(rotate) => rotate,
            CaCommand::Retire(retire) => retire,
        }
    }
}

/// `agentseal ca rotate`.
#[derive(Args)]
pub struct RotateArgs {}

impl Operation for RotateArgs {
    fn facts(&self) -> Facts {
        Facts::new("ca.rotate")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let rotation = installation.rotate_ca()?;
        Ok(Outcome::Json(json!({
            "generation": rotation.generation,
            "key_ids": rotation.key_ids,
            "previous_key_ids": rotation.previous_key_ids,
            "next": "restart running servers; retire the previous keys with `agentseal ca retire KID` once certificates they signed are renewed",
        })))
    }
}

/// `agentseal ca retire`.
#[derive(Args)]
pub struct RetireArgs {
    /// The thumbprint of a key of the generation to retire (`agentseal status`). Thumbprints are
    /// base64url and may start with `-`.
    #[arg(allow_hyphen_values = true)]
    kid: String,
    /// Retire even if agents are still certified by these keys.
    #[arg(long)]
    force: bool,
}

impl Operation for RetireArgs {
    fn facts(&self) -> Facts {
        Facts::new("ca.retire").with("kid", &self.kid)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let retired = installation.retire_ca_keys(&self.kid, self.force)?;
        Ok(Outcome::Json(json!({
            "retired_generation": retired.generation,
            "retired_key_ids": retired.keys.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        })))
    }
}
