//! State the embedded engine keeps in this process's memory rather than in the file: issued
//! challenges and rate-limit windows. They are short-lived and on the hot path; one hub on one
//! SQLite file is their only user, and a restart starts them afresh (an outstanding challenge
//! must be asked for again). With PostgreSQL both are in the database, shared by every hub.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many outstanding challenges are kept; the soonest to expire are dropped beyond it.
pub const MAX_OUTSTANDING: usize = 10_000;

/// Challenges issued and not yet answered, each with its expiry and the verifier it was issued
/// to; and the sliding windows of rate limits, per key.
#[derive(Debug, Default)]
pub(super) struct Ephemeral {
    challenges: Mutex<HashMap<String, (i64, String)>>,
    windows: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl Ephemeral {
    pub(super) fn issue_challenge(&self, challenge: &str, verifier: &str, expires: i64, now: i64) {
        let mut issued = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        issued.retain(|_, (exp, _)| *exp >= now);
        if issued.len() >= MAX_OUTSTANDING
            && let Some(oldest) = issued
                .iter()
                .min_by_key(|(_, (exp, _))| *exp)
                .map(|(c, _)| c.clone())
        {
            issued.remove(&oldest);
        }
        issued.insert(challenge.to_owned(), (expires, verifier.to_owned()));
    }

    pub(super) fn take_challenge(&self, challenge: &str, verifier: &str, now: i64) -> bool {
        let mut issued = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        match issued.get(challenge) {
            Some((expires, owner)) if owner == verifier => {
                let fresh = *expires >= now;
                issued.remove(challenge);
                fresh
            }
            _ => false,
        }
    }

    pub(super) fn admit_rate(
        &self,
        key: &str,
        count: u32,
        per_seconds: i64,
        now: i64,
    ) -> Result<(), i64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(key.to_owned()).or_default();
        while window.front().is_some_and(|t| *t <= now - per_seconds) {
            window.pop_front();
        }
        if window.len() >= count as usize {
            let oldest = window.front().copied().unwrap_or(now);
            return Err((oldest + per_seconds - now).max(1));
        }
        window.push_back(now);
        Ok(())
    }
}
