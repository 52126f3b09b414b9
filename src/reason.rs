//! Why a token, certificate or revocation list was rejected.
//!
//! Every rejection maps to one stable, documented reason code ([`VerifyError::code`]) that the CLI,
//! the MCP tools and the tests share. Codes never change meaning once published; see
//! `docs/reason-codes.md`.

use crate::crypto::Algorithm;

/// A verification failure. The `Display` text is for people; [`VerifyError::code`] is for programs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The input is not a well-formed JWS/JWT of the expected shape (bad base64url, bad JSON,
    /// duplicate member names, missing or mistyped claims, unknown critical headers).
    #[error("malformed: {0}")]
    Malformed(String),
    /// The input is larger than any object agentseal issues.
    #[error("input is {len} bytes, more than the limit of {limit}")]
    Oversized {
        /// Length of the input.
        len: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The `typ` header names another kind of object.
    #[error("wrong typ: expected {expected}, found {found}")]
    WrongType {
        /// The expected `typ`.
        expected: &'static str,
        /// What the header said.
        found: String,
    },
    /// The `alg` header is not on the allow-list for the signer's key (including `none` and an
    /// algorithm swapped between key types).
    #[error("algorithm {0:?} is not allowed for this key")]
    AlgNotAllowed(String),
    /// A signature required by the signer's key set is absent (for example one half of a hybrid).
    #[error("missing {0} signature")]
    MissingSignature(Algorithm),
    /// A signature does not verify.
    #[error("bad {0} signature")]
    BadSignature(Algorithm),
    /// The issuer is not the CA this verifier trusts.
    #[error("unknown issuer {0:?}")]
    UnknownIssuer(String),
    /// The certificate the token names is not known to this verifier.
    #[error("unknown certificate {0:?}")]
    UnknownCertificate(String),
    /// The token's issuer is not the subject of the certificate it names.
    #[error("token issuer {token} does not match certificate subject {certificate}")]
    SubjectMismatch {
        /// The token's `iss`.
        token: String,
        /// The certificate's `sub`.
        certificate: String,
    },
    /// The certificate is past its `exp`.
    #[error("certificate expired at {0}")]
    CertificateExpired(i64),
    /// The certificate's `nbf` is in the future.
    #[error("certificate not valid before {0}")]
    CertificateNotYetValid(i64),
    /// The certificate has been revoked.
    #[error("certificate {serial} revoked: {reason}")]
    CertificateRevoked {
        /// The certificate serial.
        serial: String,
        /// The operator's reason.
        reason: String,
    },
    /// The token is past its `exp`.
    #[error("expired at {0}")]
    Expired(i64),
    /// The token's `nbf` (or `iat`) is in the future beyond the allowed clock skew.
    #[error("not valid before {0}")]
    NotYetValid(i64),
    /// The token was issued for another audience.
    #[error("wrong audience: expected {expected}, token is for {found}")]
    WrongAudience {
        /// The audience the verifier expected.
        expected: String,
        /// The token's `aud`.
        found: String,
    },
    /// The token was issued for another action.
    #[error("wrong action: expected {expected}, token is for {found}")]
    WrongAction {
        /// The action the verifier expected.
        expected: String,
        /// The token's `action`.
        found: String,
    },
    /// The token id has been revoked.
    #[error("token {jti} revoked: {reason}")]
    Revoked {
        /// The token id.
        jti: String,
        /// The operator's reason.
        reason: String,
    },
    /// The arguments presented do not hash to the token's `args_sha256`.
    #[error("arguments do not match args_sha256")]
    ArgsMismatch,
    /// A proof of possession answers another challenge than the one the verifier issued.
    #[error("proof of possession answers another challenge")]
    WrongChallenge,
    /// A certificate was presented without a proof of possession (or a token): certificates are
    /// public, so it proves nothing about who presented it.
    #[error("a certificate alone proves nothing: ask the peer for a proof over a fresh challenge")]
    ProofRequired,
    /// The token was already used: a verifier recorded it as consumed.
    #[error("token {0} was already used")]
    Replayed(String),
    /// No fresh revocation data is available, so the verifier fails closed.
    #[error("revocation data unavailable or stale")]
    RevocationUnavailable,
    /// The delegation chain does not connect: a grant names other parties, another principal
    /// or another parent than the chain's, or `act` disagrees with the grants.
    #[error("delegation chain broken: {0}")]
    DelegationBroken(String),
    /// A grant is not signed by the certified keys of the agent it names as delegator (forged,
    /// or re-signed by another agent).
    #[error("delegation grant {index} is not signed by its delegator's certified keys")]
    DelegationBadSignature {
        /// The grant's position in the chain, from 0 at the root.
        index: usize,
    },
    /// A grant, or its delegator's certificate, is revoked: so is everything under it.
    #[error("delegation grant {index} is revoked: {detail}")]
    DelegationRevoked {
        /// The grant's position in the chain.
        index: usize,
        /// What was revoked, and why.
        detail: String,
    },
    /// A grant or the token allows more than the grant above it: an action, audience or scope.
    #[error("scope escalation: {0}")]
    ScopeEscalation(String),
    /// A grant or the token is valid beyond the grant above it.
    #[error("delegation grant {index} is outlived by what it authorizes")]
    DelegationOutlivesParent {
        /// The position of the grant that is outlived.
        index: usize,
    },
    /// A grant is past its `exp` (or before its `nbf`).
    #[error("delegation grant {index} is not valid now")]
    DelegationExpired {
        /// The grant's position in the chain.
        index: usize,
    },
    /// The chain has more actors than the verifier allows.
    #[error("delegation chain has {depth} actors, more than the limit of {max}")]
    DelegationTooDeep {
        /// Actors in the chain (the signer included).
        depth: usize,
        /// The verifier's limit.
        max: usize,
    },
    /// A party appears twice in the chain.
    #[error("delegation chain names {0} twice")]
    DelegationCycle(String),
}

