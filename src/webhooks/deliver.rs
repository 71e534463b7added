//! Delivery: one loop per sink that claims due outbox rows, POSTs them signed (or sends them to a
//! syslog collector), and records the outcome with backoff.
//!
//! Each sink has its own loop and its own in-flight limit, so a sink that is down or slow
//! never delays another. A row is claimed (leased) before its request starts and recorded
//! after it ends; the request and the record are separate steps, so a crash between them
//! means the row is sent again after the lease runs out: at least once, never zero times.
//! Receivers de-duplicate on `Idempotency-Key`: the alert id for its opening, `<alert id>/<n>`
//! for its n-th later event (an incident's `escalated`, `renotified`, `resolved`), which the
//! `X-Netsentinel-Event` header names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngExt;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::config::{Sink, Transport};
use super::{signature, syslog};
use crate::siem::formats::render_one;
use crate::store::outbox::{AttemptOutcome, DueDelivery, Outbox};

/// Requests one sink may have in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// Longest sleep between looks at the outbox when nothing wakes the loop.
const POLL: Duration = Duration::from_secs(1);
/// Shortest sleep, so a clock skew between "due" and "claimable" cannot spin the loop.
const MIN_SLEEP: Duration = Duration::from_millis(5);
/// A claim outlives the request's own timeout by this much before the row is due again.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// On shutdown, requests in flight get this long to finish before they are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Bytes of a refusing sink's answer kept in `last_error` (enough for "Invalid token").
const ERROR_BODY_BYTES: usize = 200;

/// Exponential backoff with full jitter: after the n-th failed attempt, wait a uniform random
/// time in `[0, min(cap, base · 2^(n−1))]`. Full jitter spreads the retries of many alerts to
/// one recovering sink instead of sending them in synchronised waves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The longest wait after `failures` failed attempts (1 or more).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The wait for a uniform draw `unit` in [0, 1).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        self.ceiling(failures).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// What every sink loop shares.
pub(crate) struct Shared {
    pub outbox: Arc<dyn Outbox>,
    pub client: reqwest::Client,
    pub backoff: Backoff,
}

/// Why one attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    pub status: Option<u16>,
}

