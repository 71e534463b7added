//! Reading, acknowledging and judging stored alerts, with the webhook deliveries each one owes;
//! resolving incidents whose entity went quiet.

use chrono::Utc;

use super::suppression::{Created, NewRule, Rule};
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

/// A suppression rule given with a verdict (`suppress`), and the API key's name that creates it.
pub struct Suppress {
    pub rule: NewRule,
    pub created_by: Option<String>,
}

/// An alert with a verdict added, and the rule created with it (if any).
pub struct Judged {
    /// The alert as it now is (resolved when the rule covered its incident).
    pub alert: Alert,
    pub suppression: Option<Created>,
}

/// Records an analyst's verdict on an alert, by the API key named `by`, and creates the
/// suppression rule given with it: its `detector` and `entity` default to the alert's (unless
/// it names a `cidr`), its `reason` to the note. The rule is checked before anything is kept;
/// creating it resolves the incidents it covers. `None` when there is no such alert.
pub async fn feedback(
    state: &AppState,
    id: &str,
    (verdict, note): (Verdict, Option<String>),
    by: String,
    suppress: Option<Suppress>,
) -> Result<Option<Judged>, ServiceError> {
    let store = state.alerts();
    let rule = match suppress {
        Some(s) => {
            let (store, id) = (store.clone(), id.to_string());
            let Some(alert) = blocking(move || Ok(store.get(&id)?)).await? else {
                return Ok(None);
            };
            Some(rule_for(&alert, s, note.as_deref())?)
        }
        None => None,
    };
    let feedback = Feedback {
        verdict,
        note,
        by,
        at: Utc::now(),
    };
    let id = id.to_string();
    let Some(alert) = blocking(move || Ok(store.add_feedback(&id, feedback)?)).await? else {
        return Ok(None);
    };
    let Some(rule) = rule else {
        return Ok(Some(Judged {
            alert,
            suppression: None,
        }));
    };
    let created = super::suppression::keep(state, rule).await?;
    let alert = match created.resolved.iter().find(|a| a.id == alert.id) {
        Some(resolved) => resolved.clone(),
        None => alert,
    };
    Ok(Some(Judged {
        alert,
        suppression: Some(created),
    }))
}

/// The rule `suppress` asks for on `alert`, checked; a fault names its field under `suppress.`.
fn rule_for(alert: &Alert, s: Suppress, note: Option<&str>) -> Result<Rule, ServiceError> {
    let Suppress {
        rule: mut new,
        created_by,
    } = s;
    let under = |e: ServiceError| match e {
        ServiceError::Suppression { detail, field } => ServiceError::Suppression {
            detail,
            field: Some(match field {
                Some(f) => format!("suppress.{f}"),
                None => "suppress".to_owned(),
            }),
        },
        e => e,
    };
    new.detector.get_or_insert_with(|| alert.detector.clone());
    if new.entity.is_none() && new.cidr.is_none() {
        let Some(entity) = &alert.entity else {
            return Err(under(ServiceError::Suppression {
                detail: "the alert has no entity (a batch alert: its records name no one host), \
                         so the rule cannot default to it; give suppress.entity or suppress.cidr"
                    .to_owned(),
                field: Some("entity".to_owned()),
            }));
        };
        new.entity = Some(entity.clone());
    }
    if new.reason.trim().is_empty() {
        new.reason = note.unwrap_or_default().to_owned();
    }
    new.check(created_by, Utc::now()).map_err(under)
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
