//! `/v1/detectors`: create, replace, read and delete named detectors; and the extractor that
//! resolves the detector of every per-detector route (`/v1/detectors/{name}/...`, or `default`
//! on the v1 paths).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::problems::{BadParameter, DetectorProblems, NoSuchDetector};
use super::views::detectors::{DetectorDeleted, DetectorList, DetectorSettingsView, DetectorView};
use crate::error::{ApiError, ProblemCode};
use crate::service::ServiceError;
use crate::service::detectors::{self, check_name, parse_spec};
use crate::state::{AppState, DetectorState};

/// The detector a request is about: the `{name}` of its path, or `default` on a v1 path.
/// An unknown name is a 404 `no-such-detector`.
pub struct Detector(pub Arc<DetectorState>);

impl FromRequestParts<AppState> for Detector {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let name = RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|p| {
                p.iter()
                    .find(|(k, _)| *k == "name")
                    .map(|(_, v)| v.to_owned())
            });
        match name {
            None => Ok(Self(state.default_detector().clone())),
            Some(name) => state
                .detector(&name)
                .map(Self)
                .ok_or_else(|| ServiceError::NoSuchDetector(name).into()),
        }
    }
}

/// The detector's name in the path (documents `{name}` on every per-detector route).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DetectorName {
    /// `^[a-z0-9][a-z0-9_-]{0,62}$`; `default` is the detector the v1 paths serve.
    #[param(example = "zeek-hosts")]
    pub name: String,
}

/// Every detector: `default` first, then by name.
#[utoipa::path(get, path = "/v1/detectors", operation_id = "list_detectors", tag = "detectors",
    responses((status = 200, body = DetectorList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<DetectorList>, ApiError> {
    let detectors = detectors::list(&state).await?;
    Ok(Json(DetectorList {
        detectors: detectors.into_iter().map(DetectorView::from).collect(),
    }))
}

/// One detector: its settings, every default filled in, and its active model version.
#[utoipa::path(get, path = "/v1/detectors/{name}", tag = "detectors", params(DetectorName),
    responses((status = 200, body = DetectorView), NoSuchDetector))]
pub async fn get_detector(
    State(state): State<AppState>,
    Path(DetectorName { name }): Path<DetectorName>,
) -> Result<Json<DetectorView>, ApiError> {
    let found = detectors::get(&state, &name).await?;
    let info = found.ok_or(ServiceError::NoSuchDetector(name))?;
    Ok(Json(DetectorView::from(info)))
}

/// Create a detector (201) or replace its settings (200); a replaced detector keeps its model
/// versions and alerts.
///
/// Settings left out have v1's behaviour. Unknown fields and settings that cannot be used (such
/// as `params.baseline: entity` without `source.group_by`) are 422 `invalid-detector` with the
/// field's path in `field`. Stored durably (SQLite, or PostgreSQL, where every replica
/// sees it within seconds).
#[utoipa::path(put, path = "/v1/detectors/{name}", operation_id = "put_detector", tag = "detectors", params(DetectorName),
    request_body(content = DetectorSettingsView, content_type = "application/json"),
    responses(
        (status = 200, body = DetectorView, description = "Settings replaced"),
        (status = 201, body = DetectorView, description = "Detector created"),
        DetectorProblems,
    ))]
pub async fn put(
    State(state): State<AppState>,
    Path(DetectorName { name }): Path<DetectorName>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = super::whole_json_body(&state, &headers, body, "detector settings").await?;
    check_name(&name).map_err(ServiceError::from)?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ProblemCode::MalformedBody,
            format!("the body is not JSON: {e}"),
        )
    })?;
    let spec = parse_spec(json).map_err(ServiceError::from)?;
    let (created, info) = detectors::put(&state, &name, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/detectors/{name}");
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(DetectorView::from(info)),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Also delete the detector's model versions (without it, a detector that has some is 409).
    #[serde(default)]
    pub force: bool,
}

/// Delete a detector: its settings and (with `?force=true`) its model versions. Its alerts are
/// kept and still listed with `GET /v1/alerts?detector=<name>`. Without `force`, a detector that
/// has model versions is 409 `detector-in-use`; `default` cannot be deleted (409).
#[utoipa::path(delete, path = "/v1/detectors/{name}", operation_id = "delete_detector", tag = "detectors",
    params(DetectorName, DeleteQuery),
    responses(
        (status = 200, body = DetectorDeleted),
        BadParameter,
        NoSuchDetector,
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json",
         description = "It has model versions and `force` was not given, or it is `default`"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(DetectorName { name }): Path<DetectorName>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<DetectorDeleted>, ApiError> {
    let query = super::query(query)?;
    let deleted = detectors::delete(&state, &name, query.force).await?;
    Ok(Json(DetectorDeleted {
        name,
        models_deleted: deleted.models,
        alerts_kept: true,
    }))
}
