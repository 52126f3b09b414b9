//! The authority of one installation: a data directory holding the SQLite database, with the
//! CA's and agents' seeds in a key store. Every operation the product has is a method of
//! [`Installation`]; the CLI, MCP and HTTP front-ends only parse, call one of them, and shape the
//! result.
//!
//! One file per concern, each a further `impl Installation` block: `agents` (agents and their
//! certificates), `signing`, `delegating`, `policy`, `peer` (challenges, presentations, verdicts),
//! `access_tokens` (for the hub), `revoke`, `crl`, `audit_log` (with checkpoints and proofs),
//! `signalling` (webhooks), `limits`, `backup` (and lost keys), `rotation` (agent keys), `renewal`
//! and `ca` (the CA's key generations). This file holds the type itself: opening, creating and
//! destroying an installation, and its key cache.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::Value;

use crate::audit::{
    self, AuditEvent, AuditFault, AuditHead, AuditSummary, AuditVerifier, RecordBody, SealedRecord,
};
use crate::clock;
use crate::crypto::{Algorithm, PublicKey, Seed, SigningKey};
use crate::jose::{Jwk, JwkSet};
use crate::keystore::{self, KeyName, KeyStore, KeyStoreKind};
use crate::policy::{Decision, PolicyInput, PolicySource};
use crate::reason::VerifyError;
use crate::request::RequestError;
use crate::signals::SignalKind;
use crate::store::{AgentRecord, CertificateRecord, GrantRecord, Location, Store};
use crate::token::access::{self, AccessClaims, AccessGrant, Scope};
use crate::token::action::{self, ActionRequest, Expectations, SignedAction};
use crate::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
use crate::token::delegation::{self, Chain, GrantClaims, GrantRequest};
use crate::token::revocation::{CrlClaims, RevocationList};
use crate::token::trust::TrustAnchor;
use crate::token::trust::{Freshness, RevocationEntry, RevocationSource, RevokedKind};
use crate::verify::{
    AccessTokenCache, CertificateCache, CertificateResolver, ExternalTrust, PresentedCertificates,
    VerifiedAction, Verifier,
};

mod access_tokens;
mod agents;
mod approvals;
mod audit_log;
mod backup;
mod ca;
mod challenge;
mod console;
mod crl;
mod delegating;
mod error;
pub mod federation;
mod limits;
mod peer;
mod policy;
mod renewal;
mod replica;
mod revoke;
mod rotation;
mod sealed;
mod signalling;
mod signing;

pub use access_tokens::IssuedAccess;
use agents::create_key;
pub use agents::validate_agent_id;
pub use approvals::{
    ApprovalDecision, ApprovalError, ApprovalRequest, ApprovalStatus, DEFAULT_APPROVAL_TTL,
    MAX_APPROVAL_TTL, PendingApproval,
};
pub use audit_log::{InclusionProof, KeptState, SignedCheckpoint, Withheld};
pub use backup::RestoreReport;
pub use ca::{CaRotation, PreviousCaKeys};
pub use console::{ConsoleError, ConsoleSession, LOGIN_TTL, SESSION_TTL};
pub use crl::PublishedCrl;

/// What a published revocation list was made from: the revocations and the CA's keys.
type PublishedState = (crate::store::RevocationState, &'static TrustAnchor);
pub use delegating::IssuedGrant;
pub use error::ServiceError;
pub use limits::{
    CEILING_CERT_TTL, CEILING_CRL_VALIDITY, DEFAULT_CERT_TTL, DEFAULT_CRL_VALIDITY, Limits,
    MAX_CERT_TTL, MAX_CRL_VALIDITY,
};
pub use peer::{EvidenceError, PeerEvidence, PeerVerdict, Presentation};
pub use renewal::{DEFAULT_RENEWAL_SHARE, RENEWAL_TICK};
pub use revoke::{MAX_REASON_LEN, RevocationStatus};
pub use rotation::{MAX_ROTATION_GRACE, RotatedAgent};
pub use signalling::{AutoRevokeRule, SignalsStatus, WebhookSet};
pub use signing::{Approval, parse_args_json};

/// Name of the database file in the data directory.
pub const DATABASE_FILE: &str = "agentseal.db";

/// Which keys an agent or CA holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyChoice {
    /// Ed25519 only.
    Ed25519,
    /// ML-DSA-65 only.
    MlDsa65,
    /// Both; objects carry both signatures and verification requires both.
    Hybrid,
}

