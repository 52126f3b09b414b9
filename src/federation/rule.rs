//! Trust rules: which workload issuer the operator trusts, with which keys, for which subjects,
//! mapped to which agent and scopes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::token::access::{MAX_ACCESS_TTL, Scope};

/// Default lifetime cap of an access token issued through a rule: one hour.
pub const DEFAULT_MAX_TTL: i64 = 3_600;
/// Default cap on a presented assertion's whole lifetime (`exp` − `iat`): one day. Kubernetes
/// projected tokens default to one hour, GitHub Actions tokens live minutes.
pub const DEFAULT_MAX_ASSERTION_LIFETIME: i64 = 86_400;
/// Longest assertion lifetime a rule may allow: a week.
pub const CEILING_ASSERTION_LIFETIME: i64 = 7 * 86_400;
/// Default time a fetched JWKS is used before it is fetched again: five minutes.
pub const DEFAULT_JWKS_REFRESH: i64 = 300;
/// Default time a fetched JWKS stays usable while its URL cannot be reached: one hour. Past it,
/// every exchange for the issuer is refused (fail closed).
pub const DEFAULT_JWKS_GRACE: i64 = 3_600;
/// Longest refresh interval or grace a rule may set: one day.
pub const CEILING_JWKS_TIMING: i64 = 86_400;
/// Largest JWKS document accepted, fetched or from a file.
pub const MAX_JWKS_LEN: usize = 256 * 1024;

/// Where a rule's issuer keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeySource {
    /// A JWKS URL, fetched and cached (https, or http on a loopback address).
    Url(String),
    /// A JWKS given by the operator (read from a file when the rule was made), kept in the rule.
    Inline(Value),
}

/// One trust rule. Stored as JSON in the installation's database; every hub sharing the
/// database applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRule {
    /// The operator's name for the rule (`[a-z0-9._-]`, 1-64).
    pub name: String,
    /// The exact `iss` of the assertions.
    pub issuer: String,
    /// The issuer's signing keys.
    pub keys: KeySource,
    /// What the assertion's `aud` must contain: one of this hub's URLs.
    pub audience: String,
    /// The subjects (`sub`) the rule admits: exact, or with `*` standing for one or more
    /// characters (`system:serviceaccount:prod:*`).
    pub subject: String,
    /// The agent a subject acts as: an agent id, or a template with `{claim}` or
    /// `{/json/pointer}` placeholders (`agent://k8s/{/kubernetes.io/serviceaccount/name}`).
    pub agent: String,
    /// Claims that must hold exactly these values besides the subject (a top-level claim or a
    /// `/json/pointer`; a number matches its decimal text): `repository_owner_id=1234` pins a
    /// GitHub organization by its id, which survives a rename and cannot be re-registered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<(String, String)>,
    /// The scopes a token issued through the rule may carry.
    pub scopes: Vec<Scope>,
    /// Cap on an issued token's lifetime, in seconds.
    pub max_ttl: i64,
    /// Cap on an assertion's whole lifetime, in seconds.
    pub max_assertion_lifetime: i64,
    /// How long a fetched JWKS is used before fetching it again, in seconds.
    pub jwks_refresh: i64,
    /// How long a fetched JWKS stays usable when it cannot be fetched again, in seconds.
    pub jwks_grace: i64,
    /// When the rule was made.
    pub created_at: i64,
}

/// Why a rule cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError(message.into()))
}

/// A printable, bounded string: 1-`max` bytes, no control characters.
fn check_text(what: &str, value: &str, max: usize) -> Result<(), RuleError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return refuse(format!(
            "{what} must be 1-{max} bytes without control characters"
        ));
    }
    Ok(())
}

/// An http(s) URL; plain http only to a loopback host (keys fetched in the clear could be
/// swapped by anyone on the path).
pub fn check_jwks_url(url: &str) -> Result<(), RuleError> {
    let parsed = reqwest::Url::parse(url).or_else(|e| refuse(format!("JWKS URL {url:?}: {e}")))?;
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse(
            "the JWKS URL holds a user name or password: a JWKS is public, give its URL without",
        );
    }
    match parsed.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => refuse(format!(
            "JWKS URL {url:?} must be https (http only on a loopback address)"
        )),
    }
}

