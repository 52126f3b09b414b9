//! Trust in another hub's CA, fetched over HTTP: its trust anchor
//! (`/.well-known/agentseal-ca.json`) and signed revocation list (`/crl`), cached and refreshed
//! when the list's `next_update` passes. A list older than `next_update` plus the configured
//! grace makes every lookup fail closed with `revocation_unavailable`.
//!
//! The CA learned at the first fetch is pinned: a hub that later answers with another CA id or
//! other CA keys is refused, and the cached data is kept (it then turns stale and fails closed).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::jose::{self, JwkSet};
use crate::reason::VerifyError;
use crate::token::revocation::RevocationList;
use crate::token::trust::TrustAnchor;

/// Largest trust anchor document accepted.
const MAX_ANCHOR_LEN: usize = 256 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a fetched list is used before asking the hub again (the hub publishes every
/// revocation at once, with `max-age` at most a minute).
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(60);
/// How long after a failed fetch no new one is tried (callers get the cached data meanwhile).
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why a hub's data could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The URL is not a usable hub base URL.
    #[error("hub URL {0:?} must be http(s)://host[:port]")]
    BadUrl(String),
    /// The hub could not be reached or answered with an error.
    #[error("fetching {url}: {detail}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// What the hub sent does not verify.
    #[error("{url}: {error}")]
    Invalid {
        /// What was fetched.
        url: String,
        /// The verification failure.
        error: VerifyError,
    },
    /// The hub now names another CA than the one first learned, or keys its earlier keys did
    /// not endorse.
    #[error(
        "hub {0} changed its CA id or keys without an endorsement by the keys trusted: refusing the new ones"
    )]
    CaChanged(String),
}

/// A verified view of a hub's CA at one moment.
#[derive(Debug, Clone)]
pub struct HubSnapshot {
    /// The hub's CA.
    pub anchor: TrustAnchor,
    /// The newest CA key generation a rotation statement vouched for (0 before any).
    pub ca_generation: u32,
    /// Its latest verified revocation list.
    pub crl: RevocationList,
    /// When it was fetched (seconds since the epoch).
    pub fetched_at: i64,
}

#[derive(Deserialize)]
struct AnchorDocument {
    ca_id: String,
    /// The current keys endorsed by the previous generation (after a CA key rotation).
    #[serde(default)]
    rotation: Option<String>,
    #[serde(flatten)]
    keys: JwkSet,
}

impl HubSnapshot {
    /// The snapshot as trust for the core's verifications.
    pub fn trust(&self) -> super::ExternalTrust<'_> {
        super::ExternalTrust {
            anchor: &self.anchor,
            revocation: &self.crl,
        }
    }
}

