//! agentseal: cryptographic identity for AI agents.
//!
//! A private CA issues per-agent certificates; agents sign short-lived action tokens with keys
//! that never leave the OS keyring (Ed25519, ML-DSA-65, or both); peers verify offline with the
//! CA's public keys and a signed revocation list.
//!
//! This crate is the transport-free core. [`service::Installation`] holds every operation; a
//! service that only verifies uses [`verify::Verifier`] with a [`certificate::TrustAnchor`] and a
//! [`revocation::RevocationList`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certificate;
pub mod clock;
pub mod crypto;
pub mod fsutil;
pub mod jose;
pub mod keystore;
pub mod reason;
pub mod revocation;
pub mod service;
pub mod store;
pub mod token;
pub mod verify;
