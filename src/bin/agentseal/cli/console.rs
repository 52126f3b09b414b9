//! `agentseal console login`: a one-time link into the hub's operator console.

use agentseal::authority::{Installation, LOGIN_TTL, ServiceError};
use clap::{Args, Subcommand};

use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum ConsoleCommand {
    /// Print a one-time login link to the hub's operator console (/console), valid for ten
    /// minutes: whoever opens it first signs in as the operator.
    Login(LoginArgs),
}

impl ConsoleCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            ConsoleCommand::Login(login) => login,
        }
    }
}

/// `agentseal console login`.
#[derive(Args)]
pub struct LoginArgs {
    /// The hub's URL [default: the URL the hub last ran at].
    #[arg(long, value_name = "URL")]
    hub: Option<String>,
}

impl Operation for LoginArgs {
    fn facts(&self) -> Facts {
        Facts::new("console.login_link")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let base = match &self.hub {
            Some(url) => url.clone(),
            None => installation
                .public_url()?
                .unwrap_or_else(|| "http://127.0.0.1:7777/".into()),
        };
        let (secret, _) = installation.console_login(&super::operator_name())?;
        eprintln!(
            "agentseal: open this link within {} minutes; it signs in once",
            LOGIN_TTL / 60
        );
        Ok(Outcome::Text(format!(
            "{}/console/login?token={secret}",
            base.trim_end_matches('/')
        )))
    }
}
