//! Offline verification of action tokens and certificates: what a peer or a service that only
//! verifies needs, given the CA's public keys, a way to find certificates, and revocation data.
//!
//! Checks run in a fixed order (RFC 8725): size and syntax, `typ`, the signer's certificate (to
//! learn its keys), `alg` allow-list and signatures, `iss`, `aud`, `exp`, `nbf`, the certificate's
//! own CA signature, lifetime and revocation, the token's revocation, then the action and argument
//! binding. The first failure is reported with its stable reason code.

use serde_json::Value;

use crate::certificate::{AgentCertificate, TrustAnchor};
use crate::jose::{self, Jws};
use crate::reason::VerifyError;
use crate::revocation::RevocationSource;
use crate::token::{self, ActionClaims, Expectations, TOKEN_TYP};

/// Finds an agent certificate by serial.
pub trait CertificateResolver {
    /// The encoded certificate with serial `serial`, if known.
    fn certificate(&self, serial: &str) -> Option<String>;
}

/// A resolver that knows exactly the certificates it was given (what a peer was presented).
#[derive(Debug, Clone, Default)]
pub struct PresentedCertificates(pub Vec<String>);

impl CertificateResolver for PresentedCertificates {
    fn certificate(&self, serial: &str) -> Option<String> {
        self.0.iter().find_map(|encoded| {
            let (_, claims, _) = AgentCertificate::parse_unverified(encoded).ok()?;
            (claims.jti == serial).then(|| encoded.clone())
        })
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedAction {
    /// The token's claims.
    pub claims: ActionClaims,
    /// The signer's verified certificate.
    pub certificate: AgentCertificate,
}

/// Verifies tokens and certificates against one CA.
pub struct Verifier<'a> {
    /// The trusted CA.
    pub anchor: &'a TrustAnchor,
    /// Where certificates named by tokens are found.
    pub certificates: &'a dyn CertificateResolver,
    /// Revocation data.
    pub revocation: &'a dyn RevocationSource,
    /// Allowed clock skew in seconds.
    pub skew: i64,
}

impl Verifier<'_> {
    /// Verifies a certificate (see [`AgentCertificate::verify`]).
    pub fn verify_certificate(
        &self,
        encoded: &str,
        now: i64,
    ) -> Result<AgentCertificate, VerifyError> {
        AgentCertificate::verify(encoded, self.anchor, self.revocation, now, self.skew)
    }

    /// Verifies a presented certificate and its proof of possession over `challenge` (which the
    /// verifier issued) for `audience` (the verifier itself).
    pub fn verify_presentation(
        &self,
        certificate: &str,
        proof: &str,
        challenge: &str,
        audience: &str,
        now: i64,
    ) -> Result<(AgentCertificate, crate::presentation::ProofClaims), VerifyError> {
        let certificate = self.verify_certificate(certificate, now)?;
        let claims = crate::presentation::verify_proof(
            proof,
            &certificate,
            challenge,
            audience,
            now,
            self.skew,
        )?;
        Ok((certificate, claims))
    }

    /// Verifies an action token and what it is bound to.
    pub fn verify_token(
        &self,
        token: &str,
        expect: &Expectations,
        now: i64,
    ) -> Result<VerifiedAction, VerifyError> {
        let jws = Jws::parse(token)?;
        jws.check_typ(TOKEN_TYP)?;
        let claims: ActionClaims = jose::parse_strict_object(&jws.payload, "token claims")?;
        let encoded_cert = self
            .certificates
            .certificate(&claims.cert)
            .ok_or_else(|| VerifyError::UnknownCertificate(claims.cert.clone()))?;
        let (_, cert_claims, agent_keys) = AgentCertificate::parse_unverified(&encoded_cert)?;
        if cert_claims.jti != claims.cert {
            return Err(VerifyError::UnknownCertificate(claims.cert.clone()));
        }
        jws.verify(&agent_keys)?;
        if claims.iss != cert_claims.sub || claims.sub != cert_claims.sub {
            return Err(VerifyError::SubjectMismatch {
                token: claims.iss.clone(),
                certificate: cert_claims.sub.clone(),
            });
        }
        if let Some(audience) = &expect.audience
            && &claims.aud != audience
        {
            return Err(VerifyError::WrongAudience {
                expected: audience.clone(),
                found: claims.aud.clone(),
            });
        }
        if claims.exp < claims.nbf || claims.exp.saturating_sub(claims.iat) > token::MAX_TTL {
            return Err(VerifyError::malformed(format!(
                "token lifetime is not between nbf and iat + {} s",
                token::MAX_TTL
            )));
        }
        if now > claims.exp.saturating_add(self.skew) {
            return Err(VerifyError::Expired(claims.exp));
        }
        if now.saturating_add(self.skew) < claims.nbf.max(claims.iat) {
            return Err(VerifyError::NotYetValid(claims.nbf));
        }
        let certificate = self.verify_certificate(&encoded_cert, now)?;
        if let Some(entry) = self.revocation.token_revocation(&claims.jti, now)? {
            return Err(VerifyError::Revoked {
                jti: claims.jti.clone(),
                reason: entry.reason,
            });
        }
        if let Some(action) = &expect.action
            && &claims.action != action
        {
            return Err(VerifyError::WrongAction {
                expected: action.clone(),
                found: claims.action.clone(),
            });
        }
        if let Some(args) = &expect.args {
            token::check_args(args).map_err(VerifyError::Malformed)?;
            if token::args_sha256(args) != claims.args_sha256 {
                return Err(VerifyError::ArgsMismatch);
            }
        }
        Ok(VerifiedAction {
            claims,
            certificate,
        })
    }
}

/// Convenience for callers holding arguments as JSON text.
pub fn parse_args(text: &str) -> Result<Value, VerifyError> {
    jose::parse_strict_json(text.as_bytes())
}
