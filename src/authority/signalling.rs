//! The installation's side of [`crate::signals`]: where webhooks go, which events it records
//! for them, the rule that revokes an agent after repeated rejections, and the task in a
//! long-running server that delivers them.
//!
//! Events are recorded only while a webhook is configured; recording one is a local SQLite
//! write and never fails the operation that caused it (a failure is logged). The webhook secret
//! lives in the key store beside the signing keys, never in the database.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::*;
use crate::audit::Decision as AuditDecision;
use crate::signals::{
    Dispatcher, OpenOutbox, Outbox, OutboxCounts, Signal, SignalError, SignalKind, WebhookConfig,
    WebhookSecret,
};

pub(super) const WEBHOOK_URL: &str = "webhook_url";
/// Changes whenever the webhook is set, so a running server notices a new URL or secret.
const WEBHOOK_REVISION: &str = "webhook_revision";
const AUTO_REVOKE: &str = "auto_revoke";

/// How often a running server looks for a changed webhook configuration.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// How long delivered webhooks are kept in the outbox before they are pruned.
const DELIVERED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long webhooks given up on are kept (for `signals retry`) before they are pruned.
const GIVEN_UP_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest string taken from a rejected token into a signal: it is attacker-chosen.
const MAX_CLAIMED: usize = 256;

/// The optional rule that revokes an agent's certificates once its evidence has been rejected
/// `rejections` times within `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AutoRevokeRule {
    /// Rejections that trigger the revocation (at least 1).
    pub rejections: u32,
    /// The sliding window they are counted in, in seconds.
    pub window_seconds: i64,
}

impl AutoRevokeRule {
    fn encode(self) -> String {
        format!("{}/{}", self.rejections, self.window_seconds)
    }

    fn decode(text: &str) -> Option<AutoRevokeRule> {
        let (count, window) = text.split_once('/')?;
        let rule = AutoRevokeRule {
            rejections: count.parse().ok()?,
            window_seconds: window.parse().ok()?,
        };
        rule.check().ok().map(|()| rule)
    }

    fn check(self) -> Result<(), ServiceError> {
        if self.rejections == 0 || !(1..=30 * 24 * 3600).contains(&self.window_seconds) {
            return Err(ServiceError::InvalidInput(
                "auto-revoke needs at least 1 rejection and a window of 1 s to 30 days".into(),
            ));
        }
        Ok(())
    }
}

/// What the operator sees of the signals set-up. Never includes the secret.
#[derive(Debug, Clone, Serialize)]
pub struct SignalsStatus {
    /// Where webhooks go; `None` when none is configured (no events are recorded then).
    pub webhook_url: Option<String>,
    /// The outbox: webhooks waiting, and those given up on.
    pub outbox: OutboxCounts,
    /// The auto-revoke rule, if on.
    pub auto_revoke: Option<AutoRevokeRule>,
}

/// What [`Installation::set_webhook`] did.
pub struct WebhookSet {
    /// The secret, when this call generated it: shown to the operator once, never stored
    /// outside the key store.
    pub generated_secret: Option<Zeroizing<String>>,
}

impl Installation {
    /// Sends signals to `url` (http or https), signed with `secret` or, without one, a fresh
    /// secret returned once. The secret goes to the key store, which keeps 32-byte secrets. A
    /// running server picks the change up within seconds.
    pub fn set_webhook(
        &self,
        url: &str,
        secret: Option<WebhookSecret>,
    ) -> Result<WebhookSet, ServiceError> {
        // The URL is not echoed: some receivers take a credential in its path.
        let parsed = crate::signals::check_url(url)
            .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
        let (secret, generated) = match secret {
            Some(secret) => (secret, false),
            None => (WebhookSecret::generate()?, true),
        };
        let seed = secret.to_seed().ok_or_else(|| {
            ServiceError::InvalidInput(
                "agentseal keeps 32-byte webhook secrets: give a whsec_ secret of 32 bytes, or none to have one made".into(),
            )
        })?;
        let name = KeyName::webhook(&self.install_id);
        let keys = self.key_store()?;
        // Delete first: with keyutils a running server that read the old secret holds its own
        // link to it, which only deleting (invalidating) the old key cuts.
        keys.delete(&name)?;
        keys.put(&name, &seed)?;
        if keys.get(&name)?.expose() != seed.expose() {
            return Err(ServiceError::KeyMismatch(name.to_string()));
        }
        let revision = clock::random_id()?;
        self.store.set_meta(&[
            (WEBHOOK_URL, parsed.as_str()),
            (WEBHOOK_REVISION, &revision),
        ])?;
        Ok(WebhookSet {
            generated_secret: generated.then(|| secret.reveal()),
        })
    }

