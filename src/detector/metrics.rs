//! Evaluation metrics with scikit-learn's numbers: confusion matrix, classification report, ROC AUC, average precision.
//!
//! Labels are `bool` (`true` = anomaly, scikit-learn's class 1); scores are "higher is more
//! anomalous". Every number matches scikit-learn 1.9 to 1e-12 on the reference cases in the tests.
//!
//! ## Why not `linfa::metrics`
//!
//! linfa 0.8 was checked against the same reference cases (see the `linfa_cross_check` tests):
//! - its confusion matrix gives the same counts, but stores them as `f32` (exact only up to
//!   2^24 ≈ 16.7M records) and collapses to 1×1 when only one class occurs; its precision,
//!   recall and F1 are `f32`, not scikit-learn's 0 on a zero division, and called as its docs
//!   show (`prediction.confusion_matrix(truth)`) its `precision()` is scikit-learn's recall and
//!   its `recall()` scikit-learn's precision;
//! - its ROC takes `Pr` (an `f32` in [0, 1]), so scores outside [0, 1] must be squashed and
//!   nearby scores merge (f32 has ~7 digits, and it merges scores closer than 1e-10); it drops
//!   negative scores, walks the curve from the low-score end, panics on NaN and yields NaN when a
//!   class is missing. Its AUC agrees with scikit-learn only to ~1e-7.
//!
//! Counting four cells and one sort is less code than adapting to those, so this module
//! computes everything itself in `f64` and uses linfa only as a cross-check in tests.
//!
//! ## NaN scores
//!
//! scikit-learn rejects NaN scores. Here a NaN score ranks below every number (even −∞), and
//! all NaNs tie with each other: a record without a usable score is treated as least anomalous.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Counts of a binary prediction against the truth; the positive class is "anomaly".
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfusionMatrix {
    /// Anomalies flagged as anomalies.
    pub tp: u64,
    /// Normal records flagged as anomalies (false alerts).
    pub fp: u64,
    /// Normal records left unflagged.
    pub tn: u64,
    /// Anomalies missed.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// Precision, recall and F1 of one class (or an average over classes), as in scikit-learn's report.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct ClassMetrics {
    /// Of the records predicted in this class, the share that truly are (0 when none is predicted).
    pub precision: f64,
    /// Of the records truly in this class, the share predicted so (0 when the class is absent).
    pub recall: f64,
    /// Harmonic mean of precision and recall, `2·tp / (2·tp + fp + fn)` (0 when that is 0/0).
    pub f1_score: f64,
    /// Records truly in this class (for averages: all records).
    pub support: u64,
}

/// scikit-learn's `classification_report(y_true, y_pred)` with `zero_division` at its default
/// (an undefined ratio is reported as 0). `Display` prints scikit-learn's text exactly.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClassificationReport {
    /// Class 0 (normal).
    pub normal: ClassMetrics,
    /// Class 1 (anomaly).
    pub anomaly: ClassMetrics,
    /// Share of records predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean over the classes in `labels`.
    pub macro_avg: ClassMetrics,
    /// Mean over the classes weighted by support.
    pub weighted_avg: ClassMetrics,
    /// Classes that occur in the truth or the predictions (0 = normal, 1 = anomaly). As in
    /// scikit-learn, a class that occurs in neither is left out of the averages and the text.
    pub labels: Vec<u8>,
}

/// Why metrics could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("y_true has {y_true} labels but y_pred has {y_pred}; they must be equally long")]
    LengthMismatch { y_true: usize, y_pred: usize },
    #[error("no records to evaluate")]
    Empty,
}

/// What a labeled evaluation reports of a prediction: its counts and report, and the ranking
/// measures of its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Measures {
    pub confusion_matrix: ConfusionMatrix,
    pub report: ClassificationReport,
    /// `None` when the truth holds only one class.
    pub roc_auc: Option<f64>,
    /// `None` when the truth holds no anomaly.
    pub average_precision: Option<f64>,
}

