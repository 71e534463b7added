//! Scoring a batch with a model and deciding whether it raises an alert (no HTTP here).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::extract::Batch;
use crate::detector::explain::FeatureContribution;
use crate::detector::model::{BatchSummary, Model};
use crate::detector::{Matrix, SEQUENTIAL_RECORDS};
use crate::state::ChartData;
use crate::store::alerts::{Alert, AlertRecord, AlertStatus};

/// Which records get an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExplainMode {
    /// Only records flagged anomalous (the default; explanations cost a tree walk per record).
    #[default]
    #[serde(alias = "true")]
    Anomalies,
    /// Every record.
    All,
    /// None.
    #[serde(alias = "false")]
    None,
}

/// One scored record as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordResult {
    /// Position in the posted batch (0-based).
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Anomaly score in (0, 1]; higher is more anomalous (= −scikit-learn's score_samples).
    pub score: f64,
    /// score > threshold.
    pub is_anomaly: bool,
    /// 0–100, monotonic in score.
    pub severity: u8,
    /// Features that drove the score, most important first (absent when not requested).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::api::views::scoring::FeatureContributionView>>)]
    pub explanation: Option<Vec<FeatureContribution>>,
    /// The record's string fields (src_ip, host, ...), echoed.
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

/// A batch after scoring.
#[derive(Debug, Clone)]
pub struct ScoredBatch {
    pub scores: Vec<f64>,
    pub summary: BatchSummary,
    /// (record index, explanation) for the records explained, by index: a batch scored
    /// without explanations costs nothing per record here.
    pub explanations: Vec<(usize, Vec<FeatureContribution>)>,
}

impl ScoredBatch {
    pub fn is_anomaly(&self, i: usize) -> bool {
        self.scores[i] > self.summary.threshold
    }

    /// Record `i`'s explanation, when it was explained.
    pub fn explanation(&self, i: usize) -> Option<&Vec<FeatureContribution>> {
        self.explanations
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()
            .map(|k| &self.explanations[k].1)
    }
}

/// Records explained together (one task of the rayon pool) in larger batches.
const EXPLAIN_CHUNK: usize = 512;

/// Scores every record and explains those `mode` asks for.
pub fn score_batch(model: &Model, batch: &Batch, mode: ExplainMode, top_k: usize) -> ScoredBatch {
    scored_batch(model, batch, model.score(&batch.matrix), mode, top_k)
}

/// [`score_batch`] with the records' scores already computed (while the body was parsed).
pub fn scored_batch(
    model: &Model,
    batch: &Batch,
    scores: Vec<f64>,
    mode: ExplainMode,
    top_k: usize,
) -> ScoredBatch {
    debug_assert_eq!(scores.len(), batch.len());
    let summary = model.summarize(&scores);
    let wanted: Vec<usize> = match mode {
        ExplainMode::None => Vec::new(),
        ExplainMode::All => (0..batch.len()).collect(),
        ExplainMode::Anomalies => (0..batch.len())
            .filter(|&i| model.is_anomaly(scores[i]))
            .collect(),
    };
    let explain = |rows: &[usize]| {
        let explained = model.explain_rows(&batch.matrix, rows, top_k);
        rows.iter().copied().zip(explained).collect::<Vec<_>>()
    };
    let explanations = if batch.len() <= SEQUENTIAL_RECORDS {
        explain(&wanted)
    } else {
        wanted
            .par_chunks(EXPLAIN_CHUNK)
            .flat_map_iter(explain)
            .collect()
    };
    ScoredBatch {
        scores,
        summary,
        explanations,
    }
}

/// When a batch raises an alert.
#[derive(Debug, Clone, Copy)]
pub struct AlertRule {
    /// Alert when the anomaly rate exceeds this.
    pub rate: f64,
    /// Alert when any record's severity reaches this.
    pub severity: u8,
    /// Records kept in the alert.
    pub top_records: usize,
    pub explain_top_k: usize,
}

/// The alert this batch raises, if any: its most anomalous records, explained.
pub fn alert_for(
    model: &Model,
    batch: &Batch,
    scored: &ScoredBatch,
    rule: &AlertRule,
) -> Option<Alert> {
    let s = &scored.summary;
    let by_rate = s.anomaly_rate > rule.rate;
    let by_severity = s.max_severity >= rule.severity;
    if !by_rate && !by_severity {
        return None;
    }
    let mut reasons = Vec::new();
    if by_rate {
        reasons.push(format!(
            "anomaly rate {:.2}% exceeds {:.2}%",
            s.anomaly_rate * 100.0,
            rule.rate * 100.0
        ));
    }
    if by_severity {
        reasons.push(format!(
            "a record reached severity {} (alert at {})",
            s.max_severity, rule.severity
        ));
    }
    let mut candidates: Vec<usize> = (0..batch.len())
        .filter(|&i| {
            scored.is_anomaly(i)
                || crate::detector::severity::severity(scored.scores[i]) >= rule.severity
        })
        .collect();
    candidates.sort_by(|&a, &b| {
        scored.scores[b]
            .total_cmp(&scored.scores[a])
            .then(a.cmp(&b))
    });
    candidates.truncate(rule.top_records);
    // Records the batch's answer did not explain (CSV answers, `explain=none`) are explained
    // here, together.
    let unexplained: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| scored.explanation(i).is_none())
        .collect();
    let mut extra = model
        .explain_rows(&batch.matrix, &unexplained, rule.explain_top_k)
        .into_iter();
    let records = candidates
        .into_iter()
        .map(|i| AlertRecord {
            index: i,
            timestamp: batch.timestamps.owned(i),
            score: scored.scores[i],
            severity: crate::detector::severity::severity(scored.scores[i]),
            values: batch
                .features
                .iter()
                .cloned()
                .zip(batch.matrix.row(i).iter().copied())
                .collect(),
            fields: batch.echo.get(i),
            explanation: match scored.explanation(i) {
                Some(e) => e.clone(),
                None => extra
                    .next()
                    .expect("one explanation per unexplained record"),
            },
        })
        .collect();
    Some(Alert {
        id: uuid::Uuid::now_v7().to_string(),
        created_at: Utc::now(),
        model_version: model.version(),
        severity: s.max_severity,
        status: AlertStatus::Open,
        acknowledged_at: None,
        reason: reasons.join("; "),
        summary: s.clone(),
        records,
    })
}

