//! `/v1/model`: fit a model, read the active one, list kept versions, roll back.

use super::RecordsRequest;
use super::idempotency::{IdempotencyKey, Start, request_parts, start_streaming, whole};
use super::problems::{
    BadParameter, BodyProblems, CorruptModel, FitProblems, NoModelFound, NotFound,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::detectors::Detector;
use super::views::bodies::{ContentEncodingHeader, IdempotencyKeyHeader};
use super::views::model::{ForestParamsView, ModelMetaView};
use super::views::samples::GeneratorConfigView;
use crate::detector::baseline::Seasonality;
use crate::detector::generator::GeneratorConfig;
use crate::detector::model::Model;
use crate::detector::params::{AutoTag, Contamination, ForestParams, MaxFeatures, MaxSamples};
use crate::error::{ApiError, ProblemCode};
use crate::records::{BodyFormat, WithSettings};
use crate::service::detectors::DetectorSpec;
use crate::service::idempotency::{Answer, AnswerOf};
use crate::service::models;
use crate::service::training::{self, EntityFit, FitCommand, TrainingData};
use crate::state::{AppState, DetectorState};

/// JSON body of a fit: inline `records` or a `generate` request, with optional features and parameters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"generate": {"profile": "seed", "n_records": 720, "seed": 42}, "params": {"contamination": "auto", "seed": 42}}))]
pub struct FitRequest {
    /// Training records (objects with numeric features; `timestamp`, `label` and string fields are allowed).
    #[schema(value_type = Option<Vec<Object>>)]
    pub records: Option<Vec<serde_json::Value>>,
    /// Generate the training data instead (same settings as POST /v1/samples).
    #[schema(value_type = Option<GeneratorConfigView>)]
    pub generate: Option<GeneratorConfig>,
    /// Feature names; default: the four seed features when all are present, else every numeric field but `label`.
    pub features: Option<Vec<String>>,
    #[schema(value_type = Option<ForestParamsView>)]
    pub params: Option<ForestParams>,
    /// A fixed score threshold in (0, 1), overriding `contamination` (e.g. the `budget.threshold`
    /// that `POST /v1/evaluate` reports for a false-alert budget).
    #[schema(example = 0.65)]
    pub threshold: Option<f64>,
}

/// Settings of a CSV or NDJSON fit, in the query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FitQuery {
    /// Comma-separated feature names.
    pub features: Option<String>,
    pub n_estimators: Option<u64>,
    /// `auto`, a count, or a fraction.
    pub max_samples: Option<String>,
    /// `auto` or a fraction in (0, 0.5].
    pub contamination: Option<String>,
    /// A count or a fraction.
    pub max_features: Option<String>,
    pub bootstrap: Option<bool>,
    pub seed: Option<u64>,
    /// A fixed score threshold in (0, 1), overriding `contamination`.
    pub threshold: Option<f64>,
    /// Zeek bodies only: aggregation window such as `1h` (default), `5m`, `30s`.
    #[param(example = "1h")]
    pub window: Option<String>,
    /// Zeek bodies: `none` (default, the whole network), `id.orig_h` or `id.resp_h`; CSV and
    /// NDJSON bodies with `baseline=entity`: the string field naming each record's entity
    /// (such as `src_ip`).
    #[param(example = "id.orig_h")]
    pub group_by: Option<String>,
    /// `global` (default: every record against the whole training population) or `entity`
    /// (each record against its own entity's history; the entity is `group_by`).
    #[param(example = "entity")]
    pub baseline: Option<String>,
    /// With `baseline=entity`: `none` (default), `daily` (by hour of day) or `weekly` (by hour of
    /// day within each entity's day profiles: days alike share one, e.g. weekdays and weekends).
    #[param(example = "daily")]
    pub seasonality: Option<String>,
}

/// The entity-baseline settings of a fit (`baseline`, `seasonality` and the entity `field`),
/// checked.
fn entity_fit(
    baseline: Option<&str>,
    seasonality: Option<&str>,
    field: Option<&str>,
) -> Result<Option<EntityFit>, ApiError> {
    let invalid = |detail: String, field: &'static str| {
        ApiError::new(ProblemCode::InvalidParameter, detail).with_field(field)
    };
    let seasonality = match seasonality {
        None | Some("none") => Seasonality::None,
        Some("daily") => Seasonality::Daily,
        Some("weekly") => Seasonality::Weekly,
        Some(other) => {
            return Err(invalid(
                format!("seasonality must be none, daily or weekly, got {other:?}"),
                "seasonality",
            ));
        }
    };
    match baseline {
        None | Some("global") if seasonality == Seasonality::None => Ok(None),
        None | Some("global") => Err(invalid(
            "seasonality applies to baseline=entity".into(),
            "seasonality",
        )),
        Some("entity") => match field {
            Some(f) if !f.is_empty() => Ok(Some(EntityFit {
                field: f.to_owned(),
                seasonality,
            })),
            _ => Err(invalid(
                "baseline=entity needs group_by: the field naming each record's entity (such \
                 as src_ip; for Zeek conn logs id.orig_h or id.resp_h)"
                    .into(),
                "group_by",
            )),
        },
        Some(other) => Err(invalid(
            format!("baseline must be global or entity, got {other:?}"),
            "baseline",
        )),
    }
}

