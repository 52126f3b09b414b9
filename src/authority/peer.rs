//! Proving identity to peers and checking theirs: challenges, certificate presentations with
//! proofs of possession, and the verdict on what a peer presented.

use super::*;

/// What a peer presented for verification.
#[derive(Debug, Clone, Default)]
pub struct PeerEvidence {
    /// An action token.
    pub token: Option<String>,
    /// A certificate.
    pub certificate: Option<String>,
    /// A proof of possession for the certificate.
    pub proof: Option<String>,
    /// The challenge this side issued for the proof.
    pub challenge: Option<String>,
    /// This side's identity: the audience tokens and proofs must name.
    pub audience: String,
    /// The action about to be performed, if known.
    pub action: Option<String>,
    /// The arguments about to be used, if known.
    pub args: Option<Value>,
    /// Record the token as used, durably until it expires: a later verification of it (consuming
    /// or not) answers `replayed`. Set it when acting on the token.
    pub consume: bool,
    /// Accept a proof over a challenge this installation did not issue. Off by default: a proof
    /// counts only over a challenge from [`Installation::issue_challenge`], which it consumes.
    pub allow_unissued_challenge: bool,
}

/// Why evidence for [`Installation::verify_peer`] cannot be judged as given: the caller's to fix,
/// unlike a rejection, which is a normal [`PeerVerdict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// Neither a token nor a certificate.
    #[error("give a token, a certificate, or both")]
    Nothing,
    /// A proof without the certificate it proves or the challenge it answers.
    #[error("a proof needs the certificate it proves and the challenge you issued")]
    ProofWithoutCertificateOrChallenge,
    /// A challenge without a proof over it.
    #[error("a challenge needs the peer's proof over it (from its present_certificate)")]
    ChallengeWithoutProof,
    /// A token without the action about to be performed.
    #[error("expected_action is required with a token: name the action you are about to perform")]
    ActionRequired,
    /// Arguments that cannot be bound exactly.
    #[error(transparent)]
    Arguments(#[from] RequestError),
}

impl PeerEvidence {
    /// Checks that the evidence can be judged, and returns the arguments to hold a token to: a
    /// token authorizes one action with exact arguments, so the verifier must say which action
    /// it is about to perform, and arguments it does not give are taken as none.
    pub fn validate(&self) -> Result<Option<Value>, EvidenceError> {
        if self.token.is_none() && self.certificate.is_none() {
            return Err(EvidenceError::Nothing);
        }
        if self.proof.is_some() && (self.challenge.is_none() || self.certificate.is_none()) {
            return Err(EvidenceError::ProofWithoutCertificateOrChallenge);
        }
        if self.challenge.is_some() && self.proof.is_none() {
            return Err(EvidenceError::ChallengeWithoutProof);
        }
        let args = match (&self.token, &self.args) {
            (Some(_), None) => Some(Value::Object(Default::default())),
            (_, args) => args.clone(),
        };
        if self.token.is_some() && self.action.as_deref().is_none_or(str::is_empty) {
            return Err(EvidenceError::ActionRequired);
        }
        if let Some(args) = &args {
            action::check_args(args)?;
        }
        Ok(args)
    }
}

/// The outcome of [`Installation::verify_peer`]: one verdict type for the core and the MCP
/// `verify_peer` tool, whose output schema is derived from it (the field docs are what the model
/// reads). The core builds it one way: `accepted` or `rejected`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PeerVerdict {
    /// True only if everything presented verified.
    pub valid: bool,
    /// Stable reason codes when not valid (expired, revoked, bad_signature, wrong_audience, ...).
    pub reasons: Vec<String>,
    /// Explanation when not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The verified agent id of the peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The verified certificate claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Value>")]
    pub certificate: Option<CertificateClaims>,
    /// The verified token claims (action, audience, expiry, args_sha256, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Value>")]
    pub token: Option<action::ActionClaims>,
    /// When the signer acts for another: the principal, whether it signed the first grant
    /// itself, the acting agents (principal side first, the signer last), and the grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Value>")]
    pub delegation: Option<crate::verify::VerifiedChain>,
    /// Whether a proof of possession over your challenge was verified.
    pub proof_verified: bool,
    /// Where the revocation data came from and how fresh it is.
    #[serde(rename = "revocation_freshness")]
    #[schemars(with = "Value")]
    pub revocation: Freshness,
}

/// What a peer's evidence established, once every check passed.
#[derive(Debug, Default)]
struct Accepted {
    agent_id: Option<String>,
    certificate: Option<CertificateClaims>,
    token: Option<action::ActionClaims>,
    delegation: Option<crate::verify::VerifiedChain>,
    proof_verified: bool,
}

impl PeerVerdict {
    /// Everything presented verified.
    fn accepted(accepted: Accepted, revocation: Freshness) -> Self {
        PeerVerdict {
            valid: true,
            reasons: Vec::new(),
            message: None,
            agent_id: accepted.agent_id,
            certificate: accepted.certificate,
            token: accepted.token,
            delegation: accepted.delegation,
            proof_verified: accepted.proof_verified,
            revocation,
        }
    }

