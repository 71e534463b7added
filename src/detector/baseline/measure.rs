//! How well each baseline finds each attack kind on generated labeled traffic: the numbers in
//! BENCHMARKS.md (`examples/baselines.rs`) and the margins of `tests/suite/baseline_accuracy.rs`.

use chrono::{DateTime, Utc};

use super::{Baseline, EntityBaselines, Seasonality, Tuning};
use crate::detector::Matrix;
use crate::detector::generator::{AttackKind, SEED_FEATURES, SampleRecord};
use crate::detector::metrics::roc_auc;
use crate::detector::model::{FitError, Model};
use crate::detector::params::ForestParams;

/// One way of judging records, measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub baseline: Baseline,
    pub seasonality: Seasonality,
    /// ROC AUC over every attack of the scored part against its normal records.
    pub overall: f64,
    /// ROC AUC of each attack kind present against the normal records.
    pub per_kind: Vec<(AttackKind, f64)>,
    /// Share of the normal scored records above the model's threshold.
    pub normal_flagged: f64,
    /// Share of the normal training records above the model's threshold.
    pub training_flagged: f64,
    /// Share of the scored attacks above the model's threshold.
    pub attacks_flagged: f64,
}

fn keys(e: &[String]) -> Vec<&str> {
    e.iter().map(String::as_str).collect()
}

/// Fits on the records before `split` and scores those from `split` on, judging them as
/// `baseline` and `seasonality` say (an entity is the record's `src_ip`).
pub fn measure(
    records: &[SampleRecord],
    split: DateTime<Utc>,
    baseline: Baseline,
    seasonality: Seasonality,
    params: &ForestParams,
) -> Result<Measured, FitError> {
    measure_tuned(
        records,
        split,
        baseline,
        seasonality,
        params,
        &Tuning::default(),
    )
}

/// [`measure`] with the entity baselines tuned as `tuning` says (global: the forest on the raw
/// features; entity: the baselines' own score, threshold 0.5).
pub fn measure_tuned(
    records: &[SampleRecord],
    split: DateTime<Utc>,
    baseline: Baseline,
    seasonality: Seasonality,
    params: &ForestParams,
    tuning: &Tuning,
) -> Result<Measured, FitError> {
    let (train, test): (Vec<&SampleRecord>, Vec<&SampleRecord>) =
        records.iter().partition(|r| r.timestamp < split);
    let matrix = |rs: &[&SampleRecord]| {
        let rows: Vec<[f64; 4]> = rs.iter().map(|r| r.features()).collect();
        Matrix::from_rows(&rows).expect("four features a record")
    };
    let entities = |rs: &[&SampleRecord]| -> Vec<String> {
        rs.iter()
            .map(|r| r.src_ip.clone().unwrap_or_default())
            .collect()
    };
    let times = |rs: &[&SampleRecord]| rs.iter().map(|r| r.timestamp).collect::<Vec<_>>();
    let names: Vec<String> = SEED_FEATURES.iter().map(|s| s.to_string()).collect();
    let (x_train, x_test) = (matrix(&train), matrix(&test));
    let (scores, train_scores, threshold) = match baseline {
        Baseline::Global => {
            let (model, train_scores) =
                Model::fit_with_scores(&x_train, names, params, None, Utc::now())?;
            (model.score(&x_test), train_scores, model.threshold())
        }
        Baseline::Entity => {
            let (e_train, e_test) = (entities(&train), entities(&test));
            let (t_train, t_test) = (times(&train), times(&test));
            let b = EntityBaselines::fit(
                &x_train,
                &keys(&e_train),
                &t_train,
                seasonality,
                super::activity_feature(&names),
                tuning,
            );
            (
                b.score(&x_test, &keys(&e_test), &t_test).0,
                b.score(&x_train, &keys(&e_train), &t_train).0,
                0.5,
            )
        }
    };
    let normal: Vec<usize> = (0..test.len()).filter(|&i| test[i].label == 0).collect();
    let auc_of = |is_positive: &dyn Fn(&SampleRecord) -> bool| {
        let idx: Vec<usize> = (0..test.len())
            .filter(|&i| test[i].label == 0 || is_positive(test[i]))
            .collect();
        let y: Vec<bool> = idx.iter().map(|&i| test[i].label == 1).collect();
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        roc_auc(&y, &s)
    };
    let mut kinds: Vec<AttackKind> = test.iter().filter_map(|r| r.attack_kind).collect();
    kinds.sort_by_key(|k| format!("{k:?}"));
    kinds.dedup();
    let per_kind = kinds
        .into_iter()
        .filter_map(|k| auc_of(&|r| r.attack_kind == Some(k)).map(|a| (k, a)))
        .collect();
    let flagged = |rows: &mut dyn Iterator<Item = f64>| {
        let (n, f) = rows.fold((0usize, 0usize), |(n, f), s| {
            (n + 1, f + usize::from(s > threshold))
        });
        f as f64 / n.max(1) as f64
    };
    Ok(Measured {
        baseline,
        seasonality,
        overall: auc_of(&|r| r.label == 1).unwrap_or(f64::NAN),
        per_kind,
        normal_flagged: flagged(&mut normal.iter().map(|&i| scores[i])),
        attacks_flagged: flagged(
            &mut (0..test.len())
                .filter(|&i| test[i].label == 1)
                .map(|i| scores[i]),
        ),
        training_flagged: flagged(
            &mut (0..train.len())
                .filter(|&i| train[i].label == 0)
                .map(|i| train_scores[i]),
        ),
    })
}
