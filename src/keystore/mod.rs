//! Where secret seeds live: the operating system's keyring (through the `keyring-core` family) or
//! a passphrase-encrypted `age` file for headless servers with no keyring.
//!
//! Only 32-byte seeds are ever stored. Entries are named by installation and owner, so two data
//! directories on one machine never share or overwrite each other's keys. All calls block: async
//! callers run them with `spawn_blocking`, and callers load a key once and keep it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::crypto::{Algorithm, Seed};

pub mod backup;

/// Which key store to use. `Auto` resolves to the platform keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStoreKind {
    /// The platform's keyring: Keychain, Windows Credential Manager, or on Linux the Secret
    /// Service when a session bus offers one, otherwise kernel keyutils.
    Auto,
    /// macOS Keychain.
    Keychain,
    /// Windows Credential Manager.
    Windows,
    /// Linux Secret Service (GNOME Keyring, KWallet) over D-Bus.
    SecretService,
    /// Linux kernel keyutils (persistent keyring; does not survive a reboot).
    Keyutils,
    /// A passphrase-encrypted `age` file in the data directory.
    File,
}

impl KeyStoreKind {
    /// The name used by `--key-store` and recorded in the database.
    pub fn name(self) -> &'static str {
        match self {
            KeyStoreKind::Auto => "auto",
            KeyStoreKind::Keychain => "keychain",
            KeyStoreKind::Windows => "windows",
            KeyStoreKind::SecretService => "secret-service",
            KeyStoreKind::Keyutils => "keyutils",
            KeyStoreKind::File => "file",
        }
    }
}

impl KeyStoreKind {
    /// A caveat to tell the operator when this store is chosen, if any.
    pub fn caveat(self) -> Option<&'static str> {
        (self == KeyStoreKind::Keyutils).then_some(
            "kernel keyutils keeps keys in memory only: they do not survive a reboot, and the \
             kernel drops the persistent keyring after it goes unused for \
             /proc/sys/kernel/keys/persistent_keyring_expiry seconds (3 days by default). \
             Back them up with `agentseal backup FILE` (and `agentseal restore FILE` after a \
             reboot), or use --key-store secret-service or file for keys that must persist.",
        )
    }
}

impl fmt::Display for KeyStoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyStoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => KeyStoreKind::Auto,
            "keychain" => KeyStoreKind::Keychain,
            "windows" => KeyStoreKind::Windows,
            "secret-service" => KeyStoreKind::SecretService,
            "keyutils" => KeyStoreKind::Keyutils,
            "file" => KeyStoreKind::File,
            other => {
                return Err(format!(
                    "unknown key store {other:?}: use auto, keychain, windows, secret-service, keyutils or file"
                ));
            }
        })
    }
}

/// Errors from a key store. Messages name the entry and the store, never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The store is not available on this platform or in this session.
    #[error("key store {kind} is unavailable: {detail}")]
    Unavailable {
        /// The store asked for.
        kind: KeyStoreKind,
        /// Why it cannot be used.
        detail: String,
    },
    /// No secret is stored under this name.
    #[error("no key {0} in the key store")]
    NotFound(String),
    /// A stored value is not a 32-byte seed.
    #[error("key {0} in the key store is not a 32-byte seed")]
    Corrupt(String),
    /// The file store needs a passphrase and none was given.
    #[error(
        "the file key store needs a passphrase: set AGENTSEAL_PASSPHRASE or AGENTSEAL_PASSPHRASE_FILE"
    )]
    NoPassphrase,
    /// The file store could not be decrypted (wrong passphrase or damaged file).
    #[error("cannot decrypt key file {0}: wrong passphrase or damaged file")]
    Decrypt(PathBuf),
    /// The platform store refused an operation.
    #[error("key store {kind} failed on {name}: {detail}")]
    Platform {
        /// The store.
        kind: KeyStoreKind,
        /// The entry.
        name: String,
        /// The platform's explanation (never secret data).
        detail: String,
    },
    /// The installation keeps its seeds sealed in a shared database, and this replica holds no
    /// key-encryption key for it (or one that does not open them).
    #[error(
        "{detail}: run `agentseal replica join FILE` with a file `agentseal replica export FILE` made on a replica that has the key"
    )]
    NotJoined {
        /// What is missing or wrong, naming the database (never a secret).
        detail: String,
    },
    /// The shared database holding the sealed seeds failed.
    #[error("sealed keys: {0}")]
    Database(String),
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The name of one secret: which installation, which owner (the CA, an agent, the webhook
/// sender), which kind of key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyName {
    /// The installation's random id (namespaces the keyring).
    pub installation: String,
    /// `ca`, or `agent:<agent id>`.
    pub owner: String,
    /// The key's kind: a signature algorithm's name, or `hmac-sha256` for the webhook secret.
    pub kind: String,
}

