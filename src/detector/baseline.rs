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
//! **Seasonality.** With `daily` (24 buckets, hour of day) the bands are kept per bucket too,
//! each shrunk toward the entity's overall band in proportion to how few training records it
//! had (`SHRINK_RECORDS` pseudo-records of the overall band), so a sparse bucket borrows from
//! the entity instead of trusting three records. With `weekly` the entity's days of the week
//! are first grouped into at most [`MAX_DAY_PROFILES`] *day profiles* (days whose hourly
//! medians differ by no more than noise share one: typically weekdays and weekends), and the
//! hour-of-day bands are kept per day profile; a day of the week without training records uses
//! the profile of most days. Pooling alike days gives each hour's band five or two days of
//! records instead of one, and bounds the memory (below).
//!
//! **Score.** A record's relative signals `z = (signal − median) / scale` are combined
//! asymmetrically: for a volume only `z > 0` counts (more traffic than usual is suspicious, less
//! mostly not), for a ratio both directions. With seasonality and an activity feature
//! ([`ACTIVITY_FEATURE`], `connections`) the evidence `e` is weighed by how the signals normally
//! co-vary at the record's *activity class*: the entity-hour's usual connections in pairs of
//! doublings, [`ACTIVITY_CLASSES`] classes from a quiet night (about one connection in a window,
//! Poisson noise, every signal on its own) to a busy server (hundreds, where the activity moves
//! every volume together). The fit keeps per class the inverse second moments `P` of the
//! training records' evidence (each clipped to ±[`CLASS_CLIP`], plus [`CLASS_RIDGE`] on the
//! diagonal; a class with fewer than [`CLASS_MIN_RECORDS`] records takes every record's), and
//! the deviation is `D = sqrt(eᵀ P_class e)`: five more connections without their usual bytes
//! weigh more on a quiet night than the same shift of every volume at once. Otherwise (no
//! seasonality, no activity feature, model files of format 3 and before) `D = sqrt(Σ e²)`.
//! `D` is mapped to a score `D / (D + k)` in [0, 1), where `k` is the deviation of the
//! [`CALIBRATION_QUANTILE`] of the training records: the default threshold 0.5 flags about
//! 0.5 % of windows like the training ones, whatever the features' units.
//!
//! **Matched test.** With activity classes (format 5) a second test looks for one documented
//! signature, *the activity rose alone*: more connections than usual, each with fewer bytes
//! (and sessions) than usual, what beaconing and other check-ins do. An omnibus
//! test over ten signals spends its power on the eight a beacon does not move; the matched
//! test is the generalised least squares estimate of a shift along that one direction (the
//! activity's own signal up, each ratio it is in moving as its rise moves it), weighted by the
//! record's activity class, one-sided ([`Test::ActivityAlone`]). It is calibrated on its own
//! training records' [`CALIBRATION_QUANTILE`] like `D`, the record's deviation is the larger of
//! the two calibrated statistics, and that is calibrated again as `D` alone was (so the
//! default threshold still flags about 0.5 % of training windows); the explanation says when
//! the matched test decided. It is general, not tuned on
//! any attack's records: the direction follows from the features alone (the activity feature
//! and the pairs it is in), its weights and calibration from the training records.
//!
//! An entity with fewer than [`MIN_ENTITY_RECORDS`] training records, or unseen in training, is
//! judged against the population's bands (per bucket likewise): the *global fallback*, which
//! [`EntityBaselines::score_into`] reports.
//!
//! Memory: per entity one allocation of `(1 + buckets) × signals` bands of two `f32` (8 bytes),
//! `buckets` 0, 24, or 24 per day profile (24 or 48) weekly, plus 7 bytes of day profiles, its
//! key and the map's entry: with four features (10 signals) about 100 bytes without
//! seasonality, 2.0 kB daily, 2.0–3.9 kB weekly (the model file's bytes per entity, measured by
//! `examples/baselines_scale.rs` on 100,000 entities; weekly was 13.5 kB before day profiles).
//! Activity classes add six `signals × signals` matrices of `f64` per model, not per entity
//! (4.8 kB with 10 signals), and the matched test six `signals` weights (480 bytes).
//! A fit holds besides its input and the model 12 bytes per training record for its hour and 4
//! for its row, and while it fits the population's bands 4 bytes per signal of each record.

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
    /// How a bucket's median is shrunk toward the entity's overall one.
    pub median: MedianShrink,
    /// Combine by the signals' second moments within the record's activity class (when the
    /// fit names an activity feature) instead of the root of the sum of squares.
    pub classes: bool,
    /// Beside the activity classes' deviation, the matched test of the activity feature
    /// rising alone ([`Test::ActivityAlone`]), the record's score the larger of the two.
    pub matched: bool,
}

