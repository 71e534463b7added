//! `POST /v1/evaluate`: how the active model does on labeled records.

use super::RecordsRequest;
use super::detectors::Detector;
use super::problems::{BadParameter, BodyProblems, NoModelYet, VerdictProblems};
use axum::Json;
use axum::extract::Query;
use axum::extract::State;
use axum::extract::rejection::QueryRejection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::bodies::ContentEncodingHeader;

use super::views::evaluate::{BudgetThresholdView, ClassificationReportView, ConfusionMatrixView};
use crate::error::ApiError;
use crate::service::evaluation::{self, EvaluateCommand, Evaluation, VerdictLabels};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EvaluateQuery {
    /// Also report the threshold that keeps the false-positive rate within this budget, and the recall it buys.
    pub max_false_positive_rate: Option<f64>,
    /// Zeek bodies only: aggregation window such as `1h` (default), `5m`, `30s`.
    #[param(example = "1h")]
    pub window: Option<String>,
    /// Zeek bodies only: `none` (default, the whole network), `id.orig_h` or `id.resp_h`.
    #[param(example = "id.orig_h")]
    pub group_by: Option<String>,
}

/// The model's performance on the posted labeled records, at its threshold.
#[derive(Serialize, ToSchema)]
pub struct EvaluateResponse {
    pub model_version: u64,
    pub n_records: usize,
    pub confusion_matrix: ConfusionMatrixView,
    pub classification_report: ClassificationReportView,
    /// Null when the records hold only one class.
    pub roc_auc: Option<f64>,
    /// Null when there are no anomalies among the records.
    pub average_precision: Option<f64>,
    /// The model's threshold (anomaly iff score > threshold).
    pub threshold: f64,
    /// The classification report printed as scikit-learn prints it.
    pub report_text: String,
    /// Present when max_false_positive_rate was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetThresholdView>,
}

/// Evaluate the active model on labeled records (`label` 0/1 on each).
///
/// Same body forms as /v1/score; the JSON object form may also carry `max_false_positive_rate`.
#[utoipa::path(post, path = "/evaluate", tag = "scoring",
    params(EvaluateQuery, ContentEncodingHeader),
    // And the text forms (binary strings): `api::reads_records`.
    request_body(content((super::score::RecordsBody = "application/json"))),
    responses(
        (status = 200, body = EvaluateResponse),
        BodyProblems,
        NoModelYet,
    ))]
pub async fn evaluate(
    State(state): State<AppState>,
    request: RecordsRequest<EvaluateQuery>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    let command = EvaluateCommand {
        format: request.format,
        body: request.body,
        zeek: request.zeek,
        max_false_positive_rate: request.query.max_false_positive_rate,
    };
    let e = evaluation::evaluate(&state, &request.detector, command).await?;
    Ok(Json(e.into()))
}

impl From<Evaluation> for EvaluateResponse {
    fn from(e: Evaluation) -> Self {
        Self {
            model_version: e.model_version,
            n_records: e.n_records,
            confusion_matrix: e.measures.confusion_matrix.into(),
            report_text: e.measures.report.to_string(),
            classification_report: e.measures.report.into(),
            roc_auc: e.measures.roc_auc,
            average_precision: e.measures.average_precision,
            threshold: e.threshold,
            budget: e.budget.map(Into::into),
        }
    }
}

/// Which verdicts to evaluate on.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerdictsQuery {
    /// Only the verdicts on alerts created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only the verdicts on alerts created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Also report the threshold that keeps the false-positive rate within this budget, and
    /// the recall it buys.
    pub max_false_positive_rate: Option<f64>,
}

/// Evaluate the active model on analysts' verdicts: the records stored on the detector's
/// alerts that carry a verdict, labeled by the alert's latest one (`true_positive` 1,
/// `false_positive` and `benign` 0). No body.
///
/// The answer is the one `POST /v1/evaluate` gives for those records posted with those labels
/// (the same AUC, precision and recall, and with `max_false_positive_rate` the threshold a
/// false-alert budget allows, now reflecting what analysts decided). Records lacking a feature
/// of the active model are left out. 422 `invalid-parameter` (`field`: `labels`) when no
/// verdict is found or all are of one class.
#[utoipa::path(post, path = "/evaluate/verdicts", tag = "scoring",
    params(VerdictsQuery),
    responses(
        (status = 200, body = EvaluateResponse),
        BadParameter,
        VerdictProblems,
        NoModelYet,
    ))]
pub async fn evaluate_verdicts(
    State(state): State<AppState>,
    Detector(det): Detector,
    query: Result<Query<VerdictsQuery>, QueryRejection>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    let q = super::query(query)?;
    let labels = VerdictLabels {
        since: q.since,
        until: q.until,
        max_false_positive_rate: q.max_false_positive_rate,
    };
    let e = evaluation::evaluate_verdicts(&state, &det, labels).await?;
    Ok(Json(e.into()))
}
