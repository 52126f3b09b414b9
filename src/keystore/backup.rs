//! Backups of an installation's key store entries: every seed, in one file encrypted with `age`
//! to an operator passphrase (scrypt) or to an `age` X25519 recipient, so keys kept where they do
//! not survive a reboot (kernel keyutils) can be put back.
//!
//! The plaintext is JSON, `{"format": "agentseal-key-backup/1", "install_id", "ca_id",
//! "created_at", "entries": [{"owner", "kind", "seed"}]}` (seeds base64url), and never leaves
//! memory unencrypted: it is built and read in zeroized buffers.

use std::io::{Read as _, Write as _};
use std::str::FromStr as _;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{KeyName, Passphrase};
use crate::crypto::Seed;

/// The format tag inside a backup.
pub const FORMAT: &str = "agentseal-key-backup/1";
/// Largest backup read: far more than any installation's seeds.
pub const MAX_BACKUP_LEN: u64 = 16 << 20;

/// Who can open a backup: whoever knows the passphrase, or holds the identity of the recipient.
pub enum BackupKey {
    /// An operator passphrase (scrypt, as `age -p`).
    Passphrase(Passphrase),
    /// An `age` X25519 recipient (`age1...`): the backup opens with its identity.
    Recipient(Box<age::x25519::Recipient>),
}

/// What opens a backup.
pub enum BackupSecret {
    /// The passphrase it was made with.
    Passphrase(Passphrase),
    /// The identity (`AGE-SECRET-KEY-1...`) of the recipient it was made for.
    Identity(Box<age::x25519::Identity>),
}

impl BackupKey {
    /// An `age1...` recipient.
    pub fn recipient(text: &str) -> Result<Self, BackupError> {
        age::x25519::Recipient::from_str(text.trim())
            .map(|r| BackupKey::Recipient(Box::new(r)))
            .map_err(|_| BackupError::BadKey("not an age X25519 recipient (age1...)".into()))
    }
}

impl BackupSecret {
    /// The identity in an `age` identity file: its first `AGE-SECRET-KEY-1` line.
    pub fn identity_file(text: &str) -> Result<Self, BackupError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .ok_or_else(|| {
                BackupError::BadKey("no AGE-SECRET-KEY-1 line in the identity file".into())
            })?;
        age::x25519::Identity::from_str(line)
            .map(|i| BackupSecret::Identity(Box::new(i)))
            .map_err(|_| BackupError::BadKey("not an age X25519 identity".into()))
    }
}

/// Why a backup could not be made or read. Messages never hold a seed or passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Wrong passphrase or identity, or not an `age` file.
    #[error("cannot decrypt the backup: wrong passphrase or identity, or not an agentseal backup")]
    Decrypt,
    /// Decrypted, but not a backup this version reads.
    #[error("the backup is malformed: {0}")]
    Malformed(String),
    /// A recipient or identity that is not one.
    #[error("{0}")]
    BadKey(String),
    /// Encryption failed.
    #[error("cannot encrypt the backup: {0}")]
    Encrypt(String),
}

/// One key store entry: whose, which kind, and the seed.
pub struct BackupEntry {
    /// `ca`, `agent:<id>`, `webhook`, `audit`.
    pub owner: String,
    /// An algorithm name, `hmac-sha256` or `checkpoint-mark`.
    pub kind: String,
    /// The secret.
    pub seed: Seed,
}

impl BackupEntry {
    /// The key name of this entry in installation `install_id`.
    pub fn name(&self, install_id: &str) -> KeyName {
        KeyName {
            installation: install_id.to_owned(),
            owner: self.owner.clone(),
            kind: self.kind.clone(),
        }
    }
}

/// The contents of a backup.
pub struct KeyBackup {
    /// The installation's random id (namespaces its key store entries).
    pub install_id: String,
    /// Its CA id, to tell the operator which installation a backup is of.
    pub ca_id: String,
    /// When it was made (Unix time).
    pub created_at: i64,
    /// Every entry.
    pub entries: Vec<BackupEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    format: String,
    install_id: String,
    ca_id: String,
    created_at: i64,
    entries: Vec<PlainEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainEntry {
    owner: String,
    kind: String,
    #[serde(with = "zeroized")]
    seed: Zeroizing<String>,
}

/// Serde for a zeroized string (the seed's text never sits in a plain `String`).
mod zeroized {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(text: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
        String::deserialize(d).map(Zeroizing::new)
    }
}

impl KeyBackup {
    /// The backup, encrypted for `key`.
    pub fn seal(&self, key: &BackupKey) -> Result<Vec<u8>, BackupError> {
        let plain = Plain {
            format: FORMAT.to_owned(),
            install_id: self.install_id.clone(),
            ca_id: self.ca_id.clone(),
            created_at: self.created_at,
            entries: self
                .entries
                .iter()
                .map(|e| PlainEntry {
                    owner: e.owner.clone(),
                    kind: e.kind.clone(),
                    seed: Zeroizing::new(crate::jose::b64(e.seed.expose())),
                })
                .collect(),
        };
        let json = Zeroizing::new(serde_json::to_vec(&plain).expect("a backup serializes"));
        let encryptor = match key {
            BackupKey::Passphrase(passphrase) => {
                age::Encryptor::with_user_passphrase(passphrase.secret())
            }
            BackupKey::Recipient(recipient) => age::Encryptor::with_recipients(std::iter::once(
                recipient.as_ref() as &dyn age::Recipient,
            ))
            .map_err(|e| BackupError::Encrypt(e.to_string()))?,
        };
        let mut cipher = Vec::new();
        let mut writer = encryptor
            .wrap_output(&mut cipher)
            .map_err(|e| BackupError::Encrypt(e.to_string()))?;
        writer
            .write_all(&json)
            .and_then(|()| writer.finish().map(drop))
            .map_err(|e| BackupError::Encrypt(e.to_string()))?;
        Ok(cipher)
    }

