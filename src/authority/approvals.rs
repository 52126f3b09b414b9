//! Out-of-band approvals: when the policy wants a person to approve an action and the agent's
//! client cannot ask one, the request waits here until a person approves or denies it (`agentseal
//! approve` / `deny`), and the agent calls again with its id.
//!
//! An approval is bound to exactly what the token will say (agent, action, audience, arguments
//! digest, on-behalf-of, lifetime, scope), is decided once, used once, and expires. Approvals
//! are kept in the database, so any hub sharing it can serve the agent's next call; a decision
//! and a use are each claimed atomically ([`crate::store::Backend::claim_meta`]), so two hubs or
//! two people racing make exactly one.

use serde::{Deserialize, Serialize};

use super::*;

/// How long an approval may wait for a person and for its use, by default: 15 minutes.
pub const DEFAULT_APPROVAL_TTL: i64 = 900;
/// Longest an approval may wait: a day.
pub const MAX_APPROVAL_TTL: i64 = 86_400;
/// Approvals are kept this long past their expiry (to answer `approval_expired`, not
/// `approval_unknown`), then pruned.
const KEEP_EXPIRED: i64 = 86_400;
/// Most approvals one agent may have waiting at once: an agent cannot flood the people who
/// decide (or the database, or the webhook).
pub const MAX_PENDING_PER_AGENT: usize = 20;
/// Largest arguments (as JSON) an approval keeps to show the person.
pub const MAX_APPROVAL_ARGS: usize = 64 * 1024;

const PREFIX: &str = "approval.";
const DECISION: &str = ".decision";
const USED: &str = ".used";

/// What an approval is for: everything that makes the token what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The agent asking.
    pub agent_id: String,
    /// The action.
    pub action: String,
    /// The audience.
    pub audience: String,
    /// The arguments, as the person sees them.
    pub args: Value,
    /// Their digest, which the token binds.
    pub args_sha256: String,
    /// The token's lifetime, in seconds.
    pub ttl: i64,
    /// The token's scope.
    pub scope: Option<String>,
    /// For whom.
    pub on_behalf_of: Option<String>,
}

impl ApprovalRequest {
    /// The approval `agent_id` needs to sign `request` for `on_behalf_of`.
    pub fn new(agent_id: &str, request: &ActionRequest, on_behalf_of: Option<&str>) -> Self {
        ApprovalRequest {
            agent_id: agent_id.to_owned(),
            action: request.action.clone(),
            audience: request.audience.clone(),
            args: request.args.clone(),
            args_sha256: action::args_sha256(&request.args),
            ttl: request.ttl,
            scope: request.scope.clone(),
            // As the token will name it.
            on_behalf_of: on_behalf_of
                .map(|p| crate::token::delegation::normalize_principal(p).into_owned()),
        }
    }

    /// Whether `other` asks for the very same token (the digest stands for the arguments).
    fn same_as(&self, other: &ApprovalRequest) -> bool {
        (
            &self.agent_id,
            &self.action,
            &self.audience,
            &self.args_sha256,
            self.ttl,
            &self.scope,
            &self.on_behalf_of,
        ) == (
            &other.agent_id,
            &other.action,
            &other.audience,
            &other.args_sha256,
            other.ttl,
            &other.scope,
            &other.on_behalf_of,
        )
    }
}

/// A person's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// Approved (true) or denied.
    pub approved: bool,
    /// Who decided (`operator (alice)` from the CLI).
    pub by: String,
    /// When.
    pub at: i64,
    /// Why, for a denial.
    pub reason: Option<String>,
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// Approved, not yet used.
    Approved,
    /// Denied.
    Denied,
    /// Approved and used for its token.
    Used,
    /// Past its expiry before it was used.
    Expired,
}

/// One approval and where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct PendingApproval {
    /// Its id.
    pub id: String,
    /// What it is for.
    pub request: ApprovalRequest,
    /// When the agent asked.
    pub requested_at: i64,
    /// Until when it may be decided and used.
    pub expires_at: i64,
    /// The decision, once made.
    pub decision: Option<ApprovalDecision>,
    /// When its token was signed.
    pub used_at: Option<i64>,
}

impl PendingApproval {
    /// Where it stands at `now`.
    pub fn status(&self, now: i64) -> ApprovalStatus {
        match (&self.decision, self.used_at) {
            (_, Some(_)) => ApprovalStatus::Used,
            (Some(decision), None) if !decision.approved => ApprovalStatus::Denied,
            _ if now >= self.expires_at => ApprovalStatus::Expired,
            (Some(_), None) => ApprovalStatus::Approved,
            (None, None) => ApprovalStatus::Pending,
        }
    }
}

