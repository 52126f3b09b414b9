//! The embedded engine: one SQLite file in the data directory.
//!
//! Writes go through one write connection, whose holder commits whatever is waiting in one
//! transaction (`writer`); each write says how durable it must be before it is acknowledged
//! ([`Durability`]): revocations, replay records and the operator's changes are fsynced first,
//! audit records and rejection counts are in the write-ahead log first (a killed process loses
//! none) and on disk within [`FLUSH_INTERVAL`]. Reads use connections of their own and never
//! wait behind the writer. Processes sharing the file serialize their writes on SQLite's lock.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AgentRecord, Backend, CertificateRecord, GrantRecord, RevocationState, SealNext, StoreError,
    StoredCheckpoint,
};
use crate::audit::SealedRecord;
use crate::token::trust::{RevocationEntry, RevokedKind};

mod audit;
mod ephemeral;
mod grants;
mod writer;

pub use writer::{Durability, FLUSH_INTERVAL, SyncPolicy};

/// The SQLite database of one installation.
pub(super) struct SqliteStore {
    path: PathBuf,
    /// The path as shown in messages.
    shown: String,
    writer: writer::Writer,
    /// Idle read connections (at most [`IDLE_READERS`]); a read takes one or opens one.
    readers: Mutex<Vec<Connection>>,
    /// Challenges and rate windows, in this process's memory.
    ephemeral: ephemeral::Ephemeral,
}

/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    agent_id       TEXT PRIMARY KEY,
    algorithms     TEXT NOT NULL,
    meta           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    current_serial TEXT
);
CREATE TABLE IF NOT EXISTS certificates (
    serial     TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents(agent_id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    encoded    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_by_agent ON certificates(agent_id);
CREATE TABLE IF NOT EXISTS revocations (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumed_tokens (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS consumed_tokens_by_expiry ON consumed_tokens(expires_at);
CREATE TABLE IF NOT EXISTS delegations (
    jti        TEXT PRIMARY KEY,
    delegator  TEXT NOT NULL,
    delegate   TEXT NOT NULL,
    principal  TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    encoded    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS delegations_by_delegate ON delegations(delegate, principal, expires_at);
CREATE TABLE IF NOT EXISTS audit_log (
    seq   INTEGER PRIMARY KEY,
    actor TEXT NOT NULL,
    body  TEXT NOT NULL,
    hash  TEXT NOT NULL,
    kid   TEXT NOT NULL,
    sig   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_actor ON audit_log(actor, seq);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    size      INTEGER PRIMARY KEY,
    note      TEXT NOT NULL,
    tree      TEXT NOT NULL,
    signed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    agent_id TEXT NOT NULL,
    subject  TEXT NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (agent_id, subject)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sealed_secrets (
    name   TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
);
";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and starts its writer.
    pub(super) fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let sqlite = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        crate::fsutil::private_database(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        let conn = connect(path)?;
        crate::fsutil::write_ahead(&conn).map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        migrate(&conn, &shown)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            shown: shown.clone(),
            writer: writer::Writer::start(conn, path)?,
            readers: Mutex::default(),
            ephemeral: ephemeral::Ephemeral::default(),
        })
    }

    /// Runs `f` on a read connection of its own: never waits behind the writer.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = connect(&self.path)?;
                conn.execute_batch("PRAGMA query_only=ON;")
                    .map_err(|source| self.sqlite(source))?;
                conn
            }
        };
        let result = f(&mut conn).map_err(|source| self.sqlite(source));
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }

    /// Runs `job` on the write connection in the next group commit; returns once that commit
    /// is as durable as `durability` asks.
    fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        job: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.shown.clone();
        self.writer.write(durability, move |conn| {
            job(conn).map_err(|source| StoreError::Sqlite { path, source })
        })
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.shown.clone(),
            source,
        }
    }

    fn query_agents<P: rusqlite::Params>(
        &self,
        tail: &str,
        p: P,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT agent_id, algorithms, meta, created_at, current_serial, key_generation
                 FROM agents {tail}"
            ))?;
            stmt.query_map(p, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, u32>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(
                |(agent_id, algorithms, meta, created_at, current_serial, key_generation)| {
                    let meta = serde_json::from_str(&meta).map_err(|e| {
                        StoreError::Corrupt(self.shown.clone(), format!("agent meta: {e}"))
                    })?;
                    Ok(AgentRecord {
                        agent_id,
                        algorithms: algorithms.split(',').map(str::to_owned).collect(),
                        meta,
                        created_at,
                        current_serial,
                        key_generation,
                    })
                },
            )
            .collect()
    }
}

