//! Entity baselines: each feature judged against its own entity's history (and, with
//! seasonality, its history at that hour of the day or week) instead of the whole population's.
//!
//! **Bands.** For every entity (a host, the `group_by` key) a fit keeps, per *signal*, the
//! robust location and scale over the entity's training records: the median and 1.4826 × the
//! median absolute deviation (the standard deviation for normal data), floored at
//! [`MIN_SCALE`]. The signals are each feature's `ln(1 + max(x, 0))` and, for each pair of
//! features, the difference of their logs (the log of their ratio: bytes per connection,
//! received per sent). Log space makes volumes that span orders of magnitude comparable: the
//! same 8× more bytes is `ln 8 / scale` whether the host sends kilobytes or gigabytes. The
//! ratios catch what no single volume shows: five 1.5 kB check-ins on a quiet host add
//! connections without the bytes that usually come with them.
//!
//! **Seasonality.** With `daily` (24 buckets, hour of day) or `weekly` (168, hour of week) the
//! bands are kept per bucket too, each shrunk toward the entity's overall band in proportion to
//! how few training records it had (`SHRINK_RECORDS` pseudo-records of the overall band), so a
//! sparse bucket borrows from the entity instead of trusting three records.
//!
//! **Score.** A record's relative signals `z = (signal − median) / scale` are combined
//! asymmetrically: for a volume only `z > 0` counts (more traffic than usual is suspicious, less
//! mostly not), for a ratio both directions. The deviation `D = sqrt(Σ c²)` is mapped to a
//! score `D / (D + k)` in [0, 1), where `k` is the deviation of the [`CALIBRATION_QUANTILE`]
//! of the training records: the default threshold 0.5 flags about 0.5 % of windows like the
//! training ones, whatever the features' units.
//!
//! An entity with fewer than [`MIN_ENTITY_RECORDS`] training records, or unseen in training, is
//! judged against the population's bands (per bucket likewise): the *global fallback*, which
//! [`EntityBaselines::deviation_into`] reports.
//!
//! Memory: per entity one allocation of `(1 + buckets) × signals` bands of two `f32` (8 bytes),
//! plus its key and the map's entry: with four features (10 signals) about 94 bytes without
//! seasonality, 2.0 kB daily, 13.5 kB weekly (the model file's bytes per entity, measured by
//! `examples/baselines_scale.rs` on 100,000 entities). A fit holds besides its input 4 bytes per
//! signal of each training record, 12 for its hour and 4 for its row.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::Matrix;

pub mod measure;

/// Fewest training records an entity needs for a baseline of its own.
pub const MIN_ENTITY_RECORDS: usize = 8;
/// Pseudo-records of the entity's overall band a seasonal bucket's band is shrunk with.
pub const SHRINK_RECORDS: f64 = 6.0;
/// Smallest scale in log space: a change of about 10 % is one unit even for an entity whose
/// training values never varied.
pub const MIN_SCALE: f64 = 0.1;
/// Smallest scale of a count on its square-root scale, where Poisson noise is one unit.
pub const MIN_COUNT_SCALE: f64 = 0.5;
/// Share of training records whose deviation stays under the default threshold 0.5.
pub const CALIBRATION_QUANTILE: f64 = 0.995;
/// Most features whose pairwise ratios become signals (45 pairs); beyond it only the features.
pub const MAX_PAIRED_FEATURES: usize = 10;

/// Against what a record is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Every record against the whole training population (v1).
    #[default]
    Global,
    /// Each record against its own entity's history.
    Entity,
}

/// How the baseline is conditioned on time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seasonality {
    #[default]
    None,
    /// By hour of day.
    Daily,
    /// By hour of week (Monday 00:00 is bucket 0).
    Weekly,
}

impl Seasonality {
    pub fn buckets(self) -> usize {
        match self {
            Seasonality::None => 0,
            Seasonality::Daily => 24,
            Seasonality::Weekly => 168,
        }
    }

