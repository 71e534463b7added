//! Retention: a background task deletes alerts older than `--alert-retention-days`, closed
//! windows older than `--window-retention-days` and idempotency keys older than
//! `--idempotency-ttl-hours`, at start and then every hour, in small batches so that scoring
//! never waits long on the store. An alert that still owes a webhook delivery is kept until it
//! is delivered (or fails for good). Every 30 s the same task resolves the incidents whose entity
//! has been quiet past their `close_after`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often the task looks for alerts past their retention.
pub const EVERY: Duration = Duration::from_secs(3600);
/// How often the task resolves incidents whose entity went quiet (so an incident resolves
/// within this long of its `close_after` running out, without new traffic).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// Alerts deleted per transaction.
const BATCH: usize = 1000;

/// Starts the task (alerts and windows are kept forever with `0` days; keys always expire).
pub fn start(state: AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let days = state.settings().alert_retention_days;
    let window_days = state.settings().window_retention_days;
    tokio::spawn(async move {
        let mut next_prune = tokio::time::Instant::now();
        loop {
            super::alerts::resolve_quiet(&state).await;
            if tokio::time::Instant::now() >= next_prune {
                if days > 0 {
                    let _ = prune_once(&state, days).await;
                }
                if window_days > 0 {
                    let _ = prune_windows_once(&state, window_days).await;
                }
                let _ = prune_keys_once(&state).await;
                next_prune = tokio::time::Instant::now() + EVERY;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(RESOLVE_EVERY) => {}
            }
        }
    })
}

/// Deletes every alert past retention now; returns how many went (an error is logged and ends
/// this round: the next round retries).
pub async fn prune_once(state: &AppState, days: u64) -> u64 {
    let before = days_ago(days);
    let store = state.alerts();
    let metric = "netsentinel_alerts_pruned_total";
    in_batches("alerts", metric, before, move || store.prune(before, BATCH)).await
}

/// Deletes every closed window past retention now; returns how many went.
pub async fn prune_windows_once(state: &AppState, days: u64) -> u64 {
    let before = days_ago(days);
    let store = state.stores().streams.clone();
    let metric = "netsentinel_windows_pruned_total";
    in_batches("closed windows", metric, before, move || {
        store.prune_windows(before, BATCH)
    })
    .await
}

/// Deletes every idempotency key older than `--idempotency-ttl-hours` now; returns how many
/// went (an error is logged and ends this round).
pub async fn prune_keys_once(state: &AppState) -> u64 {
    let hours = state.settings().idempotency_ttl_hours.min(1_000_000) as i64;
    let before = Utc::now() - chrono::Duration::hours(hours);
    let store = state.stores().idempotency.clone();
    let metric = "netsentinel_idempotency_keys_pruned_total";
    in_batches("idempotency keys", metric, before, move || {
        store.prune_keys(before, BATCH)
    })
    .await
}

fn days_ago(days: u64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days.min(1_000_000) as i64)
}

/// Runs `round` (which deletes at most [`BATCH`] rows) off the runtime until a round deletes
/// fewer, counting them in `metric` and logging the total (rows from before `before`); an error
/// is logged and ends the rounds.
async fn in_batches<F>(
    what: &'static str,
    metric: &'static str,
    before: DateTime<Utc>,
    round: F,
) -> u64
where
    F: Fn() -> Result<u64, crate::store::StoreError> + Clone + Send + 'static,
{
    let mut total = 0;
    loop {
        match tokio::task::spawn_blocking(round.clone()).await {
            Ok(Ok(n)) => {
                total += n;
                metrics::counter!(metric).increment(n);
                if n < BATCH as u64 {
                    break;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "retention: cannot delete old {what} now; retrying in an hour");
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "retention of {what} failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, before = %before, "retention: deleted old {what}");
    }
    total
}
