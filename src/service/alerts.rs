//! Reading, acknowledging and judging stored alerts, with the webhook deliveries each one owes;
//! resolving incidents whose entity went quiet.

use chrono::Utc;

use super::{ServiceError, blocking};
use crate::state::AppState;
use crate::store::alerts::{Alert, AlertPage, AlertQuery, Feedback, Verdict};
use crate::store::outbox::DeliveryState;

/// One page of alerts, newest first.
pub async fn list(state: &AppState, query: AlertQuery) -> Result<AlertPage, ServiceError> {
    let store = state.alerts();
    blocking(move || Ok(store.list(&query)?)).await
}

/// An alert, and (when `with_deliveries`) where each of its webhook deliveries stands.
pub async fn get(
    state: &AppState,
    id: &str,
    with_deliveries: bool,
) -> Result<Option<(Alert, Vec<DeliveryState>)>, ServiceError> {
    let (store, outbox, id) = (state.alerts(), state.outbox(), id.to_string());
    blocking(move || {
        let Some(alert) = store.get(&id)? else {
            return Ok(None);
        };
        let deliveries = match with_deliveries {
            true => outbox.deliveries(&id)?,
            false => Vec::new(),
        };
        Ok(Some((alert, deliveries)))
    })
    .await
}

/// Acknowledges an alert (a second acknowledgement keeps the first time); `None` when there is
/// no such alert.
pub async fn acknowledge(state: &AppState, id: &str) -> Result<Option<Alert>, ServiceError> {
    let (store, id) = (state.alerts(), id.to_string());
    blocking(move || Ok(store.acknowledge(&id, Utc::now())?)).await
}

/// Records an analyst's verdict on an alert, by the API key named `by`; `None` when there is no
/// such alert.
pub async fn feedback(
    state: &AppState,
    id: &str,
    verdict: Verdict,
    note: Option<String>,
    by: String,
) -> Result<Option<Alert>, ServiceError> {
    let (store, id) = (state.alerts(), id.to_string());
    let feedback = Feedback {
        verdict,
        note,
        by,
        at: Utc::now(),
    };
    blocking(move || Ok(store.add_feedback(&id, feedback)?)).await
}

/// Incidents resolved per store call.
const RESOLVE_BATCH: usize = 500;

/// Resolves every incident whose entity has been quiet past its `close_after`, each with its
/// `resolved` delivery, and wakes the deliverers; returns how many were resolved (an error is
/// logged and ends this round: the next round retries).
pub async fn resolve_quiet(state: &AppState) -> usize {
    let mut total = 0;
    loop {
        let store = state.alerts();
        let sinks = state.webhooks().sink_names().to_vec();
        let round = blocking(move || Ok(store.resolve_quiet(Utc::now(), &sinks, RESOLVE_BATCH)?));
        match round.await {
            Ok(resolved) => {
                for a in &resolved {
                    tracing::info!(alert = %a.id, detector = %a.detector, entity = a.entity.as_deref().unwrap_or(""), count = a.count, "incident resolved");
                }
                total += resolved.len();
                if !resolved.is_empty() {
                    state.webhooks().alert_stored();
                }
                metrics::counter!("netsentinel_incidents_resolved_total")
                    .increment(resolved.len() as u64);
                if resolved.len() < RESOLVE_BATCH {
                    return total;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot resolve quiet incidents now; retrying next round");
                return total;
            }
        }
    }
}
