//! What an authority operation can fail with, and the stable code of each failure.

use std::path::PathBuf;

use crate::crypto::CryptoError;
use crate::keystore::{KeyStoreError, KeyStoreKind};
use crate::policy::PolicyError;
use crate::reason::VerifyError;
use crate::request::RequestError;
use crate::store::StoreError;

/// Errors of service operations. Messages say what to do; none carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A request no policy can make valid (see [`RequestError`]).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Evidence for `verify_peer` that cannot be judged as given (see
    /// [`EvidenceError`](super::EvidenceError)).
    #[error(transparent)]
    Evidence(#[from] super::EvidenceError),
    /// A record read back from the database cannot be used: the database was damaged or edited.
    #[error("{0}")]
    CorruptRecord(String),
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
    /// An out-of-band approval cannot be used or decided.
    #[error("{code}: {0}", code = .0.code())]
    Approval(#[from] super::approvals::ApprovalError),
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
    /// The operation succeeded but could not be recorded in the audit log, so its result was
    /// withheld (see [`Installation::release`](super::Installation::release)).
    #[error(
        "the operation was done but the audit log could not record it ({0}); its output is withheld"
    )]
    Unaudited(Box<ServiceError>),
    /// The key store lacks keys the database refers to.
    #[error(
        "the {store} key store has lost {} of this installation ({}){}: put them back with `agentseal restore BACKUP`",
        if .missing.len() == 1 { "a key" } else { "keys" },
        .missing.join(", "),
        lost_keys_cause(*.store)
    )]
    KeysMissing {
        /// The store.
        store: KeyStoreKind,
        /// The entries missing.
        missing: Vec<String>,
    },
    /// The CA keys the database records are not those of the key store.
    #[error(
        "the CA keys the database records are not the key store's ({0}): the database was edited or put back; refusing to use them"
    )]
    CaKeysReplaced(String),
    /// The audit log does not verify, so no checkpoint of it is signed (see
    /// `agentseal audit verify`).
    #[error("the audit log does not verify ({code}: {0}): no checkpoint is signed over it", code = .0.code())]
    AuditInvalid(crate::audit::AuditFault),
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
            ServiceError::InvalidInput(_)
            | ServiceError::Request(_)
            | ServiceError::Evidence(_) => "invalid_input",
            ServiceError::CorruptRecord(_) => "database_error",
            ServiceError::UnknownCertificate(_) => "unknown_certificate",
            ServiceError::CertificateUnusable { .. } => "certificate_unusable",
            ServiceError::KeyMismatch(_) => "key_mismatch",
            ServiceError::NotPermitted(_) => "not_permitted",
            ServiceError::Unverifiable(reason) => reason.code(),
            ServiceError::PolicyDenied(_) => "policy_denied",
            ServiceError::RateLimited(_) => "rate_limited",
            ServiceError::ApprovalRequired(_) => "approval_required",
            ServiceError::Approval(error) => error.code(),
            ServiceError::Policy(_) => "policy_error",
            ServiceError::KeyStore(KeyStoreError::NotJoined { .. }) => "replica_not_joined",
            ServiceError::KeyStore(_) => "key_store_error",
            ServiceError::Store(error) if error.is_retryable() => "database_unavailable",
            ServiceError::Store(_) => "database_error",
            ServiceError::Crypto(_) => "crypto_error",
            ServiceError::Signals(_) => "signals_error",
            ServiceError::Unaudited(_) => "audit_withheld",
            ServiceError::AuditInvalid(_) => "audit_invalid",
            ServiceError::KeysMissing { .. } => "keys_missing",
            ServiceError::CaKeysReplaced(_) => "ca_keys_replaced",
            ServiceError::Io { .. } => "io_error",
        }
    }
}

/// Why a store may have lost keys.
fn lost_keys_cause(store: KeyStoreKind) -> &'static str {
    match store {
        KeyStoreKind::Keyutils => {
            "; kernel keyutils keeps keys in memory only, so a reboot (or the persistent keyring expiring unused) loses them"
        }
        _ => "",
    }
}

pub(super) fn renewal_hint(reason: &VerifyError) -> &'static str {
    match reason {
        VerifyError::CertificateExpired(_) | VerifyError::CertificateNotYetValid(_) => {
            ": renew it with `agentseal cert renew`"
        }
        VerifyError::CertificateRevoked { .. } => ": its keys are revoked; create a new agent",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_and_a_replica_without_its_key_have_codes_of_their_own() {
        let unavailable = ServiceError::Store(StoreError::Unavailable {
            location: "postgres://h/db".into(),
            detail: "connection refused".into(),
        });
        assert_eq!(unavailable.code(), "database_unavailable");
        let batch = ServiceError::Store(StoreError::Batch(std::sync::Arc::new(
            StoreError::Unavailable {
                location: "postgres://h/db".into(),
                detail: "timeout".into(),
            },
        )));
        assert_eq!(batch.code(), "database_unavailable");
        let refused = ServiceError::Store(StoreError::Corrupt("db".into(), "x".into()));
        assert_eq!(refused.code(), "database_error");
        let not_joined = ServiceError::KeyStore(KeyStoreError::NotJoined {
            detail: "no key".into(),
        });
        assert_eq!(not_joined.code(), "replica_not_joined");
        assert!(not_joined.to_string().contains("agentseal replica join"));
    }
}