impl KeyChoice {
    /// The algorithms of this choice.
    pub fn algorithms(self) -> Vec<Algorithm> {
        match self {
            KeyChoice::Ed25519 => vec![Algorithm::Ed25519],
            KeyChoice::MlDsa65 => vec![Algorithm::MlDsa65],
            KeyChoice::Hybrid => Algorithm::ALL.to_vec(),
        }
    }
}

impl std::str::FromStr for KeyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ed25519" => Ok(KeyChoice::Ed25519),
            "ml-dsa-65" => Ok(KeyChoice::MlDsa65),
            "hybrid" => Ok(KeyChoice::Hybrid),
            other => Err(format!(
                "unknown algorithm {other:?}: use ed25519, ml-dsa-65 or hybrid"
            )),
        }
    }
}

/// What `init` should create.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The CA id; a fresh `urn:agentseal:ca:<id>` by default.
    pub ca_id: Option<String>,
    /// The CA's keys; hybrid by default.
    pub keys: KeyChoice,
    /// Lifetime limits; the defaults by default.
    pub limits: Limits,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            ca_id: None,
            keys: KeyChoice::Hybrid,
            limits: Limits::default(),
        }
    }
}

/// A summary of the installation, for `init` and status output.
#[derive(Debug, Clone, Serialize)]
pub struct InstallationInfo {
    /// The CA id.
    pub ca_id: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The database: its file, or its URL without the password.
    pub database: String,
    /// The key store in use.
    pub key_store: String,
    /// The CA's algorithms.
    pub algorithms: Vec<String>,
    /// The CA's key thumbprints (the keys it signs with).
    pub key_ids: Vec<String>,
    /// The CA's key generation (0 until the first `ca rotate`).
    pub ca_generation: u32,
    /// Thumbprints of earlier CA keys verifiers still trust (until `ca retire`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub previous_key_ids: Vec<String>,
    /// The origin line of the audit log's checkpoints.
    pub audit_origin: String,
    /// A caveat about the key store, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

/// One installation: database, key store, CA.
pub struct Installation {
    data_dir: PathBuf,
    store: Arc<Store>,
    key_store: KeyStoreKind,
    keys: OnceLock<Arc<dyn KeyStore>>,
    install_id: String,
    /// The CA as last read from the database (reread when another process rotates or retires
    /// its keys, see [`ca::CaState`]).
    ca: std::sync::RwLock<ca::CaState>,
    /// When this process last looked for a change to the CA's keys.
    ca_checked: Mutex<std::time::Instant>,
    signers: Mutex<HashMap<String, Arc<Vec<SigningKey>>>>,
    /// Certificates whose CA signatures were verified (own agents' and peers'): a call re-checks
    /// their lifetime and revocation, not their signatures.
    verified: CertificateCache,
    /// Access tokens whose CA signature was verified: a request re-checks their audience,
    /// lifetime and revocation, not their signature.
    access_tokens: AccessTokenCache,
    published: Mutex<Option<(PublishedState, PublishedCrl)>>,
    /// Whether (and when) this process renews certificates by itself.
    renewal: renewal::RenewalShare,
    /// The audit log as far as this process verified it, and its latest checkpoint.
    audit_tree: Mutex<Option<audit_log::VerifiedLog>>,
    policy: OnceLock<PolicySource>,
    outbox: OnceLock<crate::signals::Outbox>,
    signal_wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Installation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installation")
            .field("data_dir", &self.data_dir)
            .field("ca_id", &self.anchor().ca_id)
            .finish_non_exhaustive()
    }
}

/// The metadata row that `init` claims before it makes any key (its value: the install id).
const INIT_CLAIM: &str = "init_claim";

/// The embedded default: SQLite in the data directory.
pub fn sqlite_in(data_dir: &Path) -> Location {
    Location::Sqlite(data_dir.join(DATABASE_FILE))
}

/// The platform data directory (`$XDG_DATA_HOME/agentseal` on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "agentseal").map(|d| d.data_dir().to_owned())
}

impl Installation {
    /// Creates a new installation in `data_dir`: the database, and the CA's keys in the key store.
    pub fn init(
        data_dir: &Path,
        key_store: KeyStoreKind,
        options: &InitOptions,
    ) -> Result<Installation, ServiceError> {
        Installation::init_in(data_dir, &sqlite_in(data_dir), key_store, options)
    }

