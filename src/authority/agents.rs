//! Agents and their certificates: creating an agent (keys in the key store, a certificate from
//! the CA), renewing its certificate, and reading both back.

use super::*;

/// Checks a new agent's id against the agent-id rule ([`crate::identifier`]). Example:
/// `agent://acme.example/code-reviewer`.
pub fn validate_agent_id(agent_id: &str) -> Result<(), ServiceError> {
    crate::identifier::check_agent_id(agent_id).map_err(|error| {
        ServiceError::InvalidInput(format!(
            "invalid agent id {agent_id:?}: {error} (docs/formats.md, \"Agent ids\"); \
             for example agent://acme.example/code-reviewer"
        ))
    })
}

/// Generates a seed, stores it, and reads it back, so a store that silently drops writes is
/// caught at creation rather than at the first signature.
pub(super) fn create_key(
    store: &dyn KeyStore,
    name: &KeyName,
    algorithm: Algorithm,
) -> Result<SigningKey, ServiceError> {
    let seed = Seed::generate()?;
    store.put(name, &seed)?;
    let stored = store.get(name)?;
    if stored.expose() != seed.expose() {
        return Err(ServiceError::KeyMismatch(name.to_string()));
    }
    Ok(SigningKey::from_seed(algorithm, &seed))
}

impl Installation {
    /// Creates an agent: its keys in the key store, and its first certificate.
    pub fn create_agent(
        &self,
        agent_id: &str,
        keys: KeyChoice,
        meta: BTreeMap<String, String>,
        ttl: Option<i64>,
    ) -> Result<AgentCertificate, ServiceError> {
        validate_agent_id(agent_id)?;
        if self.store.agent(agent_id)?.is_some() {
            return Err(ServiceError::AgentExists(agent_id.to_owned()));
        }
        let mut signers = Vec::new();
        for algorithm in keys.algorithms() {
            let name = KeyName::agent(&self.install_id, agent_id, algorithm);
            signers.push(create_key(self.key_store()?.as_ref(), &name, algorithm)?);
        }
        let public: Vec<PublicKey> = signers.iter().map(|k| k.public_key().clone()).collect();
        let now = clock::now();
        let (certificate, record) =
            self.issue_certificate(agent_id, &public, meta.clone(), ttl, now)?;
        let agent = AgentRecord {
            agent_id: agent_id.to_owned(),
            algorithms: keys
                .algorithms()
                .iter()
                .map(|a| a.name().to_owned())
                .collect(),
            meta,
            created_at: now,
            current_serial: None,
            key_generation: 0,
        };
        if !self.store.insert_agent(&agent, &record)? {
            return Err(ServiceError::AgentExists(agent_id.to_owned()));
        }
        self.cache_signers(&format!("agent:{agent_id}"), signers);
        Ok(certificate)
    }

    /// Issues a new certificate for an existing agent's keys (same keys, fresh serial and
    /// validity), and makes it current.
    pub fn renew_certificate(
        &self,
        agent_id: &str,
        ttl: Option<i64>,
    ) -> Result<AgentCertificate, ServiceError> {
        let agent = self.agent(agent_id)?;
        let current = self.current_certificate_record(&agent)?;
        // A revoked certificate means its keys are not to be trusted: renewing would re-certify
        // them. The agent needs new keys.
        if let Some(entry) = self
            .store
            .revocation(RevokedKind::Certificate, &current.serial)?
        {
            return Err(ServiceError::InvalidInput(format!(
                "agent {agent_id}'s certificate {} was revoked ({}): its keys cannot be re-certified; give it new keys with `agentseal agent rotate`",
                current.serial, entry.reason
            )));
        }
        let current_certificate = self.signed_current(agent_id, &current)?;
        let (certificate, record) = self.issue_certificate(
            agent_id,
            &current_certificate.keys,
            current_certificate.claims.meta,
            ttl,
            clock::now(),
        )?;
        if !self
            .store
            .add_certificate_if_current(&record, &current.serial)?
        {
            return Err(ServiceError::InvalidInput(format!(
                "agent {agent_id}'s certificate changed meanwhile: nothing was renewed"
            )));
        }
        Ok(certificate)
    }

    /// The agent's current certificate, its CA signature verified (not its lifetime): what the
    /// CA re-certifies (renewal, rotation) must be what it certified, not whatever keys and
    /// metadata a database edit put in its place.
    pub(super) fn signed_current(
        &self,
        agent_id: &str,
        current: &CertificateRecord,
    ) -> Result<AgentCertificate, ServiceError> {
        let certificate = AgentCertificate::verify_signed(&current.encoded, self.anchor())
            .map_err(|reason| ServiceError::CertificateUnusable {
                agent: agent_id.to_owned(),
                reason,
            })?;
        if certificate.claims.sub != agent_id || certificate.claims.jti != current.serial {
            return Err(ServiceError::CorruptRecord(format!(
                "agent {agent_id}'s current certificate names another agent or serial"
            )));
        }
        Ok(certificate)
    }

