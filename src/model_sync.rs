//! Keeps this replica's detectors and their active models in step with a shared store (PostgreSQL).
//!
//! Two signals wake the follower: the store's change notifications (`LISTEN netsentinel_model`,
//! sent in the transaction that moves a detector's pointer, and `netsentinel_detectors`, sent
//! when a detector is created, replaced or deleted; usually within milliseconds) and a poll
//! every [`POLL`] as a safety net for notifications lost while the listener was disconnected.
//! On waking it first brings the set of detectors and their settings up to date
//! (`service::detectors::follow_store`), then, for each detector, reads its active pointer
//! and, if it names another version than the one in memory, loads and decodes that version
//! off the runtime and swaps it in with [`DetectorState::install_model`]. The swap happens
//! under the detector's lock for local fits and rollbacks, so a reload never interleaves with
//! one of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::detector::model::Model;
use crate::state::{AppState, DetectorState};

/// Longest a replica serves a model after another replica changed the active version, when
/// the notification was lost.
pub const POLL: Duration = Duration::from_secs(2);

/// Starts following the store if it is shared; `None` for a single-process (file) store.
pub fn start(state: AppState, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let models = state.default_detector().model_store();
    if !models.shared() {
        return None;
    }
    let wake = Arc::new(Notify::new());
    // The LISTEN thread checks this flag; the task below sets it when it stops.
    let stop_listening = Arc::new(AtomicBool::new(false));
    let hook_wake = Arc::clone(&wake);
    let listening = models.watch_active(
        Box::new(move || hook_wake.notify_one()),
        Arc::clone(&stop_listening),
    );
    tracing::info!(
        listen = listening,
        poll_secs = POLL.as_secs(),
        "following the shared model store"
    );
    Some(tokio::spawn(async move {
        let mut healthy = true;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            if *stop.borrow() {
                break;
            }
            healthy = follow_all(&state, healthy).await;
        }
        stop_listening.store(true, Ordering::Relaxed);
    }))
}

/// Follows the store's detectors, then each detector's active version; returns whether the
/// store could be read.
pub async fn follow_all(state: &AppState, was_healthy: bool) -> bool {
    let mut healthy = match crate::service::detectors::follow_store(state).await {
        Ok(_) => true,
        Err(e) => {
            if was_healthy {
                tracing::warn!(error = %e, "cannot follow the shared detector settings");
            }
            false
        }
    };
    for det in state.detectors() {
        healthy &= follow_once(&det, was_healthy && healthy).await;
    }
    healthy
}

/// Installs the store's active version of `det` if it differs from the one in memory; returns
/// whether the store could be read (to log an outage once, not every poll).
pub async fn follow_once(det: &DetectorState, was_healthy: bool) -> bool {
    let _guard = det.model_change_lock().lock().await;
    let current = det.model().map(|m| m.version());
    let store = det.model_store();
    let loaded = tokio::task::spawn_blocking(move || -> Result<Option<Model>, String> {
        let active = store.active().map_err(|e| e.to_string())?;
        let Some(active) = active.filter(|&v| Some(v) != current) else {
            return Ok(None);
        };
        let bytes = store.read(active).map_err(|e| e.to_string())?;
        Model::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| format!("model version {active} does not decode: {e}"))
    })
    .await;
    match loaded {
        Ok(Ok(Some(model))) => {
            let version = model.version();
            det.install_model(Arc::new(model));
            if det.is_default() {
                crate::monitoring::model_active(version);
            }
            tracing::info!(
                detector = det.name(),
                version,
                previous = current,
                "active model changed in the shared store; now serving it"
            );
            true
        }
        Ok(Ok(None)) => {
            if !was_healthy {
                tracing::info!("the shared model store is reachable again");
            }
            true
        }
        Ok(Err(e)) => {
            if was_healthy {
                tracing::warn!(error = %e, "cannot follow the shared model store; keeping the current model");
            }
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "model follower task failed");
            false
        }
    }
}