/// How a seasonal bucket's median is shrunk toward the entity's overall median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MedianShrink {
    /// With [`Tuning::shrink`] pseudo-records of the overall median, however far apart.
    Records,
    /// By how uncertain the bucket's median is against how much the entity's buckets differ
    /// (empirical Bayes): a well-sampled hour keeps its own median.
    Noise,
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
            median: MedianShrink::Records,
            classes: true,
            matched: true,
        }
    }
}

/// A signal's location and scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub median: f32,
    pub scale: f32,
}

/// One entity's (or the population's) bands: `(1 + buckets) × signals`, overall first. With
/// weekly seasonality the buckets are 24-hour *day profiles* (hour of day within each), and
/// `days` says which one each day of the week uses; otherwise `days` is all 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub n_records: u32,
    /// The day profile of each day of the week, Monday first.
    days: [u8; 7],
    bands: Box<[Band]>,
}

impl Profile {
    /// How many 24-hour day profiles the bands hold (0 without seasonality).
    pub fn day_profiles(&self, signals: usize) -> usize {
        (self.bands.len() / signals.max(1)).saturating_sub(1) / 24
    }

    /// The bands that apply in `bucket` (an hour of day or of week; `signals` long).
    fn bands(&self, bucket: Option<usize>, signals: usize) -> &[Band] {
        let b = bucket.map_or(0, |b| 1 + usize::from(block_bucket(&self.days, b as u8)));
        self.bands
            .get(b * signals..(b + 1) * signals)
            .unwrap_or(&self.bands[..signals])
    }

    /// Signal `s`'s median and scale at `pos` (see [`Seasonality::position`]), interpolated
    /// between the two buckets.
    fn band_at(&self, pos: Option<(usize, usize, f64)>, s: usize, signals: usize) -> (f64, f64) {
        band_of(self.bands_at(pos, signals), s)
    }

    /// The bands at `pos` (`signals` long): the bucket's, and the neighbour's with its weight
    /// (none without seasonality), looked up once for all of a record's signals.
    fn bands_at(&self, pos: Option<(usize, usize, f64)>, signals: usize) -> BandsAt<'_> {
        match pos {
            None => (&self.bands[..signals], None),
            Some((b, o, f)) => (
                self.bands(Some(b), signals),
                Some((self.bands(Some(o), signals), f)),
            ),
        }
    }
}

/// A profile's bands at a moment: the bucket's, and the neighbour's with its weight.
type BandsAt<'a> = (&'a [Band], Option<(&'a [Band], f64)>);

/// Signal `s`'s median and scale from `at`, interpolated between the two buckets.
fn band_of((x, y): BandsAt<'_>, s: usize) -> (f64, f64) {
    let x = x[s];
    match y {
        None => (f64::from(x.median), f64::from(x.scale)),
        Some((y, f)) => {
            let y = y[s];
            let mix = |a: f32, c: f32| (1.0 - f) * f64::from(a) + f * f64::from(c);
            (mix(x.median, y.median), mix(x.scale, y.scale))
        }
    }
}

/// Per-entity baselines fitted on training records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityBaselines {
    /// The signals and profiles: all that formats 2 and 3 held.
    fitted: Fitted<Profile>,
    /// How the signals co-vary at each activity level (format 4); without, the deviation is
    /// the root of the sum of squares.
    classes: Option<ActivityClasses>,
    /// The matched test of the activity feature rising alone (format 5; with activity classes
    /// only).
    matched: Option<MatchedTest>,
}

/// The signals and the profiles `P` of entity baselines, before activity classes. Today's
/// baselines hold them (`P` = [`Profile`]) followed by the classes; model files of formats 2 and
/// 3 hold them alone ([`BaselinesFormat2`], [`BaselinesFormat3`]). Postcard writes a struct as
/// its fields one after another, so nesting them changes no byte of a model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fitted<P> {
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
    population: P,
    entities: HashMap<String, P>,
    /// The deviation that scores 0.5.
    k: f64,
}

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
struct ActivityClasses {
    /// The activity feature.
    feature: u16,
    /// [`ACTIVITY_CLASSES`] matrices of signals × signals, row-major, one after another.
    precision: Box<[f64]>,
}