impl TrustRule {
    /// Checks everything that can be checked without the issuer: names, patterns, templates,
    /// scopes, limits and the keys' source.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return refuse(format!(
                "rule name {:?} must be 1-64 of a-z 0-9 . _ -",
                self.name
            ));
        }
        check_text("the issuer", &self.issuer, 512)?;
        check_text("the audience", &self.audience, 512)?;
        check_text("the subject pattern", &self.subject, 512)?;
        if self.subject.contains("**") {
            return refuse("the subject pattern may not contain \"**\"");
        }
        if self.subject.starts_with('*') {
            return refuse(
                "a subject pattern starts with what it pins: name the subjects, or use a prefix such as system:serviceaccount:prod:* or repo:acme/api:*",
            );
        }
        if self.conditions.len() > 16 {
            return refuse("at most 16 claim conditions");
        }
        for (claim, value) in &self.conditions {
            check_text("a condition's claim", claim, 128)?;
            check_text("a condition's value", value, 512)?;
        }
        check_text("the agent", &self.agent, 512)?;
        AgentTemplate::parse(&self.agent)?;
        if self.scopes.is_empty() {
            return refuse("give at least one scope");
        }
        let limits = [
            ("the token lifetime cap", self.max_ttl, 1, MAX_ACCESS_TTL),
            (
                "the assertion lifetime cap",
                self.max_assertion_lifetime,
                1,
                CEILING_ASSERTION_LIFETIME,
            ),
            (
                "the JWKS refresh interval",
                self.jwks_refresh,
                1,
                CEILING_JWKS_TIMING,
            ),
            ("the JWKS grace", self.jwks_grace, 0, CEILING_JWKS_TIMING),
        ];
        for (what, value, min, max) in limits {
            if !(min..=max).contains(&value) {
                return refuse(format!("{what} must be {min}-{max} seconds"));
            }
        }
        match &self.keys {
            KeySource::Url(url) => check_jwks_url(url),
            KeySource::Inline(jwks) => {
                let keys =
                    super::keys::usable_keys(jwks).or_else(|e| refuse(format!("the JWKS: {e}")))?;
                if keys.is_empty() {
                    return refuse(
                        "the JWKS holds no usable key (RSA, EC P-256 or Ed25519 signature keys)",
                    );
                }
                Ok(())
            }
        }
    }

    /// Whether `subject` is one the rule admits.
    pub fn admits(&self, subject: &str) -> bool {
        matches_pattern(&self.subject, subject)
    }

    /// The first condition `claims` do not meet, if any.
    pub fn unmet_condition(&self, claims: &Value) -> Option<&str> {
        self.conditions
            .iter()
            .find(|(claim, wanted)| {
                let found = claim_at(claims, claim);
                let text = match found {
                    Some(Value::String(text)) => Some(text.clone()),
                    Some(Value::Number(number)) => Some(number.to_string()),
                    Some(Value::Bool(flag)) => Some(flag.to_string()),
                    _ => None,
                };
                text.as_deref() != Some(wanted.as_str())
            })
            .map(|(claim, _)| claim.as_str())
    }
}

/// A claim by name, or by RFC 6901 pointer when the name starts with `/`.
fn claim_at<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        claims.pointer(name)
    } else {
        claims.get(name)
    }
}

/// Glob matching where `*` stands for one or more characters and everything else is literal.
fn matches_pattern(pattern: &str, subject: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = subject.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: exact.
        return rest.is_empty();
    };
    for part in middle {
        // At least one character for the `*` before `part`.
        let Some(skip) = rest.char_indices().nth(1).map(|(i, _)| i) else {
            return false;
        };
        match rest[skip..].find(part) {
            Some(at) => rest = &rest[skip + at + part.len()..],
            None => return false,
        }
    }
    // At least one character for the last `*`.
    rest.len() > last.len() && rest.ends_with(last)
}

/// An agent id template: literal text with `{claim}` (a top-level claim) or `{/pointer}` (an
/// RFC 6901 JSON pointer into the claims) placeholders. Values may not hold `/`, and two
/// placeholders must be parted by text holding a `/`: so no two different sets of values fill a
/// template to the same agent id (`{ns}-{name}` would map `a` + `b-c` and `a-b` + `c` alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTemplate {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Claim(String),
}

/// Characters a claim value may bring into an agent id: no `/`, so that two placeholders cannot
/// be made to collide by moving a separator from one value to the other.
fn claim_value_allowed(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b))
}

