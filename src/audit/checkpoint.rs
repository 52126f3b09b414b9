//! Checkpoints: a log's tree head (origin, size, root) as a C2SP `tlog-checkpoint` note, signed
//! as a C2SP `signed-note` by every key of the CA.
//!
//! ```text
//! <origin>
//! <size>
//! <base64 root>
//!
//! — <origin> base64(key ID || Ed25519 signature)
//! — <origin> base64(key ID || ML-DSA-65 signature)
//! ```
//!
//! The key name is the origin. An Ed25519 line is what the note specification defines (signature
//! type `0x01`), so existing note verifiers accept it. The note specification assigns ML-DSA-65 no
//! signature type byte, so its key ID uses the byte `0xff` followed by the identifier
//! `agentseal/ml-dsa-65` (as the specification recommends for unassigned types); its signature
//! is ML-DSA-65 (FIPS 204, empty context) over the note text. Verifiers that know only Ed25519
//! ignore that line, as the specification requires of unknown keys.
//!
//! [`Checkpoint::open`] accepts a note only when, for every algorithm of the trust anchor, a key
//! of that algorithm signed it: a hybrid CA's checkpoints need both signatures, as its
//! certificates do, and during a CA key rotation either generation's keys will do.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::merkle::Hash;
use crate::crypto::{Algorithm, CryptoError, PublicKey, SigningKey};

/// Longest note accepted: three short lines and a few signatures (an ML-DSA-65 line is about
/// 4.4 KB).
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// Most signature lines read from a note (the specification asks verifiers to accept 16).
const MAX_SIGNATURES: usize = 16;
/// The identifier after the `0xff` signature type byte in an ML-DSA-65 key ID.
const ML_DSA_65_TYPE: &[u8] = b"agentseal/ml-dsa-65";

/// A log's tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Who keeps the log, also the signing key's name: no spaces, no `+`.
    pub origin: String,
    /// How many records the tree holds.
    pub size: u64,
    /// The tree's head ([`super::merkle::root`]).
    pub root: Hash,
}

/// Why a note is not an acceptable checkpoint.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not a checkpoint note: the text, a signature line or its encoding is malformed.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// Another origin than the expected one.
    #[error("checkpoint of {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// The origin asked for.
        expected: String,
        /// The origin in the note.
        found: String,
    },
    /// A signature of a known key does not verify.
    #[error("a {0} signature on the checkpoint does not verify")]
    BadSignature(Algorithm),
    /// A key of the anchor did not sign it.
    #[error("the checkpoint lacks the {0} signature")]
    MissingSignature(Algorithm),
    /// Signing failed.
    #[error(transparent)]
    Signing(#[from] CryptoError),
}

impl CheckpointError {
    /// The stable code: `malformed`, `wrong_origin`, `bad_signature`, `missing_signature`,
    /// `signing_failed`.
    pub fn code(&self) -> &'static str {
        match self {
            CheckpointError::Malformed(_) => "malformed",
            CheckpointError::WrongOrigin { .. } => "wrong_origin",
            CheckpointError::BadSignature(_) => "bad_signature",
            CheckpointError::MissingSignature(_) => "missing_signature",
            CheckpointError::Signing(_) => "signing_failed",
        }
    }
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, each on its line.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The signed note: the text, a blank line, and one signature line per key.
    pub fn sign(&self, keys: &[&SigningKey]) -> Result<String, CheckpointError> {
        check_origin(&self.origin)?;
        let text = self.text();
        let mut note = format!("{text}\n");
        for key in keys {
            let mut signature = key_id(&self.origin, key.public_key()).to_vec();
            signature.extend(key.sign(text.as_bytes())?);
            note.push_str(&format!(
                "\u{2014} {} {}\n",
                self.origin,
                STANDARD.encode(signature)
            ));
        }
        Ok(note)
    }

    /// Parses `note` and verifies it: `origin` as expected, and for every algorithm among `keys`
    /// a valid signature by one of its keys under that name. Lines of other keys are ignored, as the note specification
    /// requires; a line of a known key that does not verify rejects the note.
    pub fn open(
        note: &str,
        origin: &str,
        keys: &[PublicKey],
    ) -> Result<Checkpoint, CheckpointError> {
        let malformed = |why: &str| CheckpointError::Malformed(why.to_owned());
        if note.len() > MAX_NOTE_LEN {
            return Err(malformed("longer than 64 KiB"));
        }
        if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
            return Err(malformed("control characters"));
        }
        let (text, signatures) = note
            .rsplit_once("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let text = format!("{text}\n");
        let checkpoint = Checkpoint::parse_text(&text)?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        let lines = signatures
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the note does not end in a newline"))?
            .split('\n')
            .collect::<Vec<_>>();
        if lines.is_empty() || lines.len() > MAX_SIGNATURES {
            return Err(malformed("1 to 16 signature lines"));
        }
        let mut verified = vec![false; keys.len()];
        for line in lines {
            let (name, encoded) = line
                .strip_prefix("\u{2014} ")
                .and_then(|rest| rest.split_once(' '))
                .ok_or_else(|| malformed("a signature line is not \"— name signature\""))?;
            let bytes = STANDARD
                .decode(encoded)
                .map_err(|_| malformed("a signature is not base64"))?;
            let (id, signature) = bytes
                .split_at_checked(4)
                .ok_or_else(|| malformed("a signature shorter than its key ID"))?;
            for (index, key) in keys.iter().enumerate() {
                if name == origin && id == key_id(origin, key) {
                    if !key.verify(text.as_bytes(), signature) {
                        return Err(CheckpointError::BadSignature(key.algorithm()));
                    }
                    verified[index] = true;
                }
            }
        }
        // Every algorithm of the anchor needs a signature by one of its keys of that algorithm
        // (one key each, or two generations during a CA key rotation's overlap).
        for (index, key) in keys.iter().enumerate() {
            let covered = keys
                .iter()
                .zip(&verified)
                .any(|(other, done)| *done && other.algorithm() == key.algorithm());
            if !covered {
                return Err(CheckpointError::MissingSignature(keys[index].algorithm()));
            }
        }
        Ok(checkpoint)
    }

    /// Parses the note text: exactly origin, size (decimal, no leading zero) and a base64
    /// SHA-256 root. Extension lines are refused: nothing of ours writes them.
    fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let malformed = |why: &str| CheckpointError::Malformed(why.to_owned());
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .unwrap_or(text)
            .split('\n')
            .collect();
        let [origin, size, root] = lines.as_slice() else {
            return Err(malformed("the text is not origin, size and root"));
        };
        check_origin(origin)?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(malformed("the size is not a decimal number"));
        }
        let size = size
            .parse()
            .map_err(|_| malformed("the size is too large"))?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| Hash::try_from(bytes).ok())
            .ok_or_else(|| malformed("the root is not a base64 SHA-256 hash"))?;
        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            size,
            root,
        })
    }
}