impl Backend for SqliteStore {
    fn location(&self) -> &str {
        &self.shown
    }

    fn set_sync_policy(&self, policy: SyncPolicy) {
        self.writer.set_policy(policy);
    }

    fn close(&self) {
        self.writer.stop();
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()
        })
    }

    fn set_meta(&self, values: &[(&str, &str)]) -> Result<(), StoreError> {
        let values: Vec<(String, String)> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.write(Durability::Synced, move |c| {
            for (key, value) in values {
                c.execute(
                    "INSERT INTO meta(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )?;
            }
            Ok(())
        })
    }

    fn insert_agent(
        &self,
        agent: &AgentRecord,
        cert: &CertificateRecord,
    ) -> Result<bool, StoreError> {
        let meta = serde_json::to_string(&agent.meta).expect("map serializes");
        let (agent, cert) = (agent.clone(), cert.clone());
        self.write(Durability::Synced, move |tx| {
            let inserted = tx.execute(
                "INSERT INTO agents(agent_id, algorithms, meta, created_at, current_serial)
                 VALUES (?1, ?2, ?3, ?4, NULL) ON CONFLICT DO NOTHING",
                params![
                    agent.agent_id,
                    agent.algorithms.join(","),
                    meta,
                    agent.created_at
                ],
            )?;
            if inserted == 0 {
                return Ok(false);
            }
            insert_certificate(tx, &cert)?;
            Ok(true)
        })
    }

    fn add_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError> {
        let cert = cert.clone();
        self.write(Durability::Synced, move |tx| insert_certificate(tx, &cert))
    }

    fn add_certificate_if_current(
        &self,
        cert: &CertificateRecord,
        expected: &str,
    ) -> Result<bool, StoreError> {
        let (cert, expected) = (cert.clone(), expected.to_owned());
        self.write(Durability::Synced, move |tx| {
            let current: Option<String> = tx
                .query_row(
                    "SELECT current_serial FROM agents WHERE agent_id = ?1",
                    [&cert.agent_id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            if current.as_deref() != Some(expected.as_str()) {
                return Ok(false);
            }
            insert_certificate(tx, &cert)?;
            Ok(true)
        })
    }

    fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.query_agents("WHERE agent_id = ?1", [agent_id])
            .map(|mut v| v.pop())
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.query_agents("ORDER BY agent_id", [])
    }

    fn rotate_agent(
        &self,
        cert: &CertificateRecord,
        algorithms: &[String],
        generation: u32,
        expected_serial: &str,
        revoked_at: i64,
        reason: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let (cert, algorithms) = (cert.clone(), algorithms.join(","));
        let (expected, reason) = (expected_serial.to_owned(), reason.to_owned());
        self.write(Durability::Synced, move |tx| {
            let moved = tx.execute(
                "UPDATE agents SET algorithms = ?1, key_generation = ?2
                 WHERE agent_id = ?3 AND key_generation = ?4 AND current_serial = ?5",
                params![
                    algorithms,
                    generation,
                    cert.agent_id,
                    generation - 1,
                    expected
                ],
            )?;
            if moved == 0 {
                return Ok(None);
            }
            let earlier: Vec<String> = tx
                .prepare_cached("SELECT serial FROM certificates WHERE agent_id = ?1")?
                .query_map([&cert.agent_id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            insert_certificate(tx, &cert)?;
            let mut stmt = tx.prepare_cached(REVOKE)?;
            for serial in &earlier {
                stmt.execute(params!["certificate", serial, revoked_at, reason])?;
            }
            Ok(Some(earlier))
        })
    }

    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT serial, agent_id, issued_at, expires_at, encoded FROM certificates WHERE serial = ?1",
            )?
            .query_row(
                [serial],
                |r| {
                    Ok(CertificateRecord {
                        serial: r.get(0)?,
                        agent_id: r.get(1)?,
                        issued_at: r.get(2)?,
                        expires_at: r.get(3)?,
                        encoded: r.get(4)?,
                    })
                },
            )
            .optional()
        })
    }

    fn serials_of(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT serial FROM certificates WHERE agent_id = ?1 ORDER BY issued_at",
            )?;
            stmt.query_map([agent_id], |r| r.get(0))?.collect()
        })
    }

    fn revoke(
        &self,
        kind: RevokedKind,
        entries: &[RevocationEntry],
    ) -> Result<Vec<String>, StoreError> {
        let entries = entries.to_vec();
        self.write(Durability::Synced, move |tx| {
            let mut added = Vec::new();
            let mut stmt = tx.prepare_cached(REVOKE)?;
            for e in entries {
                if stmt.execute(params![kind.name(), e.id, e.revoked_at, e.reason])? == 1 {
                    added.push(e.id);
                }
            }
            Ok(added)
        })
    }

    fn revocation(
        &self,
        kind: RevokedKind,
        id: &str,
    ) -> Result<Option<RevocationEntry>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT id, revoked_at, reason FROM revocations WHERE kind = ?1 AND id = ?2",
            )?
            .query_row(params![kind.name(), id], revocation_entry)
            .optional()
        })
    }

    fn revocation_state(&self) -> Result<RevocationState, StoreError> {
        // The sum changes when a scheduled revocation is brought forward, too.
        self.with(|c| {
            c.prepare_cached(
                "SELECT COUNT(*), COALESCE(MAX(revoked_at), 0), COALESCE(TOTAL(revoked_at), 0)
                 FROM revocations",
            )?
            .query_row([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get::<_, f64>(2)? as i64))
            })
        })
    }

    fn claim_meta(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(Durability::Synced, move |c| {
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
                params![key, value],
            )
            .map(|n| n == 1)
        })
    }

    fn meta_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            )?
            .query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    fn remove_meta(&self, keys: &[&str]) -> Result<(), StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        self.write(Durability::Synced, move |tx| {
            for key in keys {
                tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
            }
            Ok(())
        })
    }

    fn trip_on_rejection(
        &self,
        agent_id: &str,
        subject: &str,
        now: i64,
        since: i64,
        threshold: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (agent_id, subject) = (agent_id.to_owned(), subject.to_owned());
        self.write(Durability::Committed, move |tx| {
            tx.prepare_cached("DELETE FROM rejections WHERE agent_id = ?1 AND at < ?2")?
                .execute(params![agent_id, since])?;
            tx.prepare_cached(
                "INSERT INTO rejections(agent_id, subject, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![agent_id, subject, now])?;
            let count: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM rejections WHERE agent_id = ?1")?
                .query_row([&agent_id], |r| r.get(0))?;
            let tripped = count >= threshold;
            if tripped {
                tx.prepare_cached("DELETE FROM rejections WHERE agent_id = ?1")?
                    .execute([agent_id])?;
            }
            Ok(tripped.then_some(count))
        })
    }

    fn consumed(&self, issuer: &str, jti: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM consumed_tokens WHERE issuer = ?1 AND jti = ?2")?
                .query_row(params![issuer, jti], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    fn consume(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (issuer, jti) = (issuer.to_owned(), jti.to_owned());
        self.write(Durability::Synced, move |tx| {
            tx.prepare_cached("DELETE FROM consumed_tokens WHERE expires_at < ?1")?
                .execute([now])?;
            let added = tx
                .prepare_cached(
                    "INSERT INTO consumed_tokens(issuer, jti, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![issuer, jti, expires_at])?;
            Ok(added == 1)
        })
    }

    fn revocations(&self, kind: RevokedKind) -> Result<Vec<RevocationEntry>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id, revoked_at, reason FROM revocations WHERE kind = ?1 ORDER BY revoked_at, id")?;
            stmt.query_map([kind.name()], revocation_entry)?
            .collect()
        })
    }

    fn crl_snapshot(
        &self,
        now: i64,
        token_horizon: i64,
    ) -> Result<(u64, Vec<RevocationEntry>, Vec<RevocationEntry>), StoreError> {
        let path = self.shown.clone();
        self.writer.write(Durability::Synced, move |tx| {
            let sqlite = |source| StoreError::Sqlite {
                path: path.clone(),
                source,
            };
            let current: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'crl_number'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sqlite)?;
            let current = match current {
                None => 0,
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| StoreError::Corrupt(path.clone(), format!("crl_number {v:?}")))?,
            };
            let next = current
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt(path.clone(), "crl_number exhausted".into()))?;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('crl_number', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [next.to_string()],
            )
            .map_err(sqlite)?;
            let entries = |sql: &str, bound: i64| -> rusqlite::Result<Vec<RevocationEntry>> {
                let mut stmt = tx.prepare_cached(sql)?;
                stmt.query_map([bound], revocation_entry)?.collect()
            };
            let certificates = entries(
                "SELECT r.id, r.revoked_at, r.reason FROM revocations r
                 LEFT JOIN certificates c ON c.serial = r.id
                 WHERE r.kind = 'certificate' AND (c.expires_at IS NULL OR c.expires_at >= ?1)
                 ORDER BY r.revoked_at, r.id",
                now,
            )
            .map_err(sqlite)?;
            let tokens = entries(
                "SELECT id, revoked_at, reason FROM revocations
                 WHERE kind = 'token' AND revoked_at >= ?1 ORDER BY revoked_at, id",
                now.saturating_sub(token_horizon),
            )
            .map_err(sqlite)?;
            Ok((next, certificates, tokens))
        })
    }

    fn append_audit(&self, seal: SealNext<'static>) -> Result<SealedRecord, StoreError> {
        audit::append(self, seal)
    }

    fn audit_records(
        &self,
        from: i64,
        visit: &mut dyn FnMut(SealedRecord) -> bool,
    ) -> Result<(), StoreError> {
        audit::records(self, from, visit)
    }

    fn audit_recent(&self, actor: &str, limit: i64) -> Result<Vec<SealedRecord>, StoreError> {
        audit::recent(self, actor, limit)
    }

    fn audit_record(&self, seq: i64) -> Result<Option<SealedRecord>, StoreError> {
        audit::record(self, seq)
    }

    fn save_checkpoint(&self, checkpoint: StoredCheckpoint) -> Result<(), StoreError> {
        audit::save_checkpoint(self, checkpoint)
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        audit::latest_checkpoint(self)
    }

    fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        grants::insert(self, grant)
    }

    fn grants_for(
        &self,
        delegate: &str,
        principal: &str,
        now: i64,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        grants::grants_for(self, delegate, principal, now)
    }

    fn grant(&self, jti: &str) -> Result<Option<GrantRecord>, StoreError> {
        grants::grant(self, jti)
    }

    fn issue_challenge(
        &self,
        challenge: &str,
        verifier: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.ephemeral
            .issue_challenge(challenge, verifier, expires_at, now);
        Ok(())
    }

    fn take_challenge(
        &self,
        challenge: &str,
        verifier: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.ephemeral.take_challenge(challenge, verifier, now))
    }

    fn outbox_queue(&self) -> Result<std::sync::Arc<dyn crate::signals::OutboxQueue>, StoreError> {
        // A connection of its own, as before the interface: the outbox commits each write.
        crate::signals::SqliteQueue::open(&self.path)
            .map(|queue| std::sync::Arc::new(queue) as _)
            .map_err(|e| StoreError::Corrupt(self.shown.clone(), e.to_string()))
    }

    fn sealed_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT sealed FROM sealed_secrets WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()
        })
    }

    fn put_sealed_secret(&self, name: &str, sealed: &str) -> Result<(), StoreError> {
        let (name, sealed) = (name.to_owned(), sealed.to_owned());
        self.write(Durability::Synced, move |c| {
            c.execute(
                "INSERT INTO sealed_secrets(name, sealed) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed",
                params![name, sealed],
            )
            .map(drop)
        })
    }

    fn delete_sealed_secret(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(Durability::Synced, move |c| {
            c.execute("DELETE FROM sealed_secrets WHERE name = ?1", [name])
                .map(drop)
        })
    }

    fn admit_rate(
        &self,
        key: &str,
        count: u32,
        per_seconds: i64,
        now: i64,
    ) -> Result<Result<(), i64>, StoreError> {
        Ok(self.ephemeral.admit_rate(key, count, per_seconds, now))
    }
}

