//! The fitted model: scaler, forest, threshold and training statistics, and its file format.
//! The file format is in `model/file.rs`; fitting, scoring and explaining with entity baselines
//! in `model/entity.rs`.

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Matrix;
use super::baseline::{Baseline, EntityBaselines, Seasonality};
use super::explain::{Direction, FeatureContribution};
use super::forest::IsolationForest;
use super::params::{ForestParams, ParamError, check_feature_names};
use super::scaler::{Scaler, ScalerError};
use super::severity::severity;
use super::threshold::{contamination_threshold, percentiles_linear};

mod entity;
mod file;

pub use file::{
    FORMAT_VERSION, FORMAT_VERSION_ACTIVITY_CLASSES, FORMAT_VERSION_DAY_PROFILES,
    FORMAT_VERSION_GLOBAL, FORMAT_VERSION_HOURS_OF_WEEK, ModelFileError,
};

/// Records scored between two checks of a fit's watch or a scoring's stop check, for a forest
/// of [`BLOCK_TREES`] trees; a forest of more trees checks after proportionally fewer records
/// (at least [`MIN_BLOCK_ROWS`]), so a check comes after about the same work whatever its size.
const SCORE_BLOCK_ROWS: usize = 16_384;
const BLOCK_TREES: usize = 100;
const MIN_BLOCK_ROWS: usize = 64;

/// Records scored by a forest of `n_trees` between two checks for cancellation.
fn block_rows(n_trees: usize) -> usize {
    (SCORE_BLOCK_ROWS * BLOCK_TREES / n_trees.max(1)).clamp(MIN_BLOCK_ROWS, SCORE_BLOCK_ROWS)
}

/// What a scored batch looked like as a whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub n_records: usize,
    pub n_anomalies: usize,
    /// n_anomalies / n_records.
    pub anomaly_rate: f64,
    /// The model threshold in force: a record is anomalous when score > threshold.
    pub threshold: f64,
    /// Highest severity in the batch (0 when empty).
    pub max_severity: u8,
}

/// One feature's distribution in the training data, in original units: the mean, the
/// population standard deviation (ddof = 0), the extremes, and the 5th, 50th and 95th
/// percentiles (`p05`..`p95` is the normal range explanations use).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    pub name: String,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p05: f64,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
}

/// Everything about a model except its trees: what `GET /v1/model` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Version number, increasing with each fit; 0 until the model is stored.
    pub version: u64,
    pub trained_at: DateTime<Utc>,
    /// Feature names, in the order the model reads them.
    pub features: Vec<String>,
    pub params: ForestParams,
    /// A record is anomalous when its score is strictly greater than this.
    pub threshold: f64,
    /// Where the threshold came from.
    pub threshold_source: ThresholdSource,
    pub n_training_records: usize,
    /// Share of training records above the threshold.
    pub training_anomaly_rate: f64,
    /// Wall-clock seconds the fit took (scaling, trees, threshold, statistics).
    pub fit_seconds: f64,
    /// Training distribution of each feature.
    pub feature_stats: Vec<FeatureStats>,
    /// `entity` when records are judged against their entity's baseline (absent: `global`).
    #[serde(default, skip_serializing_if = "is_global")]
    pub baseline: Baseline,
    /// The entity baseline's seasonality (absent: `none`).
    #[serde(default, skip_serializing_if = "is_none_seasonality")]
    pub seasonality: Seasonality,
    /// The string field naming each record's entity (entity baselines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_field: Option<String>,
    /// Records of the training data left out because a suppression rule matched them (0 in
    /// files written before it was counted).
    #[serde(default)]
    pub suppressed_records: usize,
}

fn is_global(b: &Baseline) -> bool {
    *b == Baseline::Global
}

fn is_none_seasonality(s: &Seasonality) -> bool {
    *s == Seasonality::None
}

/// The part of a model fitted with `baseline=entity`: which field names the entity, and every
/// entity's bands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityPart {
    pub field: String,
    pub baselines: EntityBaselines,
}