/// The [`Measures`] of `y_pred`, and of `score` for the ranking ones, against `y_true`.
pub fn measures(y_true: &[bool], y_pred: &[bool], score: &[f64]) -> Result<Measures, MetricsError> {
    Ok(Measures {
        confusion_matrix: confusion_matrix(y_true, y_pred)?,
        report: classification_report(y_true, y_pred)?,
        roc_auc: roc_auc(y_true, score),
        average_precision: average_precision(y_true, score),
    })
}

/// Counts true/false positives/negatives. Empty input gives all zeros.
pub fn confusion_matrix(y_true: &[bool], y_pred: &[bool]) -> Result<ConfusionMatrix, MetricsError> {
    if y_true.len() != y_pred.len() {
        return Err(MetricsError::LengthMismatch {
            y_true: y_true.len(),
            y_pred: y_pred.len(),
        });
    }
    let mut cm = ConfusionMatrix::default();
    for (&t, &p) in y_true.iter().zip(y_pred) {
        match (t, p) {
            (true, true) => cm.tp += 1,
            (false, true) => cm.fp += 1,
            (false, false) => cm.tn += 1,
            (true, false) => cm.fn_ += 1,
        }
    }
    Ok(cm)
}

/// scikit-learn's zero_division=0: a ratio with a zero denominator is 0.
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

/// Metrics of one class given its own true positives, predicted count and true count.
fn class_metrics(tp: u64, predicted: u64, actual: u64) -> ClassMetrics {
    let tp = tp as f64;
    ClassMetrics {
        precision: ratio(tp, predicted as f64),
        recall: ratio(tp, actual as f64),
        // scikit-learn's form: (1 + β²)·tp / (β²·true + predicted), β = 1.
        f1_score: ratio(2.0 * tp, actual as f64 + predicted as f64),
        support: actual,
    }
}

/// The classification report of binary predictions. Errors on unequal lengths or no records.
pub fn classification_report(
    y_true: &[bool],
    y_pred: &[bool],
) -> Result<ClassificationReport, MetricsError> {
    let cm = confusion_matrix(y_true, y_pred)?;
    let n = cm.tp + cm.fp + cm.tn + cm.fn_;
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    let normal = class_metrics(cm.tn, cm.tn + cm.fn_, cm.tn + cm.fp);
    let anomaly = class_metrics(cm.tp, cm.tp + cm.fp, cm.tp + cm.fn_);
    let mut labels = Vec::with_capacity(2);
    let mut present = Vec::with_capacity(2);
    if cm.tn + cm.fp + cm.fn_ > 0 {
        labels.push(0);
        present.push(normal);
    }
    if cm.tp + cm.fp + cm.fn_ > 0 {
        labels.push(1);
        present.push(anomaly);
    }
    let k = present.len() as f64;
    let mean = |f: fn(&ClassMetrics) -> f64| present.iter().map(f).sum::<f64>() / k;
    let macro_avg = ClassMetrics {
        precision: mean(|c| c.precision),
        recall: mean(|c| c.recall),
        f1_score: mean(|c| c.f1_score),
        support: n,
    };
    // numpy.average: sum(value · weight) / sum(weight); the weights (supports) sum to n > 0.
    let weighted = |f: fn(&ClassMetrics) -> f64| {
        present.iter().map(|c| f(c) * c.support as f64).sum::<f64>() / n as f64
    };
    let weighted_avg = ClassMetrics {
        precision: weighted(|c| c.precision),
        recall: weighted(|c| c.recall),
        f1_score: weighted(|c| c.f1_score),
        support: n,
    };
    Ok(ClassificationReport {
        normal,
        anomaly,
        accuracy: (cm.tp + cm.tn) as f64 / n as f64,
        macro_avg,
        weighted_avg,
        labels,
    })
}