/// Records a revocation; an id already revoked keeps the earlier of the two times (and that
/// one's reason). Changes one row when the revocation is new or brought forward.
const REVOKE: &str = "INSERT INTO revocations(kind, id, revoked_at, reason) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT(kind, id) DO UPDATE SET revoked_at = excluded.revoked_at, reason = excluded.reason
     WHERE excluded.revoked_at < revocations.revoked_at";

/// Brings a database made by an earlier version up to [`super::schema::VERSION`], in one
/// transaction holding the write lock (another process opening it at once waits, then finds it
/// current); refuses a newer one.
fn migrate(conn: &Connection, shown: &str) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: shown.to_owned(),
        source,
    };
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite)?;
    let outcome = (|| {
        let recorded: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite)?;
        let found = super::schema::check(shown, recorded.as_deref())?;
        if found == super::schema::VERSION {
            return Ok(());
        }
        // Version 1: agent key rotation. Unversioned databases may or may not have it.
        // Version 2: its table is in SCHEMA (created if missing).
        let has_generation = conn
            .prepare("SELECT 1 FROM pragma_table_info('agents') WHERE name = 'key_generation'")
            .and_then(|mut s| s.exists([]))
            .map_err(sqlite)?;
        if !has_generation {
            conn.execute_batch(
                "ALTER TABLE agents ADD COLUMN key_generation INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(sqlite)?;
        }
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [super::schema::VERSION.to_string()],
        )
        .map_err(sqlite)?;
        Ok(())
    })();
    let end = if outcome.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    conn.execute_batch(end).map_err(sqlite)?;
    outcome
}

/// Reads `id, revoked_at, reason` columns.
fn revocation_entry(row: &rusqlite::Row) -> rusqlite::Result<RevocationEntry> {
    Ok(RevocationEntry {
        id: row.get(0)?,
        revoked_at: row.get(1)?,
        reason: row.get(2)?,
    })
}

/// Opens a connection to the database at `path` that waits up to 10 s for other processes' locks
/// and keeps its prepared statements.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite)?;
    conn.execute_batch("PRAGMA foreign_keys=ON;")
        .map_err(sqlite)?;
    // Room for every statement a connection runs on the hot path (the writer's transaction
    // control and each kind of write; a reader's lookups), so none is parsed twice.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn insert_certificate(tx: &Connection, cert: &CertificateRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO certificates(serial, agent_id, issued_at, expires_at, encoded) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![cert.serial, cert.agent_id, cert.issued_at, cert.expires_at, cert.encoded],
    )?;
    tx.execute(
        "UPDATE agents SET current_serial = ?1 WHERE agent_id = ?2",
        params![cert.serial, cert.agent_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
