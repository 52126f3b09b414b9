//! `agentseal serve`: one agent over MCP on stdio, or every agent as an MCP hub over HTTP.

use std::sync::Arc;

use agentseal::authority::{Installation, ServiceError};
use agentseal::store::SyncPolicy;
use agentseal::verify::remote::HubTrust;
use clap::Args;

use super::input::parse_duration;
use super::{Facts, Outcome};

/// `agentseal serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The agent to act as on stdio [default: the only agent, if there is exactly one].
    #[arg(long, env = "AGENTSEAL_AGENT")]
    agent: Option<String>,
    #[command(flatten)]
    http: HttpArgs,
    /// Also trust the CA of the hub at URL: verify_peer and check_revocation fetch its CA
    /// keys and revocation list, refresh them at the list's next_update, and fail closed
    /// (revocation_unavailable) once the list is older than --trust-grace.
    #[arg(long, value_name = "URL")]
    trust_hub: Option<String>,
    /// How long past its next_update a fetched revocation list is still used.
    #[arg(long, value_parser = parse_duration, default_value = "15m", requires = "trust_hub")]
    trust_grace: i64,
    /// When writes reach the disk. `grouped`: revocations and replay records are fsynced before
    /// they are acknowledged; audit records are safe from a crashed server when acknowledged
    /// and fsynced within 100 ms, many calls sharing one fsync (docs/durability.md).
    /// `every-write`: every write, audit records included, is fsynced before it is acknowledged
    /// (safe from a power cut too; slower).
    #[arg(
        long,
        env = "AGENTSEAL_DURABILITY",
        default_value = "grouped",
        value_name = "MODE"
    )]
    durability: SyncPolicy,
    /// Renew each served agent's certificate (same keys, same lifetime) once this share of its
    /// lifetime has passed, without interrupting calls; `whoami` shows when.
    #[arg(long, value_name = "SHARE", default_value_t = agentseal::authority::DEFAULT_RENEWAL_SHARE)]
    renew_at: f64,
    /// Do not renew certificates automatically.
    #[arg(long, conflicts_with = "renew_at")]
    no_renew: bool,
    /// How long an action a person must approve waits for an out-of-band decision (`agentseal
    /// approve`) when the agent's client cannot ask anyone, e.g. 15m (default), 1h; at most 1d.
    #[arg(long, value_parser = parse_duration)]
    approval_ttl: Option<i64>,
}

/// The HTTP hub's flags.
#[derive(Args)]
struct HttpArgs {
    /// Serve MCP over streamable HTTP at ADDR (/mcp), for every agent, each request
    /// authorized by an access token; also publishes /.well-known/jwks.json, /crl, /healthz.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7777")]
    http: Option<std::net::SocketAddr>,
    /// The URL clients reach the hub at [default: http://ADDR]. Access tokens must name
    /// <URL>/mcp as their audience.
    #[arg(long, value_name = "URL", requires = "http")]
    public_url: Option<String>,
    /// Also accept browser requests from this origin (repeatable), e.g. https://app.example.
    #[arg(long, value_name = "ORIGIN", requires = "http")]
    allow_origin: Vec<String>,
    /// Act as --agent for every request WITHOUT authorization: for local testing tools only.
    /// Refused unless ADDR is a loopback address.
    #[arg(long, requires_all = ["http", "agent"])]
    insecure_no_auth: bool,
    /// Validity of the published revocation list (its next_update), e.g. 1h, 5m.
    #[arg(long, value_parser = parse_duration, requires = "http")]
    crl_validity: Option<i64>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, requires = "http")]
    max_body: usize,
    /// How long a client may take to send a request's headers, or keep a connection idle
    /// between requests, e.g. 10s.
    #[arg(long, value_parser = parse_duration, requires = "http")]
    header_timeout: Option<i64>,
    /// Most connections open at once; further clients wait until one closes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), requires = "http")]
    max_connections: Option<u32>,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics, on a listener of
    /// their own [default ADDR: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464", requires = "http")]
    metrics: Option<std::net::SocketAddr>,
}

