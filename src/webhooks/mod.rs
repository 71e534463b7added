//! Webhooks: every new alert pushed to each configured sink, at least once, from a durable outbox.
//!
//! `config` reads and checks the sinks, `signature` is the `X-Netsentinel-Signature` scheme,
//! `deliver` the per-sink delivery loops. The outbox itself lives in `store::outbox`; the score
//! handler writes an alert and its outbox rows in one transaction and then rings
//! [`Webhooks::alert_stored`], so a delivery starts at once instead of at the next poll.

pub mod config;
pub mod deliver;
pub mod signature;
pub mod syslog;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::store::outbox::Outbox;
pub use config::{Secret, Sink, Transport, WebhookConfigError};
pub use deliver::Backoff;

/// The configured sinks and what their delivery loops share.
pub struct Webhooks {
    sinks: Vec<Arc<Sink>>,
    names: Vec<String>,
    /// One per sink: `notify_one` keeps a permit when the loop is busy, so no wake-up is lost.
    wakes: Vec<Arc<Notify>>,
    backoff: Backoff,
    client: reqwest::Client,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("sinks", &self.sinks)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// The sinks from the settings (file and `--webhook-url`), checked; an error names what to fix.
    pub fn from_settings(settings: &Settings) -> Result<Self, WebhookConfigError> {
        let base = Duration::from_millis(settings.webhook_retry_base_ms);
        let cap = Duration::from_millis(settings.webhook_retry_cap_ms);
        if base.is_zero() || cap < base {
            return Err(WebhookConfigError::Invalid {
                sink: "*".into(),
                reason: format!(
                    "the retry base ({} ms) must be at least 1 ms and at most the retry cap ({} ms)",
                    settings.webhook_retry_base_ms, settings.webhook_retry_cap_ms
                ),
            });
        }
        let sinks = config::sinks_from_settings(settings)?;
        Self::new(sinks, Backoff { base, cap })
    }

    pub fn new(sinks: Vec<Sink>, backoff: Backoff) -> Result<Self, WebhookConfigError> {
        let client = reqwest::Client::builder()
            // A redirected POST turns into a GET in most clients; a sink that moved must be
            // reconfigured, and its 3xx is recorded as the failure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("netsentinel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookConfigError::Client(e.to_string()))?;
        Ok(Self {
            names: sinks.iter().map(|s| s.name.clone()).collect(),
            wakes: sinks.iter().map(|_| Arc::new(Notify::new())).collect(),
            sinks: sinks.into_iter().map(Arc::new).collect(),
            backoff,
            client,
        })
    }

    /// The sinks every new alert is owed to.
    pub fn sink_names(&self) -> &[String] {
        &self.names
    }

    pub fn sinks(&self) -> &[Arc<Sink>] {
        &self.sinks
    }

    /// Wakes every delivery loop: a new alert's outbox rows are committed.
    pub fn alert_stored(&self) {
        for wake in &self.wakes {
            wake.notify_one();
        }
    }

    /// Starts one delivery loop per sink; the returned task ends once `stop` turns true and
    /// every loop has handed back what it had in flight.
    pub fn start(&self, outbox: Arc<dyn Outbox>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let shared = Arc::new(deliver::Shared {
            outbox,
            client: self.client.clone(),
            backoff: self.backoff,
        });
        let loops: Vec<_> = self
            .sinks
            .iter()
            .zip(&self.wakes)
            .map(|(sink, wake)| {
                // A task per sink: a loop that panics takes no other sink down with it.
                tokio::spawn(deliver::run_sink(
                    Arc::clone(&shared),
                    Arc::clone(sink),
                    Arc::clone(wake),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::spawn(async move {
            // Rows of sinks no longer configured still count, so the gauge is right from the start.
            deliver::update_depth(&shared).await;
            futures_util::future::join_all(loops).await;
        })
    }
}