/// POSTs a claimed delivery (an alert's event) to `sink` once, signed at `now`; the 2xx
/// status on success.
pub async fn post(
    client: &reqwest::Client,
    sink: &Sink,
    due: &DueDelivery,
    now: DateTime<Utc>,
) -> Result<u16, Failure> {
    let alert = &due.alert;
    let ctx = crate::siem::local_context().with_event(due.event);
    let body = render_one(alert, sink.format, &ctx);
    let mut request = client
        .post(sink.url.clone())
        .timeout(sink.timeout)
        .header(CONTENT_TYPE, sink.format.content_type())
        .header("idempotency-key", due.idempotency_key())
        .header("x-netsentinel-alert-id", &alert.id)
        .header("x-netsentinel-event", due.event.as_str());
    if let Some(secret) = &sink.secret {
        request = request.header(
            signature::HEADER,
            signature::sign(secret.expose(), now.timestamp(), body.as_bytes()),
        );
    }
    // Custom headers last, so one may replace our Content-Type (reserved ones are refused at startup).
    let mut response = request
        .headers(sink.headers.clone())
        .body(body)
        .send()
        .await
        .map_err(|e| Failure {
            error: describe(&e, sink),
            status: None,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let mut error = format!("HTTP {status}");
    // Only the first chunk: a refusal's reason is short, and a huge body must not be read.
    if let Ok(Some(chunk)) = response.chunk().await {
        let text = String::from_utf8_lossy(&chunk[..chunk.len().min(ERROR_BODY_BYTES)]);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() {
            error.push_str(": ");
            error.push_str(&text);
        }
    }
    Err(Failure {
        error,
        status: Some(status.as_u16()),
    })
}

/// A transport error in words, without the URL (paths and queries may hold tokens).
fn describe(e: &reqwest::Error, sink: &Sink) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", sink.timeout.as_secs());
    }
    let mut text = if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Delivers to one sink until `stop` turns true; then abandons what is still in flight after
/// a short grace, handing those claims back so they are due at once after a restart.
pub(crate) async fn run_sink(
    shared: Arc<Shared>,
    sink: Arc<Sink>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let lease = sink.timeout + LEASE_MARGIN;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut claimed: HashMap<tokio::task::Id, DueDelivery> = HashMap::new();
    tracing::info!(sink = %sink.name, target = %sink.origin(), format = sink.format.as_str(), "webhook delivery started");
    loop {
        if *stop.borrow() {
            break;
        }
        let free = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        let mut healthy = true;
        if free > 0 {
            match blocking(&shared, {
                let name = sink.name.clone();
                move |o| o.claim_due(&name, Utc::now(), free, lease)
            })
            .await
            {
                Some(due) => {
                    for d in due {
                        let held = d.clone();
                        let handle =
                            in_flight.spawn(deliver_one(Arc::clone(&shared), Arc::clone(&sink), d));
                        claimed.insert(handle.id(), held);
                    }
                }
                None => healthy = false,
            }
            update_depth(&shared).await;
        }
        let wait = if !healthy || in_flight.len() >= MAX_IN_FLIGHT {
            POLL
        } else {
            let name = sink.name.clone();
            match blocking(&shared, move |o| o.next_due(&name)).await {
                Some(Some(at)) => (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .clamp(MIN_SLEEP, POLL),
                _ => POLL,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                match done {
                    Ok((id, ())) => { claimed.remove(&id); }
                    Err(e) => {
                        // A panicked attempt recorded nothing: hand its row back now rather
                        // than after the lease.
                        tracing::error!(sink = %sink.name, error = %e, "webhook delivery task failed");
                        if let Some(due) = claimed.remove(&e.id()) {
                            release(&shared, due).await;
                        }
                    }
                }
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = in_flight.join_next_with_id().await {
            if let Ok((id, ())) = done {
                claimed.remove(&id);
            }
        }
    })
    .await;
    in_flight.abort_all();
    while let Some(done) = in_flight.join_next_with_id().await {
        if let Ok((id, ())) = done {
            claimed.remove(&id);
        }
    }
    for due in claimed.into_values() {
        release(&shared, due).await;
    }
    tracing::info!(sink = %sink.name, "webhook delivery stopped");
}

/// One attempt at one delivery, start to recorded outcome.
async fn deliver_one(shared: Arc<Shared>, sink: Arc<Sink>, due: DueDelivery) {
    let result = match &sink.transport {
        Transport::Webhook => post(&shared.client, &sink, &due, Utc::now())
            .await
            .map(Some),
        Transport::Syslog(target) => syslog::deliver(target, sink.format, &due, sink.timeout)
            .await
            .map(|()| None)
            .map_err(|error| Failure {
                error,
                status: None,
            }),
    };
    let attempts = due.attempts.saturating_add(1);
    let at = Utc::now();
    let (outcome, result_label) = match result {
        Ok(status) => {
            tracing::debug!(sink = %sink.name, alert = %due.alert.id, ?status, attempts, "webhook delivered");
            (AttemptOutcome::Delivered { status }, "ok")
        }
        Err(f) if sink.max_attempts.is_some_and(|max| attempts >= max) => {
            tracing::error!(sink = %sink.name, alert = %due.alert.id, attempts, error = %f.error, "webhook delivery given up");
            (
                AttemptOutcome::Failed {
                    error: f.error,
                    status: f.status,
                },
                "failed",
            )
        }
        Err(f) => {
            let wait = shared.backoff.delay(attempts, rand::rng().random::<f64>());
            let next_at = TimeDelta::from_std(wait)
                .ok()
                .and_then(|d| at.checked_add_signed(d))
                .unwrap_or(at);
            tracing::warn!(sink = %sink.name, alert = %due.alert.id, attempts, error = %f.error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed; will retry");
            (
                AttemptOutcome::Retry {
                    next_at,
                    error: f.error,
                    status: f.status,
                },
                "retrying",
            )
        }
    };
    metrics::counter!("netsentinel_webhook_deliveries_total", "sink" => sink.name.clone(), "result" => result_label)
        .increment(1);
    // If this fails the lease runs out and the row is sent again: a duplicate, never a loss.
    blocking(&shared, move |o| o.record_attempt(&due, &outcome, at)).await;
}

async fn release(shared: &Arc<Shared>, due: DueDelivery) {
    blocking(shared, move |o| o.release(&due, Utc::now())).await;
}

/// Sets `netsentinel_outbox_depth`.
pub(crate) async fn update_depth(shared: &Arc<Shared>) {
    if let Some(depth) = blocking(shared, |o| o.depth()).await {
        metrics::gauge!("netsentinel_outbox_depth").set(depth as f64);
    }
}

/// Runs an outbox call off the runtime; logs and returns `None` when it fails.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&dyn Outbox) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Option<T> {
    let outbox = Arc::clone(&shared.outbox);
    match tokio::task::spawn_blocking(move || f(outbox.as_ref())).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "webhook outbox");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook outbox task");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(600),
    };

    #[test]
    fn the_ceiling_doubles_from_the_base_and_stops_at_the_cap() {
        let ceilings: Vec<u64> = (1..=12).map(|n| B.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(B.ceiling(0), B.base, "no failure yet: the base");
        assert_eq!(
            B.ceiling(u32::MAX),
            B.cap,
            "no overflow however many failures"
        );
        let huge = Backoff {
            base: Duration::from_secs(u64::MAX / 4),
            cap: Duration::from_secs(60),
        };
        assert_eq!(huge.ceiling(40), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling() {
        for n in 1..=20 {
            assert_eq!(B.delay(n, 0.0), Duration::ZERO);
            assert_eq!(B.delay(n, 1.0), B.ceiling(n));
            assert!(B.delay(n, 0.5) <= B.ceiling(n));
            assert_eq!(
                B.delay(n, 7.0),
                B.ceiling(n),
                "out-of-range draws are clamped"
            );
        }
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let d = B.delay(30, rng.random::<f64>());
            assert!(d <= Duration::from_secs(600), "{d:?}");
        }
    }
}