impl KeyName {
    /// The CA's key of `algorithm`.
    pub fn ca(installation: &str, algorithm: Algorithm) -> Self {
        KeyName {
            installation: installation.to_owned(),
            owner: "ca".to_owned(),
            kind: algorithm.to_string(),
        }
    }

    /// An agent's key of `algorithm`.
    pub fn agent(installation: &str, agent_id: &str, algorithm: Algorithm) -> Self {
        KeyName {
            installation: installation.to_owned(),
            owner: format!("agent:{agent_id}"),
            kind: algorithm.to_string(),
        }
    }

    /// The CA's key of `algorithm` in key generation `generation` (0: the keys made at `init`,
    /// named as [`KeyName::ca`] names them; later ones `<algorithm>.<generation>`).
    pub fn ca_key(installation: &str, algorithm: Algorithm, generation: u32) -> Self {
        let mut name = KeyName::ca(installation, algorithm);
        if generation > 0 {
            name.kind = format!("{}.{generation}", name.kind);
        }
        name
    }

    /// An agent's key of `algorithm` in key generation `generation`: the first keys (0) are
    /// named as [`KeyName::agent`] names them, rotated ones `<algorithm>.<generation>`, so that
    /// a rotation writes its new keys beside the old ones instead of over them.
    pub fn agent_key(
        installation: &str,
        agent_id: &str,
        algorithm: Algorithm,
        generation: u32,
    ) -> Self {
        let mut name = KeyName::agent(installation, agent_id, algorithm);
        if generation > 0 {
            name.kind = format!("{}.{generation}", name.kind);
        }
        name
    }

    /// The signature algorithm of a CA or agent key; `None` for the webhook secret and the
    /// audit mark.
    pub fn algorithm(&self) -> Option<Algorithm> {
        let algorithm = self
            .kind
            .split_once('.')
            .map_or(self.kind.as_str(), |(a, _)| a);
        Algorithm::from_name(algorithm)
    }

    /// The secret shared with the webhook receiver (see [`crate::signals`]).
    pub fn webhook(installation: &str) -> Self {
        KeyName {
            installation: installation.to_owned(),
            owner: "webhook".to_owned(),
            kind: "hmac-sha256".to_owned(),
        }
    }

    /// The mark of the last audit checkpoint the installation signed (a hash, not a secret:
    /// kept here because whoever can write the database cannot write the key store).
    pub fn audit_mark(installation: &str) -> Self {
        KeyName {
            installation: installation.to_owned(),
            owner: "audit".to_owned(),
            kind: "checkpoint-mark".to_owned(),
        }
    }

    /// This replica's key-encryption key: opens the seeds sealed in a shared database (see
    /// `authority::sealed`). Kept in the replica's own key store, never in the database.
    pub fn replica_kek(installation: &str) -> Self {
        KeyName {
            installation: installation.to_owned(),
            owner: "replica".to_owned(),
            kind: "kek".to_owned(),
        }
    }

    /// The highest CA key generation this replica has seen (a number, not a secret), kept
    /// where whoever can write a shared database cannot wind it back (see `authority::ca`).
    pub fn replica_ca_generation(installation: &str) -> Self {
        KeyName {
            installation: installation.to_owned(),
            owner: "replica".to_owned(),
            kind: "ca-generation".to_owned(),
        }
    }

    /// Whether the entry belongs to one replica (its own key store) rather than to the
    /// installation: the key-encryption key, and the audit mark (each replica checks the log
    /// extends what *it* last signed).
    pub fn is_replica_local(&self) -> bool {
        matches!(self.owner.as_str(), "replica" | "audit")
    }

    /// The keyring "service" attribute: one per installation.
    pub fn service(&self) -> String {
        format!("agentseal/{}", self.installation)
    }

    /// The keyring "user" attribute: owner and kind.
    pub fn user(&self) -> String {
        format!("{}#{}", self.owner, self.kind)
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{} ({})", self.owner, self.kind, self.service())
    }
}

