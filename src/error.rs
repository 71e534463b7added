//! The one HTTP error type: every failure becomes an RFC 9457 `application/problem+json` body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use problem_details::ProblemDetails;
use serde::Serialize;
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

use crate::chart::ChartError;
use crate::detector::model::{FitError, ModelFileError};
use crate::detector::params::ParamError;
use crate::records::{RecordError, RecordErrorKind};
use crate::service::ServiceError;
use crate::store::StoreError;

/// Declares [`ProblemCode`] with each variant's wire name, and [`ProblemCode::ALL`].
macro_rules! problem_codes {
    ($($variant:ident = $name:literal),+ $(,)?) => {
        /// The stable, machine-readable problem codes (`code`, and `type` = `/problems/<code>`)
        /// that scripts may match on, each with the status it is answered with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ProblemCode {
            $($variant),+
        }

        impl ProblemCode {
            /// Every code, for the documentation and its tests.
            pub const ALL: &[ProblemCode] = &[$(ProblemCode::$variant),+];

            /// The code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $name),+
                }
            }
        }
    };
}

problem_codes! {
    MalformedBody = "malformed-body",
    UnknownField = "unknown-field",
    InvalidParameter = "invalid-parameter",
    UnsupportedMediaType = "unsupported-media-type",
    UnsupportedContentEncoding = "unsupported-content-encoding",
    NotAcceptable = "not-acceptable",
    BodyTooLarge = "body-too-large",
    MemoryBudget = "memory-budget",
    TooManyRecords = "too-many-records",
    InvalidRecord = "invalid-record",
    InvalidRecords = "invalid-records",
    EmptyBatch = "empty-batch",
    NoFeatures = "no-features",
    InsufficientTrainingData = "insufficient-training-data",
    InvalidZeekLine = "invalid-zeek-line",
    MissingZeekField = "missing-zeek-field",
    NoModel = "no-model",
    NoSuchVersion = "no-such-version",
    CorruptModel = "corrupt-model",
    NoSuchAlert = "no-such-alert",
    NoSuchDetector = "no-such-detector",
    InvalidDetector = "invalid-detector",
    DetectorInUse = "detector-in-use",
    DefaultDetector = "default-detector",
    InvalidSuppression = "invalid-suppression",
    NoSuchSuppression = "no-such-suppression",
    IdempotencyKeyReused = "idempotency-key-reused",
    IdempotencyKeyInFlight = "idempotency-key-in-flight",
    IdempotencyAnswerNotKept = "idempotency-answer-not-kept",
    NothingToDraw = "nothing-to-draw",
    IngestConflict = "ingest-conflict",
    NotFound = "not-found",
    MethodNotAllowed = "method-not-allowed",
    BadRequest = "bad-request",
    RequestTimeout = "request-timeout",
    Unauthorized = "unauthorized",
    Forbidden = "forbidden",
    StoreUnavailable = "store-unavailable",
    Timeout = "timeout",
    Overloaded = "overloaded",
    NotReady = "not-ready",
    Internal = "internal",
}

impl ProblemCode {
    /// The status the problem is answered with. Two codes have a second one, built by their
    /// own constructors: `invalid-parameter` is 422 for a value that reads but cannot be used
    /// ([`ApiError::invalid_value`]), and `no-model` is 404 where the model is the resource
    /// asked for ([`ApiError::no_model_found`]).
    pub const fn status(self) -> StatusCode {
        use ProblemCode::*;
        match self {
            MalformedBody | UnknownField | InvalidParameter | BadRequest => StatusCode::BAD_REQUEST,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NoSuchVersion | NoSuchAlert | NoSuchDetector | NoSuchSuppression | NotFound => {
                StatusCode::NOT_FOUND
            }
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            NoModel
            | CorruptModel
            | NothingToDraw
            | DetectorInUse
            | DefaultDetector
            | IngestConflict
            | IdempotencyKeyInFlight
            | IdempotencyAnswerNotKept => StatusCode::CONFLICT,
            BodyTooLarge | TooManyRecords | MemoryBudget => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType | UnsupportedContentEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidRecord
            | InvalidRecords
            | EmptyBatch
            | NoFeatures
            | InsufficientTrainingData
            | InvalidZeekLine
            | MissingZeekField
            | InvalidDetector
            | InvalidSuppression
            | IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            StoreUnavailable | Timeout | Overloaded | NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to a client. `code` is stable; scripts may match on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ProblemCode,
    pub detail: String,
    /// For bad records: the record's position in the batch (0-based).
    pub index: Option<usize>,
    /// For bad records or parameters: the field or parameter at fault.
    pub field: Option<String>,
    /// Seconds a client should wait before retrying (503).
    pub retry_after: Option<u64>,
}

/// The problem details body, as documented (what [`ApiError`] serialises to).
#[skip_serializing_none]
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
    pub index: Option<usize>,
    /// Field or parameter at fault.
    pub field: Option<String>,
    /// The request's `x-request-id` (also in the response header and the service log).
    pub request_id: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Extensions<'a> {
    code: &'a str,
    index: Option<usize>,
    field: Option<&'a str>,
}

impl ApiError {
    /// A problem answered with its code's status.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            detail: detail.into(),
            index: None,
            field: None,
            retry_after: None,
        }
    }

    /// `invalid-parameter` for a value that reads but cannot be used (422).
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            ..Self::new(ProblemCode::InvalidParameter, detail)
        }
    }

    /// A 503 the client should retry after `retry_after` seconds.
    pub fn unavailable(code: ProblemCode, detail: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(code, detail)
        }
    }

    /// A failure that is ours, not the client's: logged in full, answered without internals.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new(
            ProblemCode::Internal,
            format!("{context} failed; the error is in the service log"),
        )
    }

    /// Scoring or evaluating before any model exists (409).
    pub fn no_model() -> Self {
        Self::new(ProblemCode::NoModel, NO_MODEL)
    }

    /// Asking for the model itself before one exists (404).
    pub fn no_model_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            ..Self::no_model()
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

