//! Bands and profiles: an entity's (or the population's) location and scale per signal, per
//! seasonal bucket and day profile, and how they are fitted.

use serde::{Deserialize, Serialize};

use super::{MedianShrink, Position, Seasonality, Tuning, wide};

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
    pub(super) days: [u8; 7],
    pub(super) bands: Box<[Band]>,
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
    pub(super) fn band_at(
        &self,
        pos: Option<(usize, usize, f64)>,
        s: usize,
        signals: usize,
    ) -> (f64, f64) {
        band_of(self.bands_at(pos, signals), s)
    }

    /// The bands at `pos` (`signals` long): the bucket's, and the neighbour's with its weight
    /// (none without seasonality), looked up once for all of a record's signals.
    pub(super) fn bands_at(&self, pos: Option<(usize, usize, f64)>, signals: usize) -> BandsAt<'_> {
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
pub(super) type BandsAt<'a> = (&'a [Band], Option<(&'a [Band], f64)>);

/// Signal `s`'s median and scale from `at`, interpolated between the two buckets.
pub(super) fn band_of((x, y): BandsAt<'_>, s: usize) -> (f64, f64) {
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
pub(super) fn fit_profile(
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
