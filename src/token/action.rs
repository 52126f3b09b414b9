//! Action tokens: a JWT signed by the agent's own key(s) (`typ` `agent-action+jwt`) that
//! authorizes one action, for one audience, with exactly the given arguments, for a short time.
//!
//! The token names its certificate by serial (`cert`) rather than embedding it, which keeps even
//! a hybrid token (about 5 KB) inside an 8 KB HTTP header.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::crypto::{CryptoError, SigningKey};
use crate::jose::{self, EdAlgName, Jws};
use crate::reason::VerifyError;
use crate::request::{RequestError, check_text};
use crate::token::certificate::AgentCertificate;
use crate::token::delegation::Chain;

/// The `typ` of an action token.
pub const TOKEN_TYP: &str = "agent-action+jwt";
/// Default token lifetime: five minutes.
pub const DEFAULT_TTL: i64 = 300;
/// Longest lifetime a token may be issued for: one day.
pub const MAX_TTL: i64 = 86_400;

/// The claims of an action token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionClaims {
    /// The agent id.
    pub iss: String,
    /// The agent id (the agent acts for itself unless `act` says otherwise).
    pub sub: String,
    /// Who the token is for.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Expires at.
    pub exp: i64,
    /// Token id.
    pub jti: String,
    /// The authorized action.
    pub action: String,
    /// base64url SHA-256 of the RFC 8785 canonical JSON of the action's arguments.
    pub args_sha256: String,
    /// Space-separated scopes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Serial of the agent's certificate.
    pub cert: String,
    /// RFC 8693 actor chain, when delegated: the signer outermost, then earlier actors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// The delegation grants the chain rests on, root first (see [`crate::token::delegation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlg: Option<Vec<String>>,
}

/// The digest that binds a token to its arguments: base64url(SHA-256(JCS(args))) (RFC 8785).
pub fn args_sha256(args: &Value) -> String {
    let canonical =
        serde_json_canonicalizer::to_vec(args).expect("a serde_json::Value always canonicalizes");
    jose::b64(&Sha256::digest(&canonical))
}

/// The largest integer magnitude that RFC 8785 canonicalization (IEEE 754 doubles) keeps exact.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Checks that `args` can be bound exactly: RFC 8785 reads numbers as doubles, so two integers
/// beyond 2^53 could hash alike and a token would authorize both. Such values must be strings.
pub fn check_args(args: &Value) -> Result<(), RequestError> {
    match args {
        Value::Number(n) => {
            let exact = n
                .as_u64()
                .map(|v| v <= MAX_SAFE_INTEGER)
                .or_else(|| n.as_i64().map(|v| v.unsigned_abs() <= MAX_SAFE_INTEGER))
                .unwrap_or(true);
            if exact {
                Ok(())
            } else {
                Err(RequestError::InexactNumber(n.to_string()))
            }
        }
        Value::Array(items) => items.iter().try_for_each(check_args),
        Value::Object(map) => map.values().try_for_each(check_args),
        _ => Ok(()),
    }
}

/// What an agent asks to be authorized.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// The action name, for example `deploy` or `payments.refund`.
    pub action: String,
    /// The audience: the service or peer that will act on the token.
    pub audience: String,
    /// The action's arguments (any JSON; `{}` when there are none).
    pub args: Value,
    /// Lifetime in seconds.
    pub ttl: i64,
    /// Space-separated scopes.
    pub scope: Option<String>,
    /// How to name Ed25519 in the header.
    pub ed_alg: EdAlgName,
    /// The delegation chain the agent acts under (`None`: it acts for itself).
    pub delegation: Option<Chain>,
}

impl ActionRequest {
    /// A request with the default TTL and no scope.
    pub fn new(action: impl Into<String>, audience: impl Into<String>, args: Value) -> Self {
        ActionRequest {
            action: action.into(),
            audience: audience.into(),
            args,
            ttl: DEFAULT_TTL,
            scope: None,
            ed_alg: EdAlgName::EdDsa,
            delegation: None,
        }
    }

    /// Refuses what no policy can make a valid action request: a TTL out of bounds, empty or
    /// oversized fields, control characters, arguments that cannot be bound exactly. The bounds
    /// keep even a hybrid token inside an 8 KB HTTP header (and what reaches signals and the
    /// audit log small).
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.ttl <= 0 || self.ttl > MAX_TTL {
            return Err(RequestError::TtlOutOfRange {
                what: "token",
                max: MAX_TTL,
            });
        }
        if self.action.is_empty() {
            return Err(RequestError::Empty("action"));
        }
        if self.audience.is_empty() {
            return Err(RequestError::Empty("audience"));
        }
        check_text("action", &self.action, 128)?;
        check_text("audience", &self.audience, 512)?;
        check_text("scope", self.scope.as_deref().unwrap_or(""), 512)?;
        check_args(&self.args)
    }
}

/// A freshly signed token with the facts a caller needs about it.
#[derive(Debug, Clone, Serialize)]
pub struct SignedAction {
    /// The token (compact JWS, or general JSON JWS for a hybrid agent).
    pub token: String,
    /// Its id.
    pub jti: String,
    /// When it expires.
    pub exp: i64,
}

/// Signs an action token as the subject of `certificate` with `keys` (all of the agent's keys).
pub fn sign(
    certificate: &AgentCertificate,
    keys: &[&SigningKey],
    request: &ActionRequest,
    now: i64,
) -> Result<SignedAction, CryptoError> {
    let jti = crate::clock::random_id()?;
    let agent = certificate.claims.sub.clone();
    let claims = ActionClaims {
        iss: agent.clone(),
        sub: request
            .delegation
            .as_ref()
            .map_or_else(|| agent.clone(), |chain| chain.principal.clone()),
        aud: request.audience.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(request.ttl),
        jti: jti.clone(),
        action: request.action.clone(),
        args_sha256: args_sha256(&request.args),
        scope: request.scope.clone(),
        cert: certificate.claims.jti.clone(),
        act: request.delegation.as_ref().map(|chain| chain.act(&agent)),
        dlg: request
            .delegation
            .as_ref()
            .filter(|chain| !chain.grants.is_empty())
            .map(|chain| chain.grants.clone()),
    };
    let token = jose::sign(&claims, TOKEN_TYP, keys, request.ed_alg)?;
    Ok(SignedAction {
        token,
        jti,
        exp: claims.exp,
    })
}

/// What the verifier expects of a token beyond its signature and lifetime.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The verifier's own identity: the token's `aud` must equal it.
    pub audience: Option<String>,
    /// The action about to be performed.
    pub action: Option<String>,
    /// The arguments about to be used; they must hash to `args_sha256`.
    pub args: Option<Value>,
    /// Most actors a delegation chain may have (`None`: [`crate::token::delegation::DEFAULT_MAX_DEPTH`]).
    pub max_delegation_depth: Option<usize>,
}

/// Parses a token and reads its claims without verifying anything.
pub fn parse_unverified(token: &str) -> Result<(Jws, ActionClaims), VerifyError> {
    let jws = Jws::parse(token)?;
    let claims = jose::parse_strict_object(&jws.payload, "token claims")?;
    Ok((jws, claims))
}
