//! The HTTP API: one module per resource, each with its handlers; this module assembles the router and the OpenAPI document.

pub mod alerts;
pub mod chart;
pub mod detectors;
pub mod edge;
pub mod evaluate;
pub mod health;
pub mod idempotency;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod problems;
pub mod samples;
pub mod score;
pub mod slots;
pub mod suppressions;
pub mod views;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request};
use axum::http::{HeaderMap, header};
use futures_util::stream::BoxStream;
use serde::de::DeserializeOwned;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{ApiError, ProblemCode};
use crate::records::read::BodyChunk;
use crate::records::{self, BodyFormat, ContentEncoding, RecordError, ZeekOptions};
use crate::service::detectors::DetectorSpec;
use crate::state::{AppState, DetectorState};
use detectors::Detector;
use std::sync::Arc;

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
        (name = "ingest", description = "Continuous ingest: Zeek conn logs folded into event-time windows that persist \
across requests, restarts and replicas; closed windows scored, stored and alerted on once"),
        (name = "detectors", description = "Named detectors, each with its own settings, model versions, chart and alerts; \
the v1 paths are the detector `default`, and every per-detector operation is also under `/v1/detectors/{name}/`"),
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
        .nest("/v1", per_detector())
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::export))
        .routes(routes!(alerts::export_one))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::acknowledge))
        .routes(routes!(alerts::feedback))
        .routes(routes!(
            suppressions::list_suppressions,
            suppressions::create_suppression
        ))
        .routes(routes!(suppressions::delete_suppression))
        .routes(routes!(detectors::list))
        .routes(routes!(
            detectors::get_detector,
            detectors::put,
            detectors::delete
        ))
        .nest(DETECTOR_PREFIX, per_detector())
}

/// Where a named detector's own routes live; the same routes under `/v1` are `default`'s.
const DETECTOR_PREFIX: &str = "/v1/detectors/{name}";

/// The routes every detector has, relative to `/v1` (the detector `default`) and to
/// [`DETECTOR_PREFIX`]; the [`detectors::Detector`] extractor tells them apart.
fn per_detector() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(reads_records(routes!(model::fit)))
        .routes(routes!(model::get_model))
        .routes(routes!(model::list_versions))
        .routes(routes!(model::activate))
        .routes(reads_records(routes!(score::score)))
        .routes(reads_records(routes!(evaluate::evaluate)))
        .routes(routes!(evaluate::evaluate_verdicts))
        .routes(routes!(chart::chart_png))
        .routes(routes!(chart::chart_svg))
        .routes(routes!(ingest::ingest))
        .routes(routes!(ingest::flush))
        .routes(routes!(ingest::windows))
}

/// The media types of a records body besides JSON, which each endpoint declares with its own
/// schema: CSV, NDJSON and Zeek conn logs, documented as bytes (`type: string, format: binary`),
/// which generated clients send as they are.
const TEXT_RECORD_TYPES: [&str; 4] = [
    "text/csv",
    "application/x-ndjson",
    "text/zeek-tsv",
    "application/x-zeek-json",
];

/// Adds the text forms of a records body to the operation of an endpoint that reads records
/// (its `#[utoipa::path]` declares the JSON form), so the list is written once.
fn reads_records(
    (schemas, mut paths, router): UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    for item in paths.paths.values_mut() {
        let body = item.post.as_mut().and_then(|op| op.request_body.as_mut());
        let body = body.expect("an endpoint that reads records is a POST with a body");
        for media_type in TEXT_RECORD_TYPES {
            let bytes = <views::bodies::Binary as utoipa::PartialSchema>::schema();
            let text = utoipa::openapi::Content::new(Some(bytes));
            body.content.insert(media_type.to_owned(), text);
        }
    }
    (schemas, paths, router)
}

