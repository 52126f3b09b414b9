//! The operator's command line: parse flags, call one core operation, print the result.
//!
//! Results go to stdout as JSON (one object, or a bare token for `token sign`, `crl`), so scripts
//! can use them; logs and messages go to stderr. Exit codes: 0 success, 1 a verification said
//! "not valid", 2 a usage or operational error.
//!
//! One module per command group carries the group's flags, what it runs and the facts its audit
//! record keeps, side by side (see [`Operation`]); this module parses, dispatches and prints.

mod access_token;
mod agent;
mod approvals;
mod audit;
mod backup;
mod ca;
mod cert;
mod console;
mod delegate;
mod federation;
mod input;
mod install;
mod policy;
mod replica;
mod revoke;
mod serve;
mod signals;
mod token;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agentseal::audit::AuditEvent;
use agentseal::authority::{self, Installation, ServiceError};
use agentseal::keystore::KeyStoreKind;
use agentseal::store::Location;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

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
    /// The database: a `postgres://USER@HOST:PORT/DB` URL puts the installation's state in
    /// PostgreSQL, shared by several hubs (seeds sealed, see `agentseal replica`) [default:
    /// SQLite, agentseal.db in the data directory].
    #[arg(
        long,
        global = true,
        env = "AGENTSEAL_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database: Option<String>,
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
    /// Log line format: text, or json (one object per line, for log shippers; the hub's lines
    /// carry the request id).
    #[arg(
        long,
        global = true,
        env = "AGENTSEAL_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"],
        value_name = "FORMAT"
    )]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new installation: the CA's keys in the key store and the database.
    Init(install::InitArgs),
    /// Show the installation: CA id, key store, database.
    Status(install::StatusArgs),
    /// Serve one agent's identity as an MCP server on stdio (for Claude Desktop, Cursor, ...),
    /// or, with --http, every agent as an MCP hub over streamable HTTP. On stdio, stdout
    /// carries only the protocol; logs go to stderr.
    Serve(serve::ServeArgs),
    /// Issue access tokens for the HTTP hub.
    #[command(subcommand)]
    AccessToken(access_token::AccessTokenCommand),
    /// Manage agents.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Workload identity federation: trust a platform's tokens (Kubernetes, GitHub Actions,
    /// SPIFFE, cloud OIDC) for exchange at the hub's token endpoint.
    #[command(subcommand)]
    Federation(federation::FederationCommand),
    /// Out-of-band approvals: actions the policy wants a person to approve, for agents whose
    /// client cannot ask anyone.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Approve a waiting action (`approvals list`): the agent's next call with the approval's id
    /// gets its token, once.
    Approve(approvals::ApproveArgs),
    /// Deny a waiting action: the agent's next call with the approval's id is refused with
    /// `approval_denied` and the reason.
    Deny(approvals::DenyArgs),
    /// The hub's operator console (/console): sign in with a one-time link.
    #[command(subcommand)]
    Console(console::ConsoleCommand),
    /// Show, verify and renew certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Sign action tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Let one agent act for another (a signed delegation grant): prints the grant as JSON.
    /// Revoke it with `agentseal revoke token <grant_id>`.
    Delegate(delegate::DelegateArgs),
    /// Verify an action token; prints the verified claims, or the reason and exits 1.
    Verify(token::VerifyArgs),
    /// Revoke a token or a certificate (durable before the command returns).
    #[command(subcommand)]
    Revoke(revoke::RevokeCommand),
    /// Check whether a token or certificate is revoked.
    CheckRevocation(revoke::CheckRevocationArgs),
    /// Issue a signed revocation list (next number, valid until --validity from now).
    Crl(revoke::CrlArgs),
    /// Rotate the CA's keys and retire earlier ones.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Show the longest certificate lifetime and revocation list validity this CA issues (in
    /// seconds), or set them for what is issued from now on.
    Limits(install::LimitsArgs),
    /// Print the CA's public keys as a JWK Set: the trust anchor verifiers are configured with.
    Jwks(install::JwksArgs),
    /// Evaluate the policy for a sample request and explain the decision.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Check and export the tamper-evident audit log (every tool call and CLI operation).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Security signals: webhooks for rejected and revoked tokens, revoked certificates, rate
    /// limits and approval requests, and the rule that revokes an agent after repeated
    /// rejections.
    #[command(subcommand)]
    Signals(signals::SignalsCommand),
    /// Write every key the installation keeps in its key store (the CA's, the agents', the
    /// webhook secret) to FILE, encrypted to a passphrase or an age recipient: keyutils keys do
    /// not survive a reboot, and no key can be recovered without a backup.
    Backup(backup::BackupArgs),
    /// Put the keys of a backup back into the key store (after a reboot, or on a new machine with
    /// the database): checked against the public keys the database records before any is written.
    Restore(backup::RestoreArgs),
    /// Replicas of an installation on a shared database (--database postgres://...): export
    /// this replica's key-encryption key, join a new replica with it.
    #[command(subcommand)]
    Replica(replica::ReplicaCommand),
    /// Delete this installation: all its keys from the key store, and its database. Irreversible.
    Destroy(install::DestroyArgs),
}

