//! The installation's database: agents, issued certificates, revocations, the audit log and CA
//! metadata. Public data only: secret keys never enter it (with PostgreSQL, seeds enter it
//! sealed, see `authority::sealed`).
//!
//! [`Store`] is what the core holds; the engine behind it is a [`Backend`]: SQLite in the data
//! directory ([`Store::open`], the embedded default) or PostgreSQL shared by several hubs
//! ([`Store::connect`]). Each write says how durable it must be before it is acknowledged
//! ([`Durability`]); the table of every kind of write is in `docs/durability.md`.

use std::path::Path;
use std::sync::Arc;

use crate::audit::{AuditHead, SealedRecord};
use crate::reason::VerifyError;
use crate::token::trust::{Freshness, RevocationEntry, RevocationSource, RevokedKind};

mod backend;
mod location;
mod postgres;
mod records;
mod schema;
mod sqlite;

pub use backend::{Backend, SealNext, SealRefused};
pub use location::{Location, PgLocation};
pub use records::{AgentRecord, CertificateRecord, GrantRecord, StoredCheckpoint};
pub use schema::VERSION as SCHEMA_VERSION;
pub use sqlite::{Durability, FLUSH_INTERVAL, SyncPolicy};

/// Errors from the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// PostgreSQL refused or failed a statement. Shown as the server's message and SQLSTATE
    /// only (never its DETAIL or HINT, which a database's owner may fill with anything).
    #[error("database {location}: {}", postgres_summary(source))]
    Postgres {
        /// The database, without its password.
        location: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// The database cannot be reached now (down, restarting, every connection busy past the
    /// timeout). Nothing of the call was written; trying again later may succeed.
    #[error("database {location} unavailable: {detail}")]
    Unavailable {
        /// The database, without its password.
        location: String,
        /// What failed.
        detail: String,
    },
    /// The database holds data this version cannot read.
    #[error("database {0}: {1}")]
    Corrupt(String, String),
    /// The database's schema is newer than this binary knows: a newer agentseal migrated it.
    #[error(
        "database {location} has schema version {found}; this agentseal knows up to {supported}: upgrade agentseal"
    )]
    TooNew {
        /// The database.
        location: String,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        supported: i64,
    },
    /// The database could not be created or made private, or the writer not started.
    #[error("database {path}: {source}")]
    Io {
        /// The database file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The writer has stopped (the store is closing) or lost the write; nothing of it
    /// was acknowledged.
    #[error("database {0}: the writer stopped before this write was committed")]
    WriterStopped(String),
    /// The group commit that held this write failed (the error is shared by every write in it).
    #[error(transparent)]
    Batch(Arc<StoreError>),
    /// An invalid `--database` value.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The audit record's sealing refused (its caller has the reason); nothing was appended.
    #[error(transparent)]
    SealRefused(#[from] SealRefused),
}

/// What a PostgreSQL error may show: the server's one-line message and SQLSTATE, control
/// characters removed; or the driver's own message for an error that did not come from it.
pub(crate) fn postgres_summary(error: &tokio_postgres::Error) -> String {
    let text = match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    text.chars().filter(|c| !c.is_control()).take(512).collect()
}

impl StoreError {
    /// Whether the same call may succeed later unchanged: the database was unreachable, nothing
    /// was written.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Batch(inner) => inner.is_retryable(),
            _ => false,
        }
    }
}

/// The installation's database: a [`Backend`] and where it is. Dereferences to the backend, so
/// `store.meta(..)` calls the engine's method.
pub struct Store {
    backend: Box<dyn Backend>,
    location: Location,
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        self.backend.as_ref()
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`, and starts its writer.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Box::new(sqlite::SqliteStore::open(path)?),
            location: Location::Sqlite(path.to_owned()),
        })
    }

    /// Opens the database `location` names: a SQLite file, or a PostgreSQL database (migrated
    /// to this binary's schema, refused if newer).
    pub fn connect(location: &Location) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => Store::open(path),
            Location::Postgres(config) => Ok(Store {
                backend: postgres::PgStore::connect(config)?,
                location: location.clone(),
            }),
        }
    }

    /// Where the data is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The SQLite file, if the database is one.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// An error for a stored value this version cannot read.
    pub fn corrupt(&self, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt(self.backend.location().to_owned(), what.into())
    }

    /// Appends the audit record `seal` makes from the current last record (`None`: the log is
    /// empty) and moves the recorded head to it, under the lock that serializes appends across
    /// every process sharing the database. Durable against a killed process when it returns.
    pub fn append_audit<E>(
        &self,
        seal: impl FnOnce(Option<&SealedRecord>) -> Result<SealedRecord, E> + Send + 'static,
    ) -> Result<SealedRecord, E>
    where
        E: From<StoreError> + Send + 'static,
    {
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let kept = refusal.clone();
        let outcome = self.backend.append_audit(Box::new(move |previous| {
            seal(previous).map_err(|error| {
                *kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                SealRefused
            })
        }));
        let refused = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (outcome, refused) {
            (Ok(record), _) => Ok(record),
            (Err(_), Some(error)) => Err(error),
            (Err(error), None) => Err(error.into()),
        }
    }

    /// The head the last append recorded (`None`: nothing appended yet).
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let Some(value) = self.meta("audit_head")? else {
            return Ok(None);
        };
        value
            .split_once(':')
            .and_then(|(seq, hash)| {
                Some(AuditHead {
                    seq: seq.parse().ok()?,
                    hash: hash.to_owned(),
                })
            })
            .map(Some)
            .ok_or_else(|| self.corrupt(format!("audit_head {value:?}")))
    }
}

/// What [`Backend::revocation_state`] reads: count, latest time and sum of times.
pub type RevocationState = (i64, i64, i64);

/// The local database is always current, so it never reports stale data; a database error fails
/// closed as `revocation_unavailable`.
impl RevocationSource for Store {
    fn token_revocation(
        &self,
        jti: &str,
        now: i64,
    ) -> Result<Option<RevocationEntry>, VerifyError> {
        self.revocation(RevokedKind::Token, jti)
            .map(|entry| entry.filter(|e| e.in_effect(now)))
            .map_err(|error| {
                tracing::warn!(%error, "revocation lookup failed");
                VerifyError::RevocationUnavailable
            })
    }

    fn certificate_revocation(
        &self,
        serial: &str,
        now: i64,
    ) -> Result<Option<RevocationEntry>, VerifyError> {
        self.revocation(RevokedKind::Certificate, serial)
            .map(|entry| entry.filter(|e| e.in_effect(now)))
            .map_err(|error| {
                tracing::warn!(%error, "revocation lookup failed");
                VerifyError::RevocationUnavailable
            })
    }

    fn freshness(&self, now: i64) -> Freshness {
        Freshness {
            source: "local",
            number: None,
            issued_at: now,
            next_update: None,
        }
    }
}
