//! Evaluating the active model on labeled records: its confusion matrix, report, ROC AUC and
//! average precision at its threshold, and the threshold a false-alert budget allows.

use futures_util::stream::BoxStream;
use serde::Deserialize;

use super::{ServiceError, blocking};
use crate::detector::metrics::{
    ClassificationReport, ConfusionMatrix, average_precision, classification_report,
    confusion_matrix, roc_auc,
};
use crate::detector::threshold::{BudgetThreshold, threshold_for_fpr_budget};
use crate::records::read::BodyChunk;
use crate::records::{BodyFormat, ReadSpec, TopLevel, ZeekOptions, read_stream_settings};
use crate::state::{AppState, DetectorState};

/// Labeled records to evaluate on.
pub struct EvaluateCommand {
    pub format: BodyFormat,
    /// The body as it arrives (decoded, held to the memory budget): read a chunk at a time.
    pub body: BoxStream<'static, BodyChunk>,
    pub zeek: ZeekOptions,
    /// A false-alert budget from the query string; it wins over one in a JSON body.
    pub max_false_positive_rate: Option<f64>,
}

/// Settings a JSON body may carry beside its records: [`EvaluateSettings`]'s fields.
const SETTINGS: &[&str] = &["max_false_positive_rate"];

/// Settings a JSON body may carry beside its records.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateSettings {
    max_false_positive_rate: Option<f64>,
}

/// How the model does on the records.
pub struct Evaluation {
    pub model_version: u64,
    pub n_records: usize,
    pub confusion_matrix: ConfusionMatrix,
    pub report: ClassificationReport,
    pub roc_auc: Option<f64>,
    pub average_precision: Option<f64>,
    pub threshold: f64,
    pub budget: Option<BudgetThreshold>,
}

/// Scores the labeled records with the detector's active model and measures it.
pub async fn evaluate(
    state: &AppState,
    det: &DetectorState,
    command: EvaluateCommand,
) -> Result<Evaluation, ServiceError> {
    let model = det.model().ok_or(ServiceError::NoModel)?;
    let settings = state.settings();
    let EvaluateCommand {
        format,
        body,
        zeek,
        max_false_positive_rate,
    } = command;
    let spec = ReadSpec {
        require_labels: true,
        zeek,
        top_level: TopLevel::WithSettings,
        settings: SETTINGS,
        ..ReadSpec::new(
            format,
            Some(model.features().to_vec()),
            settings.max_records,
        )
    };
    // Read as it arrives: only the batch is kept, never the body's text.
    let read = read_stream_settings(body, settings.max_body_bytes, spec).await?;
    let mut budget = None;
    if format == BodyFormat::Json {
        let s: EvaluateSettings =
            serde_json::from_value(serde_json::Value::Object(read.settings.fields))
                .map_err(|e| ServiceError::settings(format!("evaluate settings: {e}")))?;
        if !read.settings.has_records {
            return Err(crate::records::RecordError::malformed(
                "the body has no \"records\" array",
            )
            .with_field("records")
            .into());
        }
        budget = s.max_false_positive_rate;
    }
    if max_false_positive_rate.is_some() {
        budget = max_false_positive_rate;
    }
    let batch = read.records?.batch;
    blocking(move || {
        let labels = batch.labels.clone().unwrap_or_default();
        let scores = model.score(&batch.matrix);
        let predicted: Vec<bool> = scores.iter().map(|&s| model.is_anomaly(s)).collect();
        let report = classification_report(&labels, &predicted)?;
        let budget = budget
            .map(|max_fpr| {
                threshold_for_fpr_budget(&labels, &scores, max_fpr)
                    .map_err(|e| ServiceError::Budget(e.to_string()))
            })
            .transpose()?;
        Ok(Evaluation {
            model_version: model.version(),
            n_records: batch.len(),
            confusion_matrix: confusion_matrix(&labels, &predicted)?,
            report,
            roc_auc: roc_auc(&labels, &scores),
            average_precision: average_precision(&labels, &scores),
            threshold: model.threshold(),
            budget,
        })
    })
    .await
}
