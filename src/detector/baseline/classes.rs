//! Activity classes and the matched test of the activity rising alone.

use serde::{Deserialize, Serialize};

use super::profile::{BandsAt, band_of};
use super::{EntityBaselines, Position, signals_into, wide};
use crate::detector::Matrix;

/// Activity classes an entity-hour falls in, by its usual level of the activity feature: two
/// doublings each, `min(floor(log2(1 + level)) / 2, 5)`, from a quiet night to a busy server.
pub const ACTIVITY_CLASSES: usize = 6;
/// The feature whose usual level sets the activity class, when the records have it.
pub const ACTIVITY_FEATURE: &str = "connections";
/// Fewest training records a class needs for second moments of its own (else every record's).
pub const CLASS_MIN_RECORDS: usize = 200;
/// Each relative signal is clipped to ± this in the second moments (attacks in training would
/// inflate them).
pub const CLASS_CLIP: f64 = 4.0;
/// Added to the second moments' diagonal before inverting.
pub const CLASS_RIDGE: f64 = 0.2;

/// The inverse second moments of the relative signals within each activity class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ActivityClasses {
    /// The activity feature.
    pub(super) feature: u16,
    /// [`ACTIVITY_CLASSES`] matrices of signals × signals, row-major, one after another.
    pub(super) precision: Box<[f64]>,
}

/// The matched test of one documented signature beside the omnibus deviation: *the activity
/// rose alone* (more connections than usual, each with less of the other features than usual:
/// check-ins, beaconing). Its direction `a` in signal space is the activity
/// feature's own signal up and every log ratio it is in moving as its rise moves it (bytes per
/// connection down); the statistic is the generalised least squares estimate of a shift along
/// `a`, `T = max(aᵀ P e, 0) / sqrt(aᵀ P a)`, with `P` the record's activity class's inverse
/// second moments, and it is calibrated on its own: `T / k_T` against the omnibus's `D / k_D`,
/// each 1 at its training records' [`CALIBRATION_QUANTILE`](super::CALIBRATION_QUANTILE); the record's deviation is the
/// larger, in `D`'s units, `max(D, T · k_D / k_T)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct MatchedTest {
    /// Per activity class, the test's weights over the signals, `P a / sqrt(aᵀ P a)`
    /// ([`ACTIVITY_CLASSES`] × signals).
    pub(super) weights: Box<[f64]>,
    /// `k_D / k_T`: puts `T` in the omnibus's units, each statistic's training
    /// [`CALIBRATION_QUANTILE`](super::CALIBRATION_QUANTILE) at the same deviation.
    pub(super) scale: f64,
}

/// The direction of feature `feature` rising alone among `d` features and their `pairs`' log
/// ratios: its own signal +1, each ratio it is in ±1 as its rise moves it, the rest 0.
fn alone_direction(feature: usize, d: usize, pairs: &[(u16, u16)]) -> Vec<f64> {
    let mut a = vec![0.0; d + pairs.len()];
    a[feature] = 1.0;
    for (p, &(x, y)) in pairs.iter().enumerate() {
        if usize::from(x) == feature {
            a[d + p] = 1.0;
        } else if usize::from(y) == feature {
            a[d + p] = -1.0;
        }
    }
    a
}

/// The index of [`ACTIVITY_FEATURE`] among `features`, what [`EntityBaselines::fit`] takes.
pub fn activity_feature(features: &[String]) -> Option<usize> {
    features.iter().position(|f| f == ACTIVITY_FEATURE)
}

/// The activity class of a usual level `level` of the activity feature.
fn activity_class(level: f64) -> usize {
    ((level.max(0.0) + 1.0).log2() as usize / 2).min(ACTIVITY_CLASSES - 1)
}

/// The inverse of the `m × m` row-major matrix `a` (Gauss-Jordan with partial pivoting; the
/// ridge keeps it well conditioned).
fn inverse(mut a: Vec<f64>, m: usize) -> Vec<f64> {
    let mut inv = vec![0.0; m * m];
    for i in 0..m {
        inv[i * m + i] = 1.0;
    }
    for c in 0..m {
        let p = (c..m)
            .max_by(|&x, &y| a[x * m + c].abs().total_cmp(&a[y * m + c].abs()))
            .unwrap_or(c);
        if p != c {
            for j in 0..m {
                a.swap(c * m + j, p * m + j);
                inv.swap(c * m + j, p * m + j);
            }
        }
        let d = a[c * m + c];
        for j in 0..m {
            a[c * m + j] /= d;
            inv[c * m + j] /= d;
        }
        for r in 0..m {
            if r != c {
                let f = a[r * m + c];
                if f != 0.0 {
                    for j in 0..m {
                        a[r * m + j] -= f * a[c * m + j];
                        inv[r * m + j] -= f * inv[c * m + j];
                    }
                }
            }
        }
    }
    inv
}

