//! The operator's command line: parse flags, call one core operation, print the result.
//!
//! Results go to stdout as JSON (one object, or a bare token for `token sign`, `crl`), so scripts
//! can use them; logs and messages go to stderr. Exit codes: 0 success, 1 a verification said
//! "not valid", 2 a usage or operational error.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use agentseal::authority::{
    self, Approval, AutoRevokeRule, InitOptions, Installation, KeyChoice, ServiceError,
};
use agentseal::jose::EdAlgName;
use agentseal::keystore::KeyStoreKind;
use agentseal::reason::VerifyError;
use agentseal::signals::WebhookSecret;
use agentseal::token::access::Scope;
use agentseal::token::action::{ActionRequest, Expectations};
use agentseal::token::delegation::GrantRequest;
use agentseal::token::trust::RevokedKind;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

/// Cryptographic identity for AI agents: a private CA, agent certificates, signed action
/// tokens and revocation. Keys stay in the OS keyring.
#[derive(Parser)]
#[command(name = "agentseal", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Data directory holding the database [default: the platform data dir, e.g.
    /// ~/.local/share/agentseal].
    #[arg(long, global = true, env = "AGENTSEAL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where secret keys live: auto, keychain, windows, secret-service, keyutils or file.
    /// `auto` picks the platform keyring (and, once initialized, the store recorded at init).
    #[arg(
        long,
        global = true,
        env = "AGENTSEAL_KEY_STORE",
        default_value = "auto",
        value_name = "KIND"
    )]
    key_store: KeyStoreKind,
    /// The policy file (Rego) [default: policy.rego in the data directory if it exists, else
    /// the built-in default policy]. Reloaded when it changes.
    #[arg(long, global = true, env = "AGENTSEAL_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Log filter for stderr (error, warn, info, debug, trace, or a tracing directive).
    #[arg(
        long,
        global = true,
        env = "AGENTSEAL_LOG",
        default_value = "warn",
        value_name = "FILTER"
    )]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new installation: the CA's keys in the key store and the database.
    Init {
        /// The CA id written into every certificate's `iss` [default: urn:agentseal:ca:<random>].
        #[arg(long)]
        ca_id: Option<String>,
        /// The CA's keys.
        #[arg(
            long,
            default_value = "hybrid",
            value_name = "ed25519|ml-dsa-65|hybrid"
        )]
        alg: KeyChoice,
    },
    /// Show the installation: CA id, key store, database.
    Status,
    /// Serve one agent's identity as an MCP server on stdio (for Claude Desktop, Cursor, ...),
    /// or, with --http, every agent as an MCP hub over streamable HTTP. On stdio, stdout
    /// carries only the protocol; logs go to stderr.
    Serve {
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
    },
    /// Issue access tokens for the HTTP hub.
    #[command(subcommand)]
    AccessToken(AccessTokenCommand),
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Show, verify and renew certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Sign action tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Let one agent act for another (a signed delegation grant): prints the grant as JSON.
    /// Revoke it with `agentseal revoke token <grant_id>`.
    Delegate {
        /// The delegating agent.
        #[arg(long)]
        from: String,
        /// The delegate.
        #[arg(long)]
        to: String,
        /// An action the delegate may authorize (repeatable; "*" for all).
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// An audience the delegate may address (repeatable; default: any).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Space-separated scopes the delegate may use.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime, e.g. 1h (default), at most 1 day.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        ttl: i64,
        /// Pass on a delegation --from holds: the principal it acts for.
        #[arg(long, value_name = "PRINCIPAL")]
        on_behalf_of: Option<String>,
    },
    /// Verify an action token; prints the verified claims, or the reason and exits 1.
    Verify {
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
    },
    /// Revoke a token or a certificate (durable before the command returns).
    #[command(subcommand)]
    Revoke(RevokeCommand),
    /// Check whether a token or certificate is revoked.
    CheckRevocation {
        /// What to look up.
        #[arg(value_name = "token|certificate")]
        kind: KindArg,
        /// The token or its jti; the certificate, its serial, or the agent id.
        #[arg(allow_hyphen_values = true)]
        subject: String,
    },
    /// Issue a signed revocation list (next number, valid until --validity from now).
    Crl {
        /// How long until the list's `next_update`, e.g. 1h, 30m.
        #[arg(long, value_parser = parse_duration)]
        validity: Option<i64>,
    },
    /// Print the CA's public keys as a JWK Set: the trust anchor verifiers are configured with.
    Jwks {
        /// Also list every agent's current keys. Never use that set as a trust anchor: any
        /// agent could then sign certificates.
        #[arg(long)]
        with_agents: bool,
    },
    /// Evaluate the policy for a sample request and explain the decision.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check and export the tamper-evident audit log (every tool call and CLI operation).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Security signals: webhooks for rejected and revoked tokens, revoked certificates, rate
    /// limits and approval requests, and the rule that revokes an agent after repeated
    /// rejections.
    #[command(subcommand)]
    Signals(SignalsCommand),
    /// Delete this installation: all its keys from the key store, and its database. Irreversible.
    Destroy {
        /// The installation's CA id (see `agentseal status`), to confirm.
        #[arg(long, value_name = "CA_ID")]
        confirm: String,
    },
}

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
}