/// A place that keeps seeds.
pub trait KeyStore: Send + Sync {
    /// Which store this is (never `Auto`).
    fn kind(&self) -> KeyStoreKind;
    /// Stores `seed` under `name`, replacing any previous value.
    fn put(&self, name: &KeyName, seed: &Seed) -> Result<(), KeyStoreError>;
    /// Reads the seed stored under `name`.
    fn get(&self, name: &KeyName) -> Result<Seed, KeyStoreError>;
    /// Removes `name`; succeeds if it was already absent.
    fn delete(&self, name: &KeyName) -> Result<(), KeyStoreError>;
}

/// Opens the store of `kind` for the installation whose data lives in `data_dir`.
pub fn open(kind: KeyStoreKind, data_dir: &Path) -> Result<Arc<dyn KeyStore>, KeyStoreError> {
    match kind {
        KeyStoreKind::File => Ok(Arc::new(FileKeyStore::open(
            data_dir.join("keys.age"),
            Passphrase::from_env()?,
        )?)),
        KeyStoreKind::Auto => open(resolve_auto(), data_dir),
        other => KeyringStore::open(other).map(|s| Arc::new(s) as Arc<dyn KeyStore>),
    }
}

/// What `auto` means here: the platform keyring. On Linux, the Secret Service when a session bus
/// answers for it, otherwise kernel keyutils.
pub fn resolve_auto() -> KeyStoreKind {
    if cfg!(target_os = "macos") {
        KeyStoreKind::Keychain
    } else if cfg!(target_os = "windows") {
        KeyStoreKind::Windows
    } else if cfg!(target_os = "linux") {
        if secret_service_available() {
            KeyStoreKind::SecretService
        } else {
            KeyStoreKind::Keyutils
        }
    } else {
        KeyStoreKind::File
    }
}

#[cfg(target_os = "linux")]
fn secret_service_available() -> bool {
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        && off_runtime(KeyStoreKind::SecretService, || {
            zbus_secret_service_keyring_store::Store::new().is_ok()
        })
}

#[cfg(not(target_os = "linux"))]
fn secret_service_available() -> bool {
    false
}

/// A store backed by an OS keyring through `keyring-core`.
pub struct KeyringStore {
    kind: KeyStoreKind,
    /// `None` only while being dropped (see the `Drop` impl).
    store: Option<Arc<keyring_core::CredentialStore>>,
}

/// Runs `f` where a blocking keyring call may run. The Secret Service store talks D-Bus through
/// zbus's blocking API, which drives its own async runtime and so panics on a thread that is
/// already driving one (the stdio server runs core calls on its event-loop thread). There it
/// runs on a short-lived thread of its own; anywhere else, right here.
fn off_runtime<T: Send>(kind: KeyStoreKind, f: impl FnOnce() -> T + Send) -> T {
    if kind == KeyStoreKind::SecretService && tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| match scope.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    } else {
        f()
    }
}

impl Drop for KeyringStore {
    fn drop(&mut self) {
        // Dropping the Secret Service connection makes a blocking D-Bus call too.
        let store = self.store.take();
        off_runtime(self.kind, move || drop(store));
    }
}

impl KeyringStore {
    /// Opens the platform store of `kind`.
    pub fn open(kind: KeyStoreKind) -> Result<Self, KeyStoreError> {
        let unavailable = |detail: String| KeyStoreError::Unavailable { kind, detail };
        let store = off_runtime(kind, || platform_store(kind)).map_err(unavailable)?;
        Ok(KeyringStore {
            kind,
            store: Some(store),
        })
    }

    fn entry(&self, name: &KeyName) -> Result<keyring_core::Entry, KeyStoreError> {
        // Keyrings belong to a thread's credentials: a thread started before this process joined
        // its session keyring (a runtime's worker or blocking thread) would not possess the keys.
        // Join on the calling thread before every access; the entry then resolves this thread's
        // session keyring, with the persistent keyring linked in.
        #[cfg(target_os = "linux")]
        if self.kind == KeyStoreKind::Keyutils {
            join_session_keyring().map_err(|detail| KeyStoreError::Unavailable {
                kind: self.kind,
                detail,
            })?;
        }
        self.store
            .as_ref()
            .expect("the store is only taken when dropped")
            .build(&name.service(), &name.user(), None)
            .map_err(|e| self.platform_error(name, &e))
    }