/// The first four features of a batch, with its anomalies, for the chart.
///
/// The batch's parsed timestamps move into the chart data (a million records: 12 MB not copied),
/// so call this last: afterwards the batch has none.
pub fn chart_data(model_version: u64, batch: &mut Batch, anomalies: Vec<bool>) -> ChartData {
    let d = batch.features.len().min(4);
    let values = if d == batch.matrix.n_cols() {
        Arc::clone(&batch.matrix)
    } else {
        let m = &batch.matrix;
        let kept = m.rows().flat_map(|r| r[..d].iter().copied()).collect();
        Arc::new(Matrix::new(m.n_rows(), d, kept).expect("the first d columns of a valid matrix"))
    };
    ChartData {
        model_version,
        features: batch.features[..d].to_vec(),
        values,
        timestamps: batch.parsed_times.take(),
        anomalies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::{Features, Table};

    fn batch(n_features: usize) -> Batch {
        let records = (0..10)
            .map(|i| {
                let mut r = serde_json::Map::new();
                for j in 0..n_features {
                    r.insert(format!("f{j}"), serde_json::json!(i * 10 + j));
                }
                serde_json::Value::Object(r)
            })
            .collect();
        Table::from_json_records(records, 100)
            .unwrap()
            .into_batch(Features::Default, false)
            .unwrap()
    }

    #[test]
    fn chart_data_shares_a_narrow_batch_and_copies_four_columns_of_a_wide_one() {
        let mut narrow = batch(3);
        let chart = chart_data(1, &mut narrow, vec![false; 10]);
        assert!(Arc::ptr_eq(&chart.values, &narrow.matrix), "no copy");
        assert_eq!(
            chart.series()[2],
            narrow.matrix.column(2).collect::<Vec<_>>()
        );

        let mut wide = batch(6);
        let chart = chart_data(1, &mut wide, vec![false; 10]);
        assert_eq!(chart.features, wide.features[..4].to_vec());
        assert_eq!(chart.values.n_cols(), 4);
        let series = chart.series();
        assert_eq!(series.len(), 4);
        for (j, s) in series.iter().enumerate() {
            assert_eq!(*s, wide.matrix.column(j).collect::<Vec<_>>(), "column {j}");
        }
    }

    #[test]
    fn explanations_together_equal_one_at_a_time() {
        use crate::detector::model::Model;
        use crate::detector::params::ForestParams;
        // More records than SEQUENTIAL_RECORDS, so the rayon path is taken too.
        let make = |n: usize| {
            let records = (0..n)
                .map(|i| {
                    let spike = if i % 97 == 0 { 50.0 } else { 1.0 };
                    serde_json::json!({
                        "a": (i * 31 % 101) as f64 * spike,
                        "b": (i * 17 % 53) as f64,
                        "c": (i % 7) as f64,
                    })
                })
                .collect();
            Table::from_json_records(records, n)
                .unwrap()
                .into_batch(Features::Default, false)
                .unwrap()
        };
        let big = make(SEQUENTIAL_RECORDS + 904);
        let small = make(300);
        let model = Model::fit(
            &big.matrix,
            big.features.clone(),
            &ForestParams::default(),
            chrono::Utc::now(),
        )
        .unwrap();
        for (batch, mode) in [
            (&big, ExplainMode::Anomalies),
            (&big, ExplainMode::All),
            (&small, ExplainMode::All),
        ] {
            let scored = score_batch(&model, batch, mode, 2);
            let expected: Vec<usize> = (0..batch.matrix.n_rows())
                .filter(|&i| mode == ExplainMode::All || scored.is_anomaly(i))
                .collect();
            let got: Vec<usize> = scored.explanations.iter().map(|(i, _)| *i).collect();
            assert_eq!(got, expected);
            assert!(!expected.is_empty());
            for (i, e) in &scored.explanations {
                assert_eq!(*e, model.explain(batch.matrix.row(*i), 2), "record {i}");
            }
        }
    }
}