/// The detector's own baseline settings for a fit that names none (`field`: the request's
/// `group_by` of a records body, over the detector's).
fn detector_entity_fit(defaults: &DetectorSpec, field: Option<&str>) -> Option<EntityFit> {
    defaults.entity_fit().map(|mut e| {
        if let Some(f) = field.filter(|f| !f.is_empty()) {
            e.field = f.to_owned();
        }
        e
    })
}

impl FitQuery {
    fn is_empty(&self) -> bool {
        self.features.is_none()
            && self.n_estimators.is_none()
            && self.max_samples.is_none()
            && self.contamination.is_none()
            && self.max_features.is_none()
            && self.bootstrap.is_none()
            && self.seed.is_none()
            && self.threshold.is_none()
            && self.window.is_none()
            && self.group_by.is_none()
            && self.baseline.is_none()
            && self.seasonality.is_none()
    }

    /// The query's parameters over `p` (the detector's).
    fn params(&self, mut p: ForestParams) -> Result<ForestParams, ApiError> {
        if let Some(n) = self.n_estimators {
            p.n_estimators = n;
        }
        if let Some(s) = &self.max_samples {
            p.max_samples = if s == "auto" {
                MaxSamples::Auto(AutoTag::Auto)
            } else if let Ok(c) = s.parse::<u64>() {
                MaxSamples::Count(c)
            } else {
                MaxSamples::Fraction(number("max_samples", s)?)
            };
        }
        if let Some(s) = &self.contamination {
            p.contamination = if s == "auto" {
                Contamination::Auto(AutoTag::Auto)
            } else {
                Contamination::Fraction(number("contamination", s)?)
            };
        }
        if let Some(s) = &self.max_features {
            p.max_features = if let Ok(c) = s.parse::<u64>() {
                MaxFeatures::Count(c)
            } else {
                MaxFeatures::Fraction(number("max_features", s)?)
            };
        }
        if let Some(b) = self.bootstrap {
            p.bootstrap = b;
        }
        if let Some(s) = self.seed {
            p.seed = s;
        }
        Ok(p)
    }

    fn features(&self) -> Option<Vec<String>> {
        self.features
            .as_ref()
            .map(|f| f.split(',').map(|s| s.trim().to_string()).collect())
    }
}

fn number(name: &'static str, s: &str) -> Result<f64, ApiError> {
    s.parse::<f64>().map_err(|_| {
        ApiError::new(
            ProblemCode::InvalidParameter,
            format!("{name} must be a number or \"auto\", got {s:?}"),
        )
        .with_field(name)
    })
}

/// Fit a new model and make it the active one.
///
/// Training runs off the request threads; the new model is persisted (written, fsynced, renamed)
/// and then replaces the active one atomically. Body: JSON (`records` or `generate`, plus optional
/// `features` and `params`), or CSV / NDJSON records with the settings in the query string.
#[utoipa::path(post, path = "/model/fit", tag = "model",
    params(FitQuery, ContentEncodingHeader, IdempotencyKeyHeader),
    // And the text forms (binary strings): `api::reads_records`.
    request_body(content((FitRequest = "application/json"))),
    responses(
        (status = 201, body = ModelMetaView, description = "The new active model"),
        BodyProblems,
        FitProblems,
    ))]
