//! `agentseal federation trust|list|remove`: which workload issuers may exchange their tokens at
//! the hub's token endpoint, and for which agent.

use std::path::PathBuf;

use agentseal::authority::{Installation, ServiceError};
use agentseal::federation::rule::check_jwks_url;
use agentseal::federation::{KeySource, TrustRule, keys};
use agentseal::token::access::Scope;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use super::input::parse_duration;
use super::{Facts, Operation, Outcome};

#[derive(Subcommand)]
pub enum FederationCommand {
    /// Trust a workload issuer (Kubernetes, SPIFFE, GitHub Actions, a cloud's OIDC): its JWTs
    /// with the right audience and an admitted subject are exchanged at POST /oauth/token for
    /// an access token of the agent the rule maps them to.
    Trust(Box<TrustArgs>),
    /// List the trust rules (JSON).
    List(ListArgs),
    /// Remove a trust rule; tokens issued through it stay valid until they expire (revoke
    /// them, or the agent, to cut them off).
    Remove(RemoveArgs),
}

impl FederationCommand {
    pub fn operation(&self) -> &dyn Operation {
        match self {
            FederationCommand::Trust(trust) => trust.as_ref(),
            FederationCommand::List(list) => list,
            FederationCommand::Remove(remove) => remove,
        }
    }
}

/// `agentseal federation trust`.
#[derive(Args)]
#[command(group(ArgGroup::new("keys").required(true).args(["jwks_url", "jwks_file"])))]
pub struct TrustArgs {
    /// A name for the rule (a-z 0-9 . _ -).
    name: String,
    /// The issuer, exactly as its tokens' `iss` says (e.g. https://kubernetes.default.svc,
    /// https://token.actions.githubusercontent.com).
    #[arg(long)]
    issuer: String,
    /// The issuer's JWKS URL (https; http only on loopback), fetched and cached.
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// The issuer's JWKS from a file, kept in the rule (for clusters whose keys are not
    /// reachable: `kubectl get --raw /openid/v1/jwks > jwks.json`).
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// The subjects admitted: exact, or with `*` for one or more characters, e.g.
    /// system:serviceaccount:prod:*.
    #[arg(long)]
    subject: String,
    /// The agent a subject acts as: an agent id, or a template with {claim} or {/json/pointer}
    /// placeholders, e.g. agent://k8s/{/kubernetes.io/serviceaccount/name}.
    #[arg(long)]
    agent: String,
    /// What the tokens' `aud` must contain: one of this hub's URLs [default: the URL the hub
    /// last ran at].
    #[arg(long)]
    audience: Option<String>,
    /// A claim that must hold exactly VALUE, repeatable: a top-level claim or a /json/pointer
    /// (numbers match their decimal text), e.g. repository_owner_id=1234 to pin a GitHub
    /// organization by its id.
    #[arg(long = "claim", value_name = "CLAIM=VALUE", value_parser = parse_condition)]
    conditions: Vec<(String, String)>,
    /// Space-separated scopes granted (default: all): agentseal:sign agentseal:verify
    /// agentseal:revoke.
    #[arg(long)]
    scope: Option<String>,
    /// Longest lifetime of an issued access token (never past the presented token's exp).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    max_ttl: i64,
    /// Longest lifetime (exp - iat) of a presented token.
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    max_assertion_lifetime: i64,
    /// How long fetched keys are used before fetching again.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    jwks_refresh: i64,
    /// How long fetched keys stay usable while the JWKS URL cannot be reached; past it, every
    /// exchange for the issuer is refused.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    jwks_grace: i64,
    /// Replace a rule of the same name.
    #[arg(long)]
    replace: bool,
}