/// Why an approval cannot be used or decided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No approval has this id.
    #[error("no approval {0:?}")]
    Unknown(String),
    /// Nobody decided yet.
    #[error("approval {id} is waiting for a person (until {expires_at})")]
    Pending {
        /// The approval.
        id: String,
        /// Until when.
        expires_at: i64,
    },
    /// A person denied it.
    #[error("a person denied this action{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Denied(Option<String>),
    /// It expired before it was used.
    #[error("the approval expired at {0}")]
    Expired(i64),
    /// It was used for its token already.
    #[error("the approval was used already: each approval signs one token")]
    Used,
    /// It is for another request (other arguments, agent, audience, lifetime, ...).
    #[error("the approval is for another request: an approval signs exactly what was approved")]
    Mismatch,
    /// It was decided already.
    #[error("approval {0} was decided already")]
    Decided(String),
    /// The agent has as many approvals waiting as it may, or arguments too large to show.
    #[error("{0}")]
    Refused(String),
}

impl ApprovalError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            ApprovalError::Unknown(_) => "approval_unknown",
            ApprovalError::Pending { .. } => "approval_pending",
            ApprovalError::Denied(_) => "approval_denied",
            ApprovalError::Expired(_) => "approval_expired",
            ApprovalError::Used => "approval_used",
            ApprovalError::Mismatch => "approval_mismatch",
            ApprovalError::Decided(_) => "approval_decided",
            ApprovalError::Refused(_) => "approval_refused",
        }
    }
}

/// What is stored under `approval.<id>`.
#[derive(Serialize, Deserialize)]
struct Stored {
    request: ApprovalRequest,
    requested_at: i64,
    expires_at: i64,
}

fn corrupt(key: &str, error: impl std::fmt::Display) -> ServiceError {
    ServiceError::CorruptRecord(format!("{key}: {error}"))
}

impl Installation {
    /// Records `request` as waiting for a person for `ttl` seconds, and signals it
    /// (`approval.requested`, with the id and how to approve). The same request already waiting
    /// is answered with its approval (asked again, it is not asked twice); an agent may have
    /// [`MAX_PENDING_PER_AGENT`] waiting.
    pub fn request_approval(
        &self,
        request: ApprovalRequest,
        ttl: i64,
    ) -> Result<PendingApproval, ServiceError> {
        let now = clock::now();
        let all = self.approvals()?;
        let waiting: Vec<&PendingApproval> = all
            .iter()
            .filter(|a| {
                a.request.agent_id == request.agent_id && a.status(now) == ApprovalStatus::Pending
            })
            .collect();
        if let Some(same) = waiting.iter().find(|a| a.request.same_as(&request)) {
            return Ok((*same).clone());
        }
        if waiting.len() >= MAX_PENDING_PER_AGENT {
            return Err(ApprovalError::Refused(format!(
                "{} approvals of this agent already wait for a person: wait for their decisions",
                waiting.len()
            ))
            .into());
        }
        if serde_json::to_string(&request.args).map_or(0, |t| t.len()) > MAX_APPROVAL_ARGS {
            return Err(ApprovalError::Refused(format!(
                "arguments larger than {MAX_APPROVAL_ARGS} bytes cannot be shown to a person for approval"
            ))
            .into());
        }
        if !(1..=MAX_APPROVAL_TTL).contains(&ttl) {
            return Err(RequestError::TtlOutOfRange {
                what: "approval",
                max: MAX_APPROVAL_TTL,
            }
            .into());
        }
        self.prune_approvals(&all, now);
        let id = format!("apr_{}", clock::random_id()?);
        let stored = Stored {
            request,
            requested_at: now,
            expires_at: now.saturating_add(ttl),
        };
        let json = serde_json::to_string(&stored).map_err(|e| corrupt(&id, e))?;
        self.store.set_meta(&[(&format!("{PREFIX}{id}"), &json)])?;
        let pending = PendingApproval {
            id,
            request: stored.request,
            requested_at: stored.requested_at,
            expires_at: stored.expires_at,
            decision: None,
            used_at: None,
        };
        // Where a person approves it: the console of the hub that last ran, if one did.
        let console = self
            .public_url()
            .ok()
            .flatten()
            .map(|base| format!("{base}console/approvals#approval-{}", pending.id));
        self.signal(
            SignalKind::ApprovalRequested,
            Some(&pending.request.agent_id),
            serde_json::json!({
                "approval_id": pending.id,
                "action": pending.request.action,
                "audience": pending.request.audience,
                "on_behalf_of": pending.request.on_behalf_of,
                "expires_at": pending.expires_at,
                "approve_with": format!("agentseal approve {}", pending.id),
                "console": console,
            }),
        );
        Ok(pending)
    }