const NO_MODEL: &str = "no model has been fitted yet: POST /v1/model/fit first";

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

/// Longest detail a problem carries (details may quote client input, such as a field name).
pub const MAX_DETAIL_CHARS: usize = 2048;

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        truncate_chars(&mut self.detail, MAX_DETAIL_CHARS);
        if let Some(field) = self.field.as_mut() {
            truncate_chars(field, MAX_DETAIL_CHARS / 8);
        }
        let type_uri = format!("/problems/{}", self.code);
        let body = ProblemDetails::from_status_code(self.status)
            .with_type(
                type_uri
                    .parse::<axum::http::Uri>()
                    .unwrap_or_else(|_| axum::http::Uri::from_static("about:blank")),
            )
            .with_detail(self.detail)
            .with_extensions(Extensions {
                code: self.code.as_str(),
                index: self.index,
                field: self.field.as_deref(),
            });
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| {
            format!(
                r#"{{"type":"/problems/{code}","status":{status},"code":"{code}","detail":"see the service log"}}"#,
                code = self.code,
                status = self.status.as_u16()
            )
            .into_bytes()
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json,
        )
            .into_response();
        if self.code == ProblemCode::UnsupportedContentEncoding {
            // RFC 9110 15.5.16: a 415 for a content coding names the codings that are taken.
            response.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static(crate::records::ACCEPTED_ENCODINGS),
            );
        }
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
        Self::invalid_value(e.to_string()).with_field(e.parameter())
    }
}

impl From<FitError> for ApiError {
    fn from(e: FitError) -> Self {
        match e {
            FitError::Param(p) => p.into(),
            FitError::NonFinite { index, ref feature } => {
                RecordError::record(index, feature.clone(), e.to_string()).into()
            }
            FitError::FeatureCount { .. } => ApiError::invalid_value(e.to_string()),
            FitError::Scaler(_) => ApiError::new(ProblemCode::InvalidRecords, e.to_string()),
            FitError::Unrepresentable { ref feature, .. } => {
                let feature = feature.clone();
                ApiError::new(ProblemCode::InvalidRecords, e.to_string()).with_field(feature)
            }
            FitError::Threshold(_) => {
                ApiError::invalid_value(e.to_string()).with_field("threshold")
            }
            FitError::Cancelled => cancelled(),
            FitError::Insufficient(_) => {
                ApiError::new(ProblemCode::InsufficientTrainingData, e.to_string())
                    .with_field("records")
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
            StoreError::BadCursor => ApiError::new(
                ProblemCode::InvalidParameter,
                "cursor is not one this service issued",
            )
            .with_field("cursor"),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "storage unavailable");
                ApiError::unavailable(
                    ProblemCode::StoreUnavailable,
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
                ApiError::new(ProblemCode::NothingToDraw, "there are no records to draw")
            }
            ChartError::Size { .. } => {
                ApiError::new(ProblemCode::InvalidParameter, e.to_string()).with_field("width")
            }
            ChartError::Stopped => cancelled(),
            #[allow(unreachable_patterns)]
            other => ApiError::internal("drawing the chart", other),
        }
    }
}

impl From<crate::detector::generator::GeneratorError> for ApiError {
    fn from(e: crate::detector::generator::GeneratorError) -> Self {
        ApiError::invalid_value(e.to_string()).with_field(e.field())
    }
}

