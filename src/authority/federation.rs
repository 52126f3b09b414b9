//! Workload identity federation (see [`crate::federation`]): the operator's trust rules, kept in
//! the database so that every hub sharing it applies them, and the token exchange itself.

use std::sync::Arc;

use crate::audit::Decision;
use crate::federation::assertion::{self, Peeked, VerifiedAssertion};
use crate::federation::request::TokenRequest;
use crate::federation::{Grant, GrantError, HubIdentity, IssuerKey, IssuerKeys, TrustRule};

use super::*;

/// Where each rule is kept: one metadata entry per rule, named after it.
const RULE_PREFIX: &str = "federation.rule.";
/// The public base URL the hub last ran at.
const PUBLIC_URL: &str = "hub.public_url";
/// Longest string an audit record or signal takes from an assertion.
const MAX_RECORDED: usize = 256;
/// Refusals anyone can cause (before the issuer's signature verified) that the audit log and
/// signals take per minute, across the hubs of a database; more are counted in metrics and
/// logged only, so that nobody can flood the log or the webhook.
const UNAUTHENTICATED_RECORDS_PER_MINUTE: u32 = 60;
/// The actor of a record no verified agent is the actor of (not an agent id: those have a
/// scheme).
const ANONYMOUS: &str = "anonymous";

fn shorten(text: &str) -> String {
    text.chars().take(MAX_RECORDED).collect()
}

/// A stored rule, checked again as when it was made: a rule written by hand or by another
/// version is refused, not applied (`federation remove` takes it away).
fn read_rule(name: &str, json: &str) -> Result<TrustRule, ServiceError> {
    let rule: TrustRule = serde_json::from_str(json)
        .map_err(|e| ServiceError::CorruptRecord(format!("trust rule {name}: {e}")))?;
    rule.validate().map_err(|e| {
        ServiceError::CorruptRecord(format!(
            "trust rule {name} is not valid ({e}): remove it with `agentseal federation remove {name}`"
        ))
    })?;
    Ok(rule)
}

/// A store failure as a refusal of the exchange.
/// The caller is told the code only; the log has the detail.
fn server(error: ServiceError) -> GrantError {
    tracing::error!(%error, "token exchange failed");
    let code = error.code();
    GrantError::Server {
        code,
        retryable: matches!(code, "database_unavailable" | "revocation_unavailable"),
        message: "the hub could not complete the exchange".into(),
    }
}

impl Installation {
    /// Records a trust rule. A rule of the same name is replaced only with `replace`; all rules
    /// of one issuer must use the same keys (an issuer has one key set).
    pub fn trust_workloads(&self, rule: &TrustRule, replace: bool) -> Result<(), ServiceError> {
        rule.validate()
            .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
        for other in self.federation_rules()? {
            if other.name == rule.name {
                if !replace {
                    return Err(ServiceError::InvalidInput(format!(
                        "a rule named {} exists: remove it first, or pass --replace",
                        rule.name
                    )));
                }
                continue;
            }
            if other.issuer == rule.issuer && other.keys != rule.keys {
                return Err(ServiceError::InvalidInput(format!(
                    "rule {} trusts issuer {} with other keys: one issuer has one key set, so give the same --jwks-url or --jwks-file, or remove that rule",
                    other.name, rule.issuer
                )));
            }
        }
        let json = serde_json::to_string(rule)
            .map_err(|e| ServiceError::InvalidInput(format!("rule: {e}")))?;
        self.store
            .set_meta(&[(&format!("{RULE_PREFIX}{}", rule.name), &json)])?;
        tracing::info!(rule = %rule.name, issuer = %rule.issuer, "workload trust rule recorded");
        Ok(())
    }

