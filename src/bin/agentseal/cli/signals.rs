//! `agentseal signals ...`: webhooks, their outbox, and the auto-revoke rule.

use agentseal::authority::{AutoRevokeRule, Installation, ServiceError};
use agentseal::signals::WebhookSecret;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::input::parse_duration;
use super::{Facts, Operation, Outcome};

/// Environment variable holding the secret `signals webhook` uses instead of making one.
const WEBHOOK_SECRET_ENV: &str = "AGENTSEAL_WEBHOOK_SECRET";

#[derive(Subcommand)]
pub enum SignalsCommand {
    /// The webhook, the outbox (webhooks waiting, given up on) and the auto-revoke rule.
    Status(StatusArgs),
    /// Try the webhooks given up on again (each keeps its webhook-id).
    Retry(RetryArgs),
    /// Send signals to URL as Standard Webhooks, signed with the secret in
    /// AGENTSEAL_WEBHOOK_SECRET (whsec_..., 32 bytes) or, without it, a new one printed once.
    /// Servers running now pick the change up within seconds.
    Webhook(WebhookArgs),
    /// Revoke an agent's certificates once --after of its own requests are refused (policy
    /// denial, rate limit, beyond its delegation) or its own tokens are rejected for what it
    /// wrote in them, within --within; signalled as agent.auto_revoked.
    AutoRevoke(AutoRevokeArgs),
}

impl SignalsCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            SignalsCommand::Status(status) => status,
            SignalsCommand::Retry(retry) => retry,
            SignalsCommand::Webhook(webhook) => webhook,
            SignalsCommand::AutoRevoke(auto_revoke) => auto_revoke,
        }
    }
}

/// `agentseal signals status`.
#[derive(Args)]
pub struct StatusArgs {}

impl Operation for StatusArgs {
    fn facts(&self) -> Facts {
        Facts::new("signals.status")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        Ok(Outcome::Json(json!(installation.signals_status()?)))
    }
}

/// `agentseal signals retry`.
#[derive(Args)]
pub struct RetryArgs {}

impl Operation for RetryArgs {
    fn facts(&self) -> Facts {
        Facts::new("signals.retry")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        Ok(Outcome::Json(
            json!({ "requeued": installation.retry_signals()? }),
        ))
    }
}

/// `agentseal signals webhook`.
#[derive(Args)]
pub struct WebhookArgs {
    /// The receiver's endpoint (http:// or https://).
    #[arg(required_unless_present = "remove", conflicts_with = "remove")]
    url: Option<String>,
    /// Stop sending webhooks and delete the secret.
    #[arg(long)]
    remove: bool,
}

impl Operation for WebhookArgs {
    fn facts(&self) -> Facts {
        // Only the host: some receivers take a credential in the path.
        let host = self
            .url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        Facts::new(if self.remove {
            "signals.webhook.remove"
        } else {
            "signals.webhook.set"
        })
        .with_some("id", host.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        if self.remove {
            let removed = installation.remove_webhook()?;
            return Ok(Outcome::Json(json!({ "webhook_removed": removed })));
        }
        let url = self.url.as_deref().unwrap_or_default();
        let secret =
            match std::env::var(WEBHOOK_SECRET_ENV) {
                Ok(text) => Some(WebhookSecret::parse(text.trim()).map_err(|e| {
                    ServiceError::InvalidInput(format!("{WEBHOOK_SECRET_ENV}: {e}"))
                })?),
                Err(_) => None,
            };
        let set = installation.set_webhook(url, secret)?;
        let mut report = json!({ "webhook_url": installation.signals_status()?.webhook_url });
        if let Some(secret) = &set.generated_secret {
            eprintln!(
                "agentseal: give this secret to the receiver now; it is not shown again (it stays in the key store)"
            );
            report["secret"] = Value::String(secret.to_string());
        }
        Ok(Outcome::Json(report))
    }
}

/// `agentseal signals auto-revoke`.
#[derive(Args)]
pub struct AutoRevokeArgs {
    /// Rejections that trigger the revocation.
    #[arg(long, required_unless_present = "off", conflicts_with = "off")]
    after: Option<u32>,
    /// The window they are counted in, e.g. 10m.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    within: i64,
    /// Turn the rule off.
    #[arg(long)]
    off: bool,
}

impl Operation for AutoRevokeArgs {
    fn facts(&self) -> Facts {
        Facts::new(if self.off {
            "signals.auto_revoke.off"
        } else {
            "signals.auto_revoke.set"
        })
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        if self.off {
            installation.set_auto_revoke(None)?;
            return Ok(Outcome::Json(json!({ "auto_revoke": null })));
        }
        let rule = AutoRevokeRule {
            rejections: self.after.unwrap_or_default(),
            window_seconds: self.within,
        };
        installation.set_auto_revoke(Some(rule))?;
        Ok(Outcome::Json(json!({ "auto_revoke": rule })))
    }
}
