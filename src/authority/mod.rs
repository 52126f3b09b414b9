//! The identity service of one installation: a data directory holding the SQLite database, with
//! the CA's and agents' seeds in a key store. Every operation the product has is a method here;
//! the CLI, MCP and HTTP front-ends only parse, call one of them, and shape the result.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::Value;

use crate::audit::{
    self, AuditEvent, AuditFault, AuditHead, AuditSummary, AuditVerifier, RecordBody, SealedRecord,
};
use crate::authority::challenge::ChallengeBook;
use crate::clock;
use crate::crypto::{Algorithm, CryptoError, PublicKey, Seed, SigningKey};
use crate::jose::{Jwk, JwkSet};
use crate::keystore::{self, KeyName, KeyStore, KeyStoreError, KeyStoreKind};
use crate::policy::{Decision, PolicyError, PolicyInput, PolicySource, RateLimiter};
use crate::reason::VerifyError;
use crate::signals::SignalKind;
use crate::store::{AgentRecord, CertificateRecord, GrantRecord, Store, StoreError};
use crate::token::access::{self, AccessClaims, AccessGrant, Scope};
use crate::token::action::{self, ActionRequest, Expectations, SignedAction};
use crate::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
use crate::token::delegation::{self, Chain, GrantClaims, GrantRequest};
use crate::token::revocation::{CrlClaims, RevocationList};
use crate::token::trust::TrustAnchor;
use crate::token::trust::{Freshness, RevocationEntry, RevocationSource, RevokedKind};
use crate::verify::{CertificateResolver, PresentedCertificates, VerifiedAction, Verifier};

mod challenge;
mod signalling;

pub use signalling::{AutoRevokeRule, SignalsStatus, WebhookSet};

/// Default certificate lifetime: 90 days.
pub const DEFAULT_CERT_TTL: i64 = 90 * 86_400;
/// Default revocation list validity: one hour until `next_update`.
pub const DEFAULT_CRL_VALIDITY: i64 = 3_600;
/// Name of the database file in the data directory.
pub const DATABASE_FILE: &str = "agentseal.db";

/// Errors of service operations. Messages say what to do; none carries key material.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No installation in the data directory.
    #[error("no agentseal installation in {0}: run `agentseal init` first")]
    NotInitialized(PathBuf),
    /// `init` on a directory that already holds one.
    #[error("{0} already holds an agentseal installation")]
    AlreadyInitialized(PathBuf),
    /// The requested key store differs from the one the installation was created with.
    #[error(
        "this installation keeps its keys in {recorded}, not {requested}: drop --key-store or pass {recorded}"
    )]
    KeyStoreMismatch {
        /// The store recorded at `init`.
        recorded: KeyStoreKind,
        /// The store asked for now.
        requested: KeyStoreKind,
    },
    /// No such agent.
    #[error("unknown agent {0:?}: see `agentseal agent list`")]
    UnknownAgent(String),
    /// The agent exists already.
    #[error("agent {0:?} already exists")]
    AgentExists(String),
    /// Bad input from the caller.
    #[error("{0}")]
    InvalidInput(String),
    /// Nothing to revoke matched.
    #[error("no certificate or agent {0:?}")]
    UnknownCertificate(String),
    /// The agent's certificate cannot be used to sign.
    #[error("agent {agent}'s certificate is not usable ({reason}){}", renewal_hint(.reason))]
    CertificateUnusable {
        /// The agent.
        agent: String,
        /// Why.
        reason: VerifyError,
    },
    /// The key store's seed does not match the certificate's key.
    #[error(
        "the key store's {0} key does not match the certificate: it was replaced or belongs to another installation"
    )]
    KeyMismatch(String),
    /// The caller may not do this.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// The policy refuses the operation.
    #[error("denied by policy: {}", .0.join("; "))]
    PolicyDenied(Vec<String>),
    /// The policy's rate limit for this agent is reached.
    #[error("rate limited by policy: try again in {0} s")]
    RateLimited(i64),
    /// The policy wants a person to approve this first, and nobody has.
    #[error("this action needs a person's approval: {0}")]
    ApprovalRequired(String),
    /// The policy cannot be loaded or evaluated: operations it governs are refused.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No trustworthy answer can be given (for example, the revocation data is stale).
    #[error("{code}: {0}", code = .0.code())]
    Unverifiable(VerifyError),
    /// The key store failed.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A cryptographic primitive failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The webhook outbox failed.
    #[error(transparent)]
    Signals(#[from] crate::signals::SignalError),
    /// Creating the data directory failed.
    #[error("data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ServiceError {
    /// A stable code for the kind of error (audit records and machine-readable output).
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::NotInitialized(_) => "not_initialized",
            ServiceError::AlreadyInitialized(_) => "already_initialized",
            ServiceError::KeyStoreMismatch { .. } => "key_store_mismatch",
            ServiceError::UnknownAgent(_) => "unknown_agent",
            ServiceError::AgentExists(_) => "agent_exists",
            ServiceError::InvalidInput(_) => "invalid_input",
            ServiceError::UnknownCertificate(_) => "unknown_certificate",
            ServiceError::CertificateUnusable { .. } => "certificate_unusable",
            ServiceError::KeyMismatch(_) => "key_mismatch",
            ServiceError::NotPermitted(_) => "not_permitted",
            ServiceError::Unverifiable(reason) => reason.code(),
            ServiceError::PolicyDenied(_) => "policy_denied",
            ServiceError::RateLimited(_) => "rate_limited",
            ServiceError::ApprovalRequired(_) => "approval_required",
            ServiceError::Policy(_) => "policy_error",
            ServiceError::KeyStore(_) => "key_store_error",
            ServiceError::Store(_) => "database_error",
            ServiceError::Crypto(_) => "crypto_error",
            ServiceError::Signals(_) => "signals_error",
            ServiceError::Io { .. } => "io_error",
        }
    }
}

fn renewal_hint(reason: &VerifyError) -> &'static str {
    match reason {
        VerifyError::CertificateExpired(_) | VerifyError::CertificateNotYetValid(_) => {
            ": renew it with `agentseal cert renew`"
        }
        VerifyError::CertificateRevoked { .. } => ": its keys are revoked; create a new agent",
        _ => "",
    }
}

/// Which keys an agent or CA holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            ca_id: None,
            keys: KeyChoice::Hybrid,
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
    /// The database file.
    pub database: PathBuf,
    /// The key store in use.
    pub key_store: String,
    /// The CA's algorithms.
    pub algorithms: Vec<String>,
    /// The CA's key thumbprints.
    pub key_ids: Vec<String>,
    /// A caveat about the key store, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

/// The answer to a revocation query.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationStatus {
    /// `token` or `certificate`.
    pub kind: RevokedKind,
    /// The token id or certificate serial asked about.
    pub id: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When and why, if revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationEntry>,
    /// How fresh the answer is.
    pub freshness: Freshness,
}

/// What a peer presented for verification.
#[derive(Debug, Clone, Default)]
pub struct PeerEvidence {
    /// An action token.
    pub token: Option<String>,
    /// A certificate.
    pub certificate: Option<String>,
    /// A proof of possession for the certificate.
    pub proof: Option<String>,
    /// The challenge this side issued for the proof.
    pub challenge: Option<String>,
    /// This side's identity: the audience tokens and proofs must name.
    pub audience: String,
    /// The action about to be performed, if known.
    pub action: Option<String>,
    /// The arguments about to be used, if known.
    pub args: Option<Value>,
    /// Record the token as used, durably until it expires: a later verification of it (consuming
    /// or not) answers `replayed`. Set it when acting on the token.
    pub consume: bool,
    /// Accept a proof over a challenge this installation did not issue. Off by default: a proof
    /// counts only over a challenge from [`Installation::issue_challenge`], which it consumes.
    pub allow_unissued_challenge: bool,
}

/// The outcome of [`Installation::verify_peer`].
#[derive(Debug, Clone, Serialize)]
pub struct PeerVerdict {
    /// Whether everything presented verified.
    pub valid: bool,
    /// Reason codes when not valid (see docs/reason-codes.md).
    pub reasons: Vec<String>,
    /// A human-readable explanation when not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The verified agent id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The verified certificate's claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateClaims>,
    /// The verified token's claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<action::ActionClaims>,
    /// The verified delegation chain, when the token's signer acts for another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation: Option<crate::verify::VerifiedChain>,
    /// Whether a proof of possession was verified.
    pub proof_verified: bool,
    /// How fresh the revocation data used is.
    pub revocation: Freshness,
}

