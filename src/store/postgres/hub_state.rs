//! What hubs decide together through the database: replay records (a token consumed through
//! one hub is replayed on every other), rejection counts for the auto-revoke rule,
//! challenges issued by one hub and answered through another, and rate windows that hold across
//! all of them. Each is serialized per key (an advisory lock, or the primary key).

use super::*;

pub(super) fn trip_on_rejection(
    store: &PgStore,
    agent_id: &str,
    subject: &str,
    now: i64,
    since: i64,
    threshold: i64,
) -> Result<Option<i64>, StoreError> {
    let (pool, agent, subject) = (store.pool(), agent_id.to_owned(), subject.to_owned());
    let relaxed = store.relaxed();
    store.write(async move {
        let mut c = get(&pool).await?;
        let tx = c.transaction().await?;
        tx.batch_execute(relaxed).await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('rejections:' || $1, 0))",
            &[&agent],
        )
        .await?;
        tx.execute(
            "DELETE FROM rejections WHERE agent_id = $1 AND at < $2",
            &[&agent, &since],
        )
        .await?;
        tx.execute(
            "INSERT INTO rejections(agent_id, subject, at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&agent, &subject, &now],
        )
        .await?;
        let count: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM rejections WHERE agent_id = $1",
                &[&agent],
            )
            .await?
            .try_get(0)?;
        let tripped = count >= threshold;
        if tripped {
            tx.execute("DELETE FROM rejections WHERE agent_id = $1", &[&agent])
                .await?;
        }
        commit(tx).await?;
        Ok(tripped.then_some(count))
    })
}

pub(super) fn issue_challenge(
    store: &PgStore,
    challenge: &str,
    verifier: &str,
    expires_at: i64,
    _now: i64,
) -> Result<(), StoreError> {
    let (pool, challenge, verifier) = (store.pool(), challenge.to_owned(), verifier.to_owned());
    store.write(async move {
        let mut c = get(&pool).await?;
        let tx = c.transaction().await?;
        let prune = tx
            .prepare_cached(&format!(
                "DELETE FROM challenges WHERE expires_at < {DB_NOW} - {PRUNE_MARGIN}"
            ))
            .await?;
        tx.execute(&prune, &[]).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO challenges(challenge, verifier, expires_at) VALUES ($1, $2, $3)",
            )
            .await?;
        tx.execute(&insert, &[&challenge, &verifier, &expires_at])
            .await?;
        commit(tx).await
    })
}

pub(super) fn take_challenge(
    store: &PgStore,
    challenge: &str,
    verifier: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let (pool, challenge, verifier) = (store.pool(), challenge.to_owned(), verifier.to_owned());
    store.write(async move {
        let c = get(&pool).await?;
        let stmt = c
            .prepare_cached(
                "DELETE FROM challenges WHERE challenge = $1 AND verifier = $2
                 RETURNING expires_at",
            )
            .await?;
        let expires: Option<i64> = c
            .query_opt(&stmt, &[&challenge, &verifier])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        Ok(expires.is_some_and(|expires| expires >= now))
    })
}

pub(super) fn admit_rate(
    store: &PgStore,
    key: &str,
    count: u32,
    per_seconds: i64,
    now: i64,
) -> Result<Result<(), i64>, StoreError> {
    let (pool, key) = (store.pool(), key.to_owned());
    let relaxed = store.relaxed();
    store.write(async move {
        let mut c = get(&pool).await?;
        let tx = c.transaction().await?;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('rate:' || $1, 0))")
            .await?;
        let prune = tx
            .prepare_cached("DELETE FROM rate_events WHERE key = $1 AND at <= $2")
            .await?;
        let window = tx
            .prepare_cached("SELECT COUNT(*), MIN(at) FROM rate_events WHERE key = $1")
            .await?;
        // One round trip, run in order: the window is read under the key's lock.
        let since = now - per_seconds;
        let (by_key, by_key_since): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) =
            (&[&key], &[&key, &since]);
        let (set, locked, pruned, row) = tokio::join!(
            tx.batch_execute(relaxed),
            tx.execute(&lock, by_key),
            tx.execute(&prune, by_key_since),
            tx.query_one(&window, by_key)
        );
        set?;
        locked?;
        pruned?;
        let row = row?;
        let (held, oldest): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        if held >= i64::from(count) {
            let oldest = oldest.unwrap_or(now);
            return Ok(Err((oldest + per_seconds - now).max(1)));
        }
        let insert = tx
            .prepare_cached("INSERT INTO rate_events(key, at) VALUES ($1, $2)")
            .await?;
        tx.execute(&insert, &[&key, &now]).await?;
        commit(tx).await?;
        Ok(Ok(()))
    })
}

pub(super) fn consumed(store: &PgStore, issuer: &str, jti: &str) -> Result<bool, StoreError> {
    let (pool, issuer, jti) = (store.pool(), issuer.to_owned(), jti.to_owned());
    store.run(async move {
        let c = get(&pool).await?;
        let stmt = c
            .prepare_cached("SELECT 1 FROM consumed_tokens WHERE issuer = $1 AND jti = $2")
            .await?;
        Ok(c.query_opt(&stmt, &[&issuer, &jti]).await?.is_some())
    })
}

pub(super) fn consume(
    store: &PgStore,
    issuer: &str,
    jti: &str,
    expires_at: i64,
    _now: i64,
) -> Result<bool, StoreError> {
    let (pool, issuer, jti) = (store.pool(), issuer.to_owned(), jti.to_owned());
    store.write(async move {
        let mut c = get(&pool).await?;
        let tx = c.transaction().await?;
        // By the database's clock, the one all hubs share, less a margin: a hub whose clock
        // runs ahead must not drop records other hubs still need.
        let prune = tx
            .prepare_cached(&format!(
                "DELETE FROM consumed_tokens WHERE expires_at < {DB_NOW} - {PRUNE_MARGIN}"
            ))
            .await?;
        tx.execute(&prune, &[]).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO consumed_tokens(issuer, jti, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        let added = tx.execute(&insert, &[&issuer, &jti, &expires_at]).await?;
        commit(tx).await?;
        Ok(added == 1)
    })
}