    /// Creates a new installation whose database is `database`. With a shared database
    /// (PostgreSQL) the seeds go into it sealed under a key-encryption key kept in `key_store`
    /// (see `sealed`); the data directory then holds only what is this replica's.
    pub fn init_in(
        data_dir: &Path,
        database: &Location,
        key_store: KeyStoreKind,
        options: &InitOptions,
    ) -> Result<Installation, ServiceError> {
        options.limits.check()?;
        crate::fsutil::create_private_dir(data_dir).map_err(|source| ServiceError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let store = Arc::new(Store::connect(database)?);
        if store.meta("ca_id")?.is_some() {
            return Err(ServiceError::AlreadyInitialized(data_dir.to_owned()));
        }
        let install_id = clock::random_id()?;
        let ca_id = options
            .ca_id
            .clone()
            .unwrap_or_else(|| format!("urn:agentseal:ca:{install_id}"));
        if ca_id.is_empty() || ca_id.len() > 256 || ca_id.chars().any(char::is_control) {
            return Err(ServiceError::InvalidInput(format!(
                "invalid CA id {ca_id:?}"
            )));
        }
        // Of processes creating an installation in one database at once (hubs starting
        // together), one goes on; the others find it taken, and none mixes its keys in.
        if !store.claim_meta(INIT_CLAIM, &install_id)? {
            if store.meta("ca_id")?.is_some() {
                return Err(ServiceError::AlreadyInitialized(data_dir.to_owned()));
            }
            return Err(ServiceError::InvalidInput(format!(
                "another `agentseal init` is creating an installation in {} (or one failed half-way: remove the meta row {INIT_CLAIM:?} once none runs)",
                store.location()
            )));
        }
        let created = Installation::create_in(
            data_dir,
            &store,
            database,
            key_store,
            options,
            &install_id,
            ca_id,
        );
        if created.is_err() {
            // Nothing of a failed creation may block the next one.
            let _ = store.remove_meta(&[INIT_CLAIM]);
        }
        created
    }

    /// The rest of [`Installation::init_in`], once this process has claimed the database.
    fn create_in(
        data_dir: &Path,
        store: &Arc<Store>,
        database: &Location,
        key_store: KeyStoreKind,
        options: &InitOptions,
        install_id: &str,
        ca_id: String,
    ) -> Result<Installation, ServiceError> {
        let store = store.clone();
        let install_id = install_id.to_owned();
        let local = keystore::open(key_store, data_dir)?;
        let keys: Arc<dyn KeyStore> = match database {
            Location::Sqlite(_) => local,
            Location::Postgres(_) => {
                if store.sealed_secret(sealed::CHECK)?.is_some() {
                    return Err(ServiceError::Store(store.corrupt(
                        "sealed keys without an installation: refusing to seal new ones over them",
                    )));
                }
                Arc::new(sealed::SealedKeyStore::create(
                    local,
                    store.clone(),
                    &install_id,
                )?)
            }
        };
        let made = Installation::make_ca(data_dir, store.clone(), keys, options, install_id, ca_id);
        if made.is_err() && matches!(database, Location::Postgres(_)) {
            // Ours: written by `SealedKeyStore::create` above.
            let _ = store.delete_sealed_secret(sealed::CHECK);
        }
        made
    }

    /// The CA's keys and the installation's records, in a database claimed for it.
    fn make_ca(
        data_dir: &Path,
        store: Arc<Store>,
        keys: Arc<dyn KeyStore>,
        options: &InitOptions,
        install_id: String,
        ca_id: String,
    ) -> Result<Installation, ServiceError> {
        let limits = serde_json::to_string(&options.limits).expect("limits serialize");
        let mut public = Vec::new();
        let mut signers = Vec::new();
        for algorithm in options.keys.algorithms() {
            let name = KeyName::ca(&install_id, algorithm);
            let key = create_key(keys.as_ref(), &name, algorithm)?;
            public.push(key.public_key().clone());
            signers.push(key);
        }
        let jwks = JwkSet {
            keys: public.iter().map(Jwk::from_public_key).collect(),
        };
        let jwks = serde_json::to_string(&jwks).expect("JWKS serializes");
        store.set_meta(&[
            ("install_id", &install_id),
            ("key_store", keys.kind().name()),
            ("ca_jwks", &jwks),
            ("ca_history_jwks", &jwks),
            ("ca_id", &ca_id),
            ("limits", &limits),
        ])?;
        let key_store = keys.kind();
        let ca = ca::CaKeys {
            current: public,
            generation: 0,
            previous: Vec::new(),
        };
        let installation = Installation::assemble(
            data_dir,
            store,
            key_store,
            OnceLock::from(keys),
            install_id,
            ca_id,
            ca,
        );
        installation.cache_signers("ca", signers);
        Ok(installation)
    }

    /// Opens the installation in `data_dir`. `Auto` uses the key store recorded at `init`.
    pub fn open(data_dir: &Path, key_store: KeyStoreKind) -> Result<Installation, ServiceError> {
        Installation::open_in(data_dir, &sqlite_in(data_dir), key_store)
    }

    /// Opens the installation whose database is `database`. With a shared database, each
    /// replica may keep its key-encryption key in a key store of its own kind.
    pub fn open_in(
        data_dir: &Path,
        database: &Location,
        key_store: KeyStoreKind,
    ) -> Result<Installation, ServiceError> {
        if let Location::Sqlite(path) = database
            && !path.exists()
        {
            return Err(ServiceError::NotInitialized(data_dir.to_owned()));
        }
        let store = Arc::new(Store::connect(database)?);
        let corrupt = |what: &str| store.corrupt(format!("missing or invalid {what}"));
        let Some(ca_id) = store.meta("ca_id")? else {
            return Err(ServiceError::NotInitialized(data_dir.to_owned()));
        };
        let install_id = store
            .meta("install_id")?
            .ok_or_else(|| corrupt("install_id"))?;
        let recorded: KeyStoreKind = store
            .meta("key_store")?
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| corrupt("key_store"))?;
        // A replica of a shared database keeps its key-encryption key in a store of its own
        // choosing; the recorded kind is the first replica's.
        let kind = match (database, key_store) {
            (Location::Postgres(_), KeyStoreKind::Auto) => keystore::resolve_auto(),
            (Location::Postgres(_), requested) => requested,
            (Location::Sqlite(_), requested)
                if requested != KeyStoreKind::Auto && requested != recorded =>
            {
                return Err(ServiceError::KeyStoreMismatch {
                    recorded,
                    requested,
                });
            }
            (Location::Sqlite(_), _) => recorded,
        };
        let ca = ca::CaKeys::read(&store).map_err(corrupt)?;
        Ok(Installation::assemble(
            data_dir,
            store,
            kind,
            OnceLock::new(),
            install_id,
            ca_id,
            ca,
        ))
    }