fn parse_condition(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((claim, value)) if !claim.is_empty() => Ok((claim.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: give CLAIM=VALUE")),
    }
}

impl Operation for TrustArgs {
    fn facts(&self) -> Facts {
        let jwks = match (&self.jwks_url, &self.jwks_file) {
            (Some(url), _) => url.clone(),
            (None, Some(path)) => format!("file {}", path.display()),
            (None, None) => String::new(),
        };
        let conditions: Vec<String> = self
            .conditions
            .iter()
            .map(|(claim, value)| format!("{claim}={value}"))
            .collect();
        Facts::new("federation.trust")
            .with("id", &self.name)
            .with("issuer", &self.issuer)
            .with("jwks", &jwks)
            .with("subject_pattern", &self.subject)
            .with("agent_template", &self.agent)
            .with_some("audience", self.audience.as_deref())
            .with_some("scope", self.scope.as_deref())
            .with_some(
                "conditions",
                (!conditions.is_empty())
                    .then(|| conditions.join(" "))
                    .as_deref(),
            )
            .with("replace", if self.replace { "true" } else { "false" })
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let invalid = |e: String| ServiceError::InvalidInput(e);
        let keys = match (&self.jwks_url, &self.jwks_file) {
            (Some(url), _) => {
                check_jwks_url(url).map_err(|e| invalid(e.to_string()))?;
                KeySource::Url(url.clone())
            }
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|source| ServiceError::Io {
                    path: path.clone(),
                    source,
                })?;
                let jwks = keys::parse_jwks(&bytes)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                KeySource::Inline(jwks)
            }
            (None, None) => return Err(invalid("give --jwks-url or --jwks-file".into())),
        };
        let audience = match &self.audience {
            Some(audience) => audience.clone(),
            // The hub's issuer identifier (RFC 8414), as its metadata says it.
            None => installation
                .public_url()?
                .map(|url| url.trim_end_matches('/').to_owned())
                .ok_or_else(|| {
                    invalid(
                        "give --audience: the hub's public URL (it is recorded when `serve --http` starts)"
                            .into(),
                    )
                })?,
        };
        let scopes = match &self.scope {
            Some(text) => Scope::parse_list(text).map_err(invalid)?,
            None => Scope::ALL.to_vec(),
        };
        let rule = TrustRule {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            keys,
            audience,
            subject: self.subject.clone(),
            agent: self.agent.clone(),
            conditions: self.conditions.clone(),
            scopes,
            max_ttl: self.max_ttl,
            max_assertion_lifetime: self.max_assertion_lifetime,
            jwks_refresh: self.jwks_refresh,
            jwks_grace: self.jwks_grace,
            created_at: agentseal::clock::now(),
        };
        installation.trust_workloads(&rule, self.replace)?;
        Ok(Outcome::Json(describe(&rule)))
    }
}

/// A rule as shown: an inline JWKS is summarized by its key ids.
fn describe(rule: &TrustRule) -> serde_json::Value {
    let mut value = json!(rule);
    if let KeySource::Inline(jwks) = &rule.keys {
        let kids: Vec<serde_json::Value> = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| k.get("kid").cloned().unwrap_or_default())
            .collect();
        value["keys"] = json!({ "inline": { "kids": kids } });
    }
    value
}

/// `agentseal federation list`.
#[derive(Args)]
pub struct ListArgs {}

impl Operation for ListArgs {
    fn facts(&self) -> Facts {
        Facts::new("federation.list")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let rules = installation.federation_rules()?;
        Ok(Outcome::Json(json!({
            "rules": rules.iter().map(describe).collect::<Vec<_>>(),
        })))
    }
}

/// `agentseal federation remove`.
#[derive(Args)]
pub struct RemoveArgs {
    /// The rule's name.
    name: String,
}

impl Operation for RemoveArgs {
    fn facts(&self) -> Facts {
        Facts::new("federation.remove").with("id", &self.name)
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        // What is removed, for the audit record too (a rule that no longer reads is removed
        // all the same).
        let rule = installation.federation_rule(&self.name).ok().flatten();
        if !installation.remove_federation_rule(&self.name)? {
            return Err(ServiceError::InvalidInput(format!(
                "no trust rule named {}: see `agentseal federation list`",
                self.name
            )));
        }
        Ok(Outcome::Json(json!({
            "removed": self.name,
            "issuer": rule.as_ref().map(|r| &r.issuer),
            "subject_pattern": rule.as_ref().map(|r| &r.subject),
            "agent_template": rule.as_ref().map(|r| &r.agent),
        })))
    }
}
