//! Backing up and restoring the installation's key store entries (see
//! [`crate::keystore::backup`] for the file), and naming keys the store has lost.

use super::*;
use crate::keystore::KeyStoreError;
use crate::keystore::backup::{BackupEntry, KeyBackup};
use crate::token::certificate::AgentCertificate;

/// What [`Installation::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Entries written to the key store.
    pub restored: Vec<String>,
    /// Entries the key store already held with the same seed.
    pub unchanged: Vec<String>,
    /// Entries of the backup this installation no longer uses (an agent deleted since).
    pub skipped: Vec<String>,
}

impl Installation {
    /// Every key store entry this installation uses, and whether it must be there (the CA's and
    /// the agents' keys) or may be absent (the webhook secret, the audit mark).
    fn key_names(&self) -> Result<Vec<(KeyName, bool)>, ServiceError> {
        // The CA's current keys are needed; earlier generations' seeds verify the audit log's
        // older records, and are kept (and backed up) where present.
        let mut names: Vec<(KeyName, bool)> = Vec::new();
        let ca = self.ca_keys();
        for generation in 0..=ca.generation {
            for key in &ca.current {
                let name = KeyName::ca_key(&self.install_id, key.algorithm(), generation);
                names.push((name, generation == ca.generation));
            }
        }
        for agent in self.store.agents()? {
            for algorithm in agent
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_name(a))
            {
                let id = &agent.agent_id;
                let name =
                    KeyName::agent_key(&self.install_id, id, algorithm, agent.key_generation);
                names.push((name, true));
            }
        }
        names.push((KeyName::webhook(&self.install_id), false));
        names.push((KeyName::audit_mark(&self.install_id), false));
        Ok(names)
    }

    /// Deletes every key store entry of the installation (for `destroy`); returns how many
    /// it held. Absent entries are deleted too: a set-up may have stopped half-way.
    pub(super) fn delete_keys(&self) -> Result<usize, ServiceError> {
        let keys = self.key_store()?;
        let mut names: Vec<KeyName> = self.key_names()?.into_iter().map(|(n, _)| n).collect();
        // Seeds of earlier key generations a crash kept from being deleted.
        for agent in self.store.agents()? {
            for generation in 0..agent.key_generation {
                for algorithm in Algorithm::ALL {
                    let id = &agent.agent_id;
                    names.push(KeyName::agent_key(
                        &self.install_id,
                        id,
                        algorithm,
                        generation,
                    ));
                }
            }
        }
        let mut held = 0;
        for name in names {
            held += usize::from(keys.get(&name).is_ok());
            keys.delete(&name)?;
        }
        Ok(held)
    }

    /// Every seed the installation's key store holds for it, for [`KeyBackup::seal`]. Fails,
    /// naming them, if the CA's or an agent's keys are missing: a backup without them would
    /// not restore the installation.
    pub fn backup(&self) -> Result<KeyBackup, ServiceError> {
        let keys = self.key_store()?;
        let mut entries = Vec::new();
        let mut missing = Vec::new();
        for (name, required) in self.key_names()? {
            match keys.get(&name) {
                Ok(seed) => entries.push(BackupEntry {
                    owner: name.owner.clone(),
                    kind: name.kind.clone(),
                    seed,
                }),
                Err(KeyStoreError::NotFound(_)) if !required => {}
                Err(KeyStoreError::NotFound(_)) => missing.push(name.user()),
                Err(e) => return Err(e.into()),
            }
        }
        if !missing.is_empty() {
            return Err(self.keys_missing(missing));
        }
        Ok(KeyBackup {
            install_id: self.install_id.clone(),
            ca_id: self.anchor().ca_id.clone(),
            created_at: clock::now(),
            entries,
        })
    }

    /// Puts a backup's seeds back into the key store. Everything is checked before anything
    /// is written: the backup must be of this installation, and each CA and agent seed must
    /// give the public key the database records (the agent's current certificate). Entries
    /// the store holds already with the same seed are left; the webhook secret and the audit
    /// mark are only written where absent (the store's are newer); a different signing key the
    /// store holds is replaced only with `replace`.
    pub fn restore(
        &self,
        backup: &KeyBackup,
        replace: bool,
    ) -> Result<RestoreReport, ServiceError> {
        if backup.install_id != self.install_id {
            return Err(ServiceError::InvalidInput(format!(
                "this backup is of CA {:?} (installation {}), not of this installation's CA {:?}",
                backup.ca_id,
                backup.install_id,
                self.anchor().ca_id
            )));
        }
        let used: BTreeMap<KeyName, bool> = self.key_names()?.into_iter().collect();
        let keys = self.key_store()?;
        let mut report = RestoreReport::default();
        let mut writes = Vec::new();
        for entry in &backup.entries {
            let name = entry.name(&self.install_id);
            if !used.contains_key(&name) {
                report.skipped.push(name.to_string());
                continue;
            }
            // Signing keys are checked against the public keys on record; the webhook secret
            // and the audit mark cannot be.
            let checked = name.algorithm().is_some();
            if checked {
                self.check_restored_seed(&name, &entry.seed)?;
            }
            match keys.get(&name) {
                Ok(held) if held.expose() == entry.seed.expose() => {
                    report.unchanged.push(name.to_string())
                }
                // The store's webhook secret and audit mark are newer than any backup.
                Ok(_) if !checked => report.unchanged.push(name.to_string()),
                // A key the store holds is replaced only when the operator says so.
                Ok(_) if !replace => {
                    return Err(ServiceError::InvalidInput(format!(
                        "the key store holds another key {name} than the backup: nothing was restored (pass --replace to overwrite it)"
                    )));
                }
                Ok(_) | Err(KeyStoreError::NotFound(_)) => writes.push((name, &entry.seed)),
                Err(e) => return Err(e.into()),
            }
        }
        for (name, seed) in writes {
            keys.delete(&name)?;
            keys.put(&name, seed)?;
            report.restored.push(name.to_string());
        }
        // Keys loaded before the restore (none could be) are not kept.
        self.signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(report)
    }

    /// Refuses a seed for `name` that does not give the public key on record.
    fn check_restored_seed(&self, name: &KeyName, seed: &Seed) -> Result<(), ServiceError> {
        let Some(algorithm) = name.algorithm() else {
            return Ok(());
        };
        let derived = SigningKey::from_seed(algorithm, seed).public_key().clone();
        let recorded: Vec<PublicKey> = if name.owner == "ca" {
            // The current generation's name takes only a current key; older names, history.
            let ca = self.ca_keys();
            if name == &KeyName::ca_key(&self.install_id, algorithm, ca.generation) {
                ca.current.clone()
            } else {
                self.ca_history()?
            }
        } else if let Some(agent_id) = name.owner.strip_prefix("agent:") {
            match self.store.agent(agent_id)? {
                Some(agent) => match self.current_certificate_record(&agent) {
                    Ok(record) => AgentCertificate::parse_unverified(&record.encoded)
                        .map(|(_, _, keys)| keys)
                        .map_err(|e| ServiceError::CorruptRecord(e.to_string()))?,
                    // No certificate to check against (none was ever issued).
                    Err(_) => return Ok(()),
                },
                None => return Ok(()),
            }
        } else {
            return Ok(());
        };
        if recorded.contains(&derived) {
            Ok(())
        } else {
            Err(ServiceError::InvalidInput(format!(
                "the backup's key {name} is not the one this installation records: nothing was restored"
            )))
        }
    }

    /// Checks that the key store holds every key the CA and the agents need (all agents, or
    /// only `agent`), and that the CA keys the database records are its own
    /// ([`Self::check_ca_keys`]), so that a server does not start only to fail at its first
    /// call, or on keys someone else put in the database.
    pub fn check_keys(&self, agent: Option<&str>) -> Result<(), ServiceError> {
        let keys = self.key_store()?;
        let mut missing = Vec::new();
        for (name, required) in self.key_names()? {
            let wanted = required
                && (name.owner == "ca"
                    || agent.is_none_or(|a| name.owner.strip_prefix("agent:") == Some(a)));
            if !wanted {
                continue;
            }
            match keys.get(&name) {
                Ok(_) => {}
                Err(KeyStoreError::NotFound(_)) => missing.push(name.user()),
                Err(e) => return Err(e.into()),
            }
        }
        if !missing.is_empty() {
            return Err(self.keys_missing(missing));
        }
        self.check_ca_keys(&self.ca_keys())
    }

    /// The error for keys the database needs and the key store does not have.
    pub(super) fn keys_missing(&self, missing: Vec<String>) -> ServiceError {
        ServiceError::KeysMissing {
            store: self.key_store,
            missing,
        }
    }
}
