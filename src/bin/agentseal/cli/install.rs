//! The installation itself: `init`, `status`, `limits`, `jwks` and `destroy`, and opening it for
//! every other command.

use std::path::Path;

use agentseal::authority::{InitOptions, Installation, KeyChoice, Limits, ServiceError};
use agentseal::keystore::KeyStoreKind;
use agentseal::store::Location;
use clap::Args;
use serde_json::json;

use super::input::parse_duration;
use super::{Facts, Operation, Outcome};

/// `agentseal init`.
#[derive(Args)]
pub struct InitArgs {
    /// The CA id written into every certificate's `iss` [default: urn:agentseal:ca:<random>].
    #[arg(long)]
    ca_id: Option<String>,
    /// The CA's keys.
    #[arg(
        long,
        default_value = "hybrid",
        value_name = "ed25519|ml-dsa-65|hybrid"
    )]
    alg: KeyChoice,
    /// The longest certificate lifetime this CA issues (`agentseal limits` changes it later).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "366d")]
    max_cert_ttl: i64,
    /// The longest revocation list validity this CA issues.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    max_crl_validity: i64,
}

impl InitArgs {
    /// The audit record's operation and request facts.
    fn facts(&self) -> Facts {
        Facts::new("init").with_some("id", self.ca_id.as_deref())
    }

    /// Creates the installation in `dir` and records that; re-running init reports the
    /// existing installation and changes nothing.
    pub fn run(
        &self,
        dir: &Path,
        db: &Location,
        key_store: KeyStoreKind,
    ) -> Result<Outcome, ServiceError> {
        let options = InitOptions {
            ca_id: self.ca_id.clone(),
            keys: self.alg,
            limits: Limits {
                max_cert_ttl: self.max_cert_ttl,
                max_crl_validity: self.max_crl_validity,
            },
        };
        if !matches!(db, Location::Sqlite(path) if path.exists()) {
            warn_before_creating(key_store);
        }
        let installation = match Installation::init_in(dir, db, key_store, &options) {
            Err(ServiceError::AlreadyInitialized(_)) => {
                // Re-running init is harmless: report the existing installation, change nothing.
                let existing = Installation::open_in(dir, db, key_store)?;
                eprintln!("agentseal: {db} already holds an installation; nothing changed");
                return Ok(Outcome::Json(json!(existing.info())));
            }
            other => other?,
        };
        let info = installation.info();
        eprintln!(
            "agentseal: CA {} created; keys in the {} key store",
            info.ca_id, info.key_store
        );
        tracing::info!(ca_id = %info.ca_id, key_store = %info.key_store, "installation created");
        let info = json!(info);
        self.facts().record(&installation, Ok(&info))?;
        Ok(Outcome::Json(info))
    }
}

/// Opens the installation in `dir`; if there is none and `create`, creates one with the
/// default options and says so.
pub fn open(
    dir: &Path,
    db: &Location,
    key_store: KeyStoreKind,
    create: bool,
) -> Result<Installation, ServiceError> {
    match Installation::open_in(dir, db, key_store) {
        Err(ServiceError::NotInitialized(_)) if create => {
            warn_before_creating(key_store);
            let installation = Installation::init_in(dir, db, key_store, &InitOptions::default())?;
            let info = installation.info();
            eprintln!(
                "agentseal: new installation in {}: CA {}, keys in the {} key store",
                dir.display(),
                info.ca_id,
                info.key_store
            );
            Ok(installation)
        }
        other => other,
    }
}

/// Says what the operator must know about the key store before keys are made in it (keyutils
/// loses them at a reboot).
fn warn_before_creating(key_store: KeyStoreKind) {
    let kind = match key_store {
        KeyStoreKind::Auto => agentseal::keystore::resolve_auto(),
        other => other,
    };
    if let Some(caveat) = kind.caveat() {
        eprintln!("warning: {caveat}");
    }
}

/// `agentseal status`.
#[derive(Args)]
pub struct StatusArgs {}

impl Operation for StatusArgs {
    fn facts(&self) -> Facts {
        Facts::new("status")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let mut status = json!(installation.info());
        status["limits"] = json!(installation.limits()?);
        let warnings = installation.agent_id_warnings()?;
        if !warnings.is_empty() {
            for warning in &warnings {
                eprintln!("agentseal: warning: {warning}");
            }
            status["warnings"] = json!(warnings);
        }
        Ok(Outcome::Json(status))
    }
}

/// `agentseal limits`.
#[derive(Args)]
pub struct LimitsArgs {
    /// Set the longest certificate lifetime (up to 3653 days).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_cert_ttl: Option<i64>,
    /// Set the longest revocation list validity (up to 90 days).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_crl_validity: Option<i64>,
}

impl Operation for LimitsArgs {
    fn facts(&self) -> Facts {
        let seconds = |v: Option<i64>| v.map(|v| v.to_string());
        Facts::new("limits")
            .with_some("max_cert_ttl", seconds(self.max_cert_ttl).as_deref())
            .with_some(
                "max_crl_validity",
                seconds(self.max_crl_validity).as_deref(),
            )
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        let mut limits = installation.limits()?;
        if self.max_cert_ttl.is_some() || self.max_crl_validity.is_some() {
            limits.max_cert_ttl = self.max_cert_ttl.unwrap_or(limits.max_cert_ttl);
            limits.max_crl_validity = self.max_crl_validity.unwrap_or(limits.max_crl_validity);
            installation.set_limits(limits)?;
        }
        Ok(Outcome::Json(json!(limits)))
    }
}

/// `agentseal jwks`.
#[derive(Args)]
pub struct JwksArgs {
    /// Also list every agent's current keys. Never use that set as a trust anchor: any
    /// agent could then sign certificates.
    #[arg(long)]
    with_agents: bool,
}

impl Operation for JwksArgs {
    fn facts(&self) -> Facts {
        Facts::new("jwks")
    }

    fn run(&self, installation: &Installation) -> Result<Outcome, ServiceError> {
        Ok(Outcome::Json(if self.with_agents {
            json!(installation.jwks()?)
        } else {
            json!(installation.trust_anchor().jwks())
        }))
    }
}

/// `agentseal destroy`: not recorded in the audit log, which goes with the installation.
#[derive(Args)]
pub struct DestroyArgs {
    /// The installation's CA id (see `agentseal status`), to confirm.
    #[arg(long, value_name = "CA_ID")]
    confirm: String,
}

impl DestroyArgs {
    /// Deletes `installation` (in `dir`) once --confirm names its CA.
    pub fn run(&self, installation: Installation, dir: &Path) -> Result<Outcome, ServiceError> {
        let ca_id = &installation.trust_anchor().ca_id;
        if self.confirm != *ca_id {
            return Err(ServiceError::InvalidInput(format!(
                "--confirm must be this installation's CA id, {ca_id}"
            )));
        }
        let deleted = installation.destroy()?;
        Ok(Outcome::Json(
            json!({ "destroyed": dir, "keys_deleted": deleted }),
        ))
    }
}
