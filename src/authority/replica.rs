//! Replicas of an installation on a shared database: each holds the key-encryption key that
//! opens the seeds sealed in the database (see `sealed`). The operator
//! carries it from one replica to the next in an encrypted file (the backup format, one entry).

use super::sealed::SealedKeyStore;
use super::{Installation, ServiceError};
use crate::clock;
use crate::crypto::SigningKey;
use crate::keystore::backup::{BackupEntry, KeyBackup};
use crate::keystore::{self, KeyName, KeyStore as _, KeyStoreError};
use crate::store::Location;

/// The entry of a replica file: owner and kind of [`KeyName::replica_kek`].
const OWNER: &str = "replica";
const KIND: &str = "kek";

impl Installation {
    fn require_shared(&self) -> Result<(), ServiceError> {
        match self.store.location() {
            Location::Postgres(_) => Ok(()),
            Location::Sqlite(_) => Err(ServiceError::InvalidInput(
                "replicas share a PostgreSQL database (--database postgres://...); this installation's database is a SQLite file".into(),
            )),
        }
    }

    /// This replica's key-encryption key, to be sealed into a file for a new replica. Fails
    /// if this replica cannot open the sealed keys with it.
    pub fn replica_secret(&self) -> Result<KeyBackup, ServiceError> {
        self.require_shared()?;
        // Opening the key store checks the key against the database.
        self.key_store()?;
        let local = keystore::open(self.key_store, &self.data_dir)?;
        let kek = local.get(&KeyName::replica_kek(&self.install_id))?;
        Ok(KeyBackup {
            install_id: self.install_id.clone(),
            ca_id: self.anchor().ca_id.clone(),
            created_at: clock::now(),
            entries: vec![BackupEntry {
                owner: OWNER.into(),
                kind: KIND.into(),
                seed: kek,
            }],
        })
    }

    /// Keeps the key-encryption key in `secret` in this machine's key store, once it is shown
    /// to be this installation's and to open the keys sealed in the database.
    pub fn join_replica(&self, secret: &KeyBackup) -> Result<(), ServiceError> {
        self.require_shared()?;
        if secret.install_id != self.install_id {
            return Err(ServiceError::InvalidInput(format!(
                "the file is for the installation of CA {}, not this one ({})",
                secret.ca_id,
                self.anchor().ca_id
            )));
        }
        let [entry] = secret.entries.as_slice() else {
            return Err(ServiceError::InvalidInput(
                "not a replica file: use the file `agentseal replica export` wrote".into(),
            ));
        };
        if (entry.owner.as_str(), entry.kind.as_str()) != (OWNER, KIND) {
            return Err(ServiceError::InvalidInput(
                "not a replica file: use the file `agentseal replica export` wrote".into(),
            ));
        }
        // A new replica's data directory holds only its own key store (and policy).
        crate::fsutil::create_private_dir(&self.data_dir).map_err(|source| ServiceError::Io {
            path: self.data_dir.clone(),
            source,
        })?;
        let local = keystore::open(self.key_store, &self.data_dir)?;
        let trial =
            SealedKeyStore::trial(&self.store, &self.install_id, &entry.seed, local.clone())?;
        // The check value is the database's: whoever can write it could have sealed one under a
        // key of their own and sent a file for that key (an age file made for a recipient is
        // not authenticated). Only the installation's KEK opens the CA's seeds, and only they
        // give the CA keys on record: the file must open every one of them.
        let keys = self.ca_keys();
        for public in &keys.current {
            let algorithm = public.algorithm();
            let name = KeyName::ca_key(&self.install_id, algorithm, keys.generation);
            let opened = trial
                .get(&name)
                .map(|seed| SigningKey::from_seed(algorithm, &seed).public_key() == public);
            if !matches!(opened, Ok(true)) {
                return Err(ServiceError::KeyStore(KeyStoreError::NotJoined {
                    detail: format!(
                        "the key in the file does not open the CA's {algorithm} key sealed in {}",
                        self.store.location()
                    ),
                }));
            }
        }
        local.put(&KeyName::replica_kek(&self.install_id), &entry.seed)?;
        Ok(())
    }
}