    fn platform_error(&self, name: &KeyName, error: &keyring_core::Error) -> KeyStoreError {
        KeyStoreError::Platform {
            kind: self.kind,
            name: name.to_string(),
            detail: describe_keyring_error(error),
        }
    }
}

/// Describes a keyring error without its payload: some variants carry the stored bytes.
fn describe_keyring_error(error: &keyring_core::Error) -> String {
    use keyring_core::Error as E;
    match error {
        E::PlatformFailure(e) => format!("platform failure: {e}"),
        E::NoStorageAccess(e) => format!("no access to the store: {e}"),
        E::NoEntry => "no such entry".to_owned(),
        E::BadEncoding(_) | E::BadDataFormat(..) => {
            "stored data has an unexpected format".to_owned()
        }
        E::BadStoreFormat(s) => format!("bad store format: {s}"),
        E::TooLong(what, limit) => format!("{what} longer than {limit}"),
        E::Invalid(what, why) => format!("invalid {what}: {why}"),
        E::Ambiguous(_) => "more than one matching entry".to_owned(),
        E::NoDefaultStore => "no default store".to_owned(),
        E::NotSupportedByStore(s) => format!("not supported: {s}"),
        _ => "unexpected keyring error".to_owned(),
    }
}

#[cfg(target_os = "linux")]
fn platform_store(kind: KeyStoreKind) -> Result<Arc<keyring_core::CredentialStore>, String> {
    match kind {
        KeyStoreKind::Keyutils => {
            join_session_keyring()?;
            // The store silently ignores a missing persistent keyring, which would leave keys in
            // this process's session keyring only: lost when it exits. Refuse instead.
            linux_keyutils::KeyRing::get_persistent(linux_keyutils::KeyRingIdentifier::Session)
                .map_err(|e| {
                    format!("the persistent keyring is unavailable ({e:?}); use --key-store file")
                })?;
            let config = std::collections::HashMap::from([("service_no_divider", "true")]);
            let store = linux_keyutils_keyring_store::Store::new_with_configuration(&config)
                .map_err(|e| describe_keyring_error(&e))?;
            Ok(store)
        }
        KeyStoreKind::SecretService => {
            if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
                return Err("no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset)".to_owned());
            }
            let store = zbus_secret_service_keyring_store::Store::new()
                .map_err(|e| describe_keyring_error(&e))?;
            Ok(store)
        }
        other => Err(format!("{other} is not available on Linux")),
    }
}

/// Makes sure this process has a session keyring of its own. A process started without one
/// falls back to the user-session keyring, into which the kernel refuses to link the persistent
/// keyring; asking for the session keyring with "create" joins a fresh anonymous one instead.
#[cfg(target_os = "linux")]
fn join_session_keyring() -> Result<(), String> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    KeyRing::from_special_id(KeyRingIdentifier::Session, true)
        .map(|_| ())
        .map_err(|e| format!("cannot join a session keyring: {e:?}"))
}

#[cfg(target_os = "macos")]
fn platform_store(kind: KeyStoreKind) -> Result<Arc<keyring_core::CredentialStore>, String> {
    match kind {
        KeyStoreKind::Keychain => apple_native_keyring_store::keychain::Store::new()
            .map(|s| s as Arc<keyring_core::CredentialStore>)
            .map_err(|e| describe_keyring_error(&e)),
        other => Err(format!("{other} is not available on macOS")),
    }
}