    /// An installation over its database and CA, with this process's caches and books empty:
    /// the one place both `init` and `open` build it.
    fn assemble(
        data_dir: &Path,
        store: Arc<Store>,
        key_store: KeyStoreKind,
        keys: OnceLock<Arc<dyn KeyStore>>,
        install_id: String,
        ca_id: String,
        ca: ca::CaKeys,
    ) -> Installation {
        let revision = store.meta(ca::CA_REVISION).ok().flatten();
        Installation {
            data_dir: data_dir.to_owned(),
            store,
            key_store,
            keys,
            install_id,
            ca: std::sync::RwLock::new(ca::CaState::new(ca_id, ca, revision)),
            ca_checked: Mutex::new(std::time::Instant::now()),
            signers: Mutex::new(HashMap::new()),
            verified: CertificateCache::default(),
            access_tokens: AccessTokenCache::default(),
            published: Mutex::default(),
            renewal: renewal::RenewalShare::default(),
            audit_tree: Mutex::default(),
            policy: OnceLock::new(),
            outbox: OnceLock::new(),
            signal_wake: Arc::default(),
        }
    }

    /// A summary of this installation.
    pub fn info(&self) -> InstallationInfo {
        InstallationInfo {
            ca_id: self.anchor().ca_id.clone(),
            data_dir: self.data_dir.clone(),
            database: self.store.location().to_string(),
            key_store: self.key_store.name().to_owned(),
            algorithms: self
                .ca_keys()
                .current
                .iter()
                .map(|k| k.algorithm().name().to_owned())
                .collect(),
            key_ids: self
                .ca_keys()
                .current
                .iter()
                .map(crate::jose::thumbprint)
                .collect(),
            ca_generation: self.ca_keys().generation,
            previous_key_ids: self
                .anchor()
                .keys
                .iter()
                .filter(|k| !self.ca_keys().current.contains(k))
                .map(crate::jose::thumbprint)
                .collect(),
            audit_origin: self.audit_origin(),
            caveat: self.key_store.caveat().map(str::to_owned),
        }
    }

