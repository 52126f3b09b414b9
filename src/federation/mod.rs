//! Workload identity federation: a workload that already holds a signed identity from its
//! platform (a Kubernetes service-account token, a SPIFFE JWT-SVID, a GitHub Actions OIDC token)
//! trades it for an access token of the hub, without an operator in the loop.
//!
//! The operator states which issuers to trust in [`TrustRule`]s: the issuer's keys, the audience
//! its tokens must carry, the subjects admitted, the agent each maps to and the scopes granted.
//! An exchange ([`crate::authority::Installation::exchange_assertion`]) verifies the presented JWT
//! (the "assertion") against the rule ([`assertion`]), with the issuer's keys fetched and cached
//! by [`IssuerKeys`], consumes its `jti` once, and issues an RFC 9068 access token no longer
//! lived than the assertion.
//!
//! Both OAuth grants that carry such a JWT are accepted: RFC 8693 token exchange and the RFC 7523
//! JWT bearer grant. Every refusal has a stable reason code ([`GrantError::reason`],
//! `docs/reason-codes.md`) beside its OAuth error code ([`GrantError::oauth_error`]).

pub mod assertion;
pub mod keys;
pub mod request;
pub mod rule;

pub use assertion::{Peeked, VerifiedAssertion};
pub use keys::{IssuerKey, IssuerKeys};
pub use request::TokenRequest;
pub use rule::{AgentTemplate, KeySource, RuleError, TrustRule};

/// The OAuth grant types the token endpoint serves.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523 JWT bearer grant.
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The client credentials grant (RFC 6749 §4.4), with the workload's JWT as the client's
/// authentication (RFC 7523 §2.2): the form MCP SDKs use for workload identity.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// The `client_assertion_type` of a JWT used as client authentication (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The subject token types accepted in a token exchange (RFC 8693 §3).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// An OpenID Connect ID token, also a JWT.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The token type issued.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Which grant a token request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// RFC 8693 token exchange.
    TokenExchange,
    /// RFC 7523 JWT bearer.
    JwtBearer,
    /// Client credentials, authenticated by the workload's JWT (RFC 7523 §2.2).
    ClientCredentials,
}

impl Grant {
    /// The grant's short name, for logs, metrics and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Grant::TokenExchange => "token_exchange",
            Grant::JwtBearer => "jwt_bearer",
            Grant::ClientCredentials => "client_credentials",
        }
    }
}

/// This hub as its agents' authorization server: the URLs an assertion's `aud` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubIdentity {
    /// The public base URL, ending in `/`.
    pub base: String,
}

impl HubIdentity {
    /// The hub reached at `base` (`http(s)://host[:port]/`).
    pub fn new(base: &str) -> HubIdentity {
        let mut base = base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        HubIdentity { base }
    }

    /// The authorization server's issuer identifier (RFC 8414): the base URL without its `/`.
    pub fn issuer(&self) -> &str {
        self.base.trim_end_matches('/')
    }

    /// The MCP endpoint: the resource access tokens are for.
    pub fn resource(&self) -> String {
        format!("{}mcp", self.base)
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}oauth/token", self.base)
    }

    /// The authorization endpoint (which only says there is no interactive authorization).
    pub fn authorization_endpoint(&self) -> String {
        format!("{}oauth/authorize", self.base)
    }

    /// Whether `audience` names this hub: its base URL (with or without `/`), its MCP endpoint or
    /// its token endpoint.
    pub fn is_named_by(&self, audience: &str) -> bool {
        audience == self.base
            || audience == self.issuer()
            || audience == self.resource()
            || audience == self.token_endpoint()
    }
}

