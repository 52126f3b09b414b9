//! The signed objects, one module each: what they claim, how they are issued, and how each one
//! alone is checked. Checking a token against its certificate, chain and revocations is
//! [`crate::verify`]'s job.
//!
//! - [`certificate`]: the CA binds an agent id to its public keys (`agent-cert+jwt`);
//! - [`action`]: an agent authorizes one action for one audience (`agent-action+jwt`);
//! - [`delegation`]: an agent lets another act for it (`agent-delegation+jwt`);
//! - [`presentation`]: an agent proves it holds its certificate's keys, over a peer's challenge;
//! - [`access`]: the hub lets a bearer act as one agent (`at+jwt`);
//! - [`revocation`]: the CA's signed list of revoked serials and token ids (`agent-crl+jwt`);
//! - [`trust`]: what every check relies on: the CA's keys and a source of revocations.

pub mod access;
pub mod action;
pub mod certificate;
pub mod delegation;
pub mod presentation;
pub mod revocation;
pub mod trust;