    /// The first check that failed, with its reason code; nothing of the evidence is vouched for.
    fn rejected(error: &VerifyError, revocation: Freshness) -> Self {
        crate::metrics::verification_failed(error.code());
        PeerVerdict {
            valid: false,
            reasons: vec![error.code().to_owned()],
            message: Some(error.to_string()),
            agent_id: None,
            certificate: None,
            token: None,
            delegation: None,
            proof_verified: false,
            revocation,
        }
    }
}

/// Certificates the peer presented first, then the installation's own records.
pub(super) struct Fallback<'a>(&'a PresentedCertificates, &'a Installation);

impl CertificateResolver for Fallback<'_> {
    fn certificate(&self, serial: &str) -> Option<String> {
        self.0
            .certificate(serial)
            .or_else(|| CertificateResolver::certificate(self.1, serial))
    }
}

/// A certificate as presented to a peer, with a proof of possession when a challenge was given;
/// also the result of the MCP `present_certificate` tool, whose output schema is derived from it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Presentation {
    /// Your certificate: send it to the peer.
    pub certificate: String,
    /// Proof of possession (`agent-pop+jwt`) over the peer's challenge, if one was given: send it
    /// too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

impl CertificateResolver for Installation {
    fn certificate(&self, serial: &str) -> Option<String> {
        self.store
            .certificate(serial)
            .ok()
            .flatten()
            .map(|r| r.encoded)
    }
}