#[derive(Subcommand)]
enum AccessTokenCommand {
    /// Issue a bearer access token (RFC 9068 at+jwt) that lets its holder act as one agent on
    /// the hub. Prints the token on stdout. Revoke it with `agentseal revoke token`.
    Issue {
        /// The agent the token acts as.
        #[arg(long)]
        agent: String,
        /// Lifetime, e.g. 1h (default), 15m; at most 1 day.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
        /// The hub's MCP URL, the token's audience.
        #[arg(long, default_value = "http://127.0.0.1:7777/mcp")]
        audience: String,
        /// Space-separated scopes: agentseal:sign agentseal:verify agentseal:revoke (default: all).
        #[arg(long)]
        scope: Option<String>,
        /// Print a JSON object with the token, its id, expiry and scope instead of the token.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// What the policy decides if --agent asks to sign --action for --aud: allowed or denied
    /// and why, the lifetime it caps to, the rate limit, whether a person must approve. Exits 1
    /// when denied. Counts nothing against rate limits.
    Check {
        /// The agent asking.
        #[arg(long)]
        agent: String,
        /// The action.
        #[arg(long)]
        action: String,
        /// The audience.
        #[arg(long)]
        aud: String,
        /// Requested lifetime, e.g. 5m (default).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
        /// Requested scopes.
        #[arg(long)]
        scope: Option<String>,
        /// For whom the agent acts.
        #[arg(long, value_name = "PRINCIPAL")]
        on_behalf_of: Option<String>,
        /// Evaluate this policy file (a draft) instead of the one in force.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print the built-in default policy (a starting point for your own).
    Default,
}

#[derive(Subcommand)]
enum SignalsCommand {
    /// The webhook, the outbox (webhooks waiting, given up on) and the auto-revoke rule.
    Status,
    /// Try the webhooks given up on again (each keeps its webhook-id).
    Retry,
    /// Send signals to URL as Standard Webhooks, signed with the secret in
    /// AGENTSEAL_WEBHOOK_SECRET (whsec_..., 32 bytes) or, without it, a new one printed once.
    /// Servers running now pick the change up within seconds.
    Webhook {
        /// The receiver's endpoint (http:// or https://).
        #[arg(required_unless_present = "remove", conflicts_with = "remove")]
        url: Option<String>,
        /// Stop sending webhooks and delete the secret.
        #[arg(long)]
        remove: bool,
    },
    /// Revoke an agent's certificates once --after of its own requests are refused (policy
    /// denial, rate limit, beyond its delegation) or its own tokens are rejected for what it
    /// wrote in them, within --within; signalled as agent.auto_revoked.
    AutoRevoke {
        /// Rejections that trigger the revocation.
        #[arg(long, required_unless_present = "off", conflicts_with = "off")]
        after: Option<u32>,
        /// The window they are counted in, e.g. 10m.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        within: i64,
        /// Turn the rule off.
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the whole audit log: every record's hash, signature by this CA, and place in the
    /// chain. Prints the record count and head; if any record was edited, deleted, inserted or
    /// reordered, names the first bad one and exits 1.
    Verify {
        /// Also require the log to end at this head (SEQ:HASH, as printed by an earlier
        /// verify), to catch a database rolled back to an older state.
        #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head)]
        head: Option<agentseal::audit::AuditHead>,
    },
    /// Print audit records, one JSON object per line: the exact signed body, its hash, key id
    /// and signature (verifiable with the CA's JWKS), and the parsed record.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// First record to print.
        #[arg(long, default_value_t = 1, value_name = "SEQ")]
        from: i64,
        /// Only records whose actor is this agent id (or `operator`).
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// JSON Lines.
    Jsonl,
}

fn parse_head(text: &str) -> Result<agentseal::audit::AuditHead, String> {
    text.split_once(':')
        .and_then(|(seq, hash)| {
            let seq = seq.parse().ok()?;
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
                agentseal::audit::AuditHead {
                    seq,
                    hash: hash.to_ascii_lowercase(),
                }
            })
        })
        .ok_or_else(|| "expected SEQ:HASH, e.g. 42:3f1c… (64 hex digits)".to_owned())
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Token,
    Certificate,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Create an agent: make its keys in the key store and issue its certificate.
    Create {
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
    },
    /// List agents.
    List,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Print an agent's current certificate (by agent id or serial) and its claims.
    Show {
        /// Agent id or certificate serial.
        #[arg(allow_hyphen_values = true)]
        agent_or_serial: String,
    },
    /// Verify a certificate against this CA (and its proof of possession, if given); exits 1 if
    /// it is not valid.
    Verify {
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
    },
    /// Present an agent's certificate, with a proof of possession over a peer's challenge.
    Present {
        /// The presenting agent.
        #[arg(long)]
        agent: String,
        /// The peer's fresh challenge (16-256 printable characters).
        #[arg(long, requires = "aud")]
        challenge: Option<String>,
        /// The peer the proof is for.
        #[arg(long)]
        aud: Option<String>,
    },
    /// Issue a fresh certificate for an agent's existing keys.
    Renew {
        /// The agent id.
        agent_id: String,
        /// Certificate lifetime, e.g. 90d.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Sign an action token as an agent; prints the token on stdout.
    Sign {
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
    },
}

#[derive(Args)]
struct ArgsInput {
    /// An action argument, repeatable: --arg repo=acme/web (values parse as JSON when they can).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    arg: Vec<(String, String)>,
    /// All arguments as one JSON value (instead of --arg).
    #[arg(long, value_name = "JSON", conflicts_with = "arg")]
    args_json: Option<String>,
}

impl ArgsInput {
    fn given(&self) -> bool {
        !self.arg.is_empty() || self.args_json.is_some()
    }

    fn value(&self) -> Result<Value, ServiceError> {
        if let Some(text) = &self.args_json {
            return authority::parse_args_json(text);
        }
        let mut map = serde_json::Map::new();
        for (key, value) in &self.arg {
            let value =
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.clone()));
            if map.insert(key.clone(), value).is_some() {
                return Err(ServiceError::InvalidInput(format!(
                    "argument {key:?} given twice"
                )));
            }
        }
        Ok(Value::Object(map))
    }
}

