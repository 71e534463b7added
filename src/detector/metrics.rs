//! Ranking metrics of anomaly scores against labels (ROC AUC, average precision), as scikit-learn.
//!
//! TEMPORARY minimal version so the forest's accuracy tests compile; the real module comes
//! from the metrics branch.

/// (true positives, false positives) after each distinct score, highest score first.
fn curve(y_true: &[bool], score: &[f64]) -> Vec<(f64, f64)> {
    let n = y_true.len().min(score.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let mut points = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if y_true[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        // Tied scores form one threshold.
        let last_of_tie = order
            .get(k + 1)
            .is_none_or(|&j| score[j].total_cmp(&score[i]).is_ne());
        if last_of_tie {
            points.push((tp, fp));
        }
    }
    points
}

/// Area under the ROC curve; `None` when only one class is present.
pub fn roc_auc(y_true: &[bool], score: &[f64]) -> Option<f64> {
    let points = curve(y_true, score);
    let &(p, n) = points.last()?;
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let mut area = 0.0;
    let (mut tp0, mut fp0) = (0.0, 0.0);
    for &(tp, fp) in &points {
        area += (fp - fp0) * (tp + tp0) / 2.0;
        tp0 = tp;
        fp0 = fp;
    }
    Some(area / (p * n))
}

/// Average precision: sum over thresholds of (R_k - R_{k-1}) * P_k; `None` when only one class.
pub fn average_precision(y_true: &[bool], score: &[f64]) -> Option<f64> {
    let points = curve(y_true, score);
    let &(p, n) = points.last()?;
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let mut ap = 0.0;
    let mut tp0 = 0.0;
    for &(tp, fp) in &points {
        ap += (tp - tp0) / p * (tp / (tp + fp));
        tp0 = tp;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn_examples() {
        // roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75
        let y = [false, false, true, true];
        let s = [0.1, 0.4, 0.35, 0.8];
        assert!((roc_auc(&y, &s).unwrap() - 0.75).abs() < 1e-12);
        // average_precision_score(same) = 0.8333333333333333
        assert!((average_precision(&y, &s).unwrap() - 0.833_333_333_333_333_3).abs() < 1e-12);
        // ties: roc_auc_score([0, 1], [0.5, 0.5]) = 0.5, average_precision_score = 0.5
        assert_eq!(roc_auc(&[false, true], &[0.5, 0.5]), Some(0.5));
        assert_eq!(average_precision(&[false, true], &[0.5, 0.5]), Some(0.5));
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        assert_eq!(average_precision(&[], &[]), None);
    }
}
