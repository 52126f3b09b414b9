//! Who may use the operator console: one-time login links, printed by `agentseal console login`
//! to someone who can run the CLI on the installation, and the sessions they open.
//!
//! Only digests of the secrets are stored: a copy of the database opens nothing. A link is
//! redeemed once (claimed atomically, so two tabs or two hubs racing open one session) within
//! [`LOGIN_TTL`]; a session lasts [`SESSION_TTL`] and carries its own CSRF token for every form.
//! An agent's access token is not a way in: the console knows only these sessions.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::*;

/// How long a login link may wait to be used: ten minutes.
pub const LOGIN_TTL: i64 = 600;
/// How long a console session lasts: eight hours.
pub const SESSION_TTL: i64 = 8 * 3_600;

const LOGIN_PREFIX: &str = "console.login.";
const SESSION_PREFIX: &str = "console.session.";
const USED: &str = ".used";

/// An open console session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleSession {
    /// Who opened it: the name given when the link was made (`operator (alice)`).
    pub operator: String,
    /// The token every form of the session must carry.
    pub csrf: String,
    /// When it ends.
    pub expires_at: i64,
}

impl ConsoleSession {
    /// Whether `token` is this session's CSRF token (compared as digests, in constant time
    /// as far as the comparison of two SHA-256 values goes).
    pub fn csrf_matches(&self, token: &str) -> bool {
        Sha256::digest(token.as_bytes()) == Sha256::digest(self.csrf.as_bytes())
    }
}

/// Why a login link or session was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// No such link (or it was made for another installation).
    #[error("this login link is not valid: make a new one with `agentseal console login`")]
    UnknownLink,
    /// The link is past its ten minutes.
    #[error("this login link expired: make a new one with `agentseal console login`")]
    ExpiredLink,
    /// The link was used already.
    #[error("this login link was used already: make a new one with `agentseal console login`")]
    UsedLink,
}

impl ConsoleError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            ConsoleError::UnknownLink => "login_unknown",
            ConsoleError::ExpiredLink => "login_expired",
            ConsoleError::UsedLink => "login_used",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Login {
    operator: String,
    expires_at: i64,
}

/// A fresh 256-bit secret, base64url.
fn secret() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ServiceError::InvalidInput(format!("no randomness: {e}")))?;
    Ok(crate::jose::b64(&bytes))
}

fn digest(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

impl Installation {
    /// A one-time login secret for `operator`, valid [`LOGIN_TTL`] seconds; shown once.
    pub fn console_login(&self, operator: &str) -> Result<(String, i64), ServiceError> {
        let secret = secret()?;
        let expires_at = clock::now().saturating_add(LOGIN_TTL);
        let login = serde_json::to_string(&Login {
            operator: operator.to_owned(),
            expires_at,
        })
        .map_err(|e| ServiceError::CorruptRecord(e.to_string()))?;
        self.store
            .set_meta(&[(&format!("{LOGIN_PREFIX}{}", digest(&secret)), &login)])?;
        Ok((secret, expires_at))
    }

    /// Redeems the login secret `link` once: a session secret (for the cookie) and the session.
    pub fn open_console_session(
        &self,
        link: &str,
    ) -> Result<Result<(String, ConsoleSession), ConsoleError>, ServiceError> {
        let key = format!("{LOGIN_PREFIX}{}", digest(link));
        let Some(json) = self.store.meta(&key)? else {
            return Ok(Err(ConsoleError::UnknownLink));
        };
        let login: Login = serde_json::from_str(&json)
            .map_err(|e| ServiceError::CorruptRecord(format!("{key}: {e}")))?;
        let now = clock::now();
        if now >= login.expires_at {
            return Ok(Err(ConsoleError::ExpiredLink));
        }
        if !self
            .store
            .claim_meta(&format!("{key}{USED}"), &now.to_string())?
        {
            return Ok(Err(ConsoleError::UsedLink));
        }
        let session_secret = secret()?;
        let session = ConsoleSession {
            operator: login.operator,
            csrf: secret()?,
            expires_at: now.saturating_add(SESSION_TTL),
        };
        let json = serde_json::to_string(&session)
            .map_err(|e| ServiceError::CorruptRecord(e.to_string()))?;
        self.store.set_meta(&[(
            &format!("{SESSION_PREFIX}{}", digest(&session_secret)),
            &json,
        )])?;
        Ok(Ok((session_secret, session)))
    }

    /// The session the cookie secret `session` opens, if it is one and has not ended.
    pub fn console_session(&self, session: &str) -> Result<Option<ConsoleSession>, ServiceError> {
        let key = format!("{SESSION_PREFIX}{}", digest(session));
        let Some(json) = self.store.meta(&key)? else {
            return Ok(None);
        };
        let session: ConsoleSession = serde_json::from_str(&json)
            .map_err(|e| ServiceError::CorruptRecord(format!("{key}: {e}")))?;
        Ok((clock::now() < session.expires_at).then_some(session))
    }

    /// Ends the session `session` (signing out).
    pub fn close_console_session(&self, session: &str) -> Result<(), ServiceError> {
        Ok(self
            .store
            .remove_meta(&[&format!("{SESSION_PREFIX}{}", digest(session))])?)
    }
}