    /// Every trust rule, by name.
    pub fn federation_rules(&self) -> Result<Vec<TrustRule>, ServiceError> {
        let mut rules = Vec::new();
        for (key, json) in self.store.meta_prefixed(RULE_PREFIX)? {
            let rule: TrustRule = serde_json::from_str(&json)
                .map_err(|e| ServiceError::CorruptRecord(format!("trust rule {key}: {e}")))?;
            rules.push(rule);
        }
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rules)
    }

    /// The rule `name`, if there is one.
    pub fn federation_rule(&self, name: &str) -> Result<Option<TrustRule>, ServiceError> {
        self.store
            .meta(&format!("{RULE_PREFIX}{name}"))?
            .map(|json| read_rule(name, &json))
            .transpose()
    }

    /// Removes the rule `name` (also one that no longer reads); false if there was none.
    pub fn remove_federation_rule(&self, name: &str) -> Result<bool, ServiceError> {
        let key = format!("{RULE_PREFIX}{name}");
        if self.store.meta(&key)?.is_none() {
            return Ok(false);
        }
        self.store.remove_meta(&[&key])?;
        Ok(true)
    }

    /// Records the public base URL the hub runs at, for `access-token issue` and `federation
    /// trust` to default to.
    pub fn record_public_url(&self, base: &str) -> Result<(), ServiceError> {
        if self.store.meta(PUBLIC_URL)?.as_deref() != Some(base) {
            self.store.set_meta(&[(PUBLIC_URL, base)])?;
        }
        Ok(())
    }

    /// The public base URL the hub last ran at (`http(s)://host[:port]/`), if it ever ran.
    pub fn public_url(&self) -> Result<Option<String>, ServiceError> {
        Ok(self.store.meta(PUBLIC_URL)?)
    }

    /// The rule to verify `peeked` against: of the rules trusting its issuer, those whose
    /// audience names this hub first, then those admitting its (claimed) subject, the most
    /// specific pattern first (an exact subject, then the longest). Without one that admits it,
    /// the first rule: the assertion's signature is checked before it is refused.
    fn rule_for(&self, peeked: &Peeked, hub: &HubIdentity) -> Result<TrustRule, GrantError> {
        let rules: Vec<TrustRule> = self
            .federation_rules()
            .map_err(server)?
            .into_iter()
            .filter(|rule| rule.issuer == peeked.issuer)
            .collect();
        let rank = |rule: &TrustRule| {
            let admits = peeked.subject.as_deref().is_some_and(|s| rule.admits(s));
            (
                hub.is_named_by(&rule.audience),
                admits,
                admits && !rule.subject.contains('*'),
                rule.subject.len(),
            )
        };
        rules
            .into_iter()
            // The earliest name wins a tie (`max_by_key` keeps the last).
            .rev()
            .max_by_key(rank)
            .ok_or_else(|| GrantError::UnknownIssuer(shorten(&peeked.issuer)))
    }

    /// Issues the access token for a verified assertion: the agent must exist and not be
    /// revoked, the scopes asked for must be the rule's, and the assertion is consumed once.
    fn grant_for(
        &self,
        verified: &VerifiedAssertion,
        rule: &TrustRule,
        request: &TokenRequest,
        hub: &HubIdentity,
        now: i64,
    ) -> Result<IssuedAccess, GrantError> {
        if let Some(client) = &request.client_id
            && *client != verified.subject
        {
            return Err(GrantError::ClientMismatch(format!(
                "client_id {:?} is not the assertion's subject {:?}",
                shorten(client),
                verified.subject
            )));
        }
        let scopes = match &request.scope {
            None => rule.scopes.clone(),
            Some(asked) => {
                let asked = Scope::parse_list(asked).map_err(GrantError::ScopeExceeded)?;
                if let Some(beyond) = asked.iter().find(|s| !rule.scopes.contains(s)) {
                    return Err(GrantError::ScopeExceeded(format!(
                        "rule {} does not grant {}",
                        rule.name,
                        beyond.name()
                    )));
                }
                asked
            }
        };
        match self.agent_cut_off(&verified.agent_id, now) {
            Ok(None) => {}
            Ok(Some(why)) => return Err(GrantError::UnknownAgent(why)),
            Err(error) => return Err(server(error)),
        }
        // Never longer than the rule allows, nor than the assertion itself lives.
        let expires_at = now.saturating_add(rule.max_ttl).min(verified.expires_at);
        if expires_at <= now {
            return Err(GrantError::Expired(verified.expires_at));
        }
        let fresh = self
            .store
            .consume(
                &format!("workload:{}", verified.issuer),
                &verified.replay_id,
                verified.expires_at.saturating_add(clock::DEFAULT_SKEW),
                now,
            )
            .map_err(|e| server(e.into()))?;
        if !fresh {
            return Err(GrantError::Replayed);
        }
        self.issue_access_token_at(
            &verified.agent_id,
            &hub.resource(),
            now,
            expires_at,
            &scopes,
        )
        .map_err(server)
    }

    /// Why `agent_id` may not be granted access now (unknown, or its current certificate
    /// revoked), if so.
    fn agent_cut_off(&self, agent_id: &str, now: i64) -> Result<Option<String>, ServiceError> {
        let Some(agent) = self.store.agent(agent_id)? else {
            return Ok(Some(format!("no agent {agent_id:?} in this installation")));
        };
        let serial = agent.current_serial.unwrap_or_default();
        Ok(self
            .store
            .certificate_revocation(&serial, now)
            .map_err(ServiceError::Unverifiable)?
            .map(|_| format!("agent {agent_id}'s certificate {serial} is revoked")))
    }

    /// The synchronous part of an exchange, once the issuer's keys are at hand: verify, grant,
    /// and record the outcome in the audit log and signals. A token whose issuance cannot be
    /// audited is withheld.
    fn complete_exchange(
        &self,
        request: &TokenRequest,
        peeked: &Peeked,
        rule: &TrustRule,
        keys: Result<Arc<Vec<IssuerKey>>, GrantError>,
        hub: &HubIdentity,
    ) -> Result<IssuedAccess, GrantError> {
        let now = clock::now();
        let verified = keys.and_then(|keys| {
            assertion::verify(
                &request.assertion,
                peeked,
                rule,
                &keys,
                hub,
                now,
                clock::DEFAULT_SKEW,
            )
        });
        let outcome = verified
            .clone()
            .and_then(|verified| self.grant_for(&verified, rule, request, hub, now));
        self.record_exchange(
            request.grant,
            peeked,
            Some(rule),
            verified.ok().as_ref(),
            &outcome,
        )
    }

    /// Appends the exchange's audit record and signal; passes the outcome on, or withholds a
    /// token that could not be recorded. What the assertion claims before its signature
    /// verified is recorded as claimed (`claimed_issuer`, `claimed_subject`), and only so many
    /// such refusals a minute.
    fn record_exchange(
        &self,
        grant: Grant,
        peeked: &Peeked,
        rule: Option<&TrustRule>,
        verified: Option<&VerifiedAssertion>,
        outcome: &Result<IssuedAccess, GrantError>,
    ) -> Result<IssuedAccess, GrantError> {
        let unauthenticated = matches!(outcome, Err(e) if e.is_unauthenticated());
        if unauthenticated && !self.admit_unauthenticated_record() {
            tracing::info!(
                reason = outcome.as_ref().err().map(GrantError::reason),
                "token request refused (not recorded: too many unauthenticated refusals this minute)"
            );
            return outcome.clone();
        }
        let decision = match outcome {
            Ok(_) => Decision::Allowed,
            Err(error) if error.is_server_side() => Decision::Failed,
            Err(_) => Decision::Denied,
        };
        let actor = match outcome {
            Ok(issued) => issued.agent_id.as_str(),
            Err(_) => ANONYMOUS,
        };
        let mut event = AuditEvent::new(actor, "oauth.token", decision);
        let mut details = serde_json::Map::new();
        details.insert("grant_type".into(), grant.name().into());
        let prefix = if unauthenticated { "claimed_" } else { "" };
        details.insert(format!("{prefix}issuer"), shorten(&peeked.issuer).into());
        if let Some(subject) = verified
            .map(|v| v.subject.as_str())
            .or(peeked.subject.as_deref())
        {
            details.insert(format!("{prefix}subject"), shorten(subject).into());
        }
        if let Some(rule) = rule {
            details.insert("rule".into(), rule.name.clone().into());
        }
        match outcome {
            Ok(issued) => {
                details.insert("agent_id".into(), issued.agent_id.clone().into());
                details.insert("scope".into(), issued.scope.clone().into());
                details.insert("expires_at".into(), issued.exp.into());
            }
            Err(error) => {
                event.reasons = vec![error.reason().to_owned()];
                details.insert("reason".into(), error.reason().into());
            }
        }
        let mut record = details.clone();
        if let Ok(issued) = outcome {
            record.insert("token_id".into(), issued.jti.clone().into());
        }
        event.details = record;
        let released = match self.release(&event, outcome.clone()) {
            Ok(issued) => Ok(issued),
            Err(Withheld::Failed(error)) => Err(error),
            Err(Withheld::Unaudited(error)) => Err(server(error)),
        };
        // Signalled as it was released: a withheld token was not issued.
        let (kind, agent) = match &released {
            Ok(issued) => (
                SignalKind::WorkloadTokenIssued,
                Some(issued.agent_id.as_str()),
            ),
            Err(_) => (SignalKind::WorkloadTokenRefused, None),
        };
        self.signal(kind, agent, Value::Object(details));
        released
    }

    /// Whether one more refusal anyone could have caused may be recorded this minute.
    fn admit_unauthenticated_record(&self) -> bool {
        matches!(
            self.store.admit_rate(
                "oauth.unauthenticated_refusals",
                UNAUTHENTICATED_RECORDS_PER_MINUTE,
                60,
                clock::now(),
            ),
            Ok(Ok(()))
        )
    }
}