/// Certificates the peer presented first, then the installation's own records.
struct Fallback<'a>(&'a PresentedCertificates, &'a Installation);

impl CertificateResolver for Fallback<'_> {
    fn certificate(&self, serial: &str) -> Option<String> {
        self.0
            .certificate(serial)
            .or_else(|| CertificateResolver::certificate(self.1, serial))
    }
}

/// A signed revocation list as published, with what its cache headers need.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    /// The signed list.
    pub encoded: String,
    /// Its number.
    pub number: u64,
    /// When it was issued.
    pub issued_at: i64,
    /// When the next list is due.
    pub next_update: i64,
}

/// Another CA that verifications also trust: a hub's, with its latest revocation list.
#[derive(Debug, Clone, Copy)]
pub struct ExternalTrust<'a> {
    /// The other CA.
    pub anchor: &'a TrustAnchor,
    /// Its revocation list; lookups fail closed once it is stale.
    pub revocation: &'a RevocationList,
}

/// An issued access token for the HTTP hub.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedAccess {
    /// The bearer token.
    pub token: String,
    /// Its id, to revoke it.
    pub jti: String,
    /// When it expires.
    pub exp: i64,
    /// The agent it acts as.
    pub agent_id: String,
    /// The hub MCP URL it is valid for.
    pub audience: String,
    /// Its scopes, space-separated.
    pub scope: String,
}

/// The `jti` of a token of any kind, read without verifying it.
fn jti_of(token: &str) -> Result<String, VerifyError> {
    let jws = crate::jose::Jws::parse(token)?;
    let claims = crate::jose::parse_strict_json(&jws.payload)?;
    match claims.get("jti").and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() => Ok(jti.to_owned()),
        _ => Err(VerifyError::Malformed("the token has no jti".into())),
    }
}

/// Whether a person approved an operation the policy marks for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Nobody was asked (or the caller cannot ask).
    NotGiven,
    /// The person at the agent's MCP client approved this very request.
    Given,
    /// The operator ran it from the CLI: the operator is the approving person.
    Operator,
}

/// A delegation grant just signed.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedGrant {
    /// The signed grant (send it to the delegate if it lives on another hub).
    pub grant: String,
    /// Its id: revoke it like a token id.
    pub grant_id: String,
    /// For whom the delegate may act.
    pub principal: String,
    /// The delegate.
    pub delegate: String,
    /// When it expires (capped at the delegator's own grant).
    pub expires_at: i64,
    /// Actors in the chain, the delegate included.
    pub depth: usize,
}

/// A principal or actor named in a chain: a non-empty id of at most 256 printable bytes.
fn check_party(party: &str) -> Result<(), ServiceError> {
    if !delegation::is_user_principal(party) && validate_agent_id(party).is_err()
        || !party.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ServiceError::InvalidInput(
            "on_behalf_of must be an agent id or user:<id> (printable ASCII, no spaces, at most 256 bytes)"
                .into(),
        ));
    }
    Ok(())
}

/// The claims of a grant read back from the database.
fn grant_claims(encoded: &str) -> Result<GrantClaims, ServiceError> {
    delegation::parse_unverified(encoded)
        .map(|(_, claims)| claims)
        .map_err(|e| ServiceError::InvalidInput(format!("stored delegation grant: {e}")))
}

/// A certificate as presented to a peer, with a proof of possession when a challenge was given.
#[derive(Debug, Clone, Serialize)]
pub struct Presentation {
    /// The encoded certificate.
    pub certificate: String,
    /// The proof of possession (`agent-pop+jwt`), if a challenge was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// One installation: database, key store, CA.
pub struct Installation {
    data_dir: PathBuf,
    store: Store,
    key_store: KeyStoreKind,
    keys: OnceLock<Arc<dyn KeyStore>>,
    install_id: String,
    anchor: TrustAnchor,
    signers: Mutex<HashMap<String, Arc<Vec<SigningKey>>>>,
    challenges: ChallengeBook,
    published: Mutex<Option<((i64, i64), PublishedCrl)>>,
    policy: OnceLock<PolicySource>,
    rates: RateLimiter,
    outbox: OnceLock<crate::signals::Outbox>,
    signal_wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Installation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installation")
            .field("data_dir", &self.data_dir)
            .field("ca_id", &self.anchor.ca_id)
            .finish_non_exhaustive()
    }
}

/// The platform data directory (`$XDG_DATA_HOME/agentseal` on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "agentseal").map(|d| d.data_dir().to_owned())
}

/// Checks an agent id: a URI-like string (`scheme:rest`), printable, without spaces, at most
/// 256 bytes. Example: `agent://acme.example/code-reviewer`.
pub fn validate_agent_id(agent_id: &str) -> Result<(), ServiceError> {
    let scheme_ok = agent_id.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if agent_id.len() > 256
        || !scheme_ok
        || agent_id.starts_with(crate::token::delegation::USER_SCHEME)
        || agent_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ServiceError::InvalidInput(format!(
            "invalid agent id {agent_id:?}: use a URI without spaces, at most 256 bytes, \
             for example agent://acme.example/code-reviewer"
        )));
    }
    Ok(())
}

