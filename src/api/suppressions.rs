//! `/v1/suppressions`: list, create and delete suppression rules.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::problems::{NotFound, SuppressionProblems};
use super::views::suppressions::{
    CreatedSuppressionView, NewSuppressionView, SuppressionListView, SuppressionView,
};
use crate::auth::ClientId;
use crate::error::ApiError;
use crate::service::ServiceError;
use crate::service::suppression::{self, NewRule};
use crate::state::AppState;

/// Every suppression rule, oldest first; expired ones say `expired: true`.
#[utoipa::path(get, path = "/v1/suppressions", tag = "alerts",
    responses((status = 200, body = SuppressionListView)))]
pub async fn list_suppressions(
    State(state): State<AppState>,
) -> Result<Json<SuppressionListView>, ApiError> {
    let now = Utc::now();
    let rules = suppression::list(&state).await?;
    Ok(Json(SuppressionListView {
        suppressions: rules
            .into_iter()
            .map(|r| SuppressionView::of(r, now))
            .collect(),
    }))
}

/// Create a suppression rule. Records it matches (on every replica, from now on) are still
/// scored and answered with `suppressed: <rule id>`, but raise no alert, do not count toward
/// their batch's alert and are left out of fits. Needs the `admin` scope.
///
/// Creating it resolves at once every unresolved (open or acknowledged) incident it covers,
/// each with its `resolved` delivery; `resolved_alerts` lists their ids. It covers an incident
/// of its detector (any, without one) whose entity is its `entity` or inside its `cidr`; a
/// rule with `conditions` or `hours` covers it only if every record stored on the incident
/// (its most anomalous ones) matches them.
#[utoipa::path(post, path = "/v1/suppressions", tag = "alerts",
    request_body(content = NewSuppressionView, content_type = "application/json"),
    responses(
        (status = 201, body = CreatedSuppressionView, description = "Rule created"),
        SuppressionProblems,
    ))]
pub async fn create_suppression(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientId>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = super::whole_json_body(&state, &headers, body, "suppression rules").await?;
    let rule: NewRule = super::json_of(&body)?;
    let created_by = client.map(|c| c.0.0);
    let created = suppression::create(&state, rule, created_by).await?;
    let location = format!("/v1/suppressions/{}", created.rule.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedSuppressionView::of(created, Utc::now())),
    )
        .into_response())
}

/// Delete a suppression rule: records it matched raise alerts again. Needs the `admin` scope.
#[utoipa::path(delete, path = "/v1/suppressions/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 204, description = "Deleted"), NotFound))]
pub async fn delete_suppression(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if suppression::delete(&state, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        let shown: String = id.chars().take(64).collect();
        Err(ServiceError::NoSuchSuppression(shown).into())
    }
}