#[derive(Subcommand)]
enum RevokeCommand {
    /// Revoke an action token.
    Token {
        /// The token, or its jti.
        #[arg(allow_hyphen_values = true)]
        token_or_jti: String,
        /// Why (recorded and published in the revocation list).
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Revoke a certificate by serial, or every certificate of an agent by agent id.
    Cert {
        /// Certificate serial or agent id.
        #[arg(allow_hyphen_values = true)]
        serial_or_agent: String,
        /// Why.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn parse_duration(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}: use a duration such as 30s, 5m, 12h or 90d"))?;
    let seconds = i64::try_from(duration.as_secs()).map_err(|_| "duration too long".to_owned())?;
    if seconds == 0 {
        return Err("duration must be at least one second".to_owned());
    }
    Ok(seconds)
}

/// The outcome of a command: print this JSON (or text) and exit with this code.
enum Outcome {
    Json(Value),
    Text(String),
    Invalid(Value),
    /// Nothing to print (stdout belonged to a protocol).
    Quiet,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global.log);
    match execute(cli) {
        Ok(Outcome::Json(value)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).expect("JSON prints")
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::Text(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Invalid(value)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).expect("JSON prints")
            );
            ExitCode::from(1)
        }
        Ok(Outcome::Quiet) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn data_dir(global: &Global) -> Result<PathBuf, ServiceError> {
    global
        .data_dir
        .clone()
        .or_else(authority::default_data_dir)
        .ok_or_else(|| {
            ServiceError::InvalidInput(
                "no data directory: pass --data-dir or set AGENTSEAL_DATA_DIR".into(),
            )
        })
}

fn read_input(text: &str) -> Result<String, ServiceError> {
    if text != "-" {
        return Ok(text.to_owned());
    }
    let mut buffer = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut buffer)
        .map_err(|e| ServiceError::InvalidInput(format!("cannot read stdin: {e}")))?;
    Ok(buffer.trim().to_owned())
}

fn hub_trust(
    url: Option<&str>,
    grace: i64,
) -> Result<Option<std::sync::Arc<agentseal::verify::remote::HubTrust>>, ServiceError> {
    url.map(|url| {
        agentseal::verify::remote::HubTrust::new(url, grace)
            .map(std::sync::Arc::new)
            .map_err(|e| ServiceError::InvalidInput(e.to_string()))
    })
    .transpose()
}

fn rejection(error: &VerifyError) -> Value {
    json!({ "valid": false, "reasons": [error.code()], "message": error.to_string() })
}