impl AgentTemplate {
    /// Parses `template`; `{` and `}` only as placeholder delimiters.
    pub fn parse(template: &str) -> Result<AgentTemplate, RuleError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return refuse(format!(
                    "unbalanced '}}' in the agent template {template:?}"
                ));
            }
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return refuse(format!("unclosed '{{' in the agent template {template:?}"));
            };
            let name = &rest[open + 1..open + close];
            if name.is_empty() || name.contains('{') {
                return refuse(format!(
                    "empty or nested placeholder in the agent template {template:?}"
                ));
            }
            let parted = parts.last().map(|part| match part {
                TemplatePart::Text(text) => text.contains('/'),
                TemplatePart::Claim(_) => false,
            });
            if parts
                .iter()
                .any(|part| matches!(part, TemplatePart::Claim(_)))
                && parted != Some(true)
            {
                return refuse(format!(
                    "in the agent template {template:?}, placeholders must be parted by a '/' (values cannot hold one), e.g. agent://k8s/{{ns}}/{{name}}"
                ));
            }
            parts.push(TemplatePart::Claim(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_owned()));
        }
        Ok(AgentTemplate { parts })
    }

    /// Whether the template names one fixed agent.
    pub fn is_fixed(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(p, TemplatePart::Text(_)))
    }

    /// The agent id for `claims`, or what is missing or unusable.
    pub fn render(&self, claims: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Claim(name) => match claim_at(claims, name).and_then(Value::as_str) {
                    Some(value) if claim_value_allowed(value) => out.push_str(value),
                    Some(_) => {
                        return Err(format!(
                            "claim {name} holds characters an agent id may not take from a claim (allowed: A-Z a-z 0-9 . _ - @ :, at most 128)"
                        ));
                    }
                    None => return Err(format!("the assertion has no string claim {name}")),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subject_patterns_match_literally_with_stars_for_one_or_more_characters() {
        let pattern = "system:serviceaccount:prod:*";
        assert!(matches_pattern(
            pattern,
            "system:serviceaccount:prod:billing"
        ));
        assert!(!matches_pattern(pattern, "system:serviceaccount:prod:"));
        assert!(!matches_pattern(
            pattern,
            "system:serviceaccount:production:x"
        ));
        assert!(!matches_pattern(pattern, "system:serviceaccount:staging:x"));
        assert!(matches_pattern("exact", "exact"));
        assert!(!matches_pattern("exact", "exactly"));
        assert!(matches_pattern(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/api:ref:refs/heads/main"
        ));
        assert!(!matches_pattern(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/api:ref:refs/heads/dev"
        ));
        assert!(!matches_pattern(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/:ref:refs/heads/main"
        ));
        assert!(matches_pattern("*-svc", "x-svc"));
        assert!(!matches_pattern("*-svc", "-svc"));
        assert!(matches_pattern("a*b*c", "axbyc"));
        assert!(!matches_pattern("a*b*c", "abc"));
    }

    #[test]
    fn agent_templates_take_only_safe_claim_values() {
        let claims = json!({
            "sub": "system:serviceaccount:prod:billing",
            "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "billing"}},
            "repository": "acme/api",
        });
        let template = AgentTemplate::parse(
            "agent://k8s/{/kubernetes.io/namespace}/{/kubernetes.io/serviceaccount/name}",
        )
        .unwrap();
        assert!(!template.is_fixed());
        assert_eq!(
            template.render(&claims).unwrap(),
            "agent://k8s/prod/billing"
        );
        // A `/` in a value could move a separator between placeholders.
        let template = AgentTemplate::parse("agent://gh/{repository}").unwrap();
        assert!(template.render(&claims).unwrap_err().contains("repository"));
        assert!(
            AgentTemplate::parse("agent://gh/{missing}")
                .unwrap()
                .render(&claims)
                .is_err()
        );
        assert!(AgentTemplate::parse("agent://fixed").unwrap().is_fixed());
        for bad in [
            "agent://{",
            "agent://}",
            "agent://{}",
            "agent://{a{b}}",
            // Values that could run together.
            "agent://k8s/{ns}-{name}",
            "agent://k8s/{ns}{name}",
            "agent://k8s/{ns}.{name}",
        ] {
            assert!(AgentTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    fn rule() -> TrustRule {
        TrustRule {
            name: "k8s".into(),
            issuer: "https://issuer.example".into(),
            keys: KeySource::Url("https://issuer.example/jwks".into()),
            audience: "https://hub.example".into(),
            subject: "system:serviceaccount:prod:*".into(),
            agent: "agent://k8s/{sub}".into(),
            conditions: vec![("repository_owner_id".into(), "4242".into())],
            scopes: vec![Scope::Verify],
            max_ttl: DEFAULT_MAX_TTL,
            max_assertion_lifetime: DEFAULT_MAX_ASSERTION_LIFETIME,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            jwks_grace: DEFAULT_JWKS_GRACE,
            created_at: 0,
        }
    }

    #[test]
    fn rules_refuse_what_would_admit_too_much_or_leak() {
        assert!(rule().validate().is_ok());
        let refused = |change: &dyn Fn(&mut TrustRule)| {
            let mut bad = rule();
            change(&mut bad);
            bad.validate().is_err()
        };
        assert!(refused(&|r| r.subject = "*".into()));
        assert!(refused(&|r| r.subject = "*:ref:refs/heads/main".into()));
        assert!(refused(&|r| r.name = "Upper".into()));
        assert!(refused(&|r| r.scopes.clear()));
        assert!(refused(&|r| r.max_ttl = MAX_ACCESS_TTL + 1));
        assert!(refused(
            &|r| r.keys = KeySource::Url("http://issuer.example/jwks".into())
        ));
        assert!(refused(&|r| {
            r.keys = KeySource::Url("https://user:pw@issuer.example/jwks".into())
        }));
        assert!(!refused(
            &|r| r.keys = KeySource::Url("http://127.0.0.1:8080/jwks".into())
        ));
        assert!(refused(&|r| r.keys = KeySource::Inline(json!({"keys": []}))));
        assert!(refused(&|r| r.agent = "agent://k8s/{a}{b}".into()));
    }

    #[test]
    fn conditions_pin_claims_by_exact_value() {
        let rule = rule();
        assert_eq!(
            rule.unmet_condition(&json!({"repository_owner_id": 4242})),
            None
        );
        assert_eq!(
            rule.unmet_condition(&json!({"repository_owner_id": "4242"})),
            None
        );
        assert_eq!(
            rule.unmet_condition(&json!({"repository_owner_id": 42420})),
            Some("repository_owner_id")
        );
        assert_eq!(
            rule.unmet_condition(&json!({})),
            Some("repository_owner_id")
        );
    }
}
