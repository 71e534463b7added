//! Fitting entity baselines on training records.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::classes::{MatchedTest, matched_weights};
use super::profile::{Profile, fit_profile};
use super::{
    CALIBRATION_QUANTILE, EntityBaselines, Fitted, MAX_PAIRED_FEATURES, MIN_COUNT_SCALE,
    MIN_ENTITY_RECORDS, MIN_SCALE, Position, Seasonality, Tuning, signals_into, wide,
};
use crate::detector::Matrix;

impl EntityBaselines {
    /// Learns every entity's bands. `entities[i]` and `times[i]` belong to row `i` of `x`;
    /// `activity` is the feature whose usual level sets a record's activity class
    /// ([`activity_feature`](super::activity_feature); `None`: the root of the sum of squares); `tuning` is
    /// [`Tuning::default`] for the service, another for measurements.
    pub fn fit(
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
            let q =
                crate::detector::threshold::percentiles_linear(v, &[100.0 * CALIBRATION_QUANTILE])
                    [0];
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
}
