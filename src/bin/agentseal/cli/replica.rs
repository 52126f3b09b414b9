//! `agentseal replica ...`: hand this replica's key-encryption key to a new replica of an
//! installation whose database is shared (PostgreSQL), where the seeds are sealed under it.

use std::path::PathBuf;

use agentseal::authority::{Installation, ServiceError};
use agentseal::keystore::backup::{BackupSecret, KeyBackup, MAX_BACKUP_LEN};
use clap::{Args, Subcommand};
use serde_json::json;

use super::backup::{invalid, passphrase, read, write_sealed};
use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum ReplicaCommand {
    /// Write this replica's key-encryption key to FILE, encrypted to a passphrase
    /// (AGENTSEAL_BACKUP_PASSPHRASE or _FILE) or an age recipient: the operator-held secret a
    /// new replica joins with. Whoever has the file, its passphrase and the database has the
    /// keys.
    Export(ExportArgs),
    /// Keep the key-encryption key from FILE (made by `replica export`) in this machine's key
    /// store, after checking that it opens the keys sealed in the database.
    Join(JoinArgs),
}

impl ReplicaCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            ReplicaCommand::Export(export) => export,
            ReplicaCommand::Join(join) => join,
        }
    }
}

/// `agentseal replica export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The file to write (mode 0600). An existing file is not replaced without --force.
    file: PathBuf,
    /// Encrypt to this age recipient (age1...) instead of a passphrase.
    #[arg(long, value_name = "AGE1...")]
    recipient: Option<String>,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

impl Operation for ExportArgs {
    fn facts(&self) -> Facts {
        Facts::new("replica.export")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let secret = write_sealed(&self.file, self.force, self.recipient.as_deref(), || {
            installation.replica_secret()
        })?;
        Ok(Outcome::Json(json!({
            "file": self.file,
            "ca_id": secret.ca_id,
            "database": installation.info().database,
        })))
    }
}

/// `agentseal replica join`.
#[derive(Args)]
pub struct JoinArgs {
    /// The file `replica export` wrote.
    file: PathBuf,
    /// The age identity file of the recipient it was made for; without it, the passphrase
    /// comes from AGENTSEAL_BACKUP_PASSPHRASE(_FILE).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
}

impl Operation for JoinArgs {
    fn facts(&self) -> Facts {
        Facts::new("replica.join")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let secret = match &self.identity {
            Some(path) => {
                let text = zeroize::Zeroizing::new(read(path, 1 << 16)?);
                let text =
                    zeroize::Zeroizing::new(String::from_utf8(text.to_vec()).map_err(|_| {
                        ServiceError::InvalidInput(format!(
                            "{} is not an age identity file",
                            path.display()
                        ))
                    })?);
                BackupSecret::identity_file(&text).map_err(invalid)?
            }
            None => BackupSecret::Passphrase(passphrase()?),
        };
        let sealed = read(&self.file, MAX_BACKUP_LEN)?;
        let secret = KeyBackup::open(&sealed, &secret).map_err(invalid)?;
        installation.join_replica(&secret)?;
        let info = installation.info();
        Ok(Outcome::Json(json!({
            "joined": info.database,
            "ca_id": info.ca_id,
            "key_store": info.key_store,
        })))
    }
}