/// Exchanges a workload's JWT for an access token of the hub `hub`: finds the issuer's rule,
/// gets its keys through `keys` (fetching if due), verifies the assertion and grants. Every
/// outcome for an assertion that parses is in the audit log and signals; a request whose
/// assertion is not even a JWT is refused without a record.
pub async fn exchange(
    installation: Arc<Installation>,
    keys: &IssuerKeys,
    request: TokenRequest,
    hub: HubIdentity,
) -> Result<IssuedAccess, GrantError> {
    let peeked = assertion::peek(&request.assertion)?;
    let lost = |e: tokio::task::JoinError| GrantError::Server {
        code: "internal_error",
        message: e.to_string(),
        retryable: false,
    };
    let (rule, request, peeked, hub) = {
        let installation = installation.clone();
        tokio::task::spawn_blocking(move || {
            let rule = installation.rule_for(&peeked, &hub);
            if let Err(refusal) = &rule {
                let refused = Err(refusal.clone());
                let _ = installation.record_exchange(request.grant, &peeked, None, None, &refused);
            }
            (rule, request, peeked, hub)
        })
        .await
        .map_err(lost)?
    };
    let rule = rule?;
    let fetched = keys.keys_for(&rule, peeked.kid.as_deref()).await;
    tokio::task::spawn_blocking(move || {
        installation.complete_exchange(&request, &peeked, &rule, fetched, &hub)
    })
    .await
    .map_err(lost)?
}