    /// Stops sending webhooks: forgets the URL and deletes the secret. Events not yet delivered
    /// stay in the outbox for a webhook set later. Returns whether one was configured.
    pub fn remove_webhook(&self) -> Result<bool, ServiceError> {
        let configured = self.store.meta(WEBHOOK_URL)?.is_some();
        self.store.remove_meta(&[WEBHOOK_URL, WEBHOOK_REVISION])?;
        self.key_store()?
            .delete(&KeyName::webhook(&self.install_id))?;
        Ok(configured)
    }

    /// The webhook and its secret, with the configuration's revision; `None` if none is set.
    pub fn webhook_config(&self) -> Result<Option<(WebhookConfig, String)>, ServiceError> {
        let Some(url) = self.store.meta(WEBHOOK_URL)? else {
            return Ok(None);
        };
        let revision = self.store.meta(WEBHOOK_REVISION)?.unwrap_or_default();
        let url = reqwest::Url::parse(&url).map_err(|_| self.store.corrupt("webhook URL"))?;
        let seed = self.key_store()?.get(&KeyName::webhook(&self.install_id))?;
        let config = WebhookConfig::new(url, WebhookSecret::from_seed(&seed));
        Ok(Some((config, revision)))
    }

    /// Turns the auto-revoke rule on (`Some`) or off.
    pub fn set_auto_revoke(&self, rule: Option<AutoRevokeRule>) -> Result<(), ServiceError> {
        match rule {
            Some(rule) => {
                rule.check()?;
                self.store.set_meta(&[(AUTO_REVOKE, &rule.encode())])?;
            }
            None => self.store.remove_meta(&[AUTO_REVOKE])?,
        }
        Ok(())
    }

    /// The auto-revoke rule, if on.
    pub fn auto_revoke_rule(&self) -> Result<Option<AutoRevokeRule>, ServiceError> {
        Ok(self
            .store
            .meta(AUTO_REVOKE)?
            .and_then(|text| AutoRevokeRule::decode(&text)))
    }

    /// The webhook, the outbox and the auto-revoke rule.
    pub fn signals_status(&self) -> Result<SignalsStatus, ServiceError> {
        Ok(SignalsStatus {
            webhook_url: self.store.meta(WEBHOOK_URL)?,
            outbox: self.outbox()?.counts()?,
            auto_revoke: self.auto_revoke_rule()?,
        })
    }

