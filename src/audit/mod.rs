//! The tamper-evident audit log: every tool call and CLI operation, hash-chained, signed, and
//! the leaves of a Merkle tree whose heads the CA signs as checkpoints.
//!
//! Each record's body is JSON that names the previous record's hash (`prev`) and its own
//! position (`seq`); its hash is SHA-256 over the body's exact bytes, and the installation's CA
//! key signs that hash. Editing a record breaks its hash (or, if the hash is recomputed, its
//! signature); deleting, inserting or reordering records breaks the chain of `seq` and `prev`.
//! [`verify`] walks the log and names the first record that does not hold.
//!
//! Each body is also a leaf of the log's RFC 9162 Merkle tree ([`merkle`]); the CA signs the
//! tree's heads as [`checkpoint`]s. A checkpoint kept outside the database catches what the log
//! alone cannot: records cut off the end, or the whole database put back to an older copy
//! ([`AuditVerifier::expect`]). Files: `record.rs` (what a record is), `verify.rs` (walking
//! the log), [`merkle`] (the tree), [`checkpoint`] (signed tree heads).
//!
//! Records never hold secrets: front-ends put in identifiers (agent ids, token ids, serials,
//! actions, audiences) and decisions, never keys, tokens or tool arguments' values.
//!
//! ```
//! use agentseal::audit::{self, AuditEvent, Decision};
//! use agentseal::crypto::{Algorithm, Seed, SigningKey};
//!
//! let key = SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().unwrap());
//! let event = AuditEvent::new("agent://acme.example/reviewer", "mcp.sign_action", Decision::Allowed);
//! let first = audit::seal(&event, None, 1_700_000_000, &key).unwrap();
//! let second = audit::seal(&event, Some(&first), 1_700_000_001, &key).unwrap();
//!
//! let keys = [key.public_key().clone()];
//! assert_eq!(audit::verify([first.clone(), second.clone()].into_iter(), &keys, None).unwrap().records, 2);
//!
//! // Dropping the first record breaks the chain, and verification says where.
//! let fault = audit::verify([second].into_iter(), &keys, None).unwrap_err();
//! assert_eq!(fault.seq(), Some(1));
//! ```

pub mod checkpoint;
pub mod merkle;
mod record;
mod verify;

pub use record::{AuditEvent, Decision, FORMAT, GENESIS, RecordBody, SealedRecord, seal};
pub use verify::{AuditFault, AuditHead, AuditSummary, AuditVerifier, mark, verify};
