//! Revoking tokens and certificates, and answering whether something is revoked.

use super::*;

/// The answer to a revocation query.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationStatus {
    /// `token` or `certificate`.
    pub kind: RevokedKind,
    /// The token id or certificate serial asked about.
    pub id: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When and why, if revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationEntry>,
    /// How fresh the answer is.
    pub freshness: Freshness,
}

/// The `jti` of a token of any kind, read without verifying it.
pub(super) fn jti_of(token: &str) -> Result<String, VerifyError> {
    let jws = crate::jose::Jws::parse(token)?;
    let claims = crate::jose::parse_strict_json(&jws.payload)?;
    match claims.get("jti").and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() => Ok(jti.to_owned()),
        _ => Err(VerifyError::Malformed("the token has no jti".into())),
    }
}

/// Longest revocation reason accepted: reasons are published in every revocation list.
pub const MAX_REASON_LEN: usize = 256;

pub(super) fn check_reason(reason: &str) -> Result<(), RequestError> {
    if reason.trim().is_empty()
        || crate::request::check_text("reason", reason, MAX_REASON_LEN).is_err()
    {
        return Err(RequestError::Reason {
            max: MAX_REASON_LEN,
        });
    }
    Ok(())
}

pub(super) fn is_plain_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Installation {
    /// Revokes a token, given the token itself or its id. Durable before it returns.
    pub fn revoke_token(
        &self,
        token_or_jti: &str,
        reason: &str,
    ) -> Result<RevocationEntry, ServiceError> {
        let signer = action::parse_unverified(token_or_jti.trim())
            .ok()
            .and_then(|(_, claims)| self.store.agent(&claims.iss).ok().flatten())
            .map(|agent| agent.agent_id);
        self.revoke_token_of(token_or_jti, reason, signer.as_deref())
    }

    /// As [`Installation::revoke_token`], naming the token's signer (if known) in the signal.
    pub(super) fn revoke_token_of(
        &self,
        token_or_jti: &str,
        reason: &str,
        signer: Option<&str>,
    ) -> Result<RevocationEntry, ServiceError> {
        check_reason(reason)?;
        let token_or_jti = token_or_jti.trim();
        // Any token this CA's world issues (action or access token) is revoked by its `jti`.
        let jti = match jti_of(token_or_jti) {
            Ok(jti) => jti,
            Err(_) if is_plain_id(token_or_jti) => token_or_jti.to_owned(),
            Err(e) => {
                return Err(ServiceError::InvalidInput(format!(
                    "not a token or token id ({e}); pass the token or its jti"
                )));
            }
        };
        let entry = RevocationEntry {
            id: jti,
            revoked_at: clock::now(),
            reason: reason.to_owned(),
        };
        let added = self
            .store
            .revoke(RevokedKind::Token, std::slice::from_ref(&entry))?;
        crate::metrics::revoked("token", added.len());
        // Signalled by the process that recorded it, once.
        if !added.is_empty() {
            self.signal(
                SignalKind::TokenRevoked,
                signer,
                serde_json::json!({ "jti": entry.id, "reason": reason }),
            );
        }
        // Report what is recorded: a token revoked before keeps its first time and reason.
        Ok(self
            .store
            .revocation(RevokedKind::Token, &entry.id)?
            .unwrap_or(entry))
    }

    /// Revokes a token on behalf of `agent_id`, who may revoke only tokens it signed itself:
    /// the token must name one of the agent's certificates and carry that certificate's valid
    /// signatures (it may be expired or its certificate revoked: revoking stays harmless).
    pub fn revoke_own_token(
        &self,
        agent_id: &str,
        token: &str,
        reason: &str,
    ) -> Result<RevocationEntry, ServiceError> {
        // An action token, or a delegation grant (revoking it cuts off everything under it).
        let (jws, typ, iss, cert, jti) = match action::parse_unverified(token.trim()) {
            Ok((jws, c)) => (jws, action::TOKEN_TYP, c.iss, c.cert, c.jti),
            Err(e) => match delegation::parse_unverified(token.trim()) {
                Ok((jws, c)) => (jws, delegation::GRANT_TYP, c.iss, c.cert, c.jti),
                Err(_) => {
                    return Err(ServiceError::InvalidInput(format!(
                        "not an action token or delegation grant: {e}"
                    )));
                }
            },
        };
        let record = self
            .store
            .certificate(&cert)?
            .filter(|record| record.agent_id == agent_id && iss == agent_id)
            .ok_or_else(|| {
                ServiceError::NotPermitted(format!("{agent_id} may revoke only tokens it signed"))
            })?;
        let (_, _, keys) = AgentCertificate::parse_unverified(&record.encoded)
            .map_err(|e| self.store.corrupt(format!("certificate: {e}")))?;
        jws.check_typ(typ)
            .and_then(|()| jws.verify(&keys))
            .map_err(|e| {
                ServiceError::NotPermitted(format!(
                    "the token's signature does not check out ({})",
                    e.code()
                ))
            })?;
        self.revoke_token_of(&jti, reason, Some(agent_id))
    }

    /// Revokes one of `agent_id`'s own certificates (its current one by default).
    pub fn revoke_own_certificate(
        &self,
        agent_id: &str,
        serial: Option<&str>,
        reason: &str,
    ) -> Result<Vec<RevocationEntry>, ServiceError> {
        let agent = self.agent(agent_id)?;
        let serial = match serial {
            Some(serial) => serial.to_owned(),
            None => self.current_certificate_record(&agent)?.serial,
        };
        if !self.store.serials_of(agent_id)?.contains(&serial) {
            return Err(ServiceError::NotPermitted(format!(
                "{agent_id} may revoke only its own certificates"
            )));
        }
        self.revoke_certificate(&serial, reason)
    }

    /// Revokes a certificate by serial, or every certificate of an agent by agent id.
    pub fn revoke_certificate(
        &self,
        serial_or_agent: &str,
        reason: &str,
    ) -> Result<Vec<RevocationEntry>, ServiceError> {
        check_reason(reason)?;
        let serials = if self.store.agent(serial_or_agent)?.is_some() {
            self.store.serials_of(serial_or_agent)?
        } else if self.store.certificate(serial_or_agent)?.is_some() {
            vec![serial_or_agent.to_owned()]
        } else {
            return Err(ServiceError::UnknownCertificate(serial_or_agent.to_owned()));
        };
        let now = clock::now();
        let entries: Vec<RevocationEntry> = serials
            .into_iter()
            .map(|id| RevocationEntry {
                id,
                revoked_at: now,
                reason: reason.to_owned(),
            })
            .collect();
        let added = self.store.revoke(RevokedKind::Certificate, &entries)?;
        crate::metrics::revoked("certificate", added.len());
        for serial in &added {
            let agent = self.store.certificate(serial)?.map(|c| c.agent_id);
            self.signal(
                SignalKind::CertificateRevoked,
                agent.as_deref(),
                serde_json::json!({ "serial": serial, "reason": reason }),
            );
        }
        // Report what is recorded: a certificate revoked before keeps its first time and reason.
        entries
            .into_iter()
            .map(|entry| {
                Ok(self
                    .store
                    .revocation(RevokedKind::Certificate, &entry.id)?
                    .unwrap_or(entry))
            })
            .collect()
    }

    /// Whether a token (given whole or by id) or a certificate (given whole, by serial, or by
    /// agent id) is revoked.
    pub fn check_revocation(
        &self,
        kind: RevokedKind,
        subject: &str,
    ) -> Result<RevocationStatus, ServiceError> {
        self.check_revocation_trusting(kind, subject, None)
    }

    /// As [`Installation::check_revocation`]; what this installation did not issue is looked up
    /// in `external`'s revocation list, which must be fresh.
    pub fn check_revocation_trusting(
        &self,
        kind: RevokedKind,
        subject: &str,
        external: Option<ExternalTrust<'_>>,
    ) -> Result<RevocationStatus, ServiceError> {
        let subject = subject.trim();
        let id = match kind {
            RevokedKind::Token => jti_of(subject).unwrap_or_else(|_| subject.to_owned()),
            RevokedKind::Certificate => match AgentCertificate::parse_unverified(subject) {
                Ok((_, claims, _)) => claims.jti,
                Err(_) => match self.store.agent(subject)? {
                    Some(agent) => agent.current_serial.unwrap_or_default(),
                    None => subject.to_owned(),
                },
            },
        };
        let now = clock::now();
        let revocation = match kind {
            RevokedKind::Token => self.store.token_revocation(&id, now),
            RevokedKind::Certificate => self.store.certificate_revocation(&id, now),
        }
        .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
        if let Some(trust) = self.distinct(external)
            && revocation.is_none()
            && self.issued_by(kind, subject, trust.anchor)?
        {
            let revocation = match kind {
                RevokedKind::Token => trust.revocation.token_revocation(&id, now),
                RevokedKind::Certificate => trust.revocation.certificate_revocation(&id, now),
            }
            .map_err(ServiceError::Unverifiable)?;
            return Ok(RevocationStatus {
                kind,
                id,
                revoked: revocation.is_some(),
                revocation,
                freshness: trust.revocation.freshness(now),
            });
        }
        Ok(RevocationStatus {
            kind,
            id,
            revoked: revocation.is_some(),
            revocation,
            freshness: self.store.freshness(now),
        })
    }

    /// Whether `subject` itself shows it comes from `other`: a certificate naming that CA, or a
    /// token naming a certificate this installation did not issue. Bare ids say nothing, so
    /// they are answered locally.
    pub(super) fn issued_by(
        &self,
        kind: RevokedKind,
        subject: &str,
        other: &TrustAnchor,
    ) -> Result<bool, ServiceError> {
        Ok(match kind {
            RevokedKind::Certificate => AgentCertificate::parse_unverified(subject)
                .is_ok_and(|(_, claims, _)| claims.iss == other.ca_id),
            RevokedKind::Token => match action::parse_unverified(subject) {
                Ok((_, claims)) => self.store.certificate(&claims.cert)?.is_none(),
                Err(_) => false,
            },
        })
    }

    /// `external`, unless it could be confused with this installation's own CA (same id or a
    /// shared key): then it is ignored, and a warning logged.
    pub(super) fn distinct<'a>(
        &self,
        external: Option<ExternalTrust<'a>>,
    ) -> Option<ExternalTrust<'a>> {
        external.filter(|trust| {
            let confusable = trust.anchor.ca_id == self.anchor().ca_id
                || trust
                    .anchor
                    .keys
                    .iter()
                    .any(|k| self.anchor().keys.contains(k));
            if confusable {
                tracing::warn!(
                    ca = %trust.anchor.ca_id,
                    "ignoring a trusted hub whose CA has this installation's CA id or keys"
                );
            }
            !confusable
        })
    }
}
