//! agentseal: cryptographic identity for AI agents.
//!
//! A private CA issues per-agent certificates; agents sign short-lived action tokens with keys
//! that never leave the OS keyring (Ed25519, ML-DSA-65, or both); peers verify offline with the
//! CA's public keys and a signed revocation list.
//!
//! This library is the transport-free core; the `agentseal` binary's CLI, MCP server and HTTP hub
//! sit on top of it. `authority::Installation` (feature `authority`, on by default) holds every
//! operation of an installation; a service that only verifies uses [`verify::Verifier`] with a
//! [`token::trust::TrustAnchor`] and a [`token::revocation::RevocationList`], and can build the
//! library with `default-features = false`: crypto, JOSE, the signed objects and the verifier,
//! without the server's crates. `docs/architecture.md` maps the layers.
//!
//! # Verifying offline
//!
//! A peer holds the CA's public keys, the certificate the agent presented, and the latest
//! revocation list; nothing else, and no network:
//!
//! ```
//! use agentseal::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
//! use agentseal::token::trust::TrustAnchor;
//! use agentseal::crypto::{Algorithm, Seed, SigningKey};
//! use agentseal::token::revocation::{CrlClaims, RevocationList};
//! use agentseal::token::action::{self, ActionRequest, Expectations};
//! use agentseal::verify::{PresentedCertificates, Verifier};
//! use serde_json::json;
//!
//! let now = agentseal::clock::now();
//! // The operator's CA (normally its seed lives in the OS keyring).
//! let ca = SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().unwrap());
//! let agent = SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().unwrap());
//! let claims = CertificateClaims {
//!     iss: "urn:agentseal:ca:example".into(),
//!     sub: "agent://acme.example/reviewer".into(),
//!     iat: now, nbf: now, exp: now + 3600,
//!     jti: "serial-1".into(),
//!     cnf: Confirmation::for_keys(&[agent.public_key().clone()]),
//!     meta: Default::default(),
//! };
//! let cert = AgentCertificate::issue(&claims, &[&ca]).unwrap();
//! let crl = RevocationList::issue(&CrlClaims {
//!     iss: claims.iss.clone(), number: 1, iat: now, next_update: now + 3600,
//!     revoked_certificates: vec![], revoked_tokens: vec![], audit_checkpoint: None,
//!     ca_keys: None,
//! }, &[&ca]).unwrap();
//!
//! // The agent signs an action token.
//! let certificate = AgentCertificate { claims, keys: vec![agent.public_key().clone()], encoded: cert.clone() };
//! let request = ActionRequest::new("deploy", "https://deploy.acme.example", json!({"repo": "web"}));
//! let signed = action::sign(&certificate, &[&agent], &request, now).unwrap();
//!
//! // The peer verifies it.
//! let anchor = TrustAnchor { ca_id: "urn:agentseal:ca:example".into(), keys: vec![ca.public_key().clone()] };
//! let crl = RevocationList::verify(&crl, &anchor, 300).unwrap();
//! let presented = PresentedCertificates(vec![cert]);
//! let verifier = Verifier { anchor: &anchor, certificates: &presented, revocation: &crl, skew: 60, cache: None };
//! let expect = Expectations { max_delegation_depth: None,
//!     audience: Some("https://deploy.acme.example".into()),
//!     action: Some("deploy".into()),
//!     args: Some(json!({"repo": "web"})),
//! };
//! let verified = verifier.verify_token(&signed.token, &expect, now).unwrap();
//! assert_eq!(verified.claims.iss, "agent://acme.example/reviewer");
//!
//! // Other arguments than the ones authorized are refused with a stable reason code.
//! let other = Expectations { args: Some(json!({"repo": "prod"})), ..expect };
//! let error = verifier.verify_token(&signed.token, &other, now).unwrap_err();
//! assert_eq!(error.code(), "args_mismatch");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::too_many_lines)]

pub mod clock;
pub mod identifier;
pub mod reason;
pub mod request;

// The verify-only core: what a peer needs to check signed objects offline.
pub mod crypto;
pub mod jose;
pub mod token;
pub mod verify;

// The operator's side (feature `authority`): an installation and what it keeps.
#[cfg(feature = "authority")]
pub mod audit;
#[cfg(feature = "authority")]
pub mod authority;
#[cfg(feature = "authority")]
pub mod federation;
#[cfg(feature = "authority")]
pub mod fsutil;
#[cfg(feature = "authority")]
pub mod keystore;
#[cfg(feature = "authority")]
pub mod metrics;
#[cfg(feature = "authority")]
pub mod policy;
#[cfg(feature = "authority")]
pub mod signals;
#[cfg(feature = "authority")]
pub mod store;
