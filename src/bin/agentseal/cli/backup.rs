//! `agentseal backup` and `agentseal restore`: the key store's entries to an encrypted file and
//! back. Seeds never reach stdout, stderr or the audit log; only names and counts do.

use std::path::PathBuf;

use agentseal::authority::{Installation, ServiceError};
use agentseal::keystore::Passphrase;
use agentseal::keystore::backup::{BackupKey, BackupSecret, KeyBackup, MAX_BACKUP_LEN};
use clap::Args;
use serde_json::json;

use super::{Facts, Operation, Outcome};

/// The variables the backup passphrase is read from.
const PASSPHRASE: &str = "AGENTSEAL_BACKUP_PASSPHRASE";
const PASSPHRASE_FILE: &str = "AGENTSEAL_BACKUP_PASSPHRASE_FILE";
/// Shortest backup passphrase accepted: the file holds the CA's keys.
const MIN_PASSPHRASE: usize = 12;

/// `agentseal backup`.
#[derive(Args)]
pub struct BackupArgs {
    /// The file to write (mode 0600). An existing file is not replaced without --force.
    file: PathBuf,
    /// Encrypt to this age recipient (age1...) instead of a passphrase; `restore --identity`
    /// then opens it. Without it, the passphrase comes from AGENTSEAL_BACKUP_PASSPHRASE or the
    /// first line of the file AGENTSEAL_BACKUP_PASSPHRASE_FILE names (at least 12 characters).
    #[arg(long, value_name = "AGE1...")]
    recipient: Option<String>,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

impl Operation for BackupArgs {
    fn facts(&self) -> Facts {
        Facts::new("backup").with(
            "encryption",
            if self.recipient.is_some() {
                "age-recipient"
            } else {
                "passphrase"
            },
        )
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let backup = write_sealed(&self.file, self.force, self.recipient.as_deref(), || {
            installation.backup()
        })?;
        Ok(Outcome::Json(json!({
            "file": self.file,
            "ca_id": backup.ca_id,
            "entries": backup.entries.iter().map(|e| format!("{}#{}", e.owner, e.kind)).collect::<Vec<_>>(),
            "encryption": if self.recipient.is_some() { "age-recipient" } else { "passphrase" },
        })))
    }
}

/// `agentseal restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The age identity file (AGE-SECRET-KEY-1...) of the recipient the backup was made for.
    /// Without it, the passphrase comes from AGENTSEAL_BACKUP_PASSPHRASE(_FILE).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Overwrite signing keys the key store holds that differ from the backup's (they are still
    /// checked against the public keys on record).
    #[arg(long)]
    replace: bool,
}

impl Operation for RestoreArgs {
    fn facts(&self) -> Facts {
        Facts::new("restore")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let secret = match &self.identity {
            Some(path) => {
                let text = zeroize::Zeroizing::new(read(path, 1 << 16)?);
                let text = String::from_utf8(text.to_vec()).map_err(|_| {
                    ServiceError::InvalidInput(format!(
                        "{} is not an age identity file",
                        path.display()
                    ))
                })?;
                let text = zeroize::Zeroizing::new(text);
                BackupSecret::identity_file(&text).map_err(invalid)?
            }
            None => BackupSecret::Passphrase(passphrase()?),
        };
        let sealed = read(&self.file, MAX_BACKUP_LEN)?;
        let backup = KeyBackup::open(&sealed, &secret).map_err(invalid)?;
        let report = installation.restore(&backup, self.replace)?;
        Ok(Outcome::Json(json!({
            "ca_id": backup.ca_id,
            "backup_created_at": backup.created_at,
            "restored": report.restored,
            "unchanged": report.unchanged,
            "skipped": report.skipped,
        })))
    }
}

/// Writes the entries `contents` gives to `file` (refused if it exists, unless `force`),
/// encrypted to `recipient` or the backup passphrase; returns them.
pub(super) fn write_sealed(
    file: &std::path::Path,
    force: bool,
    recipient: Option<&str>,
    contents: impl FnOnce() -> Result<KeyBackup, ServiceError>,
) -> Result<KeyBackup, ServiceError> {
    if file.exists() && !force {
        return Err(ServiceError::InvalidInput(format!(
            "{} exists: choose another file or pass --force",
            file.display()
        )));
    }
    let key = match recipient {
        Some(recipient) => BackupKey::recipient(recipient).map_err(invalid)?,
        None => BackupKey::Passphrase(passphrase()?),
    };
    let backup = contents()?;
    let sealed = backup.seal(&key).map_err(invalid)?;
    agentseal::fsutil::write_atomically(file, &sealed).map_err(|source| ServiceError::Io {
        path: file.to_owned(),
        source,
    })?;
    Ok(backup)
}

pub(super) fn invalid(error: impl std::fmt::Display) -> ServiceError {
    ServiceError::InvalidInput(error.to_string())
}

/// The backup passphrase from the environment.
pub(super) fn passphrase() -> Result<Passphrase, ServiceError> {
    let passphrase = Passphrase::from_env_vars(PASSPHRASE, PASSPHRASE_FILE)?.ok_or_else(|| {
        ServiceError::InvalidInput(format!(
            "set {PASSPHRASE} or {PASSPHRASE_FILE} (or use an age recipient and identity)"
        ))
    })?;
    if passphrase.char_count() < MIN_PASSPHRASE {
        return Err(ServiceError::InvalidInput(format!(
            "the backup passphrase must have at least {MIN_PASSPHRASE} characters"
        )));
    }
    Ok(passphrase)
}

/// At most `limit` bytes of `path`.
pub(super) fn read(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, ServiceError> {
    let io = |source| ServiceError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ServiceError::InvalidInput(format!(
            "{} is larger than any backup",
            path.display()
        )));
    }
    Ok(bytes)
}
