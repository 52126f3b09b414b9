//! PostgreSQL: one database shared by several hubs.
//!
//! The driver is asynchronous; the core is not. The store owns a small runtime of its own
//! (two threads) that drives a bounded pool of connections, and each call hands a future to it
//! and waits for the answer, from whatever thread the core runs on (an event loop's included:
//! the wait is the same as SQLite's for a commit).
//!
//! Each call is one transaction. What several hubs must agree on is serialized by the database:
//! audit appends and revocation list numbers under locks, replay records and challenges by
//! their primary keys, rate windows and rejection counts under a lock per key. A connection
//! lost mid-call rolls its transaction back; the caller gets [`StoreError::Unavailable`] and
//! nothing of the call is kept. Audit records and rejection counts commit without waiting for
//! the server's WAL flush (`synchronous_commit = off`: a crashed *server* may lose the last
//! fraction of a second of them, a killed hub loses nothing); everything else waits for it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;

use super::location::PgLocation;
use super::{
    AgentRecord, Backend, CertificateRecord, GrantRecord, RevocationState, SealNext, StoreError,
    StoredCheckpoint, SyncPolicy,
};
use crate::audit::SealedRecord;
use crate::signals::OutboxQueue;
use crate::token::trust::{RevocationEntry, RevokedKind};
use call::{PgError, commit, get, run_on};

mod audit;
mod call;
mod hub_state;
mod outbox;
mod schema;
mod tls;

/// Most connections one process holds.
pub const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection, or for a new one to be made.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a statement may run before the server cancels it.
const STATEMENT_TIMEOUT: &str = "30s";
const AUDIT_LOCK: i64 = 0x6167_7365_616c_0002;
/// The database's clock in Unix seconds: what records shared by every hub are pruned by.
const DB_NOW: &str = "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)";
/// Seconds past their expiry that shared records are kept, for hubs whose clocks differ.
const PRUNE_MARGIN: i64 = 300;
const AUDIT_PAGE: i64 = 1_000;

/// The PostgreSQL engine.
pub(super) struct PgStore {
    /// Drives the pool's connections; shut down (without waiting) when the store is dropped.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    shown: String,
    every_write: AtomicBool,
    closed: AtomicBool,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects (one connection, made at once so that a wrong URL or a server that is down is
    /// reported here) and migrates the schema.
    pub(super) fn connect(location: &PgLocation) -> Result<Box<dyn Backend>, StoreError> {
        let shown = location.shown().to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("agentseal-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable {
                location: shown.clone(),
                detail: format!("starting the database runtime: {e}"),
            })?;
        let mut config = location.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true);
        let options = format!(
            "{} -c statement_timeout={STATEMENT_TIMEOUT}",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim());
        config.application_name("agentseal");
        let tls = tls::connector(location.root_cert.as_deref()).map_err(StoreError::InvalidUrl)?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CONNECT_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| StoreError::InvalidUrl(e.to_string()))?
        };
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            shown,
            every_write: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        };
        let pool = store.pool.clone();
        let shown = store.shown.clone();
        store.run(async move {
            let mut client = pool.get().await?;
            schema::migrate(&mut client, &shown).await
        })?;
        Ok(Box::new(store))
    }

    /// Runs `call` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::WriterStopped(self.shown.clone()));
        };
        run_on(runtime.handle(), &self.shown, call)
    }

    /// A write: refused once the store is closed.
    fn write<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::WriterStopped(self.shown.clone()));
        }
        self.run(call)
    }

    fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// `SET LOCAL` for a write that needs only to be committed (see the module documentation),
    /// or nothing when every write must be synced.
    fn relaxed(&self) -> &'static str {
        if self.every_write.load(Ordering::Relaxed) {
            "SELECT 1"
        } else {
            "SET LOCAL synchronous_commit = off"
        }
    }
}

