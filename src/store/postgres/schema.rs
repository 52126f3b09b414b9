//! The PostgreSQL schema and its migrations, run at connect under an advisory lock so that hubs
//! starting together migrate once.

use super::PgError;
use crate::store::schema;

/// Serializes migrations across every process connecting to the database.
const MIGRATION_LOCK: i64 = 0x6167_7365_616c_0001;

/// Version 1: the tables of the SQLite schema (times as BIGINT), plus the challenges and rate
/// windows several hubs share.
const VERSION_1: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    agent_id       TEXT PRIMARY KEY,
    algorithms     TEXT NOT NULL,
    meta           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    current_serial TEXT,
    key_generation BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS certificates (
    serial     TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents(agent_id),
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    encoded    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_by_agent ON certificates(agent_id);
CREATE TABLE IF NOT EXISTS revocations (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS consumed_tokens (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX IF NOT EXISTS consumed_tokens_by_expiry ON consumed_tokens(expires_at);
CREATE TABLE IF NOT EXISTS delegations (
    jti        TEXT PRIMARY KEY,
    delegator  TEXT NOT NULL,
    delegate   TEXT NOT NULL,
    principal  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    encoded    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS delegations_by_delegate ON delegations(delegate, principal, expires_at);
CREATE TABLE IF NOT EXISTS audit_log (
    seq   BIGINT PRIMARY KEY,
    actor TEXT NOT NULL,
    body  TEXT NOT NULL,
    hash  TEXT NOT NULL,
    kid   TEXT NOT NULL,
    sig   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_actor ON audit_log(actor, seq);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    size      BIGINT PRIMARY KEY,
    note      TEXT NOT NULL,
    tree      TEXT NOT NULL,
    signed_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    agent_id TEXT NOT NULL,
    subject  TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (agent_id, subject)
);
CREATE TABLE IF NOT EXISTS challenges (
    challenge  TEXT PRIMARY KEY,
    verifier   TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS challenges_by_expiry ON challenges(expires_at);
CREATE TABLE IF NOT EXISTS rate_events (
    id  BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_events_by_key ON rate_events(key, at);
";

/// Version 2: seeds sealed under each replica's key-encryption key.
const VERSION_2: &str = "
CREATE TABLE IF NOT EXISTS sealed_secrets (
    name   TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
);
";

/// Version 3: the webhook outbox, one queue for every hub's dispatcher. `seq` orders entries
/// created in the same millisecond.
const VERSION_3: &str = "
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              TEXT PRIMARY KEY,
    seq             BIGSERIAL,
    body            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    delivered_at    BIGINT,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_pending
    ON webhook_outbox(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
";

/// Brings the database up to [`schema::VERSION`] in one transaction; refuses a newer one.
pub(super) async fn migrate(
    client: &mut tokio_postgres::Client,
    shown: &str,
) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let has_meta = tx
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
        .await?
        .try_get::<_, bool>(0)?;
    let recorded: Option<String> = if has_meta {
        tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?
    } else {
        None
    };
    let found = schema::check(shown, recorded.as_deref())?;
    if found < 1 {
        tx.batch_execute(VERSION_1).await?;
    }
    if found < 2 {
        tx.batch_execute(VERSION_2).await?;
    }
    if found < 3 {
        tx.batch_execute(VERSION_3).await?;
    }
    if found < schema::VERSION {
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', $1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            &[&schema::VERSION.to_string()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
