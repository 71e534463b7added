//! `POST /v1/evaluate`: how the active model does on labeled records.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{BodyFormat, Features, Table, parse_json_envelope, parse_table_with};
use super::views::evaluate::{BudgetThresholdView, ClassificationReportView, ConfusionMatrixView};
use crate::detector::metrics::{
    average_precision, classification_report, confusion_matrix, roc_auc,
};
use crate::detector::threshold::threshold_for_fpr_budget;
use crate::error::{ApiError, Problem};
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateSettings {
    max_false_positive_rate: Option<f64>,
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
#[utoipa::path(post, path = "/v1/evaluate", tag = "scoring",
    params(EvaluateQuery),
    request_body(content(
        (super::score::RecordsBody = "application/json"),
        (String = "text/csv"),
        (String = "application/x-ndjson"),
        (String = "text/zeek-tsv"),
        (String = "application/x-zeek-json"),
    )),
    responses(
        (status = 200, body = EvaluateResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn evaluate(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EvaluateQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    let query = super::query(query)?;
    let body = super::body(body)?;
    let format = BodyFormat::from_headers(&headers)?;
    let zeek = super::zeek_options(format, query.window.as_deref(), query.group_by.as_deref())?;
    let model = state.model().ok_or_else(ApiError::no_model)?;
    let max_records = state.settings().max_records;
    let response = tokio::task::spawn_blocking(move || -> Result<EvaluateResponse, ApiError> {
        let (table, mut budget) = match format {
            BodyFormat::Json => {
                let env = parse_json_envelope(&body)?;
                let settings: EvaluateSettings =
                    serde_json::from_value(serde_json::Value::Object(env.rest)).map_err(|e| {
                        ApiError::bad_request(
                            "invalid-parameter",
                            format!("evaluate settings: {e}"),
                        )
                    })?;
                let records = env.records.ok_or_else(|| {
                    ApiError::bad_request("malformed-body", "the body has no \"records\" array")
                        .with_field("records")
                })?;
                (
                    Table::from_json_records(records, max_records)?,
                    settings.max_false_positive_rate,
                )
            }
            other => (parse_table_with(other, &body, max_records, &zeek)?, None),
        };
        if query.max_false_positive_rate.is_some() {
            budget = query.max_false_positive_rate;
        }
        let batch = table.into_batch(Features::Given(model.features()), true)?;
        let labels = batch.labels.clone().unwrap_or_default();
        let scores = model.score(&batch.matrix);
        let predicted: Vec<bool> = scores.iter().map(|&s| model.is_anomaly(s)).collect();
        let report = classification_report(&labels, &predicted)?;
        let budget = budget
            .map(|max_fpr| {
                threshold_for_fpr_budget(&labels, &scores, max_fpr).map_err(|e| {
                    ApiError::unprocessable("invalid-parameter", e.to_string())
                        .with_field("max_false_positive_rate")
                })
            })
            .transpose()?;
        Ok(EvaluateResponse {
            model_version: model.version(),
            n_records: batch.len(),
            confusion_matrix: confusion_matrix(&labels, &predicted)?.into(),
            report_text: report.to_string(),
            classification_report: report.into(),
            roc_auc: roc_auc(&labels, &scores),
            average_precision: average_precision(&labels, &scores),
            threshold: model.threshold(),
            budget: budget.map(Into::into),
        })
    })
    .await??;
    Ok(Json(response))
}