impl From<crate::detector::metrics::MetricsError> for ApiError {
    fn from(e: crate::detector::metrics::MetricsError) -> Self {
        ApiError::internal("computing metrics", e)
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        use ProblemCode as P;
        let code = match e.kind {
            RecordErrorKind::Malformed => P::MalformedBody,
            RecordErrorKind::UnknownField => P::UnknownField,
            RecordErrorKind::InvalidOption => P::InvalidParameter,
            RecordErrorKind::UnsupportedFormat => P::UnsupportedMediaType,
            RecordErrorKind::UnsupportedEncoding => P::UnsupportedContentEncoding,
            RecordErrorKind::BodyTooLarge => P::BodyTooLarge,
            RecordErrorKind::TooManyRecords => P::TooManyRecords,
            RecordErrorKind::InvalidRecord => P::InvalidRecord,
            RecordErrorKind::InvalidRecords => P::InvalidRecords,
            RecordErrorKind::EmptyBatch => P::EmptyBatch,
            RecordErrorKind::NoFeatures => P::NoFeatures,
            RecordErrorKind::InvalidZeekLine => P::InvalidZeekLine,
            RecordErrorKind::MissingZeekField => P::MissingZeekField,
            RecordErrorKind::Internal => P::Internal,
            RecordErrorKind::MemoryBudget => P::MemoryBudget,
            RecordErrorKind::MemoryBusy => P::Overloaded,
            RecordErrorKind::Cancelled => return cancelled(),
        };
        let retry_after = (code == P::Overloaded).then_some(RETRY_AFTER_MEMORY_BUSY);
        Self {
            index: e.index,
            field: e.field,
            retry_after,
            ..Self::new(code, e.detail)
        }
    }
}

impl From<crate::records::ZeekError> for ApiError {
    fn from(e: crate::records::ZeekError) -> Self {
        RecordError::from(e).into()
    }
}

/// The request header naming a retry's idempotency key (the `field` of its problems).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Records(e) => e.into(),
            ServiceError::NoModel => Self::no_model(),
            ServiceError::Settings { detail, field } => Self {
                field,
                ..Self::new(ProblemCode::InvalidParameter, detail)
            },
            ServiceError::Params(e) => e.into(),
            ServiceError::Fit(e) => e.into(),
            ServiceError::Generator(e) => e.into(),
            ServiceError::Budget(detail) => {
                Self::invalid_value(detail).with_field("max_false_positive_rate")
            }
            ServiceError::Labels(detail) => Self::invalid_value(detail).with_field("labels"),
            ServiceError::Metrics(e) => e.into(),
            e @ ServiceError::NoSuchVersion(_) => {
                Self::new(ProblemCode::NoSuchVersion, e.to_string())
            }
            e @ ServiceError::CorruptModel { .. } => {
                Self::new(ProblemCode::CorruptModel, e.to_string())
            }
            ServiceError::Detector(e) => Self {
                field: e.field,
                ..Self::new(ProblemCode::InvalidDetector, e.detail)
            },
            ServiceError::Suppression { detail, field } => Self {
                field,
                ..Self::new(ProblemCode::InvalidSuppression, detail)
            },
            e @ ServiceError::NoSuchSuppression(_) => {
                Self::new(ProblemCode::NoSuchSuppression, e.to_string())
            }
            e @ ServiceError::NoSuchDetector(_) => {
                Self::new(ProblemCode::NoSuchDetector, e.to_string())
            }
            e @ ServiceError::DetectorInUse { .. } => {
                Self::new(ProblemCode::DetectorInUse, e.to_string())
            }
            e @ ServiceError::DefaultDetector => {
                Self::new(ProblemCode::DefaultDetector, e.to_string())
            }
            e @ ServiceError::KeyInFlight => Self {
                retry_after: Some(crate::service::idempotency::IN_FLIGHT_RETRY_SECS),
                ..Self::new(ProblemCode::IdempotencyKeyInFlight, e.to_string())
            }
            .with_field(IDEMPOTENCY_KEY),
            e @ ServiceError::KeyReused => {
                Self::new(ProblemCode::IdempotencyKeyReused, e.to_string())
                    .with_field(IDEMPOTENCY_KEY)
            }
            e @ ServiceError::AnswerNotKept { .. } => {
                Self::new(ProblemCode::IdempotencyAnswerNotKept, e.to_string())
                    .with_field(IDEMPOTENCY_KEY)
            }
            ServiceError::Store(e) => e.into(),
            ServiceError::Ingest(detail) => Self::new(ProblemCode::IngestConflict, detail),
            e @ (ServiceError::PendingFull { .. } | ServiceError::OpenWindowsFull { .. }) => {
                Self::unavailable(
                    ProblemCode::Overloaded,
                    e.to_string(),
                    RETRY_AFTER_PENDING_FULL,
                )
            }
            ServiceError::Task(e) => e.into(),
            ServiceError::Memory(e) => e.into(),
            ServiceError::Cancelled => cancelled(),
        }
    }
}

