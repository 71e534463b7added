//! `/v1/alerts`: list, read and acknowledge the alerts scored batches raised.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::alerts::{Alert, AlertQuery, AlertStatus};

/// Most alerts one page may hold.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only alerts created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only alerts created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only alerts with at least this severity (0-100).
    pub min_severity: Option<u8>,
    /// `open` or `acknowledged`.
    #[param(value_type = Option<String>)]
    pub status: Option<AlertStatus>,
    /// Page size, 1-1000 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of alerts, newest first.
#[derive(Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// List alerts, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(ListQuery), responses(
    (status = 200, body = AlertList),
    (status = 400, body = Problem, content_type = "application/problem+json"),
))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AlertList>, ApiError> {
    let q = super::query(query)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid-parameter",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )
        .with_field("limit"));
    }
    if q.min_severity.is_some_and(|s| s > 100) {
        return Err(ApiError::bad_request(
            "invalid-parameter",
            "min_severity must be between 0 and 100",
        )
        .with_field("min_severity"));
    }
    let query = AlertQuery {
        since: q.since,
        until: q.until,
        min_severity: q.min_severity,
        status: q.status,
        limit,
        cursor: q.cursor,
    };
    let store = state.alerts();
    let page = tokio::task::spawn_blocking(move || store.list(&query)).await??;
    Ok(Json(AlertList {
        alerts: page.alerts,
        next_cursor: page.next_cursor,
    }))
}

/// One alert.
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses(
        (status = 200, body = Alert),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_alert(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let store = state.alerts();
    let lookup = id.clone();
    let alert = tokio::task::spawn_blocking(move || store.get(&lookup)).await??;
    alert.map(Json).ok_or_else(|| no_such_alert(&id))
}

/// Acknowledge an alert (idempotent: a second ack keeps the first time).
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses(
        (status = 200, body = Alert),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let store = state.alerts();
    let lookup = id.clone();
    let alert =
        tokio::task::spawn_blocking(move || store.acknowledge(&lookup, Utc::now())).await??;
    alert.map(Json).ok_or_else(|| no_such_alert(&id))
}

fn no_such_alert(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found("no-such-alert", format!("there is no alert {shown:?}"))
}
