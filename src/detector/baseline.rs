//! Entity baselines: each feature judged against its own entity's history (and, with
//! seasonality, its history at that hour of the day or week) instead of the whole population's.
//!
//! For every entity (a host, the `group_by` key) and every feature, a fit keeps the robust
//! location and scale of `ln(1 + max(x, 0))` over the entity's training records: the median and
//! 1.4826 × the median absolute deviation (which equals the standard deviation for normal data),
//! floored at [`MIN_SCALE`] so an entity that never varied does not turn noise into alarms. A
//! record becomes relative features `z = (ln(1 + x) − median) / scale`: the same 8× more bytes is
//! `ln 8 / scale` whether the host sends kilobytes or gigabytes. Log space makes volumes that
//! span orders of magnitude comparable and multiplicative changes additive.
//!
//! With seasonality the statistics are kept per hour of day (`daily`, 24 buckets) or hour of
//! week (`weekly`, 168); a bucket with fewer than [`MIN_BUCKET_RECORDS`] training records falls
//! back to the entity's overall statistics. An entity with fewer than [`MIN_ENTITY_RECORDS`]
//! training records, or unseen in training, is judged against the population's statistics (per
//! bucket likewise), and [`EntityBaselines::relative_into`] says so.
//!
//! Memory: per entity, (1 + buckets) × features × 2 `f32` (8 bytes a band), each bucket a `Vec`
//! of its own (24 bytes) inside an `Option`; with four features about 90 bytes without
//! seasonality, 1.4 kB daily and 9.4 kB weekly, plus the key and the map's entry (an estimate
//! from the layout, not measured yet; fewer allocations would halve the seasonal figures).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::Matrix;

pub mod measure;

/// Fewest training records an entity needs for a baseline of its own.
pub const MIN_ENTITY_RECORDS: usize = 8;
/// Fewest training records an hour bucket needs before its own statistics are used.
pub const MIN_BUCKET_RECORDS: usize = 6;
/// Smallest scale in log space: a change of about 10 % is one unit even for an entity whose
/// training values never varied.
pub const MIN_SCALE: f64 = 0.1;

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

/// A feature's location and scale in log space.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub median: f32,
    pub scale: f32,
}

/// One entity's (or the population's) bands: overall, then per bucket (`None` where a bucket
/// had too few records), each `features` long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub n_records: usize,
    overall: Vec<Band>,
    buckets: Vec<Option<Vec<Band>>>,
}

impl Profile {
    /// The bands that apply in `bucket`.
    pub fn bands(&self, bucket: Option<usize>) -> &[Band] {
        bucket
            .and_then(|b| self.buckets.get(b))
            .and_then(|b| b.as_deref())
            .unwrap_or(self.overall.as_slice())
    }
}

/// Per-entity baselines fitted on training records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityBaselines {
    seasonality: Seasonality,
    n_features: usize,
    population: Profile,
    entities: HashMap<String, Profile>,
}

/// `ln(1 + x)` of a non-negative amount (negative values count as 0).
fn log_amount(x: f64) -> f64 {
    x.max(0.0).ln_1p()
}

impl EntityBaselines {
    /// Learns every entity's bands. `entities[i]` and `times[i]` belong to row `i` of `x`.
    pub fn fit(
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
        seasonality: Seasonality,
    ) -> Self {
        let d = x.n_cols();
        let buckets: Vec<Option<usize>> = times.iter().map(|&t| seasonality.bucket(t)).collect();
        let mut rows_of: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, &e) in entities.iter().enumerate() {
            rows_of.entry(e).or_default().push(i);
        }
        let all: Vec<usize> = (0..x.n_rows()).collect();
        let population = profile(x, &all, &buckets, seasonality.buckets(), d);
        let entities = rows_of
            .into_iter()
            .filter(|(_, rows)| rows.len() >= MIN_ENTITY_RECORDS)
            .map(|(e, rows)| {
                (
                    e.to_owned(),
                    profile(x, &rows, &buckets, seasonality.buckets(), d),
                )
            })
            .collect();
        Self {
            seasonality,
            n_features: d,
            population,
            entities,
        }
    }

    pub fn seasonality(&self) -> Seasonality {
        self.seasonality
    }

    pub fn n_entities(&self) -> usize {
        self.entities.len()
    }

    /// The profile `entity` is judged against, and whether it is the entity's own.
    pub fn profile_of(&self, entity: &str) -> (&Profile, bool) {
        match self.entities.get(entity) {
            Some(p) => (p, true),
            None => (&self.population, false),
        }
    }

    /// Writes the relative features of `row` (an `entity` record at `t`) into `out`; `true`
    /// when the entity's own baseline judged it, `false` for the population's.
    pub fn relative_into(
        &self,
        row: &[f64],
        entity: &str,
        t: DateTime<Utc>,
        out: &mut [f64],
    ) -> bool {
        let (profile, own) = self.profile_of(entity);
        let bands = profile.bands(self.seasonality.bucket(t));
        for ((o, &v), b) in out.iter_mut().zip(row).zip(bands) {
            *o = (log_amount(v) - f64::from(b.median)) / f64::from(b.scale);
        }
        own
    }

    /// The relative features of every row of `x`, and for each whether its entity's own
    /// baseline judged it.
    pub fn relative(
        &self,
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
    ) -> (Matrix, Vec<bool>) {
        let d = self.n_features;
        let mut data = vec![0.0; x.n_rows() * d];
        let mut own = Vec::with_capacity(x.n_rows());
        for (i, out) in data.chunks_exact_mut(d).enumerate() {
            own.push(self.relative_into(x.row(i), entities[i], times[i], out));
        }
        (
            Matrix::new(x.n_rows(), d, data).expect("rows of the baselines' width"),
            own,
        )
    }

    /// The usual range of feature `j` for `entity` at `t`, in original units: median ± 2 scales
    /// in log space, mapped back.
    pub fn usual_range(&self, entity: &str, t: DateTime<Utc>, j: usize) -> [f64; 2] {
        let (profile, _) = self.profile_of(entity);
        let b = profile.bands(self.seasonality.bucket(t))[j];
        let back = |l: f64| l.exp_m1().max(0.0);
        let (m, s) = (f64::from(b.median), f64::from(b.scale));
        [back(m - 2.0 * s), back(m + 2.0 * s)]
    }
}