    /// Where `t` falls between bucket centres (each hour's half past): its bucket, the
    /// neighbouring bucket nearer to `t`, and the neighbour's weight (0 at the centre, up to
    /// 0.5 at the hour's edge). `None` without seasonality.
    pub fn position(self, t: DateTime<Utc>) -> Option<(usize, usize, f64)> {
        let b = self.bucket(t)?;
        let n = self.buckets();
        let f = (f64::from(t.minute()) + f64::from(t.second()) / 60.0) / 60.0 - 0.5;
        let other = if f < 0.0 {
            (b + n - 1) % n
        } else {
            (b + 1) % n
        };
        Some((b, other, f.abs()))
    }

    /// The bucket of `t`, `None` without seasonality.
    pub fn bucket(self, t: DateTime<Utc>) -> Option<usize> {
        match self {
            Seasonality::None => None,
            Seasonality::Daily => Some(t.hour() as usize),
            Seasonality::Weekly => {
                Some(t.weekday().num_days_from_monday() as usize * 24 + t.hour() as usize)
            }
        }
    }
}

/// How relative signals are combined (the measured choices; [`Tuning::default`] is the one
/// the service uses).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tuning {
    /// Pairwise log ratios as signals.
    pub ratios: bool,
    /// Weight of a volume below its usual band (0: less traffic is never evidence).
    pub below_weight: f64,
    /// Combine by the largest signal instead of the root of the sum of squares.
    pub max: bool,
    /// Interpolate between neighbouring buckets by the minute.
    pub smooth: bool,
    /// Pseudo-records of the overall band in each bucket's.
    pub shrink: f64,
    /// Whole-number features (counts) on the square-root scale instead of the log's.
    pub counts: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            ratios: true,
            below_weight: 0.0,
            max: false,
            smooth: false,
            shrink: SHRINK_RECORDS,
            counts: true,
        }
    }
}

/// A signal's location and scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub median: f32,
    pub scale: f32,
}

/// One entity's (or the population's) bands: `(1 + buckets) × signals`, overall first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub n_records: u32,
    bands: Box<[Band]>,
}

impl Profile {
    /// The bands that apply in `bucket` (`signals` long).
    fn bands(&self, bucket: Option<usize>, signals: usize) -> &[Band] {
        let b = bucket.map_or(0, |b| b + 1);
        self.bands
            .get(b * signals..(b + 1) * signals)
            .unwrap_or(&self.bands[..signals])
    }

    /// Signal `s`'s median and scale at `pos` (see [`Seasonality::position`]), interpolated
    /// between the two buckets.
    fn band_at(&self, pos: Option<(usize, usize, f64)>, s: usize, signals: usize) -> (f64, f64) {
        match pos {
            None => {
                let b = self.bands[s];
                (f64::from(b.median), f64::from(b.scale))
            }
            Some((b, o, f)) => {
                let (x, y) = (
                    self.bands(Some(b), signals)[s],
                    self.bands(Some(o), signals)[s],
                );
                let mix = |a: f32, c: f32| (1.0 - f) * f64::from(a) + f * f64::from(c);
                (mix(x.median, y.median), mix(x.scale, y.scale))
            }
        }
    }
}

/// Per-entity baselines fitted on training records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityBaselines {
    seasonality: Seasonality,
    n_features: usize,
    /// The feature pairs whose log ratios are signals after the features.
    pairs: Vec<(u16, u16)>,
    /// Features whose own signal is on the square-root scale (every training value a whole
    /// number: counts).
    counts: Vec<bool>,
    below_weight: f64,
    max: bool,
    smooth: bool,
    population: Profile,
    entities: HashMap<String, Profile>,
    /// The deviation that scores 0.5.
    k: f64,
}

/// `ln(1 + x)` of a non-negative amount (negative values count as 0).
fn log_amount(x: f64) -> f64 {
    x.max(0.0).ln_1p()
}

/// How a record was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// Against its entity's own bands.
    Own,
    /// Against the population's: the entity was unseen or had too little history.
    GlobalFallback,
}