fn agent_record(row: &tokio_postgres::Row, shown: &str) -> Result<AgentRecord, PgError> {
    let meta: String = row.try_get(2)?;
    let meta = serde_json::from_str(&meta)
        .map_err(|e| StoreError::Corrupt(shown.to_owned(), format!("agent meta: {e}")))?;
    let algorithms: String = row.try_get(1)?;
    let generation: i64 = row.try_get(5)?;
    Ok(AgentRecord {
        agent_id: row.try_get(0)?,
        algorithms: algorithms.split(',').map(str::to_owned).collect(),
        meta,
        created_at: row.try_get(3)?,
        current_serial: row.try_get(4)?,
        key_generation: u32::try_from(generation).map_err(|_| {
            StoreError::Corrupt(shown.to_owned(), format!("key_generation {generation}"))
        })?,
    })
}

fn revocation_entry(row: &tokio_postgres::Row) -> Result<RevocationEntry, PgError> {
    Ok(RevocationEntry {
        id: row.try_get(0)?,
        revoked_at: row.try_get(1)?,
        reason: row.try_get(2)?,
    })
}

fn grant_record(row: &tokio_postgres::Row) -> Result<GrantRecord, PgError> {
    Ok(GrantRecord {
        jti: row.try_get(0)?,
        delegator: row.try_get(1)?,
        delegate: row.try_get(2)?,
        principal: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        encoded: row.try_get(5)?,
    })
}

const AGENT_COLUMNS: &str =
    "SELECT agent_id, algorithms, meta, created_at, current_serial, key_generation FROM agents";
const GRANT_COLUMNS: &str =
    "SELECT jti, delegator, delegate, principal, expires_at, encoded FROM delegations";

/// Records a revocation; an id already revoked keeps the earlier of the two times (and that
/// one's reason). Changes one row when the revocation is new or brought forward.
const REVOKE: &str = "INSERT INTO revocations(kind, id, revoked_at, reason) VALUES ($1, $2, $3, $4)
     ON CONFLICT(kind, id) DO UPDATE SET revoked_at = excluded.revoked_at, reason = excluded.reason
     WHERE excluded.revoked_at < revocations.revoked_at";

const UPSERT_META: &str = "INSERT INTO meta(key, value) VALUES ($1, $2)
     ON CONFLICT(key) DO UPDATE SET value = excluded.value";

async fn insert_certificate(
    tx: &deadpool_postgres::Transaction<'_>,
    cert: &CertificateRecord,
) -> Result<(), PgError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO certificates(serial, agent_id, issued_at, expires_at, encoded)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?,
        &[
            &cert.serial,
            &cert.agent_id,
            &cert.issued_at,
            &cert.expires_at,
            &cert.encoded,
        ],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("UPDATE agents SET current_serial = $1 WHERE agent_id = $2")
            .await?,
        &[&cert.serial, &cert.agent_id],
    )
    .await?;
    Ok(())
}

impl Backend for PgStore {
    fn location(&self) -> &str {
        &self.shown
    }

    fn set_sync_policy(&self, policy: SyncPolicy) {
        self.every_write
            .store(policy == SyncPolicy::EveryWrite, Ordering::Relaxed);
    }

