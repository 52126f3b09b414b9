//! Signature algorithms behind one interface: Ed25519 (RFC 8032/8037) and ML-DSA-65 (FIPS 204).
//!
//! Secret keys exist only as 32-byte seeds ([`Seed`]) and as expanded signing keys that zeroize on
//! drop. Everything above this module signs through [`SigningKey`] and verifies through
//! [`PublicKey`]. ML-DSA-65 has two implementations behind them ([`ml_dsa::Backend`]).

use std::fmt;

use ed25519_dalek::Signer as _;
use fips204::ml_dsa_65;
use serde::{Deserialize, Serialize};

pub mod ml_dsa;
use ml_dsa::Backend;
use zeroize::Zeroizing;

/// Length in bytes of every secret seed.
pub const SEED_LEN: usize = 32;
/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;
/// Length of an ML-DSA-65 public key.
pub const ML_DSA_65_PUBLIC_LEN: usize = ml_dsa_65::PK_LEN;
/// Length of an ML-DSA-65 signature.
pub const ML_DSA_65_SIGNATURE_LEN: usize = ml_dsa_65::SIG_LEN;

/// A signature algorithm agentseal signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519 (RFC 8032), JOSE `EdDSA` or `Ed25519`, JWK key type `OKP`.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ML-DSA-65 (FIPS 204), JOSE `ML-DSA-65`, JWK key type `AKP`.
    #[serde(rename = "ml-dsa-65")]
    MlDsa65,
}

impl Algorithm {
    /// Every algorithm, in the order multi-signature objects list them.
    pub const ALL: [Algorithm; 2] = [Algorithm::Ed25519, Algorithm::MlDsa65];

    /// The short name used on the command line and in the database.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::MlDsa65 => "ml-dsa-65",
        }
    }

    /// Parses a short name as printed by [`Algorithm::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ed25519" => Some(Algorithm::Ed25519),
            "ml-dsa-65" => Some(Algorithm::MlDsa65),
            _ => None,
        }
    }

    /// Whether a JOSE `alg` header value names this algorithm. Ed25519 accepts both the
    /// polymorphic `EdDSA` and the fully-specified `Ed25519` (RFC 9864).
    pub fn accepts_jose_alg(self, alg: &str) -> bool {
        match self {
            Algorithm::Ed25519 => alg == "EdDSA" || alg == "Ed25519",
            Algorithm::MlDsa65 => alg == "ML-DSA-65",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors from key handling. They never carry key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// A public key had the wrong length or was not a valid encoding.
    #[error("invalid {0} public key")]
    InvalidPublicKey(Algorithm),
    /// An Ed25519 public key of small order, which RFC 8032 strict verification forbids.
    #[error("weak (small-order) Ed25519 public key")]
    WeakPublicKey,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// The signing primitive failed.
    #[error("{0} signing failed")]
    Signing(Algorithm),
}

/// A 32-byte secret seed: the Ed25519 secret key, or the ML-DSA-65 key-generation seed ξ.
/// Zeroized on drop; its `Debug` output hides the bytes.
#[derive(Clone)]
pub struct Seed(Zeroizing<[u8; SEED_LEN]>);

impl Seed {
    /// Draws a fresh seed from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; SEED_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|_| CryptoError::Rng)?;
        Ok(Seed(bytes))
    }

    /// Wraps seed bytes; `None` unless exactly 32 bytes are given.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; SEED_LEN] = bytes.try_into().ok()?;
        Some(Seed(Zeroizing::new(array)))
    }

    /// The seed bytes, for writing to a key store only.
    pub fn expose(&self) -> &[u8; SEED_LEN] {
        &self.0
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

/// A verifying key of either algorithm.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey {
    /// Ed25519 verifying key (weak keys are refused at construction).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ML-DSA-65 public key, kept as its 1952-byte encoding.
    MlDsa65(Box<[u8; ML_DSA_65_PUBLIC_LEN]>),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.algorithm())
    }
}

