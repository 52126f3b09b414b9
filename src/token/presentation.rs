//! Proof of possession: an agent presents its certificate together with a short-lived JWT
//! (`typ` `agent-pop+jwt`) signed by the certified key(s) over the peer's fresh challenge, the
//! peer's identity and the time, so a replayed or stolen certificate proves nothing.

use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoError, SigningKey};
use crate::jose::{self, EdAlgName, Jws};
use crate::reason::VerifyError;
use crate::token::certificate::AgentCertificate;

/// The `typ` of a proof of possession.
pub const PROOF_TYP: &str = "agent-pop+jwt";
/// How long a proof is valid: the peer's challenge is meant to be answered at once.
pub const PROOF_TTL: i64 = 120;
/// Bounds on a challenge: long enough to be unguessable, short enough to stay a nonce.
pub const CHALLENGE_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// The claims of a proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofClaims {
    /// The agent id.
    pub iss: String,
    /// The agent id.
    pub sub: String,
    /// The peer the proof is for.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// The peer's challenge, verbatim.
    pub nonce: String,
    /// The serial of the certificate whose keys signed.
    pub cert: String,
}

/// Checks a challenge's length and characters (printable ASCII).
pub fn check_challenge(challenge: &str) -> Result<(), String> {
    if !CHALLENGE_LEN.contains(&challenge.len()) || !challenge.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "challenge must be {} to {} printable ASCII characters",
            CHALLENGE_LEN.start(),
            CHALLENGE_LEN.end()
        ));
    }
    Ok(())
}

/// Signs a proof that the holder of `keys` (all keys of `certificate`) answers `challenge` for
/// `audience` now.
pub fn prove(
    certificate: &AgentCertificate,
    keys: &[&SigningKey],
    challenge: &str,
    audience: &str,
    now: i64,
) -> Result<String, CryptoError> {
    let claims = ProofClaims {
        iss: certificate.claims.sub.clone(),
        sub: certificate.claims.sub.clone(),
        aud: audience.to_owned(),
        iat: now,
        exp: now.saturating_add(PROOF_TTL),
        nonce: challenge.to_owned(),
        cert: certificate.claims.jti.clone(),
    };
    jose::sign(&claims, PROOF_TYP, keys, EdAlgName::EdDsa)
}

/// Checks `proof` against an already verified `certificate`, the challenge the verifier issued
/// and its own identity.
pub fn verify_proof(
    proof: &str,
    certificate: &AgentCertificate,
    challenge: &str,
    audience: &str,
    now: i64,
    skew: i64,
) -> Result<ProofClaims, VerifyError> {
    let jws = Jws::parse(proof)?;
    jws.check_typ(PROOF_TYP)?;
    let claims: ProofClaims = jose::parse_strict_object(&jws.payload, "proof claims")?;
    if claims.cert != certificate.claims.jti {
        return Err(VerifyError::UnknownCertificate(claims.cert));
    }
    jws.verify(&certificate.keys)?;
    if claims.iss != certificate.claims.sub || claims.sub != certificate.claims.sub {
        return Err(VerifyError::SubjectMismatch {
            token: claims.iss,
            certificate: certificate.claims.sub.clone(),
        });
    }
    if claims.aud != audience {
        return Err(VerifyError::WrongAudience {
            expected: audience.to_owned(),
            found: claims.aud,
        });
    }
    if claims.exp < claims.iat || claims.exp.saturating_sub(claims.iat) > PROOF_TTL {
        return Err(VerifyError::malformed("proof lifetime out of bounds"));
    }
    if now > claims.exp.saturating_add(skew) {
        return Err(VerifyError::Expired(claims.exp));
    }
    if now.saturating_add(skew) < claims.iat {
        return Err(VerifyError::NotYetValid(claims.iat));
    }
    if claims.nonce != challenge {
        return Err(VerifyError::WrongChallenge);
    }
    Ok(claims)
}
