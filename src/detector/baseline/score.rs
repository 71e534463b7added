//! Judging records against entity baselines: relative signals, the tests, scores and explanations.

use chrono::{DateTime, Utc};

use super::profile::{BandsAt, Profile, band_of};
use super::{EntityBaselines, Judged, Test, signals_into};
use crate::detector::Matrix;

impl EntityBaselines {
    /// Each signal's evidence from its relative value: a volume below its band counts
    /// [`Tuning::below_weight`](super::Tuning::below_weight) of its shortfall, a ratio both ways (signed).
    pub(super) fn evidence_into(&self, z: &[f64], e: &mut [f64]) {
        for (s, (e, &zs)) in e.iter_mut().zip(z).enumerate() {
            *e = if s < self.fitted.n_features && zs < 0.0 {
                zs * self.fitted.below_weight
            } else {
                zs
            };
        }
    }

    /// The relative signals `z` of `signals` against the bands `at`.
    pub(super) fn relative_into(&self, at: BandsAt<'_>, signals: &[f64], z: &mut [f64]) {
        for (s, (zs, &v)) in z.iter_mut().zip(signals).enumerate() {
            let (median, scale) = band_of(at, s);
            *zs = (v - median) / scale;
        }
    }

    /// The relative signals `z` of `signals` (at `pos`) against `p`, their omnibus deviation
    /// `D`, and the matched test's statistic `T` (0 without one).
    pub(super) fn tests_with(
        &self,
        p: &Profile,
        signals: &[f64],
        pos: Option<(usize, usize, f64)>,
        z: &mut [f64],
    ) -> (f64, f64) {
        let m = signals.len();
        let (mut sum, mut max) = (0.0f64, 0.0f64);
        let at = p.bands_at(pos, m);
        if let Some(classes) = &self.classes {
            let feature = usize::from(classes.feature);
            let class = self.class_at(at, feature);
            let precision = &classes.precision[class * m * m..(class + 1) * m * m];
            let mut e = [0.0f64; 64];
            let mut owned;
            let e: &mut [f64] = if m <= 64 {
                &mut e[..m]
            } else {
                owned = vec![0.0; m];
                &mut owned
            };
            self.relative_into(at, signals, z);
            self.evidence_into(z, e);
            let mut q = 0.0;
            for (a, &ea) in e.iter().enumerate() {
                let row = &precision[a * m..(a + 1) * m];
                q += ea * row.iter().zip(e.iter()).map(|(p, eb)| p * eb).sum::<f64>();
            }
            let t = self.matched.as_ref().map_or(0.0, |t| {
                let w = &t.weights[class * m..(class + 1) * m];
                w.iter()
                    .zip(e.iter())
                    .map(|(w, e)| w * e)
                    .sum::<f64>()
                    .max(0.0)
            });
            return (q.max(0.0).sqrt(), t);
        }
        for (s, (zs, &v)) in z.iter_mut().zip(signals).enumerate() {
            let (median, scale) = band_of(at, s);
            *zs = (v - median) / scale;
            let c = if s < self.fitted.n_features && *zs < 0.0 {
                -*zs * self.fitted.below_weight
            } else {
                zs.abs()
            };
            sum += c * c;
            max = max.max(c);
        }
        (if self.fitted.max { max } else { sum.sqrt() }, 0.0)
    }

    /// The record's deviation in the omnibus's units from its tests' `(D, T)`
    /// ([`tests_with`](Self::tests_with)): the larger of `D` and the matched test's `T` scaled
    /// so that each is the same at its own calibration quantile, and which test it is.
    fn judge(&self, (d, t): (f64, f64)) -> (f64, Test) {
        match &self.matched {
            Some(m) if t * m.scale > d => (t * m.scale, Test::ActivityAlone),
            _ => (d, Test::Omnibus),
        }
    }

    /// Scores `row` (an `entity` record at `t`) in [0, 1), writing each signal's relative
    /// value into `z` ([`n_signals`](Self::n_signals) long); says how it was judged.
    pub fn score_into(
        &self,
        row: &[f64],
        entity: &str,
        t: DateTime<Utc>,
        z: &mut [f64],
    ) -> (f64, Judged) {
        let mut signals = [0.0; 64];
        let mut owned;
        let signals: &mut [f64] = if z.len() <= 64 {
            &mut signals[..z.len()]
        } else {
            owned = vec![0.0; z.len()];
            &mut owned
        };
        signals_into(row, &self.fitted.pairs, &self.fitted.counts, signals);
        let (p, judged) = self.profile_of(entity);
        let (d, _) = self.judge(self.tests_with(p, signals, self.position(t), z));
        (d / (d + self.fitted.k), judged)
    }

