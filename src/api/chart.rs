//! `/v1/chart.png` and `/v1/chart.svg`: the 2x2 analysis chart of the last scored batch or the training data.

use super::problems::ChartProblems;
use axum::extract::{FromRequestParts, Query};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::detectors::Detector;
use super::views::bodies::Binary;
use crate::chart::{
    ChartFormat, ChartInput, ChartSeries, DEFAULT_HEIGHT, DEFAULT_WIDTH, render_watched,
};
use crate::error::{ApiError, ProblemCode};
use crate::state::{AppState, DetectorState};
use std::sync::Arc;

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The last batch posted to /v1/score.
    #[default]
    Batch,
    /// The data the active model was fitted on in this process.
    Training,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChartQuery {
    /// `batch` (default) or `training`.
    #[param(inline, example = "batch")]
    pub source: Option<Source>,
    /// Pixels, 200-4000 (default 1200).
    #[param(minimum = 200, maximum = 4000)]
    pub width: Option<u32>,
    /// Pixels, 200-4000 (default 800).
    #[param(minimum = 200, maximum = 4000)]
    pub height: Option<u32>,
}

/// The analysis chart as PNG.
#[utoipa::path(get, path = "/chart.png", tag = "chart", params(ChartQuery), responses(
    (status = 200, content_type = "image/png", body = inline(Binary), description = "Bytes sent, bytes received, connections and active sessions over time; anomalies in red"),
    ChartProblems,
))]
pub async fn chart_png(chart: ChartRequest) -> Result<Response, ApiError> {
    draw(chart, ChartFormat::Png).await
}

/// The analysis chart as SVG.
#[utoipa::path(get, path = "/chart.svg", tag = "chart", params(ChartQuery), responses(
    (status = 200, content_type = "image/svg+xml", body = inline(Binary), description = "The same chart as SVG"),
    ChartProblems,
))]
pub async fn chart_svg(chart: ChartRequest) -> Result<Response, ApiError> {
    draw(chart, ChartFormat::Svg).await
}

/// What both chart operations read: the detector (a 404 when there is none of that name) and
/// the query string (a 400 when it is bad).
pub struct ChartRequest {
    detector: Arc<DetectorState>,
    query: ChartQuery,
}

impl FromRequestParts<AppState> for ChartRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Detector(detector) = Detector::from_request_parts(parts, state).await?;
        Ok(Self {
            detector,
            query: super::query(Query::try_from_uri(&parts.uri))?,
        })
    }
}

async fn draw(chart: ChartRequest, format: ChartFormat) -> Result<Response, ApiError> {
    let ChartRequest {
        detector: det,
        query: q,
    } = chart;
    let source = q.source.unwrap_or_default();
    let data = match source {
        Source::Batch => det.last_batch().ok_or_else(|| {
            ApiError::new(ProblemCode::NothingToDraw, "no batch has been scored since the service started; POST /v1/score first, or use ?source=training")
        })?,
        Source::Training => det.training_batch().ok_or_else(|| {
            ApiError::new(ProblemCode::NothingToDraw, "no model has been fitted since the service started (training data is not kept across restarts)")
        })?,
    };
    let width = q.width.unwrap_or(DEFAULT_WIDTH);
    let height = q.height.unwrap_or(DEFAULT_HEIGHT);
    // The bitmap, its encoding and the series copied out, held against the memory budget.
    let points = data.anomalies.len() as u64 * (data.features.len() as u64 + 1);
    crate::work::reserve(u64::from(width) * u64::from(height) * 8 + points * 24)?;
    let bytes = crate::work::spawn_blocking(move || -> Result<_, ApiError> {
        if crate::work::cancelled() {
            return Err(crate::service::ServiceError::Cancelled.into());
        }
        let title = match source {
            Source::Batch => format!("Last scored batch — model v{}", data.model_version),
            Source::Training => format!("Training data — model v{}", data.model_version),
        };
        let series = data.series();
        let input = ChartInput {
            timestamps: data.timestamps.as_deref(),
            series: data
                .features
                .iter()
                .zip(&series)
                .map(|(name, values)| ChartSeries { name, values })
                .collect(),
            anomalies: &data.anomalies,
            title: Some(&title),
        };
        Ok(render_watched(
            &input,
            format,
            width,
            height,
            &crate::work::cancelled,
        )?)
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}