/// How a model's threshold was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSource {
    /// `contamination: "auto"`: 0.5, the paper's cut-off.
    Auto,
    /// A contamination fraction: that quantile of the training scores.
    Contamination,
    /// A score given at fit time (for example the one `POST /v1/evaluate` found for a false-alert budget).
    Fixed,
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("the matrix has {got} columns but {expected} feature names were given")]
    FeatureCount { expected: usize, got: usize },
    #[error("record {index}: feature {feature:?} is not a finite number")]
    NonFinite { index: usize, feature: String },
    #[error(transparent)]
    Scaler(#[from] ScalerError),
    /// Values too large (or too small) for the training statistics to be finite numbers, which
    /// the model keeps and its file must be able to hold.
    #[error(
        "feature {feature:?}: its {statistic} over the training records is not a finite number \
         (values too far from zero to represent, such as magnitudes above about 1e153); \
         rescale the feature or leave it out"
    )]
    Unrepresentable {
        feature: String,
        statistic: &'static str,
    },
    #[error("threshold must be a score between 0 and 1, got {0}")]
    Threshold(f64),
    /// The fit's [`FitWatch`](super::forest::FitWatch) asked it to stop.
    #[error("the fit was cancelled")]
    Cancelled,
    /// Training data that cannot separate anything: the model would score every record alike.
    #[error(transparent)]
    Insufficient(#[from] InsufficientData),
}

/// Fewest training records a fit accepts.
///
/// Each tree is grown on ψ = min(256, n) rows and stops at depth ⌈log₂ ψ⌉. From 8 rows on, a
/// tree reaches depth 3, so an isolated record (one split) and a typical one (three) differ
/// clearly in path length; below that the paths are one or two splits long, every score sits
/// near 0.5 and which records come out on top is chance (with one record every score is exactly
/// 0.5, and nothing is ever flagged).
pub const MIN_TRAINING_RECORDS: usize = 8;

/// Why training data cannot make a useful model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InsufficientData {
    #[error(
        "{got} training records are too few: a fit needs at least {min} to tell unusual \
         records from usual ones (with fewer, every score is close to 0.5)"
    )]
    TooFewRecords { got: usize, min: usize },
    #[error(
        "every feature is constant over the {n_records} training records, so no record can be \
         told from another and every score would be 0.5; train on data that varies"
    )]
    Constant { n_records: usize },
    #[error(
        "no entity has the {min} training records an entity baseline needs: send more history \
         per entity, or fit with baseline=global"
    )]
    NoEntityHistory { min: usize },
}

/// Refuses training data a forest cannot learn anything from: fewer than
/// [`MIN_TRAINING_RECORDS`] records, or every column constant.
pub fn check_training_data(x: &Matrix) -> Result<(), InsufficientData> {
    if x.n_rows() < MIN_TRAINING_RECORDS {
        return Err(InsufficientData::TooFewRecords {
            got: x.n_rows(),
            min: MIN_TRAINING_RECORDS,
        });
    }
    let first = x.row(0);
    if x.rows().all(|r| r == first) {
        return Err(InsufficientData::Constant {
            n_records: x.n_rows(),
        });
    }
    Ok(())
}

/// A fitted model, ready to score.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    meta: ModelMeta,
    scaler: Scaler,
    forest: IsolationForest,
    entity: Option<EntityPart>,
}

/// Rows scaled per work unit when scoring: small enough to stay in cache, large enough to
/// amortise the per-chunk overhead.
const SCORE_CHUNK_ROWS: usize = 4096;

/// What a fit reads: the training records (`x`) and their feature names, the forest's
/// settings, a fixed score threshold overriding `params.contamination`, the training time, and
/// what watches the fit (progress, cancellation).
pub struct FitInput<'a> {
    pub x: &'a Matrix,
    pub features: Vec<String>,
    pub params: &'a ForestParams,
    pub fixed_threshold: Option<f64>,
    pub trained_at: DateTime<Utc>,
    pub watch: &'a dyn super::forest::FitWatch,
}

