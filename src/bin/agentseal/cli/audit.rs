//! `agentseal audit ...`: verify and export the audit log. Reading the log is not recorded in
//! it: verifying never changes what it verifies.

use std::io::Write as _;

use agentseal::audit::AuditHead;
use agentseal::authority::{Installation, ServiceError};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Outcome;
use super::input::parse_head;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the whole audit log: every record's hash, signature by this CA, and place in the
    /// chain. Prints the record count and head; if any record was edited, deleted, inserted or
    /// reordered, names the first bad one and exits 1.
    Verify(VerifyArgs),
    /// Print audit records, one JSON object per line: the exact signed body, its hash, key id
    /// and signature (verifiable with the CA's JWKS), and the parsed record.
    Export(ExportArgs),
}

impl AuditCommand {
    pub fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        match self {
            AuditCommand::Verify(verify) => verify.run(installation),
            AuditCommand::Export(export) => export.run(installation),
        }
    }
}

/// `agentseal audit verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Also require the log to end at this head (SEQ:HASH, as printed by an earlier
    /// verify), to catch a database rolled back to an older state.
    #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head)]
    head: Option<AuditHead>,
}

impl VerifyArgs {
    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        Ok(match installation.verify_audit(self.head.clone())? {
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
        })
    }
}

/// `agentseal audit export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ExportFormat,
    /// First record to print.
    #[arg(long, default_value_t = 1, value_name = "SEQ")]
    from: i64,
    /// Only records whose actor is this agent id (or `operator`).
    #[arg(long)]
    actor: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// JSON Lines.
    Jsonl,
}

impl ExportArgs {
    /// Writes the records to stdout (`--format jsonl`, the only format).
    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let ExportFormat::Jsonl = self.format;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut failure = None;
        installation.audit_records(self.from, &mut |record| {
            let Ok(body) = record.parsed() else {
                // Not a record: exported as stored, for `audit verify` to explain.
                return write_line(&mut out, &json!(record), &mut failure);
            };
            if self.actor.as_ref().is_some_and(|a| *a != body.actor) {
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

/// Writes `line`; on failure keeps the error in `failure` and returns false (stop).
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
