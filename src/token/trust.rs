//! What verifying any signed object relies on: the CA keys a verifier trusts ([`TrustAnchor`]) and
//! a place to look revocations up ([`RevocationSource`]). Both sit below every signed object, so
//! certificates and revocation lists can use them without importing each other.

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::jose::{Jwk, JwkSet, Jws};
use crate::reason::VerifyError;

/// The CA public keys a verifier trusts, under the CA id they sign as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The CA id (`iss` of its certificates and revocation lists).
    pub ca_id: String,
    /// Every key the CA is trusted with: one per algorithm it signs with, or during a key
    /// rotation's overlap two generations of them. Each object must carry, for every algorithm,
    /// one signature valid under a key of that algorithm.
    pub keys: Vec<PublicKey>,
}

/// The `typ` of the statement by which a CA key generation endorses the next.
pub const ROTATION_TYP: &str = "agent-ca-rotation+jwt";

/// The claims of a rotation statement: the CA's previous keys vouch for the new ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationClaims {
    /// The CA id.
    pub iss: String,
    /// The new generation's number.
    pub generation: u32,
    /// RFC 7638 thumbprints of the new generation's keys.
    pub keys: Vec<String>,
    /// When it was made.
    pub iat: i64,
}

impl TrustAnchor {
    /// Whether a verifier pinned to this anchor may take `next` in its place (a hub it follows
    /// rotated or retired CA keys): the same CA id, and every key `next` adds endorsed by a
    /// rotation statement this anchor verifies. Keys only taken away (retired) need nothing.
    ///
    /// `seen` is the newest rotation generation the verifier accepted so far: a statement must
    /// name a later one (an old statement is not replayed). The algorithms may not change (a
    /// hybrid CA cannot be turned into an Ed25519-only one by dropping keys). Returns the
    /// newest generation now seen.
    pub fn accepts_successor(
        &self,
        next: &TrustAnchor,
        statement: Option<&str>,
        seen: u32,
    ) -> Result<u32, VerifyError> {
        if next.ca_id != self.ca_id {
            return Err(VerifyError::UnknownIssuer(next.ca_id.clone()));
        }
        let algorithms = |anchor: &TrustAnchor| {
            let mut names: Vec<&str> = anchor.keys.iter().map(|k| k.algorithm().name()).collect();
            names.sort_unstable();
            names.dedup();
            names
        };
        if algorithms(next) != algorithms(self) {
            return Err(VerifyError::malformed(
                "the CA's new keys are of other algorithms than its trusted ones",
            ));
        }
        let added: Vec<String> = next
            .keys
            .iter()
            .filter(|k| !self.keys.contains(k))
            .map(crate::jose::thumbprint)
            .collect();
        if added.is_empty() {
            return Ok(seen);
        }
        let statement = statement
            .ok_or_else(|| VerifyError::malformed("new CA keys without a rotation statement"))?;
        let jws = Jws::parse_limited(statement, crate::jose::MAX_JWS_LEN)?;
        jws.check_typ(ROTATION_TYP)?;
        let claims: RotationClaims =
            crate::jose::parse_strict_object(&jws.payload, "rotation statement")?;
        self.verify_issued(&jws, &claims.iss)?;
        if let Some(missing) = added.iter().find(|kid| !claims.keys.contains(kid)) {
            return Err(VerifyError::malformed(format!(
                "CA key {missing} is not endorsed by the keys already trusted"
            )));
        }
        if claims.generation <= seen {
            return Err(VerifyError::malformed(format!(
                "rotation statement for generation {}, but {seen} was seen already",
                claims.generation
            )));
        }
        Ok(claims.generation)
    }

    /// This anchor without the keys a signed statement of the CA (`vouched`: the thumbprints a
    /// revocation list it signed names) no longer vouches for: how a follower learns of a
    /// retirement from the current keys rather than from an unsigned document. Keys are only
    /// ever taken away, and never all the keys of one algorithm (that list would not verify).
    pub fn restricted_to(&self, vouched: &[String]) -> TrustAnchor {
        let kept: Vec<PublicKey> = self
            .keys
            .iter()
            .filter(|k| vouched.contains(&crate::jose::thumbprint(k)))
            .cloned()
            .collect();
        let covers_every_algorithm = self
            .keys
            .iter()
            .all(|k| kept.iter().any(|kept| kept.algorithm() == k.algorithm()));
        TrustAnchor {
            ca_id: self.ca_id.clone(),
            keys: if covers_every_algorithm {
                kept
            } else {
                self.keys.clone()
            },
        }
    }

