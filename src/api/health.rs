//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem, ProblemCode};
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

/// How long readiness waits for the database before calling it unreachable.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: 200 when a model is loaded and the store is reachable, else 503 saying why.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Ready),
    (status = 503, body = Problem, content_type = "application/problem+json", description = "No model is loaded (`not-ready`), or the database is unreachable (`store-unavailable`)"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let det = state.default_detector();
    match det.model() {
        Some(m) => {
            if det.models().shared() {
                // With PostgreSQL a replica that cannot reach it must leave the load balancer's
                // rotation (the embedded store needs no such check).
                let store = state.alerts();
                tokio::time::timeout(
                    STORE_PING_TIMEOUT,
                    tokio::task::spawn_blocking(move || store.ping()),
                )
                .await
                .map_err(|_| {
                    crate::store::StoreError::Unavailable("no answer within 2 s".into())
                })???;
            }
            Ok(Json(Ready {
                status: "ready",
                model_version: m.version(),
            }))
        }
        None => {
            let why = det
                .load_problem()
                .unwrap_or_else(|| "no model has been fitted yet: POST /v1/model/fit".into());
            Err(ApiError::unavailable(ProblemCode::NotReady, why, 5))
        }
    }
}
