//! `agentseal cert ...`: show, verify, present and renew certificates.

use agentseal::authority::{Installation, ServiceError};
use agentseal::token::certificate::AgentCertificate;
use clap::{Args, Subcommand};
use serde_json::json;

use super::input::{parse_duration, read_input, rejection};
use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum CertCommand {
    /// Print an agent's current certificate (by agent id or serial) and its claims.
    Show(ShowArgs),
    /// Verify a certificate against this CA (and its proof of possession, if given); exits 1 if
    /// it is not valid.
    Verify(VerifyArgs),
    /// Present an agent's certificate, with a proof of possession over a peer's challenge.
    Present(PresentArgs),
    /// Issue a fresh certificate for an agent's existing keys.
    Renew(RenewArgs),
}

impl CertCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            CertCommand::Show(show) => show,
            CertCommand::Verify(verify) => verify,
            CertCommand::Present(present) => present,
            CertCommand::Renew(renew) => renew,
        }
    }
}

/// `agentseal cert show`.
#[derive(Args)]
pub struct ShowArgs {
    /// Agent id or certificate serial.
    #[arg(allow_hyphen_values = true)]
    agent_or_serial: String,
}

impl Operation for ShowArgs {
    fn facts(&self) -> Facts {
        Facts::new("cert.show").with("id", &self.agent_or_serial)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let encoded = installation.find_certificate(&self.agent_or_serial)?;
        let (_, claims, _) = AgentCertificate::parse_unverified(&encoded)
            .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
        Ok(Outcome::Json(
            json!({ "claims": claims, "certificate": encoded }),
        ))
    }
}

/// `agentseal cert verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The certificate, an agent id, a serial, or "-" for stdin.
    #[arg(allow_hyphen_values = true)]
    certificate: String,
    /// A proof of possession (from `cert present --challenge`) to check as well.
    #[arg(long, requires_all = ["challenge", "aud"])]
    proof: Option<String>,
    /// The challenge you issued.
    #[arg(long)]
    challenge: Option<String>,
    /// Your identity: the proof's audience.
    #[arg(long)]
    aud: Option<String>,
}

impl Operation for VerifyArgs {
    fn facts(&self) -> Facts {
        Facts::new("cert.verify")
            .with("certificate", &self.certificate)
            .with_some("audience", self.aud.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let input = read_input(&self.certificate)?;
        let encoded = match installation.find_certificate(&input) {
            Ok(found) => found,
            Err(_) => input,
        };
        let verifier = installation.verifier();
        let now = agentseal::clock::now();
        let outcome = match (&self.proof, &self.challenge, &self.aud) {
            (Some(proof), Some(challenge), Some(aud)) => verifier
                .verify_presentation(&encoded, proof, challenge, aud, now)
                .map(
                    |(cert, proof)| json!({ "valid": true, "claims": cert.claims, "proof": proof }),
                ),
            _ => verifier
                .verify_certificate(&encoded, now)
                .map(|cert| json!({ "valid": true, "claims": cert.claims })),
        };
        Ok(match outcome {
            Ok(value) => Outcome::Json(value),
            Err(error) => Outcome::Invalid(rejection(&error)),
        })
    }
}

/// `agentseal cert present`.
#[derive(Args)]
pub struct PresentArgs {
    /// The presenting agent.
    #[arg(long)]
    agent: String,
    /// The peer's fresh challenge (16-256 printable characters).
    #[arg(long, requires = "aud")]
    challenge: Option<String>,
    /// The peer the proof is for.
    #[arg(long)]
    aud: Option<String>,
}

impl Operation for PresentArgs {
    fn facts(&self) -> Facts {
        Facts::new("cert.present")
            .with("agent_id", &self.agent)
            .with_some("audience", self.aud.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let audience = self.aud.as_deref().unwrap_or_default();
        let presentation =
            installation.present_certificate(&self.agent, self.challenge.as_deref(), audience)?;
        Ok(Outcome::Json(json!(presentation)))
    }
}

/// `agentseal cert renew`.
#[derive(Args)]
pub struct RenewArgs {
    /// The agent id.
    agent_id: String,
    /// Certificate lifetime, e.g. 90d.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<i64>,
}

impl Operation for RenewArgs {
    fn facts(&self) -> Facts {
        Facts::new("cert.renew").with("agent_id", &self.agent_id)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let certificate = installation.renew_certificate(&self.agent_id, self.ttl)?;
        Ok(Outcome::Json(json!({
            "agent_id": self.agent_id,
            "serial": certificate.claims.jti,
            "expires_at": certificate.claims.exp,
            "certificate": agentseal::jose::as_json_value(&certificate.encoded),
        })))
    }
}