/// What entity baselines read besides a [`FitInput`]: the field naming the entity, each
/// training row's entity and time, and the seasonality of the bands.
pub struct EntityInput<'a> {
    pub field: &'a str,
    pub entities: &'a [&'a str],
    pub times: &'a [DateTime<Utc>],
    pub seasonality: Seasonality,
}

impl Model {
    /// Fits scaler, forest and threshold on raw (unscaled) training data.
    pub fn fit(
        x: &Matrix,
        features: Vec<String>,
        params: &ForestParams,
        trained_at: DateTime<Utc>,
    ) -> Result<Model, FitError> {
        Self::fit_with_scores(x, features, params, None, trained_at).map(|(m, _)| m)
    }

    /// [`Model::fit`] with an optional fixed score threshold (which overrides `contamination`),
    /// also returning the training records' scores (computed anyway for the threshold).
    pub fn fit_with_scores(
        x: &Matrix,
        features: Vec<String>,
        params: &ForestParams,
        fixed_threshold: Option<f64>,
        trained_at: DateTime<Utc>,
    ) -> Result<(Model, Vec<f64>), FitError> {
        Self::fit_watched(FitInput {
            x,
            features,
            params,
            fixed_threshold,
            trained_at,
            watch: &super::forest::Unwatched,
        })
    }