impl VerifyError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::Oversized { .. } => "oversized",
            VerifyError::WrongType { .. } => "wrong_type",
            VerifyError::AlgNotAllowed(_) => "alg_not_allowed",
            VerifyError::MissingSignature(_) => "missing_signature",
            VerifyError::BadSignature(_) => "bad_signature",
            VerifyError::UnknownIssuer(_) => "unknown_issuer",
            VerifyError::UnknownCertificate(_) => "unknown_certificate",
            VerifyError::SubjectMismatch { .. } => "subject_mismatch",
            VerifyError::CertificateExpired(_) => "certificate_expired",
            VerifyError::CertificateNotYetValid(_) => "certificate_not_yet_valid",
            VerifyError::CertificateRevoked { .. } => "certificate_revoked",
            VerifyError::Expired(_) => "expired",
            VerifyError::NotYetValid(_) => "not_yet_valid",
            VerifyError::WrongAudience { .. } => "wrong_audience",
            VerifyError::WrongAction { .. } => "wrong_action",
            VerifyError::Revoked { .. } => "revoked",
            VerifyError::ArgsMismatch => "args_mismatch",
            VerifyError::WrongChallenge => "wrong_challenge",
            VerifyError::ProofRequired => "proof_required",
            VerifyError::RevocationUnavailable => "revocation_unavailable",
            VerifyError::Replayed(_) => "replayed",
            VerifyError::DelegationBroken(_) => "delegation_broken",
            VerifyError::DelegationBadSignature { .. } => "delegation_bad_signature",
            VerifyError::DelegationRevoked { .. } => "delegation_revoked",
            VerifyError::ScopeEscalation(_) => "scope_escalation",
            VerifyError::DelegationOutlivesParent { .. } => "delegation_outlives_parent",
            VerifyError::DelegationExpired { .. } => "delegation_expired",
            VerifyError::DelegationTooDeep { .. } => "delegation_too_deep",
            VerifyError::DelegationCycle(_) => "delegation_cycle",
        }
    }

    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        VerifyError::Malformed(detail.into())
    }
}