#[cfg(target_os = "windows")]
fn platform_store(kind: KeyStoreKind) -> Result<Arc<keyring_core::CredentialStore>, String> {
    match kind {
        KeyStoreKind::Windows => windows_native_keyring_store::Store::new()
            .map(|s| s as Arc<keyring_core::CredentialStore>)
            .map_err(|e| describe_keyring_error(&e)),
        other => Err(format!("{other} is not available on Windows")),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_store(kind: KeyStoreKind) -> Result<Arc<keyring_core::CredentialStore>, String> {
    Err(format!(
        "{kind} is not available on this platform; use --key-store file"
    ))
}

impl KeyStore for KeyringStore {
    fn kind(&self) -> KeyStoreKind {
        self.kind
    }

    fn put(&self, name: &KeyName, seed: &Seed) -> Result<(), KeyStoreError> {
        off_runtime(self.kind, || {
            self.entry(name)?
                .set_secret(seed.expose())
                .map_err(|e| self.platform_error(name, &e))
        })
    }

    fn get(&self, name: &KeyName) -> Result<Seed, KeyStoreError> {
        off_runtime(self.kind, || {
            let secret = match self.entry(name)?.get_secret() {
                Ok(secret) => Zeroizing::new(secret),
                Err(keyring_core::Error::NoEntry) => {
                    return Err(KeyStoreError::NotFound(name.to_string()));
                }
                Err(e) => return Err(self.platform_error(name, &e)),
            };
            Seed::from_slice(&secret).ok_or_else(|| KeyStoreError::Corrupt(name.to_string()))
        })
    }

    fn delete(&self, name: &KeyName) -> Result<(), KeyStoreError> {
        off_runtime(self.kind, || match self.entry(name)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(self.platform_error(name, &e)),
        })
    }
}

/// The passphrase of a file key store.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(text: String) -> Self {
        Passphrase(Zeroizing::new(text))
    }

    /// Reads `AGENTSEAL_PASSPHRASE`, or the first line of the file named by
    /// `AGENTSEAL_PASSPHRASE_FILE`.
    pub fn from_env() -> Result<Self, KeyStoreError> {
        Passphrase::from_env_vars("AGENTSEAL_PASSPHRASE", "AGENTSEAL_PASSPHRASE_FILE")?
            .ok_or(KeyStoreError::NoPassphrase)
    }

    /// Reads the variable `text`, or the first line of the file named by the variable `file`;
    /// `None` if neither is set.
    pub fn from_env_vars(text: &str, file: &str) -> Result<Option<Self>, KeyStoreError> {
        if let Ok(text) = std::env::var(text) {
            return Ok(Some(Passphrase::new(text)));
        }
        if let Some(path) = std::env::var_os(file) {
            let path = PathBuf::from(path);
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|source| KeyStoreError::Io { path, source })?,
            );
            return Ok(Some(Passphrase::new(
                text.lines().next().unwrap_or("").to_owned(),
            )));
        }
        Ok(None)
    }

    /// How many characters it has.
    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }

    fn secret(&self) -> age::secrecy::SecretString {
        age::secrecy::SecretString::from(self.0.as_str().to_owned())
    }
}

/// Seeds in one `age` file encrypted with a passphrase (scrypt). Each write replaces the file
/// atomically (write, fsync, rename), so a crash leaves either the old or the new file.
pub struct FileKeyStore {
    path: PathBuf,
    passphrase: Passphrase,
    cache: Mutex<Option<BTreeMap<String, Seed>>>,
}

impl FileKeyStore {
    /// Opens (without reading yet) the key file at `path`.
    pub fn open(path: PathBuf, passphrase: Passphrase) -> Result<Self, KeyStoreError> {
        if passphrase.0.is_empty() {
            return Err(KeyStoreError::NoPassphrase);
        }
        Ok(FileKeyStore {
            path,
            passphrase,
            cache: Mutex::new(None),
        })
    }