    /// [`Model::fit_with_scores`] reporting each tree grown to `watch`, and stopping with
    /// [`FitError::Cancelled`] when it asks.
    pub fn fit_watched(input: FitInput<'_>) -> Result<(Model, Vec<f64>), FitError> {
        let FitInput {
            x,
            features,
            params,
            fixed_threshold,
            trained_at,
            watch,
        } = input;
        let started = std::time::Instant::now();
        if let Some(t) = fixed_threshold {
            if !(t.is_finite() && t > 0.0 && t < 1.0) {
                return Err(FitError::Threshold(t));
            }
        }
        check_feature_names(&features)?;
        if features.len() != x.n_cols() {
            return Err(FitError::FeatureCount {
                expected: features.len(),
                got: x.n_cols(),
            });
        }
        let checked = params.check(x.n_rows(), x.n_cols())?;
        if let Some(pos) = x.as_slice().iter().position(|v| !v.is_finite()) {
            return Err(FitError::NonFinite {
                index: pos / x.n_cols(),
                feature: features[pos % x.n_cols()].clone(),
            });
        }
        check_training_data(x)?;
        let scaler = Scaler::fit(x)?;
        check_scaler(&scaler, &features)?;
        let scaled = scaler.transform(x);
        let forest =
            IsolationForest::fit_watched(&scaled, &checked, watch).ok_or(FitError::Cancelled)?;
        // Scored in blocks, asking between them: with many trees and rows this takes longer
        // than growing the trees did.
        let n_cols = scaled.n_cols();
        let mut training_scores = vec![f64::NAN; scaled.n_rows()];
        let block = block_rows(forest.n_trees());
        for (b, out) in training_scores.chunks_mut(block).enumerate() {
            if watch.stop() {
                return Err(FitError::Cancelled);
            }
            let first = b * block * n_cols;
            forest.score_into(&scaled.as_slice()[first..first + out.len() * n_cols], out);
        }
        if watch.stop() {
            return Err(FitError::Cancelled);
        }
        drop(scaled);
        let (threshold, threshold_source) = match (fixed_threshold, checked.contamination) {
            (Some(t), _) => (t, ThresholdSource::Fixed),
            (None, Some(c)) => (
                contamination_threshold(&training_scores, c),
                ThresholdSource::Contamination,
            ),
            (None, None) => (0.5, ThresholdSource::Auto),
        };
        let n_flagged = training_scores.iter().filter(|&&s| s > threshold).count();
        let feature_stats = feature_stats(x, &features, &scaler);
        check_stats(&feature_stats)?;
        let meta = ModelMeta {
            version: 0,
            trained_at,
            features,
            params: params.clone(),
            threshold,
            threshold_source,
            n_training_records: x.n_rows(),
            training_anomaly_rate: n_flagged as f64 / x.n_rows() as f64,
            fit_seconds: 0.0,
            feature_stats,
            baseline: Baseline::Global,
            seasonality: Seasonality::None,
            entity_field: None,
            suppressed_records: 0,
        };
        let mut model = Model {
            meta,
            scaler,
            forest,
            entity: None,
        };
        model.meta.fit_seconds = started.elapsed().as_secs_f64();
        Ok((model, training_scores))
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Notes how many records of the training data were left out before the fit.
    pub fn set_suppressed_records(&mut self, n: usize) {
        self.meta.suppressed_records = n;
    }

    pub fn version(&self) -> u64 {
        self.meta.version
    }

    pub fn features(&self) -> &[String] {
        &self.meta.features
    }

    pub fn threshold(&self) -> f64 {
        self.meta.threshold
    }

    /// Stamps the version the store assigned.
    pub fn set_version(&mut self, version: u64) {
        self.meta.version = version;
    }

    /// Anomaly scores of raw rows, in (0, 1]; higher is more anomalous. Parallel, deterministic.
    pub fn score(&self, x: &Matrix) -> Vec<f64> {
        let mut out = vec![0.0; x.n_rows()];
        self.score_into(x.as_slice(), &mut out);
        out
    }

    /// Scores raw row-major `rows` into `out`, scaling a chunk at a time so no scaled copy of the
    /// whole batch is ever held.
    pub fn score_into(&self, rows: &[f64], out: &mut [f64]) {
        let d = self.scaler.n_features();
        if rows.len() <= super::SEQUENTIAL_RECORDS * d {
            // A small batch: on this thread, scaled in one go.
            let mut buf = vec![0.0; rows.len()];
            self.scaler.transform_into(rows, &mut buf);
            self.forest.score_into(&buf, out);
            return;
        }
        rows.par_chunks(SCORE_CHUNK_ROWS * d)
            .zip(out.par_chunks_mut(SCORE_CHUNK_ROWS))
            .for_each_init(Vec::new, |buf: &mut Vec<f64>, (chunk, out)| {
                buf.resize(chunk.len(), 0.0);
                self.scaler.transform_into(chunk, buf);
                self.forest.score_into(buf, out);
            });
    }

    /// [`score_into`](Self::score_into) a block of records at a time, asking `stop` before each
    /// block (a block is about the work of 16,384 records under 100 trees): `false` when it
    /// stopped, with the records after the last block scored left as they were in `out`.
    pub fn score_watched(&self, rows: &[f64], out: &mut [f64], stop: &dyn Fn() -> bool) -> bool {
        let d = self.scaler.n_features().max(1);
        let block = block_rows(self.forest.n_trees());
        for (rows, out) in rows.chunks(block * d).zip(out.chunks_mut(block)) {
            if stop() {
                return false;
            }
            self.score_into(rows, out);
        }
        true
    }

    /// Whether a score is anomalous under this model's threshold (strictly greater).
    pub fn is_anomaly(&self, score: f64) -> bool {
        score > self.meta.threshold
    }

    /// The `top_k` features that drove a raw record's score, most important first.
    ///
    /// Attribution is the forest's depth-weighted split attribution (see
    /// [`IsolationForest::attribution`]); values and normal ranges are in original units.
    /// Features that took no part in isolating the record are left out.
    pub fn explain(&self, row: &[f64], top_k: usize) -> Vec<FeatureContribution> {
        let scaled = self.scaler.transform_row(row);
        let weights = self.forest.attribution(&scaled);
        self.contributions(row, &weights, top_k)
    }

    /// [`explain`](Self::explain) for the records of `x` at `rows`, in that order: the forest
    /// explains them together ([`IsolationForest::attributions`]), faster than one at a time.
    pub fn explain_rows(
        &self,
        x: &Matrix,
        rows: &[usize],
        top_k: usize,
    ) -> Vec<Vec<FeatureContribution>> {
        let d = x.n_cols();
        let mut scaled = vec![0.0; rows.len() * d];
        for (&i, out) in rows.iter().zip(scaled.chunks_exact_mut(d)) {
            self.scaler.transform_into(x.row(i), out);
        }
        let weights = self.forest.attributions(&scaled);
        rows.iter()
            .zip(weights.chunks_exact(d))
            .map(|(&i, w)| self.contributions(x.row(i), w, top_k))
            .collect()
    }

    /// The `top_k` features with the largest attribution `weights` for raw `row`.
    fn contributions(
        &self,
        row: &[f64],
        weights: &[f64],
        top_k: usize,
    ) -> Vec<FeatureContribution> {
        let mut order: Vec<usize> = (0..weights.len()).filter(|&j| weights[j] > 0.0).collect();
        // Stable sort by weight, ties broken by feature order, so explanations are reproducible.
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        order
            .into_iter()
            .take(top_k)
            .map(|j| {
                let stats = &self.meta.feature_stats[j];
                let value = row[j];
                let direction = if value > stats.p95 {
                    Direction::Above
                } else if value < stats.p05 {
                    Direction::Below
                } else {
                    Direction::Within
                };
                FeatureContribution {
                    feature: stats.name.clone(),
                    value,
                    direction,
                    contribution: weights[j],
                    normal_range: [stats.p05, stats.p95],
                    expected: None,
                    band: None,
                    summary: None,
                }
            })
            .collect()
    }

    /// Summary of a scored batch under this model.
    pub fn summarize(&self, scores: &[f64]) -> BatchSummary {
        let n_anomalies = scores.iter().filter(|&&s| self.is_anomaly(s)).count();
        let max_severity = scores.iter().map(|&s| severity(s)).max().unwrap_or(0);
        BatchSummary {
            n_records: scores.len(),
            n_anomalies,
            anomaly_rate: if scores.is_empty() {
                0.0
            } else {
                n_anomalies as f64 / scores.len() as f64
            },
            threshold: self.meta.threshold,
            max_severity,
        }
    }
}

/// Every mean and scale the scaler learned is finite (and the scale not zero): values whose
/// variance overflows would otherwise be stored as `null` and the model would never load again.
fn check_scaler(scaler: &Scaler, features: &[String]) -> Result<(), FitError> {
    let stds = scaler.stds();
    for (j, feature) in features.iter().enumerate() {
        let statistic = if !scaler.means()[j].is_finite() {
            "mean"
        } else if !(stds[j].is_finite() && stds[j] > 0.0) {
            "standard deviation"
        } else {
            continue;
        };
        return Err(FitError::Unrepresentable {
            feature: feature.clone(),
            statistic,
        });
    }
    Ok(())
}

/// Every statistic the model keeps for explanations is finite.
fn check_stats(stats: &[FeatureStats]) -> Result<(), FitError> {
    for s in stats {
        let named = [
            ("mean", s.mean),
            ("standard deviation", s.std),
            ("minimum", s.min),
            ("5th percentile", s.p05),
            ("median", s.median),
            ("95th percentile", s.p95),
            ("maximum", s.max),
        ];
        if let Some((statistic, _)) = named.iter().find(|(_, v)| !v.is_finite()) {
            return Err(FitError::Unrepresentable {
                feature: s.name.clone(),
                statistic,
            });
        }
    }
    Ok(())
}

fn feature_stats(x: &Matrix, names: &[String], scaler: &Scaler) -> Vec<FeatureStats> {
    let stds = scaler.stds();
    (0..x.n_cols())
        .into_par_iter()
        .map(|j| {
            let col: Vec<f64> = x.column(j).collect();
            let (min, max) = col
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let std = if col.iter().all(|&v| v == col[0]) {
                0.0
            } else {
                stds[j]
            };
            // The column copy is the one selection buffer for all three percentiles.
            let q = percentiles_linear(col, &[5.0, 50.0, 95.0]);
            FeatureStats {
                name: names[j].clone(),
                mean: scaler.means()[j],
                std,
                min,
                p05: q[0],
                median: q[1],
                p95: q[2],
                max,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit_scaled(scale: f64) -> Result<Model, FitError> {
        let rows: Vec<[f64; 2]> = (0..64)
            .map(|i| [f64::from(i) * scale, f64::from(i % 7)])
            .collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let names = vec!["huge".to_string(), "small".to_string()];
        Model::fit(&x, names, &ForestParams::default(), Utc::now())
    }

    #[test]
    fn values_whose_statistics_overflow_are_refused_naming_the_feature() {
        // 63e200 squared overflows: the variance is not a finite number.
        match fit_scaled(1e200) {
            Err(FitError::Unrepresentable { feature, statistic }) => {
                assert_eq!(feature, "huge");
                assert_eq!(statistic, "standard deviation");
            }
            other => panic!("expected Unrepresentable, got {other:?}"),
        }
        // Near f64::MAX even the mean overflows.
        assert!(matches!(
            fit_scaled(1e306),
            Err(FitError::Unrepresentable {
                statistic: "mean",
                ..
            })
        ));
    }

    fn fit_rows(rows: &[[f64; 2]]) -> Result<Model, FitError> {
        let x = Matrix::from_rows(rows).unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        Model::fit(&x, names, &ForestParams::default(), Utc::now())
    }

    #[test]
    fn too_few_records_are_refused_and_the_minimum_fits() {
        let rows: Vec<[f64; 2]> = (0..MIN_TRAINING_RECORDS)
            .map(|i| [i as f64, (i % 3) as f64])
            .collect();
        for n in [1, MIN_TRAINING_RECORDS - 1] {
            assert_eq!(
                fit_rows(&rows[..n]).unwrap_err(),
                FitError::Insufficient(InsufficientData::TooFewRecords {
                    got: n,
                    min: MIN_TRAINING_RECORDS
                })
            );
        }
        let model = fit_rows(&rows).expect("the minimum fits");
        // And it tells records apart: an outlier scores above every training record.
        let train = model.score(&Matrix::from_rows(&rows).unwrap());
        let far = model.score(&Matrix::from_rows(&[[1e6, -1e6]]).unwrap())[0];
        assert!(train.iter().all(|&s| s < far), "{train:?} vs {far}");
    }

    #[test]
    fn constant_data_is_refused_but_one_varying_feature_is_enough() {
        let constant = vec![[3.0, 7.0]; 100];
        assert_eq!(
            fit_rows(&constant).unwrap_err(),
            FitError::Insufficient(InsufficientData::Constant { n_records: 100 })
        );
        let mut one_varies = constant.clone();
        one_varies[10][1] = 8.0;
        assert!(fit_rows(&one_varies).is_ok());
    }

    #[test]
    fn large_but_finite_values_fit_and_their_file_decodes() {
        let model = fit_scaled(1e150).expect("finite statistics");
        let back = Model::from_bytes(&model.to_bytes()).expect("the file decodes");
        assert_eq!(back.meta(), model.meta());
        assert!(back.meta().feature_stats[0].std > 1e150);
    }

    #[test]
    fn scoring_asks_to_stop_between_blocks_and_stops_there() {
        let rows: Vec<[f64; 2]> = (0..3000)
            .map(|i| [f64::from(i % 101), f64::from(i % 7)])
            .collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let params = ForestParams {
            n_estimators: 1000,
            ..ForestParams::default()
        };
        let names = vec!["a".to_string(), "b".to_string()];
        let model = Model::fit(&x, names, &params, Utc::now()).unwrap();
        // 1,000 trees: a check every 1,638 records, so two blocks.
        let block = block_rows(1000);
        assert_eq!(block, 1638);
        let all = model.score(&x);
        let mut out = vec![f64::NAN; 3000];
        let asked = std::cell::Cell::new(0);
        assert!(model.score_watched(x.as_slice(), &mut out, &|| {
            asked.set(asked.get() + 1);
            false
        }));
        assert_eq!((out.clone(), asked.get()), (all.clone(), 2));
        // Asked to stop before the second block: the first is scored, the rest is not.
        let mut out = vec![f64::NAN; 3000];
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() > 1
        };
        assert!(!model.score_watched(x.as_slice(), &mut out, &stop));
        assert_eq!(out[..block], all[..block]);
        assert!(out[block..].iter().all(|s| s.is_nan()));
    }
}