/// An origin (and key name): non-empty, without spaces or `+`.
fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.is_empty() || origin.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(CheckpointError::Malformed(
            "the origin is empty or holds a space or +".into(),
        ));
    }
    Ok(())
}

/// The 4-byte key ID of `key` under `name` (C2SP signed-note).
fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut hash = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0x0a]);
    hash = match key.algorithm() {
        Algorithm::Ed25519 => hash.chain_update([0x01]),
        Algorithm::MlDsa65 => hash.chain_update([0xff]).chain_update(ML_DSA_65_TYPE),
    };
    let digest = hash.chain_update(key.to_bytes()).finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle;
    use crate::crypto::Seed;

    const ORIGIN: &str = "agentseal.example/audit";

    fn key(algorithm: Algorithm, byte: u8) -> SigningKey {
        SigningKey::from_seed(algorithm, &Seed::from_slice(&[byte; 32]).unwrap())
    }

    fn checkpoint() -> Checkpoint {
        let leaves: Vec<_> = (0u8..5).map(|i| merkle::leaf_hash(&[i])).collect();
        Checkpoint {
            origin: ORIGIN.into(),
            size: 5,
            root: merkle::root(&leaves),
        }
    }

    #[test]
    fn a_hybrid_checkpoint_opens_with_both_keys_and_not_with_one_signature_missing() {
        let (ed, ml) = (key(Algorithm::Ed25519, 1), key(Algorithm::MlDsa65, 2));
        let keys = [ed.public_key().clone(), ml.public_key().clone()];
        let note = checkpoint().sign(&[&ed, &ml]).unwrap();
        assert!(note.starts_with(&format!("{ORIGIN}\n5\n")));
        assert_eq!(Checkpoint::open(&note, ORIGIN, &keys), Ok(checkpoint()));
        // An Ed25519-only verifier (the note specification's) accepts it too.
        assert_eq!(
            Checkpoint::open(&note, ORIGIN, &keys[..1]),
            Ok(checkpoint())
        );
        // Signed by Ed25519 alone: a hybrid anchor wants both.
        let ed_only = checkpoint().sign(&[&ed]).unwrap();
        assert_eq!(
            Checkpoint::open(&ed_only, ORIGIN, &keys),
            Err(CheckpointError::MissingSignature(Algorithm::MlDsa65))
        );
    }

    #[test]
    fn altered_checkpoints_are_refused() {
        let ed = key(Algorithm::Ed25519, 1);
        let keys = [ed.public_key().clone()];
        let note = checkpoint().sign(&[&ed]).unwrap();
        // Another size, another root, another origin, a foreign key.
        let bigger = note.replacen("\n5\n", "\n6\n", 1);
        assert_eq!(
            Checkpoint::open(&bigger, ORIGIN, &keys),
            Err(CheckpointError::BadSignature(Algorithm::Ed25519))
        );
        let mut other = checkpoint();
        other.root[0] ^= 1;
        let swapped = note.replacen(
            &STANDARD.encode(checkpoint().root),
            &STANDARD.encode(other.root),
            1,
        );
        assert!(Checkpoint::open(&swapped, ORIGIN, &keys).is_err());
        assert!(matches!(
            Checkpoint::open(&note, "other.example/audit", &keys),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        let foreign = [key(Algorithm::Ed25519, 9).public_key().clone()];
        assert_eq!(
            Checkpoint::open(&note, ORIGIN, &foreign),
            Err(CheckpointError::MissingSignature(Algorithm::Ed25519))
        );
        for bad in [
            "",
            "no blank line\n",
            &note.replacen("\n5\n", "\n05\n", 1),
            &note.replacen("\n5\n", "\n5\nextension\n", 1),
            &note.replace('\u{2014}', "-"),
            note.trim_end(),
        ] {
            assert!(
                matches!(
                    Checkpoint::open(bad, ORIGIN, &keys),
                    Err(CheckpointError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_ed25519_key_id_follows_the_note_specification() {
        // key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4], computed here by hand.
        let ed = key(Algorithm::Ed25519, 1);
        let mut input = ORIGIN.as_bytes().to_vec();
        input.push(0x0a);
        input.push(0x01);
        input.extend(ed.public_key().to_bytes());
        let digest = Sha256::digest(&input);
        assert_eq!(key_id(ORIGIN, ed.public_key()), digest[..4]);
        let note = checkpoint().sign(&[&ed]).unwrap();
        let line = note.lines().last().unwrap();
        let encoded = line.rsplit(' ').next().unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap()[..4], digest[..4]);
    }
}
