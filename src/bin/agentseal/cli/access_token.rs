//! `agentseal access-token issue`: bearer tokens for the HTTP hub.

use agentseal::authority::{Installation, ServiceError};
use agentseal::token::access::Scope;
use clap::{Args, Subcommand};
use serde_json::json;

use super::input::parse_duration;
use super::{Facts, Operation, Outcome};

/// The hub's URL before it ever ran: `serve --http` without an address.
const DEFAULT_HUB_URL: &str = "http://127.0.0.1:7777/";

#[derive(Subcommand)]
pub enum AccessTokenCommand {
    /// Issue a bearer access token (RFC 9068 at+jwt) that lets its holder act as one agent on
    /// the hub. Prints the token on stdout. Revoke it with `agentseal revoke token`.
    Issue(IssueArgs),
}

impl AccessTokenCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            AccessTokenCommand::Issue(issue) => issue,
        }
    }
}

/// `agentseal access-token issue`.
#[derive(Args)]
pub struct IssueArgs {
    /// The agent the token acts as.
    #[arg(long)]
    agent: String,
    /// Lifetime, e.g. 1h (default), 15m; at most 1 day.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<i64>,
    /// The hub's MCP URL, the token's audience [default: <the URL the hub last ran at>/mcp,
    /// else http://127.0.0.1:7777/mcp].
    #[arg(long)]
    audience: Option<String>,
    /// Space-separated scopes: agentseal:sign agentseal:verify agentseal:revoke (default: all).
    #[arg(long)]
    scope: Option<String>,
    /// Print a JSON object with the token, its id, expiry and scope instead of the token.
    #[arg(long)]
    json: bool,
}

impl Operation for IssueArgs {
    fn facts(&self) -> Facts {
        Facts::new("access_token.issue")
            .with("agent_id", &self.agent)
            .with_some("audience", self.audience.as_deref())
            .with_some("scope", self.scope.as_deref())
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let scopes = match &self.scope {
            Some(text) => Scope::parse_list(text).map_err(ServiceError::InvalidInput)?,
            None => Scope::ALL.to_vec(),
        };
        let audience = match &self.audience {
            Some(audience) => audience.clone(),
            None => {
                let base = installation.public_url()?;
                let audience = format!("{}mcp", base.as_deref().unwrap_or(DEFAULT_HUB_URL));
                // Said, because a token for another address is refused with 401.
                eprintln!(
                    "agentseal: access token for {audience} ({}; another hub URL: --audience)",
                    if base.is_some() {
                        "where the hub last ran"
                    } else {
                        "the hub has not run yet: its default address"
                    }
                );
                audience
            }
        };
        let issued = installation.issue_access_token(&self.agent, &audience, self.ttl, &scopes)?;
        tracing::info!(agent = %self.agent, jti = %issued.jti, "access token issued");
        Ok(if self.json {
            Outcome::Json(json!(issued))
        } else {
            Outcome::Text(issued.token)
        })
    }
}
