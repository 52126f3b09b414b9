//! Delegation grants the installation's agents signed, kept to rebuild the chains delegates sign under.

use super::*;

/// A delegation grant as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Grant id.
    pub jti: String,
    /// The delegating agent.
    pub delegator: String,
    /// The delegate.
    pub delegate: String,
    /// The principal the chain acts for.
    pub principal: String,
    /// Expiry.
    pub expires_at: i64,
    /// The signed grant.
    pub encoded: String,
}

impl Store {
    /// Records a grant an agent of this installation signed.
    pub fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        let grant = grant.clone();
        self.write(Durability::Synced, move |c| {
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

    /// The unexpired grants that let `delegate` act for `principal`, newest expiry first.
    pub fn grants_for(
        &self,
        delegate: &str,
        principal: &str,
        now: i64,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT jti, delegator, delegate, principal, expires_at, encoded FROM delegations
                 WHERE delegate = ?1 AND principal = ?2 AND expires_at >= ?3
                 ORDER BY expires_at DESC",
            )?
            .query_map(params![delegate, principal, now], grant_record)?
            .collect()
        })
    }

    /// A grant by id.
    pub fn grant(&self, jti: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT jti, delegator, delegate, principal, expires_at, encoded FROM delegations
                 WHERE jti = ?1",
            )?
            .query_row([jti], grant_record)
            .optional()
        })
    }
}

pub(super) fn grant_record(row: &rusqlite::Row) -> rusqlite::Result<GrantRecord> {
    Ok(GrantRecord {
        jti: row.get(0)?,
        delegator: row.get(1)?,
        delegate: row.get(2)?,
        principal: row.get(3)?,
        expires_at: row.get(4)?,
        encoded: row.get(5)?,
    })
}