impl ServeArgs {
    /// Whether this serves the HTTP hub (which starts on a fresh machine too).
    pub fn starts_hub(&self) -> bool {
        self.http.http.is_some()
    }

    /// The audit record's operation and request facts (recorded before serving starts).
    pub fn facts(&self) -> Facts {
        Facts::new("serve")
            .with_some("agent_id", self.agent.as_deref())
            .with(
                "transport",
                if self.starts_hub() { "http" } else { "stdio" },
            )
            .with(
                "durability",
                match self.durability {
                    SyncPolicy::EveryWrite => "every-write",
                    _ => "grouped",
                },
            )
    }

    /// Stops a server before it starts (and before it records that it started) when the key
    /// store has lost keys it needs: every agent's for the hub, the served agent's on stdio,
    /// and the CA's. After a reboot of a keyutils machine that is all of them.
    pub fn check_keys(&self, installation: &Installation) -> Result<(), ServiceError> {
        match (&self.http.http, &self.agent) {
            (Some(_), _) => installation.check_keys(None),
            (None, Some(agent)) => installation.check_keys(Some(agent)),
            (None, None) => installation.check_keys(Some(&only_agent(installation)?)),
        }
    }

    /// Serves until the server ends.
    pub fn run(self, installation: Installation) -> Result<Outcome, ServiceError> {
        // A policy file that does not compile stops the server here, not at the first request.
        installation.policy()?;
        installation.store().set_sync_policy(self.durability);
        if !self.no_renew {
            installation.renew_automatically(self.renew_at)?;
        }
        if let Some(ttl) = self.approval_ttl
            && ttl > agentseal::authority::MAX_APPROVAL_TTL
        {
            return Err(ServiceError::InvalidInput(
                "--approval-ttl is at most 1 day".into(),
            ));
        }
        let http = self.http;
        match http.http {
            Some(addr) => {
                let mut options = crate::http::HubOptions::new(addr);
                options.trust = hub_trust(self.trust_hub.as_deref(), self.trust_grace)?;
                options.public_url = http.public_url;
                options.allowed_origins = http.allow_origin;
                options.insecure_agent = if http.insecure_no_auth {
                    self.agent
                } else {
                    None
                };
                // Refused now, not at the first request for the list.
                installation.limits()?.crl_validity(http.crl_validity)?;
                options.crl_validity = http.crl_validity;
                options.max_body = http.max_body;
                options.metrics = http.metrics;
                options.approval_ttl = self.approval_ttl;
                if let Some(seconds) = http.header_timeout {
                    options.limits.header_timeout =
                        std::time::Duration::from_secs(seconds.unsigned_abs());
                }
                if let Some(max) = http.max_connections {
                    options.limits.max_connections = max as usize;
                }
                crate::http::serve_http(installation, options)?;
            }
            None => {
                let agent = match self.agent {
                    Some(agent) => agent,
                    None => only_agent(&installation)?,
                };
                let trust = hub_trust(self.trust_hub.as_deref(), self.trust_grace)?;
                crate::mcp::serve_stdio(installation, agent, trust, self.approval_ttl)?;
            }
        }
        Ok(Outcome::Quiet)
    }
}

/// The agent to serve on stdio when --agent is not given: the only one there is.
fn only_agent(installation: &Installation) -> Result<String, ServiceError> {
    let agents = installation.agents()?;
    match agents.as_slice() {
        [only] => Ok(only.agent_id.clone()),
        _ => Err(ServiceError::InvalidInput(format!(
            "choose the agent to serve with --agent (or AGENTSEAL_AGENT): {}",
            if agents.is_empty() {
                "no agents yet; create one with `agentseal agent create`".to_owned()
            } else {
                agents
                    .iter()
                    .map(|a| a.agent_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
    }
}

/// The hub at `url` to trust as well, its revocation list used up to `grace` seconds late.
fn hub_trust(url: Option<&str>, grace: i64) -> Result<Option<Arc<HubTrust>>, ServiceError> {
    url.map(|url| {
        HubTrust::new(url, grace)
            .map(Arc::new)
            .map_err(|e| ServiceError::InvalidInput(e.to_string()))
    })
    .transpose()
}
