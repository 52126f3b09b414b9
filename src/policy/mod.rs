//! Policy: which agent may sign what, for how long, how often, and with whose approval.
//!
//! Policies are written in Rego (Open Policy Agent's language) and evaluated in process with
//! `regorus`, so teams already on OPA reuse their rules and tooling (`opa fmt`, `opa test`). A
//! policy is a module in package `agentseal` whose rule `decision` yields an object:
//!
//! | member | type | meaning |
//! |---|---|---|
//! | `allow` | bool, required | whether the operation may happen |
//! | `reasons` | array of strings | why not (shown to the agent and in the audit log) |
//! | `max_ttl` | number | the longest token lifetime, in seconds: longer requests are capped |
//! | `approval` | bool | a person must approve before the token is signed |
//! | `rate_limit` | `{"count": n, "per_seconds": s}` | at most n allowed operations per agent per s seconds |
//!
//! The input is a [`PolicyInput`]. Without a policy file the built-in [`DEFAULT_POLICY`] applies.
//!
//! ```
//! use agentseal::policy::{Policy, PolicyInput};
//!
//! let policy = Policy::from_source("example.rego", r#"
//!     package agentseal
//!     import rego.v1
//!     default decision := {"allow": false, "reasons": ["not allowed"]}
//!     decision := {"allow": true, "max_ttl": 60} if input.action == "read"
//! "#).unwrap();
//! let mut input = PolicyInput::new("agent://acme.example/reader", "sign_action");
//! input.action = Some("read".into());
//! let decision = policy.evaluate(&input).unwrap();
//! assert!(decision.allow);
//! assert_eq!(decision.max_ttl, Some(60));
//! input.action = Some("delete".into());
//! assert_eq!(policy.evaluate(&input).unwrap().reasons, ["not allowed"]);
//! ```

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The policy that applies when the installation has no policy file: every agent may sign any
/// action for any audience, tokens live at most 15 minutes, and each agent may sign at most 120
/// times a minute; nothing needs approval. Write a policy file to narrow it.
pub const DEFAULT_POLICY: &str = r#"package agentseal

import rego.v1

# The built-in policy: allow, with bounded token lifetimes and signing rates.
default decision := {
	"allow": true,
	"reasons": [],
	"max_ttl": 900,
	"approval": false,
	"rate_limit": {"count": 120, "per_seconds": 60},
}
"#;
/// The rule every policy defines.
pub const DECISION_RULE: &str = "data.agentseal.decision";
/// The name of the policy file in the data directory.
pub const POLICY_FILE: &str = "policy.rego";
/// Longest a policy evaluation may run before it is stopped (and the operation denied).
pub const EVALUATION_LIMIT: Duration = Duration::from_millis(250);
/// How often a policy file is checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why a policy cannot be loaded or evaluated. Evaluation failures deny (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("policy {path}: {detail}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// The Rego does not compile.
    #[error("policy {name} does not compile: {detail}")]
    Invalid {
        /// The file or source name.
        name: String,
        /// regorus's message (with line and column).
        detail: String,
    },
    /// Evaluation failed (or ran past [`EVALUATION_LIMIT`]).
    #[error("policy evaluation failed: {0}")]
    Evaluation(String),
    /// `decision` is missing or not of the documented shape.
    #[error("policy decision is not an object with a boolean `allow`: {0}")]
    BadDecision(String),
}

/// What a policy decides about: the agent, the operation, and the request's particulars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// The agent asking.
    pub agent: String,
    /// Its role (the certificate's `meta.role`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// All of its certificate's metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// `sign_action` or `delegate`.
    pub operation: String,
    /// The action to authorize (or, for `delegate`, the first action delegated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The actions delegated (`delegate` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// The token's audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Requested lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Requested scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// For whom the agent acts, when not itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The delegate (`delegate` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<String>,
}

impl PolicyInput {
    /// An input for `operation` by `agent` with nothing else set.
    pub fn new(agent: impl Into<String>, operation: impl Into<String>) -> Self {
        PolicyInput {
            agent: agent.into(),
            operation: operation.into(),
            ..Default::default()
        }
    }
}

/// A rate limit: at most `count` operations per `per_seconds` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// How many.
    pub count: u32,
    /// In how many seconds.
    pub per_seconds: i64,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the operation may happen.
    pub allow: bool,
    /// Why not.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Longest token lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<i64>,
    /// Whether a person must approve first.
    #[serde(default)]
    pub approval: bool,
    /// How often the agent may do it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl Decision {
    /// The lifetime a token requested for `requested` seconds gets under this decision: capped
    /// at `max_ttl`. The one place the cap is applied, for signing and for `policy check`.
    pub fn capped_ttl(&self, requested: i64) -> i64 {
        self.max_ttl.map_or(requested, |max| requested.min(max))
    }
}

/// One compiled policy.
#[derive(Clone)]
pub struct Policy {
    name: String,
    engine: regorus::Engine,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("name", &self.name).finish()
    }
}

impl Policy {
    /// The built-in [`DEFAULT_POLICY`].
    pub fn builtin() -> Policy {
        Policy::from_source("built-in default", DEFAULT_POLICY)
            .expect("the built-in policy compiles")
    }

