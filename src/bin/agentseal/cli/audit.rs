//! `agentseal audit ...`: verify, checkpoint, prove and export the audit log. Reading the log is
//! not recorded in it: verifying never changes what it verifies, and a checkpoint of a log that
//! grew by its own signing would be stale at once.

use std::io::Write as _;

use std::path::PathBuf;

use agentseal::audit::{AuditFault, AuditHead};
use agentseal::authority::{Installation, KeptState, ServiceError};
use agentseal::crypto::PublicKey;
use agentseal::jose::{Jwk, JwkSet};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Outcome;
use super::input::parse_head;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the whole audit log: every record's hash, signature by this CA, place in the
    /// chain and actor, and that the log extends its latest checkpoint (and --checkpoint) and
    /// passes through the last checkpoint signed (whose mark the key store keeps). The CA keys
    /// come from the key store (or --ca-jwks), never from the database under test.
    /// Prints the record count, head and tree head; if anything does not hold, names it and
    /// exits 1.
    Verify(VerifyArgs),
    /// Print the log's checkpoint, signed by every CA key (a C2SP signed note), after verifying
    /// the records appended since the last one. Keep it elsewhere: `audit verify --checkpoint
    /// FILE` later proves the log only grew since.
    Checkpoint,
    /// Print the proof that record SEQ is in the log its checkpoint commits to (RFC 9162
    /// inclusion proof), with the record and the checkpoint, as JSON.
    Prove(ProveArgs),
    /// Print audit records, one JSON object per line: the exact signed body, its hash, key id
    /// and signature (verifiable with the CA's JWKS), and the parsed record.
    Export(ExportArgs),
}

impl AuditCommand {
    pub fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        match self {
            AuditCommand::Verify(verify) => verify.run(installation),
            AuditCommand::Checkpoint => Ok(Outcome::Text(
                installation.audit_checkpoint()?.note.trim_end().to_owned(),
            )),
            AuditCommand::Prove(prove) => prove.run(installation),
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
    /// A checkpoint saved earlier (`agentseal audit checkpoint > FILE`): the log must be a
    /// consistent extension of it. A shorter log (records deleted, the database put back to an
    /// older copy, every record deleted) or one whose first records differ fails, named.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Verify with the CA public keys in this JWK Set (`agentseal jwks`) instead of the key
    /// store's: for a verifier that holds no secret key. The key store is not used at all,
    /// so the mark of the last checkpoint signed (which catches a rollback) is not checked.
    #[arg(long, value_name = "FILE")]
    ca_jwks: Option<PathBuf>,
}

impl VerifyArgs {
    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let checkpoint = self
            .checkpoint
            .as_deref()
            .map(|path| read_file(path, "checkpoint"))
            .transpose()?;
        // With public keys alone, the key store is not touched: no mark either.
        let (anchor, mark) = match &self.ca_jwks {
            Some(path) => (Ok(read_jwks(path)?), None),
            None => (installation.audit_anchor()?, installation.audit_mark()?),
        };
        let kept = KeptState {
            head: self.head.clone(),
            checkpoint,
            mark,
        };
        let verdict = match anchor {
            Ok(anchor) => installation.verify_audit(&anchor, &kept)?,
            Err(fault) => Err(fault),
        };
        Ok(match verdict {
            Ok(summary) => Outcome::Json(json!({
                "valid": true,
                "records": summary.records,
                "head": format!("{}:{}", summary.head.seq, summary.head.hash),
                "root": STANDARD.encode(summary.root),
                "ca_keys": if self.ca_jwks.is_some() { "file" } else { "key store" },
                "checked_mark": kept.mark.is_some(),
            })),
            Err(fault) => Outcome::Invalid(fault_report(&fault)),
        })
    }
}

fn fault_report(fault: &AuditFault) -> Value {
    let mut report = json!({
        "valid": false,
        "reasons": [fault.code()],
        "message": fault.to_string(),
    });
    if let Some(seq) = fault.seq() {
        report["first_bad_record"] = json!(seq);
    }
    report
}

/// `agentseal audit prove`.
#[derive(Args)]
pub struct ProveArgs {
    /// The record's position.
    seq: i64,
}

impl ProveArgs {
    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let proof = installation.audit_prove(self.seq)?;
        Ok(Outcome::Json(json!({
            "seq": proof.record.seq,
            "leaf_index": proof.record.seq - 1,
            "tree_size": proof.size,
            "body": proof.record.body,
            "proof": proof.proof.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
            "checkpoint": proof.checkpoint,
        })))
    }
}

/// The text of a small file the operator names (at most 1 MiB).
fn read_file(path: &std::path::Path, what: &str) -> Result<String, ServiceError> {
    let cannot = |e: std::io::Error| {
        ServiceError::InvalidInput(format!("cannot read the {what} {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 1 << 20), &mut text)
        .map_err(cannot)?;
    Ok(text)
}

/// The CA keys of a JWK Set file.
fn read_jwks(path: &std::path::Path) -> Result<Vec<PublicKey>, ServiceError> {
    let text = read_file(path, "CA key file")?;
    let invalid = |why: String| {
        ServiceError::InvalidInput(format!("{} is not the CA's JWK Set: {why}", path.display()))
    };
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let keys = set
        .keys
        .iter()
        .map(Jwk::to_public_key)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if keys.is_empty() {
        return Err(invalid("it holds no key".into()));
    }
    Ok(keys)
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