pub async fn fit(
    State(state): State<AppState>,
    key: IdempotencyKey,
    uri: Uri,
    headers: HeaderMap,
    request: RecordsRequest<FitQuery>,
) -> Result<Response, ApiError> {
    let RecordsRequest {
        detector: det,
        query,
        format,
        zeek,
        body,
        declared_len,
    } = request;
    let spec = det.spec();
    // The query's settings are checked before the body is read.
    let from_query = query_fit(format, &query, &spec)?;
    let parts = (det.name(), request_parts("fit", &uri, &headers));
    let (key, body) = match start_streaming(&state, &key, parts, body, declared_len).await? {
        Start::Replay(answer) => return Ok(answer),
        Start::Run { key, body, .. } => (key, body),
    };
    // The body is read as it arrives (and hashed for its key as it passes): only its batch is kept.
    let features = from_query
        .as_ref()
        .map_or(spec.features.clone(), |q| q.features.clone());
    let read = training::read_body(&state, format, zeek, features, body).await?;
    let command = match from_query {
        Some(q) => q.command(read)?,
        None => json_command(read, &spec)?,
    };
    let answered = det.clone();
    let answer: AnswerOf<Model> = Box::new(move |model| fit_answer(&answered, model));
    let model = training::fit(&state, &det, command, key.map(|k| (k, answer))).await?;
    Ok(whole(fit_answer(&det, &model)))
}

/// A fit's answer: 201, where the model is read, and its metadata (kept for its key as sent).
fn fit_answer(det: &DetectorState, model: &Model) -> Answer {
    Answer {
        status: StatusCode::CREATED.as_u16(),
        content_type: "application/json".to_owned(),
        headers: vec![(header::LOCATION.to_string(), model_location(det))],
        body: serde_json::to_vec(&ModelMetaView::from(model.meta())).unwrap_or_default(),
    }
}

/// Where a detector's active model is read.
fn model_location(det: &DetectorState) -> String {
    match det.is_default() {
        true => "/v1/model".to_owned(),
        false => format!("/v1/detectors/{}/model", det.name()),
    }
}

/// A fit's settings from its query string (CSV, NDJSON and Zeek bodies).
struct QueryFit {
    features: Option<Vec<String>>,
    params: ForestParams,
    threshold: Option<f64>,
    entity: Option<EntityFit>,
}

impl QueryFit {
    /// The fit of the body's records with these settings.
    fn command(self, read: WithSettings) -> Result<FitCommand, ApiError> {
        Ok(FitCommand {
            data: TrainingData::Records(read.records?.batch),
            features: self.features,
            params: self.params,
            threshold: self.threshold,
            entity: self.entity,
        })
    }
}

/// The settings of a fit in its query string, over the detector's own `features` and
/// `params`; `None` for a JSON body, whose settings are in the body (its query must be empty).
fn query_fit(
    format: BodyFormat,
    query: &FitQuery,
    defaults: &DetectorSpec,
) -> Result<Option<QueryFit>, ApiError> {
    if format == BodyFormat::Json {
        return match query.is_empty() {
            true => Ok(None),
            false => Err(ApiError::new(
                ProblemCode::InvalidParameter,
                "with a JSON body, give features and params in the body, not the query string",
            )),
        };
    }
    let params = query.params(defaults.params.forest.clone())?;
    params.check_static()?;
    // A Zeek log's entity is the window's group (the `entity` field of its records).
    let field = match format.is_zeek() {
        true => query
            .group_by
            .as_deref()
            .filter(|g| *g != "none")
            .map(|_| "entity"),
        false => query.group_by.as_deref(),
    };
    let entity = match (&query.baseline, &query.seasonality) {
        (None, None) => detector_entity_fit(defaults, field.filter(|_| !format.is_zeek())),
        _ => entity_fit(
            query.baseline.as_deref(),
            query.seasonality.as_deref(),
            field,
        )?,
    };
    Ok(Some(QueryFit {
        features: query.features().or_else(|| defaults.features.clone()),
        params,
        threshold: query.threshold,
        entity,
    }))
}