fn execute(cli: Cli) -> Result<Outcome, ServiceError> {
    let dir = data_dir(&cli.global)?;
    if let Command::Init { ca_id, alg } = &cli.command {
        let options = InitOptions {
            ca_id: ca_id.clone(),
            keys: *alg,
        };
        let installation = match Installation::init(&dir, cli.global.key_store, &options) {
            Err(ServiceError::AlreadyInitialized(_)) => {
                // Re-running init is harmless: report the existing installation, change nothing.
                let existing = Installation::open(&dir, cli.global.key_store)?;
                eprintln!(
                    "agentseal: {} already holds an installation; nothing changed",
                    dir.display()
                );
                return Ok(Outcome::Json(json!(existing.info())));
            }
            other => other?,
        };
        let info = installation.info();
        eprintln!(
            "agentseal: CA {} created; keys in the {} key store",
            info.ca_id, info.key_store
        );
        if let Some(caveat) = &info.caveat {
            eprintln!("warning: {caveat}");
        }
        tracing::info!(ca_id = %info.ca_id, key_store = %info.key_store, "installation created");
        let (operation, request) = audit_request(&cli.command);
        let info = json!(info);
        record(&installation, &operation, request, Ok(&info))?;
        return Ok(Outcome::Json(info));
    }
    let installation = match Installation::open(&dir, cli.global.key_store) {
        // The hub is the main job: on a fresh machine it starts on embedded defaults.
        Err(ServiceError::NotInitialized(_)) if matches!(&cli.command, Command::Serve { http, .. } if http.http.is_some()) =>
        {
            let installation =
                Installation::init(&dir, cli.global.key_store, &InitOptions::default())?;
            let info = installation.info();
            eprintln!(
                "agentseal: new installation in {}: CA {}, keys in the {} key store",
                dir.display(),
                info.ca_id,
                info.key_store
            );
            if let Some(caveat) = &info.caveat {
                eprintln!("warning: {caveat}");
            }
            installation
        }
        other => other?,
    };
    tracing::debug!(key_store = %installation.info().key_store, "installation opened");
    if let Some(path) = &cli.global.policy {
        installation.use_policy_file(path)?;
    }
    match cli.command {
        Command::Init { .. } => unreachable!("handled above"),
        Command::Serve { .. } => {
            let (operation, request) = audit_request(&cli.command);
            record(&installation, &operation, request, Ok(&Value::Null))?;
            serve(installation, cli.command)
        }
        // Reading the log is not recorded in it: verifying never changes what it verifies.
        Command::Audit(command) => audit(&installation, command),
        Command::Destroy { confirm } => {
            if confirm != installation.trust_anchor().ca_id {
                return Err(ServiceError::InvalidInput(format!(
                    "--confirm must be this installation's CA id, {}",
                    installation.trust_anchor().ca_id
                )));
            }
            let deleted = installation.destroy()?;
            Ok(Outcome::Json(
                json!({ "destroyed": dir, "keys_deleted": deleted }),
            ))
        }
        command => {
            let (operation, request) = audit_request(&command);
            let outcome = operate(&installation, command);
            // A bare token printed is recorded by its id, like any token.
            let printed = match &outcome {
                Ok(Outcome::Text(text)) => json!({ "token": text }),
                _ => Value::Null,
            };
            let result = match &outcome {
                Ok(Outcome::Json(value) | Outcome::Invalid(value)) => Ok(value),
                Ok(_) => Ok(&printed),
                Err(error) => Err(error.code()),
            };
            match (record(&installation, &operation, request, result), outcome) {
                (Ok(()), outcome) => outcome,
                (Err(error), Ok(_)) => Err(ServiceError::InvalidInput(format!(
                    "the operation was done but the audit log could not record it ({error}); its output is withheld"
                ))),
                (Err(error), Err(original)) => {
                    eprintln!("warning: the audit log could not record this failure: {error}");
                    Err(original)
                }
            }
        }
    }
}

