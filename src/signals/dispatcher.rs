//! The task that delivers the outbox to one endpoint, retrying with backoff and jitter.

use super::*;

/// The task that delivers the outbox to one endpoint.
pub struct Dispatcher {
    config: WebhookConfig,
    open: OpenOutbox,
    client: reqwest::Client,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    current: Option<StillCurrent>,
}

/// Opens the outbox a dispatcher delivers (off the async threads; retried each poll interval
/// until it opens).
pub type OpenOutbox = Arc<dyn Fn() -> Result<Outbox, SignalError> + Send + Sync>;

/// Asked (off the async threads) before each attempt: whether the configuration this
/// dispatcher was started with is still the one in force.
pub type StillCurrent = Arc<dyn Fn() -> bool + Send + Sync>;

impl Dispatcher {
    /// Starts delivering the outbox in the database at `db_path` on the current tokio runtime.
    /// The task looks for due entries at least every [`POLL_INTERVAL`] and at once when `wake` is
    /// notified (give the same `Notify` to [`Outbox::notifying`]); it ends soon after `shutdown`
    /// is cancelled, an attempt in flight then being abandoned and its entry left due. Fails if
    /// the URL is not http(s) or the HTTP client cannot be built.
    pub fn spawn(
        config: WebhookConfig,
        db_path: &Path,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, SignalError> {
        let path = db_path.to_owned();
        Self::spawn_while(
            config,
            Arc::new(move || Outbox::open(&path)),
            wake,
            shutdown,
            None,
        )
    }

    /// As [`Dispatcher::spawn`], on the outbox `open` opens (any engine), and the task also
    /// ends, before sending anything more, once `current` answers false: an entry claimed then
    /// is left due for the dispatcher of the new configuration, so nothing recorded after a
    /// change goes to the old endpoint.
    pub fn spawn_while(
        config: WebhookConfig,
        open: OpenOutbox,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
        current: Option<StillCurrent>,
    ) -> Result<JoinHandle<()>, SignalError> {
        if !matches!(config.url.scheme(), "http" | "https") || config.url.host_str().is_none() {
            return Err(SignalError::BadUrl);
        }
        // Redirects are failures (Standard Webhooks): the operator fixes the URL instead.
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agentseal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SignalError::Client(e.to_string()))?;
        let dispatcher = Dispatcher {
            config,
            open,
            client,
            wake,
            shutdown,
            current,
        };
        Ok(tokio::spawn(dispatcher.run()))
    }

    pub(super) async fn run(self) {
        let Some(outbox) = self.open_outbox().await else {
            return;
        };
        let lease = millis(self.config.timeout.saturating_add(LEASE_MARGIN));
        while !self.shutdown.is_cancelled() {
            let now = now_ms();
            let claim = blocking(&outbox, "claiming an entry", move |o| {
                o.claim(now, now.saturating_add(lease))
            })
            .await;
            let pause = match claim {
                Some(Claim::Due(entry)) => {
                    if !self.still_current().await {
                        let (id, now) = (entry.id, now_ms());
                        blocking(&outbox, "releasing an entry", move |o| o.release(&id, now)).await;
                        return;
                    }
                    self.attempt(&outbox, entry).await;
                    continue;
                }
                Some(Claim::Idle { next_at: Some(at) }) => {
                    Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(POLL_INTERVAL)
                }
                Some(Claim::Idle { next_at: None }) | None => POLL_INTERVAL,
            };
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    pub(super) async fn still_current(&self) -> bool {
        let Some(current) = self.current.clone() else {
            return true;
        };
        // A check that cannot run counts as a change: the supervisor starts afresh.
        tokio::task::spawn_blocking(move || current())
            .await
            .unwrap_or(false)
    }

    /// Opens the outbox, retrying each poll interval until it opens or shutdown.
    pub(super) async fn open_outbox(&self) -> Option<Arc<Outbox>> {
        loop {
            let open = self.open.clone();
            match tokio::task::spawn_blocking(move || open()).await {
                Ok(Ok(outbox)) => return Some(Arc::new(outbox)),
                Ok(Err(error)) => tracing::warn!(%error, "webhook outbox not opened"),
                Err(error) => tracing::error!(%error, "webhook outbox not opened"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Sends one claimed entry and records the outcome.
    pub(super) async fn attempt(&self, outbox: &Arc<Outbox>, entry: OutboxEntry) {
        let timestamp = crate::clock::now();
        let request = self
            .client
            .post(self.config.url.clone())
            .header("webhook-id", &entry.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign(&self.config.secret, &entry.id, timestamp, &entry.body),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(entry.body)
            .send();
        let id = entry.id;
        let outcome = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {
                // Due again at once for the next run, rather than after the lease.
                let now = now_ms();
                blocking(outbox, "releasing an entry", move |o| o.release(&id, now)).await;
                return;
            }
            outcome = request => outcome,
        };
        let error = match outcome {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(%id, attempts = entry.attempts, "webhook delivered");
                let now = now_ms();
                blocking(outbox, "recording a delivery", move |o| {
                    o.mark_delivered(&id, now)
                })
                .await;
                return;
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(error) => describe(error),
        };
        let next_at = (entry.attempts < self.config.max_attempts).then(|| {
            now_ms().saturating_add(millis(backoff(self.config.first_backoff, entry.attempts)))
        });
        if next_at.is_none() {
            tracing::warn!(%id, attempts = entry.attempts, %error, "webhook abandoned");
        } else {
            tracing::debug!(%id, attempts = entry.attempts, %error, "webhook attempt failed");
            crate::metrics::webhook_failed();
        }
        blocking(outbox, "recording a failure", move |o| {
            o.mark_failed(&id, &error, next_at)
        })
        .await;
    }
}

/// A transport error with its causes, without the URL (which may carry credentials).
pub(super) fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs an outbox call on the blocking pool; failures are logged (the next poll retries).
pub(super) async fn blocking<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    what: &'static str,
    f: impl FnOnce(&Outbox) -> Result<T, SignalError> + Send + 'static,
) -> Option<T> {
    let outbox = outbox.clone();
    match tokio::task::spawn_blocking(move || f(&outbox)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::warn!(%error, "webhook outbox: {what} failed");
            None
        }
        Err(error) => {
            tracing::error!(%error, "webhook outbox: {what} failed");
            None
        }
    }
}
