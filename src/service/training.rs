//! Fitting a model: read or generate the training batch, fit off the async runtime, store the new
//! version, make it active, and keep its training chart.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;

use super::idempotency::{AnswerOf, KeyedRun};
use super::scoring::chart_data;
use super::{ServiceError, blocking, models};
use crate::detector::generator::{GeneratorConfig, generate};
use crate::detector::model::Model;
use crate::detector::params::ForestParams;
use crate::records::{BodyFormat, ReadSpec, TopLevel, ZeekOptions, read_slice, sample_batch};
use crate::state::{AppState, ChartData, DetectorState};

/// What to train on.
pub enum TrainingData {
    /// A body of records. A JSON body's settings were read already; its records are read here.
    Body {
        format: BodyFormat,
        bytes: Bytes,
        zeek: ZeekOptions,
    },
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
    let (model, chart) = blocking(move || {
        let FitCommand {
            data,
            features,
            params,
            threshold,
        } = command;
        let mut batch = match data {
            TrainingData::Body {
                format,
                bytes,
                zeek,
            } => {
                let spec = ReadSpec {
                    zeek,
                    top_level: TopLevel::WithSettings,
                    ..ReadSpec::new(format, features, max_records)
                };
                read_slice(&bytes, &spec, None)?.batch
            }
            TrainingData::Generate(g) => {
                let records = generate(&g)?;
                sample_batch(&records, features.as_deref(), max_records)?
            }
        };
        let (model, scores) = Model::fit_with_scores(
            &batch.matrix,
            batch.features.clone(),
            &params,
            threshold,
            Utc::now(),
        )?;
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
