//! The fitted model: scaler, forest, threshold and training statistics, and its file format.
//!
//! File format (all integers little-endian):
//!
//! ```text
//! "NSMODEL\0" | format u32 | meta_len u64 | meta (JSON) | body_len u64 | body (postcard: scaler, forest) | sha256 of all before (32 bytes)
//! ```
//!
//! Format 1 is every `baseline=global` model (as before entity baselines); a model with entity
//! baselines is format 5, whose body is (scaler, forest, [`EntityPart`]). Format 2 (entity
//! baselines whose weekly bands were one bucket per hour of the week, before day profiles),
//! format 3 (day profiles, before activity classes: every deviation the root of the sum of
//! squares) and format 4 (activity classes, before the matched test of the activity rising
//! alone) still load and score as they did. All five load.
//!
//! The metadata is JSON so an operator can read it with `strings`; the trees are binary for size.
//! Any truncation or altered byte fails the checksum and is a typed [`ModelFileError`].

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Matrix;
use super::baseline::{
    Baseline, BaselinesFormat2, BaselinesFormat3, BaselinesFormat4, EntityBaselines, Judged,
    Seasonality, Test, activity_feature,
};
use super::explain::{BandContext, Direction, FeatureContribution, summary_line};
use super::forest::IsolationForest;
use super::params::{ForestParams, ParamError, check_feature_names};
use super::scaler::{Scaler, ScalerError};
use super::severity::severity;
use super::threshold::{contamination_threshold, percentiles_linear};

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

    /// [`Model::fit_watched`] with entity baselines: the forest and statistics as for a global
    /// model, plus every entity's bands (`entities[i]`, `times[i]` of row `i`); records are then
    /// scored by the baselines ([`Model::score_entities`]) and the threshold is the baselines'
    /// calibrated 0.5 unless `fixed_threshold` says otherwise. Returns the training scores.
    pub fn fit_entity(
        input: FitInput<'_>,
        entity: EntityInput<'_>,
    ) -> Result<(Model, Vec<f64>), FitError> {
        let started = std::time::Instant::now();
        let (x, fixed_threshold) = (input.x, input.fixed_threshold);
        let EntityInput {
            field,
            entities,
            times,
            seasonality,
        } = entity;
        let activity = activity_feature(&input.features);
        let (mut model, _) = Self::fit_watched(input)?;
        let baselines = EntityBaselines::fit(x, entities, times, seasonality, activity);
        if baselines.n_entities() == 0 {
            return Err(FitError::Insufficient(InsufficientData::NoEntityHistory {
                min: super::baseline::MIN_ENTITY_RECORDS,
            }));
        }
        let (scores, _) = baselines.score(x, entities, times);
        let threshold = fixed_threshold.unwrap_or(0.5);
        let flagged = scores.iter().filter(|&&s| s > threshold).count();
        model.meta.threshold = threshold;
        model.meta.threshold_source = if fixed_threshold.is_some() {
            ThresholdSource::Fixed
        } else {
            ThresholdSource::Auto
        };
        model.meta.training_anomaly_rate = flagged as f64 / x.n_rows().max(1) as f64;
        model.meta.baseline = Baseline::Entity;
        model.meta.seasonality = seasonality;
        model.meta.entity_field = Some(field.to_owned());
        model.entity = Some(EntityPart {
            field: field.to_owned(),
            baselines,
        });
        model.meta.fit_seconds += started.elapsed().as_secs_f64();
        Ok((model, scores))
    }

    /// The entity part, for a model fitted with `baseline=entity`.
    pub fn entity(&self) -> Option<&EntityPart> {
        self.entity.as_ref()
    }

    /// Scores raw records against their entities' baselines (`entities[i]`, `times[i]` of row
    /// `i`), and says for each whether its own baseline judged it or the global fallback; a
    /// model without entity baselines scores them with the forest, all `Own`.
    pub fn score_entities(
        &self,
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
    ) -> (Vec<f64>, Vec<Judged>) {
        match &self.entity {
            Some(e) => e.baselines.score(x, entities, times),
            None => (self.score(x), vec![Judged::Own; x.n_rows()]),
        }
    }

    /// [`explain`](Self::explain) in the entity's terms: each feature's share of the record's
    /// deviation from its entity's bands at `t`, its `normal_range` the entity's usual band
    /// there (median ± 2 scales, [`EntityBaselines::expected`]) and its direction relative to
    /// that band. Falls back to [`explain`](Self::explain) without entity baselines.
    pub fn explain_entity(
        &self,
        row: &[f64],
        entity: &str,
        t: DateTime<Utc>,
        top_k: usize,
    ) -> Vec<FeatureContribution> {
        let Some(e) = &self.entity else {
            return self.explain(row, top_k);
        };
        let b = &e.baselines;
        let (weights, judged, test) = b.explain(row, entity, t);
        let mut out = self.contributions(row, &weights, top_k);
        let ctx = BandContext {
            entity: (judged == Judged::Own).then_some(entity),
            when: match b.seasonality() {
                Seasonality::None => None,
                Seasonality::Daily => Some(t.format("%H:00").to_string()),
                Seasonality::Weekly => Some(t.format("%a %H:00").to_string()),
            },
        };
        for c in &mut out {
            let j = self
                .meta
                .features
                .iter()
                .position(|f| *f == c.feature)
                .expect("an explained feature is one of the model's");
            let (expected, band) = b.expected(entity, t, j);
            c.direction = if c.value > band[1] {
                Direction::Above
            } else if c.value < band[0] {
                Direction::Below
            } else {
                Direction::Within
            };
            c.normal_range = band;
            c.expected = Some(expected);
            c.band = Some(band);
            c.summary = Some(summary_line(&c.feature, c.value, band, &ctx));
        }
        // When the matched test decided the score, the activity feature's line says so (the
        // first line's, if the activity feature is not explained).
        if test == Test::ActivityAlone {
            let activity = b.matched_feature().map(|j| self.meta.features[j].as_str());
            let at = out
                .iter()
                .position(|c| Some(c.feature.as_str()) == activity)
                .unwrap_or(0);
            if let (Some(c), Some(activity)) = (out.get_mut(at), activity) {
                let line = c.summary.get_or_insert_with(String::new);
                line.push_str(&alone_line(activity, &self.meta.features));
            }
        }
        out
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

    /// Encodes the model in the versioned, checksummed file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("model metadata always serialises");
        let (format, body) = match &self.entity {
            None => (
                FORMAT_VERSION_GLOBAL,
                postcard::to_stdvec(&(&self.scaler, &self.forest)),
            ),
            Some(e) => (
                FORMAT_VERSION,
                postcard::to_stdvec(&(&self.scaler, &self.forest, e)),
            ),
        };
        let body = body.expect("scaler, forest and baselines always serialise");
        let mut out = Vec::with_capacity(8 + 4 + 16 + meta.len() + body.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Decodes a model file; any damage is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelFileError> {
        if bytes.len() < MAGIC.len() + 4 + 8 + 8 + 32 {
            return Err(ModelFileError::Truncated);
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(ModelFileError::NotAModel);
        }
        let (content, digest) = bytes.split_at(bytes.len() - 32);
        let mut cursor = Cursor {
            bytes: content,
            pos: MAGIC.len(),
        };
        let format = u32::from_le_bytes(cursor.take_array()?);
        if ![
            FORMAT_VERSION,
            FORMAT_VERSION_GLOBAL,
            FORMAT_VERSION_HOURS_OF_WEEK,
            FORMAT_VERSION_DAY_PROFILES,
            FORMAT_VERSION_ACTIVITY_CLASSES,
        ]
        .contains(&format)
        {
            return Err(ModelFileError::UnsupportedFormat(format));
        }
        if Sha256::digest(content).as_slice() != digest {
            return Err(ModelFileError::Checksum);
        }
        let meta_len = u64::from_le_bytes(cursor.take_array()?);
        let meta: ModelMeta = serde_json::from_slice(cursor.take(meta_len)?)
            .map_err(|e| ModelFileError::Decode(format!("metadata: {e}")))?;
        let body_len = u64::from_le_bytes(cursor.take_array()?);
        let body = cursor.take(body_len)?;
        let decode = |e: postcard::Error| ModelFileError::Decode(format!("trees: {e}"));
        let (scaler, forest, entity) = if format == FORMAT_VERSION_GLOBAL {
            let (scaler, forest): (Scaler, IsolationForest) =
                postcard::from_bytes(body).map_err(decode)?;
            (scaler, forest, None)
        } else if format == FORMAT_VERSION_HOURS_OF_WEEK {
            earlier_entity_body::<BaselinesFormat2>(body).map_err(decode)?
        } else if format == FORMAT_VERSION_DAY_PROFILES {
            earlier_entity_body::<BaselinesFormat3>(body).map_err(decode)?
        } else if format == FORMAT_VERSION_ACTIVITY_CLASSES {
            earlier_entity_body::<BaselinesFormat4>(body).map_err(decode)?
        } else {
            let (scaler, forest, entity): (Scaler, IsolationForest, EntityPart) =
                postcard::from_bytes(body).map_err(decode)?;
            (scaler, forest, Some(entity))
        };
        if cursor.pos != content.len() {
            return Err(ModelFileError::Decode(
                "trailing bytes after the trees".into(),
            ));
        }
        let d = meta.features.len();
        if scaler.n_features() != d
            || forest.n_features() != d
            || meta.feature_stats.len() != d
            || entity
                .as_ref()
                .is_some_and(|e| e.baselines.n_features() != d)
        {
            return Err(ModelFileError::Decode(
                "feature count differs between metadata, scaler and trees".into(),
            ));
        }
        Ok(Model {
            meta,
            scaler,
            forest,
            entity,
        })
    }
}

/// What the matched test found, in words, after the activity feature's line: `; the matched
/// test decided: more connections than usual with less bytes_sent, bytes_received,
/// active_sessions per connection (the signature of check-ins such as beaconing)`.
fn alone_line(activity: &str, features: &[String]) -> String {
    let others: Vec<&str> = features
        .iter()
        .map(String::as_str)
        .filter(|f| *f != activity)
        .collect();
    format!(
        "; the matched test decided: more {activity} than usual with less {} per {} \
         (the signature of check-ins such as beaconing)",
        others.join(", "),
        activity.strip_suffix('s').unwrap_or(activity)
    )
}

/// The body of an entity model of an earlier format, whose baselines read as `B`, converted.
fn earlier_entity_body<B>(
    body: &[u8],
) -> Result<(Scaler, IsolationForest, Option<EntityPart>), postcard::Error>
where
    B: serde::de::DeserializeOwned + Into<EntityBaselines>,
{
    let (scaler, forest, (field, old)): (Scaler, IsolationForest, (String, B)) =
        postcard::from_bytes(body)?;
    let baselines = old.into();
    Ok((scaler, forest, Some(EntityPart { field, baselines })))
}

const MAGIC: &[u8; 8] = b"NSMODEL\0";
/// Bumped whenever the layout or the meaning of a field changes: the format of a model with
/// entity baselines (format 5: beside the activity classes, the matched test of the activity
/// rising alone, its weights and calibration).
pub const FORMAT_VERSION: u32 = 5;
/// The format of a model with entity baselines before the matched test (the signals' second
/// moments per activity class; every score the omnibus deviation's): read, never written.
pub const FORMAT_VERSION_ACTIVITY_CLASSES: u32 = 4;
/// The format of a model with entity baselines before activity classes (weekly bands as day
/// profiles, every deviation the root of the sum of squares): read, never written.
pub const FORMAT_VERSION_DAY_PROFILES: u32 = 3;
/// The format of a model with entity baselines before day profiles (one weekly bucket per hour
/// of the week): read, never written.
pub const FORMAT_VERSION_HOURS_OF_WEEK: u32 = 2;
/// The format of a model without entity baselines (unchanged since format 1, which every build
/// since reads and writes for them).
pub const FORMAT_VERSION_GLOBAL: u32 = 1;

/// Why a model file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelFileError {
    #[error("the file is truncated")]
    Truncated,
    #[error("not a netsentinel model file (bad magic bytes)")]
    NotAModel,
    #[error(
        "model file format {0} is not supported by this build (expects {FORMAT_VERSION_GLOBAL} to {FORMAT_VERSION})"
    )]
    UnsupportedFormat(u32),
    #[error("checksum mismatch: the file was altered or partly written")]
    Checksum,
    #[error("the file passed its checksum but could not be decoded: {0}")]
    Decode(String),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: u64) -> Result<&'a [u8], ModelFileError> {
        let len = usize::try_from(len).map_err(|_| ModelFileError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(ModelFileError::Truncated)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(ModelFileError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ModelFileError> {
        let slice = self.take(N as u64)?;
        slice.try_into().map_err(|_| ModelFileError::Truncated)
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

#[cfg(test)]
mod entity_tests {
    use super::*;
    use crate::detector::generator::network::HostKind;
    use crate::detector::generator::{GeneratorConfig, SEED_FEATURES, generate};
    use chrono::{TimeDelta, Timelike};

    /// An entity model fitted on three days of the network profile (20 hosts), and the fourth
    /// day's records.
    fn fitted() -> (Model, Vec<crate::detector::generator::SampleRecord>) {
        let cfg = GeneratorConfig::network(20, 4, 0.0, 3);
        let records = generate(&cfg).unwrap();
        let split = cfg.start + TimeDelta::days(3);
        let (train, test): (Vec<_>, Vec<_>) =
            records.into_iter().partition(|r| r.timestamp < split);
        let rows: Vec<[f64; 4]> = train.iter().map(|r| r.features()).collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let entities: Vec<&str> = train.iter().map(|r| r.src_ip.as_deref().unwrap()).collect();
        let times: Vec<_> = train.iter().map(|r| r.timestamp).collect();
        let names = SEED_FEATURES.iter().map(|s| s.to_string()).collect();
        let (model, scores) = Model::fit_entity(
            FitInput {
                x: &x,
                features: names,
                params: &ForestParams::default(),
                fixed_threshold: None,
                trained_at: Utc::now(),
                watch: &crate::detector::forest::Unwatched,
            },
            EntityInput {
                field: "src_ip",
                entities: &entities,
                times: &times,
                seasonality: Seasonality::Daily,
            },
        )
        .unwrap();
        assert_eq!(scores.len(), x.n_rows());
        (model, test)
    }

    #[test]
    fn an_entity_model_is_format_5_and_round_trips_and_a_global_one_stays_format_1() {
        let (model, test) = fitted();
        assert_eq!(model.meta().baseline, Baseline::Entity);
        assert_eq!(model.meta().entity_field.as_deref(), Some("src_ip"));
        assert_eq!(model.threshold(), 0.5);
        assert!(model.meta().training_anomaly_rate <= 0.01);
        let bytes = model.to_bytes();
        assert_eq!(bytes[8..12], 5u32.to_le_bytes());
        assert!(model.entity().unwrap().baselines.has_activity_classes());
        assert!(model.entity().unwrap().baselines.has_matched_test());
        let back = Model::from_bytes(&bytes).unwrap();
        assert_eq!(back, model);
        let rows: Vec<[f64; 4]> = test.iter().take(500).map(|r| r.features()).collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let e: Vec<&str> = test
            .iter()
            .take(500)
            .map(|r| r.src_ip.as_deref().unwrap())
            .collect();
        let t: Vec<_> = test.iter().take(500).map(|r| r.timestamp).collect();
        assert_eq!(
            back.score_entities(&x, &e, &t),
            model.score_entities(&x, &e, &t)
        );
        // A global model's file is the format every earlier build reads, and its meta JSON
        // carries no baseline fields.
        let global = Model::fit(
            &x,
            model.features().to_vec(),
            &ForestParams::default(),
            Utc::now(),
        )
        .unwrap();
        let bytes = global.to_bytes();
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        let meta = serde_json::to_string(global.meta()).unwrap();
        assert!(
            !meta.contains("baseline") && !meta.contains("entity_field"),
            "{meta}"
        );
        assert_eq!(Model::from_bytes(&bytes).unwrap(), global);
    }

    #[test]
    fn an_unseen_entity_falls_back_to_the_population_and_says_so() {
        let (model, test) = fitted();
        let r = &test[0];
        let x = Matrix::from_rows(&[r.features(), r.features()]).unwrap();
        let t = [r.timestamp, r.timestamp];
        let (scores, judged) =
            model.score_entities(&x, &[r.src_ip.as_deref().unwrap(), "10.9.9.9"], &t);
        assert_eq!(judged, [Judged::Own, Judged::GlobalFallback]);
        assert!(scores.iter().all(|s| (0.0..1.0).contains(s)));
    }

    #[test]
    fn night_activity_of_a_day_host_is_flagged_and_explained_against_its_hours_band() {
        let (model, test) = fitted();
        let hosts = crate::detector::generator::network::hosts(20, 3);
        let ws = hosts
            .iter()
            .find(|h| h.kind == HostKind::Workstation)
            .unwrap();
        let of_ws = |hour: u32| {
            test.iter()
                .find(|r| r.src_ip.as_deref() == Some(&ws.ip) && r.timestamp.hour() == hour)
                .unwrap()
        };
        let (noon, night) = (of_ws(13), of_ws(3));
        // The noon window's values, at 03:00.
        let x = Matrix::from_rows(&[noon.features(), noon.features()]).unwrap();
        let (scores, _) = model.score_entities(
            &x,
            &[ws.ip.as_str(), ws.ip.as_str()],
            &[noon.timestamp, night.timestamp],
        );
        assert!(scores[0] < 0.5, "its day peak is usual: {scores:?}");
        assert!(scores[1] > 0.6, "the same at night is not: {scores:?}");
        let explained = model.explain_entity(&noon.features(), &ws.ip, night.timestamp, 4);
        assert!(!explained.is_empty());
        for c in &explained {
            // The band is the workstation's at 03:00, far below the noon value.
            assert_eq!(c.direction, Direction::Above, "{c:?}");
            assert!(c.normal_range[1] < c.value, "{c:?}");
        }
        let day = model.explain_entity(&noon.features(), &ws.ip, noon.timestamp, 4);
        let sent = day.iter().find(|c| c.feature == "bytes_sent");
        if let Some(c) = sent {
            assert!(
                c.normal_range[0] < c.value && c.value < c.normal_range[1] * 2.0,
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_check_in_on_a_quiet_night_is_found_by_the_matched_test_and_explained_as_such() {
        let (model, test) = fitted();
        let b = &model.entity().unwrap().baselines;
        let hosts = crate::detector::generator::network::hosts(20, 3);
        let ws = hosts
            .iter()
            .find(|h| h.kind == HostKind::Workstation)
            .unwrap();
        let night = test
            .iter()
            .find(|r| r.src_ip.as_deref() == Some(&ws.ip) && r.timestamp.hour() == 3)
            .unwrap();
        let score = |row: &[f64]| {
            let mut z = vec![0.0; b.n_signals()];
            b.score_test_into(row, &ws.ip, night.timestamp, &mut z)
        };
        let quiet = night.features();
        let (s, _, test_of) = score(&quiet);
        assert!(s < 0.5, "an ordinary night window: {s}");
        assert_eq!(test_of, Test::Omnibus);
        // Five 1.5 kB check-ins (3 kB back) and a session, as the generator's beaconing adds.
        let beacon = [
            quiet[0] + 7.5e3,
            quiet[1] + 1.5e4,
            quiet[2] + 5.0,
            quiet[3] + 1.0,
        ];
        let (s, judged, test_of) = score(&beacon);
        assert!(s > 0.5, "five check-ins on a quiet night: {s}");
        assert_eq!((judged, test_of), (Judged::Own, Test::ActivityAlone));
        // The score is the one `score_entities` gives.
        let x = Matrix::from_rows(&[beacon]).unwrap();
        let (scores, _) = model.score_entities(&x, &[ws.ip.as_str()], &[night.timestamp]);
        assert_eq!(scores[0], s);
        let explained = model.explain_entity(&beacon, &ws.ip, night.timestamp, 4);
        let conns = explained
            .iter()
            .find(|c| c.feature == "connections")
            .expect("connections explain the check-ins");
        let line = conns.summary.as_deref().unwrap();
        assert!(
            line.starts_with("connections ")
                && line.contains(&format!("; usual for {} at 03:00 is ", ws.ip)),
            "{line}"
        );
        assert!(
            line.ends_with(
                "; the matched test decided: more connections than usual with less bytes_sent, \
                 bytes_received, active_sessions per connection (the signature of check-ins \
                 such as beaconing)"
            ),
            "{line}"
        );
        assert_eq!(conns.direction, Direction::Above, "{conns:?}");
        // A volume spike is the omnibus's, explained as before.
        let exfil = [quiet[0] + 5e7, quiet[1], quiet[2] + 2.0, quiet[3]];
        let (s, _, test_of) = score(&exfil);
        assert!(s > 0.5, "{s}");
        assert_eq!(test_of, Test::Omnibus);
        let explained = model.explain_entity(&exfil, &ws.ip, night.timestamp, 4);
        assert_eq!(explained[0].feature, "bytes_sent", "{explained:?}");
        assert!(
            explained
                .iter()
                .all(|c| !c.summary.as_deref().unwrap().contains("matched test")),
            "{explained:?}"
        );
    }
}