impl Installation {
    /// The agent's current certificate and, given a peer's challenge and identity, a proof of
    /// possession of its keys. The certificate must be valid.
    pub fn present_certificate(
        &self,
        agent_id: &str,
        challenge: Option<&str>,
        audience: &str,
    ) -> Result<Presentation, ServiceError> {
        if let Some(challenge) = challenge {
            crate::token::presentation::check_challenge(challenge)
                .map_err(ServiceError::InvalidInput)?;
            if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control)
            {
                return Err(ServiceError::InvalidInput(
                    "a challenge needs the peer's id as audience (at most 512 bytes)".into(),
                ));
            }
        }
        let (certificate, keys) = self.usable_signer(agent_id)?;
        let proof = match challenge {
            Some(challenge) => {
                let refs: Vec<&SigningKey> = keys.iter().collect();
                Some(crate::token::presentation::prove(
                    &certificate,
                    &refs,
                    challenge,
                    audience,
                    clock::now(),
                )?)
            }
            None => None,
        };
        Ok(Presentation {
            certificate: certificate.encoded,
            proof,
        })
    }

    /// Verifies what a peer presented: an action token, a certificate (with its proof of
    /// possession over a challenge this side issued), or both. Rejections are a normal result
    /// (`valid: false` with the reason code); only unusable requests are errors.
    pub fn verify_peer(&self, evidence: &PeerEvidence) -> Result<PeerVerdict, ServiceError> {
        self.verify_peer_trusting(evidence, None)
    }

    /// As [`Installation::verify_peer`], also trusting `external` (another hub's CA and its
    /// revocation list) for evidence that CA issued.
    pub fn verify_peer_trusting(
        &self,
        evidence: &PeerEvidence,
        external: Option<ExternalTrust<'_>>,
    ) -> Result<PeerVerdict, ServiceError> {
        let verdict = self.judge_peer(evidence, external)?;
        if !verdict.valid
            && let Some(token) = &evidence.token
        {
            self.token_rejected(token, &verdict, evidence);
        }
        Ok(verdict)
    }

    pub(super) fn judge_peer(
        &self,
        evidence: &PeerEvidence,
        external: Option<ExternalTrust<'_>>,
    ) -> Result<PeerVerdict, ServiceError> {
        let args = evidence.validate()?;
        let now = clock::now();
        let presented = PresentedCertificates(evidence.certificate.iter().cloned().collect());
        let resolver = Fallback(&presented, self);
        // Evidence from the external CA (by its certificate's issuer) is verified against that
        // CA and its list only, with the certificates the peer presented.
        let presented_claims = evidence
            .certificate
            .as_deref()
            .and_then(|c| AgentCertificate::parse_unverified(c).ok())
            .map(|(_, claims, _)| claims);
        let external = self.distinct(external).filter(|trust| {
            presented_claims
                .as_ref()
                .is_some_and(|claims| claims.iss == trust.anchor.ca_id)
        });
        // Another CA may not speak for this installation's own agents.
        if external.is_some()
            && let Some(claims) = &presented_claims
            && self.store.agent(&claims.sub)?.is_some()
        {
            let error = VerifyError::UnknownIssuer(format!(
                "{} (it certifies {}, an agent of this installation)",
                claims.iss, claims.sub
            ));
            return Ok(PeerVerdict::rejected(&error, self.store.freshness(now)));
        }
        let verifier = match &external {
            Some(trust) => Verifier {
                anchor: trust.anchor,
                certificates: &presented,
                revocation: trust.revocation,
                skew: clock::DEFAULT_SKEW,
                cache: Some(&self.verified),
            },
            None => Verifier {
                certificates: &resolver,
                ..self.verifier()
            },
        };
        let freshness = verifier.revocation.freshness(now);
        Ok(
            match self.accept_evidence(evidence, args, &verifier, external.is_some(), now) {
                Ok(accepted) => PeerVerdict::accepted(accepted, freshness),
                Err(error) => PeerVerdict::rejected(&error, freshness),
            },
        )
    }

    /// Runs every check on validated evidence, in order: the certificate (with its proof over a
    /// challenge this side issued, consumed once it checks out), then the token, its signer
    /// against the certificate, and its replay record.
    fn accept_evidence(
        &self,
        evidence: &PeerEvidence,
        args: Option<Value>,
        verifier: &Verifier<'_>,
        external: bool,
        now: i64,
    ) -> Result<Accepted, VerifyError> {
        let mut accepted = Accepted::default();
        if let Some(certificate) = &evidence.certificate {
            let cert = match (&evidence.proof, &evidence.challenge) {
                (Some(proof), Some(challenge)) => {
                    let (cert, _) = verifier.verify_presentation(
                        certificate,
                        proof,
                        challenge,
                        &evidence.audience,
                        now,
                    )?;
                    // Consumed only once the proof checks out, so a bad proof from someone who
                    // saw the challenge cannot burn it.
                    if !evidence.allow_unissued_challenge {
                        self.consume_challenge(challenge, &evidence.audience, now)?;
                    }
                    accepted.proof_verified = true;
                    cert
                }
                // A certificate is public: on its own it proves nothing about who sent it.
                _ if evidence.token.is_none() => return Err(VerifyError::ProofRequired),
                _ => verifier.verify_certificate(certificate, now)?,
            };
            accepted.agent_id = Some(cert.claims.sub.clone());
            accepted.certificate = Some(cert.claims);
        }
        let Some(token) = &evidence.token else {
            return Ok(accepted);
        };
        let expect = Expectations {
            max_delegation_depth: None,
            audience: Some(evidence.audience.clone()),
            action: evidence.action.clone(),
            args,
        };
        let verified = verifier.verify_token(token, &expect, now)?;
        if let Some(agent) = accepted
            .agent_id
            .as_ref()
            .filter(|a| **a != verified.claims.iss)
        {
            return Err(VerifyError::SubjectMismatch {
                token: verified.claims.iss.clone(),
                certificate: agent.clone(),
            });
        }
        // Another CA's chain may not name this installation's agents as its principal.
        if external
            && verified.claims.sub != verified.claims.iss
            && self
                .store
                .agent(&verified.claims.sub)
                .ok()
                .flatten()
                .is_some()
        {
            return Err(VerifyError::UnknownIssuer(format!(
                "{} (its chain names {}, an agent of this installation)",
                verified.certificate.claims.iss, verified.claims.sub
            )));
        }
        self.check_replay(&verified.claims, evidence.consume, now)?;
        accepted.agent_id = Some(verified.claims.iss.clone());
        accepted.certificate = Some(verified.certificate.claims);
        accepted.token = Some(verified.claims);
        accepted.delegation = verified.delegation;
        Ok(accepted)
    }

    /// Looks a token valid in every other respect up in the replay records, and with `consume`
    /// records it as used. Fails closed: no answer about reuse means no acceptance.
    fn check_replay(
        &self,
        claims: &action::ActionClaims,
        consume: bool,
        now: i64,
    ) -> Result<(), VerifyError> {
        let (issuer, jti) = (&claims.iss, &claims.jti);
        let replayed = if consume {
            self.store
                .consume(issuer, jti, claims.exp + clock::DEFAULT_SKEW, now)
                .map(|added| !added)
        } else {
            self.store.consumed(issuer, jti)
        };
        match replayed {
            Ok(false) => Ok(()),
            Ok(true) => Err(VerifyError::Replayed(jti.clone())),
            Err(error) => {
                tracing::error!(%error, "cannot record a consumed token");
                Err(VerifyError::RevocationUnavailable)
            }
        }
    }

    /// A verifier over this installation's CA, certificates and revocations.
    pub fn verifier(&self) -> Verifier<'_> {
        Verifier {
            anchor: self.anchor(),
            certificates: self,
            revocation: self.store.as_ref(),
            skew: clock::DEFAULT_SKEW,
            cache: Some(&self.verified),
        }
    }

    /// Verifies an action token now.
    pub fn verify_token(
        &self,
        token: &str,
        expect: &Expectations,
    ) -> Result<VerifiedAction, VerifyError> {
        self.verifier().verify_token(token, expect, clock::now())
    }

    /// Verifies a certificate now.
    pub fn verify_certificate(&self, encoded: &str) -> Result<AgentCertificate, VerifyError> {
        self.verifier().verify_certificate(encoded, clock::now())
    }
}
