//! Automatic certificate renewal in running servers: each agent's certificate is renewed (same
//! keys, same lifetime) once a share of its lifetime has passed, as SPIRE renews at half, so
//! that certificates can be short-lived without anyone running `cert renew`.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;

/// The share of a certificate's lifetime after which servers renew it by default.
pub const DEFAULT_RENEWAL_SHARE: f64 = 0.5;
/// How often a server looks for certificates due (calls renew a due certificate at once too).
pub const RENEWAL_TICK: std::time::Duration = std::time::Duration::from_secs(30);

/// The renewal share of this process, as `f64` bits; 0 (the bits of 0.0) when renewal is off.
#[derive(Debug, Default)]
pub(super) struct RenewalShare(AtomicU64);

impl RenewalShare {
    fn get(&self) -> Option<f64> {
        let share = f64::from_bits(self.0.load(Ordering::Relaxed));
        (share > 0.0).then_some(share)
    }
}

impl Installation {
    /// Turns automatic renewal on for this process (a server): certificates are renewed once
    /// `share` (between 0 and 1, exclusive) of their lifetime has passed.
    pub fn renew_automatically(&self, share: f64) -> Result<(), ServiceError> {
        if !(share > 0.0 && share < 1.0) {
            return Err(ServiceError::InvalidInput(format!(
                "the renewal point is a share of the lifetime between 0 and 1, not {share}"
            )));
        }
        self.renewal.0.store(share.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// When a certificate issued at `iat` and expiring at `exp` is due for renewal, if this
    /// process renews automatically.
    pub fn renewal_due_at(&self, iat: i64, exp: i64) -> Option<i64> {
        let share = self.renewal.get()?;
        Some(iat.saturating_add((exp.saturating_sub(iat) as f64 * share) as i64))
    }

    /// Renews `agent_id`'s certificate if it is due at `now`: a new certificate for the same keys
    /// and lifetime, made current unless another process renewed first. A revoked or expired
    /// certificate is never renewed (an expired one needs the operator: `cert renew`).
    pub fn renew_if_due(
        &self,
        agent_id: &str,
        now: i64,
    ) -> Result<Option<AgentCertificate>, ServiceError> {
        let agent = self.agent(agent_id)?;
        let current = self.current_certificate_record(&agent)?;
        // The recorded times say cheaply whether to look closer (the sweep asks for every agent).
        let recorded_due = self.renewal_due_at(current.issued_at, current.expires_at);
        if recorded_due.is_none_or(|due| now < due) {
            return Ok(None);
        }
        // Only what the CA certified is re-certified (a database edit cannot name other keys),
        // at the times it certified.
        let verified = self.signed_current(agent_id, &current)?;
        let (claims, keys) = (verified.claims, verified.keys);
        let due = self.renewal_due_at(claims.iat, claims.exp);
        if due.is_none_or(|due| now < due) || now >= claims.exp {
            return Ok(None);
        }
        if RevocationSource::certificate_revocation(self.store.as_ref(), &claims.jti, now)
            .map_err(ServiceError::Unverifiable)?
            .is_some()
        {
            return Ok(None);
        }
        let lifetime = claims
            .exp
            .saturating_sub(claims.iat)
            .min(self.limits()?.max_cert_ttl);
        let (certificate, record) =
            self.issue_certificate(agent_id, &keys, claims.meta, Some(lifetime), now)?;
        if !self
            .store
            .add_certificate_if_current(&record, &current.serial)?
        {
            return Ok(None);
        }
        let mut event = AuditEvent::new("server", "server.cert.renew", audit::Decision::Allowed);
        event.details.insert("agent_id".into(), agent_id.into());
        event
            .details
            .insert("previous_serial".into(), current.serial.into());
        event
            .details
            .insert("serial".into(), certificate.claims.jti.clone().into());
        if let Err(error) = self.audit(&event) {
            tracing::error!(%error, agent = agent_id, "a renewal was not recorded in the audit log");
        }
        tracing::info!(agent = agent_id, serial = %certificate.claims.jti, "certificate renewed");
        Ok(Some(certificate))
    }

    /// Renews every due certificate of `agent` (or of all agents) now; errors are logged, one
    /// agent's never stops the others'. Returns how many were renewed.
    pub fn renew_due(&self, agent: Option<&str>) -> usize {
        let agents = match agent {
            Some(agent) => vec![agent.to_owned()],
            None => match self.store.agents() {
                Ok(agents) => agents.into_iter().map(|a| a.agent_id).collect(),
                Err(error) => {
                    tracing::warn!(%error, "cannot list agents to renew");
                    return 0;
                }
            },
        };
        let now = clock::now();
        agents
            .iter()
            .filter(|agent| match self.renew_if_due(agent, now) {
                Ok(renewed) => renewed.is_some(),
                Err(error) => {
                    tracing::warn!(%error, agent = %agent, "automatic renewal failed");
                    false
                }
            })
            .count()
    }

    /// Looks for due certificates of `agent` (or of all agents) every [`RENEWAL_TICK`] until
    /// `shutdown`, if this process renews automatically: idle agents' certificates are renewed
    /// too, not only those of agents that call.
    pub fn spawn_renewal(
        self: &Arc<Self>,
        agent: Option<String>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let installation = self.clone();
        tokio::spawn(async move {
            if installation.renewal.get().is_none() {
                return;
            }
            loop {
                let this = installation.clone();
                let agent = agent.clone();
                let _ = tokio::task::spawn_blocking(move || this.renew_due(agent.as_deref())).await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RENEWAL_TICK) => {}
                }
            }
        })
    }
}
