//! Deciding what is an anomaly: the score threshold from a contamination share or from a false-alert budget.
//!
//! A record is an anomaly iff `score > threshold` (strict), as scikit-learn's
//! `decision_function < 0`. Scores are "higher is more anomalous" (scikit-learn's
//! `score_samples` negated).

use super::metrics::binary_clf_curve;

/// numpy's default `percentile(values, q)` ("linear", Hyndman & Fan type 7), bit for bit.
///
/// `q` is in [0, 100]. Returns NaN where numpy returns NaN or raises: for empty `values`, a `q`
/// outside [0, 100] or NaN, or any NaN among `values` (infinities follow numpy's arithmetic, so
/// interpolating next to one may give NaN too). Runs in O(n) with one copy of `values`.
pub fn percentile_linear(values: &[f64], q: f64) -> f64 {
    percentile_of_owned(values.to_vec(), q)
}

/// [`percentile_linear`] at each of `qs`, bit for bit, from `values` itself (no copy): the k-th
/// smallest value does not depend on the order a previous selection left the values in.
pub fn percentiles_linear(mut values: Vec<f64>, qs: &[f64]) -> Vec<f64> {
    qs.iter()
        .map(|&q| percentile_in_place(&mut values, q))
        .collect()
}

fn percentile_of_owned(mut v: Vec<f64>, q: f64) -> f64 {
    percentile_in_place(&mut v, q)
}

/// [`percentile_linear`] on `v`, which it reorders.
fn percentile_in_place(v: &mut [f64], q: f64) -> f64 {
    let n = v.len();
    if n == 0 || !(0.0..=100.0).contains(&q) || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    // numpy: quantile = q / 100, virtual index = (n - 1) * quantile, gamma = index - floor(index).
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    let (lo, gamma) = if virtual_index >= (n - 1) as f64 {
        // numpy points both neighbours at the last element (index -1), so gamma = index + 1.
        (n - 1, virtual_index + 1.0)
    } else {
        let lo = virtual_index.floor();
        (lo as usize, virtual_index - lo)
    };
    let (_, &mut a, above) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let b = if lo + 1 < n {
        above.iter().copied().fold(f64::INFINITY, f64::min)
    } else {
        a
    };
    // numpy's _lerp: interpolate from whichever end is nearer, for monotonicity.
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// The threshold for a contamination share: flags the top `contamination` of the training scores.
///
/// Equal to numpy's `percentile(training_scores, 100 * (1 - contamination))`, and computed as
/// scikit-learn computes it, `-percentile(-training_scores, 100 * contamination)` (its
/// `offset_`, negated), because the two forms can differ in the last bit (e.g. for 0.0137) and
/// this one reproduces scikit-learn's decisions exactly. A record is an anomaly iff
/// `score > threshold`. NaN when `training_scores` is empty or holds a NaN, or `contamination`
/// is outside [0, 1].
pub fn contamination_threshold(training_scores: &[f64], contamination: f64) -> f64 {
    if !(0.0..=1.0).contains(&contamination) {
        return f64::NAN;
    }
    let negated = training_scores.iter().map(|s| -s).collect();
    -percentile_of_owned(negated, 100.0 * contamination)
}

/// A threshold chosen to catch as many labeled anomalies as a false-alert budget allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetThreshold {
    /// Flag a record iff its score is strictly greater than this.
    pub threshold: f64,
    /// The budget asked for: the largest acceptable share of normal records flagged.
    pub max_false_positive_rate: f64,
    /// Share of the labeled normal records this threshold flags (at most the budget).
    pub false_positive_rate: f64,
    /// Share of the labeled anomalies this threshold flags.
    pub recall: f64,
    /// Share of flagged records that are labeled anomalies (0 when nothing is flagged).
    pub precision: f64,
    /// Records flagged in the labeled data.
    pub n_flagged: u64,
}

/// Why no budget threshold could be chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("max_false_positive_rate must be a number in [0, 1], got {0}")]
    MaxFalsePositiveRate(f64),
    #[error("no labeled records: a false-positive budget needs labeled data")]
    Empty,
    #[error("{labels} labels but {scores} scores; give one score per labeled record")]
    LengthMismatch { labels: usize, scores: usize },
    #[error("no record is labeled normal (label 0), so a false-positive rate cannot be measured")]
    NoNegatives,
    #[error("no record is labeled anomalous (label 1), so recall cannot be measured")]
    NoPositives,
    #[error("every score is NaN; no threshold can separate them")]
    NoComparableScores,
}

