//! The typed parameters and results of the MCP tools. Their doc comments become the JSON schemas the
//! model reads: they say what each field is for and when to give it.

use super::*;

/// Who this agent is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WhoAmI {
    /// The agent id (a URI).
    pub agent_id: String,
    /// The CA that certified it.
    pub ca_id: String,
    /// Serial of the current certificate.
    pub certificate_serial: String,
    /// Certificate validity start (seconds since the epoch).
    pub certificate_not_before: i64,
    /// Certificate expiry (seconds since the epoch).
    pub certificate_expires_at: i64,
    /// When the server renews the certificate (same keys), if it renews automatically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_renews_at: Option<i64>,
    /// Signature algorithms this agent signs with (both for a hybrid agent).
    pub algorithms: Vec<String>,
    /// RFC 7638 thumbprints of the agent's public keys.
    pub key_ids: Vec<String>,
    /// Operator-set attributes (role, team, ...).
    pub meta: std::collections::BTreeMap<String, String>,
}

/// Parameters of `sign_action`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignActionParams {
    /// The action to authorize, e.g. "deploy" or "payments.refund".
    pub action: String,
    /// Who will act on the token: the service or peer agent id you will send it to.
    pub audience: String,
    /// The exact arguments of the action (a JSON object). The token binds their SHA-256, so the
    /// receiver can check it acts on exactly these. Integers beyond 2^53 must be strings.
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// Lifetime in seconds (default 300, at most 86400). Keep it short.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Space-separated scopes to record in the token.
    #[serde(default)]
    pub scope: Option<String>,
    /// Act for someone else: an agent that delegated to you with `delegate` (the token then
    /// carries the whole delegation chain), or the user you act for (named on your word).
    /// Omit it when you act for yourself.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// The id of an approval an earlier call answered with (`approval_pending`): call again
    /// with exactly the same other arguments once a person approved it.
    #[serde(default)]
    pub approval_id: Option<String>,
}

/// Parameters of `delegate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateParams {
    /// The agent id that may act for you (or for whom you act) from now on.
    pub delegate: String,
    /// The actions it may authorize, e.g. ["deploy"]; "*" for every action you may do.
    pub actions: Vec<String>,
    /// The audiences it may address (default: any you may).
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// Space-separated scopes it may put in its tokens (default: none).
    #[serde(default)]
    pub scope: Option<String>,
    /// Lifetime in seconds (default 3600, at most 86400, and never beyond your own delegation).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Pass on a delegation you hold: the principal you act for (default: yourself).
    #[serde(default)]
    pub on_behalf_of: Option<String>,
}

/// A signed action token.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SignedToken {
    /// The token: send it with the request to the audience.
    pub token: String,
    /// The token id (jti), to revoke or look it up later.
    pub token_id: String,
    /// Expiry (seconds since the epoch).
    pub expires_at: i64,
}

/// A fresh challenge.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NewChallenge {
    /// Send this to the peer; it answers with `present_certificate` using it.
    pub challenge: String,
    /// After this time (seconds since the epoch) the challenge is no longer accepted.
    pub expires_at: i64,
}

/// Parameters of `present_certificate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PresentParams {
    /// The fresh challenge the peer sent you (16-256 printable characters). With it, the result
    /// includes a proof that you hold the certified keys.
    #[serde(default)]
    pub challenge: Option<String>,
    /// The peer's agent id or URL: the proof is valid only for it. Required with `challenge`.
    #[serde(default)]
    pub audience: Option<String>,
}

/// Parameters of `verify_peer`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyPeerParams {
    /// An action token the peer sent you.
    #[serde(default)]
    pub token: Option<String>,
    /// A certificate the peer presented.
    #[serde(default)]
    pub certificate: Option<String>,
    /// The peer's proof of possession (from its `present_certificate` with your challenge).
    #[serde(default)]
    pub proof: Option<String>,
    /// The challenge you sent the peer for `proof`: one from your `new_challenge`, usable once.
    #[serde(default)]
    pub challenge: Option<String>,
    /// The action you are about to perform; the token must authorize exactly it. Required with
    /// a token.
    #[serde(default)]
    pub expected_action: Option<String>,
    /// The arguments you are about to use; they must match the token's digest exactly. Omitted
    /// means no arguments.
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// Set when you act on the token: it is recorded as used, and any later verification of it
    /// answers `replayed` (also after a restart). Default false.
    #[serde(default)]
    pub consume: bool,
}

/// Parameters of `check_revocation`: give exactly one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRevocationParams {
    /// An action token.
    #[serde(default)]
    pub token: Option<String>,
    /// A token id (jti).
    #[serde(default)]
    pub token_id: Option<String>,
    /// A certificate.
    #[serde(default)]
    pub certificate: Option<String>,
    /// A certificate serial or an agent id.
    #[serde(default)]
    pub serial: Option<String>,
}

/// Revocation status.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RevocationResult {
    /// "token" or "certificate".
    pub kind: String,
    /// The token id or serial looked up.
    pub id: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it was revoked (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the revocation data came from and how fresh it is.
    pub freshness: Value,
}

impl From<RevocationStatus> for RevocationResult {
    fn from(s: RevocationStatus) -> Self {
        RevocationResult {
            kind: s.kind.name().to_owned(),
            id: s.id,
            revoked: s.revoked,
            revoked_at: s.revocation.as_ref().map(|r| r.revoked_at),
            reason: s.revocation.map(|r| r.reason),
            freshness: serde_json::to_value(s.freshness).unwrap_or(Value::Null),
        }
    }
}

/// Parameters of `revoke`: give `token` or `certificate_serial` (or `own_certificate`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeParams {
    /// A token or delegation grant you signed that must no longer be honoured.
    #[serde(default)]
    pub token: Option<String>,
    /// The serial of one of your own certificates.
    #[serde(default)]
    pub certificate_serial: Option<String>,
    /// Revoke your own current certificate: you will not be able to sign until the operator
    /// issues a new identity.
    #[serde(default)]
    pub own_certificate: bool,
    /// Why (published in the revocation list; at most 256 characters).
    pub reason: String,
}

/// What was revoked.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RevokeResult {
    /// "token" or "certificate".
    pub kind: String,
    /// The ids revoked (token id or certificate serials).
    pub ids: Vec<String>,
    /// When (seconds since the epoch).
    pub revoked_at: i64,
}

pub(super) fn revoke_result(kind: RevokedKind, entries: Vec<RevocationEntry>) -> RevokeResult {
    RevokeResult {
        kind: kind.name().to_owned(),
        revoked_at: entries.first().map_or(0, |e| e.revoked_at),
        ids: entries.into_iter().map(|e| e.id).collect(),
    }
}

pub(super) fn one_of(values: &[(&str, bool)]) -> Result<(), McpError> {
    let given: Vec<&str> = values
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
    if given.len() != 1 {
        let names: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
        return Err(McpError::invalid_params(
            format!("give exactly one of {}", names.join(", ")),
            None,
        ));
    }
    Ok(())
}