impl fmt::Display for ClassificationReport {
    /// scikit-learn's text layout with `digits=2`: names right-aligned to the width of
    /// "weighted avg", each column 9 wide; the accuracy row leaves precision and recall blank.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const W: usize = "weighted avg".len();
        let row = |f: &mut fmt::Formatter<'_>, name: &str, m: &ClassMetrics| {
            writeln!(
                f,
                "{name:>W$}  {:>9.2} {:>9.2} {:>9.2} {:>9}",
                m.precision, m.recall, m.f1_score, m.support
            )
        };
        writeln!(
            f,
            "{:>W$}  {:>9} {:>9} {:>9} {:>9}",
            "", "precision", "recall", "f1-score", "support"
        )?;
        writeln!(f)?;
        for &label in &self.labels {
            let m = if label == 0 {
                &self.normal
            } else {
                &self.anomaly
            };
            row(f, &label.to_string(), m)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:>W$}  {:>9} {:>9} {:>9.2} {:>9}",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        )?;
        row(f, "macro avg", &self.macro_avg)?;
        row(f, "weighted avg", &self.weighted_avg)
    }
}

/// Descending score order with NaN below everything and all NaNs equal.
fn desc_nan_last(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Cumulative (false positives, true positives) at each distinct score, highest score first:
/// scikit-learn's `_binary_clf_curve`. Point k counts every record scoring at least the k-th
/// distinct score. Ties never split: equal scores enter the curve together.
pub(crate) fn binary_clf_curve(y_true: &[bool], score: &[f64]) -> Vec<(u64, u64, f64)> {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&i, &j| desc_nan_last(score[i], score[j]));
    let mut curve = Vec::new();
    let (mut fps, mut tps) = (0u64, 0u64);
    for (pos, &i) in order.iter().enumerate() {
        if y_true[i] {
            tps += 1;
        } else {
            fps += 1;
        }
        let last_of_group = order
            .get(pos + 1)
            .is_none_or(|&j| desc_nan_last(score[i], score[j]) != Ordering::Equal);
        if last_of_group {
            curve.push((fps, tps, score[i]));
        }
    }
    curve
}

/// Area under the ROC curve (scikit-learn's `roc_auc_score` for binary labels): the trapezoid
/// rule over one point per distinct score, so tied records contribute a diagonal segment (half
/// credit). `None` when only one class is present, when the input is empty, or when the slices
/// differ in length (the caller must pass one score per label).
pub fn roc_auc(y_true: &[bool], score: &[f64]) -> Option<f64> {
    if y_true.len() != score.len() {
        return None;
    }
    let curve = binary_clf_curve(y_true, score);
    let &(neg, pos, _) = curve.last()?;
    if neg == 0 || pos == 0 {
        return None;
    }
    let (neg, pos) = (neg as f64, pos as f64);
    let (mut x0, mut y0) = (0.0, 0.0);
    let mut area = 0.0;
    for &(fps, tps, _) in &curve {
        let (x, y) = (fps as f64 / neg, tps as f64 / pos);
        area += (x - x0) * (y + y0) / 2.0;
        (x0, y0) = (x, y);
    }
    Some(area)
}

