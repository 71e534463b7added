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

mod classes;
mod fit;
pub mod measure;
mod profile;
mod score;
mod stored;

pub use classes::{
    ACTIVITY_CLASSES, ACTIVITY_FEATURE, CLASS_CLIP, CLASS_MIN_RECORDS, CLASS_RIDGE,
    activity_feature,
};
pub use profile::{Band, DAY_SPLIT, MAX_DAY_PROFILES, Profile};
pub use stored::{
    BaselinesFormat2, BaselinesFormat3, BaselinesFormat4, ProfileFormat2, UpgradeProfile,
};

use classes::{ActivityClasses, MatchedTest};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::Matrix;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, hour, 0, 0).unwrap()
    }

    /// Baselines fitted with the service's tuning and no activity feature.
    fn fit_default(
        x: &Matrix,
        names: &[&str],
        times: &[DateTime<Utc>],
        seasonality: Seasonality,
    ) -> EntityBaselines {
        EntityBaselines::fit(x, names, times, seasonality, None, &Tuning::default())
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
        fit_default(&x, &names, &times, Seasonality::None)
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
        let daily = fit_default(&x, &names, &times, Seasonality::Daily);
        let flat = fit_default(&x, &names, &times, Seasonality::None);
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
        fit_default(&x, &names, &times, Seasonality::Weekly)
    }

    /// `b`'s score of 1.2 MB from `entity` on day `day` of the week (0 is Monday) at `hour`.
    fn weekly_score(b: &EntityBaselines, entity: &str, day: i64, hour: i64) -> f64 {
        let mut z = vec![0.0; b.n_signals()];
        let t = at(0) + chrono::TimeDelta::days(day) + chrono::TimeDelta::hours(hour);
        b.score_into(&[1.2e6], entity, t, &mut z).0
    }

    /// Checks `(entity, day, hour, flagged, why)` cases of [`weekly_score`]: over 0.9 when
    /// `flagged`, else under 0.5.
    fn assert_weekly(b: &EntityBaselines, cases: &[(&str, i64, i64, bool, &str)]) {
        for &(entity, day, hour, flagged, why) in cases {
            let score = weekly_score(b, entity, day, hour);
            let ok = if flagged { score > 0.9 } else { score < 0.5 };
            assert!(
                ok,
                "{entity} on day {day} at {hour:02}:00 scored {score}: {why}"
            );
        }
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
        assert_weekly(
            &b,
            &[
                ("ws", 2, 12, false, "1 MB on a Wednesday noon is usual"),
                ("ws", 5, 12, true, "on a Saturday noon it is not"),
                ("ws", 2, 3, true, "nor at 03:00 on a Wednesday"),
                ("server", 5, 12, false, "every day alike"),
                ("server", 2, 3, false, "every hour alike"),
            ],
        );
        let saturday_noon = at(12) + chrono::TimeDelta::days(5);
        let (sat, [_, sat_hi]) = b.expected("ws", saturday_noon, 0);
        assert!(sat < 2e4 && sat_hi < 1e5, "{sat} {sat_hi}");
    }

    #[test]
    fn a_day_without_history_uses_the_profile_of_most_days() {
        // Trained on Monday to Wednesday and Saturday: Thursday is judged as a weekday.
        let b = weeks_of_hosts(&[0, 1, 2, 5]);
        assert_eq!(b.fitted.entities["ws"].days, [0, 0, 0, 0, 0, 1, 0]);
        assert_weekly(
            &b,
            &[
                ("ws", 3, 12, false, "Thursday noon is a weekday's"),
                ("ws", 3, 3, true, "Thursday 03:00 a weekday night's"),
                ("ws", 5, 12, true, "Saturday noon a weekend's"),
            ],
        );
    }
}
