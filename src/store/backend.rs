//! The storage interface: what the core asks of a database, whichever engine holds it. SQLite
//! ([`super::sqlite`], the embedded default) and PostgreSQL ([`super::postgres`], several hubs on
//! one database) implement it; the shared test suite (`tests/it/storage.rs`) runs against both.
//!
//! Every method is one transaction: what it reads and writes is consistent, and a write is
//! durable as [`Durability`](super::Durability) says before the method returns (revocations,
//! replay records and the operator's changes synced; audit records and rejection counts
//! committed). Between processes sharing the database, the engine's locks make read-modify-write
//! methods ([`Backend::consume`], [`Backend::append_audit`], [`Backend::crl_snapshot`],
//! [`Backend::admit_rate`]...) atomic: exactly one of two racing callers wins.

use super::{
    AgentRecord, CertificateRecord, GrantRecord, RevocationState, StoreError, StoredCheckpoint,
    SyncPolicy,
};
use crate::audit::SealedRecord;
use crate::token::trust::{RevocationEntry, RevokedKind};

/// Makes the next audit record from the last one (`None`: the log is empty). Runs inside the
/// append's transaction, under the lock that serializes appends; an error aborts the append.
pub type SealNext<'a> =
    Box<dyn FnOnce(Option<&SealedRecord>) -> Result<SealedRecord, SealRefused> + Send + 'a>;

/// The sealing closure refused to make a record; its own error is with its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit record was not sealed")]
pub struct SealRefused;

/// What the core asks of a database. See the module documentation.
pub trait Backend: Send + Sync {
    /// Where the data is, for messages: a file path, or a URL without its password.
    fn location(&self) -> &str;

    /// Sets when writes are made durable: as each asks (the default) or all synced.
    fn set_sync_policy(&self, policy: SyncPolicy);

    /// Makes everything written so far durable and refuses later writes
    /// ([`StoreError::WriterStopped`]); reads go on.
    fn close(&self);

    /// A metadata value.
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets metadata values in one transaction.
    fn set_meta(&self, values: &[(&str, &str)]) -> Result<(), StoreError>;

    /// Sets metadata `key` to `value` unless it is set already: true if this call set it. Of
    /// processes racing to set one key, exactly one wins.
    fn claim_meta(&self, key: &str, value: &str) -> Result<bool, StoreError>;

    /// Every metadata entry whose key starts with `prefix`, by key.
    fn meta_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Deletes metadata values in one transaction.
    fn remove_meta(&self, keys: &[&str]) -> Result<(), StoreError>;

    /// Records a new agent and its first certificate in one transaction. Returns `false` if the
    /// agent already exists.
    fn insert_agent(
        &self,
        agent: &AgentRecord,
        cert: &CertificateRecord,
    ) -> Result<bool, StoreError>;

    /// Records a renewed certificate and makes it the agent's current one.
    fn add_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError>;

    /// Records `cert` and makes it current, unless the agent's current certificate is no longer
    /// `expected` (another process renewed or rotated first): `Ok(false)` then.
    fn add_certificate_if_current(
        &self,
        cert: &CertificateRecord,
        expected: &str,
    ) -> Result<bool, StoreError>;

    /// One agent.
    fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError>;