/// Bands over the given rows: overall and per bucket.
fn profile(
    x: &Matrix,
    rows: &[usize],
    buckets: &[Option<usize>],
    n_buckets: usize,
    d: usize,
) -> Profile {
    let bands_of = |rows: &[usize]| -> Vec<Band> {
        (0..d)
            .map(|j| {
                let mut v: Vec<f64> = rows.iter().map(|&i| log_amount(x.row(i)[j])).collect();
                let median = median_in_place(&mut v);
                for a in v.iter_mut() {
                    *a = (*a - median).abs();
                }
                let mad = median_in_place(&mut v);
                Band {
                    median: median as f32,
                    scale: (1.4826 * mad).max(MIN_SCALE) as f32,
                }
            })
            .collect()
    };
    let mut by_bucket: Vec<Vec<usize>> = vec![Vec::new(); n_buckets];
    for &i in rows {
        if let Some(b) = buckets[i] {
            by_bucket[b].push(i);
        }
    }
    Profile {
        n_records: rows.len(),
        overall: bands_of(rows),
        buckets: by_bucket
            .iter()
            .map(|rows| (rows.len() >= MIN_BUCKET_RECORDS).then(|| bands_of(rows)))
            .collect(),
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

    #[test]
    fn the_same_spike_is_judged_against_each_entitys_own_volume() {
        // A quiet host (about 1 kB) and a busy one (about 1 MB), 20 records each.
        let mut rows = Vec::new();
        let mut names = Vec::new();
        for i in 0..20 {
            let wobble = 1.0 + 0.05 * f64::from(i % 5);
            rows.push([1e3 * wobble]);
            names.push("quiet");
            rows.push([1e6 * wobble]);
            names.push("busy");
        }
        let x = Matrix::from_rows(&rows).unwrap();
        let times = vec![at(12); rows.len()];
        let b = EntityBaselines::fit(&x, &names, &times, Seasonality::None);
        assert_eq!(b.n_entities(), 2);
        let z = |v: f64, e: &str| {
            let mut out = [0.0];
            let own = b.relative_into(&[v], e, at(12), &mut out);
            (out[0], own)
        };
        // 1 MB is usual for the busy host, 8x its volume is not; for the quiet host 1 MB is.
        assert!(z(1.1e6, "busy").0.abs() < 2.0);
        assert!(z(8e6, "busy").0 > 10.0);
        assert!(z(1e6, "quiet").0 > 30.0);
        // An unseen host is judged against the population and says so.
        let (_, own) = z(1e6, "new");
        assert!(!own);
        assert!(z(1e6, "busy").1);
        let [lo, hi] = b.usual_range("busy", at(3), 0);
        assert!(lo > 5e5 && hi < 2e6 && lo < 1e6 && hi > 1.2e6, "{lo}..{hi}");
    }

    #[test]
    fn daily_seasonality_makes_night_activity_evidence() {
        // A workstation: 1 MB by day (09-17), 10 kB at night; 5 days.
        let mut rows = Vec::new();
        let mut times = Vec::new();
        for day in 0..5 {
            for hour in 0..24 {
                let v = if (9..17).contains(&hour) { 1e6 } else { 1e4 };
                rows.push([v * (1.0 + 0.03 * f64::from(day))]);
                times.push(at(hour) + chrono::TimeDelta::days(day.into()));
            }
        }
        let x = Matrix::from_rows(&rows).unwrap();
        let names = vec!["ws"; rows.len()];
        let flat = EntityBaselines::fit(&x, &names, &times, Seasonality::None);
        let daily = EntityBaselines::fit(&x, &names, &times, Seasonality::Daily);
        let z = |b: &EntityBaselines, hour: u32| {
            let mut out = [0.0];
            b.relative_into(&[1e6], "ws", at(hour), &mut out);
            out[0]
        };
        // Buckets need MIN_BUCKET_RECORDS: 5 days is too few, so daily falls back to overall.
        assert_eq!(z(&daily, 3), z(&flat, 3));
        let times7: Vec<_> = (0..7 * 24)
            .map(|i| at(0) + chrono::TimeDelta::hours(i))
            .collect();
        let rows7: Vec<[f64; 1]> = times7
            .iter()
            .map(|t| {
                [if (9..17).contains(&t.hour()) {
                    1e6
                } else {
                    1e4
                }]
            })
            .collect();
        let x7 = Matrix::from_rows(&rows7).unwrap();
        let names7 = vec!["ws"; rows7.len()];
        let daily = EntityBaselines::fit(&x7, &names7, &times7, Seasonality::Daily);
        let flat = EntityBaselines::fit(&x7, &names7, &times7, Seasonality::None);
        assert!(
            z(&daily, 3) > 20.0,
            "1 MB at 03:00 is far from the usual 10 kB"
        );
        assert!(z(&daily, 12).abs() < 1.0, "1 MB at noon is usual");
        // Without seasonality the usual office-hours peak looks as unusual as night activity.
        assert!(z(&flat, 12) > 20.0);
    }
}