    /// The claims of a rotation statement, unverified (its generation, for a verifier's first
    /// contact, which trusts the hub's document as it finds it; its time, to tell a revocation
    /// list made before the rotation).
    pub fn rotation_claims(statement: &str) -> Option<RotationClaims> {
        let jws = Jws::parse_limited(statement, crate::jose::MAX_JWS_LEN).ok()?;
        crate::jose::parse_strict_object(&jws.payload, "rotation statement").ok()
    }

    /// The CA keys as a JWK Set.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().map(Jwk::from_public_key).collect(),
        }
    }

    /// Checks that `iss` names this CA, then every CA signature of `jws`.
    pub(crate) fn verify_issued(&self, jws: &Jws, iss: &str) -> Result<(), VerifyError> {
        if iss != self.ca_id {
            return Err(VerifyError::UnknownIssuer(iss.to_owned()));
        }
        jws.verify_by_generation(&self.keys)
    }
}

/// What was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevokedKind {
    /// An action token, by `jti`.
    Token,
    /// A certificate, by serial (`jti` of the certificate).
    Certificate,
}

impl RevokedKind {
    /// The name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            RevokedKind::Token => "token",
            RevokedKind::Certificate => "certificate",
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    /// Token id or certificate serial.
    pub id: String,
    /// When it was revoked (seconds since the epoch); a time still to come schedules the
    /// revocation (a key rotation's grace).
    pub revoked_at: i64,
    /// The operator's reason.
    pub reason: String,
}

impl RevocationEntry {
    /// Whether the revocation applies at `now`. A scheduled one applies from its time minus the
    /// clock skew allowed ([`crate::clock::DEFAULT_SKEW`]): early rather than late, and a
    /// revocation recorded "now" applies at once to a check that began a moment before.
    pub fn in_effect(&self, now: i64) -> bool {
        self.revoked_at <= now.saturating_add(crate::clock::DEFAULT_SKEW)
    }
}

/// How current a source's revocation data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Where the data comes from: `local` (the installation's database) or `crl`.
    pub source: &'static str,
    /// The revocation list number, for a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// When the data was produced.
    pub issued_at: i64,
    /// When newer data is due, for a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_update: Option<i64>,
}

