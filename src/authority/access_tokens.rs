//! Access tokens for the HTTP hub: issuing one that lets a bearer act as an agent, and checking
//! one on each request.

use super::*;

/// An issued access token for the HTTP hub.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedAccess {
    /// The bearer token.
    pub token: String,
    /// Its id, to revoke it.
    pub jti: String,
    /// When it was issued.
    pub iat: i64,
    /// When it expires.
    pub exp: i64,
    /// The agent it acts as.
    pub agent_id: String,
    /// The hub MCP URL it is valid for.
    pub audience: String,
    /// Its scopes, space-separated.
    pub scope: String,
}

impl Installation {
    /// Issues an access token for the HTTP hub at `audience` (its MCP endpoint URL), letting the
    /// bearer act as `agent_id` within `scopes` for `ttl` seconds (default one hour).
    pub fn issue_access_token(
        &self,
        agent_id: &str,
        audience: &str,
        ttl: Option<i64>,
        scopes: &[Scope],
    ) -> Result<IssuedAccess, ServiceError> {
        let ttl = ttl.unwrap_or(access::DEFAULT_ACCESS_TTL);
        if ttl <= 0 || ttl > access::MAX_ACCESS_TTL {
            return Err(RequestError::TtlOutOfRange {
                what: "access token",
                max: access::MAX_ACCESS_TTL,
            }
            .into());
        }
        let now = clock::now();
        self.issue_access_token_at(agent_id, audience, now, now.saturating_add(ttl), scopes)
    }

    /// As [`Installation::issue_access_token`], issued at `now` and expiring at `expires_at`
    /// exactly (at most a day later).
    pub(super) fn issue_access_token_at(
        &self,
        agent_id: &str,
        audience: &str,
        now: i64,
        expires_at: i64,
        scopes: &[Scope],
    ) -> Result<IssuedAccess, ServiceError> {
        if expires_at <= now || expires_at - now > access::MAX_ACCESS_TTL {
            return Err(RequestError::TtlOutOfRange {
                what: "access token",
                max: access::MAX_ACCESS_TTL,
            }
            .into());
        }
        if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control) {
            return Err(ServiceError::InvalidInput(
                "the audience (the hub's MCP URL) must be 1-512 bytes without control characters"
                    .into(),
            ));
        }
        if scopes.is_empty() {
            return Err(ServiceError::InvalidInput("give at least one scope".into()));
        }
        self.agent(agent_id)?;
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let claims = AccessClaims {
            iss: self.anchor().ca_id.clone(),
            sub: agent_id.to_owned(),
            aud: audience.to_owned(),
            client_id: agent_id.to_owned(),
            iat: now,
            nbf: now,
            exp: expires_at,
            jti: clock::random_id()?,
            scope: scopes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let ca = self.ca_signers()?;
        let token = access::issue(&claims, &ca[0])?;
        Ok(IssuedAccess {
            token,
            jti: claims.jti,
            iat: claims.iat,
            exp: claims.exp,
            agent_id: claims.sub,
            audience: claims.aud,
            scope: claims.scope,
        })
    }

    /// Verifies a bearer access token presented to the hub whose MCP URL is `audience`, against
    /// this CA and its revocations.
    /// The agent's current certificate must not be revoked: revoking an agent cuts off its
    /// access tokens too.
    pub fn authorize(&self, token: &str, audience: &str) -> Result<AccessGrant, VerifyError> {
        let now = clock::now();
        let grant = self.access_tokens.verify(
            token,
            self.anchor(),
            audience,
            self.store.as_ref(),
            now,
            clock::DEFAULT_SKEW,
        )?;
        let serial = match self.store.agent(&grant.agent_id) {
            Ok(Some(agent)) => agent.current_serial.unwrap_or_default(),
            Ok(None) => return Err(VerifyError::UnknownCertificate(grant.agent_id)),
            Err(_) => return Err(VerifyError::RevocationUnavailable),
        };
        if let Some(entry) = self.store.certificate_revocation(&serial, now)? {
            return Err(VerifyError::CertificateRevoked {
                serial,
                reason: entry.reason,
            });
        }
        Ok(grant)
    }
}
