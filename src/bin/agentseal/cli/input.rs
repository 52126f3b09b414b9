//! What several commands read the same way: value parsers for flags, action arguments, input
//! that may come from stdin, and the report of a failed verification.

use std::io::Read as _;

use agentseal::authority::{self, ServiceError};
use agentseal::reason::VerifyError;
use agentseal::token::trust::RevokedKind;
use clap::Args;
use serde_json::{Value, json};

/// Parses `KEY=VALUE` (`--arg`, `--meta`).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Parses a duration such as 30s, 5m or 90d into whole seconds (at least one).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}: use a duration such as 30s, 5m, 12h or 90d"))?;
    let seconds = i64::try_from(duration.as_secs()).map_err(|_| "duration too long".to_owned())?;
    if seconds == 0 {
        return Err("duration must be at least one second".to_owned());
    }
    Ok(seconds)
}

/// Parses an audit log head, `SEQ:HASH` as `audit verify` prints it.
pub fn parse_head(text: &str) -> Result<agentseal::audit::AuditHead, String> {
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

/// An action's arguments, as `--arg KEY=VALUE` pairs or one `--args-json` value.
#[derive(Args)]
pub struct ArgsInput {
    /// An action argument, repeatable: --arg repo=acme/web (values parse as JSON when they can).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    arg: Vec<(String, String)>,
    /// All arguments as one JSON value (instead of --arg).
    #[arg(long, value_name = "JSON", conflicts_with = "arg")]
    args_json: Option<String>,
}

impl ArgsInput {
    /// Whether any argument was given.
    pub fn given(&self) -> bool {
        !self.arg.is_empty() || self.args_json.is_some()
    }

    /// The arguments as one JSON value (an object for `--arg`).
    pub fn value(&self) -> Result<Value, ServiceError> {
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

/// What a revocation lookup is about.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    Token,
    Certificate,
}

impl KindArg {
    /// The name an audit record keeps.
    pub fn name(self) -> &'static str {
        match self {
            KindArg::Token => "token",
            KindArg::Certificate => "certificate",
        }
    }

    /// The kind as the core names it.
    pub fn revoked_kind(self) -> RevokedKind {
        match self {
            KindArg::Token => RevokedKind::Token,
            KindArg::Certificate => RevokedKind::Certificate,
        }
    }
}

/// `text` itself, or for "-" what stdin holds (at most 1 MiB, trimmed).
pub fn read_input(text: &str) -> Result<String, ServiceError> {
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

/// The report of a failed verification (printed, and exit code 1).
pub fn rejection(error: &VerifyError) -> Value {
    json!({ "valid": false, "reasons": [error.code()], "message": error.to_string() })
}