/// Runs `serve` (stdio or HTTP) until it ends.
fn serve(installation: Installation, command: Command) -> Result<Outcome, ServiceError> {
    // A policy file that does not compile stops the server here, not at the first request.
    installation.policy()?;
    match command {
        Command::Serve {
            agent,
            http:
                HttpArgs {
                    http: Some(addr),
                    public_url,
                    allow_origin,
                    insecure_no_auth,
                    crl_validity,
                    max_body,
                },
            trust_hub,
            trust_grace,
        } => {
            let mut options = crate::http::HubOptions::new(addr);
            options.trust = hub_trust(trust_hub.as_deref(), trust_grace)?;
            options.public_url = public_url;
            options.allowed_origins = allow_origin;
            options.insecure_agent = if insecure_no_auth { agent } else { None };
            options.crl_validity = crl_validity;
            options.max_body = max_body;
            crate::http::serve_http(installation, options)?;
            Ok(Outcome::Quiet)
        }
        Command::Serve {
            agent,
            http: _,
            trust_hub,
            trust_grace,
        } => {
            let agent = match agent {
                Some(agent) => agent,
                None => {
                    let agents = installation.agents()?;
                    match agents.as_slice() {
                        [only] => only.agent_id.clone(),
                        _ => {
                            return Err(ServiceError::InvalidInput(format!(
                                "choose the agent to serve with --agent (or AGENTSEAL_AGENT): {}",
                                if agents.is_empty() {
                                    "no agents yet; create one with `agentseal agent create`"
                                        .to_owned()
                                } else {
                                    agents
                                        .iter()
                                        .map(|a| a.agent_id.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                }
                            )));
                        }
                    }
                }
            };
            let trust = hub_trust(trust_hub.as_deref(), trust_grace)?;
            crate::mcp::serve_stdio(installation, agent, trust)?;
            Ok(Outcome::Quiet)
        }
        _ => unreachable!("only serve commands"),
    }
}

/// Runs one operation that leaves the installation in place.
fn operate(installation: &Installation, command: Command) -> Result<Outcome, ServiceError> {
    match command {
        Command::Status => Ok(Outcome::Json(json!(installation.info()))),
        Command::Agent(AgentCommand::Create {
            agent_id,
            alg,
            meta,
            ttl,
        }) => {
            let meta: BTreeMap<String, String> = meta.into_iter().collect();
            let certificate = installation.create_agent(&agent_id, alg, meta, ttl)?;
            tracing::info!(agent = %agent_id, serial = %certificate.claims.jti, "agent created");
            Ok(Outcome::Json(json!({
                "agent_id": agent_id,
                "serial": certificate.claims.jti,
                "expires_at": certificate.claims.exp,
                "key_ids": certificate.keys.iter().map(agentseal::jose::thumbprint).collect::<Vec<_>>(),
                "certificate": certificate.encoded,
            })))
        }
        Command::AccessToken(AccessTokenCommand::Issue {
            agent,
            ttl,
            audience,
            scope,
            json,
        }) => {
            let scopes = match scope {
                Some(text) => Scope::parse_list(&text).map_err(ServiceError::InvalidInput)?,
                None => Scope::ALL.to_vec(),
            };
            let issued = installation.issue_access_token(&agent, &audience, ttl, &scopes)?;
            tracing::info!(agent = %agent, jti = %issued.jti, "access token issued");
            Ok(if json {
                Outcome::Json(json!(issued))
            } else {
                Outcome::Text(issued.token)
            })
        }
        Command::Agent(AgentCommand::List) => Ok(Outcome::Json(json!(installation.agents()?))),
        Command::Cert(CertCommand::Show { agent_or_serial }) => {
            let encoded = installation.find_certificate(&agent_or_serial)?;
            let (_, claims, _) =
                agentseal::token::certificate::AgentCertificate::parse_unverified(&encoded)
                    .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
            Ok(Outcome::Json(
                json!({ "claims": claims, "certificate": encoded }),
            ))
        }
        Command::Cert(CertCommand::Verify {
            certificate,
            proof,
            challenge,
            aud,
        }) => {
            let input = read_input(&certificate)?;
            let encoded = match installation.find_certificate(&input) {
                Ok(found) => found,
                Err(_) => input,
            };
            let verifier = installation.verifier();
            let now = agentseal::clock::now();
            let outcome = match (proof, challenge, aud) {
                (Some(proof), Some(challenge), Some(aud)) => verifier
                    .verify_presentation(&encoded, &proof, &challenge, &aud, now)
                    .map(|(cert, proof)| json!({ "valid": true, "claims": cert.claims, "proof": proof })),
                _ => verifier
                    .verify_certificate(&encoded, now)
                    .map(|cert| json!({ "valid": true, "claims": cert.claims })),
            };
            Ok(match outcome {
                Ok(value) => Outcome::Json(value),
                Err(error) => Outcome::Invalid(rejection(&error)),
            })
        }
        Command::Cert(CertCommand::Present {
            agent,
            challenge,
            aud,
        }) => {
            let audience = aud.unwrap_or_default();
            let presentation =
                installation.present_certificate(&agent, challenge.as_deref(), &audience)?;
            Ok(Outcome::Json(json!(presentation)))
        }
        Command::Cert(CertCommand::Renew { agent_id, ttl }) => {
            let certificate = installation.renew_certificate(&agent_id, ttl)?;
            Ok(Outcome::Json(json!({
                "agent_id": agent_id,
                "serial": certificate.claims.jti,
                "expires_at": certificate.claims.exp,
                "certificate": certificate.encoded,
            })))
        }
        Command::Token(TokenCommand::Sign {
            agent,
            action,
            aud,
            args,
            ttl,
            scope,
            ed_alg,
            json,
            on_behalf_of,
        }) => {
            let mut request = ActionRequest::new(action, aud, args.value()?);
            request.ttl = ttl.unwrap_or(request.ttl);
            request.scope = scope;
            request.ed_alg = if ed_alg == "Ed25519" {
                EdAlgName::Ed25519
            } else {
                EdAlgName::EdDsa
            };
            let signed = installation.sign_action_for(
                &agent,
                &request,
                on_behalf_of.as_deref(),
                Approval::Operator,
            )?;
            tracing::info!(agent = %agent, jti = %signed.jti, "action token signed");
            Ok(if json {
                Outcome::Json(json!(signed))
            } else {
                Outcome::Text(signed.token)
            })
        }
        Command::Delegate {
            from,
            to,
            actions,
            audiences,
            scope,
            ttl,
            on_behalf_of,
        } => {
            let request = GrantRequest {
                delegate: to,
                actions,
                audiences: (!audiences.is_empty()).then_some(audiences),
                scope,
                ttl,
            };
            Ok(Outcome::Json(json!(installation.delegate(
                &from,
                &request,
                on_behalf_of.as_deref()
            )?)))
        }
        Command::Verify {
            token,
            aud,
            action,
            args,
            any_audience: _,
        } => {
            let token = read_input(&token)?;
            let expect = Expectations {
                max_delegation_depth: None,
                audience: aud,
                action,
                args: if args.given() {
                    Some(args.value()?)
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
        Command::Revoke(RevokeCommand::Token {
            token_or_jti,
            reason,
        }) => {
            let entry = installation.revoke_token(&read_input(&token_or_jti)?, &reason)?;
            tracing::info!(jti = %entry.id, "token revoked");
            Ok(Outcome::Json(json!({ "revoked": "token", "entry": entry })))
        }
        Command::Revoke(RevokeCommand::Cert {
            serial_or_agent,
            reason,
        }) => {
            let entries = installation.revoke_certificate(&serial_or_agent, &reason)?;
            tracing::info!(count = entries.len(), "certificates revoked");
            Ok(Outcome::Json(
                json!({ "revoked": "certificate", "entries": entries }),
            ))
        }
        Command::CheckRevocation { kind, subject } => {
            let kind = match kind {
                KindArg::Token => RevokedKind::Token,
                KindArg::Certificate => RevokedKind::Certificate,
            };
            Ok(Outcome::Json(json!(
                installation.check_revocation(kind, &read_input(&subject)?)?
            )))
        }
        Command::Signals(command) => signals(installation, command),
        Command::Policy(PolicyCommand::Default) => Ok(Outcome::Text(
            agentseal::policy::DEFAULT_POLICY.trim_end().to_owned(),
        )),
        Command::Policy(PolicyCommand::Check {
            agent,
            action,
            aud,
            ttl,
            scope,
            on_behalf_of,
            file,
        }) => {
            let mut request = ActionRequest::new(action, aud, json!({}));
            request.ttl = ttl.unwrap_or(request.ttl);
            request.scope = scope;
            let input = installation.policy_input(&agent, &request, on_behalf_of.as_deref())?;
            let (policy, problem) = match file {
                Some(file) => (
                    std::sync::Arc::new(agentseal::policy::Policy::from_file(&file)?),
                    None,
                ),
                None => {
                    let source = installation.policy()?;
                    (source.current(), source.problem())
                }
            };
            let decision = policy.evaluate(&input)?;
            let outcome = match (decision.allow, decision.approval) {
                (false, _) => "denied",
                (true, true) => "allowed once a person approves",
                (true, false) => "allowed",
            };
            let mut report = json!({
                "policy": policy.name(),
                "outcome": outcome,
                "decision": decision,
                "ttl": decision.max_ttl.map_or(request.ttl, |max| request.ttl.min(max)),
                "input": input,
            });
            if let Some(problem) = problem {
                report["problem"] = json!(problem.to_string());
            }
            Ok(if decision.allow {
                Outcome::Json(report)
            } else {
                report["valid"] = json!(false);
                report["reasons"] = json!(["policy_denied"]);
                Outcome::Invalid(report)
            })
        }
        Command::Crl { validity } => Ok(Outcome::Text(installation.issue_crl(validity)?)),
        Command::Jwks { with_agents: false } => {
            Ok(Outcome::Json(json!(installation.trust_anchor().jwks())))
        }
        Command::Jwks { with_agents: true } => Ok(Outcome::Json(json!(installation.jwks()?))),
        Command::Init { .. }
        | Command::Serve { .. }
        | Command::Audit(_)
        | Command::Destroy { .. } => {
            unreachable!("handled by execute")
        }
    }
}

/// The operation name and the request facts an audit record of `command` keeps (ids, actions,
/// audiences; never tokens or action arguments as given).
fn audit_request(command: &Command) -> (String, serde_json::Map<String, Value>) {
    let mut request = serde_json::Map::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            request.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    };
    let operation = match command {
        Command::Init { ca_id, .. } => {
            put("id", ca_id.as_deref());
            "init"
        }
        Command::Status => "status",
        Command::Serve { agent, http, .. } => {
            put("agent_id", agent.as_deref());
            put(
                "transport",
                Some(if http.http.is_some() { "http" } else { "stdio" }),
            );
            "serve"
        }
        Command::AccessToken(AccessTokenCommand::Issue {
            agent,
            audience,
            scope,
            ..
        }) => {
            put("agent_id", Some(agent));
            put("audience", Some(audience));
            put("scope", scope.as_deref());
            "access_token.issue"
        }
        Command::Agent(AgentCommand::Create { agent_id, .. }) => {
            put("agent_id", Some(agent_id));
            "agent.create"
        }
        Command::Agent(AgentCommand::List) => "agent.list",
        Command::Cert(CertCommand::Show { agent_or_serial }) => {
            put("id", Some(agent_or_serial));
            "cert.show"
        }
        Command::Cert(CertCommand::Verify {
            certificate, aud, ..
        }) => {
            put("certificate", Some(certificate));
            put("audience", aud.as_deref());
            "cert.verify"
        }
        Command::Cert(CertCommand::Present { agent, aud, .. }) => {
            put("agent_id", Some(agent));
            put("audience", aud.as_deref());
            "cert.present"
        }
        Command::Cert(CertCommand::Renew { agent_id, .. }) => {
            put("agent_id", Some(agent_id));
            "cert.renew"
        }
        Command::Token(TokenCommand::Sign {
            agent,
            action,
            aud,
            on_behalf_of,
            ..
        }) => {
            put("agent_id", Some(agent));
            put("action", Some(action));
            put("audience", Some(aud));
            put("on_behalf_of", on_behalf_of.as_deref());
            "token.sign"
        }
        Command::Delegate {
            from,
            to,
            on_behalf_of,
            ..
        } => {
            put("agent_id", Some(from));
            put("delegate", Some(to));
            put("on_behalf_of", on_behalf_of.as_deref());
            "delegate"
        }
        Command::Verify {
            token, aud, action, ..
        } => {
            put("token", Some(token));
            put("audience", aud.as_deref());
            put("expected_action", action.as_deref());
            "verify"
        }
        Command::Revoke(RevokeCommand::Token {
            token_or_jti,
            reason,
        }) => {
            put("token", Some(token_or_jti));
            if agentseal::jose::Jws::parse(token_or_jti).is_err() && token_or_jti != "-" {
                put("token_id", Some(token_or_jti));
            }
            put("reason", Some(reason));
            "revoke.token"
        }
        Command::Revoke(RevokeCommand::Cert {
            serial_or_agent,
            reason,
        }) => {
            put("serial", Some(serial_or_agent));
            put("reason", Some(reason));
            "revoke.cert"
        }
        Command::CheckRevocation { kind, subject } => {
            put(
                "kind",
                Some(match kind {
                    KindArg::Token => "token",
                    KindArg::Certificate => "certificate",
                }),
            );
            put("id", Some(subject));
            "check_revocation"
        }
        Command::Policy(_) => "policy",
        Command::Crl { .. } => "crl",
        Command::Jwks { .. } => "jwks",
        Command::Audit(_) => "audit",
        Command::Signals(SignalsCommand::Status) => "signals.status",
        Command::Signals(SignalsCommand::Retry) => "signals.retry",
        Command::Signals(SignalsCommand::Webhook { url, remove }) => {
            // Only the host: some receivers take a credential in the path.
            let host = url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_owned));
            put("id", host.as_deref());
            if *remove {
                "signals.webhook.remove"
            } else {
                "signals.webhook.set"
            }
        }
        Command::Signals(SignalsCommand::AutoRevoke { off, .. }) => {
            if *off {
                "signals.auto_revoke.off"
            } else {
                "signals.auto_revoke.set"
            }
        }
        Command::Destroy { .. } => "destroy",
    };
    (format!("cli.{operation}"), request)
}

/// Appends the record of a CLI operation by the operator.
fn record(
    installation: &Installation,
    operation: &str,
    request: serde_json::Map<String, Value>,
    result: Result<&Value, &str>,
) -> Result<(), ServiceError> {
    let mut details = serde_json::Map::new();
    details.insert("transport".into(), "cli".into());
    if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("USERNAME")) {
        details.insert(
            "os_user".into(),
            user.chars().take(64).collect::<String>().into(),
        );
    }
    let event = crate::audit_event::event("operator", operation, &request, result, details);
    installation.audit(&event).map(drop)
}