/// The fit a JSON body asks for: its settings (checked first), over the detector's own
/// `features` and `params`, and its records or `generate` request.
fn json_command(read: WithSettings, defaults: &DetectorSpec) -> Result<FitCommand, ApiError> {
    let WithSettings {
        mut settings,
        records,
    } = read;
    // The baseline settings ride in `params` beside the forest's.
    let mut taken = [None, None, None];
    if let Some(serde_json::Value::Object(p)) = settings.fields.get_mut("params") {
        for (slot, key) in taken
            .iter_mut()
            .zip(["baseline", "seasonality", "group_by"])
        {
            *slot = match p.remove(key) {
                None => None,
                Some(serde_json::Value::String(v)) => Some(v),
                Some(other) => {
                    return Err(ApiError::new(
                        ProblemCode::InvalidParameter,
                        format!("params.{key} must be a string, got {other}"),
                    )
                    .with_field(key));
                }
            };
        }
    }
    let [baseline, seasonality, group_by] = taken;
    let entity = match (&baseline, &seasonality) {
        (None, None) => detector_entity_fit(defaults, group_by.as_deref()),
        _ => entity_fit(
            baseline.as_deref(),
            seasonality.as_deref(),
            group_by.as_deref(),
        )?,
    };
    // The body's params, each over the detector's (`default`'s are v1's defaults).
    let params = over_defaults(&defaults.params.forest, settings.fields.get("params"));
    let req: FitRequest = serde_json::from_value(serde_json::Value::Object(settings.fields))
        .map_err(|e| ApiError::new(ProblemCode::InvalidParameter, format!("fit settings: {e}")))?;
    let params = match req.params {
        Some(_) => params?,
        None => defaults.params.forest.clone(),
    };
    params.check_static()?;
    let data = match (settings.has_records, req.generate) {
        (true, Some(_)) => {
            return Err(ApiError::new(
                ProblemCode::InvalidParameter,
                "give either \"records\" or \"generate\", not both",
            ));
        }
        (false, None) => {
            return Err(ApiError::new(
                ProblemCode::MalformedBody,
                "give training \"records\" or a \"generate\" request",
            )
            .with_field("records"));
        }
        (true, None) => TrainingData::Records(records?.batch),
        (false, Some(g)) => TrainingData::Generate(g),
    };
    Ok(FitCommand {
        data,
        features: req.features.or_else(|| defaults.features.clone()),
        params,
        threshold: req.threshold,
        entity,
    })
}

/// `overlay`'s parameters over `defaults`: a fit that gives only a seed keeps the detector's
/// contamination.
fn over_defaults(
    defaults: &ForestParams,
    overlay: Option<&serde_json::Value>,
) -> Result<ForestParams, ApiError> {
    let mut merged = serde_json::to_value(defaults).expect("parameters serialise");
    if let (Some(m), Some(serde_json::Value::Object(o))) = (merged.as_object_mut(), overlay) {
        m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    serde_json::from_value(merged)
        .map_err(|e| ApiError::new(ProblemCode::InvalidParameter, format!("fit settings: {e}")))
}

/// Metadata of the active model.
#[utoipa::path(get, path = "/model", tag = "model", responses(
    (status = 200, body = ModelMetaView),
    NoModelFound,
))]
pub async fn get_model(Detector(det): Detector) -> Result<Json<ModelMetaView>, ApiError> {
    let model = det.model().ok_or_else(ApiError::no_model_found)?;
    Ok(Json(ModelMetaView::from(model.meta())))
}

/// One kept model version.
#[derive(Serialize, ToSchema)]
pub struct VersionInfo {
    pub version: u64,
    pub active: bool,
    /// Metadata, or null when the file could not be read.
    pub meta: Option<ModelMetaView>,
    /// Why the file could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub active: Option<u64>,
    /// Newest first.
    pub versions: Vec<VersionInfo>,
}

/// The model versions kept (files in the data directory, or rows in PostgreSQL), newest first.
#[utoipa::path(get, path = "/model/versions", tag = "model", responses((status = 200, body = VersionList)))]
pub async fn list_versions(Detector(det): Detector) -> Result<Json<VersionList>, ApiError> {
    let active = det.model().map(|m| m.version());
    let versions = models::versions(&det)
        .await?
        .into_iter()
        .map(|kept| VersionInfo {
            version: kept.version,
            active: kept.meta.is_ok() && Some(kept.version) == active,
            meta: kept.meta.as_ref().ok().map(ModelMetaView::from),
            error: kept.meta.err(),
        })
        .collect();
    Ok(Json(VersionList { active, versions }))
}

/// The version in an activate path (beside the detector's `{name}` on per-detector paths).
#[derive(Deserialize)]
pub struct VersionPath {
    version: u64,
}

/// Make a kept version the active model again (a rollback); it stays active across restarts.
#[utoipa::path(post, path = "/model/versions/{version}/activate", tag = "model",
    params(("version" = u64, Path, description = "A version from GET /v1/model/versions")),
    responses(
        (status = 200, body = ModelMetaView),
        BadParameter,
        NotFound,
        CorruptModel,
    ))]
pub async fn activate(
    Detector(det): Detector,
    version: Result<Path<VersionPath>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ModelMetaView>, ApiError> {
    let Path(VersionPath { version }) = version.map_err(|_| {
        ApiError::new(
            ProblemCode::InvalidParameter,
            "the version must be a whole number",
        )
        .with_field("version")
    })?;
    let model = models::activate(&det, version).await?;
    Ok(Json(ModelMetaView::from(model.meta())))
}