/// Seconds a client is asked to wait when a detector without a model keeps as many windows
/// pending as it may (they wait for someone to fit it), or its open windows hold as much as
/// they may (they wait for event time to close them).
pub const RETRY_AFTER_PENDING_FULL: u64 = 60;

/// Seconds a client is asked to wait when the memory budget is in use by other requests.
pub const RETRY_AFTER_MEMORY_BUSY: u64 = 2;

impl From<crate::work::OverBudget> for ApiError {
    fn from(e: crate::work::OverBudget) -> Self {
        match e {
            crate::work::OverBudget::Request { .. } => {
                ApiError::new(ProblemCode::MemoryBudget, e.to_string())
            }
            crate::work::OverBudget::Busy { .. } => ApiError::unavailable(
                ProblemCode::Overloaded,
                e.to_string(),
                RETRY_AFTER_MEMORY_BUSY,
            ),
        }
    }
}

/// Work stopped because its request was cancelled: the client is gone or the timeout layer
/// answers instead, so this answer is seldom seen.
fn cancelled() -> ApiError {
    ApiError::unavailable(ProblemCode::Timeout, "the request was cancelled", 1)
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal("a background task", e)
    }
}

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
pub fn truncate_chars(s: &mut String, max: usize) {
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
        s.push('…');
    }
}

/// Largest problem body [`attach_request_id`] reads to add the request id.
const MAX_PROBLEM_BYTES: u64 = 64 * 1024;

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
    // Problem bodies are small (details are capped); one of unknown or larger size is passed
    // on as it is rather than read, so a body is never lost.
    let size = axum::body::HttpBody::size_hint(response.body()).upper();
    if size.is_none_or(|n| n > MAX_PROBLEM_BYTES) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_PROBLEM_BYTES as usize).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "a problem body could not be read to add its request id");
            let fallback = ApiError {
                status: parts.status,
                ..ApiError::new(
                    ProblemCode::Internal,
                    "the error could not be reported; see the service log",
                )
            };
            return fallback.into_response();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_kebab_case_and_keep_their_statuses() {
        let mut seen = std::collections::HashSet::new();
        for &code in ProblemCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{s}"
            );
        }
        // What clients and the OpenAPI document were promised.
        for (code, status) in [
            ("malformed-body", 400),
            ("invalid-parameter", 400),
            ("unsupported-media-type", 415),
            ("body-too-large", 413),
            ("too-many-records", 413),
            ("invalid-record", 422),
            ("empty-batch", 422),
            ("no-model", 409),
            ("not-found", 404),
            ("store-unavailable", 503),
        ] {
            let c = ProblemCode::ALL
                .iter()
                .find(|c| c.as_str() == code)
                .unwrap();
            assert_eq!(c.status().as_u16(), status, "{code}");
        }
        assert_eq!(ApiError::invalid_value("x").status.as_u16(), 422);
        assert_eq!(ApiError::no_model_found().status.as_u16(), 404);
    }

    #[test]
    fn every_record_error_kind_is_answered_as_before() {
        use RecordErrorKind as K;
        for (kind, status, code) in [
            (K::Malformed, 400, "malformed-body"),
            (K::UnknownField, 400, "unknown-field"),
            (K::InvalidOption, 400, "invalid-parameter"),
            (K::UnsupportedFormat, 415, "unsupported-media-type"),
            (K::UnsupportedEncoding, 415, "unsupported-content-encoding"),
            (K::BodyTooLarge, 413, "body-too-large"),
            (K::TooManyRecords, 413, "too-many-records"),
            (K::InvalidRecord, 422, "invalid-record"),
            (K::InvalidRecords, 422, "invalid-records"),
            (K::EmptyBatch, 422, "empty-batch"),
            (K::NoFeatures, 422, "no-features"),
            (K::InvalidZeekLine, 422, "invalid-zeek-line"),
            (K::MissingZeekField, 422, "missing-zeek-field"),
            (K::Internal, 500, "internal"),
        ] {
            let e = ApiError::from(RecordError::new(kind, "d").with_field("f"));
            assert_eq!((e.status.as_u16(), e.code.as_str()), (status, code));
            assert_eq!(e.field.as_deref(), Some("f"));
        }
    }
}
