//! Fitting a model: read or generate the training batch, fit off the async runtime, store the new
//! version, make it active, and keep its training chart.

use std::sync::Arc;

use chrono::Utc;
use futures_util::stream::BoxStream;

use super::idempotency::{AnswerOf, KeyedRun};
use super::scoring::{chart_data, entities_and_times};
use super::{ServiceError, blocking, models};
use crate::detector::baseline::Seasonality;
use crate::detector::forest::FitWatch;
use crate::detector::generator::{GeneratorConfig, generate_watched};
use crate::detector::model::{EntityInput, FitError, FitInput, Model};
use crate::detector::params::ForestParams;
use crate::records::read::BodyChunk;
use crate::records::{
    Batch, BodyFormat, ReadSpec, TopLevel, WithSettings, ZeekOptions, read_stream_settings,
    sample_batch,
};
use crate::state::{AppState, ChartData, DetectorState};

/// What to train on.
pub enum TrainingData {
    /// The records of a body, read as it arrived ([`read_body`]).
    Records(Batch),
    /// Generated sample records.
    Generate(GeneratorConfig),
}

/// A fit: the data, the features (`None`: the default choice) and the forest's settings.
pub struct FitCommand {
    pub data: TrainingData,
    pub features: Option<Vec<String>>,
    pub params: ForestParams,
    /// A fixed score threshold overriding `params.contamination`.
    pub threshold: Option<f64>,
    /// Entity baselines (`baseline=entity`); `None`: one global baseline (v1).
    pub entity: Option<EntityFit>,
}

/// What an entity-baseline fit needs besides the records.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityFit {
    /// The string field naming each record's entity (`entity` for grouped Zeek windows).
    pub field: String,
    pub seasonality: Seasonality,
}

/// The settings a fit's JSON body may carry beside its records (the API's `FitRequest`).
pub const SETTINGS: &[&str] = &["generate", "features", "params", "threshold"];

/// Reads a fit's body as it arrives, a chunk at a time: its records with `features` (`None`:
/// the default choice; a JSON body's own `features` setting, given before its records, wins),
/// and a JSON body's settings. Only the batch is kept, never the body's text, except for a
/// JSON object whose records come before any `features` setting: it is read whole.
pub async fn read_body(
    state: &AppState,
    format: BodyFormat,
    zeek: ZeekOptions,
    features: Option<Vec<String>>,
    body: BoxStream<'static, BodyChunk>,
) -> Result<WithSettings, ServiceError> {
    let settings = state.settings();
    let spec = ReadSpec {
        zeek,
        top_level: TopLevel::WithSettings,
        settings: SETTINGS,
        features_setting: true,
        ..ReadSpec::new(format, features, settings.max_records)
    };
    Ok(read_stream_settings(body, settings.max_body_bytes, spec).await?)
}

/// Fits a model, stores it as the detector's next version and makes it the active one (keeping
/// the request's idempotency `key` with it: [`models::publish`]).
pub async fn fit(
    state: &AppState,
    det: &Arc<DetectorState>,
    command: FitCommand,
    key: Option<(KeyedRun, AnswerOf<Model>)>,
) -> Result<Arc<Model>, ServiceError> {
    let max_records = state.settings().max_records;
    let detector = det.name().to_owned();
    let rules = super::suppression::active(state).await?;
    let entity_field = det.spec().entity_field().to_owned();
    let (model, chart) = blocking(move || {
        let FitCommand {
            data,
            features,
            params,
            threshold,
            entity,
        } = command;
        let mut batch = match data {
            TrainingData::Records(batch) => batch,
            TrainingData::Generate(g) => {
                crate::work::reserve(g.n_records as u64 * GENERATED_RECORD_BYTES)?;
                let records = generate_watched(&g, &crate::work::cancelled)?
                    .ok_or(ServiceError::Cancelled)?;
                sample_batch(&records, features.as_deref(), max_records)?
            }
        };
        // An entity-baseline fit names its entity field (its `group_by`); rules go by it, as
        // when its model scores.
        let field = entity.as_ref().map_or(entity_field.as_str(), |e| e.field.as_str());
        let marks = super::suppression::mark(&rules, &detector, field, &batch);
        let suppressed = marks.len();
        if !marks.is_empty() {
            marks.count(&detector);
            tracing::info!(detector = %detector, suppressed = marks.len(), records = batch.len(), "fit leaves out records suppression rules match");
            batch = without(batch, &marks);
        }
        crate::work::reserve(forest_bytes(&params, batch.len(), batch.matrix.n_cols()))?;
        let watch = Progress::new(&detector);
        let input = FitInput {
            x: &batch.matrix,
            features: batch.features.clone(),
            params: &params,
            fixed_threshold: threshold,
            trained_at: Utc::now(),
            watch: &watch,
        };
        let fitted = match &entity {
            None => Model::fit_watched(input),
            Some(e) => {
                if e.seasonality != Seasonality::None && batch.parsed_times.is_none() {
                    return Err(ServiceError::Settings {
                        detail: format!(
                            "seasonality {} needs a timestamp on every training record",
                            serde_json::json!(e.seasonality)
                        ),
                        field: Some("timestamp".into()),
                    });
                }
                let (entities, times) = entities_and_times(&batch, &e.field);
                let keys: Vec<&str> = entities.iter().map(String::as_str).collect();
                let baselines = EntityInput {
                    field: &e.field,
                    entities: &keys,
                    times: &times,
                    seasonality: e.seasonality,
                };
                Model::fit_entity(input, baselines)
            }
        };
        if matches!(fitted, Err(FitError::Cancelled)) {
            crate::work::note_stopped();
            tracing::info!(detector = %detector, "fit cancelled: its client is gone or its time is up");
        }
        let (mut model, scores) = fitted?;
        model.set_suppressed_records(suppressed);
        let anomalies = scores.iter().map(|&s| model.is_anomaly(s)).collect();
        let chart = chart_data(0, &mut batch, anomalies);
        Ok((model, chart))
    })
    .await?;
    let model = models::publish(det, model, key).await?;
    det.set_training_batch(ChartData {
        model_version: model.version(),
        ..chart
    });
    tracing::info!(
        detector = det.name(),
        version = model.version(),
        records = model.meta().n_training_records,
        seconds = model.meta().fit_seconds,
        "model fitted"
    );
    Ok(model)
}