    /// Starts delivering signals on the current tokio runtime, for as long as `shutdown` is not
    /// cancelled: follows the webhook configuration (set, changed or removed while running)
    /// and prunes delivered entries after a week. Several servers on one installation may run
    /// this at once; each entry is sent by one of them at a time.
    pub fn spawn_signal_delivery(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let installation = self.clone();
        tokio::spawn(async move {
            let mut delivering: Option<(String, CancellationToken, Option<JoinHandle<()>>)> = None;
            let mut pruned_at: Option<std::time::Instant> = None;
            while !shutdown.is_cancelled() {
                let this = installation.clone();
                // A dispatcher that ended by itself (it saw the configuration change, or could
                // not tell) is replaced even if the revision reads the same again.
                let known = delivering
                    .as_ref()
                    .filter(|d| d.2.as_ref().is_none_or(|task| !task.is_finished()))
                    .map(|d| d.0.clone());
                let looked = tokio::task::spawn_blocking(move || this.changed_webhook(known)).await;
                match looked {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(change))) => {
                        if let Some((_, stop, task)) = delivering.take() {
                            stop.cancel();
                            if let Some(task) = task {
                                let _ = task.await;
                            }
                        }
                        if let Some((config, revision)) = change {
                            let stop = shutdown.child_token();
                            let store = installation.store.clone();
                            let open: OpenOutbox = Arc::new(move || {
                                store
                                    .outbox_queue()
                                    .map(Outbox::on)
                                    .map_err(|e| SignalError::Database(e.to_string()))
                            });
                            let wake = installation.signal_wake.clone();
                            let this = installation.clone();
                            let known = Some(revision.clone());
                            let current: crate::signals::StillCurrent = Arc::new(move || {
                                this.webhook_revision().is_ok_and(|now| now == known)
                            });
                            let task = match Dispatcher::spawn_while(
                                config,
                                open,
                                wake,
                                stop.clone(),
                                Some(current),
                            ) {
                                Ok(task) => {
                                    tracing::info!("delivering signals to the webhook");
                                    Some(task)
                                }
                                Err(error) => {
                                    tracing::error!(%error, "webhook not started");
                                    None
                                }
                            };
                            delivering = Some((revision, stop, task));
                        }
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "webhook configuration not read"),
                    Err(error) => tracing::error!(%error, "webhook configuration not read"),
                }
                if pruned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                    pruned_at = Some(std::time::Instant::now());
                    let this = installation.clone();
                    let _ = tokio::task::spawn_blocking(move || this.prune_outbox()).await;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(CONFIG_POLL) => {}
                }
            }
            if let Some((_, stop, Some(task))) = delivering {
                stop.cancel();
                let _ = task.await;
            }
        })
    }

    /// `None` if the webhook revision is still `known`; otherwise the new configuration
    /// (`Some(None)`: removed).
    #[allow(clippy::type_complexity)]
    fn changed_webhook(
        &self,
        known: Option<String>,
    ) -> Result<Option<Option<(WebhookConfig, String)>>, ServiceError> {
        if self.webhook_revision()? == known {
            return Ok(None);
        }
        Ok(Some(self.webhook_config()?))
    }

    /// The webhook configuration's revision; `None` when no webhook is set.
    fn webhook_revision(&self) -> Result<Option<String>, ServiceError> {
        let Some(_) = self.store.meta(WEBHOOK_URL)? else {
            return Ok(None);
        };
        Ok(Some(self.store.meta(WEBHOOK_REVISION)?.unwrap_or_default()))
    }

    fn prune_outbox(&self) {
        let before = |kept: Duration| {
            clock::now()
                .saturating_sub(kept.as_secs() as i64)
                .saturating_mul(1000)
        };
        let pruned = self
            .outbox()
            .and_then(|o| Ok(o.prune(before(DELIVERED_KEPT), before(GIVEN_UP_KEPT))?));
        match pruned {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "delivered webhooks pruned"),
            Err(error) => tracing::warn!(%error, "webhook outbox not pruned"),
        }
    }

    fn outbox(&self) -> Result<&Outbox, ServiceError> {
        if let Some(outbox) = self.outbox.get() {
            return Ok(outbox);
        }
        let opened = Outbox::on(self.store.outbox_queue()?);
        Ok(self.outbox.get_or_init(|| opened))
    }

    /// Records a signal for the webhook, if one is configured. Never fails the caller: the
    /// operation it reports has happened whatever becomes of the signal.
    pub(super) fn signal(&self, kind: SignalKind, agent: Option<&str>, data: Value) {
        let recorded = (|| -> Result<bool, ServiceError> {
            if self.store.meta(WEBHOOK_URL)?.is_none() {
                return Ok(false);
            }
            let signal = Signal::new(kind, agent.map(str::to_owned), data);
            self.outbox()?.enqueue(&signal)?;
            Ok(true)
        })();
        match recorded {
            Ok(true) => self.signal_wake.notify_one(),
            Ok(false) => {}
            Err(error) => tracing::error!(%error, signal = %kind, "signal not recorded"),
        }
    }

    /// Signals that `agent_id` asked to sign an action a person must approve first. Called by
    /// the front-end that asks the person (once per request, not on the answer's round trip).
    pub fn approval_requested(
        &self,
        agent_id: &str,
        request: &ActionRequest,
        on_behalf_of: Option<&str>,
    ) {
        self.signal(
            SignalKind::ApprovalRequested,
            Some(agent_id),
            serde_json::json!({
                "action": request.action,
                "audience": request.audience,
                "on_behalf_of": on_behalf_of,
            }),
        );
    }

    /// Puts the webhooks given up on back in line, as new; returns how many.
    pub fn retry_signals(&self) -> Result<usize, ServiceError> {
        Ok(self
            .outbox()?
            .requeue_given_up(clock::now().saturating_mul(1000))?)
    }

    /// Reports a rejected token, and applies the auto-revoke rule to its signer when the signer
    /// alone can have caused the rejection (see [`counts_against_signer`]).
    pub(super) fn token_rejected(
        &self,
        token: &str,
        verdict: &PeerVerdict,
        evidence: &PeerEvidence,
    ) {
        let parsed = action::parse_unverified(token.trim()).ok();
        let claimed = parsed.as_ref().map(|(_, claims)| claims);
        let authentic = parsed.as_ref().and_then(|(jws, claims)| {
            let record = self.store.certificate(&claims.cert).ok().flatten()?;
            (record.agent_id == claims.iss).then_some(())?;
            let (_, _, keys) = AgentCertificate::parse_unverified(&record.encoded).ok()?;
            jws.check_typ(action::TOKEN_TYP).ok()?;
            jws.verify(&keys).ok().map(|()| record.agent_id)
        });
        let shorten = |text: &str| text.chars().take(MAX_CLAIMED).collect::<String>();
        let agent = authentic
            .clone()
            .or_else(|| claimed.map(|c| shorten(&c.iss)));
        self.signal(
            SignalKind::TokenRejected,
            agent.as_deref(),
            serde_json::json!({
                "reasons": verdict.reasons,
                "jti": claimed.map(|c| shorten(&c.jti)),
                "authentic": authentic.is_some(),
                "verifier": shorten(&evidence.audience),
                "expected_action": evidence.action.as_deref().map(shorten),
            }),
        );
        let (Some(agent), Some(claims)) = (authentic, claimed) else {
            return;
        };
        // Only faults in what the signer wrote count. The verifier checks the audience before
        // any of those, so a token presented where it was not sent never counts.
        if verdict.reasons.iter().all(|r| counts_against_signer(r)) {
            self.count_rejection(&agent, &format!("token:{}", claims.jti), &verdict.reasons);
        }
    }

    /// Applies the auto-revoke rule to a refusal of `agent_id`'s own request: a policy denial,
    /// a rate limit, or acting beyond its delegation. Other errors do not count.
    pub(super) fn request_refused(&self, agent_id: &str, error: &ServiceError) {
        if matches!(
            error,
            ServiceError::PolicyDenied(_)
                | ServiceError::RateLimited(_)
                | ServiceError::NotPermitted(_)
        ) {
            match clock::random_id() {
                Ok(id) => self.count_rejection(
                    agent_id,
                    &format!("request:{id}"),
                    &[error.code().to_owned()],
                ),
                Err(error) => tracing::error!(%error, "auto-revoke rule not applied"),
            }
        }
    }

    /// Counts a rejection about `subject` against `agent_id` and, when that trips the rule,
    /// revokes the agent's certificates, records it in the audit log and signals it.
    fn count_rejection(&self, agent_id: &str, subject: &str, reasons: &[String]) {
        let acted = (|| -> Result<(), ServiceError> {
            let Some(rule) = self.auto_revoke_rule()? else {
                return Ok(());
            };
            let now = clock::now();
            let Some(count) = self.store.trip_on_rejection(
                agent_id,
                subject,
                now,
                now.saturating_sub(rule.window_seconds),
                i64::from(rule.rejections),
            )?
            else {
                return Ok(());
            };
            let reason = format!(
                "auto-revoked: {count} rejections within {} s",
                rule.window_seconds
            );
            let revoked = self.revoke_certificate(agent_id, &reason)?;
            let serials: Vec<&str> = revoked
                .iter()
                .filter(|e| e.revoked_at >= now && e.reason == reason)
                .map(|e| e.id.as_str())
                .collect();
            if serials.is_empty() {
                return Ok(()); // revoked already
            }
            tracing::warn!(agent = %agent_id, rejections = count, "agent's certificates auto-revoked");
            let details = serde_json::json!({
                "agent_id": agent_id,
                "serials": serials,
                "rejections": count,
                "window_seconds": rule.window_seconds,
                "last_reasons": reasons,
            });
            self.signal(
                SignalKind::AgentAutoRevoked,
                Some(agent_id),
                details.clone(),
            );
            let mut event =
                AuditEvent::new("agentseal", "rule.auto_revoke", AuditDecision::Allowed);
            event.reasons = reasons.to_vec();
            if let Value::Object(details) = details {
                event.details = details;
            }
            self.audit(&event)?;
            Ok(())
        })();
        if let Err(error) = acted {
            tracing::error!(%error, agent = %agent_id, "auto-revoke rule not applied");
        }
    }
}

/// Whether a rejection of an authentic token can only be its signer's doing: something wrong in
/// what the signer wrote (its claims or its delegation chain). Rejections a verifier or a
/// holder of the token can bring about (wrong action or arguments named by the verifier, reuse,
/// lateness, revocation, the verifier's own failures) are not.
pub fn counts_against_signer(reason: &str) -> bool {
    matches!(
        reason,
        "malformed"
            | "scope_escalation"
            | "delegation_outlives_parent"
            | "delegation_broken"
            | "delegation_too_deep"
            | "delegation_cycle"
            | "delegation_bad_signature"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_revoke_rules_round_trip_and_bad_ones_are_refused() {
        let rule = AutoRevokeRule {
            rejections: 5,
            window_seconds: 600,
        };
        assert_eq!(AutoRevokeRule::decode(&rule.encode()), Some(rule));
        for bad in [
            "",
            "5",
            "0/600",
            "5/0",
            "5/-1",
            "x/600",
            "5/99999999999",
            "5/600/1",
        ] {
            assert_eq!(AutoRevokeRule::decode(bad), None, "{bad}");
        }
    }
}