/// The matched test of one documented signature beside the omnibus deviation: *the activity
/// rose alone* (more connections than usual, each with less of the other features than usual:
/// check-ins, beaconing). Its direction `a` in signal space is the activity
/// feature's own signal up and every log ratio it is in moving as its rise moves it (bytes per
/// connection down); the statistic is the generalised least squares estimate of a shift along
/// `a`, `T = max(aᵀ P e, 0) / sqrt(aᵀ P a)`, with `P` the record's activity class's inverse
/// second moments, and it is calibrated on its own: `T / k_T` against the omnibus's `D / k_D`,
/// each 1 at its training records' [`CALIBRATION_QUANTILE`]; the record's deviation is the
/// larger, in `D`'s units, `max(D, T · k_D / k_T)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct MatchedTest {
    /// Per activity class, the test's weights over the signals, `P a / sqrt(aᵀ P a)`
    /// ([`ACTIVITY_CLASSES`] × signals).
    weights: Box<[f64]>,
    /// `k_D / k_T`: puts `T` in the omnibus's units, each statistic's training
    /// [`CALIBRATION_QUANTILE`] at the same deviation.
    scale: f64,
}

/// Which test decided a record's score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// The deviation over every signal (the activity classes', or the root of the sum of
    /// squares).
    Omnibus,
    /// The matched test of the activity feature rising alone ([`ACTIVITY_FEATURE`] up, the
    /// other features per unit of it down).
    ActivityAlone,
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
fn matched_weights(
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
    /// belong to row `i` of `x`; `activity` is the feature whose usual level sets a record's
    /// activity class ([`activity_feature`]; `None`: the root of the sum of squares).
    pub fn fit(
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
        seasonality: Seasonality,
        activity: Option<usize>,
    ) -> Self {
        Self::fit_tuned(
            x,
            entities,
            times,
            seasonality,
            activity,
            &Tuning::default(),
        )
    }

    /// [`fit`](Self::fit) with the given tuning (for measurements).
    pub fn fit_tuned(
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
        seasonality: Seasonality,
        activity: Option<usize>,
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
        // Signals are computed as needed (an entity's at a time, in f32) and positions held in
        // 12 bytes a record: what the fit holds besides its input and the model.
        let mut row = vec![0.0; m];
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
        // The population's bands from every record's signals in f32, freed before the
        // entities' (which hold the model as it grows): the fit's peak is the larger of the two.
        let population = {
            let mut signals = vec![0.0f32; x.n_rows() * m];
            for (i, out) in signals.chunks_exact_mut(m).enumerate() {
                signals_into(x.row(i), &pairs, &counts, &mut row);
                out.iter_mut().zip(&row).for_each(|(o, &v)| *o = v as f32);
            }
            let signal = |i: u32, s: usize| f64::from(signals[i as usize * m + s]);
            let position = |i: u32| positions[i as usize];
            fit_profile(&signal, &floors, &all, &position, seasonality, tuning)
        };
        drop(all);
        let mut profiles: HashMap<String, Profile> = HashMap::new();
        let mut local: Vec<f32> = Vec::new();
        let mut local_rows: Vec<u32> = Vec::new();
        for (e, rows) in rows_of {
            if rows.len() < MIN_ENTITY_RECORDS {
                continue;
            }
            local.clear();
            for &i in &rows {
                signals_into(x.row(i as usize), &pairs, &counts, &mut row);
                local.extend(row.iter().map(|&v| v as f32));
            }
            local_rows.clear();
            local_rows.extend(0..rows.len() as u32);
            let signal = |k: u32, s: usize| f64::from(local[k as usize * m + s]);
            let position = |k: u32| positions[rows[k as usize] as usize];
            let p = fit_profile(
                &signal,
                &floors,
                &local_rows,
                &position,
                seasonality,
                tuning,
            );
            profiles.insert(e.to_owned(), p);
        }
        let mut b = Self {
            fitted: Fitted {
                seasonality,
                n_features: d,
                pairs: pairs.clone(),
                counts: counts.clone(),
                below_weight: tuning.below_weight,
                max: tuning.max,
                smooth: tuning.smooth,
                population,
                entities: profiles,
                k: 1.0,
            },
            classes: None,
            matched: None,
        };
        let mut z = vec![0.0; m];
        // Without seasonality an entity has one usual level, not one per hour: its records
        // are judged by the root of the sum of squares as before (measured: activity classes
        // there cost off-hours 0.06 on two weeks).
        let seasonal = seasonality != Seasonality::None;
        if let Some(feature) = activity.filter(|&j| tuning.classes && seasonal && j < d) {
            let classes = b.fit_classes(x, entities, &positions, feature);
            if tuning.matched {
                b.matched = Some(MatchedTest {
                    weights: matched_weights(&classes.precision, feature, d, &b.fitted.pairs),
                    scale: 1.0,
                });
            }
            b.classes = Some(classes);
        }
        // Each test's statistic over the training records, calibrated on its own, then the
        // larger of the two calibrated again, so the default threshold still flags
        // 1 − CALIBRATION_QUANTILE of the training records.
        let (mut dev, matched): (Vec<f64>, Vec<f64>) = (0..x.n_rows())
            .map(|i| {
                let (p, _) = b.profile_of(entities[i]);
                signals_into(x.row(i), &b.fitted.pairs, &b.fitted.counts, &mut row);
                row.iter_mut().for_each(|r| *r = f64::from(*r as f32));
                b.tests_with(p, &row, wide(positions[i]), &mut z)
            })
            .unzip();
        let calibrated = |v: Vec<f64>| {
            let q = super::threshold::percentiles_linear(v, &[100.0 * CALIBRATION_QUANTILE])[0];
            if q.is_finite() && q > 0.0 { q } else { 1.0 }
        };
        if let Some(t) = &mut b.matched {
            t.scale = calibrated(dev.clone()) / calibrated(matched.clone());
            for (d, m) in dev.iter_mut().zip(&matched) {
                *d = d.max(m * t.scale);
            }
        }
        drop(matched);
        b.fitted.k = calibrated(dev);
        b
    }

    /// The inverse second moments of the training records' relative signals (volumes upward
    /// only, each clipped to ±[`CLASS_CLIP`], plus [`CLASS_RIDGE`]) within each activity class;
    /// a class with fewer than [`CLASS_MIN_RECORDS`] records takes every record's.
    fn fit_classes(
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
    fn class_at(&self, at: BandsAt<'_>, feature: usize) -> usize {
        let (median, _) = band_of(at, feature);
        activity_class(self.back(feature, median))
    }

    /// Feature `j`'s signal `l` in original units.
    fn back(&self, j: usize, l: f64) -> f64 {
        if self.fitted.counts.get(j).copied().unwrap_or(false) {
            ((l.max(0.0) / 2.0).powi(2) - 0.375).max(0.0)
        } else {
            l.exp_m1().max(0.0)
        }
    }

    /// Each signal's evidence from its relative value: a volume below its band counts
    /// [`Tuning::below_weight`] of its shortfall, a ratio both ways (signed).
    fn evidence_into(&self, z: &[f64], e: &mut [f64]) {
        for (s, (e, &zs)) in e.iter_mut().zip(z).enumerate() {
            *e = if s < self.fitted.n_features && zs < 0.0 {
                zs * self.fitted.below_weight
            } else {
                zs
            };
        }
    }

    /// The relative signals `z` of `signals` against the bands `at`.
    fn relative_into(&self, at: BandsAt<'_>, signals: &[f64], z: &mut [f64]) {
        for (s, (zs, &v)) in z.iter_mut().zip(signals).enumerate() {
            let (median, scale) = band_of(at, s);
            *zs = (v - median) / scale;
        }
    }

    pub fn seasonality(&self) -> Seasonality {
        self.fitted.seasonality
    }

    /// Whether records are judged by their activity class's second moments (format 4 fits
    /// with an activity feature) rather than the root of the sum of squares.
    pub fn has_activity_classes(&self) -> bool {
        self.classes.is_some()
    }

    /// Whether records are also judged by the matched test of the activity rising alone
    /// (format 5 fits with activity classes).
    pub fn has_matched_test(&self) -> bool {
        self.matched.is_some()
    }

    pub fn n_features(&self) -> usize {
        self.fitted.n_features
    }

    pub fn n_entities(&self) -> usize {
        self.fitted.entities.len()
    }

    /// Signals per record: the features, then the pairwise log ratios.
    pub fn n_signals(&self) -> usize {
        self.fitted.n_features + self.fitted.pairs.len()
    }

    /// The feature pair behind signal `s` (`None` for a feature's own signal).
    pub fn pair(&self, s: usize) -> Option<(usize, usize)> {
        s.checked_sub(self.fitted.n_features).map(|p| {
            (
                self.fitted.pairs[p].0 as usize,
                self.fitted.pairs[p].1 as usize,
            )
        })
    }

    /// The profile `entity` is judged against, and how.
    fn profile_of(&self, entity: &str) -> (&Profile, Judged) {
        match self.fitted.entities.get(entity) {
            Some(p) => (p, Judged::Own),
            None => (&self.fitted.population, Judged::GlobalFallback),
        }
    }

    /// Whether `entity` has a baseline of its own.
    pub fn knows(&self, entity: &str) -> bool {
        self.fitted.entities.contains_key(entity)
    }

    /// The relative signals `z` of `signals` (at `pos`) against `p`, their omnibus deviation
    /// `D`, and the matched test's statistic `T` (0 without one).
    fn tests_with(
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

    /// The record's deviation in the omnibus's units (the larger of `D` and the matched test's
    /// `T` scaled so that each is the same at its own calibration quantile), and which test it
    /// is.
    fn judge(
        &self,
        p: &Profile,
        signals: &[f64],
        pos: Option<(usize, usize, f64)>,
        z: &mut [f64],
    ) -> (f64, Test) {
        let (d, t) = self.tests_with(p, signals, pos, z);
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
        let (d, _) = self.judge(p, signals, self.position(t), z);
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
        let (d, test) = self.judge(p, &signals, self.position(t), z);
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

/// Where the bands of week bucket `b` (or hour-of-day bucket, `days` all 0) are among a
/// profile's buckets: its day's profile, that hour.
fn block_bucket(days: &[u8; 7], b: u8) -> u8 {
    days.get(usize::from(b / 24)).copied().unwrap_or(0) * 24 + b % 24
}

/// Most 24-hour day profiles a weekly baseline keeps per entity: days of the week that differ
/// (weekdays and weekends) get their own, alike days share one.
pub const MAX_DAY_PROFILES: usize = 2;
/// Mean squared (clipped) difference, in standard errors, between two groups of days' hourly
/// medians below which they share a day profile (about 1 for days alike but for noise).
pub const DAY_SPLIT: f64 = 2.0;

/// The bands of `rows` under `seasonality`: with `weekly`, first which day profile each day of
/// the week uses ([`day_profiles`]), then hour-of-day bands within each profile.
fn fit_profile(
    signal: &impl Fn(u32, usize) -> f64,
    floors: &[f64],
    rows: &[u32],
    position: &impl Fn(u32) -> Position,
    seasonality: Seasonality,
    tuning: &Tuning,
) -> Profile {
    let (days, n_buckets) = match seasonality {
        Seasonality::None => ([0; 7], 0),
        Seasonality::Daily => ([0; 7], 24),
        Seasonality::Weekly => {
            let days = day_profiles(signal, floors, rows, position);
            let blocks = days.iter().copied().max().map_or(1, |b| usize::from(b) + 1);
            (days, 24 * blocks)
        }
    };
    let bucket =
        |i: u32| position(i).map(|(b, o, f)| (block_bucket(&days, b), block_bucket(&days, o), f));
    profile(signal, floors, rows, &bucket, n_buckets, tuning, days)
}

/// Which of at most [`MAX_DAY_PROFILES`] day profiles each day of the week uses: days with
/// history start apart and the two closest groups merge while there are too many or they
/// differ by less than [`DAY_SPLIT`] (the mean over hours and signals of the squared
/// difference of their hourly medians in standard errors, clipped at 16). A day without
/// history uses the profile of most days.
fn day_profiles(
    signal: &impl Fn(u32, usize) -> f64,
    floors: &[f64],
    rows: &[u32],
    position: &impl Fn(u32) -> Position,
) -> [u8; 7] {
    let m = floors.len();
    // The rows of each hour of the week, in one buffer.
    let mut start = [0usize; 169];
    for &i in rows {
        if let Some((b, _, _)) = position(i) {
            start[usize::from(b) + 1] += 1;
        }
    }
    for b in 0..168 {
        start[b + 1] += start[b];
    }
    let mut order = vec![0u32; start[168]];
    let mut fill = start;
    for &i in rows {
        if let Some((b, _, _)) = position(i) {
            order[fill[usize::from(b)]] = i;
            fill[usize::from(b)] += 1;
        }
    }
    let cell = |d: usize, h: usize| &order[start[d * 24 + h]..start[d * 24 + h + 1]];
    let seen: Vec<usize> = (0..7)
        .filter(|&d| start[d * 24] < start[d * 24 + 24])
        .collect();
    if seen.len() <= 1 {
        return [0; 7];
    }
    // Each signal's spread around its hour-of-day median, over all days.
    let mut scratch: Vec<f64> = Vec::new();
    let mut residuals: Vec<f64> = Vec::new();
    let sigma: Vec<f64> = (0..m)
        .map(|s| {
            residuals.clear();
            for h in 0..24 {
                scratch.clear();
                for d in 0..7 {
                    scratch.extend(cell(d, h).iter().map(|&i| signal(i, s)));
                }
                if scratch.is_empty() {
                    continue;
                }
                let median = median_in_place(&mut scratch);
                for d in 0..7 {
                    residuals.extend(cell(d, h).iter().map(|&i| (signal(i, s) - median).abs()));
                }
            }
            (1.4826 * median_in_place(&mut residuals)).max(floors[s])
        })
        .collect();
    // A group of days: its hourly medians (24 × m) and records per hour.
    struct Group {
        days: Vec<usize>,
        median: Vec<f64>,
        n: [u32; 24],
    }
    let summarise = |days: Vec<usize>, scratch: &mut Vec<f64>| {
        let mut median = vec![0.0; 24 * m];
        let mut n = [0u32; 24];
        for h in 0..24 {
            n[h] = days.iter().map(|&d| cell(d, h).len() as u32).sum();
            if n[h] == 0 {
                continue;
            }
            for s in 0..m {
                scratch.clear();
                for &d in &days {
                    scratch.extend(cell(d, h).iter().map(|&i| signal(i, s)));
                }
                median[h * m + s] = median_in_place(scratch);
            }
        }
        Group { days, median, n }
    };
    let distance = |a: &Group, b: &Group| {
        let (mut sum, mut cells) = (0.0, 0usize);
        for h in 0..24 {
            if a.n[h] == 0 || b.n[h] == 0 {
                continue;
            }
            let se = 1.2533 * (1.0 / f64::from(a.n[h]) + 1.0 / f64::from(b.n[h])).sqrt();
            for (s, &sg) in sigma.iter().enumerate() {
                let t = (a.median[h * m + s] - b.median[h * m + s]) / (sg * se);
                sum += (t * t).min(16.0);
                cells += 1;
            }
        }
        if cells == 0 { 0.0 } else { sum / cells as f64 }
    };
    let mut groups: Vec<Group> = seen
        .iter()
        .map(|&d| summarise(vec![d], &mut scratch))
        .collect();
    while groups.len() > 1 {
        let mut closest = (f64::INFINITY, 0, 1);
        for a in 0..groups.len() {
            for b in a + 1..groups.len() {
                let dist = distance(&groups[a], &groups[b]);
                if dist < closest.0 {
                    closest = (dist, a, b);
                }
            }
        }
        let (dist, a, b) = closest;
        if groups.len() <= MAX_DAY_PROFILES && dist >= DAY_SPLIT {
            break;
        }
        let merged = groups.remove(b);
        let mut days = std::mem::take(&mut groups[a].days);
        days.extend(merged.days);
        days.sort_unstable();
        groups[a] = summarise(days, &mut scratch);
    }
    let most = (0..groups.len())
        .max_by_key(|&g| (groups[g].days.len(), std::cmp::Reverse(g)))
        .unwrap_or(0);
    let mut out = [most as u8; 7];
    for (g, group) in groups.iter().enumerate() {
        for &d in &group.days {
            out[d] = g as u8;
        }
    }
    out
}

/// Bands over the given rows: overall and per bucket (`bucket(row)`, among `n_buckets`).
/// A bucket's median is shrunk toward the overall one with `shrink` pseudo-records; its scale
/// is the spread of its records around the medians interpolated at their positions, shrunk
/// likewise toward the entity's spread within buckets. `signal(row, s)` is a training row's
/// signal `s` (of `floors.len()`).
fn profile(
    signal: &impl Fn(u32, usize) -> f64,
    floors: &[f64],
    rows: &[u32],
    bucket: &impl Fn(u32) -> Position,
    n_buckets: usize,
    tuning: &Tuning,
    days: [u8; 7],
) -> Profile {
    let shrink = tuning.shrink;
    let m = floors.len();
    let mut scratch = Vec::with_capacity(rows.len());
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
            days,
            bands: bands.into_boxed_slice(),
        };
    }
    let mut by_bucket: Vec<Vec<u32>> = vec![Vec::new(); n_buckets];
    for &i in rows {
        if let Some((b, _, _)) = wide(bucket(i)) {
            by_bucket[b].push(i);
        }
    }
    // Each bucket's own median.
    let weight = |b: usize| {
        let n = by_bucket[b].len() as f64;
        n / (n + shrink)
    };
    let mut own = vec![0.0f64; n_buckets * m];
    for (b, rows) in by_bucket.iter().enumerate() {
        for s in 0..m {
            own[b * m + s] = if rows.is_empty() {
                f64::from(overall[s].median)
            } else {
                scratch.clear();
                scratch.extend(rows.iter().map(|&i| signal(i, s)));
                median_in_place(&mut scratch)
            };
        }
    }
    // Residuals around the buckets' own medians, interpolated, per bucket and pooled.
    let expected = |i: u32, s: usize| match wide(bucket(i)) {
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
    // Medians: each bucket's own, shrunk toward the overall one.
    let mut medians = vec![0.0f64; n_buckets * m];
    for s in 0..m {
        let om = f64::from(overall[s].median);
        // A bucket median's sampling variance, and (with `Noise`) how much the entity's
        // bucket medians differ beyond it.
        let var = |b: usize| {
            let n = by_bucket[b].len() as f64;
            (1.2533 * within[s]).powi(2) / n.max(1.0)
        };
        let tau2 = {
            let (mut sum, mut k) = (0.0, 0usize);
            for b in 0..n_buckets {
                if !by_bucket[b].is_empty() {
                    sum += (own[b * m + s] - om).powi(2) - var(b);
                    k += 1;
                }
            }
            (sum / k.max(1) as f64).max(0.0)
        };
        for b in 0..n_buckets {
            let w = match tuning.median {
                MedianShrink::Records => weight(b),
                MedianShrink::Noise if by_bucket[b].is_empty() => 0.0,
                MedianShrink::Noise => tau2 / (tau2 + var(b)).max(f64::MIN_POSITIVE),
            };
            medians[b * m + s] = w * own[b * m + s] + (1.0 - w) * om;
        }
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
        days,
        bands: bands.into_boxed_slice(),
    }
}

/// Entity baselines of format 2 (before weekly day profiles).
pub type BaselinesFormat2 = Fitted<ProfileFormat2>;
/// Entity baselines of format 3 (day profiles, before activity classes).
pub type BaselinesFormat3 = Fitted<Profile>;

/// A profile as an earlier format holds it, into today's.
pub trait UpgradeProfile {
    fn upgrade(self, seasonality: Seasonality) -> Profile;
}

impl UpgradeProfile for Profile {
    fn upgrade(self, _: Seasonality) -> Profile {
        self
    }
}

/// A profile of format 2.
#[derive(Deserialize)]
pub struct ProfileFormat2 {
    n_records: u32,
    bands: Box<[Band]>,
}

impl UpgradeProfile for ProfileFormat2 {
    /// The same bands: weekly ones as seven day profiles, one per day of the week.
    fn upgrade(self, seasonality: Seasonality) -> Profile {
        let days = match seasonality {
            Seasonality::Weekly => [0, 1, 2, 3, 4, 5, 6],
            _ => [0; 7],
        };
        Profile {
            n_records: self.n_records,
            days,
            bands: self.bands,
        }
    }
}

/// Baselines of formats 2 and 3, read and converted (never written): every deviation the root
/// of the sum of squares.
impl<P: UpgradeProfile> From<Fitted<P>> for EntityBaselines {
    fn from(old: Fitted<P>) -> Self {
        let s = old.seasonality;
        Self {
            fitted: Fitted {
                population: old.population.upgrade(s),
                entities: old
                    .entities
                    .into_iter()
                    .map(|(e, p)| (e, p.upgrade(s)))
                    .collect(),
                seasonality: s,
                n_features: old.n_features,
                pairs: old.pairs,
                counts: old.counts,
                below_weight: old.below_weight,
                max: old.max,
                smooth: old.smooth,
                k: old.k,
            },
            classes: None,
            matched: None,
        }
    }
}

/// Entity baselines as model files of format 4 hold them: activity classes, before the matched
/// test (every record's score the omnibus deviation's). Read and converted, never written.
#[derive(Deserialize)]
pub struct BaselinesFormat4 {
    fitted: Fitted<Profile>,
    classes: Option<ActivityClasses>,
}

impl From<BaselinesFormat4> for EntityBaselines {
    fn from(old: BaselinesFormat4) -> Self {
        Self {
            fitted: old.fitted,
            classes: old.classes,
            matched: None,
        }
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
        EntityBaselines::fit(&x, &names, &times, Seasonality::None, None)
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
        let daily = EntityBaselines::fit(&x, &names, &times, Seasonality::Daily, None);
        let flat = EntityBaselines::fit(&x, &names, &times, Seasonality::None, None);
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

    /// Two weeks of 15-minute records from Monday 2024-01-01, on the given days of the week
    /// (0 is Monday): a workstation with 1 MB at weekday office hours (09-17), 10 kB at night
    /// and on weekends, and a server at 1 MB around the clock every day.
    fn weeks_of_hosts(days: &[i64]) -> EntityBaselines {
        let mut rows = Vec::new();
        let (mut names, mut times) = (Vec::new(), Vec::new());
        for week in 0..2 {
            for i in days.iter().flat_map(|d| d * 96..(d + 1) * 96) {
                let t =
                    at(0) + chrono::TimeDelta::days(7 * week) + chrono::TimeDelta::minutes(15 * i);
                let wobble = 1.0 + 0.1 * (i % 5) as f64;
                let office = (9..17).contains(&t.hour()) && t.weekday().num_days_from_monday() < 5;
                rows.push([wobble * if office { 1e6 } else { 1e4 }]);
                names.push("ws");
                times.push(t);
                rows.push([wobble * 1e6]);
                names.push("server");
                times.push(t);
            }
        }
        let x = Matrix::from_rows(&rows).unwrap();
        EntityBaselines::fit(&x, &names, &times, Seasonality::Weekly, None)
    }

    /// `b`'s score of 1.2 MB from `entity` on day `day` of the week (0 is Monday) at `hour`.
    fn weekly_score(b: &EntityBaselines, entity: &str, day: i64, hour: i64) -> f64 {
        let mut z = vec![0.0; b.n_signals()];
        let t = at(0) + chrono::TimeDelta::days(day) + chrono::TimeDelta::hours(hour);
        b.score_into(&[1.2e6], entity, t, &mut z).0
    }

    #[test]
    fn weekly_bands_keep_one_day_profile_for_weekdays_and_one_for_weekends() {
        let b = weeks_of_hosts(&[0, 1, 2, 3, 4, 5, 6]);
        let m = b.n_signals();
        let ws = &b.fitted.entities["ws"];
        assert_eq!(
            ws.days,
            [0, 0, 0, 0, 0, 1, 1],
            "weekdays apart from weekends"
        );
        assert_eq!(ws.day_profiles(m), 2);
        assert_eq!(ws.bands.len(), (1 + 24 * MAX_DAY_PROFILES) * m);
        let server = &b.fitted.entities["server"];
        assert_eq!(server.days, [0; 7], "every day alike: one profile");
        assert_eq!(server.bands.len(), (1 + 24) * m);
        assert!(
            weekly_score(&b, "ws", 2, 12) < 0.5,
            "1 MB on a Wednesday noon is usual"
        );
        assert!(
            weekly_score(&b, "ws", 5, 12) > 0.9,
            "on a Saturday noon it is not"
        );
        assert!(
            weekly_score(&b, "ws", 2, 3) > 0.9,
            "nor at 03:00 on a Wednesday"
        );
        assert!(weekly_score(&b, "server", 5, 12) < 0.5);
        assert!(weekly_score(&b, "server", 2, 3) < 0.5);
        let saturday_noon = at(12) + chrono::TimeDelta::days(5);
        let (sat, [_, sat_hi]) = b.expected("ws", saturday_noon, 0);
        assert!(sat < 2e4 && sat_hi < 1e5, "{sat} {sat_hi}");
    }

    #[test]
    fn a_day_without_history_uses_the_profile_of_most_days() {
        // Trained on Monday to Wednesday and Saturday: Thursday is judged as a weekday.
        let b = weeks_of_hosts(&[0, 1, 2, 5]);
        assert_eq!(b.fitted.entities["ws"].days, [0, 0, 0, 0, 0, 1, 0]);
        assert!(
            weekly_score(&b, "ws", 3, 12) < 0.5,
            "Thursday noon is a weekday's"
        );
        assert!(
            weekly_score(&b, "ws", 3, 3) > 0.9,
            "Thursday 03:00 a weekday night's"
        );
        assert!(weekly_score(&b, "ws", 5, 12) > 0.9);
    }
}