impl ThresholdError {
    /// The input at fault, as a client spells it.
    pub fn field(&self) -> &'static str {
        match self {
            ThresholdError::MaxFalsePositiveRate(_) => "max_false_positive_rate",
            ThresholdError::Empty | ThresholdError::LengthMismatch { .. } => "records",
            ThresholdError::NoNegatives | ThresholdError::NoPositives => "label",
            ThresholdError::NoComparableScores => "score",
        }
    }
}

/// The next float below `x` (`f64::next_down`, which is newer than this crate's MSRV).
fn next_down(x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        x
    } else if x == 0.0 {
        -f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() - 1)
    } else {
        f64::from_bits(x.to_bits() + 1)
    }
}

/// A threshold with `lower <= t < upper`: the midpoint when it fits, so new records scoring
/// between two training scores are not decided by which side the gap was cut on.
fn between(upper: f64, lower: f64) -> f64 {
    let mid = upper / 2.0 + lower / 2.0;
    if mid.is_finite() && lower <= mid && mid < upper {
        mid
    } else if lower.is_finite() {
        lower
    } else {
        next_down(upper)
    }
}

/// The highest-recall threshold whose false-positive rate on labeled data stays within
/// `max_fpr`; among thresholds with that recall, the highest (fewest false alerts).
/// A record is an anomaly iff `score > threshold`.
///
/// A threshold can only sit between two distinct scores, so records with equal scores are
/// flagged together or not at all: when a normal and an anomalous record share a score, taking
/// the anomaly costs the false alert too, and if that breaks the budget neither is flagged.
/// The threshold is placed halfway between the lowest flagged score and the next lower score;
/// with nothing flagged it is the highest score, with everything flagged just below the lowest.
/// NaN scores count as lowest and are never flagged (`NaN > t` is false); a score of −∞ cannot
/// be flagged either.
pub fn threshold_for_fpr_budget(
    y_true: &[bool],
    score: &[f64],
    max_fpr: f64,
) -> Result<BudgetThreshold, ThresholdError> {
    if y_true.len() != score.len() {
        return Err(ThresholdError::LengthMismatch {
            labels: y_true.len(),
            scores: score.len(),
        });
    }
    if y_true.is_empty() {
        return Err(ThresholdError::Empty);
    }
    if !(0.0..=1.0).contains(&max_fpr) {
        return Err(ThresholdError::MaxFalsePositiveRate(max_fpr));
    }
    let positives = y_true.iter().filter(|&&y| y).count() as u64;
    let negatives = y_true.len() as u64 - positives;
    if negatives == 0 {
        return Err(ThresholdError::NoNegatives);
    }
    if positives == 0 {
        return Err(ThresholdError::NoPositives);
    }
    // One point per distinct score, highest first, NaN group (if any) last.
    let curve = binary_clf_curve(y_true, score);
    let flaggable: Vec<(u64, u64, f64)> = curve
        .iter()
        .copied()
        .filter(|&(_, _, s)| !s.is_nan())
        .collect();
    let Some(&(_, _, top)) = flaggable.first() else {
        return Err(ThresholdError::NoComparableScores);
    };

    // Flagging groups 0..=k costs curve[k].0 false positives; that only grows with k, so walk
    // down until the budget breaks and keep the first cut reaching the most true positives.
    let mut best: Option<usize> = None;
    let mut best_tp = 0;
    for (k, &(fps, tps, s)) in flaggable.iter().enumerate() {
        if s == f64::NEG_INFINITY || fps as f64 / negatives as f64 > max_fpr {
            break;
        }
        if tps > best_tp {
            best = Some(k);
            best_tp = tps;
        }
    }
    let (fp, tp, threshold) = match best {
        None => (0, 0, top),
        Some(k) => {
            let (fp, tp, s) = flaggable[k];
            let t = match flaggable.get(k + 1) {
                Some(&(_, _, next)) => between(s, next),
                None => next_down(s),
            };
            (fp, tp, t)
        }
    };
    let flagged = tp + fp;
    Ok(BudgetThreshold {
        threshold,
        max_false_positive_rate: max_fpr,
        false_positive_rate: fp as f64 / negatives as f64,
        recall: tp as f64 / positives as f64,
        precision: if flagged == 0 {
            0.0
        } else {
            tp as f64 / flagged as f64
        },
        n_flagged: flagged,
    })
}

