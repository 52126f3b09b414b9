//! Requests checked before anything is signed or recorded. Each check belongs to the type it
//! checks (`ActionRequest::validate`, `PeerEvidence::validate`, ...) and fails with a
//! [`RequestError`] that names the field to fix: input that no policy can make valid.

/// Why a request can never be valid, whatever the policy says. The messages are for the caller
/// (a model or an operator): each names the field and the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A lifetime outside 1 ..= `max` seconds.
    #[error("{what} TTL must be between 1 and {max} seconds")]
    TtlOutOfRange {
        /// What the lifetime is of: `token` or `delegation`.
        what: &'static str,
        /// The longest lifetime allowed.
        max: i64,
    },
    /// A delegation that names no action.
    #[error("name at least one action to delegate (or \"*\" for all you may do)")]
    NoAction,
    /// A list too long, or with an entry empty, too long or holding control characters.
    #[error("at most {count} {field}s, each 1 to {limit} bytes without control characters")]
    List {
        /// The field, in the singular.
        field: &'static str,
        /// The most entries allowed.
        count: usize,
        /// The longest entry in bytes.
        limit: usize,
    },
    /// A field that must be given is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A text field too long or holding control characters.
    #[error("{field} must be at most {limit} bytes without control characters")]
    Text {
        /// The field.
        field: &'static str,
        /// Its longest length in bytes.
        limit: usize,
    },
    /// An argument number that canonical JSON cannot bind exactly (beyond 2^53).
    #[error("argument number {0} is beyond 2^53 and cannot be bound exactly: pass it as a string")]
    InexactNumber(String),
    /// A revocation reason empty, too long or holding control characters.
    #[error("revocation reason must be 1 to {max} bytes without control characters")]
    Reason {
        /// The longest reason in bytes.
        max: usize,
    },
}

/// Checks a text field: at most `limit` bytes, no control characters (it may reach a token,
/// a log line or a terminal). Emptiness is the caller's to check where it matters.
pub fn check_text(field: &'static str, value: &str, limit: usize) -> Result<(), RequestError> {
    if value.len() > limit || value.chars().any(char::is_control) {
        return Err(RequestError::Text { field, limit });
    }
    Ok(())
}
