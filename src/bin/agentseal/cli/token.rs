//! Action tokens: `agentseal token sign` and `agentseal verify`.

use agentseal::authority::{Approval, Installation, ServiceError};
use agentseal::jose::EdAlgName;
use agentseal::token::action::{ActionRequest, Expectations};
use clap::{Args, Subcommand};
use serde_json::json;

use super::input::{ArgsInput, parse_duration, read_input, rejection};
use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Sign an action token as an agent; prints the token on stdout.
    Sign(SignArgs),
}

impl TokenCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            TokenCommand::Sign(sign) => sign,
        }
    }
}

/// `agentseal token sign`.
#[derive(Args)]
pub struct SignArgs {
    /// The signing agent.
    #[arg(long)]
    agent: String,
    /// The action to authorize.
    #[arg(long)]
    action: String,
    /// The audience (who will act on the token).
    #[arg(long)]
    aud: String,
    #[command(flatten)]
    args: ArgsInput,
    /// Token lifetime, e.g. 5m (default), 30s; at most 1 day.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<i64>,
    /// Space-separated scopes.
    #[arg(long)]
    scope: Option<String>,
    /// How to name Ed25519 in the header: EdDSA (widely accepted) or Ed25519 (RFC 9864).
    #[arg(long, default_value = "EdDSA", value_parser = ["EdDSA", "Ed25519"])]
    ed_alg: String,
    /// Print a JSON object with the token, its id and expiry instead of the bare token.
    #[arg(long)]
    json: bool,
    /// Act for this principal: an agent that delegated to --agent, or a user.
    #[arg(long, value_name = "PRINCIPAL")]
    on_behalf_of: Option<String>,
}

impl Operation for SignArgs {
    fn facts(&self) -> Facts {
        Facts::new("token.sign")
            .with("agent_id", &self.agent)
            .with("action", &self.action)
            .with("audience", &self.aud)
            .with_some("on_behalf_of", self.on_behalf_of.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let mut request = ActionRequest::new(&self.action, &self.aud, self.args.value()?);
        request.ttl = self.ttl.unwrap_or(request.ttl);
        request.scope = self.scope.clone();
        request.ed_alg = if self.ed_alg == "Ed25519" {
            EdAlgName::Ed25519
        } else {
            EdAlgName::EdDsa
        };
        let signed = installation.sign_action_for(
            &self.agent,
            &request,
            self.on_behalf_of.as_deref(),
            Approval::Operator,
        )?;
        tracing::info!(agent = %self.agent, jti = %signed.jti, "action token signed");
        Ok(if self.json {
            Outcome::Json(json!(signed))
        } else {
            Outcome::Text(signed.token)
        })
    }
}

/// `agentseal verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The token ("-" reads it from stdin).
    #[arg(allow_hyphen_values = true)]
    token: String,
    /// The audience you are: the token's `aud` must match (RFC 8725 §3.9).
    #[arg(long, required_unless_present = "any_audience")]
    aud: Option<String>,
    /// Accept a token for any audience (inspection only: a service must pass --aud).
    #[arg(long, conflicts_with = "aud")]
    any_audience: bool,
    /// The action about to be performed: the token's `action` must match.
    #[arg(long)]
    action: Option<String>,
    #[command(flatten)]
    args: ArgsInput,
}

impl Operation for VerifyArgs {
    fn facts(&self) -> Facts {
        Facts::new("verify")
            .with("token", &self.token)
            .with_some("audience", self.aud.as_deref())
            .with_some("expected_action", self.action.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let token = read_input(&self.token)?;
        let expect = Expectations {
            max_delegation_depth: None,
            // Without --aud (--any-audience), any audience is accepted.
            audience: self.aud.clone(),
            action: self.action.clone(),
            args: if self.args.given() {
                Some(self.args.value()?)
            } else {
                None
            },
        };
        Ok(match installation.verify_token(&token, &expect) {
            Ok(verified) => Outcome::Json(json!({
                "valid": true,
                "claims": verified.claims,
                "certificate": verified.certificate.claims,
            })),
            Err(error) => Outcome::Invalid(rejection(&error)),
        })
    }
}
