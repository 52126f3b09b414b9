//! Fresh challenges for proof of possession: a verifier issues a random, single-use challenge,
//! the peer signs it (see [`crate::token::presentation`]), and the verifier accepts a proof only over a
//! challenge it issued, not yet used, and not expired. This keeps freshness out of the hands of
//! whoever relays the challenge (a language model is no source of randomness).
//!
//! The store keeps them ([`crate::store::Backend::issue_challenge`]): in the hub's memory with
//! SQLite, in the database with PostgreSQL, so that a challenge issued through one hub can be
//! answered through another.

use super::{Installation, ServiceError};
use crate::clock;
use crate::reason::VerifyError;

/// How long an issued challenge stays usable.
pub const CHALLENGE_TTL: i64 = 300;

impl Installation {
    /// Issues a fresh single-use challenge for a peer's proof of possession, to be verified by
    /// `verifier` only (the agent whose `verify_peer` will check it); returns it and its expiry.
    pub fn issue_challenge(&self, verifier: &str) -> Result<(String, i64), ServiceError> {
        let now = clock::now();
        let challenge = format!("ch-{}", clock::random_id()?);
        let expires = now.saturating_add(CHALLENGE_TTL);
        self.store
            .issue_challenge(&challenge, verifier, expires, now)?;
        Ok((challenge, expires))
    }

    /// Consumes `challenge` for `verifier`: succeeds once, only for a challenge issued to that
    /// verifier and not expired. Another verifier's attempt leaves it in place. A database that
    /// cannot be asked fails closed.
    pub(super) fn consume_challenge(
        &self,
        challenge: &str,
        verifier: &str,
        now: i64,
    ) -> Result<(), VerifyError> {
        match self.store.take_challenge(challenge, verifier, now) {
            Ok(true) => Ok(()),
            Ok(false) => Err(VerifyError::WrongChallenge),
            Err(error) => {
                tracing::error!(%error, "challenge not checked");
                Err(VerifyError::RevocationUnavailable)
            }
        }
    }
}