    /// The CA's id and the public keys verifiers trust (current and earlier generations not
    /// retired), as of the last look at the database (at most [`ca::CA_RECHECK`] ago).
    pub fn trust_anchor(&self) -> &'static TrustAnchor {
        self.anchor()
    }

    /// The database (public data only).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The public keys peers need: the CA's, then every agent's current keys.
    pub fn jwks(&self) -> Result<JwkSet, ServiceError> {
        let mut set = self.anchor().jwks();
        for agent in self.store.agents()? {
            if let Ok(record) = self.current_certificate_record(&agent)
                && let Ok((_, _, keys)) = AgentCertificate::parse_unverified(&record.encoded)
            {
                set.keys.extend(keys.iter().map(Jwk::from_public_key));
            }
        }
        Ok(set)
    }

    /// Deletes the installation: every CA and agent key from the key store, then the database
    /// and key file. Irreversible; returns how many keys were deleted.
    ///
    /// With a shared database this destroys the installation for every replica: the sealed
    /// seeds and the check value are deleted from the database (no replica can sign again) and
    /// this replica's key-encryption key from its key store; the tables stay for the operator
    /// to drop, and other replicas' key stores keep a key that now opens nothing.
    pub fn destroy(self) -> Result<usize, ServiceError> {
        let mut deleted = self.delete_keys()?;
        if let Location::Postgres(_) = self.store.location() {
            keystore::open(self.key_store, &self.data_dir)?
                .delete(&KeyName::replica_kek(&self.install_id))?;
            self.store.delete_sealed_secret(sealed::CHECK)?;
            deleted += 1;
        }
        let data_dir = self.data_dir.clone();
        drop(self);
        for file in [
            DATABASE_FILE,
            "agentseal.db-wal",
            "agentseal.db-shm",
            "keys.age",
        ] {
            match std::fs::remove_file(data_dir.join(file)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ServiceError::Io {
                        path: data_dir.join(file),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(deleted)
    }

    /// The key store, opened on first use: verification never needs it, so a verifier works
    /// without a keyring session or a file-store passphrase.
    fn key_store(&self) -> Result<&Arc<dyn KeyStore>, ServiceError> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        let local = keystore::open(self.key_store, &self.data_dir)?;
        let opened: Arc<dyn KeyStore> = match self.store.location() {
            Location::Sqlite(_) => local,
            Location::Postgres(_) => Arc::new(sealed::SealedKeyStore::open(
                local,
                self.store.clone(),
                &self.install_id,
            )?),
        };
        Ok(self.keys.get_or_init(|| opened))
    }

    fn cache_signers(&self, owner: &str, keys: Vec<SigningKey>) {
        let mut cache = self.signers.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(owner.to_owned(), Arc::new(keys));
    }

    /// The signing keys of `owner` matching `expected`, loaded from the key store once per
    /// process and checked against the public keys on record.
    fn signers(
        &self,
        owner: &str,
        expected: &[PublicKey],
        name: impl Fn(Algorithm) -> KeyName,
    ) -> Result<Arc<Vec<SigningKey>>, ServiceError> {
        if let Some(keys) = self
            .signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(owner)
            && keys.iter().map(SigningKey::public_key).eq(expected.iter())
        {
            return Ok(keys.clone());
        }
        let mut keys = Vec::with_capacity(expected.len());
        for public in expected {
            let name = name(public.algorithm());
            let seed = match self.key_store()?.get(&name) {
                Ok(seed) => seed,
                Err(keystore::KeyStoreError::NotFound(_)) => {
                    return Err(self.keys_missing(vec![name.user()]));
                }
                Err(e) => return Err(e.into()),
            };
            let key = SigningKey::from_seed(public.algorithm(), &seed);
            if key.public_key() != public {
                return Err(ServiceError::KeyMismatch(name.to_string()));
            }
            keys.push(key);
        }
        self.cache_signers(owner, keys);
        Ok(self.signers.lock().unwrap_or_else(|p| p.into_inner())[owner].clone())
    }
}