/// Environment variable holding the secret `signals webhook` uses instead of making one.
const WEBHOOK_SECRET_ENV: &str = "AGENTSEAL_WEBHOOK_SECRET";

/// `agentseal signals ...`.
fn signals(installation: &Installation, command: SignalsCommand) -> Result<Outcome, ServiceError> {
    match command {
        SignalsCommand::Status => Ok(Outcome::Json(json!(installation.signals_status()?))),
        SignalsCommand::Retry => Ok(Outcome::Json(
            json!({ "requeued": installation.retry_signals()? }),
        )),
        SignalsCommand::Webhook { remove: true, .. } => {
            let removed = installation.remove_webhook()?;
            Ok(Outcome::Json(json!({ "webhook_removed": removed })))
        }
        SignalsCommand::Webhook { url, .. } => {
            let url = url.unwrap_or_default();
            let secret = match std::env::var(WEBHOOK_SECRET_ENV) {
                Ok(text) => Some(WebhookSecret::parse(text.trim()).map_err(|e| {
                    ServiceError::InvalidInput(format!("{WEBHOOK_SECRET_ENV}: {e}"))
                })?),
                Err(_) => None,
            };
            let set = installation.set_webhook(&url, secret)?;
            let mut report = json!({ "webhook_url": installation.signals_status()?.webhook_url });
            if let Some(secret) = &set.generated_secret {
                eprintln!(
                    "agentseal: give this secret to the receiver now; it is not shown again (it stays in the key store)"
                );
                report["secret"] = Value::String(secret.to_string());
            }
            Ok(Outcome::Json(report))
        }
        SignalsCommand::AutoRevoke { off: true, .. } => {
            installation.set_auto_revoke(None)?;
            Ok(Outcome::Json(json!({ "auto_revoke": null })))
        }
        SignalsCommand::AutoRevoke { after, within, .. } => {
            let rule = AutoRevokeRule {
                rejections: after.unwrap_or_default(),
                window_seconds: within,
            };
            installation.set_auto_revoke(Some(rule))?;
            Ok(Outcome::Json(json!({ "auto_revoke": rule })))
        }
    }
}

