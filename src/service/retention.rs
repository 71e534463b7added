//! Retention: a background task deletes alerts older than `--alert-retention-days` and closed
//! windows older than `--window-retention-days`, at start and then every hour, in small batches
//! so that scoring never waits long on the store. An alert that still owes a webhook delivery is
//! kept until it is delivered (or fails for good).

use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often the task looks for alerts past their retention.
pub const EVERY: Duration = Duration::from_secs(3600);
/// Alerts deleted per transaction.
const BATCH: usize = 1000;

/// Starts the task, unless retention is off for both (`0` days: keep forever).
pub fn start(state: AppState, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let days = state.settings().alert_retention_days;
    let window_days = state.settings().window_retention_days;
    if days == 0 && window_days == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            if days > 0 {
                let _ = prune_once(&state, days).await;
            }
            if window_days > 0 {
                let _ = prune_windows_once(&state, window_days).await;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }))
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

/// Deletes every closed window past retention now; returns how many went.
pub async fn prune_windows_once(state: &AppState, days: u64) -> u64 {
    let before = Utc::now() - chrono::Duration::days(days.min(1_000_000) as i64);
    let mut total = 0;
    loop {
        let store = state.stores().streams.clone();
        let round = tokio::task::spawn_blocking(move || store.prune_windows(before, BATCH)).await;
        match round {
            Ok(Ok(n)) => {
                total += n;
                metrics::counter!("netsentinel_windows_pruned_total").increment(n);
                if n < BATCH as u64 {
                    break;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "window retention: cannot delete old windows now; retrying in an hour");
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "window retention task failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            deleted = total,
            retention_days = days,
            "deleted closed windows past retention"
        );
    }
    total
}
