//! Delegation grants the installation's agents signed, kept to rebuild the chains delegates sign under.

use super::*;

/// [`Backend::insert_grant`].
pub(super) fn insert(store: &SqliteStore, grant: &GrantRecord) -> Result<(), StoreError> {
    let grant = grant.clone();
    store.write(Durability::Synced, move |c| {
        c.execute(
            "INSERT INTO delegations(jti, delegator, delegate, principal, expires_at, encoded)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                grant.jti,
                grant.delegator,
                grant.delegate,
                grant.principal,
                grant.expires_at,
                grant.encoded
            ],
        )
        .map(drop)
    })
}

/// [`Backend::grants_for`].
pub(super) fn grants_for(
    store: &SqliteStore,
    delegate: &str,
    principal: &str,
    now: i64,
) -> Result<Vec<GrantRecord>, StoreError> {
    store.with(|c| {
        c.prepare_cached(
            "SELECT jti, delegator, delegate, principal, expires_at, encoded FROM delegations
             WHERE delegate = ?1 AND principal = ?2 AND expires_at >= ?3
             ORDER BY expires_at DESC",
        )?
        .query_map(params![delegate, principal, now], grant_record)?
        .collect()
    })
}

/// [`Backend::grant`].
pub(super) fn grant(store: &SqliteStore, jti: &str) -> Result<Option<GrantRecord>, StoreError> {
    store.with(|c| {
        c.prepare_cached(
            "SELECT jti, delegator, delegate, principal, expires_at, encoded FROM delegations
             WHERE jti = ?1",
        )?
        .query_row([jti], grant_record)
        .optional()
    })
}

fn grant_record(row: &rusqlite::Row) -> rusqlite::Result<GrantRecord> {
    Ok(GrantRecord {
        jti: row.get(0)?,
        delegator: row.get(1)?,
        delegate: row.get(2)?,
        principal: row.get(3)?,
        expires_at: row.get(4)?,
        encoded: row.get(5)?,
    })
}
