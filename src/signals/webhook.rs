//! Standard Webhooks' side of a signal: the shared secret, the `webhook-signature` header (HMAC-SHA256
//! over id, timestamp and body), and where and how often to deliver.

use super::*;

/// The prefix of a serialized Standard Webhooks symmetric secret.
pub(super) const SECRET_PREFIX: &str = "whsec_";
/// Key lengths Standard Webhooks allows: 192 to 512 bits.
pub(super) const SECRET_LEN: std::ops::RangeInclusive<usize> = 24..=64;
/// Length of the keys [`WebhookSecret::generate`] makes.
pub(super) const GENERATED_SECRET_LEN: usize = 32;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// Why a webhook secret was refused. Never includes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret starts with \"whsec_\"")]
    MissingPrefix,
    /// What follows `whsec_` is not standard (padded) base64.
    #[error("a webhook secret is standard base64 after \"whsec_\"")]
    NotBase64,
    /// The key is shorter than 24 or longer than 64 bytes.
    #[error("a webhook secret holds 24 to 64 bytes, not {0}")]
    Length(usize),
}

impl SecretError {
    /// The stable code: `missing_prefix`, `not_base64`, `length`.
    pub fn code(&self) -> &'static str {
        match self {
            SecretError::MissingPrefix => "missing_prefix",
            SecretError::NotBase64 => "not_base64",
            SecretError::Length(_) => "length",
        }
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookUrlError {
    /// Not a URL at all.
    #[error("the webhook URL is not a URL: {0}")]
    NotUrl(String),
    /// Not `http://` or `https://` with a host.
    #[error("the webhook URL must be http:// or https:// with a host")]
    Scheme,
    /// User name or password in the URL (receivers check the signature instead).
    #[error("put no credentials in the webhook URL: receivers check the signature instead")]
    Credentials,
}

impl WebhookUrlError {
    /// The stable code: `not_a_url`, `scheme`, `credentials`.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookUrlError::NotUrl(_) => "not_a_url",
            WebhookUrlError::Scheme => "scheme",
            WebhookUrlError::Credentials => "credentials",
        }
    }
}

/// Reads a webhook URL as the operator gives it: http or https, with a host, no credentials.
/// Errors never echo the URL (some receivers take a credential in its path).
pub fn check_url(text: &str) -> Result<reqwest::Url, WebhookUrlError> {
    let url = reqwest::Url::parse(text).map_err(|e| WebhookUrlError::NotUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(WebhookUrlError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookUrlError::Credentials);
    }
    Ok(url)
}

/// The HMAC key shared with the webhook receiver. Zeroized on drop; `Debug` hides it.
#[derive(Clone)]
pub struct WebhookSecret {
    pub(super) key: Zeroizing<Vec<u8>>,
}

impl WebhookSecret {
    /// Reads a secret in the Standard Webhooks form `whsec_<base64 key>`; the key is 24 to 64
    /// bytes.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| SecretError::NotBase64)?,
        );
        if !SECRET_LEN.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(WebhookSecret { key })
    }

    /// A fresh random 32-byte secret, for an operator registering a new endpoint.
    pub fn generate() -> Result<WebhookSecret, CryptoError> {
        let mut key = Zeroizing::new(vec![0u8; GENERATED_SECRET_LEN]);
        getrandom::fill(&mut key).map_err(|_| CryptoError::Rng)?;
        Ok(WebhookSecret { key })
    }

    /// The secret kept in a key store as a 32-byte seed.
    pub fn from_seed(seed: &Seed) -> WebhookSecret {
        WebhookSecret {
            key: Zeroizing::new(seed.expose().to_vec()),
        }
    }

    /// The secret as a seed for a key store, which keeps 32-byte secrets: `None` for another
    /// length.
    pub fn to_seed(&self) -> Option<Seed> {
        Seed::from_slice(&self.key)
    }

    /// The secret in its `whsec_` form, to show the operator once or store in configuration.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&*self.key)))
    }

    /// The MAC over Standard Webhooks' signed content `{id}.{timestamp}.{body}`.
    pub(super) fn mac(&self, id: &str, timestamp: i64, body: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` value for one attempt: `v1,<base64 HMAC-SHA256>` over
/// `{id}.{timestamp}.{body}`. `id` must not contain `.` (the outbox's ids never do).
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str) -> String {
    let tag = secret.mac(id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Whether `header` (a `webhook-signature` value: space-separated `v1,<base64>` entries, other
/// versions ignored) holds a valid signature of this webhook, compared in constant time. Checks
/// the signature only: a receiver must also refuse timestamps far from its clock (Standard
/// Webhooks suggests 5 minutes) and ids it has already processed.
pub fn verify(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let mac = secret.mac(id, timestamp, body);
    header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok())
}

/// Where and how webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receiver's endpoint (http or https).
    pub url: reqwest::Url,
    /// The secret shared with the receiver.
    pub secret: WebhookSecret,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// Attempts per entry, the first included, before giving up on it.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; it doubles after each further failure, up to
    /// [`MAX_BACKOFF`], and each wait is randomly shortened by up to half.
    pub first_backoff: Duration,
}

impl WebhookConfig {
    /// Default for [`WebhookConfig::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default for [`WebhookConfig::max_attempts`].
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 30;
    /// Default for [`WebhookConfig::first_backoff`].
    pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_secs(1);

    /// Delivery to `url` signed with `secret`, with the default timeout and retries.
    pub fn new(url: reqwest::Url, secret: WebhookSecret) -> WebhookConfig {
        WebhookConfig {
            url,
            secret,
            timeout: Self::DEFAULT_TIMEOUT,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            first_backoff: Self::DEFAULT_FIRST_BACKOFF,
        }
    }
}

/// The wait before the attempt after `attempts` failed ones: doubling from `first`, capped at
/// [`MAX_BACKOFF`], then between half and all of that at random so that entries failing together
/// do not retry together.
pub(super) fn backoff(first: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    let full = first.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    let half = full / 2;
    half + half.mul_f64(random_unit())
}

/// A random number in [0, 1); 0.5 if the system has no randomness (jitter is not security).
pub(super) fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}
