//! Schema versions, shared by both engines. The version is the `schema_version` metadata value;
//! each engine's migrations bring an older database up to [`VERSION`] when it is opened (by
//! `agentseal init` or at start), inside one transaction, and a database newer than this binary
//! is refused rather than misread.
//!
//! | version | what changed |
//! |---|---|
//! | none | SQLite databases made before versions were recorded: taken as 0 |
//! | 1 | SQLite: `agents.key_generation` (agent key rotation). PostgreSQL: the first schema, with the `challenges` and `rate_events` tables several hubs share |
//! | 2 | `sealed_secrets`: seeds sealed under each replica's key-encryption key |
//! | 3 | PostgreSQL: `webhook_outbox` (SQLite's is made by the outbox itself) |

use super::StoreError;

/// The newest schema this binary reads and writes.
pub const VERSION: i64 = 3;

/// The recorded version (`None`: unversioned, taken as 0), refused when newer than [`VERSION`]
/// or unreadable.
pub(super) fn check(location: &str, recorded: Option<&str>) -> Result<i64, StoreError> {
    let found = match recorded {
        None => 0,
        Some(value) => value.parse::<i64>().map_err(|_| {
            StoreError::Corrupt(location.to_owned(), format!("schema_version {value:?}"))
        })?,
    };
    if found > VERSION {
        return Err(StoreError::TooNew {
            location: location.to_owned(),
            found,
            supported: VERSION,
        });
    }
    Ok(found)
}
