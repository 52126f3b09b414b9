//! Agent certificates: a JWT signed by the CA (`typ` `agent-cert+jwt`) binding an agent id to its
//! public key(s) through the RFC 7800 `cnf` claim.
//!
//! A single-key agent's certificate carries `cnf.jwk`; a hybrid agent's carries `cnf.jwks` with
//! both keys (an extension of RFC 7800, which defines one key per `cnf`). The CA signs with every
//! key it holds, so a hybrid CA issues general-JSON JWS certificates with two signatures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::trust::{RevocationSource, TrustAnchor};
use crate::crypto::{CryptoError, PublicKey, SigningKey};
use crate::jose::{self, EdAlgName, Jwk, JwkSet, Jws};
use crate::reason::VerifyError;

/// The `typ` of an agent certificate.
pub const CERT_TYP: &str = "agent-cert+jwt";

/// The claims of an agent certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateClaims {
    /// The CA id.
    pub iss: String,
    /// The agent id.
    pub sub: String,
    /// Issued at.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Expires at.
    pub exp: i64,
    /// Serial number, unique per CA.
    pub jti: String,
    /// The agent's public key(s).
    pub cnf: Confirmation,
    /// Free-form attributes set by the operator (role, team, version).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// RFC 7800 confirmation: the key(s) the agent proves possession of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The key of a single-key agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
    /// The keys of a hybrid agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwkSet>,
}

impl Confirmation {
    /// The confirmation for `keys`: `jwk` for one key, `jwks` for several.
    pub fn for_keys(keys: &[PublicKey]) -> Self {
        let mut jwks: Vec<Jwk> = keys.iter().map(Jwk::from_public_key).collect();
        if jwks.len() == 1 {
            Confirmation {
                jwk: jwks.pop(),
                jwks: None,
            }
        } else {
            Confirmation {
                jwk: None,
                jwks: Some(JwkSet { keys: jwks }),
            }
        }
    }

