//! The CA's keys over time: the generation it signs with, earlier generations verifiers still
//! trust during a rotation's overlap, and every generation it ever had (the audit log's
//! records and checkpoints are signed by the keys current at the time).
//!
//! In the database: `ca_jwks` (the current keys), `ca_generation`, `ca_previous_jwks` (the
//! earlier generations not retired, newest first), `ca_history_jwks` (every key ever), and
//! `ca_rotation` (the current keys, endorsed by the previous generation, for verifiers that
//! follow a hub). Seeds of every generation stay in the key store until `destroy`.

use super::*;
use crate::jose::{self, EdAlgName};
use crate::token::trust::{ROTATION_TYP, RotationClaims};

/// The meta key that changes whenever the CA's keys do.
pub(super) const CA_REVISION: &str = "ca_revision";
/// Most earlier generations trusted at once (retire old ones).
pub const MAX_PREVIOUS_GENERATIONS: usize = 8;
/// How often a running process looks for a rotation or retirement by another process.
pub const CA_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The CA as one process knows it. The anchor lives for the rest of the process (it is leaked
/// on each change, which happens only when an operator rotates or retires keys), so that
/// verifiers borrow it without holding a lock.
#[derive(Debug, Clone)]
pub(super) struct CaState {
    anchor: &'static TrustAnchor,
    keys: Arc<CaKeys>,
    /// The database's `ca_revision` when read (shared: the state is cloned on every call).
    revision: Option<Arc<str>>,
}

impl CaState {
    pub fn new(ca_id: String, keys: CaKeys, revision: Option<String>) -> Self {
        let anchor = Box::leak(Box::new(TrustAnchor {
            ca_id,
            keys: keys.trusted(),
        }));
        CaState {
            anchor,
            keys: Arc::new(keys),
            revision: revision.map(Arc::from),
        }
    }
}

/// The CA's keys as this process knows them.
#[derive(Debug, Clone)]
pub(super) struct CaKeys {
    /// The generation it signs with.
    pub current: Vec<PublicKey>,
    /// Its number (0: the keys made at `init`).
    pub generation: u32,
    /// Earlier generations still trusted, newest first.
    pub previous: Vec<PreviousCaKeys>,
}

/// An earlier generation of CA keys, trusted until retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PreviousCaKeys {
    /// Its number.
    pub generation: u32,
    /// Its public keys.
    pub keys: JwkSet,
}

/// What [`Installation::rotate_ca`] did.
#[derive(Debug, Clone)]
pub struct CaRotation {
    /// The new generation's number.
    pub generation: u32,
    /// Its keys' thumbprints.
    pub key_ids: Vec<String>,
    /// The previous generation's keys' thumbprints (trusted until retired).
    pub previous_key_ids: Vec<String>,
}

fn parse_keys(set: &JwkSet) -> Option<Vec<PublicKey>> {
    set.keys.iter().map(|k| k.to_public_key().ok()).collect()
}

impl CaKeys {
    /// Reads the CA's keys from the database; `Err(what)` names what is missing or invalid.
    pub fn read(store: &Store) -> Result<CaKeys, &'static str> {
        let meta = |key| store.meta(key).map_err(|_| key);
        let current: JwkSet = meta("ca_jwks")?
            .and_then(|j| serde_json::from_str(&j).ok())
            .ok_or("ca_jwks")?;
        let current = parse_keys(&current)
            .filter(|k| !k.is_empty())
            .ok_or("ca_jwks")?;
        let generation = match meta("ca_generation")? {
            None => 0,
            Some(n) => n.parse().map_err(|_| "ca_generation")?,
        };
        let previous: Vec<PreviousCaKeys> = match meta("ca_previous_jwks")? {
            None => Vec::new(),
            Some(j) => serde_json::from_str(&j).map_err(|_| "ca_previous_jwks")?,
        };
        if previous.len() > MAX_PREVIOUS_GENERATIONS
            || previous.iter().any(|p| {
                p.generation >= generation
                    || parse_keys(&p.keys).is_none_or(|k| k.is_empty() || k.len() > 4)
            })
        {
            return Err("ca_previous_jwks");
        }
        Ok(CaKeys {
            current,
            generation,
            previous,
        })
    }

    /// Every key verifiers trust: current, then previous generations.
    pub fn trusted(&self) -> Vec<PublicKey> {
        let mut keys = self.current.clone();
        for generation in &self.previous {
            keys.extend(parse_keys(&generation.keys).unwrap_or_default());
        }
        keys
    }
}

