//! The installation's lifetime limits: how long a certificate and a revocation list may be
//! valid. Capped by default, changeable by the operator within fixed ceilings.

use super::*;

/// Default certificate lifetime: 90 days (shorter when the limit is).
pub const DEFAULT_CERT_TTL: i64 = 90 * 86_400;
/// Default longest certificate lifetime: 366 days. A longer-lived certificate outlasts any
/// reasonable exposure of its keys, and keeps its revocation in every list until it expires.
pub const MAX_CERT_TTL: i64 = 366 * 86_400;
/// Default revocation list validity: one hour until `next_update` (shorter when the limit is).
pub const DEFAULT_CRL_VALIDITY: i64 = 3_600;
/// Default longest revocation list validity: seven days. An offline verifier trusts a list until
/// its `next_update`, so this bounds how long a revocation can go unseen by one holding an older
/// list.
pub const MAX_CRL_VALIDITY: i64 = 7 * 86_400;
/// No installation may allow certificates longer than ten years...
pub const CEILING_CERT_TTL: i64 = 3_653 * 86_400;
/// ...or revocation lists valid longer than 90 days.
pub const CEILING_CRL_VALIDITY: i64 = 90 * 86_400;

/// The meta key the limits are kept under.
const META_KEY: &str = "limits";

/// How long what the CA signs may be valid, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest certificate lifetime.
    pub max_cert_ttl: i64,
    /// Longest revocation list validity.
    pub max_crl_validity: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cert_ttl: MAX_CERT_TTL,
            max_crl_validity: MAX_CRL_VALIDITY,
        }
    }
}

impl Limits {
    /// Refuses limits that are not positive or above the ceilings.
    pub fn check(&self) -> Result<(), ServiceError> {
        for (name, value, ceiling) in [
            ("certificate lifetime", self.max_cert_ttl, CEILING_CERT_TTL),
            (
                "revocation list validity",
                self.max_crl_validity,
                CEILING_CRL_VALIDITY,
            ),
        ] {
            if value <= 0 || value > ceiling {
                return Err(ServiceError::InvalidInput(format!(
                    "the longest {name} must be between 1 s and {} days, not {value} s",
                    ceiling / 86_400
                )));
            }
        }
        Ok(())
    }

    /// The certificate lifetime to use: `ttl`, or the default (at most the limit); refused
    /// unless positive and within the limit.
    pub fn cert_ttl(&self, ttl: Option<i64>) -> Result<i64, ServiceError> {
        within(
            ttl.unwrap_or(DEFAULT_CERT_TTL.min(self.max_cert_ttl)),
            self.max_cert_ttl,
            "certificate lifetime",
        )
    }

    /// The revocation list validity to use: `validity`, or the default (at most the limit);
    /// refused unless positive and within the limit.
    pub fn crl_validity(&self, validity: Option<i64>) -> Result<i64, ServiceError> {
        within(
            validity.unwrap_or(DEFAULT_CRL_VALIDITY.min(self.max_crl_validity)),
            self.max_crl_validity,
            "revocation list validity",
        )
    }
}

fn within(value: i64, limit: i64, name: &str) -> Result<i64, ServiceError> {
    if value <= 0 || value > limit {
        return Err(ServiceError::InvalidInput(format!(
            "{name} must be between 1 s and {} (this installation's limit), not {value} s",
            humanize(limit)
        )));
    }
    Ok(value)
}

/// `limit` in whole days when it is some, otherwise in seconds.
fn humanize(seconds: i64) -> String {
    if seconds % 86_400 == 0 {
        format!("{} days", seconds / 86_400)
    } else {
        format!("{seconds} s")
    }
}

impl Installation {
    /// The installation's limits (the defaults until an operator sets others).
    pub fn limits(&self) -> Result<Limits, ServiceError> {
        match self.store.meta(META_KEY)? {
            None => Ok(Limits::default()),
            Some(json) => {
                let limits: Limits =
                    serde_json::from_str(&json).map_err(|_| self.store.corrupt("limits"))?;
                limits.check()?;
                Ok(limits)
            }
        }
    }

    /// Sets the installation's limits, for certificates and lists issued from now on (what
    /// was issued keeps its lifetime: revoke it to cut it short).
    pub fn set_limits(&self, limits: Limits) -> Result<(), ServiceError> {
        limits.check()?;
        let json = serde_json::to_string(&limits).expect("limits serialize");
        Ok(self.store.set_meta(&[(META_KEY, &json)])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_shrink_to_a_shorter_limit_and_nothing_passes_a_limit() {
        let limits = Limits::default();
        assert_eq!(limits.cert_ttl(None).unwrap(), DEFAULT_CERT_TTL);
        assert_eq!(limits.cert_ttl(Some(MAX_CERT_TTL)).unwrap(), MAX_CERT_TTL);
        assert!(limits.cert_ttl(Some(MAX_CERT_TTL + 1)).is_err());
        assert!(limits.cert_ttl(Some(0)).is_err());
        assert!(limits.crl_validity(Some(MAX_CRL_VALIDITY + 1)).is_err());
        let short = Limits {
            max_cert_ttl: 86_400,
            max_crl_validity: 600,
        };
        assert_eq!(short.cert_ttl(None).unwrap(), 86_400);
        assert_eq!(short.crl_validity(None).unwrap(), 600);
        assert!(short.crl_validity(Some(601)).is_err());
        let beyond = Limits {
            max_cert_ttl: CEILING_CERT_TTL + 1,
            ..Limits::default()
        };
        assert!(beyond.check().is_err());
        assert!(
            Limits {
                max_crl_validity: 0,
                ..Limits::default()
            }
            .check()
            .is_err()
        );
    }
}
