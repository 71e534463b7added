//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// The active model's version.
    pub model_version: u64,
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 when a model is loaded, else 503 saying why.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Ready),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "No model is loaded"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    match state.model() {
        Some(m) => Ok(Json(Ready {
            status: "ready",
            model_version: m.version(),
        })),
        None => {
            let why = state
                .load_problem()
                .unwrap_or_else(|| "no model has been fitted yet: POST /v1/model/fit".into());
            Err(ApiError::unavailable("not-ready", why, 5))
        }
    }
}