    /// All agents, by id.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Makes `cert` (for new keys of generation `generation`, algorithms `algorithms`) the
    /// agent's current certificate and, in the same transaction, revokes every other
    /// certificate of the agent at `revoked_at` (all certify old keys), returning their serials.
    /// Refused (`Ok(None)`) if the agent's keys or current certificate moved meanwhile (another
    /// rotation, a renewal): the one that commits first wins, and nothing escapes revocation.
    fn rotate_agent(
        &self,
        cert: &CertificateRecord,
        algorithms: &[String],
        generation: u32,
        expected_serial: &str,
        revoked_at: i64,
        reason: &str,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// A certificate by serial.
    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError>;

    /// Serials of every certificate issued to `agent_id`, oldest first.
    fn serials_of(&self, agent_id: &str) -> Result<Vec<String>, StoreError>;

    /// Records revocations durably. An id revoked before keeps its record, unless that one was
    /// scheduled later than this one (a rotation's grace cut short): the earlier time wins.
    /// Returns the ids that were new or brought forward.
    fn revoke(
        &self,
        kind: RevokedKind,
        entries: &[RevocationEntry],
    ) -> Result<Vec<String>, StoreError>;

    /// The revocation of `id`, if any.
    fn revocation(
        &self,
        kind: RevokedKind,
        id: &str,
    ) -> Result<Option<RevocationEntry>, StoreError>;

    /// A value that changes whenever a revocation is recorded or brought forward: lets a
    /// published revocation list be reused until something was revoked.
    fn revocation_state(&self) -> Result<RevocationState, StoreError>;

    /// Every revocation of `kind`, oldest first.
    fn revocations(&self, kind: RevokedKind) -> Result<Vec<RevocationEntry>, StoreError>;

    /// Takes the next revocation list number and, in the same transaction, the revocations a
    /// list issued at `now` must carry: certificates not yet expired, and tokens revoked within
    /// `token_horizon` seconds (no token outlives that, so older entries protect nothing).
    fn crl_snapshot(
        &self,
        now: i64,
        token_horizon: i64,
    ) -> Result<(u64, Vec<RevocationEntry>, Vec<RevocationEntry>), StoreError>;

    /// Records a rejection of `agent_id` about `subject` (a token id, so that one token counts
    /// once however often it is presented) at `now`, and counts the agent's rejections since
    /// `since`. At `threshold` or more the agent's records are deleted and the count returned:
    /// all in one transaction, so among processes sharing the database exactly one trips.
    fn trip_on_rejection(
        &self,
        agent_id: &str,
        subject: &str,
        now: i64,
        since: i64,
        threshold: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Whether token `jti` of `issuer` was recorded as consumed.
    fn consumed(&self, issuer: &str, jti: &str) -> Result<bool, StoreError>;

    /// Records token `jti` of `issuer` as consumed until `expires_at`, durably; false if it
    /// already was. Records of tokens expired before `now` may be dropped on the way (a shared
    /// database goes by its own clock, with a margin, so that no hub's clock decides for all).
    fn consume(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Appends the record `seal` makes from the current last record, and moves the recorded
    /// head (meta `audit_head`, `seq:hash`) to it, under a lock that serializes appends across
    /// every process sharing the database. Committed (survives a killed process) on return.
    fn append_audit(&self, seal: SealNext<'static>) -> Result<SealedRecord, StoreError>;

    /// Visits the audit records from position `from` on, in order of position, in one read
    /// transaction (a consistent snapshot while others append), until `visit` returns false.
    fn audit_records(
        &self,
        from: i64,
        visit: &mut dyn FnMut(SealedRecord) -> bool,
    ) -> Result<(), StoreError>;

    /// The last `limit` audit records filed under `actor`, newest first (callers check the
    /// signed body's actor: the index is not evidence).
    fn audit_recent(&self, actor: &str, limit: i64) -> Result<Vec<SealedRecord>, StoreError>;

    /// The record at position `seq`, as stored.
    fn audit_record(&self, seq: i64) -> Result<Option<SealedRecord>, StoreError>;

    /// Keeps a checkpoint (one per size: it replaces one kept before, which may have been
    /// planted).
    fn save_checkpoint(&self, checkpoint: StoredCheckpoint) -> Result<(), StoreError>;

    /// The checkpoint of the most records kept so far.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Records a grant an agent of this installation signed.
    fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError>;

    /// The unexpired grants that let `delegate` act for `principal`, newest expiry first.
    fn grants_for(
        &self,
        delegate: &str,
        principal: &str,
        now: i64,
    ) -> Result<Vec<GrantRecord>, StoreError>;

    /// A grant by id.
    fn grant(&self, jti: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// Records `challenge`, issued to `verifier` at `now`, usable until `expires_at`.
    fn issue_challenge(
        &self,
        challenge: &str,
        verifier: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Consumes `challenge` for `verifier`: true once, for a challenge issued to that verifier
    /// and not expired at `now`. Another verifier's attempt leaves it in place.
    fn take_challenge(&self, challenge: &str, verifier: &str, now: i64)
    -> Result<bool, StoreError>;

    /// The webhook outbox kept in this database (see [`crate::signals::Outbox`]).
    fn outbox_queue(&self) -> Result<std::sync::Arc<dyn crate::signals::OutboxQueue>, StoreError>;

    /// The sealed secret stored under `name` (see `authority::sealed`): an opaque string the
    /// database cannot open.
    fn sealed_secret(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Stores a sealed secret under `name`, replacing any before it; synced.
    fn put_sealed_secret(&self, name: &str, sealed: &str) -> Result<(), StoreError>;

    /// Removes the sealed secret under `name`; succeeds if it was absent.
    fn delete_sealed_secret(&self, name: &str) -> Result<(), StoreError>;

    /// Counts one operation by `key` at `now` if fewer than `count` were counted in the
    /// `per_seconds` seconds before; otherwise `Ok(Err(seconds until one would be))`.
    fn admit_rate(
        &self,
        key: &str,
        count: u32,
        per_seconds: i64,
        now: i64,
    ) -> Result<Result<(), i64>, StoreError>;
}