    /// Decrypts and reads a backup.
    pub fn open(cipher: &[u8], secret: &BackupSecret) -> Result<KeyBackup, BackupError> {
        let decryptor = age::Decryptor::new(cipher).map_err(|_| BackupError::Decrypt)?;
        let scrypt;
        let identity: &dyn age::Identity = match secret {
            BackupSecret::Passphrase(passphrase) => {
                scrypt = age::scrypt::Identity::new(passphrase.secret());
                &scrypt
            }
            BackupSecret::Identity(identity) => identity.as_ref(),
        };
        let reader = decryptor
            .decrypt(std::iter::once(identity))
            .map_err(|_| BackupError::Decrypt)?;
        let mut json = Zeroizing::new(Vec::new());
        reader
            .take(MAX_BACKUP_LEN)
            .read_to_end(&mut json)
            .map_err(|_| BackupError::Decrypt)?;
        let plain: Plain = serde_json::from_slice(&json)
            .map_err(|e| BackupError::Malformed(format!("not a backup ({})", e.classify_name())))?;
        if plain.format != FORMAT {
            return Err(BackupError::Malformed(format!(
                "format {:?}, this version reads {FORMAT:?}",
                plain.format
            )));
        }
        let entries = plain
            .entries
            .into_iter()
            .map(|e| {
                let bytes = Zeroizing::new(crate::jose::b64_decode(&e.seed).map_err(|_| {
                    BackupError::Malformed(format!(
                        "the seed of {}#{} is not base64url",
                        e.owner, e.kind
                    ))
                })?);
                let seed = Seed::from_slice(&bytes).ok_or_else(|| {
                    BackupError::Malformed(format!(
                        "the seed of {}#{} is not 32 bytes",
                        e.owner, e.kind
                    ))
                })?;
                Ok(BackupEntry {
                    owner: e.owner,
                    kind: e.kind,
                    seed,
                })
            })
            .collect::<Result<_, BackupError>>()?;
        Ok(KeyBackup {
            install_id: plain.install_id,
            ca_id: plain.ca_id,
            created_at: plain.created_at,
            entries,
        })
    }
}

/// The name of a `serde_json` error's category, without the input it quotes.
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> KeyBackup {
        KeyBackup {
            install_id: "inst".into(),
            ca_id: "urn:agentseal:ca:inst".into(),
            created_at: 1_800_000_000,
            entries: vec![BackupEntry {
                owner: "ca".into(),
                kind: "Ed25519".into(),
                seed: Seed::from_slice(&[7; 32]).unwrap(),
            }],
        }
    }

    #[test]
    fn a_backup_opens_with_its_passphrase_or_identity_only_and_holds_no_seed_in_clear() {
        let passphrase = || BackupKey::Passphrase(Passphrase::new("correct horse".into()));
        let sealed = backup().seal(&passphrase()).unwrap();
        let seed_text = crate::jose::b64(&[7; 32]);
        assert!(!String::from_utf8_lossy(&sealed).contains(&seed_text));
        assert!(!sealed.windows(32).any(|w| w == [7; 32]));
        let opened = KeyBackup::open(
            &sealed,
            &BackupSecret::Passphrase(Passphrase::new("correct horse".into())),
        )
        .unwrap();
        assert_eq!(opened.install_id, "inst");
        assert_eq!(opened.entries[0].seed.expose(), &[7; 32]);
        let wrong = KeyBackup::open(
            &sealed,
            &BackupSecret::Passphrase(Passphrase::new("wrong".into())),
        );
        assert!(matches!(wrong, Err(BackupError::Decrypt)));

        let identity = age::x25519::Identity::generate();
        let recipient = BackupKey::recipient(&identity.to_public().to_string()).unwrap();
        let sealed = backup().seal(&recipient).unwrap();
        let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned();
        let file = format!("# created: now\n{secret}\n");
        let opened =
            KeyBackup::open(&sealed, &BackupSecret::identity_file(&file).unwrap()).unwrap();
        assert_eq!(opened.entries.len(), 1);
        let other = age::x25519::Identity::generate();
        let other = age::secrecy::ExposeSecret::expose_secret(&other.to_string()).to_owned();
        assert!(matches!(
            KeyBackup::open(&sealed, &BackupSecret::identity_file(&other).unwrap()),
            Err(BackupError::Decrypt)
        ));
        assert!(matches!(
            KeyBackup::open(b"not age", &BackupSecret::identity_file(&file).unwrap()),
            Err(BackupError::Decrypt)
        ));
    }
}
