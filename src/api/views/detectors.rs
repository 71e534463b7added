//! OpenAPI shapes of detectors: the settings a `PUT` reads (mirrors of `service::detectors`,
//! whose serde form is the wire form) and the detector a read answers (a view).

use chrono::{DateTime, Utc};
#[cfg(test)]
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use super::model::schema;
use crate::detector::params::{Contamination, MaxFeatures, MaxSamples};
use crate::service::detectors::{AlertingSpec, DetectorInfo, ParamsSpec, SourceSpec, TrainingSpec};

/// A detector's settings (the body of `PUT /v1/detectors/{name}`); every block may be left out,
/// and then has v1's behaviour. Unknown fields are refused (422).
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[cfg_attr(test, serde(deny_unknown_fields))]
#[schema(as = DetectorSettings, example = json!({
    "source": {"format": "zeek", "window": "5m", "group_by": "id.orig_h", "allowed_lateness": "2m"},
    "features": ["bytes_sent", "bytes_received", "connections", "active_sessions"],
    "params": {"contamination": "auto", "baseline": "global", "seasonality": "none"},
    "alerting": {"min_severity": 75, "close_after": "30m", "renotify_severity_step": 10}
}))]
pub struct DetectorSettingsView {
    #[schema(value_type = Option<DetectorSourceView>)]
    pub source: Option<SourceSpec>,
    /// Features a fit uses when it names none (null: the four seed features when all are
    /// present, else every numeric field but `label`).
    pub features: Option<Vec<String>>,
    #[schema(value_type = Option<DetectorParamsView>)]
    pub params: Option<ParamsSpec>,
    #[schema(value_type = Option<DetectorAlertingView>)]
    pub alerting: Option<AlertingSpec>,
    #[schema(value_type = Option<DetectorTrainingView>)]
    pub training: Option<TrainingSpec>,
}

/// What the detector reads. `window` and `group_by` are the defaults of its Zeek requests
/// (`?window=`/`?group_by=` still override them).
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[cfg_attr(test, serde(deny_unknown_fields))]
#[schema(as = DetectorSource)]
pub struct DetectorSourceView {
    /// `zeek` (conn logs aggregated per window and entity) or `records` (the default: one
    /// observation per record).
    #[serde(default)]
    pub format: SourceFormatView,
    /// Zeek only: the aggregation window, `1s` to `7d` (default `1h`).
    #[schema(example = "5m")]
    pub window: Option<String>,
    /// Zeek: `none` (default), `id.orig_h` or `id.resp_h`. Records: the string field that
    /// names the entity (kept with the settings).
    #[schema(example = "id.orig_h")]
    pub group_by: Option<String>,
    /// How late a record may arrive for continuous ingest, e.g. `2m` (kept with the settings).
    #[schema(example = "2m")]
    pub allowed_lateness: Option<String>,
}

/// `zeek` or `records`.
#[derive(ToSchema, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[schema(as = DetectorSourceFormat)]
pub enum SourceFormatView {
    Zeek,
    #[default]
    Records,
}

/// Fit parameters: the forest's (as a fit's `params`; the defaults of this detector's fits,
/// which a fit's own parameters override one by one) and the baseline.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[cfg_attr(test, serde(deny_unknown_fields))]
#[schema(as = DetectorParams)]
pub struct DetectorParamsView {
    /// Number of trees (default 100).
    #[schema(example = 100)]
    pub n_estimators: Option<u64>,
    /// `"auto"` (= min(256, n)), a row count, or a fraction of n.
    #[schema(schema_with = schema::max_samples, example = "auto")]
    pub max_samples: Option<MaxSamples>,
    /// `"auto"` (threshold 0.5) or a fraction in (0, 0.5].
    #[schema(schema_with = schema::contamination, example = "auto")]
    pub contamination: Option<Contamination>,
    /// A fraction in (0, 1] or a count of features (default 1.0: all).
    #[schema(schema_with = schema::max_features, example = 1.0)]
    pub max_features: Option<MaxFeatures>,
    /// Draw each tree's rows with replacement (default false).
    pub bootstrap: Option<bool>,
    /// Seed of every random choice (default 42).
    #[schema(example = 42)]
    pub seed: Option<u64>,
    /// `global` (default: one baseline for every entity, as v1) or `entity` (each record
    /// against its own entity's history; needs `source.group_by`). The detector's fits that
    /// name no baseline of their own use it.
    #[schema(example = "entity", pattern = "^(global|entity)$")]
    pub baseline: Option<String>,
    /// With `baseline=entity`: `none` (default), `daily` (by hour of day) or `weekly` (by hour of
    /// day within each entity's day profiles: days alike share one, e.g. weekdays and weekends).
    #[schema(example = "daily", pattern = "^(none|daily|weekly)$")]
    pub seasonality: Option<String>,
}