impl Command {
    /// The command as an [`Operation`], for every command but those `execute` handles itself
    /// (init, serve, audit, destroy).
    fn operation(&self) -> Option<&dyn Operation> {
        Some(match self {
            Command::Init(_) | Command::Serve(_) | Command::Audit(_) | Command::Destroy(_) => {
                return None;
            }
            Command::Status(status) => status,
            Command::AccessToken(command) => command.operation(),
            Command::Agent(command) => command.operation(),
            Command::Approvals(command) => command.operation(),
            Command::Approve(approve) => approve,
            Command::Console(command) => command.operation(),
            Command::Deny(deny) => deny,
            Command::Federation(command) => command.operation(),
            Command::Cert(command) => command.operation(),
            Command::Token(command) => command.operation(),
            Command::Delegate(delegate) => delegate,
            Command::Verify(verify) => verify,
            Command::Revoke(command) => command.operation(),
            Command::CheckRevocation(check) => check,
            Command::Crl(crl) => crl,
            Command::Limits(limits) => limits,
            Command::Ca(command) => command.operation(),
            Command::Backup(backup) => backup,
            Command::Restore(restore) => restore,
            Command::Replica(command) => command.operation(),
            Command::Jwks(jwks) => jwks,
            Command::Policy(command) => command.operation(),
            Command::Signals(command) => command.operation(),
        })
    }
}

/// A command that runs against an open installation and leaves one audit record.
trait Operation {
    /// The audit record's operation name and request facts.
    fn facts(&self) -> Facts;
    /// Runs the command.
    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError>;
}

/// What the audit record of a command keeps of its request: the operation's name (without the
/// `cli.` prefix) and facts such as ids, actions and audiences; never tokens or action
/// arguments as given (the record keeps only the ids they name, see `audit_event`).
struct Facts {
    operation: &'static str,
    request: Map<String, Value>,
}

impl Facts {
    fn new(operation: &'static str) -> Self {
        Facts {
            operation,
            request: Map::new(),
        }
    }

    /// Adds the fact `key`.
    fn with(self, key: &str, value: &str) -> Self {
        self.with_some(key, Some(value))
    }

    /// Adds the fact `key` if there is a value.
    fn with_some(mut self, key: &str, value: Option<&str>) -> Self {
        if let Some(value) = value {
            self.request
                .insert(key.to_owned(), Value::String(value.to_owned()));
        }
        self
    }

