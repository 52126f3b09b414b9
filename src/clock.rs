//! Time as JWT NumericDate: whole seconds since the Unix epoch.

/// The current time in seconds since the Unix epoch.
pub fn now() -> i64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    #[cfg(debug_assertions)]
    if let Some(shift) = test_shift() {
        return real.saturating_add(shift);
    }
    real
}

/// The variable naming the test clock file (debug builds only, see [`now`]).
pub const TEST_CLOCK_FILE: &str = "AGENTSEAL_TEST_CLOCK_FILE";

/// Seconds a test moved this process's clock: the number in the file `AGENTSEAL_TEST_CLOCK_FILE`
/// names, read at every call so that a test moves a running server's time without sleeping.
/// Only debug builds (what `cargo test` runs) have it; a release build's clock is the system's.
#[cfg(debug_assertions)]
fn test_shift() -> Option<i64> {
    static FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let file = FILE
        .get_or_init(|| std::env::var_os(TEST_CLOCK_FILE).map(Into::into))
        .as_ref()?;
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Default tolerance for clocks that disagree, in seconds.
pub const DEFAULT_SKEW: i64 = 60;

/// A fresh random identifier: 16 bytes, base64url (token ids, certificate serials).
pub fn random_id() -> Result<String, crate::crypto::CryptoError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| crate::crypto::CryptoError::Rng)?;
    Ok(crate::jose::b64(&bytes))
}