    pub(super) fn issue_certificate(
        &self,
        agent_id: &str,
        keys: &[PublicKey],
        meta: BTreeMap<String, String>,
        ttl: Option<i64>,
        now: i64,
    ) -> Result<(AgentCertificate, CertificateRecord), ServiceError> {
        let ttl = self.limits()?.cert_ttl(ttl)?;
        let claims = CertificateClaims {
            iss: self.anchor().ca_id.clone(),
            sub: agent_id.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: clock::random_id()?,
            cnf: Confirmation::for_keys(keys),
            meta,
        };
        let ca = self.ca_signers()?;
        let ca_refs: Vec<&SigningKey> = ca.iter().collect();
        let encoded = AgentCertificate::issue(&claims, &ca_refs)?;
        let record = CertificateRecord {
            serial: claims.jti.clone(),
            agent_id: agent_id.to_owned(),
            issued_at: now,
            expires_at: claims.exp,
            encoded: encoded.clone(),
        };
        Ok((
            AgentCertificate {
                claims,
                keys: keys.to_vec(),
                encoded,
            },
            record,
        ))
    }

    /// One agent's record.
    pub fn agent(&self, agent_id: &str) -> Result<AgentRecord, ServiceError> {
        self.store
            .agent(agent_id)?
            .ok_or_else(|| ServiceError::UnknownAgent(agent_id.to_owned()))
    }

    /// All agents.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, ServiceError> {
        Ok(self.store.agents()?)
    }

    /// A warning for each agent whose id does not follow the agent-id rule
    /// ([`crate::identifier`]): made before the rule, it keeps working, but a list of agents
    /// may show it so that it passes for another.
    pub fn agent_id_warnings(&self) -> Result<Vec<String>, ServiceError> {
        Ok(self
            .store
            .agents()?
            .into_iter()
            .filter_map(|agent| {
                crate::identifier::check_agent_id(&agent.agent_id)
                    .err()
                    .map(|error| {
                        format!(
                            "agent {:?} does not follow the agent-id rule: {error}. It keeps \
                             working; replace it with an agent whose id does",
                            agent.agent_id
                        )
                    })
            })
            .collect())
    }

    pub(super) fn current_certificate_record(
        &self,
        agent: &AgentRecord,
    ) -> Result<CertificateRecord, ServiceError> {
        let serial = agent
            .current_serial
            .as_deref()
            .ok_or_else(|| ServiceError::UnknownCertificate(agent.agent_id.clone()))?;
        self.store
            .certificate(serial)?
            .ok_or_else(|| ServiceError::UnknownCertificate(serial.to_owned()))
    }

    /// The agent's current certificate, as issued (not re-verified).
    pub fn certificate(&self, agent_id: &str) -> Result<String, ServiceError> {
        Ok(self
            .current_certificate_record(&self.agent(agent_id)?)?
            .encoded)
    }

    /// A certificate by agent id or serial.
    pub fn find_certificate(&self, agent_or_serial: &str) -> Result<String, ServiceError> {
        if let Some(agent) = self.store.agent(agent_or_serial)? {
            return Ok(self.current_certificate_record(&agent)?.encoded);
        }
        self.store
            .certificate(agent_or_serial)?
            .map(|r| r.encoded)
            .ok_or_else(|| ServiceError::UnknownCertificate(agent_or_serial.to_owned()))
    }

    /// The agent's current certificate, verified, and its signing keys.
    pub(super) fn usable_signer(
        &self,
        agent_id: &str,
    ) -> Result<(AgentCertificate, Arc<Vec<SigningKey>>), ServiceError> {
        let agent = self.agent(agent_id)?;
        let encoded = self.current_certificate_record(&agent)?.encoded;
        let certificate = self
            .verifier()
            .verify_certificate(&encoded, clock::now())
            .map_err(|reason| ServiceError::CertificateUnusable {
                agent: agent_id.to_owned(),
                reason,
            })?;
        let keys = self.signers(&format!("agent:{agent_id}"), &certificate.keys, |alg| {
            KeyName::agent_key(&self.install_id, agent_id, alg, agent.key_generation)
        })?;
        // Past its renewal point (servers that renew automatically): renewed on this call.
        let now = clock::now();
        if self
            .renewal_due_at(certificate.claims.iat, certificate.claims.exp)
            .is_some_and(|due| now >= due)
        {
            // The current certificate is still valid: a failed renewal is retried, not fatal.
            match self.renew_if_due(agent_id, now) {
                Ok(Some(renewed)) => return Ok((renewed, keys)),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, agent = agent_id, "renewal failed"),
            }
        }
        Ok((certificate, keys))
    }
}