impl Installation {
    /// The CA as of the database's last change to its keys, looked for at most every
    /// [`CA_RECHECK`]: a server follows `ca rotate` and `ca retire` run by the CLI.
    fn ca_state(&self) -> CaState {
        let due = {
            let mut checked = self.ca_checked.lock().unwrap_or_else(|p| p.into_inner());
            let due = checked.elapsed() >= CA_RECHECK;
            if due {
                *checked = std::time::Instant::now();
            }
            due
        };
        if due {
            let revision = self.store.meta(CA_REVISION).ok().flatten();
            let current = self.ca.read().unwrap_or_else(|p| p.into_inner()).clone();
            if revision.as_deref() != current.revision.as_deref() {
                match CaKeys::read(&self.store).and_then(|keys| {
                    self.check_ca_keys(&keys)
                        .map_err(|_| "keys the key store does not hold")?;
                    Ok(keys)
                }) {
                    Ok(keys) => {
                        let state = CaState::new(current.anchor.ca_id.clone(), keys, revision);
                        tracing::info!(
                            generation = state.keys.generation,
                            "the CA's keys changed; following"
                        );
                        *self.ca.write().unwrap_or_else(|p| p.into_inner()) = state.clone();
                        return state;
                    }
                    Err(what) => tracing::error!(what, "the CA's keys changed but cannot be read"),
                }
            }
            return current;
        }
        self.ca.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks the CA's keys as the database records them against the key store's seeds: the
    /// current generation's keys and every earlier one still trusted must derive from the seeds
    /// of their generation, and no later generation may exist (a database put back to before a
    /// rotation). Whoever can write the database cannot make a server trust or sign with keys
    /// the key store never held.
    pub(super) fn check_ca_keys(&self, ca: &CaKeys) -> Result<(), ServiceError> {
        let store = self.key_store()?;
        let replaced = |why: String| ServiceError::CaKeysReplaced(why);
        let derive = |algorithm: Algorithm, generation: u32| -> Result<PublicKey, ServiceError> {
            let name = KeyName::ca_key(&self.install_id, algorithm, generation);
            match store.get(&name) {
                Ok(seed) => Ok(SigningKey::from_seed(algorithm, &seed).public_key().clone()),
                Err(keystore::KeyStoreError::NotFound(_)) => {
                    Err(self.keys_missing(vec![name.user()]))
                }
                Err(e) => Err(e.into()),
            }
        };
        for key in &ca.current {
            if derive(key.algorithm(), ca.generation)? != *key {
                return Err(replaced(format!(
                    "generation {} is not the key store's",
                    ca.generation
                )));
            }
        }
        for earlier in &ca.previous {
            for key in parse_keys(&earlier.keys).unwrap_or_default() {
                if derive(key.algorithm(), earlier.generation).ok().as_ref() != Some(&key) {
                    return Err(replaced(format!(
                        "generation {} is not the key store's",
                        earlier.generation
                    )));
                }
            }
        }
        self.mark_ca_generation(ca.generation)?;
        if let Some(first) = ca.current.first() {
            let later = KeyName::ca_key(&self.install_id, first.algorithm(), ca.generation + 1);
            if store.get(&later).is_ok() {
                return Err(replaced(format!(
                    "the key store holds generation {} (the database was put back to before a rotation)",
                    ca.generation + 1
                )));
            }
        }
        Ok(())
    }

    /// With a shared database, checks `generation` against the highest CA generation this
    /// replica has seen, kept in its own key store, and raises that mark to it. The sealed seeds
    /// of a later generation live in the database, so a database put back to before a rotation
    /// takes them along and "no later generation exists" proves nothing there; the mark still
    /// knows. With SQLite the key store holds the seeds themselves and this is not needed.
    fn mark_ca_generation(&self, generation: u32) -> Result<(), ServiceError> {
        if !matches!(self.store.location(), crate::store::Location::Postgres(_)) {
            return Ok(());
        }
        let store = self.key_store()?;
        let name = KeyName::replica_ca_generation(&self.install_id);
        let seen = match store.get(&name) {
            Ok(mark) => {
                let bytes = mark.expose();
                Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            Err(keystore::KeyStoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match seen {
            Some(seen) if seen > generation => Err(ServiceError::CaKeysReplaced(format!(
                "this replica has seen CA generation {seen}, the database records {generation} (it was put back to before a rotation)"
            ))),
            Some(seen) if seen == generation => Ok(()),
            _ => {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&generation.to_le_bytes());
                let mark = crate::crypto::Seed::from_slice(&bytes).expect("32 bytes");
                Ok(store.put(&name, &mark)?)
            }
        }
    }

    /// The trust anchor (see [`Self::trust_anchor`]).
    pub(super) fn anchor(&self) -> &'static TrustAnchor {
        self.ca_state().anchor
    }

    /// The CA's keys by generation.
    pub(super) fn ca_keys(&self) -> Arc<CaKeys> {
        self.ca_state().keys
    }

    /// The CA's signing keys (the current generation), loaded once per process.
    pub(super) fn ca_signers(&self) -> Result<Arc<Vec<SigningKey>>, ServiceError> {
        let keys = self.ca_keys();
        self.signers("ca", &keys.current, |alg| {
            KeyName::ca_key(&self.install_id, alg, keys.generation)
        })
    }

    /// Every CA public key this installation ever had, as recorded (for checking restored
    /// seeds; the audit log's anchor comes from the key store instead).
    pub(super) fn ca_history(&self) -> Result<Vec<PublicKey>, ServiceError> {
        let history = self.store.meta("ca_history_jwks")?;
        let set: Option<JwkSet> = history.and_then(|j| serde_json::from_str(&j).ok());
        Ok(set
            .and_then(|s| parse_keys(&s))
            .unwrap_or_else(|| self.anchor().keys.clone()))
    }

    /// The CA's generation number.
    pub fn ca_generation(&self) -> u32 {
        self.ca_keys().generation
    }

    /// The statement by which the previous generation endorsed the current keys (none before
    /// the first rotation): verifiers pinned to the old keys accept the new ones on its word.
    pub fn ca_rotation_statement(&self) -> Result<Option<String>, ServiceError> {
        Ok(self.store.meta("ca_rotation")?)
    }

    /// Makes the next generation of CA keys (same algorithms) and signs with it from now on.
    /// The current generation stays trusted (published, and accepted on certificates, lists and
    /// tokens it signed) until [`Self::retire_ca_keys`]; it signs a statement endorsing the new
    /// keys, for verifiers that follow the hub. Servers running on the installation pick the
    /// new keys up when restarted.
    pub fn rotate_ca(&self) -> Result<CaRotation, ServiceError> {
        let ca = self.ca_keys();
        let old = self.ca_signers()?;
        let generation = ca.generation + 1;
        let store = self.key_store()?;
        let mut public = Vec::new();
        for key in ca.current.iter() {
            let algorithm = key.algorithm();
            let name = KeyName::ca_key(&self.install_id, algorithm, generation);
            public.push(
                agents::create_key(store.as_ref(), &name, algorithm)?
                    .public_key()
                    .clone(),
            );
        }
        let key_ids: Vec<String> = public.iter().map(jose::thumbprint).collect();
        let claims = RotationClaims {
            iss: self.anchor().ca_id.clone(),
            generation,
            keys: key_ids.clone(),
            iat: clock::now(),
        };
        let refs: Vec<&SigningKey> = old.iter().collect();
        let statement = jose::sign(&claims, ROTATION_TYP, &refs, EdAlgName::EdDsa)?;
        let mut previous = vec![PreviousCaKeys {
            generation: ca.generation,
            keys: JwkSet {
                keys: ca.current.iter().map(Jwk::from_public_key).collect(),
            },
        }];
        previous.extend(ca.previous.iter().cloned());
        let mut history = self.ca_history()?;
        history.extend(public.iter().cloned());
        let set = |keys: &[PublicKey]| {
            serde_json::to_string(&JwkSet {
                keys: keys.iter().map(Jwk::from_public_key).collect(),
            })
            .expect("JWKS serializes")
        };
        self.store.set_meta(&[
            ("ca_jwks", &set(&public)),
            ("ca_generation", &generation.to_string()),
            (
                "ca_previous_jwks",
                &serde_json::to_string(&previous).expect("keys serialize"),
            ),
            ("ca_history_jwks", &set(&history)),
            ("ca_rotation", &statement),
            (CA_REVISION, &clock::random_id()?),
        ])?;
        self.mark_ca_generation(generation)?;
        Ok(CaRotation {
            generation,
            key_ids,
            previous_key_ids: ca.current.iter().map(jose::thumbprint).collect(),
        })
    }

    /// Stops trusting the earlier generation that holds the key `kid`: certificates, lists and
    /// tokens it signed stop verifying. Its seeds stay in the key store (the audit log's older
    /// records are signed with them). The current generation cannot be retired: rotate first.
    /// Agents whose current certificate was signed by a retiring generation are named and the
    /// retirement refused, unless `force`: their certificates would stop verifying and could
    /// not be renewed (renew them first).
    pub fn retire_ca_keys(&self, kid: &str, force: bool) -> Result<PreviousCaKeys, ServiceError> {
        let ca = self.ca_keys();
        if ca.current.iter().any(|k| jose::thumbprint(k) == kid) {
            return Err(ServiceError::InvalidInput(format!(
                "{kid} is a key of the current CA generation: rotate first (`agentseal ca rotate`)"
            )));
        }
        let Some(index) = ca.previous.iter().position(|generation| {
            parse_keys(&generation.keys)
                .unwrap_or_default()
                .iter()
                .any(|k| jose::thumbprint(k) == kid)
        }) else {
            return Err(ServiceError::InvalidInput(format!(
                "no trusted earlier CA key {kid}: see `agentseal status` (key_ids, previous_key_ids)"
            )));
        };
        let mut previous = ca.previous.clone();
        let retired = previous.remove(index);
        let remaining = TrustAnchor {
            ca_id: self.anchor().ca_id.clone(),
            keys: CaKeys {
                current: ca.current.clone(),
                generation: ca.generation,
                previous: previous.clone(),
            }
            .trusted(),
        };
        let mut stranded = Vec::new();
        for agent in self.store.agents()? {
            if let Ok(record) = self.current_certificate_record(&agent)
                && AgentCertificate::verify_signed(&record.encoded, self.anchor()).is_ok()
                && AgentCertificate::verify_signed(&record.encoded, &remaining).is_err()
            {
                stranded.push(agent.agent_id);
            }
        }
        if !stranded.is_empty() && !force {
            return Err(ServiceError::InvalidInput(format!(
                "these agents are still certified by the keys to retire: {}; renew them first \
                 (`agentseal cert renew ID`), or pass --force (their certificates then stop \
                 verifying, and only `agent rotate --meta` can re-certify them)",
                stranded.join(", ")
            )));
        }
        self.store.set_meta(&[
            (
                "ca_previous_jwks",
                &serde_json::to_string(&previous).expect("keys serialize"),
            ),
            (CA_REVISION, &clock::random_id()?),
        ])?;
        Ok(retired)
    }
}
