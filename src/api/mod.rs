//! The HTTP API: one module per resource, each with its handlers; this module assembles the router and the OpenAPI document.

pub mod alerts;
pub mod chart;
pub mod edge;
pub mod evaluate;
pub mod health;
pub mod metrics;
pub mod model;
pub mod problems;
pub mod samples;
pub mod score;
pub mod views;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query};
use axum::http::{HeaderMap, StatusCode, header};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{ApiError, ProblemCode};
use crate::records::{BodyFormat, RecordError, ZeekOptions};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "netsentinel",
        description = "Network-traffic anomaly detection: post batches of traffic records, get an Isolation Forest \
score per record with an explanation, alerts when a batch is anomalous, and the analysis chart.\n\n\
**Scores.** `score` is the Isolation Forest anomaly score 2^(-E[h(x)]/c(ψ)) in (0, 1]; higher is more anomalous. \
scikit-learn's `score_samples` equals `-score`. A record is anomalous when `score > threshold` (strictly): the \
threshold is 0.5 with `contamination: \"auto\"`, or the matching quantile of the training scores with a fraction.\n\n\
**Severity** is `round(100 × clamp((score − 0.4) / 0.4, 0, 1))`: 25 at score 0.5, 50 at 0.6, 75 at 0.7, 100 from 0.8.\n\n\
**Errors** are RFC 9457 problem details (`application/problem+json`) with a stable `code`, and for bad records the \
record `index` and `field`.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "samples", description = "Generated, labeled sample traffic"),
        (name = "model", description = "Fitting, inspecting and rolling back the model"),
        (name = "scoring", description = "Scoring and evaluating traffic batches"),
        (name = "alerts", description = "Alerts raised by scored batches"),
        (name = "chart", description = "The 2x2 analysis chart"),
    )
)]
struct ApiDoc;

/// The API routes with their OpenAPI description, before state is attached.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::render))
        .routes(routes!(samples::generate))
        .routes(routes!(model::fit))
        .routes(routes!(model::get_model))
        .routes(routes!(model::list_versions))
        .routes(routes!(model::activate))
        .routes(routes!(score::score))
        .routes(routes!(evaluate::evaluate))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::acknowledge))
        .routes(routes!(chart::chart_png))
        .routes(routes!(chart::chart_svg))
}

/// The OpenAPI document (what `/openapi.json` serves and `netsentinel openapi` prints).
pub fn openapi() -> utoipa::openapi::OpenApi {
    with_security(api_router().split_for_parts().1)
}

/// Documents the optional bearer API keys: the scheme, and 401/403 on every `/v1` operation.
fn with_security(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };

    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from NETSENTINEL_API_KEYS, as `Authorization: Bearer <key>`. Scopes: \
                         `read` (model, alerts, chart), `score` (score, evaluate, samples), `admin` (fit, \
                         activate, ack; implies the others). Without configured keys the service is open.",
                    ))
                    .build(),
            ),
        );
    for (path, item) in api.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            op.security = Some(vec![
                SecurityRequirement::default(),
                SecurityRequirement::new("api_key", Vec::<String>::new()),
            ]);
            op.responses.responses.insert(
                "401".into(),
                problems::problem_response("No valid API key (only when keys are configured)")
                    .into(),
            );
            op.responses.responses.insert(
                "403".into(),
                problems::problem_response("The API key lacks the scope this operation needs")
                    .into(),
            );
        }
    }
    api
}

/// The whole HTTP surface: API routes, `/openapi.json`, `/docs`, and problem+json fallbacks.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings().max_body_bytes;
    let (router, api) = api_router().split_for_parts();
    let api = with_security(api);
    crate::monitoring::handle();
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        ProblemCode::NotFound,
        "no such endpoint; see /docs for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemCode::MethodNotAllowed,
        "this endpoint does not take that method; see /docs",
    )
}

/// The body, or a problem: 413 over the size limit, 400 when it could not be read.
pub(crate) fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RecordError::body_too_large().into()
        } else {
            RecordError::malformed(format!("the body could not be read: {e}")).into()
        }
    })
}

/// A declared `Content-Length` over the limit: refused before anything is read.
pub(crate) fn check_content_length(headers: &HeaderMap, max_body: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body as u64 => Err(RecordError::body_too_large().into()),
        _ => Ok(()),
    }
}

/// The body's format, from its `Content-Type` (none: JSON); 415 for one no reader takes.
pub(crate) fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    Ok(BodyFormat::from_media_type(content_type)?)
}

/// The query parameters, or a 400 problem naming what is wrong.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::new(
            ProblemCode::InvalidParameter,
            format!("query string: {}", e.body_text()),
        )
    })
}

/// Zeek aggregation settings from the query string; an error when given for a non-Zeek body.
pub(crate) fn zeek_options(
    format: BodyFormat,
    window: Option<&str>,
    group_by: Option<&str>,
) -> Result<ZeekOptions, ApiError> {
    if !format.is_zeek() && (window.is_some() || group_by.is_some()) {
        return Err(ApiError::new(ProblemCode::InvalidParameter, "window and group_by apply to Zeek conn logs only (Content-Type text/zeek-tsv or application/x-zeek-json)",
        )
        .with_field(if window.is_some() { "window" } else { "group_by" }));
    }
    Ok(ZeekOptions::from_params(window, group_by)?)
}

/// Response media types the API can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produces {
    Json,
    Csv,
    Ndjson,
}

impl Produces {
    fn media_type(self) -> &'static str {
        match self {
            Produces::Json => "application/json",
            Produces::Csv => "text/csv",
            Produces::Ndjson => "application/x-ndjson",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Produces::Json => "application/json",
            Produces::Csv => "text/csv; charset=utf-8",
            Produces::Ndjson => "application/x-ndjson",
        }
    }
}

/// Picks the first of `offered` that `Accept` allows (highest q first); 406 when none is.
pub(crate) fn negotiate(headers: &HeaderMap, offered: &[Produces]) -> Result<Produces, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let mut ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let range = pieces.next()?.trim().to_ascii_lowercase();
            let q = pieces
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                })
                .next()
                .unwrap_or(1.0);
            (!range.is_empty()).then_some((range, q))
        })
        .collect();
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (range, q) in &ranges {
        if *q <= 0.0 {
            continue;
        }
        for &p in offered {
            let mt = p.media_type();
            let matches = range == "*/*"
                || range == mt
                || (range.ends_with("/*") && mt.starts_with(&range[..range.len() - 1]));
            if matches {
                return Ok(p);
            }
        }
    }
    let names: Vec<&str> = offered.iter().map(|p| p.media_type()).collect();
    Err(ApiError::new(
        ProblemCode::NotAcceptable,
        format!("this endpoint answers {}", names.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiation() {
        let all = [Produces::Json, Produces::Csv, Produces::Ndjson];
        assert_eq!(negotiate(&HeaderMap::new(), &all).unwrap(), Produces::Json);
        assert_eq!(negotiate(&accept("text/csv"), &all).unwrap(), Produces::Csv);
        assert_eq!(negotiate(&accept("text/*"), &all).unwrap(), Produces::Csv);
        assert_eq!(
            negotiate(
                &accept("application/json;q=0.5, application/x-ndjson"),
                &all
            )
            .unwrap(),
            Produces::Ndjson
        );
        assert_eq!(
            negotiate(&accept("image/png"), &all).unwrap_err().status,
            406
        );
    }
}