/// The batch without the records `marks` names: its features and timestamps, all a fit and
/// its chart read.
fn without(
    batch: crate::records::Batch,
    marks: &super::suppression::Marks,
) -> crate::records::Batch {
    let m = &batch.matrix;
    let kept: Vec<usize> = (0..batch.len())
        .filter(|&i| marks.of(i).is_none())
        .collect();
    let values = kept
        .iter()
        .flat_map(|&i| m.row(i).iter().copied())
        .collect();
    let matrix = crate::detector::Matrix::new(kept.len(), m.n_cols(), values)
        .expect("rows of a valid matrix");
    let parsed_times = batch
        .parsed_times
        .as_ref()
        .map(|t| kept.iter().map(|&i| t[i]).collect());
    crate::records::Batch {
        matrix: Arc::new(matrix),
        parsed_times,
        labels: None,
        timestamps: Default::default(),
        echo: Default::default(),
        ..batch
    }
}

/// Memory a generated training record takes until the fit ends (the record, its matrix row,
/// its chart point), an estimate for the memory budget.
const GENERATED_RECORD_BYTES: u64 = 256;

/// The memory a forest takes while it grows and is scored: each tree's nodes (at most
/// 2ψ, ~32 bytes each), each tree's sample indices, the scaled copy of the matrix and the
/// training scores; an estimate for the memory budget.
fn forest_bytes(params: &ForestParams, n_rows: usize, n_cols: usize) -> u64 {
    use crate::detector::params::MaxSamples;
    let psi = match params.max_samples {
        MaxSamples::Auto(_) => 256,
        MaxSamples::Count(n) => n,
        MaxSamples::Fraction(f) => (f * n_rows as f64).ceil() as u64,
    }
    .clamp(1, n_rows.max(1) as u64);
    let trees = params.n_estimators.max(1);
    trees.saturating_mul(psi).saturating_mul(2 * 32 + 8)
        + (n_rows as u64).saturating_mul(n_cols as u64 * 8 + 16)
}

/// A fit's progress in the log (trees grown of the total, every [`PROGRESS_EVERY`]), and its
/// request's cancellation checked before each tree.
struct Progress {
    detector: String,
    stop: Box<dyn Fn() -> bool + Send + Sync>,
    last: std::sync::Mutex<std::time::Instant>,
}

/// How often a long fit logs its progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Progress {
    fn new(detector: &str) -> Self {
        Self {
            detector: detector.to_owned(),
            stop: Box::new(crate::work::stop_check()),
            last: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }
}

impl FitWatch for Progress {
    fn tree_grown(&self, done: usize, total: usize) {
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() >= PROGRESS_EVERY {
            *last = std::time::Instant::now();
            tracing::info!(detector = %self.detector, trees_done = done, trees_total = total, "fitting");
        }
    }

    fn stop(&self) -> bool {
        (self.stop)()
    }
}
