//! Views of the evaluation report: confusion matrix, scikit-learn's classification report and the false-alert budget threshold.

use serde::Serialize;
use utoipa::ToSchema;

use crate::detector::metrics::{ClassMetrics, ClassificationReport, ConfusionMatrix};
use crate::detector::threshold::BudgetThreshold;

/// Counts of a binary prediction against the truth; the positive class is "anomaly".
#[derive(Serialize, ToSchema)]
#[schema(as = ConfusionMatrix)]
pub struct ConfusionMatrixView {
    /// Anomalies flagged as anomalies.
    #[schema(example = 8)]
    pub tp: u64,
    /// Normal records flagged as anomalies (false alerts).
    #[schema(example = 64)]
    pub fp: u64,
    /// Normal records left unflagged.
    #[schema(example = 648)]
    pub tn: u64,
    /// Anomalies missed.
    #[serde(rename = "fn")]
    #[schema(example = 0)]
    pub fn_: u64,
}

impl From<ConfusionMatrix> for ConfusionMatrixView {
    fn from(cm: ConfusionMatrix) -> Self {
        Self {
            tp: cm.tp,
            fp: cm.fp,
            tn: cm.tn,
            fn_: cm.fn_,
        }
    }
}

/// Precision, recall and F1 of one class (or an average over classes), as in scikit-learn's report.
#[derive(Serialize, ToSchema)]
#[schema(as = ClassMetrics)]
pub struct ClassMetricsView {
    /// Of the records predicted in this class, the share that truly are (0 when none is predicted).
    #[schema(example = 0.1111111111111111)]
    pub precision: f64,
    /// Of the records truly in this class, the share predicted so (0 when the class is absent).
    #[schema(example = 1.0)]
    pub recall: f64,
    /// Harmonic mean of precision and recall, `2·tp / (2·tp + fp + fn)` (0 when that is 0/0).
    #[schema(example = 0.2)]
    pub f1_score: f64,
    /// Records truly in this class (for averages: all records).
    #[schema(example = 8)]
    pub support: u64,
}

impl From<ClassMetrics> for ClassMetricsView {
    fn from(m: ClassMetrics) -> Self {
        Self {
            precision: m.precision,
            recall: m.recall,
            f1_score: m.f1_score,
            support: m.support,
        }
    }
}

/// scikit-learn's `classification_report(y_true, y_pred)` with `zero_division` at its default
/// (an undefined ratio is reported as 0). `Display` prints scikit-learn's text exactly.
#[derive(Serialize, ToSchema)]
#[schema(as = ClassificationReport)]
pub struct ClassificationReportView {
    /// Class 0 (normal).
    pub normal: ClassMetricsView,
    /// Class 1 (anomaly).
    pub anomaly: ClassMetricsView,
    /// Share of records predicted correctly.
    #[schema(example = 0.9111111111111111)]
    pub accuracy: f64,
    /// Unweighted mean over the classes in `labels`.
    pub macro_avg: ClassMetricsView,
    /// Mean over the classes weighted by support.
    pub weighted_avg: ClassMetricsView,
    /// Classes that occur in the truth or the predictions (0 = normal, 1 = anomaly). As in
    /// scikit-learn, a class that occurs in neither is left out of the averages and the text.
    #[schema(example = json!([0, 1]))]
    pub labels: Vec<u8>,
}

impl From<ClassificationReport> for ClassificationReportView {
    fn from(r: ClassificationReport) -> Self {
        Self {
            normal: r.normal.into(),
            anomaly: r.anomaly.into(),
            accuracy: r.accuracy,
            macro_avg: r.macro_avg.into(),
            weighted_avg: r.weighted_avg.into(),
            labels: r.labels,
        }
    }
}

/// A threshold chosen to catch as many labeled anomalies as a false-alert budget allows.
#[derive(Serialize, ToSchema)]
#[schema(as = BudgetThreshold)]
pub struct BudgetThresholdView {
    /// Flag a record iff its score is strictly greater than this.
    #[schema(example = 0.62)]
    pub threshold: f64,
    /// The budget asked for: the largest acceptable share of normal records flagged.
    #[schema(example = 0.01)]
    pub max_false_positive_rate: f64,
    /// Share of the labeled normal records this threshold flags (at most the budget).
    #[schema(example = 0.008)]
    pub false_positive_rate: f64,
    /// Share of the labeled anomalies this threshold flags.
    #[schema(example = 0.875)]
    pub recall: f64,
    /// Share of flagged records that are labeled anomalies (0 when nothing is flagged).
    #[schema(example = 0.5)]
    pub precision: f64,
    /// Records flagged in the labeled data.
    #[schema(example = 14)]
    pub n_flagged: u64,
}

impl From<BudgetThreshold> for BudgetThresholdView {
    fn from(b: BudgetThreshold) -> Self {
        Self {
            threshold: b.threshold,
            max_false_positive_rate: b.max_false_positive_rate,
            false_positive_rate: b.false_positive_rate,
            recall: b.recall,
            precision: b.precision,
            n_flagged: b.n_flagged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::views::check::same_json;
    use crate::detector::metrics::{classification_report, confusion_matrix};

    #[test]
    fn the_report_is_written_as_before() {
        let truth = [true, false, false, true, false, false, false, true];
        for predicted in [
            [true, true, false, false, false, false, false, true],
            [false; 8],
        ] {
            let cm = confusion_matrix(&truth, &predicted).unwrap();
            same_json(&ConfusionMatrixView::from(cm), &cm);
            let report = classification_report(&truth, &predicted).unwrap();
            same_json(&ClassificationReportView::from(report.clone()), &report);
        }
    }

    #[test]
    fn the_budget_threshold_is_written_as_before() {
        let budget = BudgetThreshold {
            threshold: 0.62,
            max_false_positive_rate: 0.01,
            false_positive_rate: 0.008,
            recall: 0.875,
            precision: 0.5,
            n_flagged: 14,
        };
        // Byte for byte what the handler wrote when it serialised the detector's type.
        assert_eq!(
            serde_json::to_string(&BudgetThresholdView::from(budget)).unwrap(),
            r#"{"threshold":0.62,"max_false_positive_rate":0.01,"false_positive_rate":0.008,"recall":0.875,"precision":0.5,"n_flagged":14}"#
        );
    }
}
