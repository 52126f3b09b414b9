//! Time as JWT NumericDate: whole seconds since the Unix epoch.

/// The current time in seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Default tolerance for clocks that disagree, in seconds.
pub const DEFAULT_SKEW: i64 = 60;

/// A fresh random identifier: 16 bytes, base64url (token ids, certificate serials).
pub fn random_id() -> Result<String, crate::crypto::CryptoError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| crate::crypto::CryptoError::Rng)?;
    Ok(crate::jose::b64(&bytes))
}