#[cfg(test)]
mod tests {
    //! Percentile references from numpy 2.4.6, computed once with:
    //!
    //! ```python
    //! import numpy as np
    //! v = [((i*7919) % 1000)/1000*0.5 + 0.3 for i in range(50)]
    //! [np.percentile(v, q) for q in [0, 10, 25, 50, 90, 99.9, 100, 33.3, 66.6, 0.1]]
    //! t = [((i*7919) % 1000)/1000*0.5 + 0.3 for i in range(720)]
    //! for c in [0.1, 0.05, 0.0137, 0.5]:
    //!     -np.percentile(-np.array(t), 100*c), np.percentile(t, 100*(1 - c))
    //! np.percentile([3.0, 1.0, 2.0], 40); np.percentile([5.0], 73)
    //! np.percentile([1.0, 2.0, 2.0, 7.0], 62.5); np.percentile([-np.inf, 0.0, 1.0], 25)
    //! np.percentile([1.0, np.inf], 0)
    //! ```
    use super::*;

    fn formula(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 / 1000.0 * 0.5 + 0.3)
            .collect()
    }

    #[test]
    fn percentile_matches_numpy_bit_for_bit() {
        let v = formula(50);
        let cases = [
            (0.0, 0.3),
            (10.0, 0.34059999999999996),
            (25.0, 0.4125),
            (50.0, 0.5375),
            (90.0, 0.7344),
            (99.9, 0.7868140000000001),
            (100.0, 0.7875),
            (33.3, 0.45393799999999995),
            (66.6, 0.6203759999999998),
            (0.1, 0.3000735),
        ];
        for (q, want) in cases {
            assert_eq!(percentile_linear(&v, q), want, "q = {q}");
        }
        assert_eq!(percentile_linear(&[3.0, 1.0, 2.0], 40.0), 1.8);
        assert_eq!(percentile_linear(&[5.0], 73.0), 5.0);
        assert_eq!(percentile_linear(&[1.0, 2.0, 2.0, 7.0], 62.5), 2.0);
        assert_eq!(
            percentile_linear(&[f64::NEG_INFINITY, 0.0, 1.0], 25.0),
            f64::NEG_INFINITY
        );
        assert!(percentile_linear(&[1.0, f64::INFINITY], 0.0).is_nan());
    }

    #[test]
    fn percentiles_from_one_copy_equal_one_at_a_time() {
        // Ties, signed zeros and a spread of magnitudes; qs in an order that reuses partitions.
        let mut v: Vec<f64> = formula(997)
            .into_iter()
            .map(|x| (x * 7.0).floor())
            .collect();
        v.extend([0.0, -0.0, 1e-300, -1e300, 1e300, 3.5, 3.5]);
        let qs = [95.0, 5.0, 50.0, 0.0, 100.0, 33.3, 50.0];
        let got = percentiles_linear(v.clone(), &qs);
        for (&q, g) in qs.iter().zip(&got) {
            assert_eq!(g.to_bits(), percentile_linear(&v, q).to_bits(), "q = {q}");
        }
        assert!(percentiles_linear(vec![1.0, f64::NAN], &[50.0])[0].is_nan());
        assert!(percentiles_linear(Vec::new(), &[50.0])[0].is_nan());
    }

    #[test]
    fn percentile_rejects_what_numpy_rejects_with_nan() {
        assert!(percentile_linear(&[], 50.0).is_nan());
        assert!(percentile_linear(&[1.0, f64::NAN, 2.0], 50.0).is_nan());
        assert!(percentile_linear(&[1.0, 2.0], -1.0).is_nan());
        assert!(percentile_linear(&[1.0, 2.0], 100.5).is_nan());
        assert!(percentile_linear(&[1.0, 2.0], f64::NAN).is_nan());
    }

    #[test]
    fn contamination_threshold_is_scikit_learns_offset() {
        let t = formula(720);
        // (contamination, -np.percentile(-t, 100c), np.percentile(t, 100(1-c)))
        let cases = [
            (0.1, 0.74955, 0.74955),
            (0.05, 0.774025, 0.774025),
            (0.0137, 0.7921497000000001, 0.7921497),
            (0.5, 0.55025, 0.55025),
        ];
        for (c, sklearn, plain) in cases {
            assert_eq!(contamination_threshold(&t, c), sklearn, "c = {c}");
            assert_eq!(percentile_linear(&t, 100.0 * (1.0 - c)), plain, "c = {c}");
        }
        // 720 distinct-ish scores at 10 %: 72 records above the threshold, as in the tutorial.
        let th = contamination_threshold(&t, 0.1);
        assert_eq!(t.iter().filter(|&&s| s > th).count(), 72);
        assert!(contamination_threshold(&t, 1.5).is_nan());
        assert!(contamination_threshold(&[], 0.1).is_nan());
    }

    fn labels(v: &[u8]) -> Vec<bool> {
        v.iter().map(|&x| x == 1).collect()
    }

    /// The budget threshold for labels given as 0/1, where one exists.
    fn budget(y: &[u8], s: &[f64], max_fpr: f64) -> BudgetThreshold {
        threshold_for_fpr_budget(&labels(y), s, max_fpr).unwrap()
    }

    #[test]
    fn budget_picks_the_best_achievable_threshold() {
        let y = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0];
        let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05];
        // Budget 0: only the two anomalies above the first normal record.
        let b = budget(&y, &s, 0.0);
        assert_eq!(b.threshold, 0.75);
        assert_eq!(b.n_flagged, 2);
        assert_eq!(b.false_positive_rate, 0.0);
        assert_eq!(b.recall, 2.0 / 3.0);
        assert_eq!(b.precision, 1.0);
        // One false alert out of 7 buys the third anomaly.
        let b = budget(&y, &s, 1.0 / 7.0);
        assert_eq!((b.threshold, b.n_flagged, b.recall), (0.55, 4, 1.0));
        assert_eq!(b.precision, 0.75);
        assert_eq!(b.false_positive_rate, 1.0 / 7.0);
        // A larger budget does not flag more once recall is 1.
        for max_fpr in [0.5, 1.0] {
            let b = budget(&y, &s, max_fpr);
            assert_eq!((b.threshold, b.n_flagged), (0.55, 4));
            assert_eq!(b.max_false_positive_rate, max_fpr);
        }
        // Just under 1/7: back to the budget-0 choice.
        assert_eq!(budget(&y, &s, 0.14).threshold, 0.75);
    }

    #[test]
    fn tied_normal_and_anomaly_are_flagged_together_or_not_at_all() {
        let (y, s) = ([1, 0, 1, 0, 0], [0.9, 0.7, 0.7, 0.3, 0.2]);
        let b = budget(&y, &s, 0.3);
        assert_eq!((b.threshold, b.n_flagged, b.recall), (0.8, 1, 0.5));
        let b = budget(&y, &s, 1.0 / 3.0);
        assert_eq!((b.threshold, b.n_flagged, b.recall), (0.5, 3, 1.0));
        assert_eq!(b.false_positive_rate, 1.0 / 3.0);
    }

    #[test]
    fn budget_zero_with_a_normal_on_top_flags_nothing() {
        let s = [0.9, 0.8, 0.1];
        let b = budget(&[0, 1, 0], &s, 0.0);
        assert_eq!(b.threshold, 0.9);
        assert_eq!((b.n_flagged, b.recall, b.precision), (0, 0.0, 0.0));
        assert!(s.iter().all(|&x| x <= b.threshold));
    }

    #[test]
    fn flagging_everything_puts_the_threshold_just_below_the_lowest_score() {
        let s = [0.9, 0.8, 0.1];
        let b = budget(&[1, 0, 1], &s, 1.0);
        assert_eq!(b.n_flagged, 3);
        assert!(b.threshold < 0.1 && 0.1 - b.threshold < 1e-15);
        assert!(s.iter().all(|&x| x > b.threshold));
    }

    #[test]
    fn nan_scores_are_never_flagged() {
        // The anomaly with a NaN score stays missed even when everything else is flagged.
        let y = [1, 0, 1, 1];
        let b = budget(&y, &[0.9, 0.5, f64::NAN, 0.2], 1.0);
        assert_eq!((b.n_flagged, b.recall), (3, 2.0 / 3.0));
        assert!(b.threshold < 0.2);
        assert_eq!(
            threshold_for_fpr_budget(&labels(&y), &[f64::NAN; 4], 0.5),
            Err(ThresholdError::NoComparableScores)
        );
    }

    #[test]
    fn budget_errors_name_the_cause() {
        let y = labels(&[1, 0]);
        let s = [0.9, 0.1];
        let cases = [
            (
                threshold_for_fpr_budget(&y, &s, 1.5),
                "max_false_positive_rate",
            ),
            (
                threshold_for_fpr_budget(&y, &s, -0.1),
                "max_false_positive_rate",
            ),
            (
                threshold_for_fpr_budget(&y, &s, f64::NAN),
                "max_false_positive_rate",
            ),
            (threshold_for_fpr_budget(&[], &[], 0.1), "records"),
            (threshold_for_fpr_budget(&y, &s[..1], 0.1), "records"),
            (threshold_for_fpr_budget(&[true, true], &s, 0.1), "label"),
            (threshold_for_fpr_budget(&[false, false], &s, 0.1), "label"),
        ];
        for (result, field) in cases {
            assert_eq!(result.unwrap_err().field(), field);
        }
        assert_eq!(
            threshold_for_fpr_budget(&[true, true], &s, 0.1),
            Err(ThresholdError::NoNegatives)
        );
        assert_eq!(
            threshold_for_fpr_budget(&[false, false], &s, 0.1),
            Err(ThresholdError::NoPositives)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The chosen threshold reproduces its own counts, respects the budget, and no
            /// threshold at any observed score (or below all) does better.
            #[test]
            fn budget_is_optimal_and_self_consistent(
                data in proptest::collection::vec((any::<bool>(), 0u8..12), 2..40),
                max_fpr in 0.0f64..=1.0,
            ) {
                let y: Vec<bool> = data.iter().map(|d| d.0).collect();
                // Few distinct values, so ties across classes are common.
                let s: Vec<f64> = data.iter().map(|d| f64::from(d.1) / 10.0).collect();
                let pos = y.iter().filter(|&&v| v).count();
                let neg = y.len() - pos;
                prop_assume!(pos > 0 && neg > 0);
                let b = threshold_for_fpr_budget(&y, &s, max_fpr).unwrap();
                let count = |t: f64| {
                    let tp = y.iter().zip(&s).filter(|(l, x)| **l && **x > t).count();
                    let fp = y.iter().zip(&s).filter(|(l, x)| !**l && **x > t).count();
                    (tp, fp)
                };
                let (tp, fp) = count(b.threshold);
                prop_assert_eq!((tp + fp) as u64, b.n_flagged);
                prop_assert_eq!(tp as f64 / pos as f64, b.recall);
                prop_assert!(b.false_positive_rate <= max_fpr);
                let candidates = s.iter().copied().chain([-1.0]);
                for t in candidates {
                    let (tp2, fp2) = count(t);
                    if fp2 as f64 / neg as f64 <= max_fpr {
                        prop_assert!(tp2 <= tp, "t = {} catches {} > {}", t, tp2, tp);
                        if tp2 == tp {
                            prop_assert!(fp2 >= fp);
                        }
                    }
                }
            }

            /// O(n) selection gives the same percentile as interpolating on a sorted copy.
            #[test]
            fn percentile_agrees_with_sorting(
                v in proptest::collection::vec(-1e6f64..1e6, 1..60),
                q in 0.0f64..=100.0,
            ) {
                let mut sorted = v.clone();
                sorted.sort_by(f64::total_cmp);
                let idx = (sorted.len() - 1) as f64 * (q / 100.0);
                let lo = idx.floor() as usize;
                let hi = (lo + 1).min(sorted.len() - 1);
                let g = idx - lo as f64;
                let (a, b) = (sorted[lo], sorted[hi]);
                let want = if g >= 0.5 { b - (b - a) * (1.0 - g) } else { a + (b - a) * g };
                prop_assert_eq!(percentile_linear(&v, q), want);
            }
        }
    }
}
