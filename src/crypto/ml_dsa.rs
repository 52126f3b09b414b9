//! ML-DSA-65 (FIPS 204) through one of two implementations behind one interface.
//!
//! - [`Backend::AwsLc`]: AWS-LC through `aws-lc-rs` (cargo feature `aws-lc`, on by default).
//!   It is about 3.5 times faster than `fips204` on the benchmark machine (docs/benchmarks.md),
//!   and `aws-lc-rs` is already in the binary's dependency tree through rustls.
//! - [`Backend::Fips204`]: the pure-Rust `fips204` crate. It is always built. It is the only
//!   backend without the `aws-lc` feature, for example in the lean verify-only library. Tests also
//!   use it as the reference the other backend is checked against.
//!
//! Both sign with the empty context string (RFC 9964 requires it for JOSE) and hedged
//! randomness, and both derive the same key pair from a seed. A signature made by either one
//! verifies under the other. `tests/it/known_answers.rs` runs the RFC 9964 and Wycheproof vectors
//! and the cross-backend checks against every backend in [`Backend::AVAILABLE`].

use fips204::ml_dsa_65;
use fips204::traits::{KeyGen as _, SerDes as _, Signer as _, Verifier as _};

use super::{Algorithm, CryptoError, ML_DSA_65_PUBLIC_LEN, ML_DSA_65_SIGNATURE_LEN, SEED_LEN};

/// An implementation of ML-DSA-65.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// The pure-Rust `fips204` crate.
    Fips204,
    /// AWS-LC through `aws-lc-rs`.
    #[cfg(feature = "aws-lc")]
    AwsLc,
}

impl Backend {
    /// The backend [`super::SigningKey`] and [`super::PublicKey`] use.
    #[cfg(feature = "aws-lc")]
    pub const DEFAULT: Backend = Backend::AwsLc;
    /// The backend [`super::SigningKey`] and [`super::PublicKey`] use.
    #[cfg(not(feature = "aws-lc"))]
    pub const DEFAULT: Backend = Backend::Fips204;

    /// Every backend in this build.
    pub const AVAILABLE: &'static [Backend] = &[
        Backend::Fips204,
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fips204 => "fips204",
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => "aws-lc-rs",
        }
    }

    /// Derives the key pair of `seed` (FIPS 204 `ML-DSA.KeyGen_internal` with ξ = seed).
    pub fn key_pair(self, seed: &[u8; SEED_LEN]) -> Result<PrivateKey, CryptoError> {
        match self {
            Backend::Fips204 => {
                let (public, private) = ml_dsa_65::KG::keygen_from_seed(seed);
                Ok(PrivateKey {
                    public: Box::new(public.into_bytes()),
                    inner: Inner::Fips204(Box::new(private)),
                })
            }
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => {
                use aws_lc_rs::signature::KeyPair as _;
                let pair = aws_lc_rs::signature::PqdsaKeyPair::from_seed(
                    &aws_lc_rs::signature::ML_DSA_65_SIGNING,
                    seed,
                )
                .map_err(|_| CryptoError::Signing(Algorithm::MlDsa65))?;
                let public = <[u8; ML_DSA_65_PUBLIC_LEN]>::try_from(pair.public_key().as_ref())
                    .map_err(|_| CryptoError::Signing(Algorithm::MlDsa65))?;
                Ok(PrivateKey {
                    public: Box::new(public),
                    inner: Inner::AwsLc(Box::new(pair)),
                })
            }
        }
    }

    /// Whether `public` is a key this backend accepts.
    pub fn valid_public_key(self, public: &[u8; ML_DSA_65_PUBLIC_LEN]) -> bool {
        match self {
            Backend::Fips204 => ml_dsa_65::PublicKey::try_from_bytes(*public).is_ok(),
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ML_DSA_65,
                public.as_slice(),
            )
            .is_ok(),
        }
    }

    /// Verifies `signature` over `message` with the empty context string.
    pub fn verify(
        self,
        public: &[u8; ML_DSA_65_PUBLIC_LEN],
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let Ok(signature) = <&[u8; ML_DSA_65_SIGNATURE_LEN]>::try_from(signature) else {
            return false;
        };
        match self {
            Backend::Fips204 => ml_dsa_65::PublicKey::try_from_bytes(*public)
                .is_ok_and(|key| key.verify(message, signature, &[])),
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ML_DSA_65,
                public.as_slice(),
            )
            .verify(message, signature)
            .is_ok(),
        }
    }
}

/// An expanded ML-DSA-65 signing key of one backend. Both backends wipe it when dropped
/// (`fips204` through `zeroize`, AWS-LC when it frees the key).
pub struct PrivateKey {
    public: Box<[u8; ML_DSA_65_PUBLIC_LEN]>,
    inner: Inner,
}

enum Inner {
    Fips204(Box<ml_dsa_65::PrivateKey>),
    #[cfg(feature = "aws-lc")]
    AwsLc(Box<aws_lc_rs::signature::PqdsaKeyPair>),
}

impl PrivateKey {
    /// The encoded public key.
    pub fn public_key(&self) -> &[u8; ML_DSA_65_PUBLIC_LEN] {
        &self.public
    }

    /// Signs `message` with hedged randomness and the empty context string.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let failed = CryptoError::Signing(Algorithm::MlDsa65);
        match &self.inner {
            Inner::Fips204(key) => key
                .try_sign(message, &[])
                .map(|signature| signature.to_vec())
                .map_err(|_| failed),
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(pair) => {
                let mut signature = vec![0; ML_DSA_65_SIGNATURE_LEN];
                let written = pair.sign(message, &mut signature).map_err(|_| failed)?;
                signature.truncate(written);
                Ok(signature)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_derives_the_same_key_and_verifies_the_others_signatures() {
        let seed = [42u8; SEED_LEN];
        let keys: Vec<_> = Backend::AVAILABLE
            .iter()
            .map(|backend| (backend, backend.key_pair(&seed).unwrap()))
            .collect();
        for (signer, key) in &keys {
            assert_eq!(key.public_key(), keys[0].1.public_key(), "{signer:?}");
            let signature = key.sign(b"message").unwrap();
            for verifier in Backend::AVAILABLE {
                assert!(
                    verifier.verify(key.public_key(), b"message", &signature),
                    "{signer:?} -> {verifier:?}"
                );
                assert!(
                    !verifier.verify(key.public_key(), b"messagf", &signature),
                    "{signer:?} -> {verifier:?} accepted another message"
                );
            }
        }
    }
}