    fn close(&self) {
        // Every acknowledged write is committed in the server already.
        self.closed.store(true, Ordering::Release);
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let (pool, key) = (self.pool(), key.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT value FROM meta WHERE key = $1")
                .await?;
            Ok(c.query_opt(&stmt, &[&key])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    fn set_meta(&self, values: &[(&str, &str)]) -> Result<(), StoreError> {
        let pool = self.pool();
        let values: Vec<(String, String)> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.write(async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await?;
            let stmt = tx.prepare_cached(UPSERT_META).await?;
            for (key, value) in &values {
                tx.execute(&stmt, &[key, value]).await?;
            }
            commit(tx).await
        })
    }

    fn claim_meta(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let (pool, key, value) = (self.pool(), key.to_owned(), value.to_owned());
        self.write(async move {
            let c = get(&pool).await?;
            let n = c
                .execute(
                    "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT(key) DO NOTHING",
                    &[&key, &value],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn meta_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let (pool, prefix) = (self.pool(), prefix.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(
                    "SELECT key, value FROM meta WHERE starts_with(key, $1) ORDER BY key",
                )
                .await?;
            let mut entries = Vec::new();
            for row in c.query(&stmt, &[&prefix]).await? {
                entries.push((row.try_get(0)?, row.try_get(1)?));
            }
            Ok(entries)
        })
    }

    fn remove_meta(&self, keys: &[&str]) -> Result<(), StoreError> {
        let pool = self.pool();
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        self.write(async move {
            let c = get(&pool).await?;
            c.execute("DELETE FROM meta WHERE key = ANY($1)", &[&keys])
                .await?;
            Ok(())
        })
    }

    fn insert_agent(
        &self,
        agent: &AgentRecord,
        cert: &CertificateRecord,
    ) -> Result<bool, StoreError> {
        let meta = serde_json::to_string(&agent.meta).expect("map serializes");
        let (pool, agent, cert) = (self.pool(), agent.clone(), cert.clone());
        self.write(async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await?;
            let inserted = tx
                .execute(
                    "INSERT INTO agents(agent_id, algorithms, meta, created_at, current_serial)
                     VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING",
                    &[
                        &agent.agent_id,
                        &agent.algorithms.join(","),
                        &meta,
                        &agent.created_at,
                    ],
                )
                .await?;
            if inserted == 0 {
                return Ok(false);
            }
            insert_certificate(&tx, &cert).await?;
            commit(tx).await?;
            Ok(true)
        })
    }

    fn add_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError> {
        let (pool, cert) = (self.pool(), cert.clone());
        self.write(async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await?;
            insert_certificate(&tx, &cert).await?;
            commit(tx).await
        })
    }

    fn add_certificate_if_current(
        &self,
        cert: &CertificateRecord,
        expected: &str,
    ) -> Result<bool, StoreError> {
        let (pool, cert, expected) = (self.pool(), cert.clone(), expected.to_owned());
        self.write(async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await?;
            let current: Option<String> = tx
                .query_opt(
                    "SELECT current_serial FROM agents WHERE agent_id = $1 FOR UPDATE",
                    &[&cert.agent_id],
                )
                .await?
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten();
            if current.as_deref() != Some(expected.as_str()) {
                return Ok(false);
            }
            insert_certificate(&tx, &cert).await?;
            commit(tx).await?;
            Ok(true)
        })
    }

    fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let (pool, id, shown) = (self.pool(), agent_id.to_owned(), self.shown.clone());
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(&format!("{AGENT_COLUMNS} WHERE agent_id = $1"))
                .await?;
            c.query_opt(&stmt, &[&id])
                .await?
                .map(|row| agent_record(&row, &shown))
                .transpose()
        })
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let (pool, shown) = (self.pool(), self.shown.clone());
        self.run(async move {
            let c = get(&pool).await?;
            c.query(&format!("{AGENT_COLUMNS} ORDER BY agent_id"), &[])
                .await?
                .iter()
                .map(|row| agent_record(row, &shown))
                .collect()
        })
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
        let (pool, cert, algorithms) = (self.pool(), cert.clone(), algorithms.join(","));
        let (expected, reason) = (expected_serial.to_owned(), reason.to_owned());
        let (generation, previous) = (i64::from(generation), i64::from(generation) - 1);
        self.write(async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await?;
            let moved = tx
                .execute(
                    "UPDATE agents SET algorithms = $1, key_generation = $2
                     WHERE agent_id = $3 AND key_generation = $4 AND current_serial = $5",
                    &[
                        &algorithms,
                        &generation,
                        &cert.agent_id,
                        &previous,
                        &expected,
                    ],
                )
                .await?;
            if moved == 0 {
                return Ok(None);
            }
            let earlier: Vec<String> = tx
                .query(
                    "SELECT serial FROM certificates WHERE agent_id = $1",
                    &[&cert.agent_id],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            insert_certificate(&tx, &cert).await?;
            let revoke = tx.prepare_cached(REVOKE).await?;
            for serial in &earlier {
                tx.execute(&revoke, &[&"certificate", serial, &revoked_at, &reason])
                    .await?;
            }
            commit(tx).await?;
            Ok(Some(earlier))
        })
    }

    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let (pool, serial) = (self.pool(), serial.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(
                    "SELECT serial, agent_id, issued_at, expires_at, encoded FROM certificates
                     WHERE serial = $1",
                )
                .await?;
            let Some(row) = c.query_opt(&stmt, &[&serial]).await? else {
                return Ok(None);
            };
            Ok(Some(CertificateRecord {
                serial: row.try_get(0)?,
                agent_id: row.try_get(1)?,
                issued_at: row.try_get(2)?,
                expires_at: row.try_get(3)?,
                encoded: row.try_get(4)?,
            }))
        })
    }

    fn serials_of(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        let (pool, id) = (self.pool(), agent_id.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            let rows = c
                .query(
                    "SELECT serial FROM certificates WHERE agent_id = $1 ORDER BY issued_at, serial",
                    &[&id],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?)
        })
    }

    fn revoke(
        &self,
        kind: RevokedKind,
        entries: &[RevocationEntry],
    ) -> Result<Vec<String>, StoreError> {
        let (pool, entries) = (self.pool(), entries.to_vec());
        self.write(async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await?;
            let stmt = tx.prepare_cached(REVOKE).await?;
            let mut added = Vec::new();
            for e in entries {
                let changed = tx
                    .execute(&stmt, &[&kind.name(), &e.id, &e.revoked_at, &e.reason])
                    .await?;
                if changed == 1 {
                    added.push(e.id);
                }
            }
            commit(tx).await?;
            Ok(added)
        })
    }

    fn revocation(
        &self,
        kind: RevokedKind,
        id: &str,
    ) -> Result<Option<RevocationEntry>, StoreError> {
        let (pool, id) = (self.pool(), id.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(
                    "SELECT id, revoked_at, reason FROM revocations WHERE kind = $1 AND id = $2",
                )
                .await?;
            c.query_opt(&stmt, &[&kind.name(), &id])
                .await?
                .map(|row| revocation_entry(&row))
                .transpose()
        })
    }

    fn revocation_state(&self) -> Result<RevocationState, StoreError> {
        let pool = self.pool();
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(MAX(revoked_at), 0),
                            COALESCE(SUM(revoked_at), 0)::BIGINT
                     FROM revocations",
                )
                .await?;
            let row = c.query_one(&stmt, &[]).await?;
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        })
    }

    fn revocations(&self, kind: RevokedKind) -> Result<Vec<RevocationEntry>, StoreError> {
        let pool = self.pool();
        self.run(async move {
            let c = get(&pool).await?;
            c.query(
                "SELECT id, revoked_at, reason FROM revocations WHERE kind = $1
                 ORDER BY revoked_at, id",
                &[&kind.name()],
            )
            .await?
            .iter()
            .map(revocation_entry)
            .collect()
        })
    }

    fn crl_snapshot(
        &self,
        now: i64,
        token_horizon: i64,
    ) -> Result<(u64, Vec<RevocationEntry>, Vec<RevocationEntry>), StoreError> {
        let (pool, shown) = (self.pool(), self.shown.clone());
        self.write(async move {
            let corrupt = |what: String| PgError::Store(StoreError::Corrupt(shown.clone(), what));
            let mut c = get(&pool).await?;
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('crl_number', '0') ON CONFLICT DO NOTHING",
                &[],
            )
            .await?;
            let current: String = tx
                .query_one(
                    "SELECT value FROM meta WHERE key = 'crl_number' FOR UPDATE",
                    &[],
                )
                .await?
                .try_get(0)?;
            let current = current
                .parse::<u64>()
                .map_err(|_| corrupt(format!("crl_number {current:?}")))?;
            let next = current
                .checked_add(1)
                .ok_or_else(|| corrupt("crl_number exhausted".into()))?;
            tx.execute(
                "UPDATE meta SET value = $1 WHERE key = 'crl_number'",
                &[&next.to_string()],
            )
            .await?;
            let certificates = tx
                .query(
                    "SELECT r.id, r.revoked_at, r.reason FROM revocations r
                     LEFT JOIN certificates c ON c.serial = r.id
                     WHERE r.kind = 'certificate' AND (c.expires_at IS NULL OR c.expires_at >= $1)
                     ORDER BY r.revoked_at, r.id",
                    &[&now],
                )
                .await?
                .iter()
                .map(revocation_entry)
                .collect::<Result<Vec<_>, _>>()?;
            let tokens = tx
                .query(
                    "SELECT id, revoked_at, reason FROM revocations
                     WHERE kind = 'token' AND revoked_at >= $1 ORDER BY revoked_at, id",
                    &[&now.saturating_sub(token_horizon)],
                )
                .await?
                .iter()
                .map(revocation_entry)
                .collect::<Result<Vec<_>, _>>()?;
            commit(tx).await?;
            Ok((next, certificates, tokens))
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
        hub_state::trip_on_rejection(self, agent_id, subject, now, since, threshold)
    }

    fn consumed(&self, issuer: &str, jti: &str) -> Result<bool, StoreError> {
        hub_state::consumed(self, issuer, jti)
    }

    fn consume(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        _now: i64,
    ) -> Result<bool, StoreError> {
        hub_state::consume(self, issuer, jti, expires_at, _now)
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
        let (pool, g) = (self.pool(), grant.clone());
        self.write(async move {
            let c = get(&pool).await?;
            c.execute(
                "INSERT INTO delegations(jti, delegator, delegate, principal, expires_at, encoded)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &g.jti,
                    &g.delegator,
                    &g.delegate,
                    &g.principal,
                    &g.expires_at,
                    &g.encoded,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn grants_for(
        &self,
        delegate: &str,
        principal: &str,
        now: i64,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let (pool, delegate, principal) = (self.pool(), delegate.to_owned(), principal.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "{GRANT_COLUMNS} WHERE delegate = $1 AND principal = $2 AND expires_at >= $3
                     ORDER BY expires_at DESC"
                ))
                .await?;
            c.query(&stmt, &[&delegate, &principal, &now])
                .await?
                .iter()
                .map(grant_record)
                .collect()
        })
    }

    fn grant(&self, jti: &str) -> Result<Option<GrantRecord>, StoreError> {
        let (pool, jti) = (self.pool(), jti.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            c.query_opt(&format!("{GRANT_COLUMNS} WHERE jti = $1"), &[&jti])
                .await?
                .map(|row| grant_record(&row))
                .transpose()
        })
    }

    fn issue_challenge(
        &self,
        challenge: &str,
        verifier: &str,
        expires_at: i64,
        _now: i64,
    ) -> Result<(), StoreError> {
        hub_state::issue_challenge(self, challenge, verifier, expires_at, _now)
    }

    fn take_challenge(
        &self,
        challenge: &str,
        verifier: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        hub_state::take_challenge(self, challenge, verifier, now)
    }

    fn outbox_queue(&self) -> Result<Arc<dyn OutboxQueue>, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::WriterStopped(self.shown.clone()));
        };
        Ok(Arc::new(outbox::PgOutbox::new(
            runtime.handle().clone(),
            self.pool(),
            self.shown.clone(),
        )))
    }

    fn sealed_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let (pool, name) = (self.pool(), name.to_owned());
        self.run(async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT sealed FROM sealed_secrets WHERE name = $1")
                .await?;
            Ok(c.query_opt(&stmt, &[&name])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    fn put_sealed_secret(&self, name: &str, sealed: &str) -> Result<(), StoreError> {
        let (pool, name, sealed) = (self.pool(), name.to_owned(), sealed.to_owned());
        self.write(async move {
            let c = get(&pool).await?;
            c.execute(
                "INSERT INTO sealed_secrets(name, sealed) VALUES ($1, $2)
                 ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed",
                &[&name, &sealed],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_sealed_secret(&self, name: &str) -> Result<(), StoreError> {
        let (pool, name) = (self.pool(), name.to_owned());
        self.write(async move {
            let c = get(&pool).await?;
            c.execute("DELETE FROM sealed_secrets WHERE name = $1", &[&name])
                .await?;
            Ok(())
        })
    }

    fn admit_rate(
        &self,
        key: &str,
        count: u32,
        per_seconds: i64,
        now: i64,
    ) -> Result<Result<(), i64>, StoreError> {
        hub_state::admit_rate(self, key, count, per_seconds, now)
    }
}