    fn io(&self, source: std::io::Error) -> KeyStoreError {
        KeyStoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn load(&self) -> Result<BTreeMap<String, Seed>, KeyStoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.io(e)),
        };
        let decrypt_error = || KeyStoreError::Decrypt(self.path.clone());
        let decryptor = age::Decryptor::new(&bytes[..]).map_err(|_| decrypt_error())?;
        let identity = age::scrypt::Identity::new(self.passphrase.secret());
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(|_| decrypt_error())?;
        let mut plain = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut plain)
            .map_err(|_| decrypt_error())?;
        let encoded = EncodedSeeds(serde_json::from_slice(&plain).map_err(|_| decrypt_error())?);
        let mut seeds = BTreeMap::new();
        for (name, value) in encoded.0.iter() {
            let bytes = Zeroizing::new(
                crate::jose::b64_decode(value).map_err(|_| KeyStoreError::Corrupt(name.clone()))?,
            );
            let seed =
                Seed::from_slice(&bytes).ok_or_else(|| KeyStoreError::Corrupt(name.clone()))?;
            seeds.insert(name.clone(), seed);
        }
        Ok(seeds)
    }

    fn save(&self, seeds: &BTreeMap<String, Seed>) -> Result<(), KeyStoreError> {
        let encoded = EncodedSeeds(
            seeds
                .iter()
                .map(|(name, seed)| (name.clone(), crate::jose::b64(seed.expose())))
                .collect(),
        );
        let plain = Zeroizing::new(serde_json::to_vec(&encoded.0).expect("map serializes"));
        let mut cipher = Vec::new();
        let encryptor = age::Encryptor::with_user_passphrase(self.passphrase.secret());
        let mut writer = encryptor.wrap_output(&mut cipher).map_err(|e| self.io(e))?;
        writer.write_all(&plain).map_err(|e| self.io(e))?;
        writer.finish().map_err(|e| self.io(e))?;
        crate::fsutil::write_atomically(&self.path, &cipher).map_err(|e| self.io(e))
    }

    /// Applies `change` to the file's current content under an exclusive lock on a sibling
    /// lock file, re-reading the file inside the lock, so concurrent writers (two CLI runs, a
    /// server and the CLI) never overwrite each other's keys.
    fn modify(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Seed>) -> bool,
    ) -> Result<(), KeyStoreError> {
        let lock_path = self.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let mut seeds = self.load()?;
        if change(&mut seeds) {
            self.save(&seeds)?;
        }
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(seeds);
        drop(lock);
        Ok(())
    }

    /// The seed named `entry`, from the cache, re-reading the file once on a miss (another
    /// process may have added it since).
    fn lookup(&self, entry: &str) -> Result<Option<Seed>, KeyStoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seed) = cache.as_ref().and_then(|seeds| seeds.get(entry)) {
            return Ok(Some(seed.clone()));
        }
        let seeds = self.load()?;
        let found = seeds.get(entry).cloned();
        *cache = Some(seeds);
        Ok(found)
    }

    fn entry_name(name: &KeyName) -> String {
        format!("{}/{}", name.service(), name.user())
    }
}

impl KeyStore for FileKeyStore {
    fn kind(&self) -> KeyStoreKind {
        KeyStoreKind::File
    }

    fn put(&self, name: &KeyName, seed: &Seed) -> Result<(), KeyStoreError> {
        self.modify(|seeds| {
            seeds.insert(Self::entry_name(name), seed.clone());
            true
        })
    }

    fn get(&self, name: &KeyName) -> Result<Seed, KeyStoreError> {
        self.lookup(&Self::entry_name(name))?
            .ok_or_else(|| KeyStoreError::NotFound(name.to_string()))
    }

    fn delete(&self, name: &KeyName) -> Result<(), KeyStoreError> {
        self.modify(|seeds| seeds.remove(&Self::entry_name(name)).is_some())
    }
}

/// Base64url-encoded seeds by entry name, wiped when dropped.
struct EncodedSeeds(BTreeMap<String, String>);

impl Drop for EncodedSeeds {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for value in self.0.values_mut() {
            value.zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(path: &Path) -> FileKeyStore {
        FileKeyStore::open(path.to_owned(), Passphrase::new("correct horse".into())).unwrap()
    }

    #[test]
    fn file_store_writers_with_stale_caches_never_drop_each_others_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys.age");
        let (a, b) = (store(&path), store(&path));
        let x = KeyName::agent("inst", "agent://x", Algorithm::Ed25519);
        let y = KeyName::agent("inst", "agent://y", Algorithm::Ed25519);
        // b reads (and caches) the file before a writes x; then b writes y.
        assert!(matches!(b.get(&x), Err(KeyStoreError::NotFound(_))));
        let (sx, sy) = (Seed::generate().unwrap(), Seed::generate().unwrap());
        a.put(&x, &sx).unwrap();
        b.put(&y, &sy).unwrap();
        // A stale cache also finds keys added by another writer.
        assert_eq!(b.get(&x).unwrap().expose(), sx.expose());
        let fresh = store(&path);
        assert_eq!(fresh.get(&x).unwrap().expose(), sx.expose());
        assert_eq!(fresh.get(&y).unwrap().expose(), sy.expose());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn file_store_with_a_wrong_passphrase_fails_without_touching_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys.age");
        let name = KeyName::ca("inst", Algorithm::MlDsa65);
        store(&path).put(&name, &Seed::generate().unwrap()).unwrap();
        let before = std::fs::read(&path).unwrap();
        let wrong = FileKeyStore::open(path.clone(), Passphrase::new("wrong".into())).unwrap();
        assert!(matches!(wrong.get(&name), Err(KeyStoreError::Decrypt(_))));
        assert!(matches!(
            wrong.put(&name, &Seed::generate().unwrap()),
            Err(KeyStoreError::Decrypt(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