/// Average precision (scikit-learn's `average_precision_score`): Σ (Rₙ − Rₙ₋₁)·Pₙ over the
/// distinct scores from the highest down, a step function, not an interpolated area.
/// `None` when there is no positive (anomaly) label, the input is empty, or the slices differ in
/// length. With no negatives it is 1.
pub fn average_precision(y_true: &[bool], score: &[f64]) -> Option<f64> {
    if y_true.len() != score.len() {
        return None;
    }
    let curve = binary_clf_curve(y_true, score);
    let &(_, pos, _) = curve.last()?;
    if pos == 0 {
        return None;
    }
    let pos = pos as f64;
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for &(fps, tps, _) in &curve {
        let recall = tps as f64 / pos;
        let precision = tps as f64 / (tps + fps) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    //! Reference numbers come from scikit-learn 1.9.1 / numpy 2.4.6, computed once with:
    //!
    //! ```python
    //! from sklearn.metrics import (classification_report, confusion_matrix, roc_auc_score,
    //!                              average_precision_score)
    //! # ties
    //! yt = [0,0,1,1,0,1,0,1,0,0]; s = [0.1,0.4,0.35,0.8,0.4,0.4,0.2,0.9,0.5,0.1]
    //! yp = [int(x > 0.39) for x in s]
    //! # fifty
    //! yt = [int((i*7) % 11 < 3) for i in range(50)]
    //! s = [((i*37) % 17)/17 + (0.3 if yt[i] else 0.0) for i in range(50)]
    //! yp = [int(x > 0.6) for x in s]
    //! # tutorial: 720 rows, anomalies at 0, 100, ..., 700, 72 flagged including all 8
    //! yt = [int(i % 100 == 0) for i in range(720)]
    //! flag = set(range(0, 720, 100)) | set(list(range(5, 720, 10))[:64])
    //! yp = [int(i in flag) for i in range(720)]
    //! s = [(0.45 if i == 300 else 0.8) if yt[i] else (0.6 if i in flag else 0.4 + (i % 7)/100)
    //!      for i in range(720)]
    //! classification_report(yt, yp)                  # the text, and output_dict=True for values
    //! confusion_matrix(yt, yp, labels=[0, 1]).ravel()  # tn fp fn tp
    //! roc_auc_score(yt, s); average_precision_score(yt, s)
    //! ```
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() <= EPS, "got {got:?}, want {want:?}");
    }

    fn bools(v: &[u8]) -> Vec<bool> {
        v.iter().map(|&x| x == 1).collect()
    }

    /// True labels, scores and predictions of the same records.
    type Labeled = (Vec<bool>, Vec<f64>, Vec<bool>);

    fn ties() -> Labeled {
        let y = bools(&[0, 0, 1, 1, 0, 1, 0, 1, 0, 0]);
        let s = vec![0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.2, 0.9, 0.5, 0.1];
        let p = s.iter().map(|&x| x > 0.39).collect();
        (y, s, p)
    }

    fn fifty() -> Labeled {
        let y: Vec<bool> = (0..50).map(|i| (i * 7) % 11 < 3).collect();
        let s: Vec<f64> = (0..50)
            .map(|i| ((i * 37) % 17) as f64 / 17.0 + if y[i] { 0.3 } else { 0.0 })
            .collect();
        let p = s.iter().map(|&x| x > 0.6).collect();
        (y, s, p)
    }

    fn tutorial() -> Labeled {
        let y: Vec<bool> = (0..720).map(|i| i % 100 == 0).collect();
        let extra: Vec<usize> = (5..720).step_by(10).take(64).collect();
        let p: Vec<bool> = (0..720).map(|i| y[i] || extra.contains(&i)).collect();
        let s = (0..720)
            .map(|i| match (y[i], p[i]) {
                (true, _) if i == 300 => 0.45,
                (true, _) => 0.8,
                (false, true) => 0.6,
                (false, false) => 0.4 + (i % 7) as f64 / 100.0,
            })
            .collect();
        (y, s, p)
    }

    fn check_class(m: &ClassMetrics, p: f64, r: f64, f1: f64, support: u64) {
        close(m.precision, p);
        close(m.recall, r);
        close(m.f1_score, f1);
        assert_eq!(m.support, support);
    }

    /// Precision, recall, f1 and support of: normal, anomaly, macro avg, weighted avg.
    fn check_classes(r: &ClassificationReport, want: [(f64, f64, f64, u64); 4]) {
        let classes = [&r.normal, &r.anomaly, &r.macro_avg, &r.weighted_avg];
        for (got, (p, r, f1, support)) in classes.into_iter().zip(want) {
            check_class(got, p, r, f1, support);
        }
    }

    /// What scikit-learn answers for one labeled, scored and flagged set of records.
    struct Reference {
        records: fn() -> Labeled,
        /// confusion_matrix(...).ravel(): tn, fp, fn, tp.
        counts: (u64, u64, u64, u64),
        /// Precision, recall, f1 and support of: normal, anomaly, macro avg, weighted avg.
        classes: [(f64, f64, f64, u64); 4],
        accuracy: f64,
        /// classification_report as it prints.
        text: &'static str,
        roc_auc: f64,
        average_precision: f64,
    }

    fn matches_scikit_learn(reference: &Reference) {
        let (y, s, p) = (reference.records)();
        let m = measures(&y, &p, &s).unwrap();
        let cm = m.confusion_matrix;
        assert_eq!((cm.tn, cm.fp, cm.fn_, cm.tp), reference.counts);
        let r = &m.report;
        check_classes(r, reference.classes);
        close(r.accuracy, reference.accuracy);
        assert_eq!(r.to_string(), reference.text);
        close(m.roc_auc.unwrap(), reference.roc_auc);
        close(m.average_precision.unwrap(), reference.average_precision);
    }

    #[test]
    fn ties_case_matches_scikit_learn() {
        matches_scikit_learn(&Reference {
            records: ties,
            counts: (3, 3, 1, 3),
            classes: [
                (0.75, 0.5, 0.6, 6),
                (0.5, 0.75, 0.6, 4),
                (0.625, 0.625, 0.6, 10),
                (0.65, 0.6, 0.6, 10),
            ],
            accuracy: 0.6,
            text: "              precision    recall  f1-score   support\n\n           0       0.75      0.50      0.60         6\n           1       0.50      0.75      0.60         4\n\n    accuracy                           0.60        10\n   macro avg       0.62      0.62      0.60        10\nweighted avg       0.65      0.60      0.60        10\n",
            roc_auc: 0.7916666666666667,
            average_precision: 0.7678571428571428,
        });
    }

    #[test]
    fn fifty_element_case_matches_scikit_learn() {
        matches_scikit_learn(&Reference {
            records: fifty,
            counts: (28, 8, 3, 11),
            classes: [
                (
                    0.9032258064516129,
                    0.7777777777777778,
                    0.835820895522388,
                    36,
                ),
                (
                    0.5789473684210527,
                    0.7857142857142857,
                    0.6666666666666666,
                    14,
                ),
                (
                    0.7410865874363328,
                    0.7817460317460317,
                    0.7512437810945274,
                    50,
                ),
                (0.8124278438030561, 0.78, 0.788457711442786, 50),
            ],
            accuracy: 0.78,
            text: "              precision    recall  f1-score   support\n\n           0       0.90      0.78      0.84        36\n           1       0.58      0.79      0.67        14\n\n    accuracy                           0.78        50\n   macro avg       0.74      0.78      0.75        50\nweighted avg       0.81      0.78      0.79        50\n",
            roc_auc: 0.9007936507936508,
            average_precision: 0.8502150860344138,
        });
    }

    #[test]
    fn tutorial_case_matches_scikit_learn() {
        let (_, _, p) = tutorial();
        assert_eq!(p.iter().filter(|&&x| x).count(), 72);
        matches_scikit_learn(&Reference {
            records: tutorial,
            counts: (648, 64, 0, 8),
            classes: [
                (1.0, 0.9101123595505618, 0.9529411764705882, 712),
                (0.1111111111111111, 1.0, 0.2, 8),
                (
                    0.5555555555555556,
                    0.9550561797752809,
                    0.5764705882352941,
                    720,
                ),
                (
                    0.9901234567901235,
                    0.9111111111111111,
                    0.9445751633986929,
                    720,
                ),
            ],
            accuracy: 0.9111111111111111,
            text: "              precision    recall  f1-score   support\n\n           0       1.00      0.91      0.95       712\n           1       0.11      1.00      0.20         8\n\n    accuracy                           0.91       720\n   macro avg       0.56      0.96      0.58       720\nweighted avg       0.99      0.91      0.94       720\n",
            roc_auc: 0.9645365168539326,
            average_precision: 0.87890625,
        });
    }

    #[test]
    fn one_class_cases_match_scikit_learn() {
        // classification_report([0]*5, [0]*5): class 1 occurs nowhere, so it is left out.
        let y = [false; 5];
        let r = classification_report(&y, &y).unwrap();
        assert_eq!(r.labels, vec![0]);
        check_class(&r.macro_avg, 1.0, 1.0, 1.0, 5);
        check_class(&r.anomaly, 0.0, 0.0, 0.0, 0);
        assert_eq!(
            r.to_string(),
            "              precision    recall  f1-score   support\n\n           0       1.00      1.00      1.00         5\n\n    accuracy                           1.00         5\n   macro avg       1.00      1.00      1.00         5\nweighted avg       1.00      1.00      1.00         5\n"
        );
        assert_eq!(roc_auc(&y, &[0.1; 5]), None);
        assert_eq!(average_precision(&y, &[0.1; 5]), None);

        // classification_report([0,0,0,0], [0,1,0,1]): class 1 predicted but never true.
        let (y, p) = (bools(&[0, 0, 0, 0]), bools(&[0, 1, 0, 1]));
        let r = classification_report(&y, &p).unwrap();
        assert_eq!(r.labels, vec![0, 1]);
        let third = 0.3333333333333333;
        check_classes(
            &r,
            [
                (1.0, 0.5, 2.0 * third, 4),
                (0.0, 0.0, 0.0, 0),
                (0.5, 0.25, third, 4),
                (1.0, 0.5, 2.0 * third, 4),
            ],
        );
        assert_eq!(
            r.to_string(),
            "              precision    recall  f1-score   support\n\n           0       1.00      0.50      0.67         4\n           1       0.00      0.00      0.00         0\n\n    accuracy                           0.50         4\n   macro avg       0.50      0.25      0.33         4\nweighted avg       1.00      0.50      0.67         4\n"
        );

        // classification_report([1,1,1], [1,0,1]); average_precision_score([1,1,1], [.3,.2,.3]) == 1.0
        let (y, p) = (bools(&[1, 1, 1]), bools(&[1, 0, 1]));
        let r = classification_report(&y, &p).unwrap();
        let third = 0.3333333333333333;
        check_classes(
            &r,
            [
                (0.0, 0.0, 0.0, 0),
                (1.0, 2.0 * third, 0.8, 3),
                (0.5, third, 0.4, 3),
                (1.0, 2.0 * third, 0.8000000000000002, 3),
            ],
        );
        close(r.accuracy, 0.6666666666666666);
        assert_eq!(roc_auc(&y, &[0.3, 0.2, 0.3]), None);
        close(average_precision(&y, &[0.3, 0.2, 0.3]).unwrap(), 1.0);

        // classification_report([0,1,0,1,1], [0]*5): nothing flagged, precision of class 1 is 0.
        let (y, p) = (bools(&[0, 1, 0, 1, 1]), [false; 5]);
        let r = classification_report(&y, &p).unwrap();
        check_classes(
            &r,
            [
                (0.4, 1.0, 0.5714285714285714, 2),
                (0.0, 0.0, 0.0, 3),
                (0.2, 0.5, 0.2857142857142857, 5),
                (0.16, 0.4, 0.22857142857142856, 5),
            ],
        );
        assert_eq!(
            r.to_string(),
            "              precision    recall  f1-score   support\n\n           0       0.40      1.00      0.57         2\n           1       0.00      0.00      0.00         3\n\n    accuracy                           0.40         5\n   macro avg       0.20      0.50      0.29         5\nweighted avg       0.16      0.40      0.23         5\n"
        );
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        assert_eq!(
            confusion_matrix(&[true], &[true, false]),
            Err(MetricsError::LengthMismatch {
                y_true: 1,
                y_pred: 2
            })
        );
        assert_eq!(
            classification_report(&[true, false], &[true]).unwrap_err(),
            MetricsError::LengthMismatch {
                y_true: 2,
                y_pred: 1
            }
        );
        assert_eq!(classification_report(&[], &[]), Err(MetricsError::Empty));
        assert_eq!(confusion_matrix(&[], &[]), Ok(ConfusionMatrix::default()));
        assert_eq!(roc_auc(&[true, false], &[0.5]), None);
        assert_eq!(average_precision(&[true, false], &[0.5]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(average_precision(&[], &[]), None);
    }

    #[test]
    fn nan_scores_rank_lowest() {
        let y = bools(&[1, 0, 1, 0]);
        // NaN on a positive: as if it scored below everything, here below the 0.2 negative.
        let with_nan = [0.9, 0.5, f64::NAN, 0.2];
        let lowest = [0.9, 0.5, -1.0, 0.2];
        assert_eq!(roc_auc(&y, &with_nan), roc_auc(&y, &lowest));
        close(roc_auc(&y, &with_nan).unwrap(), 0.5);
        assert_eq!(
            average_precision(&y, &with_nan),
            average_precision(&y, &lowest)
        );
        // Two NaNs tie with each other, below -inf.
        // Order: 0.0 (pos), -inf (neg), then the NaN tie (pos, neg): points (0, .5), (.5, .5), (1, 1).
        let y = bools(&[1, 0, 0, 1]);
        let s = [f64::NAN, f64::NEG_INFINITY, f64::NAN, 0.0];
        close(roc_auc(&y, &s).unwrap(), 0.625);
    }

    #[test]
    fn report_serializes_with_documented_names() {
        let (y, _, p) = tutorial();
        let cm = serde_json::to_value(confusion_matrix(&y, &p).unwrap()).unwrap();
        assert_eq!(
            cm,
            serde_json::json!({"tp": 8, "fp": 64, "tn": 648, "fn": 0})
        );
        let r = serde_json::to_value(classification_report(&y, &p).unwrap()).unwrap();
        assert_eq!(r["anomaly"]["support"], 8);
        assert_eq!(r["macro_avg"]["f1_score"], 0.5764705882352941);
    }

    mod linfa_cross_check {
        //! linfa 0.8 gives the same confusion counts but f32 ratios and an f32 ROC.
        use super::*;
        use linfa::dataset::Pr;
        use linfa::prelude::{BinaryClassification, ToConfusionMatrix};
        use ndarray::Array1;

        #[test]
        fn confusion_counts_agree_ratios_are_f32() {
            for (y, _, p) in [ties(), fifty(), tutorial()] {
                let ours = confusion_matrix(&y, &p).unwrap();
                let theirs = Array1::from(p.clone())
                    .confusion_matrix(Array1::from(y.clone()))
                    .unwrap();
                let r = classification_report(&y, &p).unwrap();
                // Called as linfa documents it, `prediction.confusion_matrix(truth)`, its
                // precision is scikit-learn's recall and vice versa; and only to f32 precision.
                assert!((f64::from(theirs.precision()) - r.anomaly.recall).abs() < 1e-6);
                assert!((f64::from(theirs.recall()) - r.anomaly.precision).abs() < 1e-6);
                // Same counts: its f1 (symmetric in precision and recall) matches ours.
                assert!((f64::from(theirs.f1_score()) - r.anomaly.f1_score).abs() < 1e-6);
                assert_eq!(ours.tp + ours.fp + ours.tn + ours.fn_, y.len() as u64);
            }
            // Only one class: linfa's matrix is 1x1 and class-1 precision is not 0 as in scikit-learn.
            let y = Array1::from(vec![false; 4]);
            let theirs = y.confusion_matrix(y.clone()).unwrap();
            assert_ne!(theirs.precision(), 0.0);
        }

        #[test]
        fn roc_auc_agrees_only_to_f32_precision() {
            let (y, s, _) = fifty();
            // Scores of the fifty case reach 1.24; linfa needs Pr in [0, 1].
            let pr: Vec<Pr> = s.iter().map(|&x| Pr::new((x / 2.0) as f32)).collect();
            let theirs = pr.as_slice().roc(&y).unwrap().area_under_curve();
            let ours = roc_auc(&y, &s).unwrap();
            assert!(
                (f64::from(theirs) - ours).abs() < 1e-6,
                "{theirs} vs {ours}"
            );
            assert!((f64::from(theirs) - 0.9007936507936508).abs() > EPS);
        }
    }
}
