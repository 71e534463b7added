//! What a request means, without HTTP: scoring a batch (results, alert, outbox, metrics, chart),
//! evaluating the model on labeled records, fitting, activating and loading model versions, and
//! reading and acknowledging alerts.
//!
//! `api/` translates HTTP into these calls and their results and [`ServiceError`]s back into
//! responses; below this layer, `records/` reads bodies, `detector/` computes and `store/` keeps.

pub mod alerts;
pub mod detectors;
pub mod evaluation;
pub mod idempotency;
pub mod ingest;
pub mod models;
mod pending;
pub mod retention;
pub mod scoring;
pub mod suppression;
pub mod training;

use crate::detector::generator::GeneratorError;
use crate::detector::metrics::MetricsError;
use crate::detector::model::FitError;
use crate::detector::params::ParamError;
use crate::records::RecordError;
use crate::store::StoreError;

/// Why a service call failed; `error.rs` maps each to its problem response.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The body could not become a batch.
    #[error(transparent)]
    Records(#[from] RecordError),
    /// Scoring or evaluating before any model was fitted.
    #[error("no model has been fitted yet: POST /v1/model/fit first")]
    NoModel,
    /// Settings carried in a body that cannot be used (`field` names the one at fault).
    #[error("{detail}")]
    Settings {
        detail: String,
        field: Option<String>,
    },
    /// Forest parameters that cannot be used.
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(transparent)]
    Generator(#[from] GeneratorError),
    /// A false-alert budget that cannot be met on these labels.
    #[error("{0}")]
    Budget(String),
    /// Analysts' verdicts that cannot be evaluated on: none, or all of one class.
    #[error("{0}")]
    Labels(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Activating a version that is not kept.
    #[error("model version {0} is not kept; GET /v1/model/versions lists those that are")]
    NoSuchVersion(u64),
    /// Activating a version whose stored model does not decode.
    #[error("model version {version} cannot be loaded: {reason}")]
    CorruptModel { version: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Detector settings (or a name) that cannot be used.
    #[error(transparent)]
    Detector(#[from] detectors::SpecError),
    /// No detector of this name.
    #[error("no detector is called {0:?}; GET /v1/detectors lists them")]
    NoSuchDetector(String),
    /// Deleting a detector that still has model versions, without `force`.
    #[error(
        "detector {name:?} has {versions} model version(s); DELETE with ?force=true to delete them with it (its alerts are kept)"
    )]
    DetectorInUse { name: String, versions: usize },
    /// Deleting the detector the v1 paths serve.
    #[error(
        "the detector \"default\" always exists (it serves the v1 paths) and cannot be deleted"
    )]
    DefaultDetector,
    /// An `Idempotency-Key` whose first request still runs.
    #[error(
        "a request with this Idempotency-Key is still running; retry after it ends to get its answer"
    )]
    KeyInFlight,
    /// An `Idempotency-Key` sent again with another request (body, query or media types).
    #[error(
        "this Idempotency-Key was used for a different request (body, query string, Content-Type or Accept); use a new key for a new request"
    )]
    KeyReused,
    /// An `Idempotency-Key` whose first answer was too large to keep.
    #[error(
        "the request with this Idempotency-Key was done once, but its answer ({bytes} bytes, or streamed when 0) was too large to keep and cannot be replayed; nothing was done again"
    )]
    AnswerNotKept { bytes: u64 },
    /// Continuous ingest cannot take this call now (a records detector, a model that does not
    /// score Zeek windows, settings changed under open windows).
    #[error("{0}")]
    Ingest(String),
    /// An ingest or flush call that would keep more windows pending (no active model) than
    /// the bound: nothing of it is kept.
    #[error(
        "detector {detector:?} has no active model and keeps {pending} window(s) pending; this call would close {more} more, past the bound of {max} (NETSENTINEL_MAX_PENDING_WINDOWS): nothing of it is kept. Fit or activate a model for the detector, then retry"
    )]
    PendingFull {
        detector: String,
        pending: u64,
        more: u64,
        max: u64,
    },
    /// An ingest call that would make the detector's open windows hold more than the bound:
    /// nothing of it is kept.
    #[error(
        "detector {detector:?} keeps about {held_mib} MiB in open windows; this call would make it more than the {max_mib} MiB it may keep (NETSENTINEL_MAX_OPEN_WINDOW_BYTES): nothing of it is kept. Retry once its windows close, send fewer new hosts at once, or POST …/flush"
    )]
    OpenWindowsFull {
        detector: String,
        held_mib: u64,
        max_mib: u64,
    },
    /// A blocking task that panicked or was cancelled: ours, not the client's.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The work would not fit in the memory budget.
    #[error(transparent)]
    Memory(#[from] crate::work::OverBudget),
    /// A suppression rule that cannot be used (`field` names the one at fault).
    #[error("{detail}")]
    Suppression {
        detail: String,
        field: Option<String>,
    },
    /// No suppression rule with this id.
    #[error("there is no suppression rule {0:?}; GET /v1/suppressions lists them")]
    NoSuchSuppression(String),
    /// The request was cancelled (client gone, timed out) and its work stopped.
    #[error("the request was cancelled")]
    Cancelled,
}

impl ServiceError {
    /// Settings in a body that cannot be used.
    pub fn settings(detail: impl Into<String>) -> Self {
        Self::Settings {
            detail: detail.into(),
            field: None,
        }
    }
}

/// Runs CPU-heavy or blocking work off the async runtime, as part of the current request's
/// work: it holds the request's work slot and memory until it ends, and does not start once
/// the request was cancelled.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ServiceError> + Send + 'static,
{
    crate::work::spawn_blocking(move || {
        if crate::work::cancelled() {
            return Err(ServiceError::Cancelled);
        }
        work()
    })
    .await?
}

/// Runs `work` to its end on its own task, even when the caller is dropped (a request timeout,
/// a client gone): for commit points that must not stop half-way, such as a model becoming
/// active on disk and in memory. The caller gets the outcome when it is still waiting.
pub(crate) async fn to_completion<T, F>(work: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ServiceError>> + Send + 'static,
{
    tokio::spawn(work).await?
}