/// Somewhere revocations can be looked up. A source that cannot vouch for being current answers
/// [`VerifyError::RevocationUnavailable`] rather than "not revoked".
pub trait RevocationSource {
    /// The revocation of token `jti`, if any.
    fn token_revocation(&self, jti: &str, now: i64)
    -> Result<Option<RevocationEntry>, VerifyError>;
    /// The revocation of certificate `serial`, if any.
    fn certificate_revocation(
        &self,
        serial: &str,
        now: i64,
    ) -> Result<Option<RevocationEntry>, VerifyError>;
    /// How fresh the data is.
    fn freshness(&self, now: i64) -> Freshness;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Algorithm, Seed, SigningKey};
    use crate::jose::{self, EdAlgName};

    fn key(algorithm: Algorithm, byte: u8) -> SigningKey {
        SigningKey::from_seed(algorithm, &Seed::from_slice(&[byte; 32]).unwrap())
    }

    fn anchor(keys: &[&SigningKey]) -> TrustAnchor {
        TrustAnchor {
            ca_id: "urn:ca".into(),
            keys: keys.iter().map(|k| k.public_key().clone()).collect(),
        }
    }

    fn signed(keys: &[&SigningKey]) -> Jws {
        let claims = serde_json::json!({"iss": "urn:ca"});
        Jws::parse(&jose::sign(&claims, "x", keys, EdAlgName::EdDsa).unwrap()).unwrap()
    }

    #[test]
    fn two_generations_each_verify_but_every_algorithm_still_needs_a_signature() {
        let (ed0, ml0) = (key(Algorithm::Ed25519, 1), key(Algorithm::MlDsa65, 2));
        let (ed1, ml1) = (key(Algorithm::Ed25519, 3), key(Algorithm::MlDsa65, 4));
        let overlap = anchor(&[&ed1, &ml1, &ed0, &ml0]);
        assert!(
            overlap
                .verify_issued(&signed(&[&ed0, &ml0]), "urn:ca")
                .is_ok()
        );
        assert!(
            overlap
                .verify_issued(&signed(&[&ed1, &ml1]), "urn:ca")
                .is_ok()
        );
        // One algorithm missing, or a key of neither generation.
        assert!(matches!(
            overlap.verify_issued(&signed(&[&ed1]), "urn:ca"),
            Err(VerifyError::MissingSignature(Algorithm::MlDsa65))
        ));
        let stranger = key(Algorithm::Ed25519, 9);
        assert!(matches!(
            overlap.verify_issued(&signed(&[&stranger, &ml1]), "urn:ca"),
            Err(VerifyError::BadSignature(Algorithm::Ed25519))
        ));
        // After retirement, the old generation's objects fail.
        let retired = anchor(&[&ed1, &ml1]);
        assert!(
            retired
                .verify_issued(&signed(&[&ed0, &ml0]), "urn:ca")
                .is_err()
        );
    }

    #[test]
    fn a_pinned_anchor_takes_new_keys_only_on_the_old_keys_word() {
        let (old, new, forger) = (
            key(Algorithm::Ed25519, 1),
            key(Algorithm::Ed25519, 2),
            key(Algorithm::Ed25519, 3),
        );
        let pinned = anchor(&[&old]);
        let next = anchor(&[&new, &old]);
        let statement = |by: &SigningKey, keys: Vec<String>| {
            let claims = RotationClaims {
                iss: "urn:ca".into(),
                generation: 1,
                keys,
                iat: 0,
            };
            jose::sign(&claims, ROTATION_TYP, &[by], EdAlgName::EdDsa).unwrap()
        };
        let endorsed = statement(&old, vec![jose::thumbprint(new.public_key())]);
        assert_eq!(
            pinned.accepts_successor(&next, Some(&endorsed), 0).unwrap(),
            1
        );
        assert!(pinned.accepts_successor(&next, None, 0).is_err());
        // Replayed after generation 1 was seen.
        assert!(pinned.accepts_successor(&next, Some(&endorsed), 1).is_err());
        // Signed by the new key itself, or endorsing another key.
        let self_signed = statement(&new, vec![jose::thumbprint(new.public_key())]);
        assert!(
            pinned
                .accepts_successor(&next, Some(&self_signed), 0)
                .is_err()
        );
        let other = statement(&old, vec![jose::thumbprint(forger.public_key())]);
        assert!(pinned.accepts_successor(&next, Some(&other), 0).is_err());
        // Keys taken away need nothing; another CA id is refused.
        assert_eq!(
            next.accepts_successor(&anchor(&[&new]), None, 1).unwrap(),
            1
        );
        let renamed = TrustAnchor {
            ca_id: "urn:other".into(),
            ..next.clone()
        };
        assert!(
            pinned
                .accepts_successor(&renamed, Some(&endorsed), 0)
                .is_err()
        );
        // A hybrid CA's keys cannot be cut down to one algorithm.
        let ml = key(Algorithm::MlDsa65, 5);
        let hybrid = anchor(&[&old, &ml]);
        assert!(hybrid.accepts_successor(&anchor(&[&old]), None, 0).is_err());
    }

    #[test]
    fn a_signed_key_list_takes_retired_keys_away_but_never_an_algorithm() {
        let (ed0, ed1, ml) = (
            key(Algorithm::Ed25519, 1),
            key(Algorithm::Ed25519, 2),
            key(Algorithm::MlDsa65, 3),
        );
        let overlap = anchor(&[&ed1, &ed0, &ml]);
        let kid = |k: &SigningKey| jose::thumbprint(k.public_key());
        assert_eq!(
            overlap.restricted_to(&[kid(&ed1), kid(&ml)]),
            anchor(&[&ed1, &ml])
        );
        // Nothing is added, and a list without an algorithm's keys changes nothing.
        assert_eq!(overlap.restricted_to(&[kid(&ed1)]), overlap);
        let stranger = key(Algorithm::Ed25519, 9);
        assert_eq!(
            anchor(&[&ed1, &ml]).restricted_to(&[kid(&ed1), kid(&ml), kid(&stranger)]),
            anchor(&[&ed1, &ml])
        );
    }
}