    /// The approval `id`, if there is one (an id not of the form this installation issues is
    /// none: it cannot name another kind of record).
    pub fn approval(&self, id: &str) -> Result<Option<PendingApproval>, ServiceError> {
        let well_formed = id.strip_prefix("apr_").is_some_and(|rest| {
            (16..=64).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !well_formed {
            return Ok(None);
        }
        let key = format!("{PREFIX}{id}");
        let Some(json) = self.store.meta(&key)? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_str(&json).map_err(|e| corrupt(&key, e))?;
        let decision = match self.store.meta(&format!("{key}{DECISION}"))? {
            Some(json) => Some(serde_json::from_str(&json).map_err(|e| corrupt(&key, e))?),
            None => None,
        };
        let used_at = match self.store.meta(&format!("{key}{USED}"))? {
            Some(at) => Some(at.parse().map_err(|e| corrupt(&key, e))?),
            None => None,
        };
        Ok(Some(PendingApproval {
            id: id.to_owned(),
            request: stored.request,
            requested_at: stored.requested_at,
            expires_at: stored.expires_at,
            decision,
            used_at,
        }))
    }

    /// Every approval kept, oldest first.
    pub fn approvals(&self) -> Result<Vec<PendingApproval>, ServiceError> {
        let mut approvals = Vec::new();
        for (key, _) in self.store.meta_prefixed(PREFIX)? {
            let id = &key[PREFIX.len()..];
            if id.ends_with(DECISION) || id.ends_with(USED) {
                continue;
            }
            if let Some(approval) = self.approval(id)? {
                approvals.push(approval);
            }
        }
        approvals.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        Ok(approvals)
    }

    /// Records a person's decision on `id`: once, before it expires.
    pub fn decide_approval(
        &self,
        id: &str,
        approved: bool,
        by: &str,
        reason: Option<&str>,
    ) -> Result<PendingApproval, ServiceError> {
        let now = clock::now();
        let mut approval = self
            .approval(id)?
            .ok_or_else(|| ApprovalError::Unknown(id.to_owned()))?;
        match approval.status(now) {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Expired => {
                return Err(ApprovalError::Expired(approval.expires_at).into());
            }
            _ => return Err(ApprovalError::Decided(id.to_owned()).into()),
        }
        let decision = ApprovalDecision {
            approved,
            by: by.to_owned(),
            at: now,
            reason: reason.map(|r| r.chars().take(MAX_REASON_LEN).collect()),
        };
        let json = serde_json::to_string(&decision).map_err(|e| corrupt(id, e))?;
        if !self
            .store
            .claim_meta(&format!("{PREFIX}{id}{DECISION}"), &json)?
        {
            return Err(ApprovalError::Decided(id.to_owned()).into());
        }
        approval.decision = Some(decision);
        Ok(approval)
    }

    /// Takes the approval `id` for `request`: it must be for exactly this request, approved,
    /// unexpired and unused; it is used from now on.
    pub fn use_approval(&self, id: &str, request: &ApprovalRequest) -> Result<(), ServiceError> {
        let now = clock::now();
        let approval = self
            .approval(id)?
            .ok_or_else(|| ApprovalError::Unknown(id.to_owned()))?;
        if !approval.request.same_as(request) {
            return Err(ApprovalError::Mismatch.into());
        }
        match approval.status(now) {
            ApprovalStatus::Approved => {}
            ApprovalStatus::Pending => {
                return Err(ApprovalError::Pending {
                    id: id.to_owned(),
                    expires_at: approval.expires_at,
                }
                .into());
            }
            ApprovalStatus::Denied => {
                let reason = approval.decision.and_then(|d| d.reason);
                return Err(ApprovalError::Denied(reason).into());
            }
            ApprovalStatus::Expired => {
                return Err(ApprovalError::Expired(approval.expires_at).into());
            }
            ApprovalStatus::Used => return Err(ApprovalError::Used.into()),
        }
        if !self
            .store
            .claim_meta(&format!("{PREFIX}{id}{USED}"), &now.to_string())?
        {
            return Err(ApprovalError::Used.into());
        }
        Ok(())
    }

    /// Gives back the approval `id` taken by [`Installation::use_approval`] when its token could
    /// not be signed after all (the policy changed, a rate limit, a storage failure): the
    /// person's decision is not lost to a failure that was not the agent's to prevent.
    pub fn give_back_approval(&self, id: &str) -> Result<(), ServiceError> {
        if self.approval(id)?.is_some() {
            self.store.remove_meta(&[&format!("{PREFIX}{id}{USED}")])?;
        }
        Ok(())
    }

    /// Drops those of `approvals` expired more than a day ago; a failure is logged (pruning is
    /// tidying).
    fn prune_approvals(&self, approvals: &[PendingApproval], now: i64) {
        let pruned = (|| -> Result<(), ServiceError> {
            for approval in approvals {
                if approval.expires_at.saturating_add(KEEP_EXPIRED) < now {
                    let key = format!("{PREFIX}{}", approval.id);
                    self.store.remove_meta(&[
                        &key,
                        &format!("{key}{DECISION}"),
                        &format!("{key}{USED}"),
                    ])?;
                }
            }
            Ok(())
        })();
        if let Err(error) = pruned {
            tracing::warn!(%error, "expired approvals not pruned");
        }
    }
}