    /// The confirmed keys, refusing an empty, ambiguous or repeated-algorithm key set.
    pub fn keys(&self) -> Result<Vec<PublicKey>, VerifyError> {
        let jwks: Vec<&Jwk> = match (&self.jwk, &self.jwks) {
            (Some(jwk), None) => vec![jwk],
            (None, Some(set)) if !set.keys.is_empty() => set.keys.iter().collect(),
            _ => {
                return Err(VerifyError::malformed(
                    "cnf must hold exactly one of jwk or jwks",
                ));
            }
        };
        let mut keys: Vec<PublicKey> = Vec::with_capacity(jwks.len());
        for jwk in jwks {
            let key = jwk.to_public_key()?;
            if keys.iter().any(|k| k.algorithm() == key.algorithm()) {
                return Err(VerifyError::malformed(
                    "cnf lists two keys of one algorithm",
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }
}

/// A certificate whose CA signatures, validity period and revocation status have been checked.
#[derive(Debug, Clone)]
pub struct AgentCertificate {
    /// The verified claims.
    pub claims: CertificateClaims,
    /// The agent's public keys from `cnf`.
    pub keys: Vec<PublicKey>,
    /// The certificate as issued.
    pub encoded: String,
}

impl AgentCertificate {
    /// Signs `claims` with every CA key.
    pub fn issue(
        claims: &CertificateClaims,
        ca_keys: &[&SigningKey],
    ) -> Result<String, CryptoError> {
        jose::sign(claims, CERT_TYP, ca_keys, EdAlgName::EdDsa)
    }

    /// Parses a certificate and reads its claims and keys without checking any signature.
    /// Use only to find the keys a token names; [`AgentCertificate::verify`] is the real check.
    pub fn parse_unverified(
        encoded: &str,
    ) -> Result<(Jws, CertificateClaims, Vec<PublicKey>), VerifyError> {
        let jws = Jws::parse(encoded)?;
        let claims: CertificateClaims =
            jose::parse_strict_object(&jws.payload, "certificate claims")?;
        let keys = claims.cnf.keys()?;
        Ok((jws, claims, keys))
    }

    /// Verifies a certificate: `typ`, issuer, CA signatures, `nbf`/`exp` within `skew` seconds,
    /// then revocation. The same as [`AgentCertificate::verify_signed`] followed by
    /// [`AgentCertificate::check_current`].
    pub fn verify(
        encoded: &str,
        anchor: &TrustAnchor,
        revocation: &dyn RevocationSource,
        now: i64,
        skew: i64,
    ) -> Result<AgentCertificate, VerifyError> {
        let certificate = Self::verify_signed(encoded, anchor)?;
        certificate.check_current(revocation, now, skew)?;
        Ok(certificate)
    }

    /// The part of [`AgentCertificate::verify`] that does not change with time: `typ`, issuer,
    /// the CA signatures and the keys. What it returns is not yet a usable certificate: its
    /// lifetime and revocation must be checked with [`AgentCertificate::check_current`] at each
    /// use, which is what lets a verified certificate be kept and reused.
    pub fn verify_signed(
        encoded: &str,
        anchor: &TrustAnchor,
    ) -> Result<AgentCertificate, VerifyError> {
        let jws = Jws::parse(encoded)?;
        jws.check_typ(CERT_TYP)?;
        let claims: CertificateClaims =
            jose::parse_strict_object(&jws.payload, "certificate claims")?;
        if crate::identifier::is_deceptive(&claims.sub) {
            return Err(VerifyError::malformed(
                "the agent id holds an invisible or direction-changing character",
            ));
        }
        anchor.verify_issued(&jws, &claims.iss)?;
        let keys = claims.cnf.keys()?;
        Ok(AgentCertificate {
            claims,
            keys,
            encoded: encoded.to_owned(),
        })
    }

    /// The part of [`AgentCertificate::verify`] that changes with time: `nbf`/`exp` within
    /// `skew` seconds of `now`, then revocation (a lookup, every time).
    pub fn check_current(
        &self,
        revocation: &dyn RevocationSource,
        now: i64,
        skew: i64,
    ) -> Result<(), VerifyError> {
        let claims = &self.claims;
        if now > claims.exp.saturating_add(skew) {
            return Err(VerifyError::CertificateExpired(claims.exp));
        }
        if now.saturating_add(skew) < claims.nbf {
            return Err(VerifyError::CertificateNotYetValid(claims.nbf));
        }
        if let Some(entry) = revocation.certificate_revocation(&claims.jti, now)? {
            return Err(VerifyError::CertificateRevoked {
                serial: claims.jti.clone(),
                reason: entry.reason,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Algorithm, Seed};

    #[test]
    fn a_certificate_whose_agent_id_hides_characters_is_malformed() {
        let key = |byte| {
            SigningKey::from_seed(Algorithm::Ed25519, &Seed::from_slice(&[byte; 32]).unwrap())
        };
        let (ca, agent) = (key(1), key(2));
        let anchor = TrustAnchor {
            ca_id: "urn:agentseal:ca:test".into(),
            keys: vec![ca.public_key().clone()],
        };
        let issue = |sub: &str| {
            let claims = CertificateClaims {
                iss: anchor.ca_id.clone(),
                sub: sub.into(),
                iat: 0,
                nbf: 0,
                exp: 1,
                jti: "serial".into(),
                cnf: Confirmation::for_keys(&[agent.public_key().clone()]),
                meta: Default::default(),
            };
            AgentCertificate::issue(&claims, &[&ca]).unwrap()
        };
        assert!(
            AgentCertificate::verify_signed(&issue("agent://acme.example/bob"), &anchor).is_ok()
        );
        // Signed by the right CA all the same: a zero-width space, a right-to-left override.
        for sub in [
            "agent://acme.example/b\u{200B}ob",
            "agent://acme.example/\u{202E}bob",
        ] {
            let error = AgentCertificate::verify_signed(&issue(sub), &anchor).unwrap_err();
            assert_eq!(error.code(), "malformed", "{sub:?}");
        }
    }
}