impl Installation {
    /// Creates a new installation in `data_dir`: the database, and the CA's keys in the key store.
    pub fn init(
        data_dir: &Path,
        key_store: KeyStoreKind,
        options: &InitOptions,
    ) -> Result<Installation, ServiceError> {
        crate::fsutil::create_private_dir(data_dir).map_err(|source| ServiceError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let store = Store::open(&data_dir.join(DATABASE_FILE))?;
        if store.meta("ca_id")?.is_some() {
            return Err(ServiceError::AlreadyInitialized(data_dir.to_owned()));
        }
        let keys = keystore::open(key_store, data_dir)?;
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
            ("ca_id", &ca_id),
        ])?;
        let installation = Installation {
            data_dir: data_dir.to_owned(),
            store,
            key_store: keys.kind(),
            keys: OnceLock::from(keys),
            install_id,
            anchor: TrustAnchor {
                ca_id,
                keys: public,
            },
            signers: Mutex::new(HashMap::new()),
            challenges: ChallengeBook::default(),
            published: Mutex::default(),
            policy: OnceLock::new(),
            rates: RateLimiter::default(),
            outbox: OnceLock::new(),
            signal_wake: Arc::default(),
        };
        installation.cache_signers("ca", signers);
        Ok(installation)
    }

    /// Opens the installation in `data_dir`. `Auto` uses the key store recorded at `init`.
    pub fn open(data_dir: &Path, key_store: KeyStoreKind) -> Result<Installation, ServiceError> {
        let path = data_dir.join(DATABASE_FILE);
        if !path.exists() {
            return Err(ServiceError::NotInitialized(data_dir.to_owned()));
        }
        let store = Store::open(&path)?;
        let corrupt =
            |what: &str| StoreError::Corrupt(path.clone(), format!("missing or invalid {what}"));
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
        if key_store != KeyStoreKind::Auto && key_store != recorded {
            return Err(ServiceError::KeyStoreMismatch {
                recorded,
                requested: key_store,
            });
        }
        let jwks: JwkSet = store
            .meta("ca_jwks")?
            .and_then(|j| serde_json::from_str(&j).ok())
            .ok_or_else(|| corrupt("ca_jwks"))?;
        let ca_keys = jwks
            .keys
            .iter()
            .map(Jwk::to_public_key)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt("ca_jwks"))?;
        Ok(Installation {
            data_dir: data_dir.to_owned(),
            store,
            key_store: recorded,
            keys: OnceLock::new(),
            install_id,
            anchor: TrustAnchor {
                ca_id,
                keys: ca_keys,
            },
            signers: Mutex::new(HashMap::new()),
            challenges: ChallengeBook::default(),
            published: Mutex::default(),
            policy: OnceLock::new(),
            rates: RateLimiter::default(),
            outbox: OnceLock::new(),
            signal_wake: Arc::default(),
        })
    }

    /// A summary of this installation.
    pub fn info(&self) -> InstallationInfo {
        InstallationInfo {
            ca_id: self.anchor.ca_id.clone(),
            data_dir: self.data_dir.clone(),
            database: self.store.path().to_owned(),
            key_store: self.key_store.name().to_owned(),
            algorithms: self
                .anchor
                .keys
                .iter()
                .map(|k| k.algorithm().name().to_owned())
                .collect(),
            key_ids: self
                .anchor
                .keys
                .iter()
                .map(crate::jose::thumbprint)
                .collect(),
            caveat: self.key_store.caveat().map(str::to_owned),
        }
    }

    /// The CA's public keys and id.
    pub fn trust_anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// The database (public data only).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates an agent: its keys in the key store, and its first certificate.
    pub fn create_agent(
        &self,
        agent_id: &str,
        keys: KeyChoice,
        meta: BTreeMap<String, String>,
        ttl: Option<i64>,
    ) -> Result<AgentCertificate, ServiceError> {
        validate_agent_id(agent_id)?;
        if self.store.agent(agent_id)?.is_some() {
            return Err(ServiceError::AgentExists(agent_id.to_owned()));
        }
        let mut signers = Vec::new();
        for algorithm in keys.algorithms() {
            let name = KeyName::agent(&self.install_id, agent_id, algorithm);
            signers.push(create_key(self.key_store()?.as_ref(), &name, algorithm)?);
        }
        let public: Vec<PublicKey> = signers.iter().map(|k| k.public_key().clone()).collect();
        let now = clock::now();
        let (certificate, record) =
            self.issue_certificate(agent_id, &public, meta.clone(), ttl, now)?;
        let agent = AgentRecord {
            agent_id: agent_id.to_owned(),
            algorithms: keys
                .algorithms()
                .iter()
                .map(|a| a.name().to_owned())
                .collect(),
            meta,
            created_at: now,
            current_serial: None,
        };
        if !self.store.insert_agent(&agent, &record)? {
            return Err(ServiceError::AgentExists(agent_id.to_owned()));
        }
        self.cache_signers(&format!("agent:{agent_id}"), signers);
        Ok(certificate)
    }

    /// Issues a new certificate for an existing agent's keys (same keys, fresh serial and
    /// validity), and makes it current.
    pub fn renew_certificate(
        &self,
        agent_id: &str,
        ttl: Option<i64>,
    ) -> Result<AgentCertificate, ServiceError> {
        let agent = self.agent(agent_id)?;
        let current = self.current_certificate_record(&agent)?;
        // A revoked certificate means its keys are not to be trusted: renewing would re-certify
        // them. The agent needs new keys (a new agent id, for now).
        if let Some(entry) = self
            .store
            .revocation(RevokedKind::Certificate, &current.serial)?
        {
            return Err(ServiceError::InvalidInput(format!(
                "agent {agent_id}'s certificate {} was revoked ({}): its keys cannot be re-certified; create a new agent",
                current.serial, entry.reason
            )));
        }
        let (_, claims, keys) =
            AgentCertificate::parse_unverified(&current.encoded).map_err(|e| {
                StoreError::Corrupt(self.store.path().to_owned(), format!("certificate: {e}"))
            })?;
        let (certificate, record) =
            self.issue_certificate(agent_id, &keys, claims.meta, ttl, clock::now())?;
        self.store.add_certificate(&record)?;
        Ok(certificate)
    }

    fn issue_certificate(
        &self,
        agent_id: &str,
        keys: &[PublicKey],
        meta: BTreeMap<String, String>,
        ttl: Option<i64>,
        now: i64,
    ) -> Result<(AgentCertificate, CertificateRecord), ServiceError> {
        let ttl = ttl.unwrap_or(DEFAULT_CERT_TTL);
        if ttl <= 0 {
            return Err(ServiceError::InvalidInput(
                "certificate TTL must be positive".into(),
            ));
        }
        let claims = CertificateClaims {
            iss: self.anchor.ca_id.clone(),
            sub: agent_id.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: clock::random_id()?,
            cnf: Confirmation::for_keys(keys),
            meta,
        };
        let ca = self.signers("ca", &self.anchor.keys, |alg| {
            KeyName::ca(&self.install_id, alg)
        })?;
        let ca_refs: Vec<&SigningKey> = ca.iter().collect();
        let encoded = AgentCertificate::issue(&claims, &ca_refs)?;
        let record = CertificateRecord {
            serial: claims.jti.clone(),
            agent_id: agent_id.to_owned(),
            issued_at: now,
            expires_at: claims.exp,
            encoded: encoded.clone(),
        };
        Ok((
            AgentCertificate {
                claims,
                keys: keys.to_vec(),
                encoded,
            },
            record,
        ))
    }

    /// One agent's record.
    pub fn agent(&self, agent_id: &str) -> Result<AgentRecord, ServiceError> {
        self.store
            .agent(agent_id)?
            .ok_or_else(|| ServiceError::UnknownAgent(agent_id.to_owned()))
    }

    /// All agents.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, ServiceError> {
        Ok(self.store.agents()?)
    }

    fn current_certificate_record(
        &self,
        agent: &AgentRecord,
    ) -> Result<CertificateRecord, ServiceError> {
        let serial = agent
            .current_serial
            .as_deref()
            .ok_or_else(|| ServiceError::UnknownCertificate(agent.agent_id.clone()))?;
        self.store
            .certificate(serial)?
            .ok_or_else(|| ServiceError::UnknownCertificate(serial.to_owned()))
    }

    /// The agent's current certificate, as issued (not re-verified).
    pub fn certificate(&self, agent_id: &str) -> Result<String, ServiceError> {
        Ok(self
            .current_certificate_record(&self.agent(agent_id)?)?
            .encoded)
    }

    /// A certificate by agent id or serial.
    pub fn find_certificate(&self, agent_or_serial: &str) -> Result<String, ServiceError> {
        if let Some(agent) = self.store.agent(agent_or_serial)? {
            return Ok(self.current_certificate_record(&agent)?.encoded);
        }
        self.store
            .certificate(agent_or_serial)?
            .map(|r| r.encoded)
            .ok_or_else(|| ServiceError::UnknownCertificate(agent_or_serial.to_owned()))
    }

    /// Signs an action token as `agent_id`, with its current certificate, which must be valid.
    pub fn sign_action(
        &self,
        agent_id: &str,
        request: &ActionRequest,
    ) -> Result<SignedAction, ServiceError> {
        check_action_request(request)?;
        let (certificate, keys) = self.usable_signer(agent_id)?;
        let refs: Vec<&SigningKey> = keys.iter().collect();
        Ok(action::sign(&certificate, &refs, request, clock::now())?)
    }

    /// Signs an action token as `agent_id` acting for `on_behalf_of`: an agent that granted it
    /// a delegation (directly or through a chain), or a party outside the CA, such as a user,
    /// that the agent names on its own word. The token carries the chain (`sub`, `act`, `dlg`);
    /// its lifetime is capped at the grant's.
    ///
    /// The installation's policy decides first (see [`crate::policy`]): it may deny, cap the
    /// lifetime, rate-limit, or ask for a person's approval, which `approval` says was given.
    /// Refusals of the agent's own requests (not the operator's) count towards the auto-revoke
    /// rule, if it is on.
    pub fn sign_action_for(
        &self,
        agent_id: &str,
        request: &ActionRequest,
        on_behalf_of: Option<&str>,
        approval: Approval,
    ) -> Result<SignedAction, ServiceError> {
        let signed = self.sign_action_decided(agent_id, request, on_behalf_of, approval);
        if let Err(error) = &signed
            && approval != Approval::Operator
        {
            self.request_refused(agent_id, error);
        }
        signed
    }

    fn sign_action_decided(
        &self,
        agent_id: &str,
        request: &ActionRequest,
        on_behalf_of: Option<&str>,
        approval: Approval,
    ) -> Result<SignedAction, ServiceError> {
        // What no policy can make valid is refused before the policy sees it.
        check_action_request(request)?;
        let decision = self.decide(&self.policy_input(agent_id, request, on_behalf_of)?)?;
        if decision.approval && approval == Approval::NotGiven {
            return Err(ServiceError::ApprovalRequired(format!(
                "{agent_id} may {} for {} only once a person approves",
                request.action, request.audience
            )));
        }
        let mut request = request.clone();
        if let Some(max) = decision.max_ttl {
            request.ttl = request.ttl.min(max);
        }
        let now = clock::now();
        if let Some(limit) = decision.rate_limit
            && let Err(retry_after) = self.rates.admit(agent_id, limit, now)
        {
            self.signal(
                SignalKind::RateLimited,
                Some(agent_id),
                serde_json::json!({
                    "operation": "sign_action",
                    "action": request.action,
                    "audience": request.audience,
                    "retry_after": retry_after,
                }),
            );
            return Err(ServiceError::RateLimited(retry_after));
        }
        let Some(principal) = on_behalf_of.filter(|p| *p != agent_id) else {
            return self.sign_action(agent_id, &request);
        };
        let (chain, last) = self.chain_for(agent_id, principal, now)?;
        if let Some(last) = &last {
            let refused = |what: String| {
                ServiceError::NotPermitted(format!(
                    "{what} is not delegated to {agent_id} for {principal}"
                ))
            };
            if !delegation::action_allowed(last, &request.action) {
                return Err(refused(format!("action {:?}", request.action)));
            }
            if !delegation::audience_allowed(last, &request.audience) {
                return Err(refused(format!("audience {:?}", request.audience)));
            }
            delegation::scope_within(last.scope.as_deref(), request.scope.as_deref())
                .map_err(|extra| refused(format!("scope {extra:?}")))?;
            request.ttl = request.ttl.min(last.exp - now);
        }
        request.delegation = Some(chain);
        self.sign_action(agent_id, &request)
    }

    /// Grants `request.delegate` the right to act for `delegator` (or, with `on_behalf_of`, for
    /// the principal `delegator` itself acts for), within what `delegator` holds. Returns the
    /// signed grant, also recorded so the delegate's `sign_action_for` finds it.
    pub fn delegate(
        &self,
        delegator: &str,
        request: &GrantRequest,
        on_behalf_of: Option<&str>,
    ) -> Result<IssuedGrant, ServiceError> {
        validate_agent_id(&request.delegate)?;
        let principal = on_behalf_of.unwrap_or(delegator);
        check_party(principal)?;
        if request.actions.is_empty() {
            return Err(ServiceError::InvalidInput(
                "name at least one action to delegate (or \"*\" for all you may do)".into(),
            ));
        }
        for (field, values, limit) in [
            ("action", request.actions.as_slice(), 128),
            (
                "audience",
                request.audiences.as_deref().unwrap_or_default(),
                512,
            ),
        ] {
            if values.len() > 64
                || values
                    .iter()
                    .any(|v| v.is_empty() || v.len() > limit || v.chars().any(char::is_control))
            {
                return Err(ServiceError::InvalidInput(format!(
                    "at most 64 {field}s, each 1 to {limit} bytes without control characters"
                )));
            }
        }
        if request.ttl <= 0 || request.ttl > delegation::MAX_GRANT_TTL {
            return Err(ServiceError::InvalidInput(format!(
                "delegation TTL must be between 1 and {} seconds",
                delegation::MAX_GRANT_TTL
            )));
        }
        let mut input = self.agent_policy_input(delegator, "delegate")?;
        input.action = request.actions.first().cloned();
        input.actions = request.actions.clone();
        input.ttl = Some(request.ttl);
        input.scope = request.scope.clone();
        input.delegate = Some(request.delegate.clone());
        input.on_behalf_of = on_behalf_of.map(str::to_owned);
        self.decide(&input)?;
        let now = clock::now();
        let (chain, parent) = if principal == delegator {
            (
                Chain {
                    principal: principal.to_owned(),
                    actors: Vec::new(),
                    grants: Vec::new(),
                },
                None,
            )
        } else {
            self.chain_for(delegator, principal, now)?
        };
        // Parties after this grant: principal, earlier actors, delegator, delegate.
        let parties: Vec<&str> = std::iter::once(principal)
            .chain(chain.actors.iter().map(String::as_str))
            .chain([delegator])
            .collect();
        if parties.contains(&request.delegate.as_str()) {
            return Err(ServiceError::InvalidInput(format!(
                "{} is already in this delegation chain",
                request.delegate
            )));
        }
        // Actors after this grant: the earlier ones, the delegator unless it is the principal,
        // and the delegate.
        let depth = chain.actors.len() + usize::from(principal != delegator) + 1;
        if depth > delegation::DEFAULT_MAX_DEPTH {
            return Err(ServiceError::InvalidInput(format!(
                "the chain would have {depth} actors; the limit is {}",
                delegation::DEFAULT_MAX_DEPTH
            )));
        }
        let mut request = request.clone();
        if let Some(parent) = &parent {
            request.ttl = request.ttl.min(parent.exp - now);
            if request.ttl <= 0 {
                return Err(ServiceError::NotPermitted(format!(
                    "{delegator}'s own delegation has expired"
                )));
            }
        }
        let (certificate, keys) = self.usable_signer(delegator)?;
        let refs: Vec<&SigningKey> = keys.iter().collect();
        let (encoded, claims) = delegation::grant(
            &certificate,
            &refs,
            principal,
            parent.as_ref(),
            &request,
            now,
        )?;
        if let Some(parent) = &parent {
            // What the verifier would refuse is refused here, with the same words.
            delegation::narrows(parent, &claims).map_err(ServiceError::NotPermitted)?;
        }
        self.store.insert_grant(&GrantRecord {
            jti: claims.jti.clone(),
            delegator: delegator.to_owned(),
            delegate: claims.sub.clone(),
            principal: principal.to_owned(),
            expires_at: claims.exp,
            encoded: encoded.clone(),
        })?;
        Ok(IssuedGrant {
            grant: encoded,
            grant_id: claims.jti,
            principal: principal.to_owned(),
            delegate: claims.sub,
            expires_at: claims.exp,
            depth,
        })
    }

    /// What the policy in force decides about `input`; a denial is an error with its reasons.
    /// Evaluating has no effect: rate limits are counted only when signing.
    fn decide(&self, input: &PolicyInput) -> Result<Decision, ServiceError> {
        let decision = self.policy()?.current().evaluate(input)?;
        if !decision.allow {
            return Err(ServiceError::PolicyDenied(if decision.reasons.is_empty() {
                vec!["the policy does not allow this".into()]
            } else {
                decision.reasons
            }));
        }
        Ok(decision)
    }

    /// A policy input for `operation` by `agent_id`, with its role and certificate metadata.
    fn agent_policy_input(
        &self,
        agent_id: &str,
        operation: &str,
    ) -> Result<PolicyInput, ServiceError> {
        let record = self.agent(agent_id)?;
        let mut input = PolicyInput::new(agent_id, operation);
        input.role = record.meta.get("role").cloned();
        input.meta = record.meta;
        Ok(input)
    }

    /// The input the policy sees when `agent_id` asks to sign `request` (for `on_behalf_of`).
    pub fn policy_input(
        &self,
        agent_id: &str,
        request: &ActionRequest,
        on_behalf_of: Option<&str>,
    ) -> Result<PolicyInput, ServiceError> {
        let mut input = self.agent_policy_input(agent_id, "sign_action")?;
        input.action = Some(request.action.clone());
        input.audience = Some(request.audience.clone());
        input.ttl = Some(request.ttl);
        input.scope = request.scope.clone();
        input.on_behalf_of = on_behalf_of.filter(|p| *p != agent_id).map(str::to_owned);
        Ok(input)
    }

    /// The policy in force: the installation's `policy.rego` (reloaded when it changes), or
    /// the built-in default.
    pub fn policy(&self) -> Result<&PolicySource, ServiceError> {
        if let Some(policy) = self.policy.get() {
            return Ok(policy);
        }
        let loaded = PolicySource::load(&self.data_dir.join(crate::policy::POLICY_FILE))?;
        Ok(self.policy.get_or_init(|| loaded))
    }

    /// Uses the policy file at `path` instead of the data directory's (before first use).
    pub fn use_policy_file(&self, path: &Path) -> Result<(), ServiceError> {
        if !path.exists() {
            return Err(ServiceError::InvalidInput(format!(
                "policy file {} does not exist",
                path.display()
            )));
        }
        let loaded = PolicySource::load(path)?;
        self.policy.set(loaded).map_err(|_| {
            ServiceError::InvalidInput("the policy is already in use; set it before serving".into())
        })
    }

    /// The chain that lets `agent_id` act for `principal`, and its last grant's claims: from
    /// the recorded grants; a principal that is not an agent of this installation and granted
    /// nothing is a party the agent names on its own word.
    fn chain_for(
        &self,
        agent_id: &str,
        principal: &str,
        now: i64,
    ) -> Result<(Chain, Option<GrantClaims>), ServiceError> {
        check_party(principal)?;
        let revoked = |jti: &str| -> Result<bool, ServiceError> {
            Ok(self.store.revocation(RevokedKind::Token, jti)?.is_some())
        };
        for record in self.store.grants_for(agent_id, principal, now)? {
            if revoked(&record.jti)? {
                continue;
            }
            // Walk up to the root; a revoked or missing ancestor makes this grant useless.
            let mut grants = vec![record.encoded.clone()];
            let mut claims = vec![grant_claims(&record.encoded)?];
            let mut usable = true;
            while let Some(parent) = claims.last().and_then(|c| c.parent.clone()) {
                match self.store.grant(&parent)? {
                    Some(p) if !revoked(&p.jti)? && p.expires_at >= now => {
                        claims.push(grant_claims(&p.encoded)?);
                        grants.push(p.encoded);
                    }
                    _ => {
                        usable = false;
                        break;
                    }
                }
                if grants.len() > delegation::DEFAULT_MAX_DEPTH {
                    usable = false;
                    break;
                }
            }
            if !usable {
                continue;
            }
            grants.reverse();
            claims.reverse();
            let mut actors: Vec<String> = Vec::new();
            if claims[0].iss != principal {
                actors.push(claims[0].iss.clone());
            }
            actors.extend(claims[..claims.len() - 1].iter().map(|c| c.sub.clone()));
            let last = claims.pop();
            return Ok((
                Chain {
                    principal: principal.to_owned(),
                    actors,
                    grants,
                },
                last,
            ));
        }
        if !delegation::is_user_principal(principal) {
            return Err(ServiceError::NotPermitted(format!(
                "{principal} has not delegated to {agent_id} (or the delegation expired or was revoked): \
                 an agent must call delegate first; a person is named as user:<id>"
            )));
        }
        Ok((
            Chain {
                principal: principal.to_owned(),
                actors: Vec::new(),
                grants: Vec::new(),
            },
            None,
        ))
    }

    /// Issues a fresh single-use challenge for a peer's proof of possession, to be verified by
    /// `verifier` only (the agent whose `verify_peer` will check it); returns it and its expiry.
    /// Held in this process's memory.
    pub fn issue_challenge(&self, verifier: &str) -> Result<(String, i64), ServiceError> {
        Ok(self.challenges.issue(verifier, clock::now())?)
    }

    /// The agent's current certificate and, given a peer's challenge and identity, a proof of
    /// possession of its keys. The certificate must be valid.
    pub fn present_certificate(
        &self,
        agent_id: &str,
        challenge: Option<&str>,
        audience: &str,
    ) -> Result<Presentation, ServiceError> {
        if let Some(challenge) = challenge {
            crate::token::presentation::check_challenge(challenge)
                .map_err(ServiceError::InvalidInput)?;
            if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control)
            {
                return Err(ServiceError::InvalidInput(
                    "a challenge needs the peer's id as audience (at most 512 bytes)".into(),
                ));
            }
        }
        let (certificate, keys) = self.usable_signer(agent_id)?;
        let proof = match challenge {
            Some(challenge) => {
                let refs: Vec<&SigningKey> = keys.iter().collect();
                Some(crate::token::presentation::prove(
                    &certificate,
                    &refs,
                    challenge,
                    audience,
                    clock::now(),
                )?)
            }
            None => None,
        };
        Ok(Presentation {
            certificate: certificate.encoded,
            proof,
        })
    }

    /// The agent's current certificate, verified, and its signing keys.
    fn usable_signer(
        &self,
        agent_id: &str,
    ) -> Result<(AgentCertificate, Arc<Vec<SigningKey>>), ServiceError> {
        let encoded = self.certificate(agent_id)?;
        let certificate = self
            .verifier()
            .verify_certificate(&encoded, clock::now())
            .map_err(|reason| ServiceError::CertificateUnusable {
                agent: agent_id.to_owned(),
                reason,
            })?;
        let keys = self.signers(&format!("agent:{agent_id}"), &certificate.keys, |alg| {
            KeyName::agent(&self.install_id, agent_id, alg)
        })?;
        Ok((certificate, keys))
    }

    /// Verifies what a peer presented: an action token, a certificate (with its proof of
    /// possession over a challenge this side issued), or both. Rejections are a normal result
    /// (`valid: false` with the reason code); only unusable requests are errors.
    pub fn verify_peer(&self, evidence: &PeerEvidence) -> Result<PeerVerdict, ServiceError> {
        self.verify_peer_trusting(evidence, None)
    }

    /// As [`Installation::verify_peer`], also trusting `external` (another hub's CA and its
    /// revocation list) for evidence that CA issued.
    pub fn verify_peer_trusting(
        &self,
        evidence: &PeerEvidence,
        external: Option<ExternalTrust<'_>>,
    ) -> Result<PeerVerdict, ServiceError> {
        let verdict = self.judge_peer(evidence, external)?;
        if !verdict.valid
            && let Some(token) = &evidence.token
        {
            self.token_rejected(token, &verdict, evidence);
        }
        Ok(verdict)
    }

    fn judge_peer(
        &self,
        evidence: &PeerEvidence,
        external: Option<ExternalTrust<'_>>,
    ) -> Result<PeerVerdict, ServiceError> {
        if evidence.token.is_none() && evidence.certificate.is_none() {
            return Err(ServiceError::InvalidInput(
                "give a token, a certificate, or both".into(),
            ));
        }
        if evidence.proof.is_some()
            && (evidence.challenge.is_none() || evidence.certificate.is_none())
        {
            return Err(ServiceError::InvalidInput(
                "a proof needs the certificate it proves and the challenge you issued".into(),
            ));
        }
        if evidence.challenge.is_some() && evidence.proof.is_none() {
            return Err(ServiceError::InvalidInput(
                "a challenge needs the peer's proof over it (from its present_certificate)".into(),
            ));
        }
        // A token authorizes one action with exact arguments: the verifier must say which
        // action it is about to perform, and arguments it does not give are taken as none.
        let args = match (&evidence.token, &evidence.args) {
            (Some(_), None) => Some(Value::Object(Default::default())),
            (_, args) => args.clone(),
        };
        if evidence.token.is_some() && evidence.action.as_deref().is_none_or(str::is_empty) {
            return Err(ServiceError::InvalidInput(
                "expected_action is required with a token: name the action you are about to perform".into(),
            ));
        }
        if let Some(args) = &args {
            action::check_args(args).map_err(ServiceError::InvalidInput)?;
        }
        let now = clock::now();
        let presented = PresentedCertificates(evidence.certificate.iter().cloned().collect());
        let resolver = Fallback(&presented, self);
        // Evidence from the external CA (by its certificate's issuer) is verified against that
        // CA and its list only, with the certificates the peer presented.
        let presented_claims = evidence
            .certificate
            .as_deref()
            .and_then(|c| AgentCertificate::parse_unverified(c).ok())
            .map(|(_, claims, _)| claims);
        let external = self.distinct(external).filter(|trust| {
            presented_claims
                .as_ref()
                .is_some_and(|claims| claims.iss == trust.anchor.ca_id)
        });
        // Another CA may not speak for this installation's own agents.
        if external.is_some()
            && let Some(claims) = &presented_claims
            && self.store.agent(&claims.sub)?.is_some()
        {
            let error = VerifyError::UnknownIssuer(format!(
                "{} (it certifies {}, an agent of this installation)",
                claims.iss, claims.sub
            ));
            return Ok(PeerVerdict {
                valid: false,
                reasons: vec![error.code().to_owned()],
                message: Some(error.to_string()),
                agent_id: None,
                certificate: None,
                token: None,
                delegation: None,
                proof_verified: false,
                revocation: self.store.freshness(now),
            });
        }
        let verifier = match &external {
            Some(trust) => Verifier {
                anchor: trust.anchor,
                certificates: &presented,
                revocation: trust.revocation,
                skew: clock::DEFAULT_SKEW,
            },
            None => Verifier {
                certificates: &resolver,
                ..self.verifier()
            },
        };
        let mut verdict = PeerVerdict {
            valid: false,
            reasons: Vec::new(),
            message: None,
            agent_id: None,
            certificate: None,
            token: None,
            delegation: None,
            proof_verified: false,
            revocation: verifier.revocation.freshness(now),
        };
        let outcome = (|| {
            if let Some(certificate) = &evidence.certificate {
                let cert = match (&evidence.proof, &evidence.challenge) {
                    (Some(proof), Some(challenge)) => {
                        let (cert, _) = verifier.verify_presentation(
                            certificate,
                            proof,
                            challenge,
                            &evidence.audience,
                            now,
                        )?;
                        // Consumed only once the proof checks out, so a bad proof from someone
                        // who saw the challenge cannot burn it.
                        if !evidence.allow_unissued_challenge {
                            self.challenges
                                .consume(challenge, &evidence.audience, now)?;
                        }
                        verdict.proof_verified = true;
                        cert
                    }
                    // A certificate is public: on its own it proves nothing about who sent it.
                    _ if evidence.token.is_none() => return Err(VerifyError::ProofRequired),
                    _ => verifier.verify_certificate(certificate, now)?,
                };
                verdict.agent_id = Some(cert.claims.sub.clone());
                verdict.certificate = Some(cert.claims);
            }
            if let Some(token) = &evidence.token {
                let expect = Expectations {
                    max_delegation_depth: None,
                    audience: Some(evidence.audience.clone()),
                    action: evidence.action.clone(),
                    args: args.clone(),
                };
                let verified = verifier.verify_token(token, &expect, now)?;
                if verdict
                    .agent_id
                    .as_ref()
                    .is_some_and(|a| a != &verified.claims.iss)
                {
                    return Err(VerifyError::SubjectMismatch {
                        token: verified.claims.iss.clone(),
                        certificate: verdict.agent_id.clone().unwrap_or_default(),
                    });
                }
                // Another CA's chain may not name this installation's agents as its principal.
                if external.is_some()
                    && verified.claims.sub != verified.claims.iss
                    && self
                        .store
                        .agent(&verified.claims.sub)
                        .ok()
                        .flatten()
                        .is_some()
                {
                    return Err(VerifyError::UnknownIssuer(format!(
                        "{} (its chain names {}, an agent of this installation)",
                        verified.certificate.claims.iss, verified.claims.sub
                    )));
                }
                // Only a token valid in every other respect is looked up, and recorded.
                let (issuer, jti) = (&verified.claims.iss, &verified.claims.jti);
                let replayed = if evidence.consume {
                    self.store
                        .consume(issuer, jti, verified.claims.exp + clock::DEFAULT_SKEW, now)
                        .map(|added| !added)
                } else {
                    self.store.consumed(issuer, jti)
                };
                match replayed {
                    Ok(false) => {}
                    Ok(true) => return Err(VerifyError::Replayed(jti.clone())),
                    // Fail closed: no answer about reuse means no acceptance.
                    Err(error) => {
                        tracing::error!(%error, "cannot record a consumed token");
                        return Err(VerifyError::RevocationUnavailable);
                    }
                }
                verdict.agent_id = Some(verified.claims.iss.clone());
                verdict.certificate = Some(verified.certificate.claims);
                verdict.token = Some(verified.claims);
                verdict.delegation = verified.delegation;
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => verdict.valid = true,
            Err(error) => {
                verdict.reasons.push(error.code().to_owned());
                verdict.message = Some(error.to_string());
                verdict.agent_id = None;
                verdict.certificate = None;
                verdict.token = None;
                verdict.delegation = None;
                verdict.proof_verified = false;
            }
        }
        Ok(verdict)
    }

    /// A verifier over this installation's CA, certificates and revocations.
    pub fn verifier(&self) -> Verifier<'_> {
        Verifier {
            anchor: &self.anchor,
            certificates: self,
            revocation: &self.store,
            skew: clock::DEFAULT_SKEW,
        }
    }

    /// Verifies an action token now.
    pub fn verify_token(
        &self,
        token: &str,
        expect: &Expectations,
    ) -> Result<VerifiedAction, VerifyError> {
        self.verifier().verify_token(token, expect, clock::now())
    }

    /// Verifies a certificate now.
    pub fn verify_certificate(&self, encoded: &str) -> Result<AgentCertificate, VerifyError> {
        self.verifier().verify_certificate(encoded, clock::now())
    }

    /// Issues an access token for the HTTP hub at `audience` (its MCP endpoint URL), letting the
    /// bearer act as `agent_id` within `scopes` for `ttl` seconds (default one hour).
    pub fn issue_access_token(
        &self,
        agent_id: &str,
        audience: &str,
        ttl: Option<i64>,
        scopes: &[Scope],
    ) -> Result<IssuedAccess, ServiceError> {
        let ttl = ttl.unwrap_or(access::DEFAULT_ACCESS_TTL);
        if ttl <= 0 || ttl > access::MAX_ACCESS_TTL {
            return Err(ServiceError::InvalidInput(format!(
                "access token TTL must be between 1 and {} seconds",
                access::MAX_ACCESS_TTL
            )));
        }
        if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control) {
            return Err(ServiceError::InvalidInput(
                "the audience (the hub's MCP URL) must be 1-512 bytes without control characters"
                    .into(),
            ));
        }
        if scopes.is_empty() {
            return Err(ServiceError::InvalidInput("give at least one scope".into()));
        }
        self.agent(agent_id)?;
        let now = clock::now();
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let claims = AccessClaims {
            iss: self.anchor.ca_id.clone(),
            sub: agent_id.to_owned(),
            aud: audience.to_owned(),
            client_id: agent_id.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: clock::random_id()?,
            scope: scopes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let ca = self.signers("ca", &self.anchor.keys, |alg| {
            KeyName::ca(&self.install_id, alg)
        })?;
        let token = access::issue(&claims, &ca[0])?;
        Ok(IssuedAccess {
            token,
            jti: claims.jti,
            exp: claims.exp,
            agent_id: claims.sub,
            audience: claims.aud,
            scope: claims.scope,
        })
    }

    /// Verifies a bearer access token presented to the hub whose MCP URL is `audience`, against
    /// this CA and its revocations.
    /// The agent's current certificate must not be revoked: revoking an agent cuts off its
    /// access tokens too.
    pub fn authorize(&self, token: &str, audience: &str) -> Result<AccessGrant, VerifyError> {
        let now = clock::now();
        let grant = access::verify(
            token,
            &self.anchor,
            audience,
            &self.store,
            now,
            clock::DEFAULT_SKEW,
        )?;
        let serial = match self.store.agent(&grant.agent_id) {
            Ok(Some(agent)) => agent.current_serial.unwrap_or_default(),
            Ok(None) => return Err(VerifyError::UnknownCertificate(grant.agent_id)),
            Err(_) => return Err(VerifyError::RevocationUnavailable),
        };
        if let Some(entry) = self.store.certificate_revocation(&serial, now)? {
            return Err(VerifyError::CertificateRevoked {
                serial,
                reason: entry.reason,
            });
        }
        Ok(grant)
    }

    /// Revokes a token, given the token itself or its id. Durable before it returns.
    pub fn revoke_token(
        &self,
        token_or_jti: &str,
        reason: &str,
    ) -> Result<RevocationEntry, ServiceError> {
        let signer = action::parse_unverified(token_or_jti.trim())
            .ok()
            .and_then(|(_, claims)| self.store.agent(&claims.iss).ok().flatten())
            .map(|agent| agent.agent_id);
        self.revoke_token_of(token_or_jti, reason, signer.as_deref())
    }

    /// As [`Installation::revoke_token`], naming the token's signer (if known) in the signal.
    fn revoke_token_of(
        &self,
        token_or_jti: &str,
        reason: &str,
        signer: Option<&str>,
    ) -> Result<RevocationEntry, ServiceError> {
        check_reason(reason)?;
        let token_or_jti = token_or_jti.trim();
        // Any token this CA's world issues (action or access token) is revoked by its `jti`.
        let jti = match jti_of(token_or_jti) {
            Ok(jti) => jti,
            Err(_) if is_plain_id(token_or_jti) => token_or_jti.to_owned(),
            Err(e) => {
                return Err(ServiceError::InvalidInput(format!(
                    "not a token or token id ({e}); pass the token or its jti"
                )));
            }
        };
        let entry = RevocationEntry {
            id: jti,
            revoked_at: clock::now(),
            reason: reason.to_owned(),
        };
        let added = self
            .store
            .revoke(RevokedKind::Token, std::slice::from_ref(&entry))?;
        // Signalled by the process that recorded it, once.
        if !added.is_empty() {
            self.signal(
                SignalKind::TokenRevoked,
                signer,
                serde_json::json!({ "jti": entry.id, "reason": reason }),
            );
        }
        // Report what is recorded: a token revoked before keeps its first time and reason.
        Ok(self
            .store
            .revocation(RevokedKind::Token, &entry.id)?
            .unwrap_or(entry))
    }

    /// Revokes a token on behalf of `agent_id`, who may revoke only tokens it signed itself:
    /// the token must name one of the agent's certificates and carry that certificate's valid
    /// signatures (it may be expired or its certificate revoked: revoking stays harmless).
    pub fn revoke_own_token(
        &self,
        agent_id: &str,
        token: &str,
        reason: &str,
    ) -> Result<RevocationEntry, ServiceError> {
        // An action token, or a delegation grant (revoking it cuts off everything under it).
        let (jws, typ, iss, cert, jti) = match action::parse_unverified(token.trim()) {
            Ok((jws, c)) => (jws, action::TOKEN_TYP, c.iss, c.cert, c.jti),
            Err(e) => match delegation::parse_unverified(token.trim()) {
                Ok((jws, c)) => (jws, delegation::GRANT_TYP, c.iss, c.cert, c.jti),
                Err(_) => {
                    return Err(ServiceError::InvalidInput(format!(
                        "not an action token or delegation grant: {e}"
                    )));
                }
            },
        };
        let record = self
            .store
            .certificate(&cert)?
            .filter(|record| record.agent_id == agent_id && iss == agent_id)
            .ok_or_else(|| {
                ServiceError::NotPermitted(format!("{agent_id} may revoke only tokens it signed"))
            })?;
        let (_, _, keys) = AgentCertificate::parse_unverified(&record.encoded).map_err(|e| {
            StoreError::Corrupt(self.store.path().to_owned(), format!("certificate: {e}"))
        })?;
        jws.check_typ(typ)
            .and_then(|()| jws.verify(&keys))
            .map_err(|e| {
                ServiceError::NotPermitted(format!(
                    "the token's signature does not check out ({})",
                    e.code()
                ))
            })?;
        self.revoke_token_of(&jti, reason, Some(agent_id))
    }

    /// Revokes one of `agent_id`'s own certificates (its current one by default).
    pub fn revoke_own_certificate(
        &self,
        agent_id: &str,
        serial: Option<&str>,
        reason: &str,
    ) -> Result<Vec<RevocationEntry>, ServiceError> {
        let agent = self.agent(agent_id)?;
        let serial = match serial {
            Some(serial) => serial.to_owned(),
            None => self.current_certificate_record(&agent)?.serial,
        };
        if !self.store.serials_of(agent_id)?.contains(&serial) {
            return Err(ServiceError::NotPermitted(format!(
                "{agent_id} may revoke only its own certificates"
            )));
        }
        self.revoke_certificate(&serial, reason)
    }

    /// Revokes a certificate by serial, or every certificate of an agent by agent id.
    pub fn revoke_certificate(
        &self,
        serial_or_agent: &str,
        reason: &str,
    ) -> Result<Vec<RevocationEntry>, ServiceError> {
        check_reason(reason)?;
        let serials = if self.store.agent(serial_or_agent)?.is_some() {
            self.store.serials_of(serial_or_agent)?
        } else if self.store.certificate(serial_or_agent)?.is_some() {
            vec![serial_or_agent.to_owned()]
        } else {
            return Err(ServiceError::UnknownCertificate(serial_or_agent.to_owned()));
        };
        let now = clock::now();
        let entries: Vec<RevocationEntry> = serials
            .into_iter()
            .map(|id| RevocationEntry {
                id,
                revoked_at: now,
                reason: reason.to_owned(),
            })
            .collect();
        let added = self.store.revoke(RevokedKind::Certificate, &entries)?;
        for serial in &added {
            let agent = self.store.certificate(serial)?.map(|c| c.agent_id);
            self.signal(
                SignalKind::CertificateRevoked,
                agent.as_deref(),
                serde_json::json!({ "serial": serial, "reason": reason }),
            );
        }
        // Report what is recorded: a certificate revoked before keeps its first time and reason.
        entries
            .into_iter()
            .map(|entry| {
                Ok(self
                    .store
                    .revocation(RevokedKind::Certificate, &entry.id)?
                    .unwrap_or(entry))
            })
            .collect()
    }

    /// Whether a token (given whole or by id) or a certificate (given whole, by serial, or by
    /// agent id) is revoked.
    pub fn check_revocation(
        &self,
        kind: RevokedKind,
        subject: &str,
    ) -> Result<RevocationStatus, ServiceError> {
        self.check_revocation_trusting(kind, subject, None)
    }

    /// As [`Installation::check_revocation`]; what this installation did not issue is looked up
    /// in `external`'s revocation list, which must be fresh.
    pub fn check_revocation_trusting(
        &self,
        kind: RevokedKind,
        subject: &str,
        external: Option<ExternalTrust<'_>>,
    ) -> Result<RevocationStatus, ServiceError> {
        let subject = subject.trim();
        let id = match kind {
            RevokedKind::Token => jti_of(subject).unwrap_or_else(|_| subject.to_owned()),
            RevokedKind::Certificate => match AgentCertificate::parse_unverified(subject) {
                Ok((_, claims, _)) => claims.jti,
                Err(_) => match self.store.agent(subject)? {
                    Some(agent) => agent.current_serial.unwrap_or_default(),
                    None => subject.to_owned(),
                },
            },
        };
        let now = clock::now();
        let revocation = match kind {
            RevokedKind::Token => self.store.token_revocation(&id, now),
            RevokedKind::Certificate => self.store.certificate_revocation(&id, now),
        }
        .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
        if let Some(trust) = self.distinct(external)
            && revocation.is_none()
            && self.issued_by(kind, subject, trust.anchor)?
        {
            let revocation = match kind {
                RevokedKind::Token => trust.revocation.token_revocation(&id, now),
                RevokedKind::Certificate => trust.revocation.certificate_revocation(&id, now),
            }
            .map_err(ServiceError::Unverifiable)?;
            return Ok(RevocationStatus {
                kind,
                id,
                revoked: revocation.is_some(),
                revocation,
                freshness: trust.revocation.freshness(now),
            });
        }
        Ok(RevocationStatus {
            kind,
            id,
            revoked: revocation.is_some(),
            revocation,
            freshness: self.store.freshness(now),
        })
    }

    /// Whether `subject` itself shows it comes from `other`: a certificate naming that CA, or a
    /// token naming a certificate this installation did not issue. Bare ids say nothing, so
    /// they are answered locally.
    fn issued_by(
        &self,
        kind: RevokedKind,
        subject: &str,
        other: &TrustAnchor,
    ) -> Result<bool, ServiceError> {
        Ok(match kind {
            RevokedKind::Certificate => AgentCertificate::parse_unverified(subject)
                .is_ok_and(|(_, claims, _)| claims.iss == other.ca_id),
            RevokedKind::Token => match action::parse_unverified(subject) {
                Ok((_, claims)) => self.store.certificate(&claims.cert)?.is_none(),
                Err(_) => false,
            },
        })
    }

    /// `external`, unless it could be confused with this installation's own CA (same id or a
    /// shared key): then it is ignored, and a warning logged.
    fn distinct<'a>(&self, external: Option<ExternalTrust<'a>>) -> Option<ExternalTrust<'a>> {
        external.filter(|trust| {
            let confusable = trust.anchor.ca_id == self.anchor.ca_id
                || trust
                    .anchor
                    .keys
                    .iter()
                    .any(|k| self.anchor.keys.contains(k));
            if confusable {
                tracing::warn!(
                    ca = %trust.anchor.ca_id,
                    "ignoring a trusted hub whose CA has this installation's CA id or keys"
                );
            }
            !confusable
        })
    }

    /// Issues a signed revocation list with the next number, valid for `validity` seconds.
    pub fn issue_crl(&self, validity: Option<i64>) -> Result<String, ServiceError> {
        let validity = validity.unwrap_or(DEFAULT_CRL_VALIDITY);
        if validity <= 0 {
            return Err(ServiceError::InvalidInput(
                "revocation list validity must be positive".into(),
            ));
        }
        let now = clock::now();
        // Entries are kept until every token or certificate they could match has expired
        // (plus clock skew): keeps the list small without un-revoking anything still usable.
        let (number, revoked_certificates, revoked_tokens) = self.store.crl_snapshot(
            now - clock::DEFAULT_SKEW,
            action::MAX_TTL + 2 * clock::DEFAULT_SKEW,
        )?;
        let claims = CrlClaims {
            iss: self.anchor.ca_id.clone(),
            number,
            iat: now,
            next_update: now.saturating_add(validity),
            revoked_certificates,
            revoked_tokens,
        };
        let ca = self.signers("ca", &self.anchor.keys, |alg| {
            KeyName::ca(&self.install_id, alg)
        })?;
        let refs: Vec<&SigningKey> = ca.iter().collect();
        Ok(RevocationList::issue(&claims, &refs)?)
    }

    /// The revocation list to publish: the last one issued while it is in its first half of
    /// validity and nothing was revoked since, otherwise a freshly issued one. Peers polling a
    /// hub thus see every revocation at once without each read consuming a list number.
    pub fn published_crl(&self, validity: Option<i64>) -> Result<PublishedCrl, ServiceError> {
        let validity = validity.unwrap_or(DEFAULT_CRL_VALIDITY);
        let state = self.store.revocation_state()?;
        let now = clock::now();
        let mut cache = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_state, crl)) = cache.as_ref()
            && *cached_state == state
            && crl.next_update - crl.issued_at == validity
            && now < crl.issued_at + validity / 2
        {
            return Ok(crl.clone());
        }
        let encoded = self.issue_crl(Some(validity))?;
        let (number, issued_at, next_update) = {
            let jws = crate::jose::Jws::parse_limited(&encoded, crate::jose::MAX_CRL_LEN)
                .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
            let claims: CrlClaims =
                crate::jose::parse_strict_object(&jws.payload, "revocation list")
                    .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
            (claims.number, claims.iat, claims.next_update)
        };
        let crl = PublishedCrl {
            encoded,
            number,
            issued_at,
            next_update,
        };
        *cache = Some((state, crl.clone()));
        Ok(crl)
    }

    /// Appends `event` to the audit log, signed by the CA's first key, durably before returning.
    pub fn audit(&self, event: &AuditEvent) -> Result<SealedRecord, ServiceError> {
        let ca = self.signers("ca", &self.anchor.keys, |alg| {
            KeyName::ca(&self.install_id, alg)
        })?;
        let now = clock::now();
        self.store.append_audit(&event.actor, |previous| {
            Ok::<_, ServiceError>(audit::seal(event, previous, now, &ca[0])?)
        })
    }

    /// Verifies the whole audit log against the CA's keys and the head the last append
    /// recorded, or `head` if given (one kept aside, so that rolling back the database with its
    /// recorded head is found too). `Ok(Err(fault))` names the first bad record.
    pub fn verify_audit(
        &self,
        head: Option<AuditHead>,
    ) -> Result<Result<AuditSummary, AuditFault>, ServiceError> {
        let head = match head {
            Some(head) => Some(head),
            None => self.store.audit_head()?,
        };
        let mut verifier = AuditVerifier::new(&self.anchor.keys, head.as_ref());
        let mut fault = None;
        self.store
            .audit_records(1, &mut |record| match verifier.push(&record) {
                Ok(()) => true,
                Err(e) => {
                    fault = Some(e);
                    false
                }
            })?;
        Ok(match fault {
            Some(fault) => Err(fault),
            None => verifier.finish(),
        })
    }

    /// Visits the audit records from position `from` on, as stored (verify before trusting).
    pub fn audit_records(
        &self,
        from: i64,
        visit: &mut dyn FnMut(SealedRecord) -> bool,
    ) -> Result<(), ServiceError> {
        Ok(self.store.audit_records(from, visit)?)
    }

    /// The `limit` most recent audit records about `actor`, newest first, as signed.
    pub fn recent_audit(
        &self,
        actor: &str,
        limit: i64,
    ) -> Result<Vec<(i64, RecordBody)>, ServiceError> {
        Ok(self
            .store
            .audit_recent(actor, limit)?
            .into_iter()
            .filter_map(|record| {
                let body = record.parsed().ok()?;
                (body.actor == actor).then_some((record.seq, body))
            })
            .collect())
    }

    /// The public keys peers need: the CA's, then every agent's current keys.
    pub fn jwks(&self) -> Result<JwkSet, ServiceError> {
        let mut set = self.anchor.jwks();
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
    pub fn destroy(self) -> Result<usize, ServiceError> {
        let mut names: Vec<KeyName> = self
            .anchor
            .keys
            .iter()
            .map(|k| KeyName::ca(&self.install_id, k.algorithm()))
            .collect();
        for agent in self.store.agents()? {
            for algorithm in agent
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_name(a))
            {
                names.push(KeyName::agent(&self.install_id, &agent.agent_id, algorithm));
            }
        }
        let webhook = self.store.meta(signalling::WEBHOOK_URL)?.is_some();
        let keys = self.key_store()?;
        // Deleted even if no webhook is set now (a set-up may have stopped half-way).
        keys.delete(&KeyName::webhook(&self.install_id))?;
        for name in &names {
            keys.delete(name)?;
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
        Ok(names.len() + usize::from(webhook))
    }

    /// The key store, opened on first use: verification never needs it, so a verifier works
    /// without a keyring session or a file-store passphrase.
    fn key_store(&self) -> Result<&Arc<dyn KeyStore>, ServiceError> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        let opened = keystore::open(self.key_store, &self.data_dir)?;
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
            let seed = self.key_store()?.get(&name)?;
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

impl CertificateResolver for Installation {
    fn certificate(&self, serial: &str) -> Option<String> {
        self.store
            .certificate(serial)
            .ok()
            .flatten()
            .map(|r| r.encoded)
    }
}

/// Generates a seed, stores it, and reads it back, so a store that silently drops writes is
/// caught at creation rather than at the first signature.
fn create_key(
    store: &dyn KeyStore,
    name: &KeyName,
    algorithm: Algorithm,
) -> Result<SigningKey, ServiceError> {
    let seed = Seed::generate()?;
    store.put(name, &seed)?;
    let stored = store.get(name)?;
    if stored.expose() != seed.expose() {
        return Err(ServiceError::KeyMismatch(name.to_string()));
    }
    Ok(SigningKey::from_seed(algorithm, &seed))
}

/// Refuses what no policy can make a valid action request: a TTL out of bounds, empty or
/// oversized fields, control characters, bad arguments. Bounds keep even a hybrid token inside
/// an 8 KB HTTP header (and whatever reaches signals and the audit log small).
fn check_action_request(request: &ActionRequest) -> Result<(), ServiceError> {
    if request.ttl <= 0 || request.ttl > action::MAX_TTL {
        return Err(ServiceError::InvalidInput(format!(
            "token TTL must be between 1 and {} seconds",
            action::MAX_TTL
        )));
    }
    if request.action.is_empty() || request.audience.is_empty() {
        return Err(ServiceError::InvalidInput(
            "action and audience must not be empty".into(),
        ));
    }
    for (field, value, limit) in [
        ("action", request.action.as_str(), 128),
        ("audience", request.audience.as_str(), 512),
        ("scope", request.scope.as_deref().unwrap_or(""), 512),
    ] {
        if value.len() > limit || value.chars().any(char::is_control) {
            return Err(ServiceError::InvalidInput(format!(
                "{field} must be at most {limit} bytes without control characters"
            )));
        }
    }
    action::check_args(&request.args).map_err(ServiceError::InvalidInput)
}

/// Longest revocation reason accepted: reasons are published in every revocation list.
pub const MAX_REASON_LEN: usize = 256;

fn check_reason(reason: &str) -> Result<(), ServiceError> {
    if reason.trim().is_empty()
        || reason.len() > MAX_REASON_LEN
        || reason.chars().any(char::is_control)
    {
        return Err(ServiceError::InvalidInput(format!(
            "revocation reason must be 1 to {MAX_REASON_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

fn is_plain_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parses arguments given as JSON text, strictly.
pub fn parse_args_json(text: &str) -> Result<Value, ServiceError> {
    crate::jose::parse_strict_json(text.as_bytes())
        .map_err(|e| ServiceError::InvalidInput(format!("arguments are not valid JSON: {e}")))
}