/// `agentseal audit ...`.
fn audit(installation: &Installation, command: AuditCommand) -> Result<Outcome, ServiceError> {
    match command {
        AuditCommand::Verify { head } => Ok(match installation.verify_audit(head)? {
            Ok(summary) => Outcome::Json(json!({
                "valid": true,
                "records": summary.records,
                "head": format!("{}:{}", summary.head.seq, summary.head.hash),
            })),
            Err(fault) => Outcome::Invalid(json!({
                "valid": false,
                "reasons": [fault.code()],
                "first_bad_record": fault.seq(),
                "message": fault.to_string(),
            })),
        }),
        AuditCommand::Export {
            format: ExportFormat::Jsonl,
            from,
            actor,
        } => {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut failure = None;
            installation.audit_records(from, &mut |record| {
                let Ok(body) = record.parsed() else {
                    // Not a record: exported as stored, for `audit verify` to explain.
                    return write_line(&mut out, &json!(record), &mut failure);
                };
                if actor.as_ref().is_some_and(|a| *a != body.actor) {
                    return true;
                }
                let mut line = json!(record);
                line["record"] = json!(body);
                write_line(&mut out, &line, &mut failure)
            })?;
            if failure.is_none()
                && let Err(e) = out.flush()
            {
                failure = Some(e);
            }
            match failure {
                // A closed pipe (`| head`) is the reader's choice, not an error.
                Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(
                    ServiceError::InvalidInput(format!("cannot write the export: {e}")),
                ),
                _ => Ok(Outcome::Quiet),
            }
        }
    }
}

fn write_line(
    out: &mut impl std::io::Write,
    line: &Value,
    failure: &mut Option<std::io::Error>,
) -> bool {
    match writeln!(out, "{line}") {
        Ok(()) => true,
        Err(e) => {
            *failure = Some(e);
            false
        }
    }
}