    /// Compiles Rego `source`, named `name` in error messages.
    pub fn from_source(name: &str, source: &str) -> Result<Policy, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: EVALUATION_LIMIT,
            check_interval: NonZeroU32::new(64).expect("non-zero"),
        });
        engine
            .add_policy(name.to_owned(), source.to_owned())
            .map_err(|e| PolicyError::Invalid {
                name: name.to_owned(),
                detail: e.to_string(),
            })?;
        let policy = Policy {
            name: name.to_owned(),
            engine,
        };
        // A policy without a usable `decision` is refused when loaded, not at the first request.
        policy
            .evaluate(&PolicyInput::new(
                "agent://policy.check/probe",
                "sign_action",
            ))
            .map_err(|e| PolicyError::Invalid {
                name: name.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(policy)
    }

    /// Reads and compiles the policy file at `path`.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let source = std::fs::read_to_string(path).map_err(|e| PolicyError::Unreadable {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Policy::from_source(&path.display().to_string(), &source)
    }

    /// Where this policy came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Evaluates `decision` for `input`.
    pub fn evaluate(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let mut engine = self.engine.clone();
        let input = serde_json::to_value(input).expect("policy input serializes");
        engine.set_input(regorus::Value::from(input));
        let value = engine
            .eval_rule(DECISION_RULE.to_owned())
            .map_err(|e| PolicyError::Evaluation(e.to_string()))?;
        if value == regorus::Value::Undefined {
            return Err(PolicyError::BadDecision(
                "`decision` is undefined for this input (give it a default)".into(),
            ));
        }
        let value =
            serde_json::to_value(&value).map_err(|e| PolicyError::BadDecision(e.to_string()))?;
        let decision: Decision = serde_json::from_value(value.clone())
            .map_err(|e| PolicyError::BadDecision(format!("{e}: {value}")))?;
        if decision.max_ttl.is_some_and(|t| t <= 0)
            || decision
                .rate_limit
                .is_some_and(|r| r.count == 0 || r.per_seconds <= 0)
        {
            return Err(PolicyError::BadDecision(format!(
                "max_ttl and rate_limit must be positive: {value}"
            )));
        }
        Ok(decision)
    }
}

/// The policy in force for an installation: its policy file, reloaded when the file changes
/// (checked at most once a second), or the built-in default when there is none. A changed file
/// that does not compile leaves the previous policy in force and is reported.
pub struct PolicySource {
    path: Option<PathBuf>,
    current: RwLock<Arc<Policy>>,
    checked: Mutex<(Instant, Option<FileStamp>)>,
    problem: Mutex<Option<PolicyError>>,
}

type FileStamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl PolicySource {
    /// The policy at `path` if that file exists (it must compile), else the built-in default.
    pub fn load(path: &Path) -> Result<PolicySource, PolicyError> {
        let (policy, path) = if path.exists() {
            (Policy::from_file(path)?, Some(path.to_owned()))
        } else {
            (Policy::builtin(), None)
        };
        let stamp = path.as_deref().and_then(stamp);
        Ok(PolicySource {
            path,
            current: RwLock::new(Arc::new(policy)),
            checked: Mutex::new((Instant::now(), stamp)),
            problem: Mutex::new(None),
        })
    }

    /// The policy in force now, reloaded first if its file changed. The check (a `stat`, and a
    /// compile when the file changed) is made by one caller at a time; callers arriving during
    /// it use the policy in force rather than wait behind the file system.
    pub fn current(&self) -> Arc<Policy> {
        if let Some(path) = &self.path {
            let checked = match self.checked.try_lock() {
                Ok(checked) => Some(checked),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut checked) = checked
                && checked.0.elapsed() >= RELOAD_CHECK
            {
                checked.0 = Instant::now();
                let now = stamp(path);
                if now != checked.1 {
                    checked.1 = now;
                    self.reload(path);
                }
            }
        }
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reload(&self, path: &Path) {
        match Policy::from_file(path) {
            Ok(policy) => {
                tracing::info!(policy = %path.display(), "policy reloaded");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
                *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Err(error) => {
                tracing::error!(%error, "policy file changed but cannot be used; the previous policy stays in force");
                *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
            }
        }
    }

    /// The last reload failure, if the file in force is older than the file on disk.
    pub fn problem(&self) -> Option<PolicyError> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The policy input as JSON, for explanations.
pub fn describe(input: &PolicyInput) -> Value {
    serde_json::to_value(input).expect("policy input serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_policy_allows_with_bounds() {
        let decision = Policy::builtin()
            .evaluate(&PolicyInput::new("agent://a", "sign_action"))
            .unwrap();
        assert!(decision.allow);
        assert_eq!(decision.max_ttl, Some(900));
        assert_eq!(
            decision.rate_limit,
            Some(RateLimit {
                count: 120,
                per_seconds: 60
            })
        );
    }

    #[test]
    fn a_policy_that_does_not_compile_or_decide_is_refused_with_its_reason() {
        let broken =
            Policy::from_source("broken.rego", "package agentseal\ndecision := {").unwrap_err();
        assert!(matches!(broken, PolicyError::Invalid { .. }), "{broken}");
        let no_decision =
            Policy::from_source("none.rego", "package agentseal\nx := 1").unwrap_err();
        assert!(
            no_decision.to_string().contains("none.rego"),
            "{no_decision}"
        );
        let not_bool = Policy::from_source(
            "bad.rego",
            "package agentseal\ndecision := {\"allow\": \"yes\"}",
        )
        .unwrap_err();
        assert!(not_bool.to_string().contains("allow"), "{not_bool}");
    }

    #[test]
    fn a_looping_policy_is_stopped_not_left_running() {
        // A comprehension over a huge range: stopped by the execution limit.
        let source = r#"package agentseal
import rego.v1
default decision := {"allow": true}
decision := {"allow": false} if {
    input.operation == "loop"
    count([x | some x in numbers.range(1, 100000000)]) > 0
}"#;
        let policy = Policy::from_source("loop.rego", source).unwrap();
        let error = policy
            .evaluate(&PolicyInput::new("agent://a", "loop"))
            .unwrap_err();
        assert!(matches!(error, PolicyError::Evaluation(_)), "{error}");
    }
}