/// The matched test's weights per activity class, `P a / sqrt(aᵀ P a)` with `a` the direction of
/// `feature` rising alone and `P` each class's inverse second moments (`precision`).
pub(super) fn matched_weights(
    precision: &[f64],
    feature: usize,
    d: usize,
    pairs: &[(u16, u16)],
) -> Box<[f64]> {
    let a = alone_direction(feature, d, pairs);
    let m = a.len();
    let mut out = Vec::with_capacity(ACTIVITY_CLASSES * m);
    for p in precision.chunks_exact(m * m) {
        let pa: Vec<f64> = p
            .chunks_exact(m)
            .map(|row| row.iter().zip(&a).map(|(x, y)| x * y).sum())
            .collect();
        let norm = pa.iter().zip(&a).map(|(x, y)| x * y).sum::<f64>();
        let norm = if norm.is_finite() && norm > 0.0 {
            norm.sqrt()
        } else {
            1.0
        };
        out.extend(pa.iter().map(|v| v / norm));
    }
    out.into_boxed_slice()
}

impl EntityBaselines {
    /// The inverse second moments of the training records' relative signals (volumes upward
    /// only, each clipped to ±[`CLASS_CLIP`], plus [`CLASS_RIDGE`]) within each activity class;
    /// a class with fewer than [`CLASS_MIN_RECORDS`] records takes every record's.
    pub(super) fn fit_classes(
        &self,
        x: &Matrix,
        entities: &[&str],
        positions: &[Position],
        feature: usize,
    ) -> ActivityClasses {
        let m = self.n_signals();
        let mut sums = vec![0.0f64; (ACTIVITY_CLASSES + 1) * m * m];
        let mut counts = [0usize; ACTIVITY_CLASSES + 1];
        let (mut row, mut z, mut e) = (vec![0.0; m], vec![0.0; m], vec![0.0; m]);
        for i in 0..x.n_rows() {
            let (p, _) = self.profile_of(entities[i]);
            signals_into(x.row(i), &self.fitted.pairs, &self.fitted.counts, &mut row);
            row.iter_mut().for_each(|r| *r = f64::from(*r as f32));
            let at = p.bands_at(wide(positions[i]), m);
            self.relative_into(at, &row, &mut z);
            self.evidence_into(&z, &mut e);
            e.iter_mut()
                .for_each(|v| *v = v.clamp(-CLASS_CLIP, CLASS_CLIP));
            let class = self.class_at(at, feature);
            for c in [class, ACTIVITY_CLASSES] {
                counts[c] += 1;
                let sum = &mut sums[c * m * m..(c + 1) * m * m];
                for a in 0..m {
                    for b in 0..m {
                        sum[a * m + b] += e[a] * e[b];
                    }
                }
            }
        }
        let moments = |c: usize| {
            let n = counts[c].max(1) as f64;
            let mut s: Vec<f64> = sums[c * m * m..(c + 1) * m * m]
                .iter()
                .map(|v| v / n)
                .collect();
            for a in 0..m {
                s[a * m + a] += CLASS_RIDGE;
            }
            inverse(s, m)
        };
        let pooled = moments(ACTIVITY_CLASSES);
        let mut precision = Vec::with_capacity(ACTIVITY_CLASSES * m * m);
        for (c, &n) in counts[..ACTIVITY_CLASSES].iter().enumerate() {
            if n < CLASS_MIN_RECORDS {
                precision.extend_from_slice(&pooled);
            } else {
                precision.extend(moments(c));
            }
        }
        ActivityClasses {
            feature: feature as u16,
            precision: precision.into_boxed_slice(),
        }
    }

    /// The activity class of an entity-hour from its bands: its usual level of `feature`.
    pub(super) fn class_at(&self, at: BandsAt<'_>, feature: usize) -> usize {
        let (median, _) = band_of(at, feature);
        activity_class(self.back(feature, median))
    }

    /// Feature `j`'s signal `l` in original units.
    pub(super) fn back(&self, j: usize, l: f64) -> f64 {
        if self.fitted.counts.get(j).copied().unwrap_or(false) {
            ((l.max(0.0) / 2.0).powi(2) - 0.375).max(0.0)
        } else {
            l.exp_m1().max(0.0)
        }
    }
}
