//! Revocation: `agentseal revoke token|cert`, `check-revocation` and `crl`.

use agentseal::authority::{Installation, ServiceError};
use clap::{Args, Subcommand};
use serde_json::json;

use super::input::{KindArg, parse_duration, read_input};
use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum RevokeCommand {
    /// Revoke an action token.
    Token(TokenArgs),
    /// Revoke a certificate by serial, or every certificate of an agent by agent id.
    Cert(CertArgs),
}

impl RevokeCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            RevokeCommand::Token(token) => token,
            RevokeCommand::Cert(cert) => cert,
        }
    }
}

/// `agentseal revoke token`.
#[derive(Args)]
pub struct TokenArgs {
    /// The token, or its jti.
    #[arg(allow_hyphen_values = true)]
    token_or_jti: String,
    /// Why (recorded and published in the revocation list).
    #[arg(long, default_value = "unspecified")]
    reason: String,
}

impl Operation for TokenArgs {
    fn facts(&self) -> Facts {
        let given = self.token_or_jti.as_str();
        // A jti given as such is the token's id; a token is recorded by the id it names.
        let jti = (agentseal::jose::Jws::parse(given).is_err() && given != "-").then_some(given);
        Facts::new("revoke.token")
            .with("token", given)
            .with_some("token_id", jti)
            .with("reason", &self.reason)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let entry = installation.revoke_token(&read_input(&self.token_or_jti)?, &self.reason)?;
        tracing::info!(jti = %entry.id, "token revoked");
        Ok(Outcome::Json(json!({ "revoked": "token", "entry": entry })))
    }
}

/// `agentseal revoke cert`.
#[derive(Args)]
pub struct CertArgs {
    /// Certificate serial or agent id.
    #[arg(allow_hyphen_values = true)]
    serial_or_agent: String,
    /// Why.
    #[arg(long, default_value = "unspecified")]
    reason: String,
}

impl Operation for CertArgs {
    fn facts(&self) -> Facts {
        Facts::new("revoke.cert")
            .with("serial", &self.serial_or_agent)
            .with("reason", &self.reason)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let entries = installation.revoke_certificate(&self.serial_or_agent, &self.reason)?;
        tracing::info!(count = entries.len(), "certificates revoked");
        Ok(Outcome::Json(
            json!({ "revoked": "certificate", "entries": entries }),
        ))
    }
}

/// `agentseal check-revocation`.
#[derive(Args)]
pub struct CheckRevocationArgs {
    /// What to look up.
    #[arg(value_name = "token|certificate")]
    kind: KindArg,
    /// The token or its jti; the certificate, its serial, or the agent id.
    #[arg(allow_hyphen_values = true)]
    subject: String,
}

impl Operation for CheckRevocationArgs {
    fn facts(&self) -> Facts {
        Facts::new("check_revocation")
            .with("kind", self.kind.name())
            .with("id", &self.subject)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let subject = read_input(&self.subject)?;
        let status = installation.check_revocation(self.kind.revoked_kind(), &subject)?;
        Ok(Outcome::Json(json!(status)))
    }
}

/// `agentseal crl`.
#[derive(Args)]
pub struct CrlArgs {
    /// How long until the list's `next_update`, e.g. 1h, 30m.
    #[arg(long, value_parser = parse_duration)]
    validity: Option<i64>,
}

impl Operation for CrlArgs {
    fn facts(&self) -> Facts {
        Facts::new("crl")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        Ok(Outcome::Text(installation.issue_crl(self.validity)?))
    }
}