impl PublicKey {
    /// Parses a raw public key, refusing wrong lengths, invalid encodings and weak Ed25519 keys.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        match algorithm {
            Algorithm::Ed25519 => {
                let array: &[u8; ED25519_PUBLIC_LEN] = bytes
                    .try_into()
                    .map_err(|_| CryptoError::InvalidPublicKey(algorithm))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(array)
                    .map_err(|_| CryptoError::InvalidPublicKey(algorithm))?;
                if key.is_weak() {
                    return Err(CryptoError::WeakPublicKey);
                }
                Ok(PublicKey::Ed25519(key))
            }
            Algorithm::MlDsa65 => {
                let array: [u8; ML_DSA_65_PUBLIC_LEN] = bytes
                    .try_into()
                    .map_err(|_| CryptoError::InvalidPublicKey(algorithm))?;
                if !Backend::DEFAULT.valid_public_key(&array) {
                    return Err(CryptoError::InvalidPublicKey(algorithm));
                }
                Ok(PublicKey::MlDsa65(Box::new(array)))
            }
        }
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Ed25519(_) => Algorithm::Ed25519,
            PublicKey::MlDsa65(_) => Algorithm::MlDsa65,
        }
    }

    /// The raw public key bytes (the JWK `x` or `pub` member).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::Ed25519(key) => key.to_bytes().to_vec(),
            PublicKey::MlDsa65(bytes) => bytes.to_vec(),
        }
    }

    /// Verifies `signature` over `message`: strict RFC 8032 verification for Ed25519, and
    /// FIPS 204 verification with the empty context for ML-DSA-65 (as RFC 9964 requires).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(key) => {
                let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                key.verify_strict(message, &signature).is_ok()
            }
            PublicKey::MlDsa65(bytes) => Backend::DEFAULT.verify(bytes, message, signature),
        }
    }
}

/// A secret signing key of either algorithm, expanded from its seed. Zeroizes on drop.
pub struct SigningKey {
    inner: SigningInner,
    public: PublicKey,
}

enum SigningInner {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    MlDsa65(ml_dsa::PrivateKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.algorithm())
    }
}

impl SigningKey {
    /// Derives the key pair of `algorithm` from `seed` (deterministic).
    ///
    /// # Panics
    /// If the ML-DSA-65 backend cannot expand a 32-byte seed, which it always can (AWS-LC fails
    /// only on a wrong seed length or an allocation failure).
    pub fn from_seed(algorithm: Algorithm, seed: &Seed) -> Self {
        match algorithm {
            Algorithm::Ed25519 => {
                let key = ed25519_dalek::SigningKey::from_bytes(seed.expose());
                let public = PublicKey::Ed25519(key.verifying_key());
                SigningKey {
                    inner: SigningInner::Ed25519(Box::new(key)),
                    public,
                }
            }
            Algorithm::MlDsa65 => {
                let private = Backend::DEFAULT
                    .key_pair(seed.expose())
                    .expect("a 32-byte seed always expands");
                SigningKey {
                    public: PublicKey::MlDsa65(Box::new(*private.public_key())),
                    inner: SigningInner::MlDsa65(private),
                }
            }
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`. ML-DSA-65 uses hedged signing with the empty context string.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.inner {
            SigningInner::Ed25519(key) => Ok(key.sign(message).to_bytes().to_vec()),
            SigningInner::MlDsa65(key) => key.sign(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(byte: u8) -> Seed {
        Seed::from_slice(&[byte; 32]).unwrap()
    }

    #[test]
    fn signatures_round_trip_for_every_algorithm() {
        for alg in Algorithm::ALL {
            let key = SigningKey::from_seed(alg, &seed(7));
            let sig = key.sign(b"hello").unwrap();
            assert!(key.public_key().verify(b"hello", &sig), "{alg}");
            assert!(!key.public_key().verify(b"hellp", &sig), "{alg}");
        }
    }

    #[test]
    fn a_signature_of_one_algorithm_never_verifies_under_the_other() {
        let ed = SigningKey::from_seed(Algorithm::Ed25519, &seed(1));
        let ml = SigningKey::from_seed(Algorithm::MlDsa65, &seed(1));
        assert!(!ml.public_key().verify(b"m", &ed.sign(b"m").unwrap()));
        assert!(!ed.public_key().verify(b"m", &ml.sign(b"m").unwrap()));
    }

    #[test]
    fn weak_ed25519_public_keys_are_refused() {
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(Algorithm::Ed25519, &identity),
            Err(CryptoError::WeakPublicKey)
        );
    }

    #[test]
    fn public_keys_of_the_wrong_length_are_refused() {
        for alg in Algorithm::ALL {
            assert_eq!(
                PublicKey::from_bytes(alg, &[0u8; 31]),
                Err(CryptoError::InvalidPublicKey(alg))
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = seed(0xAB);
        assert!(!format!("{s:?}").contains("171"));
        let key = SigningKey::from_seed(Algorithm::Ed25519, &s);
        assert!(format!("{key:?}").contains("redacted"));
    }
}