    /// [`score_into`](Self::score_into), and which test decided the score.
    pub fn score_test_into(
        &self,
        row: &[f64],
        entity: &str,
        t: DateTime<Utc>,
        z: &mut [f64],
    ) -> (f64, Judged, Test) {
        let mut signals = vec![0.0; z.len()];
        signals_into(row, &self.fitted.pairs, &self.fitted.counts, &mut signals);
        let (p, judged) = self.profile_of(entity);
        let (d, test) = self.judge(self.tests_with(p, &signals, self.position(t), z));
        (d / (d + self.fitted.k), judged, test)
    }

    /// Where `t` falls among the buckets, as this baseline interpolates.
    fn position(&self, t: DateTime<Utc>) -> Option<(usize, usize, f64)> {
        self.fitted.seasonality.position(t).map(|(b, o, f)| {
            if self.fitted.smooth {
                (b, o, f)
            } else {
                (b, b, 0.0)
            }
        })
    }

    /// Scores every row of `x`; how each was judged.
    pub fn score(
        &self,
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
    ) -> (Vec<f64>, Vec<Judged>) {
        let mut z = vec![0.0; self.n_signals()];
        (0..x.n_rows())
            .map(|i| self.score_into(x.row(i), entities[i], times[i], &mut z))
            .unzip()
    }

    /// What feature `j` usually is for `entity` at `t`, in original units: the expected value
    /// (the band's median) and the band, median ± 2 scales in log space, mapped back.
    pub fn expected(&self, entity: &str, t: DateTime<Utc>, j: usize) -> (f64, [f64; 2]) {
        let (profile, _) = self.profile_of(entity);
        let (m, s) = profile.band_at(self.position(t), j, self.n_signals());
        let back = |l: f64| self.back(j, l);
        (back(m), [back(m - 2.0 * s), back(m + 2.0 * s)])
    }

    /// Each feature's share of the evidence of `row` (an `entity` record at `t`) under the test
    /// that decided its score, the features' own order; how it was judged and which test. The
    /// omnibus's shares are [`contributions`](Self::contributions); the matched test's are its
    /// terms `wₛ eₛ` that speak for the signature (the activity feature's own rise, each ratio's
    /// fall split evenly between its two features).
    pub fn explain(&self, row: &[f64], entity: &str, t: DateTime<Utc>) -> (Vec<f64>, Judged, Test) {
        let m = self.n_signals();
        let mut z = vec![0.0; m];
        let (_, judged, test) = self.score_test_into(row, entity, t, &mut z);
        let (Test::ActivityAlone, Some(matched), Some(classes)) =
            (test, &self.matched, &self.classes)
        else {
            return (self.contributions(&z), judged, test);
        };
        let (p, _) = self.profile_of(entity);
        let at = p.bands_at(self.position(t), m);
        let class = self.class_at(at, usize::from(classes.feature));
        let mut e = vec![0.0; m];
        self.evidence_into(&z, &mut e);
        let mut out = vec![0.0; self.fitted.n_features];
        for (s, (w, e)) in matched.weights[class * m..(class + 1) * m]
            .iter()
            .zip(&e)
            .enumerate()
        {
            let c = (w * e).max(0.0);
            match self.pair(s) {
                None => out[s] += c,
                Some((a, b)) => {
                    out[a] += c / 2.0;
                    out[b] += c / 2.0;
                }
            }
        }
        let total: f64 = out.iter().sum();
        if total > 0.0 {
            out.iter_mut().for_each(|c| *c /= total);
        }
        (out, judged, test)
    }

    /// The activity feature (whose rise alone the matched test looks for), when the model has
    /// the matched test.
    pub fn matched_feature(&self) -> Option<usize> {
        self.matched
            .as_ref()
            .and(self.classes.as_ref())
            .map(|c| usize::from(c.feature))
    }

    /// Each feature's share of a record's deviation from its relative signals `z` (a ratio's
    /// evidence split evenly between its two features), the features' own order.
    pub fn contributions(&self, z: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.fitted.n_features];
        for (s, &zs) in z.iter().enumerate() {
            let c = match self.pair(s) {
                None if zs < 0.0 => -zs * self.fitted.below_weight,
                _ => zs.abs(),
            };
            match self.pair(s) {
                None => out[s] += c * c,
                Some((a, b)) => {
                    out[a] += c * c / 2.0;
                    out[b] += c * c / 2.0;
                }
            }
        }
        let total: f64 = out.iter().sum();
        if total > 0.0 {
            out.iter_mut().for_each(|c| *c /= total);
        }
        out
    }
}
