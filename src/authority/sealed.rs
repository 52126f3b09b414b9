//! Seeds for every replica: with a shared database (PostgreSQL), the CA's and agents' seeds are
//! stored in it sealed under a key-encryption key (KEK) that each replica holds in its own key
//! store (OS keyring or the passphrase file store). The database alone reveals no seed; a
//! replica without the KEK cannot sign, and says how to join.
//!
//! Sealing is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) with a fresh random 24-byte
//! nonce per write. The associated data binds a sealed value to its installation and entry, so
//! whoever can write the database cannot move one agent's sealed seed under another's name, nor
//! between installations. Stored form: `v1.` + base64url(nonce || ciphertext || tag).
//!
//! A check value (a sealed fixed string under [`CHECK`]) lets a replica tell a wrong KEK from a
//! missing seed. Entries that belong to one replica ([`KeyName::is_replica_local`]: the KEK
//! itself and the audit mark) stay in its own key store.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::crypto::Seed;
use crate::keystore::{KeyName, KeyStore, KeyStoreError, KeyStoreKind};
use crate::store::Store;

/// The name of the check value in the database.
pub const CHECK: &str = "replica#kek-check";
/// What the check value seals.
const CHECK_PLAINTEXT: &[u8] = b"agentseal key-encryption key check";
/// Prefix of the stored form.
const PREFIX: &str = "v1.";
const NONCE_LEN: usize = 24;

/// The key store of a replica of an installation whose seeds are sealed in the database.
pub struct SealedKeyStore {
    local: Arc<dyn KeyStore>,
    store: Arc<Store>,
    cipher: XChaCha20Poly1305,
    installation: String,
}

impl SealedKeyStore {
    /// Starts a new installation's sealed keys: draws a KEK, keeps it in `local`, and writes
    /// the check value to the database.
    pub fn create(
        local: Arc<dyn KeyStore>,
        store: Arc<Store>,
        installation: &str,
    ) -> Result<SealedKeyStore, KeyStoreError> {
        let kek = Seed::generate().map_err(|e| KeyStoreError::Database(e.to_string()))?;
        local.put(&KeyName::replica_kek(installation), &kek)?;
        let sealed = SealedKeyStore::with_kek(local, store, installation, &kek);
        let check = sealed.seal(CHECK, CHECK_PLAINTEXT)?;
        sealed
            .store
            .put_sealed_secret(CHECK, &check)
            .map_err(database)?;
        Ok(sealed)
    }

    /// Opens the sealed keys with the KEK in `local`, checking it against the database.
    pub fn open(
        local: Arc<dyn KeyStore>,
        store: Arc<Store>,
        installation: &str,
    ) -> Result<SealedKeyStore, KeyStoreError> {
        let kek = match local.get(&KeyName::replica_kek(installation)) {
            Ok(kek) => kek,
            Err(KeyStoreError::NotFound(_)) => {
                return Err(KeyStoreError::NotJoined {
                    detail: format!(
                        "this replica's {} key store holds no key-encryption key for the keys sealed in {}",
                        local.kind(),
                        store.location()
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let sealed = SealedKeyStore::with_kek(local, store, installation, &kek);
        sealed.check()?;
        Ok(sealed)
    }

    /// The sealed keys as `kek` opens them, once its check value opens: for a replica about to
    /// take `kek` to check further (the check value is the database's, so a writer of the
    /// database could have planted one for a key of its own).
    pub fn trial(
        store: &Arc<Store>,
        installation: &str,
        kek: &Seed,
        local: Arc<dyn KeyStore>,
    ) -> Result<SealedKeyStore, KeyStoreError> {
        let sealed = SealedKeyStore::with_kek(local, store.clone(), installation, kek);
        sealed.check()?;
        Ok(sealed)
    }

    fn with_kek(
        local: Arc<dyn KeyStore>,
        store: Arc<Store>,
        installation: &str,
        kek: &Seed,
    ) -> SealedKeyStore {
        SealedKeyStore {
            local,
            store,
            cipher: XChaCha20Poly1305::new(kek.expose().into()),
            installation: installation.to_owned(),
        }
    }

    fn check(&self) -> Result<(), KeyStoreError> {
        let not_joined = |what: &str| KeyStoreError::NotJoined {
            detail: format!(
                "this replica's key-encryption key {what} the keys sealed in {}",
                self.store.location()
            ),
        };
        let stored = self
            .store
            .sealed_secret(CHECK)
            .map_err(database)?
            .ok_or_else(|| not_joined("has no check value for"))?;
        match self.open_sealed(CHECK, &stored) {
            Some(plain) if plain.as_slice() == CHECK_PLAINTEXT => Ok(()),
            _ => Err(not_joined("does not open")),
        }
    }

    /// The associated data of entry `name`: installation and entry.
    fn aad(&self, name: &str) -> Vec<u8> {
        format!("agentseal sealed secret v1\0{}\0{name}", self.installation).into_bytes()
    }

    fn seal(&self, name: &str, plain: &[u8]) -> Result<String, KeyStoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyStoreError::Database(e.to_string()))?;
        let aad = self.aad(name);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyStoreError::Database("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// The plaintext of `stored` under `name`, or `None` if it does not open (wrong KEK, moved
    /// from another name, altered, or not in this format).
    fn open_sealed(&self, name: &str, stored: &str) -> Option<Zeroizing<Vec<u8>>> {
        let bytes = URL_SAFE_NO_PAD.decode(stored.strip_prefix(PREFIX)?).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = self.aad(name);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

fn database(e: crate::store::StoreError) -> KeyStoreError {
    KeyStoreError::Database(e.to_string())
}

impl KeyStore for SealedKeyStore {
    fn kind(&self) -> KeyStoreKind {
        self.local.kind()
    }

    fn put(&self, name: &KeyName, seed: &Seed) -> Result<(), KeyStoreError> {
        if name.is_replica_local() {
            return self.local.put(name, seed);
        }
        let entry = name.user();
        let sealed = self.seal(&entry, seed.expose())?;
        self.store
            .put_sealed_secret(&entry, &sealed)
            .map_err(database)
    }

    fn get(&self, name: &KeyName) -> Result<Seed, KeyStoreError> {
        if name.is_replica_local() {
            return self.local.get(name);
        }
        let entry = name.user();
        let stored = self
            .store
            .sealed_secret(&entry)
            .map_err(database)?
            .ok_or_else(|| KeyStoreError::NotFound(name.to_string()))?;
        let plain = self
            .open_sealed(&entry, &stored)
            .ok_or_else(|| KeyStoreError::Corrupt(name.to_string()))?;
        Seed::from_slice(&plain).ok_or_else(|| KeyStoreError::Corrupt(name.to_string()))
    }

    fn delete(&self, name: &KeyName) -> Result<(), KeyStoreError> {
        if name.is_replica_local() {
            return self.local.delete(name);
        }
        self.store
            .delete_sealed_secret(&name.user())
            .map_err(database)
    }
}
