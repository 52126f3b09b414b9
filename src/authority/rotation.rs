//! Agent key rotation: new keys, a certificate for them, and the previous certificate revoked at
//! once or after a grace the operator gives.

use super::*;
use crate::keystore::KeyStoreError;

/// Longest grace a rotated certificate may keep working: a week.
pub const MAX_ROTATION_GRACE: i64 = 7 * 86_400;

/// What [`Installation::rotate_agent`] did.
#[derive(Debug, Clone)]
pub struct RotatedAgent {
    /// The certificate for the new keys, now current.
    pub certificate: AgentCertificate,
    /// The certificate it replaces.
    pub previous_serial: String,
    /// When the previous certificates are revoked (now, or after the grace).
    pub previous_revoked_at: i64,
    /// Every certificate of the old keys (the current one and earlier renewals), revoked.
    pub revoked_serials: Vec<String>,
    /// The new keys' generation.
    pub generation: u32,
}

impl Installation {
    /// Gives `agent_id` new keys (`keys`, or the algorithms it has) and a certificate for them,
    /// and revokes every earlier certificate of the agent (the current one and earlier renewals
    /// of its keys), at once or `grace` seconds from now: tokens signed
    /// with the old keys stop verifying then. The new keys are written beside the old ones and
    /// made current in one transaction; the old seeds are deleted after it (a crash between
    /// leaves an unused seed, never an agent without keys).
    ///
    /// The new certificate carries the metadata of the current one, which must verify under
    /// the CA's trusted keys; `meta` replaces it (and so also re-certifies an agent whose
    /// certificate the CA no longer vouches for, such as one signed by retired keys).
    pub fn rotate_agent(
        &self,
        agent_id: &str,
        keys: Option<KeyChoice>,
        grace: i64,
        ttl: Option<i64>,
        meta: Option<BTreeMap<String, String>>,
    ) -> Result<RotatedAgent, ServiceError> {
        if !(0..=MAX_ROTATION_GRACE).contains(&grace) {
            return Err(ServiceError::InvalidInput(format!(
                "the grace must be between 0 and {} days, not {grace} s",
                MAX_ROTATION_GRACE / 86_400
            )));
        }
        let agent = self.agent(agent_id)?;
        let current = self.current_certificate_record(&agent)?;
        // The metadata carried over is what the CA certified, unless the operator gives it.
        let meta = match meta {
            Some(meta) => meta,
            None => self.signed_current(agent_id, &current)?.claims.meta,
        };
        let algorithms: Vec<Algorithm> = match keys {
            Some(choice) => choice.algorithms().to_vec(),
            None => agent
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_name(a))
                .collect(),
        };
        let generation = agent.key_generation.checked_add(1).ok_or_else(|| {
            ServiceError::CorruptRecord(format!("agent {agent_id}'s key generation"))
        })?;
        let store = self.key_store()?;
        let mut signers = Vec::new();
        for &algorithm in &algorithms {
            let name = KeyName::agent_key(&self.install_id, agent_id, algorithm, generation);
            signers.push(agents::create_key(store.as_ref(), &name, algorithm)?);
        }
        let public: Vec<PublicKey> = signers.iter().map(|k| k.public_key().clone()).collect();
        let now = clock::now();
        let (certificate, record) = self.issue_certificate(agent_id, &public, meta, ttl, now)?;
        let revoked_at = now.saturating_add(grace);
        let reason = "superseded: the agent's keys were rotated";
        let names: Vec<String> = algorithms.iter().map(|a| a.name().to_owned()).collect();
        let rotated = self.store.rotate_agent(
            &record,
            &names,
            generation,
            &current.serial,
            revoked_at,
            reason,
        )?;
        let Some(revoked) = rotated else {
            for &algorithm in &algorithms {
                store.delete(&KeyName::agent_key(
                    &self.install_id,
                    agent_id,
                    algorithm,
                    generation,
                ))?;
            }
            return Err(ServiceError::InvalidInput(format!(
                "agent {agent_id}'s keys or certificate changed meanwhile: nothing changed"
            )));
        };
        // The old seeds sign nothing any more; their certificate still verifies until revoked.
        for algorithm in Algorithm::ALL {
            let old =
                KeyName::agent_key(&self.install_id, agent_id, algorithm, agent.key_generation);
            match store.delete(&old) {
                Ok(()) | Err(KeyStoreError::NotFound(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, "an old key of a rotated agent was not deleted")
                }
            }
        }
        self.cache_signers(&format!("agent:{agent_id}"), signers);
        if grace == 0 {
            for serial in &revoked {
                self.signal(
                    SignalKind::CertificateRevoked,
                    Some(agent_id),
                    serde_json::json!({ "serial": serial, "reason": reason }),
                );
            }
        }
        Ok(RotatedAgent {
            certificate,
            previous_serial: current.serial,
            previous_revoked_at: revoked_at,
            revoked_serials: revoked,
            generation,
        })
    }
}
