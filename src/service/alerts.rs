//! Reading and acknowledging stored alerts, with the webhook deliveries each one owes.

use chrono::Utc;

use super::{ServiceError, blocking};
use crate::state::AppState;
use crate::store::alerts::{Alert, AlertPage, AlertQuery};
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
