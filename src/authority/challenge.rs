//! Fresh challenges for proof of possession: a verifier issues a random, single-use challenge,
//! the peer signs it (see [`crate::token::presentation`]), and the verifier accepts a proof only over a
//! challenge it issued, not yet used, and not expired. This keeps freshness out of the hands of
//! whoever relays the challenge (a language model is no source of randomness).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::crypto::CryptoError;
use crate::reason::VerifyError;

/// How long an issued challenge stays usable.
pub const CHALLENGE_TTL: i64 = 300;
/// How many outstanding challenges one verifier keeps; the oldest are dropped beyond it.
pub const MAX_OUTSTANDING: usize = 10_000;

/// Challenges this verifier issued and has not yet seen answered, each with its expiry and the
/// verifier (agent) it was issued to: only that verifier can accept a proof over it.
#[derive(Debug, Default)]
pub struct ChallengeBook {
    issued: Mutex<HashMap<String, (i64, String)>>,
}

impl ChallengeBook {
    /// Issues a fresh challenge for `verifier`, valid for [`CHALLENGE_TTL`] seconds from `now`.
    pub fn issue(&self, verifier: &str, now: i64) -> Result<(String, i64), CryptoError> {
        let challenge = format!("ch-{}", crate::clock::random_id()?);
        let expires = now.saturating_add(CHALLENGE_TTL);
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued.retain(|_, (exp, _)| *exp >= now);
        if issued.len() >= MAX_OUTSTANDING
            && let Some(oldest) = issued
                .iter()
                .min_by_key(|(_, (exp, _))| *exp)
                .map(|(c, _)| c.clone())
        {
            issued.remove(&oldest);
        }
        issued.insert(challenge.clone(), (expires, verifier.to_owned()));
        Ok((challenge, expires))
    }

    /// Consumes `challenge` for `verifier`: succeeds once, only for a challenge issued here to
    /// that verifier and not expired. Another verifier's attempt leaves it in place.
    pub fn consume(&self, challenge: &str, verifier: &str, now: i64) -> Result<(), VerifyError> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        match issued.get(challenge) {
            Some((expires, owner)) if owner == verifier => {
                let fresh = *expires >= now;
                issued.remove(challenge);
                if fresh {
                    Ok(())
                } else {
                    Err(VerifyError::WrongChallenge)
                }
            }
            _ => Err(VerifyError::WrongChallenge),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_accepted_once_and_only_if_issued_and_fresh() {
        let book = ChallengeBook::default();
        let (c, _) = book.issue("bob", 1_000).unwrap();
        assert!(book.consume("made-up-by-someone", "bob", 1_000).is_err());
        // Another verifier on the same server can neither use nor burn Bob's challenge.
        assert!(book.consume(&c, "carol", 1_001).is_err(), "other verifier");
        assert!(book.consume(&c, "bob", 1_001).is_ok());
        assert!(book.consume(&c, "bob", 1_002).is_err(), "second use");
        let (old, _) = book.issue("bob", 1_000).unwrap();
        assert!(
            book.consume(&old, "bob", 1_000 + CHALLENGE_TTL + 1)
                .is_err(),
            "expired"
        );
    }
}