impl EntityBaselines {
    /// Learns every entity's bands with the service's [`Tuning`]. `entities[i]` and `times[i]`
    /// belong to row `i` of `x`.
    pub fn fit(
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
        seasonality: Seasonality,
    ) -> Self {
        Self::fit_tuned(x, entities, times, seasonality, &Tuning::default())
    }

    /// [`fit`](Self::fit) with the given tuning (for measurements).
    pub fn fit_tuned(
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
        seasonality: Seasonality,
        tuning: &Tuning,
    ) -> Self {
        let d = x.n_cols();
        let pairs: Vec<(u16, u16)> = if tuning.ratios && d <= MAX_PAIRED_FEATURES {
            (0..d)
                .flat_map(|a| (a + 1..d).map(move |b| (a as u16, b as u16)))
                .collect()
        } else {
            Vec::new()
        };
        let m = d + pairs.len();
        let counts: Vec<bool> = (0..d)
            .map(|j| tuning.counts && x.column(j).all(|v| v >= 0.0 && v.fract() == 0.0))
            .collect();
        // The training records' signals in f32 and their positions in 12 bytes: what the fit
        // holds besides its input (100,000 entities' two days of hours: 0.3 GB, not 0.5).
        let mut signals = vec![0.0f32; x.n_rows() * m];
        let mut row = vec![0.0; m];
        for (i, out) in signals.chunks_exact_mut(m).enumerate() {
            signals_into(x.row(i), &pairs, &counts, &mut row);
            out.iter_mut().zip(&row).for_each(|(o, &v)| *o = v as f32);
        }
        let positions: Vec<Position> = times
            .iter()
            .map(|&t| {
                seasonality.position(t).map(|(b, o, f)| {
                    if tuning.smooth {
                        (b as u8, o as u8, f as f32)
                    } else {
                        (b as u8, b as u8, 0.0)
                    }
                })
            })
            .collect();
        let mut rows_of: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, &e) in entities.iter().enumerate() {
            rows_of.entry(e).or_default().push(i as u32);
        }
        let nb = seasonality.buckets();
        let all: Vec<u32> = (0..x.n_rows() as u32).collect();
        let floors: Vec<f64> = (0..m)
            .map(|s| {
                if counts.get(s).copied().unwrap_or(false) {
                    MIN_COUNT_SCALE
                } else {
                    MIN_SCALE
                }
            })
            .collect();
        let population = profile(&signals, &floors, &all, &positions, nb, tuning.shrink);
        let profiles: HashMap<String, Profile> = rows_of
            .into_iter()
            .filter(|(_, rows)| rows.len() >= MIN_ENTITY_RECORDS)
            .map(|(e, rows)| {
                (
                    e.to_owned(),
                    profile(&signals, &floors, &rows, &positions, nb, tuning.shrink),
                )
            })
            .collect();
        let mut b = Self {
            seasonality,
            n_features: d,
            pairs,
            counts,
            below_weight: tuning.below_weight,
            max: tuning.max,
            smooth: tuning.smooth,
            population,
            entities: profiles,
            k: 1.0,
        };
        let mut z = vec![0.0; m];
        let mut dev: Vec<f64> = (0..x.n_rows())
            .map(|i| {
                let (p, _) = b.profile_of(entities[i]);
                row.iter_mut()
                    .zip(&signals[i * m..(i + 1) * m])
                    .for_each(|(r, &v)| *r = f64::from(v));
                b.deviation_with(p, &row, wide(positions[i]), &mut z)
            })
            .collect();
        let q = super::threshold::percentiles_linear(
            std::mem::take(&mut dev),
            &[100.0 * CALIBRATION_QUANTILE],
        )[0];
        b.k = if q.is_finite() && q > 0.0 { q } else { 1.0 };
        b
    }

    pub fn seasonality(&self) -> Seasonality {
        self.seasonality
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_entities(&self) -> usize {
        self.entities.len()
    }

    /// Signals per record: the features, then the pairwise log ratios.
    pub fn n_signals(&self) -> usize {
        self.n_features + self.pairs.len()
    }

    /// The feature pair behind signal `s` (`None` for a feature's own signal).
    pub fn pair(&self, s: usize) -> Option<(usize, usize)> {
        s.checked_sub(self.n_features)
            .map(|p| (self.pairs[p].0 as usize, self.pairs[p].1 as usize))
    }

    /// The profile `entity` is judged against, and how.
    fn profile_of(&self, entity: &str) -> (&Profile, Judged) {
        match self.entities.get(entity) {
            Some(p) => (p, Judged::Own),
            None => (&self.population, Judged::GlobalFallback),
        }
    }

    /// Whether `entity` has a baseline of its own.
    pub fn knows(&self, entity: &str) -> bool {
        self.entities.contains_key(entity)
    }

    /// The relative signals `z` of `signals` (in `bucket`) against `p`, and their combined
    /// deviation.
    fn deviation_with(
        &self,
        p: &Profile,
        signals: &[f64],
        pos: Option<(usize, usize, f64)>,
        z: &mut [f64],
    ) -> f64 {
        let m = signals.len();
        let (mut sum, mut max) = (0.0f64, 0.0f64);
        for (s, (zs, &v)) in z.iter_mut().zip(signals).enumerate() {
            let (median, scale) = p.band_at(pos, s, m);
            *zs = (v - median) / scale;
            let c = if s < self.n_features && *zs < 0.0 {
                -*zs * self.below_weight
            } else {
                zs.abs()
            };
            sum += c * c;
            max = max.max(c);
        }
        if self.max { max } else { sum.sqrt() }
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
        signals_into(row, &self.pairs, &self.counts, signals);
        let (p, judged) = self.profile_of(entity);
        let d = self.deviation_with(p, signals, self.position(t), z);
        (d / (d + self.k), judged)
    }

    /// Where `t` falls among the buckets, as this baseline interpolates.
    fn position(&self, t: DateTime<Utc>) -> Option<(usize, usize, f64)> {
        self.seasonality
            .position(t)
            .map(|(b, o, f)| if self.smooth { (b, o, f) } else { (b, b, 0.0) })
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
        let count = self.counts.get(j).copied().unwrap_or(false);
        let back = |l: f64| {
            if count {
                ((l.max(0.0) / 2.0).powi(2) - 0.375).max(0.0)
            } else {
                l.exp_m1().max(0.0)
            }
        };
        (back(m), [back(m - 2.0 * s), back(m + 2.0 * s)])
    }

    /// Each feature's share of a record's deviation from its relative signals `z` (a ratio's
    /// evidence split evenly between its two features), the features' own order.
    pub fn contributions(&self, z: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.n_features];
        for (s, &zs) in z.iter().enumerate() {
            let c = match self.pair(s) {
                None if zs < 0.0 => -zs * self.below_weight,
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

/// A training record's bucket, its neighbour and the neighbour's weight, compactly (at most
/// 168 buckets).
type Position = Option<(u8, u8, f32)>;

/// A [`Position`] as [`Seasonality::position`] gives it.
fn wide(p: Position) -> Option<(usize, usize, f64)> {
    p.map(|(b, o, f)| (usize::from(b), usize::from(o), f64::from(f)))
}

/// The signals of a raw record: each feature's log amount (a count's Anscombe root
/// `2 sqrt(x + 3/8)`), then each pair's log ratio.
fn signals_into(row: &[f64], pairs: &[(u16, u16)], counts: &[bool], out: &mut [f64]) {
    let d = row.len();
    for (p, &(a, b)) in pairs.iter().enumerate() {
        out[d + p] = log_amount(row[a as usize]) - log_amount(row[b as usize]);
    }
    for ((o, &v), &count) in out.iter_mut().zip(row).zip(counts) {
        *o = if count {
            2.0 * (v.max(0.0) + 0.375).sqrt()
        } else {
            log_amount(v)
        };
    }
}

/// Bands over the given rows of `signals` (`floors.len()` a row): overall and per bucket.
/// A bucket's median is shrunk toward the overall one with `shrink` pseudo-records; its scale
/// is the spread of its records around the medians interpolated at their `positions`, shrunk
/// likewise toward the entity's spread within buckets.
fn profile(
    signals: &[f32],
    floors: &[f64],
    rows: &[u32],
    positions: &[Position],
    n_buckets: usize,
    shrink: f64,
) -> Profile {
    let m = floors.len();
    let mut scratch = Vec::with_capacity(rows.len());
    let signal = |i: u32, s: usize| f64::from(signals[i as usize * m + s]);
    let mut overall = Vec::with_capacity(m);
    for (s, &floor) in floors.iter().enumerate() {
        scratch.clear();
        scratch.extend(rows.iter().map(|&i| signal(i, s)));
        let median = median_in_place(&mut scratch);
        scratch.iter_mut().for_each(|a| *a = (*a - median).abs());
        let scale = (1.4826 * median_in_place(&mut scratch)).max(floor);
        overall.push(Band {
            median: median as f32,
            scale: scale as f32,
        });
    }
    let mut bands = overall.clone();
    if n_buckets == 0 {
        return Profile {
            n_records: rows.len() as u32,
            bands: bands.into_boxed_slice(),
        };
    }
    let mut by_bucket: Vec<Vec<u32>> = vec![Vec::new(); n_buckets];
    for &i in rows {
        if let Some((b, _, _)) = wide(positions[i as usize]) {
            by_bucket[b].push(i);
        }
    }
    // Medians: each bucket's own, shrunk toward the overall one.
    let weight = |b: usize| {
        let n = by_bucket[b].len() as f64;
        n / (n + shrink)
    };
    let mut own = vec![0.0f64; n_buckets * m];
    let mut medians = vec![0.0f64; n_buckets * m];
    for (b, rows) in by_bucket.iter().enumerate() {
        for s in 0..m {
            let om = f64::from(overall[s].median);
            own[b * m + s] = if rows.is_empty() {
                om
            } else {
                scratch.clear();
                scratch.extend(rows.iter().map(|&i| signal(i, s)));
                median_in_place(&mut scratch)
            };
            let w = weight(b);
            medians[b * m + s] = w * own[b * m + s] + (1.0 - w) * om;
        }
    }
    // Residuals around the buckets' own medians, interpolated, per bucket and pooled.
    let expected = |i: u32, s: usize| match wide(positions[i as usize]) {
        Some((b, o, f)) => (1.0 - f) * own[b * m + s] + f * own[o * m + s],
        None => f64::from(overall[s].median),
    };
    let mut within = Vec::with_capacity(m);
    for (s, &floor) in floors.iter().enumerate() {
        scratch.clear();
        for rows in &by_bucket {
            scratch.extend(rows.iter().map(|&i| (signal(i, s) - expected(i, s)).abs()));
        }
        within.push((1.4826 * median_in_place(&mut scratch)).max(floor));
    }
    for (b, rows) in by_bucket.iter().enumerate() {
        let w = weight(b);
        for (s, &floor) in floors.iter().enumerate() {
            let scale = if rows.is_empty() {
                within[s].max(f64::from(overall[s].scale))
            } else {
                scratch.clear();
                scratch.extend(rows.iter().map(|&i| (signal(i, s) - expected(i, s)).abs()));
                let bs = 1.4826 * median_in_place(&mut scratch);
                (w * bs * bs + (1.0 - w) * within[s] * within[s]).sqrt()
            };
            bands.push(Band {
                median: medians[b * m + s] as f32,
                scale: scale.max(floor) as f32,
            });
        }
    }
    Profile {
        n_records: rows.len() as u32,
        bands: bands.into_boxed_slice(),
    }
}

/// The median of `v` (reordering it); 0 for an empty slice.
fn median_in_place(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, &mut m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if v.len() % 2 == 1 {
        m
    } else {
        let below = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (below + m) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, hour, 0, 0).unwrap()
    }

    /// A quiet host (about 1 kB) and a busy one (about 1 MB), 20 records each, and a few
    /// more hosts so the population is not just these two.
    fn two_hosts() -> EntityBaselines {
        let mut rows = Vec::new();
        let mut names = Vec::new();
        for i in 0..20 {
            let wobble = 1.0 + 0.05 * f64::from(i % 5);
            rows.push([1e3 * wobble, 10.0 + f64::from(i % 3)]);
            names.push("quiet");
            rows.push([1e6 * wobble, 100.0 + f64::from(i % 7)]);
            names.push("busy");
        }
        let x = Matrix::from_rows(&rows).unwrap();
        let times = vec![at(12); rows.len()];
        EntityBaselines::fit(&x, &names, &times, Seasonality::None)
    }

    #[test]
    fn the_same_spike_is_judged_against_each_entitys_own_volume() {
        let b = two_hosts();
        assert_eq!(b.n_entities(), 2);
        assert_eq!(b.n_signals(), 3, "two features and their ratio");
        let score = |v: f64, conns: f64, e: &str| {
            let mut z = vec![0.0; b.n_signals()];
            b.score_into(&[v, conns], e, at(12), &mut z)
        };
        // 1 MB is usual for the busy host, 8x its volume is not; for the quiet host 1 MB is.
        assert!(score(1.1e6, 103.0, "busy").0 < 0.5);
        assert!(score(8e6, 103.0, "busy").0 > 0.8);
        assert!(score(1e6, 11.0, "quiet").0 > 0.9);
        // Less traffic than usual is not evidence by itself.
        assert!(score(0.6e6, 60.0, "busy").0 < 0.5);
        // The usual volume over many more connections is (bytes per connection fell).
        assert!(score(1.1e6, 1000.0, "busy").0 > 0.8);
        // An unseen host is judged against the population and says so.
        assert_eq!(score(1e6, 100.0, "new").1, Judged::GlobalFallback);
        assert_eq!(score(1e6, 100.0, "busy").1, Judged::Own);
        let (expected, [lo, hi]) = b.expected("busy", at(3), 0);
        assert!((1e6..1.2e6).contains(&expected), "{expected}");
        assert!(lo > 5e5 && hi < 2e6 && lo < 1e6 && hi > 1.2e6, "{lo}..{hi}");
        // Counts are on the square-root scale and map back to counts.
        let (conns, _) = b.expected("quiet", at(3), 1);
        assert!((10.0..=11.5).contains(&conns), "{conns}");
    }

    #[test]
    fn daily_seasonality_makes_night_activity_evidence() {
        // A workstation: 1 MB by day (09-17), 10 kB at night; 7 days.
        let times: Vec<_> = (0..7 * 24 * 4)
            .map(|i| at(0) + chrono::TimeDelta::minutes(15 * i))
            .collect();
        let rows: Vec<[f64; 1]> = times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let wobble = 1.0 + 0.1 * (i % 5) as f64;
                [wobble
                    * if (9..17).contains(&t.hour()) {
                        1e6
                    } else {
                        1e4
                    }]
            })
            .collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let names = vec!["ws"; rows.len()];
        let daily = EntityBaselines::fit(&x, &names, &times, Seasonality::Daily);
        let flat = EntityBaselines::fit(&x, &names, &times, Seasonality::None);
        let score = |b: &EntityBaselines, hour: u32| {
            let mut z = vec![0.0; b.n_signals()];
            b.score_into(&[1.2e6], "ws", at(hour), &mut z).0
        };
        assert!(
            score(&daily, 3) > 0.9,
            "1 MB at 03:00 is far from the usual 10 kB"
        );
        assert!(score(&daily, 12) < 0.5, "1 MB at noon is usual");
        // Without seasonality the night-time megabyte is no more unusual than the noon one.
        assert!(score(&flat, 3) < 0.5);
        let (night, [_, night_hi]) = daily.expected("ws", at(3), 0);
        let (day, [day_lo, _]) = daily.expected("ws", at(12), 0);
        assert!(
            night < 2e4 && night_hi < 1e5 && day > 6e5 && day_lo > 4e5,
            "{night} {night_hi} {day} {day_lo}"
        );
    }
}
