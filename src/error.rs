//! The one HTTP error type: every failure becomes an RFC 9457 `application/problem+json` body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use problem_details::ProblemDetails;
use serde::Serialize;
use utoipa::ToSchema;

use crate::chart::ChartError;
use crate::detector::model::{FitError, ModelFileError};
use crate::detector::params::ParamError;
use crate::records::{RecordError, RecordErrorKind};
use crate::service::ServiceError;
use crate::store::StoreError;

/// An error answered to a client. `code` is stable; scripts may match on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// For bad records: the record's position in the batch (0-based).
    pub index: Option<usize>,
    /// For bad records or parameters: the field or parameter at fault.
    pub field: Option<String>,
    /// Seconds a client should wait before retrying (503).
    pub retry_after: Option<u64>,
}

/// The problem details body, as documented (what [`ApiError`] serialises to).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "/problems/invalid-record",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "record 3: feature \"bytes_sent\" is missing",
    "code": "invalid-record",
    "index": 3,
    "field": "bytes_sent"
}))]
pub struct Problem {
    /// `/problems/<code>` (relative to the service).
    #[serde(rename = "type")]
    pub type_: String,
    /// The HTTP status phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Record position in the batch, for bad records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Field or parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request's `x-request-id` (also in the response header and the service log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Serialize)]
struct Extensions<'a> {
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            index: None,
            field: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
        }
    }

    /// A failure that is ours, not the client's: logged in full, answered without internals.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed; the error is in the service log"),
        )
    }

    pub fn no_model() -> Self {
        Self::conflict(
            "no-model",
            "no model has been fitted yet: POST /v1/model/fit first",
        )
    }

    /// A bad record: names its index and field.
    pub fn record(index: usize, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            field: Some(field.into()),
            ..Self::unprocessable("invalid-record", detail)
        }
    }

    /// A bad record as a whole (not one field): names its index.
    pub fn record_at(index: usize, detail: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            ..Self::unprocessable("invalid-record", detail)
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let type_uri = format!("/problems/{}", self.code);
        let body = ProblemDetails::from_status_code(self.status)
            .with_type(
                type_uri
                    .parse::<axum::http::Uri>()
                    .unwrap_or_else(|_| axum::http::Uri::from_static("about:blank")),
            )
            .with_detail(self.detail)
            .with_extensions(Extensions {
                code: self.code,
                index: self.index,
                field: self.field.as_deref(),
            });
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        Self::unprocessable("invalid-parameter", e.to_string()).with_field(e.parameter())
    }
}

impl From<FitError> for ApiError {
    fn from(e: FitError) -> Self {
        match e {
            FitError::Param(p) => p.into(),
            FitError::NonFinite { index, ref feature } => {
                ApiError::record(index, feature.clone(), e.to_string())
            }
            FitError::FeatureCount { .. } => {
                ApiError::unprocessable("invalid-parameter", e.to_string())
            }
            FitError::Scaler(_) => ApiError::unprocessable("invalid-records", e.to_string()),
            FitError::Threshold(_) => {
                ApiError::unprocessable("invalid-parameter", e.to_string()).with_field("threshold")
            }
        }
    }
}

impl From<ModelFileError> for ApiError {
    fn from(e: ModelFileError) -> Self {
        ApiError::internal("reading a model file", e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor => {
                ApiError::bad_request("invalid-parameter", "cursor is not one this service issued")
                    .with_field("cursor")
            }
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "storage unavailable");
                ApiError::unavailable(
                    "store-unavailable",
                    "the database is not reachable right now; retry shortly",
                    2,
                )
            }
            other => ApiError::internal("storage", other),
        }
    }
}

impl From<ChartError> for ApiError {
    fn from(e: ChartError) -> Self {
        match e {
            ChartError::Empty => {
                ApiError::conflict("nothing-to-draw", "there are no records to draw")
            }
            ChartError::Size { .. } => {
                ApiError::bad_request("invalid-parameter", e.to_string()).with_field("width")
            }
            #[allow(unreachable_patterns)]
            other => ApiError::internal("drawing the chart", other),
        }
    }
}

impl From<crate::detector::generator::GeneratorError> for ApiError {
    fn from(e: crate::detector::generator::GeneratorError) -> Self {
        ApiError::unprocessable("invalid-parameter", e.to_string()).with_field(e.field())
    }
}

impl From<crate::detector::metrics::MetricsError> for ApiError {
    fn from(e: crate::detector::metrics::MetricsError) -> Self {
        ApiError::internal("computing metrics", e)
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        use StatusCode as S;
        let (status, code) = match e.kind {
            RecordErrorKind::Malformed => (S::BAD_REQUEST, "malformed-body"),
            RecordErrorKind::UnknownField => (S::BAD_REQUEST, "unknown-field"),
            RecordErrorKind::InvalidOption => (S::BAD_REQUEST, "invalid-parameter"),
            RecordErrorKind::UnsupportedFormat => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
            }
            RecordErrorKind::BodyTooLarge => (S::PAYLOAD_TOO_LARGE, "body-too-large"),
            RecordErrorKind::TooManyRecords => (S::PAYLOAD_TOO_LARGE, "too-many-records"),
            RecordErrorKind::InvalidRecord => (S::UNPROCESSABLE_ENTITY, "invalid-record"),
            RecordErrorKind::InvalidRecords => (S::UNPROCESSABLE_ENTITY, "invalid-records"),
            RecordErrorKind::EmptyBatch => (S::UNPROCESSABLE_ENTITY, "empty-batch"),
            RecordErrorKind::NoFeatures => (S::UNPROCESSABLE_ENTITY, "no-features"),
            RecordErrorKind::InvalidZeekLine => (S::UNPROCESSABLE_ENTITY, "invalid-zeek-line"),
            RecordErrorKind::MissingZeekField => (S::UNPROCESSABLE_ENTITY, "missing-zeek-field"),
            RecordErrorKind::Internal => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self {
            index: e.index,
            field: e.field,
            ..Self::new(status, code, e.detail)
        }
    }
}

impl From<crate::records::ZeekError> for ApiError {
    fn from(e: crate::records::ZeekError) -> Self {
        RecordError::from(e).into()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Records(e) => e.into(),
            ServiceError::NoModel => Self::no_model(),
            ServiceError::Settings { detail, field } => Self {
                field,
                ..Self::bad_request("invalid-parameter", detail)
            },
            ServiceError::Params(e) => e.into(),
            ServiceError::Fit(e) => e.into(),
            ServiceError::Generator(e) => e.into(),
            ServiceError::Budget(detail) => Self::unprocessable("invalid-parameter", detail)
                .with_field("max_false_positive_rate"),
            ServiceError::Metrics(e) => e.into(),
            e @ ServiceError::NoSuchVersion(_) => Self::not_found("no-such-version", e.to_string()),
            e @ ServiceError::CorruptModel { .. } => Self::conflict("corrupt-model", e.to_string()),
            ServiceError::Store(e) => e.into(),
            ServiceError::Task(e) => e.into(),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal("a background task", e)
    }
}

/// Middleware: puts the request's `x-request-id` into every problem+json body, so a client can
/// quote it and an operator can find the matching log lines.
pub async fn attach_request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = next.run(req).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let Some(id) = id.filter(|_| is_problem) else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    // Problem bodies are small; 64 KiB is far more than any we produce.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("request_id".into(), serde_json::Value::String(id));
            serde_json::to_vec(&map).unwrap_or_else(|_| bytes.to_vec())
        }
        _ => bytes.to_vec(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}
