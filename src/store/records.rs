//! The rows the store keeps, as the core sees them, whichever engine holds them.

/// One agent as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentRecord {
    /// The agent id.
    pub agent_id: String,
    /// Its algorithms (`ed25519`, `ml-dsa-65`, or both).
    pub algorithms: Vec<String>,
    /// Operator metadata.
    pub meta: std::collections::BTreeMap<String, String>,
    /// When it was created.
    pub created_at: i64,
    /// Serial of its current certificate.
    pub current_serial: Option<String>,
    /// How many times its keys were rotated: names its key store entries
    /// ([`crate::keystore::KeyName::agent_key`]).
    pub key_generation: u32,
}

/// One issued certificate as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateRecord {
    /// Serial.
    pub serial: String,
    /// Subject.
    pub agent_id: String,
    /// Issued at.
    pub issued_at: i64,
    /// Expires at.
    pub expires_at: i64,
    /// The encoded certificate.
    pub encoded: String,
}

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
/// A checkpoint as kept beside the log: the signed note, and the parts of its Merkle tree that
/// let a later walk resume there instead of at the first record (checked against the note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// How many records it covers.
    pub size: i64,
    /// The signed note.
    pub note: String,
    /// [`crate::audit::merkle::Frontier::parts`] as JSON, unsigned: a hint, checked on use.
    pub tree: String,
    /// When it was signed (Unix time).
    pub signed_at: i64,
}