/// Gives the per-detector copies of the v1 operations their own operation ids
/// (`detector_<v1 id>`), the `detectors` tag, the `{name}` parameter and its 404.
fn document_detector_routes(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    let prefix = format!("{DETECTOR_PREFIX}/");
    for (path, item) in api.paths.paths.iter_mut() {
        if !path.starts_with(&prefix) {
            continue;
        }
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            op.operation_id = op.operation_id.take().map(|id| format!("detector_{id}"));
            op.tags = Some(vec!["detectors".to_owned()]);
            let name = ParameterBuilder::new()
                .name("name")
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some(
                    "The detector (`default` is the one the v1 paths serve)",
                ))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .pattern(Some("^[a-z0-9][a-z0-9_-]{0,62}$")),
                ))
                .build();
            op.parameters.get_or_insert_with(Vec::new).insert(0, name);
            op.responses
                .responses
                .entry("404".into())
                .or_insert_with(|| {
                    problems::problem_response("No detector of this name (`no-such-detector`)")
                        .into()
                });
        }
    }
}

/// The OpenAPI document (what `/openapi.json` serves and `netsentinel openapi` prints).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented(api_router().split_for_parts().1)
}

/// The document as served: detector routes described, security declared.
fn documented(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    document_detector_routes(&mut api);
    with_security(api)
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
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
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
    let api = documented(api);
    crate::monitoring::handle();
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Answers of at least this many bytes (or of unknown length: streamed) are compressed when the
/// client's `Accept-Encoding` allows gzip or zstd; smaller ones gain too little to be worth it.
pub const COMPRESS_FROM_BYTES: u64 = 1024;

/// Compressed answers (gzip or zstd, as `Accept-Encoding` prefers) for everything but images
/// (the PNG chart is compressed already), event streams and answers under
/// [`COMPRESS_FROM_BYTES`]. Streamed answers stay streamed: they are compressed piece by piece.
/// The fastest level: it runs as the answer is written, and most of the gain is in the first.
pub fn compression() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new()
        .gzip(true)
        .zstd(true)
        .quality(CompressionLevel::Fastest)
        .compress_when(
            SizeAbove::new(COMPRESS_FROM_BYTES)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::SSE)
                .and(NotForContentType::GRPC),
        )
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

/// The body as it arrives, decoded from its `Content-Encoding` and held to the body limit (as
/// sent and decoded): what every reader of a body reads. A declared length over the limit is a
/// 413 and a coding no reader decodes a 415, before anything is read.
pub(crate) fn body_stream(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Result<BoxStream<'static, BodyChunk>, ApiError> {
    let declared = check_content_length(headers, max_body)?;
    let encoding =
        ContentEncoding::from_header(headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()))?;
    // What reading it costs, held against the memory budget before it is read: the declared
    // length at once (a 413 or 503 before a byte is read), and as the decoded bytes arrive,
    // whatever goes beyond it.
    let cost = body_format(headers).map_or(1, |f| f.memory_factor());
    let work = crate::work::current();
    let covered = declared.unwrap_or(0).saturating_mul(cost);
    if let Some(work) = &work {
        work.reserve(covered)?;
    }
    let decoded = records::decoded(body.into_data_stream(), encoding, max_body);
    Ok(match work {
        Some(work) => Box::pin(records::budgeted(decoded, work, cost, covered)),
        None => decoded,
    })
}

/// The whole body, decoded, for handlers that need all of it at once.
pub(crate) async fn whole_body(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Result<Bytes, ApiError> {
    let declared = usize::try_from(HttpBody::size_hint(&body).lower()).unwrap_or(0);
    let chunks = body_stream(headers, body, max_body)?;
    Ok(records::read_whole(chunks, declared, max_body).await?)
}

/// The whole body of a request that only takes JSON (`what` names it in the 415 answered
/// for any other Content-Type), decoded, under the service's body limit.
pub(crate) async fn whole_json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<Bytes, ApiError> {
    let body = whole_body(headers, body, state.settings().max_body_bytes).await?;
    if body_format(headers)? != BodyFormat::Json {
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            format!("{what} are JSON: send Content-Type application/json"),
        ));
    }
    Ok(body)
}

/// A JSON body as `T`: a body of the wrong shape is 400 `malformed-body`, its `field` the
/// path to the value at fault (`suppress.cidr`, `conditions[0].op`).
pub(crate) fn json_of<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let error = ApiError::new(ProblemCode::MalformedBody, e.inner().to_string());
        if field == "." {
            error
        } else {
            error.with_field(field)
        }
    })
}

