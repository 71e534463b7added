//! Retention: a background task deletes alerts older than `--alert-retention-days`, and
//! idempotency keys older than `--idempotency-ttl-hours`, at start and then every hour, in
//! small batches so that scoring never waits long on the store. An alert that still owes a
//! webhook delivery is kept until it is delivered (or fails for good).

use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often the task looks for alerts past their retention.
pub const EVERY: Duration = Duration::from_secs(3600);
/// Alerts deleted per transaction.
const BATCH: usize = 1000;

/// Starts the task (alerts are kept forever with `0` days; keys always expire).
pub fn start(state: AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let days = state.settings().alert_retention_days;
    tokio::spawn(async move {
        loop {
            if days > 0 {
                let _ = prune_once(&state, days).await;
            }
            let _ = prune_keys_once(&state).await;
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    })
}

/// Deletes every alert past retention now; returns how many went (an error is logged and ends
/// this round: the next round retries).
pub async fn prune_once(state: &AppState, days: u64) -> u64 {
    let before = Utc::now() - chrono::Duration::days(days.min(1_000_000) as i64);
    let mut total = 0;
    loop {
        let store = state.alerts();
        let round = tokio::task::spawn_blocking(move || store.prune(before, BATCH)).await;
        match round {
            Ok(Ok(n)) => {
                total += n;
                metrics::counter!("netsentinel_alerts_pruned_total").increment(n);
                if n < BATCH as u64 {
                    break;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "alert retention: cannot delete old alerts now; retrying in an hour");
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "alert retention task failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            deleted = total,
            retention_days = days,
            "deleted alerts past retention"
        );
    }
    total
}

/// Deletes every idempotency key older than `--idempotency-ttl-hours` now; returns how many
/// went (an error is logged and ends this round).
pub async fn prune_keys_once(state: &AppState) -> u64 {
    let hours = state.settings().idempotency_ttl_hours.min(1_000_000) as i64;
    let before = Utc::now() - chrono::Duration::hours(hours);
    let mut total = 0;
    loop {
        let store = state.stores().idempotency.clone();
        let round = tokio::task::spawn_blocking(move || store.prune_keys(before, BATCH)).await;
        match round {
            Ok(Ok(n)) => {
                total += n;
                metrics::counter!("netsentinel_idempotency_keys_pruned_total").increment(n);
                if n < BATCH as u64 {
                    break;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "idempotency keys: cannot delete expired keys now; retrying in an hour");
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "idempotency key expiry failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            deleted = total,
            ttl_hours = hours,
            "deleted expired idempotency keys"
        );
    }
    total
}