/// Why a token request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// A parameter is missing, repeated or unusable.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// The grant type is not one this hub serves.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
    /// The requested resource or audience is not this hub.
    #[error("invalid_target: {0}")]
    InvalidTarget(String),
    /// The `client_id` sent is not the assertion's subject (RFC 7523 §3).
    #[error("client_mismatch: {0}")]
    ClientMismatch(String),
    /// A scope asked for is beyond what the rule grants.
    #[error("scope_exceeded: {0}")]
    ScopeExceeded(String),
    /// The assertion is not a well-formed JWT of the expected shape.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The assertion is larger than accepted.
    #[error("oversized: the assertion is larger than {0} bytes")]
    Oversized(usize),
    /// No rule trusts the assertion's issuer.
    #[error("unknown_issuer: no trust rule for issuer {0:?}")]
    UnknownIssuer(String),
    /// The header's `alg` is not one the issuer's keys verify.
    #[error("alg_not_allowed: {0}")]
    AlgNotAllowed(String),
    /// No key of the issuer verifies the signature.
    #[error("bad_signature: {0}")]
    BadSignature(String),
    /// The assertion's `aud` does not name this hub as the rule requires.
    #[error("wrong_audience: {0}")]
    WrongAudience(String),
    /// The assertion is past its `exp`.
    #[error("expired: the assertion expired at {0}")]
    Expired(i64),
    /// The assertion's `nbf` or `iat` is in the future.
    #[error("not_yet_valid: the assertion is valid from {0}")]
    NotYetValid(i64),
    /// The assertion's lifetime is longer than the rule allows.
    #[error("lifetime_too_long: the assertion lives {lifetime} s, the rule allows {max} s")]
    LifetimeTooLong {
        /// `exp` − `iat`.
        lifetime: i64,
        /// The rule's cap.
        max: i64,
    },
    /// The assertion was exchanged before.
    #[error("replayed: this assertion was exchanged before")]
    Replayed,
    /// No rule of the issuer admits the assertion's subject.
    #[error("subject_not_allowed: no trust rule of this issuer admits subject {0:?}")]
    SubjectNotAllowed(String),
    /// A claim the rule pins does not hold the rule's value.
    #[error("claim_mismatch: {0}")]
    ClaimMismatch(String),
    /// The rule's agent template cannot be filled from the assertion.
    #[error("unmapped_subject: {0}")]
    Unmapped(String),
    /// The agent the subject maps to does not exist, or its certificate is revoked.
    #[error("unknown_agent: {0}")]
    UnknownAgent(String),
    /// The issuer's keys cannot be had: fail closed.
    #[error("issuer_keys_unavailable: {0}")]
    IssuerKeysUnavailable(String),
    /// The hub could not complete the exchange (its database, its keys).
    #[error("{code}: {message}")]
    Server {
        /// The installation's reason code (`database_unavailable`, …).
        code: &'static str,
        /// What went wrong, without secrets.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
}

impl GrantError {
    /// The stable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::UnsupportedGrantType(_) => "unsupported_grant_type",
            GrantError::InvalidTarget(_) => "invalid_target",
            GrantError::ClientMismatch(_) => "client_mismatch",
            GrantError::ScopeExceeded(_) => "scope_exceeded",
            GrantError::Malformed(_) => "malformed",
            GrantError::Oversized(_) => "oversized",
            GrantError::UnknownIssuer(_) => "unknown_issuer",
            GrantError::AlgNotAllowed(_) => "alg_not_allowed",
            GrantError::BadSignature(_) => "bad_signature",
            GrantError::WrongAudience(_) => "wrong_audience",
            GrantError::Expired(_) => "expired",
            GrantError::NotYetValid(_) => "not_yet_valid",
            GrantError::LifetimeTooLong { .. } => "lifetime_too_long",
            GrantError::Replayed => "replayed",
            GrantError::SubjectNotAllowed(_) => "subject_not_allowed",
            GrantError::ClaimMismatch(_) => "claim_mismatch",
            GrantError::Unmapped(_) => "unmapped_subject",
            GrantError::UnknownAgent(_) => "unknown_agent",
            GrantError::IssuerKeysUnavailable(_) => "issuer_keys_unavailable",
            GrantError::Server { code, .. } => code,
        }
    }

    /// The OAuth 2.0 error code of the token endpoint's answer (RFC 6749 §5.2, RFC 8693 §2.2.2).
    pub fn oauth_error(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::UnsupportedGrantType(_) => "unsupported_grant_type",
            GrantError::InvalidTarget(_) => "invalid_target",
            GrantError::ClientMismatch(_) => "invalid_client",
            GrantError::ScopeExceeded(_) => "invalid_scope",
            GrantError::IssuerKeysUnavailable(_) => "temporarily_unavailable",
            GrantError::Server {
                retryable: true, ..
            } => "temporarily_unavailable",
            GrantError::Server { .. } => "server_error",
            _ => "invalid_grant",
        }
    }

    /// Whether the refusal came before the issuer's signature was verified: anyone can cause one
    /// (the hub records only so many of these; see `authority::federation`).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            GrantError::Malformed(_)
                | GrantError::Oversized(_)
                | GrantError::UnknownIssuer(_)
                | GrantError::AlgNotAllowed(_)
                | GrantError::BadSignature(_)
                | GrantError::IssuerKeysUnavailable(_)
        )
    }

    /// Whether the refusal is the hub's trouble rather than the request's (a 5xx answer).
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            GrantError::IssuerKeysUnavailable(_) | GrantError::Server { .. }
        )
    }
}
