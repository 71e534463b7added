//! Evaluating the active model on labeled records: its confusion matrix, report, ROC AUC and
//! average precision at its threshold, and the threshold a false-alert budget allows.

use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use serde::Deserialize;

use super::{ServiceError, blocking};
use crate::detector::Matrix;
use crate::detector::metrics::{Measures, measures};
use crate::detector::model::Model;
use crate::detector::threshold::{BudgetThreshold, threshold_for_fpr_budget};
use crate::records::read::BodyChunk;
use crate::records::{BodyFormat, ReadSpec, TopLevel, ZeekOptions, read_stream_settings};
use crate::state::{AppState, DetectorState};
use crate::store::alerts::{AlertQuery, Verdict};

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
    pub measures: Measures,
    pub threshold: f64,
    pub budget: Option<BudgetThreshold>,
}

/// Scores `x` with `model` and measures it against `labels`; with a false-alert `budget`, the
/// threshold that keeps it.
fn measure(
    model: &Model,
    x: &Matrix,
    labels: &[bool],
    budget: Option<f64>,
) -> Result<Evaluation, ServiceError> {
    let scores = model.score(x);
    let predicted: Vec<bool> = scores.iter().map(|&s| model.is_anomaly(s)).collect();
    let measures = measures(labels, &predicted, &scores)?;
    let budget = budget
        .map(|max_fpr| {
            threshold_for_fpr_budget(labels, &scores, max_fpr)
                .map_err(|e| ServiceError::Budget(e.to_string()))
        })
        .transpose()?;
    Ok(Evaluation {
        model_version: model.version(),
        n_records: x.n_rows(),
        measures,
        threshold: model.threshold(),
        budget,
    })
}

/// Which analysts' verdicts to evaluate on: those on the detector's alerts created in
/// `[since, until)`.
#[derive(Debug, Clone, Default)]
pub struct VerdictLabels {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub max_false_positive_rate: Option<f64>,
}

/// Alerts read per store call while gathering verdicts.
const VERDICT_PAGE: usize = 500;

/// Evaluates the detector's active model on what analysts decided: every record stored on an
/// alert of the detector that carries a verdict, labeled by the alert's latest verdict
/// (`true_positive` 1; `false_positive` and `benign` 0), scored and measured as a labeled body
/// of those records is. Records lacking one of the model's features (stored by a model of
/// other features) are left out; at most `max_records` records are read.
pub async fn evaluate_verdicts(
    state: &AppState,
    det: &DetectorState,
    q: VerdictLabels,
) -> Result<Evaluation, ServiceError> {
    let model = det.model().ok_or(ServiceError::NoModel)?;
    let max_records = state.settings().max_records;
    let (store, detector) = (state.alerts(), det.name().to_owned());
    blocking(move || {
        let features = model.features();
        let (mut values, mut labels) = (Vec::new(), Vec::new());
        let mut query = AlertQuery {
            since: q.since,
            until: q.until,
            detector: Some(detector.clone()),
            limit: VERDICT_PAGE,
            ..AlertQuery::default()
        };
        'pages: loop {
            if crate::work::cancelled() {
                return Err(ServiceError::Cancelled);
            }
            let page = store.list(&query)?;
            for alert in &page.alerts {
                let Some(last) = alert.feedback.last() else {
                    continue;
                };
                let label = last.verdict == Verdict::TruePositive;
                for r in &alert.records {
                    let row: Option<Vec<f64>> =
                        features.iter().map(|f| r.values.get(f).copied()).collect();
                    if let Some(row) = row {
                        if labels.len() == max_records {
                            break 'pages;
                        }
                        values.extend(row);
                        labels.push(label);
                    }
                }
            }
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        let positives = labels.iter().filter(|&&l| l).count();
        let why = match (labels.len(), positives) {
            (0, _) => Some(format!(
                "no alert of detector {detector:?} in this time range carries a verdict with \
                 records the active model can score; POST /v1/alerts/{{id}}/feedback first"
            )),
            (n, p) if p == 0 || p == n => Some(format!(
                "{} on alerts with verdicts {} labeled {}: evaluating needs verdicts of both \
                 kinds (true_positive, and false_positive or benign)",
                if n == 1 {
                    "the one record".to_owned()
                } else {
                    format!("the {n} records")
                },
                if n == 1 { "is" } else { "are all" },
                if p == 0 { 0 } else { 1 }
            )),
            _ => None,
        };
        if let Some(detail) = why {
            return Err(ServiceError::Labels(detail));
        }
        let x = Matrix::new(labels.len(), features.len(), values)
            .map_err(|e| ServiceError::settings(format!("verdict records: {e}")))?;
        measure(&model, &x, &labels, q.max_false_positive_rate)
    })
    .await
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
        measure(&model, &batch.matrix, &labels, budget)
    })
    .await
}