/// When the detector's batches raise alerts.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[cfg_attr(test, serde(deny_unknown_fields))]
#[schema(as = DetectorAlerting)]
pub struct DetectorAlertingView {
    /// Alert when a record reaches this severity (null: the service's `--alert-severity`).
    #[schema(minimum = 0, maximum = 100, example = 75)]
    pub min_severity: Option<u8>,
    /// A quiet gap longer than this resolves an entity's incident (null: the service's
    /// `--incident-close-after`, default 30m).
    #[schema(example = "30m")]
    pub close_after: Option<String>,
    /// An incident update that raises its max severity by at least this much over what was
    /// last delivered is delivered again (`escalated`; null: 10).
    #[schema(minimum = 1, maximum = 100, example = 10)]
    pub renotify_severity_step: Option<u8>,
    /// An incident update this long after its last delivery is delivered again (`renotified`;
    /// null: never).
    #[schema(example = "4h")]
    pub renotify_after: Option<String>,
}

/// Training from the detector's own stream: kept with the settings, not acted on yet, so
/// `auto` must be false.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[cfg_attr(test, serde(deny_unknown_fields))]
#[schema(as = DetectorTraining)]
pub struct DetectorTrainingView {
    #[schema(example = false)]
    pub auto: bool,
    pub min_windows: Option<u64>,
    #[schema(example = "7d")]
    pub history: Option<String>,
    #[schema(example = "1d")]
    pub refit_every: Option<String>,
}

/// A detector: its name, its settings with every default filled in, and its active model.
#[derive(Serialize, ToSchema)]
#[schema(as = Detector)]
pub struct DetectorView {
    #[schema(example = "zeek-hosts")]
    pub name: String,
    #[schema(value_type = DetectorSourceView)]
    pub source: SourceSpec,
    pub features: Option<Vec<String>>,
    #[schema(value_type = DetectorParamsView)]
    pub params: ParamsSpec,
    #[schema(value_type = DetectorAlertingView)]
    pub alerting: AlertingSpec,
    #[schema(value_type = Option<DetectorTrainingView>)]
    pub training: Option<TrainingSpec>,
    /// The active model version (null before the first fit).
    pub model_version: Option<u64>,
    /// When the settings were first stored (null for a `default` never put).
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<DetectorInfo> for DetectorView {
    fn from(d: DetectorInfo) -> Self {
        let spec = (*d.spec).clone();
        Self {
            name: d.name,
            source: spec.source,
            features: spec.features,
            params: spec.params,
            alerting: spec.alerting,
            training: spec.training,
            model_version: d.model_version,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// Every detector, `default` first.
#[derive(Serialize, ToSchema)]
pub struct DetectorList {
    pub detectors: Vec<DetectorView>,
}

/// What a delete removed.
#[derive(Serialize, ToSchema)]
pub struct DetectorDeleted {
    #[schema(example = "zeek-hosts")]
    pub name: String,
    /// Model versions deleted with the detector.
    pub models_deleted: usize,
    /// Its alerts stay, still listed with `GET /v1/alerts?detector=<name>`.
    pub alerts_kept: bool,
}

#[cfg(test)]
mod tests {
    use super::super::check::mirrors;
    use super::*;
    use crate::service::detectors::parse_spec;

    #[test]
    fn the_settings_mirror_reads_what_a_detector_writes() {
        let spec = parse_spec(serde_json::json!({
            "source": {"format": "zeek", "window": "5m", "group_by": "id.orig_h", "allowed_lateness": "2m"},
            "features": ["bytes_sent"],
            "params": {"contamination": 0.1, "seed": 7},
            "alerting": {"min_severity": 60, "close_after": "30m", "renotify_severity_step": 10},
            "training": {"auto": false, "min_windows": 5, "history": "7d", "refit_every": "1d"}
        }))
        .unwrap();
        mirrors::<DetectorSettingsView>(&spec);
        mirrors::<DetectorSettingsView>(&crate::service::detectors::DetectorSpec::default());
    }
}