/// A declared `Content-Length` over the limit: refused before anything is read. The declared
/// length, if any.
pub(crate) fn check_content_length(
    headers: &HeaderMap,
    max_body: usize,
) -> Result<Option<u64>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body as u64 => Err(RecordError::body_too_large().into()),
        n => Ok(n),
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

/// A query string that may carry the Zeek aggregation settings.
pub trait ZeekParams {
    /// `window` and `group_by`, when given.
    fn zeek_params(&self) -> (Option<&str>, Option<&str>);

    /// Whether `group_by` may name a records body's entity field (a fit with
    /// `baseline=entity`) rather than a Zeek grouping.
    fn names_entity(&self) -> bool {
        false
    }
}

/// The query strings of the endpoints that read records carry the Zeek settings in fields
/// `window` and `group_by`.
macro_rules! zeek_params {
    ($($query:ty),*) => {$(
        impl ZeekParams for $query {
            fn zeek_params(&self) -> (Option<&str>, Option<&str>) {
                (self.window.as_deref(), self.group_by.as_deref())
            }
        }
    )*};
}

zeek_params!(evaluate::EvaluateQuery, score::ScoreQuery);

impl ZeekParams for model::FitQuery {
    fn zeek_params(&self) -> (Option<&str>, Option<&str>) {
        (self.window.as_deref(), self.group_by.as_deref())
    }

    fn names_entity(&self) -> bool {
        self.baseline.as_deref() == Some("entity")
    }
}

/// Zeek aggregation settings from the query string over the detector's; an error when given
/// for a non-Zeek body.
pub(crate) fn zeek_options(
    format: BodyFormat,
    detector: &DetectorSpec,
    query: &impl ZeekParams,
) -> Result<ZeekOptions, ApiError> {
    let (window, group_by) = query.zeek_params();
    if !format.is_zeek() && group_by.is_some() && window.is_none() && query.names_entity() {
        // `group_by` names a records body's entity field (a fit with `baseline=entity`).
        return Ok(detector.zeek_options(None, None)?);
    }
    if !format.is_zeek() && (window.is_some() || group_by.is_some()) {
        return Err(ApiError::new(ProblemCode::InvalidParameter, "window and group_by apply to Zeek conn logs only (Content-Type text/zeek-tsv or application/x-zeek-json)",
        )
        .with_field(if window.is_some() { "window" } else { "group_by" }));
    }
    Ok(detector.zeek_options(window, group_by)?)
}

/// A request whose body is records (fit, evaluate), for a detector, with its query string
/// `Q`; the body as it arrives ([`body_stream`]), read by the service a chunk at a time. Its
/// problems are answered in this order: the detector (404), the query string (400), a declared
/// length over the limit (413), its `Content-Encoding` and `Content-Type` (415), the Zeek
/// settings (400); the body's own as it is read.
pub struct RecordsRequest<Q> {
    pub detector: Arc<DetectorState>,
    pub query: Q,
    pub format: BodyFormat,
    pub zeek: ZeekOptions,
    pub body: BoxStream<'static, BodyChunk>,
    /// The body's announced length (0 when unknown).
    pub declared_len: usize,
}

impl<Q> FromRequest<AppState> for RecordsRequest<Q>
where
    Q: DeserializeOwned + ZeekParams + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let Detector(detector) = Detector::from_request_parts(&mut parts, state).await?;
        let query = query(Query::<Q>::try_from_uri(&parts.uri))?;
        let max_body = state.settings().max_body_bytes;
        let declared_len = usize::try_from(HttpBody::size_hint(&body).lower()).unwrap_or(0);
        let body = body_stream(&parts.headers, body, max_body)?;
        let format = body_format(&parts.headers)?;
        let zeek = zeek_options(format, &detector.spec(), &query)?;
        Ok(Self {
            detector,
            query,
            format,
            zeek,
            body,
            declared_len,
        })
    }
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