/// A hub whose CA this verifier trusts.
#[derive(Debug)]
pub struct HubTrust {
    base: reqwest::Url,
    grace: i64,
    client: reqwest::Client,
    state: RwLock<Option<Arc<HubSnapshot>>>,
    refreshing: tokio::sync::Mutex<()>,
    last_failure: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Whether a snapshot should be refetched.
fn due(snapshot: &HubSnapshot) -> bool {
    let now = crate::clock::now();
    now >= snapshot.crl.claims.next_update
        || now
            >= snapshot
                .fetched_at
                .saturating_add(MAX_CACHE_AGE.as_secs() as i64)
}

impl HubTrust {
    /// Trusts the hub at `url` (its base URL), using its revocation lists up to `grace` seconds
    /// past their `next_update`.
    pub fn new(url: &str, grace: i64) -> Result<Self, HubError> {
        let base = reqwest::Url::parse(url).map_err(|_| HubError::BadUrl(url.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https")
            || base.host_str().is_none()
            || base.query().is_some()
        {
            return Err(HubError::BadUrl(url.to_owned()));
        }
        let client = fetch_client().map_err(|detail| HubError::Fetch {
            url: url.to_owned(),
            detail,
        })?;
        Ok(HubTrust {
            base,
            grace: grace.max(0),
            client,
            state: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    /// The hub's base URL.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// The cached snapshot, without fetching.
    pub fn cached(&self) -> Option<Arc<HubSnapshot>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The snapshot to verify with: the cached one until its list's `next_update` (or for at
    /// most [`MAX_CACHE_AGE`], so revocations arrive within a minute), otherwise a fresh fetch;
    /// if that fails, the cached one (whose lookups fail closed once past the grace), and no new
    /// attempt for [`RETRY_AFTER`]. `None` if the hub was never reached.
    pub async fn current(&self) -> Option<Arc<HubSnapshot>> {
        if let Some(snapshot) = self.cached()
            && !due(&snapshot)
        {
            return Some(snapshot);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        // Another caller may have refreshed, or failed to, while this one waited.
        if let Some(snapshot) = self.cached()
            && !due(&snapshot)
        {
            return Some(snapshot);
        }
        let failed_recently = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < RETRY_AFTER);
        if failed_recently {
            return self.cached();
        }
        match self.fetch_snapshot().await {
            Ok(snapshot) => Some(snapshot),
            Err(error) => {
                tracing::warn!(hub = %self.base, %error, "revocation data not refreshed");
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(std::time::Instant::now());
                self.cached()
            }
        }
    }

    /// Fetches and verifies the hub's CA and revocation list now.
    pub async fn refresh(&self) -> Result<Arc<HubSnapshot>, HubError> {
        let _one_at_a_time = self.refreshing.lock().await;
        self.fetch_snapshot().await
    }

    async fn fetch_snapshot(&self) -> Result<Arc<HubSnapshot>, HubError> {
        let previous = self.cached();
        let anchor_url = self.join("/.well-known/agentseal-ca.json")?;
        let document = self.fetch(&anchor_url, MAX_ANCHOR_LEN).await?;
        let invalid = |url: &reqwest::Url, error: VerifyError| HubError::Invalid {
            url: url.to_string(),
            error,
        };
        let document: AnchorDocument = jose::parse_strict_object(&document, "hub CA document")
            .map_err(|e| invalid(&anchor_url, e))?;
        let keys = document
            .keys
            .keys
            .iter()
            .map(jose::Jwk::to_public_key)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&anchor_url, e))?;
        if keys.is_empty() {
            return Err(invalid(
                &anchor_url,
                VerifyError::Malformed("the hub lists no CA keys".into()),
            ));
        }
        let anchor = TrustAnchor {
            ca_id: document.ca_id,
            keys,
        };
        // A rotation (new keys endorsed by those already trusted) or a retirement is followed;
        // any other change of CA is refused.
        let rotation = document
            .rotation
            .as_deref()
            .and_then(TrustAnchor::rotation_claims);
        let mut generation = rotation.as_ref().map_or(0, |r| r.generation);
        if let Some(previous) = &previous {
            generation = previous.ca_generation;
            if previous.anchor != anchor {
                match previous.anchor.accepts_successor(
                    &anchor,
                    document.rotation.as_deref(),
                    previous.ca_generation,
                ) {
                    Ok(seen) => generation = seen,
                    Err(error) => {
                        tracing::warn!(hub = %self.base, %error, "refusing the hub's new CA keys");
                        return Err(HubError::CaChanged(self.base.to_string()));
                    }
                }
                tracing::info!(hub = %self.base, "following the hub's CA key change");
            }
        }
        let crl_url = self.join("/crl")?;
        let encoded = self.fetch(&crl_url, jose::MAX_CRL_LEN).await?;
        let encoded = String::from_utf8(encoded).map_err(|_| {
            invalid(
                &crl_url,
                VerifyError::Malformed("revocation list is not UTF-8".into()),
            )
        })?;
        // A list served as a file (`agentseal crl > crl.jwt` on a static server) ends in a line
        // ending, which is the file's, not the token's.
        let encoded = encoded
            .strip_suffix("\r\n")
            .or_else(|| encoded.strip_suffix('\n'))
            .unwrap_or(&encoded);
        let crl = RevocationList::verify_newer(
            encoded,
            &anchor,
            self.grace,
            previous.as_ref().map(|p| p.crl.claims.number),
        )
        .map_err(|e| invalid(&crl_url, e))?;
        // The list is signed by the CA's current keys and names every key it still vouches
        // for: a retired key stops being trusted even if the document still shows it. A list
        // made before the latest rotation does not know the new keys: it is not used for this.
        let anchor = match &crl.claims.ca_keys {
            Some(vouched) if rotation.as_ref().is_none_or(|r| crl.claims.iat >= r.iat) => {
                anchor.restricted_to(vouched)
            }
            _ => anchor,
        };
        let snapshot = Arc::new(HubSnapshot {
            anchor,
            ca_generation: generation,
            crl,
            fetched_at: crate::clock::now(),
        });
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::debug!(hub = %self.base, number = snapshot.crl.claims.number, "revocation list refreshed");
        Ok(snapshot)
    }

    fn join(&self, path: &str) -> Result<reqwest::Url, HubError> {
        self.base
            .join(path)
            .map_err(|_| HubError::BadUrl(self.base.to_string()))
    }

    async fn fetch(&self, url: &reqwest::Url, limit: usize) -> Result<Vec<u8>, HubError> {
        fetch_limited(&self.client, url, limit)
            .await
            .map_err(|detail| HubError::Fetch {
                url: url.to_string(),
                detail,
            })
    }
}

/// A client for fetching published keys and lists: a bounded time per fetch, no redirects (the
/// URL the operator configured is the one trusted).
pub(crate) fn fetch_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// GETs `url`: its body if the answer is a success of at most `limit` bytes.
pub(crate) async fn fetch_limited(
    client: &reqwest::Client,
    url: &reqwest::Url,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