    /// The event recording the command by the operator, and its `result`.
    fn event(&self, result: Result<&Value, &str>) -> AuditEvent {
        let mut details = Map::new();
        details.insert("transport".into(), "cli".into());
        if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("USERNAME")) {
            details.insert(
                "os_user".into(),
                user.chars().take(64).collect::<String>().into(),
            );
        }
        let operation = format!("cli.{}", self.operation);
        crate::audit_event::event("operator", &operation, &self.request, result, details)
    }

    /// Appends the record of the command to the audit log.
    fn record(
        &self,
        installation: &Installation,
        result: Result<&Value, &str>,
    ) -> Result<(), ServiceError> {
        installation.audit(&self.event(result)).map(drop)
    }
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
    init_logging(&cli.global.log, &cli.global.log_format);
    let (code, output) = match execute(cli) {
        Ok(Outcome::Json(value)) => (0, Some(pretty(&value))),
        Ok(Outcome::Text(text)) => (0, Some(text)),
        Ok(Outcome::Invalid(value)) => (1, Some(pretty(&value))),
        Ok(Outcome::Quiet) => (0, None),
        Err(error) => {
            // Nothing more can be said if stderr is gone too: the exit code still tells.
            let _ = writeln!(std::io::stderr(), "error: {error}");
            return ExitCode::from(2);
        }
    };
    // A closed pipe or a full disk is an error like any other (exit 2), not a panic: the
    // operation is done (a revocation committed, say), so say that rather than leave the caller
    // guessing.
    let mut stdout = std::io::stdout().lock();
    if let Some(output) = output
        && let Err(error) = writeln!(stdout, "{output}").and_then(|()| stdout.flush())
    {
        let _ = writeln!(
            std::io::stderr(),
            "error: the operation was done, but its output could not be written: {error}"
        );
        return ExitCode::from(2);
    }
    ExitCode::from(code)
}

/// The person at this terminal, as approvals and console sessions record them.
fn operator_name() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("USERNAME")) {
        Ok(user) => format!("operator ({})", user.chars().take(64).collect::<String>()),
        Err(_) => "operator".into(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value always serializes")
}

fn init_logging(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        // Span fields (the request id) are flattened into each line's `span` object.
        logger
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logger
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
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

/// The database `--database` names, or SQLite in the data directory.
fn database(global: &Global, dir: &Path) -> Result<Location, ServiceError> {
    match &global.database {
        Some(url) => Ok(Location::parse(url)?),
        None => Ok(authority::sqlite_in(dir)),
    }
}

fn execute(cli: Cli) -> Result<Outcome, ServiceError> {
    let dir = data_dir(&cli.global)?;
    let db = database(&cli.global, &dir)?;
    let key_store = cli.global.key_store;
    if let Command::Init(init) = &cli.command {
        return init.run(&dir, &db, key_store);
    }
    // The hub is the main job: on a fresh machine it starts on embedded defaults.
    // Not on a shared database: hubs starting together must not each make an installation.
    let create = matches!(&cli.command, Command::Serve(serve) if serve.starts_hub())
        && matches!(db, Location::Sqlite(_));
    let installation = install::open(&dir, &db, key_store, create)?;
    tracing::debug!(key_store = %installation.info().key_store, "installation opened");
    if let Some(path) = &cli.global.policy {
        installation.use_policy_file(path)?;
    }
    match cli.command {
        Command::Serve(serve) => {
            serve.check_keys(&installation)?;
            serve.facts().record(&installation, Ok(&Value::Null))?;
            serve.run(installation)
        }
        // Reading the log is not recorded in it: verifying never changes what it verifies.
        Command::Audit(command) => command.run(&installation),
        // Not recorded: the log goes with the installation.
        Command::Destroy(destroy) => destroy.run(installation, &dir),
        command => match command.operation() {
            Some(operation) => release(&installation, operation),
            None => unreachable!("init is handled above"),
        },
    }
}

/// Runs `operation` and releases its outcome once the audit log records it: a success that
/// cannot be recorded is withheld (`audit_withheld`).
fn release(
    installation: &Installation,
    operation: &dyn Operation,
) -> Result<Outcome, ServiceError> {
    let facts = operation.facts();
    let outcome = operation.run(installation);
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
    let event = facts.event(result);
    Ok(installation.release(&event, outcome)?)
}
