//! Named detectors: their settings (checked here), creating, replacing and deleting them, loading
//! them at start, and following other replicas' changes.
//!
//! A detector is a name, its source settings (the defaults of its Zeek `window`/`group_by`),
//! its default features and fit parameters, its alerting settings, and its own model versions
//! and alerts. `default` always exists and, until someone puts settings for it, has v1's: the
//! v1 paths are exactly this detector.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ServiceError, blocking};
use crate::detector::baseline::{Baseline, Seasonality};
use crate::detector::params::ForestParams;
use crate::records::zeek::OnInvalid;
use crate::records::{GroupBy, Window, ZeekOptions};
use crate::state::{AppState, DetectorState, Stores};
use crate::store::detectors::{DEFAULT_DETECTOR, StoredDetector};

/// Longest detector name.
pub const MAX_NAME_LEN: usize = 63;

/// A detector's settings: the body of `PUT /v1/detectors/{name}` and what is stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSpec {
    pub source: SourceSpec,
    /// Features a fit uses when it names none (`null`: v1's default choice).
    pub features: Option<Vec<String>>,
    pub params: ParamsSpec,
    pub alerting: AlertingSpec,
    /// Training from the detector's own stream; stored, not acted on yet (`auto` must be false).
    pub training: Option<TrainingSpec>,
}

/// What the detector reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceSpec {
    pub format: SourceFormat,
    /// Zeek only: the aggregation window (default `1h`, as v1).
    pub window: Option<String>,
    /// Zeek: `none`, `id.orig_h` or `id.resp_h` (default `none`); records: the string field
    /// naming the entity (kept with the settings; records are scored one by one).
    pub group_by: Option<String>,
    /// How far behind the latest event time a record may arrive (for continuous ingest).
    pub allowed_lateness: Option<String>,
    /// Continuous ingest: what a line that cannot be read does to its batch (default `skip`:
    /// counted and reported, the good lines kept; `reject`: the whole batch is refused).
    pub on_invalid: Option<OnInvalid>,
}

/// The kind of body a detector is fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// Zeek conn logs, aggregated per window and entity.
    Zeek,
    /// One observation per record (JSON, NDJSON, CSV).
    #[default]
    Records,
}

/// Fit parameters: the forest's (as a fit's `params`) plus the baseline settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "serde_json::Map<String, serde_json::Value>",
    into = "serde_json::Value"
)]
pub struct ParamsSpec {
    pub forest: ForestParams,
    pub baseline: Baseline,
    pub seasonality: Seasonality,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for ParamsSpec {
    type Error = String;

    fn try_from(mut m: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let baseline = match m.remove("baseline") {
            None => Baseline::Global,
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| format!("baseline must be \"global\" or \"entity\", got {v}"))?,
        };
        let seasonality = match m.remove("seasonality") {
            None => Seasonality::None,
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                format!("seasonality must be \"none\", \"daily\" or \"weekly\", got {v}")
            })?,
        };
        let forest =
            serde_json::from_value(serde_json::Value::Object(m)).map_err(|e| e.to_string())?;
        Ok(Self {
            forest,
            baseline,
            seasonality,
        })
    }
}

impl From<ParamsSpec> for serde_json::Value {
    fn from(p: ParamsSpec) -> Self {
        let mut v = serde_json::to_value(&p.forest).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("baseline".into(), serde_json::json!(p.baseline));
            m.insert("seasonality".into(), serde_json::json!(p.seasonality));
        }
        v
    }
}

/// When the detector's scored batches raise alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingSpec {
    /// Alert when a record reaches this severity (`null`: `--alert-severity`, v1's setting).
    pub min_severity: Option<u8>,
    /// A quiet gap that resolves an entity's incident (`null`: `--incident-close-after`).
    pub close_after: Option<String>,
    /// The rise of an incident's max severity that delivers it again (`null`: 10).
    pub renotify_severity_step: Option<u8>,
    /// How long after its last delivery an incident update is delivered again (`null`: never).
    pub renotify_after: Option<String>,
}

/// Learning from the detector's own stream (a later issue): stored as given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSpec {
    pub auto: bool,
    pub min_windows: Option<u64>,
    pub history: Option<String>,
    pub refit_every: Option<String>,
}

/// Why settings or a name cannot be used; `field` is its path in the body (`source.window`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct SpecError {
    pub detail: String,
    pub field: Option<String>,
}

impl SpecError {
    fn at(field: &str, detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            field: Some(field.to_owned()),
        }
    }
}

/// Checks a detector name: `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    Err(SpecError::at(
        "name",
        format!(
            "detector name {:?} is not valid: 1 to {MAX_NAME_LEN} characters of a-z, 0-9, _ \
             and -, starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        ),
    ))
}

/// Reads settings from a parsed JSON body and checks them; unknown fields are refused.
pub fn parse_spec(body: serde_json::Value) -> Result<DetectorSpec, SpecError> {
    if !body.is_object() {
        return Err(SpecError {
            detail:
                "detector settings are a JSON object such as {\"source\": {\"format\": \"zeek\"}}"
                    .into(),
            field: None,
        });
    }
    let spec: DetectorSpec = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        SpecError {
            detail: format!("detector settings: {}", e.inner()),
            field,
        }
    })?;
    spec.check()?;
    Ok(spec)
}

impl DetectorSpec {
    /// Checks what deserialising cannot: values, ranges, and combinations.
    pub fn check(&self) -> Result<(), SpecError> {
        let s = &self.source;
        if let Some(w) = &s.window {
            if s.format != SourceFormat::Zeek {
                return Err(SpecError::at(
                    "source.window",
                    "window applies to zeek sources only (records are not aggregated)",
                ));
            }
            w.parse::<Window>()
                .map_err(|e| SpecError::at("source.window", e.to_string()))?;
        }
        if let (Some(g), SourceFormat::Zeek) = (&s.group_by, s.format) {
            g.parse::<GroupBy>()
                .map_err(|e| SpecError::at("source.group_by", e.to_string()))?;
        }
        if let (Some(g), SourceFormat::Records) = (&s.group_by, s.format) {
            if g.trim().is_empty() {
                return Err(SpecError::at(
                    "source.group_by",
                    "group_by names the string field that identifies the entity, e.g. src_ip",
                ));
            }
        }
        if let Some(l) = &s.allowed_lateness {
            duration_secs("source.allowed_lateness", l)?;
        }
        if let Some(features) = &self.features {
            let mut seen = BTreeSet::new();
            for f in features {
                if f.trim().is_empty() {
                    return Err(SpecError::at("features", "feature names must be non-empty"));
                }
                if !seen.insert(f) {
                    return Err(SpecError::at(
                        "features",
                        format!("feature {f:?} is named twice"),
                    ));
                }
            }
            if features.is_empty() {
                return Err(SpecError::at(
                    "features",
                    "give at least one feature, or null",
                ));
            }
        }
        self.params
            .forest
            .check_static()
            .map_err(|e| SpecError::at(&format!("params.{}", e.parameter()), e.to_string()))?;
        self.check_baseline()?;
        let a = &self.alerting;
        if a.min_severity.is_some_and(|s| s > 100) {
            return Err(SpecError::at(
                "alerting.min_severity",
                "min_severity is 0 to 100",
            ));
        }
        if a.renotify_severity_step.is_some_and(|s| s == 0 || s > 100) {
            return Err(SpecError::at(
                "alerting.renotify_severity_step",
                "renotify_severity_step is 1 to 100",
            ));
        }
        if let Some(c) = &a.close_after {
            duration_secs("alerting.close_after", c)?;
        }
        if let Some(r) = &a.renotify_after {
            if duration_secs("alerting.renotify_after", r)? == 0 {
                return Err(SpecError::at(
                    "alerting.renotify_after",
                    "renotify_after must be longer than 0s",
                ));
            }
        }
        if let Some(t) = &self.training {
            if t.auto {
                return Err(SpecError::at(
                    "training.auto",
                    "automatic training from the detector's own stream is not available yet; \
                     set auto to false (or leave training out) and fit with POST \
                     /v1/detectors/{name}/model/fit",
                ));
            }
            for (field, d) in [
                ("training.history", &t.history),
                ("training.refit_every", &t.refit_every),
            ] {
                if let Some(d) = d {
                    duration_secs(field, d)?;
                }
            }
        }
        Ok(())
    }

    /// `baseline=entity` needs an entity (`source.group_by`); seasonality needs it too.
    fn check_baseline(&self) -> Result<(), SpecError> {
        let p = &self.params;
        if p.baseline == Baseline::Global {
            if p.seasonality != Seasonality::None {
                return Err(SpecError::at(
                    "params.seasonality",
                    "seasonality applies to baseline \"entity\"",
                ));
            }
            return Ok(());
        }
        let grouped = match self.source.format {
            SourceFormat::Records => self.source.group_by.is_some(),
            SourceFormat::Zeek => self
                .source
                .group_by
                .as_deref()
                .is_some_and(|g| g.parse::<GroupBy>().is_ok_and(|g| g != GroupBy::None)),
        };
        if !grouped {
            return Err(SpecError::at(
                "source.group_by",
                "baseline \"entity\" needs source.group_by: the field naming each record's \
                 entity (such as src_ip; for zeek sources id.orig_h or id.resp_h)",
            ));
        }
        Ok(())
    }

    /// The entity-baseline fit this detector's settings ask for (`None`: one global
    /// baseline).
    pub fn entity_fit(&self) -> Option<super::training::EntityFit> {
        (self.params.baseline == Baseline::Entity).then(|| super::training::EntityFit {
            field: self.entity_field().to_owned(),
            seasonality: self.params.seasonality,
        })
    }

    /// The Zeek aggregation for a request: its own `window`/`group_by` where given, else the
    /// detector's (else v1's defaults).
    pub fn zeek_options(
        &self,
        window: Option<&str>,
        group_by: Option<&str>,
    ) -> Result<ZeekOptions, crate::records::ZeekError> {
        let zeek = self.source.format == SourceFormat::Zeek;
        let window = window.or(if zeek {
            self.source.window.as_deref()
        } else {
            None
        });
        let group_by = group_by.or(if zeek {
            self.source.group_by.as_deref()
        } else {
            None
        });
        ZeekOptions::from_params(window, group_by)
    }

    /// How continuous ingest windows this detector's Zeek stream: its window, grouping and
    /// lateness, `uid` dedupe, and `on_invalid` (default `skip`). `None` for a records source.
    pub fn book_config(&self) -> Option<crate::stream::BookConfig> {
        let s = &self.source;
        if s.format != SourceFormat::Zeek {
            return None;
        }
        let zeek = self.zeek_options(None, None).ok()?;
        let lateness = match &s.allowed_lateness {
            Some(l) => duration_secs("source.allowed_lateness", l).ok()?,
            None => 0,
        };
        Some(crate::stream::BookConfig {
            window: zeek.window,
            group_by: zeek.group_by,
            allowed_lateness_secs: lateness,
            dedupe: crate::stream::Dedupe::Uid,
            on_invalid: s.on_invalid.unwrap_or(OnInvalid::Skip),
        })
    }

    /// The alert severity: the detector's `min_severity`, else the service setting.
    pub fn alert_severity(&self, service_default: u8) -> u8 {
        self.alerting.min_severity.unwrap_or(service_default)
    }

    /// How the detector's incidents grow, notify and end: its `alerting` block over the service
    /// settings (`close_after_secs`: `--incident-close-after`). Checked settings always parse.
    pub fn incident_policy(
        &self,
        close_after_secs: u64,
        top_records: usize,
    ) -> crate::store::alerts::IncidentPolicy {
        let a = &self.alerting;
        let secs = |d: &Option<String>, field| {
            d.as_deref()
                .and_then(|d| duration_secs(field, d).ok())
                .map(std::time::Duration::from_secs)
        };
        crate::store::alerts::IncidentPolicy {
            close_after: secs(&a.close_after, "alerting.close_after")
                .unwrap_or(std::time::Duration::from_secs(close_after_secs)),
            renotify_severity_step: a.renotify_severity_step.unwrap_or(10),
            renotify_after: secs(&a.renotify_after, "alerting.renotify_after"),
            top_records,
        }
    }

    /// The echoed field naming a record's entity: `entity` for Zeek windows (grouped by
    /// `group_by`), the `group_by` field of a records detector, else a field named `entity`.
    pub fn entity_field(&self) -> &str {
        match (self.source.format, &self.source.group_by) {
            (SourceFormat::Records, Some(field)) => field,
            _ => "entity",
        }
    }
}

/// Seconds of a duration such as `30s`, `5m`, `2h`, `7d` (`0s` allowed).
pub(crate) fn duration_secs(field: &str, s: &str) -> Result<u64, SpecError> {
    let bad = || {
        SpecError::at(
            field,
            format!(
                "{s:?} is not a duration; give a whole number and a unit s, m, h or d (e.g. 2m)"
            ),
        )
    };
    let text = s.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .ok_or_else(bad)
}

/// A detector as the API shows it.
#[derive(Debug, Clone)]
pub struct DetectorInfo {
    pub name: String,
    pub spec: Arc<DetectorSpec>,
    /// When its settings were first and last stored; `None` for a `default` never put.
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub model_version: Option<u64>,
}

/// Reads a stored detector's settings; a row that does not decode is reported by name.
fn decode(row: &StoredDetector) -> Result<DetectorSpec, String> {
    serde_json::from_str::<DetectorSpec>(&row.spec).map_err(|e| {
        format!(
            "detector {:?}: stored settings do not decode: {e}",
            row.name
        )
    })
}

fn encode(spec: &DetectorSpec) -> String {
    serde_json::to_string(spec).expect("detector settings serialise")
}

/// Opens a detector's model store and loads its active model (blocking).
fn build(stores: &Stores, name: &str, spec: DetectorSpec) -> Result<DetectorState, ServiceError> {
    let models = stores.models.open(name)?;
    let loaded = super::models::load_at_start(models.as_ref());
    Ok(DetectorState::new(
        name.to_owned(),
        spec,
        models,
        loaded.model,
        loaded.problem,
    ))
}

/// Every detector at start (blocking): `default` (with its stored settings, if any) and each
/// stored one. A detector whose settings do not decode is logged and left out.
pub fn load_all(stores: &Stores) -> Result<Vec<DetectorState>, ServiceError> {
    let rows = stores.detectors.detectors()?;
    let mut out = Vec::with_capacity(rows.len() + 1);
    let mut default = DetectorSpec::default();
    for row in &rows {
        let spec = match decode(row) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!("{e}; the detector is not served");
                continue;
            }
        };
        if row.name == DEFAULT_DETECTOR {
            default = spec;
        } else {
            out.push(build(stores, &row.name, spec)?);
            tracing::info!(detector = %row.name, "detector loaded");
        }
    }
    out.insert(0, build(stores, DEFAULT_DETECTOR, default)?);
    Ok(out)
}

/// Every detector, `default` first.
pub async fn list(state: &AppState) -> Result<Vec<DetectorInfo>, ServiceError> {
    let store = state.stores().detectors.clone();
    let rows = blocking(move || Ok(store.detectors()?)).await?;
    Ok(state
        .detectors()
        .into_iter()
        .map(|d| {
            let row = rows.iter().find(|r| r.name == d.name());
            info(&d, row)
        })
        .collect())
}

/// The detector called `name`.
pub async fn get(state: &AppState, name: &str) -> Result<Option<DetectorInfo>, ServiceError> {
    let Some(d) = state.detector(name) else {
        return Ok(None);
    };
    let (store, n) = (state.stores().detectors.clone(), name.to_owned());
    let row = blocking(move || Ok(store.detector(&n)?)).await?;
    Ok(Some(info(&d, row.as_ref())))
}

fn info(d: &DetectorState, row: Option<&StoredDetector>) -> DetectorInfo {
    DetectorInfo {
        name: d.name().to_owned(),
        spec: d.spec(),
        created_at: row.map(|r| r.created_at),
        updated_at: row.map(|r| r.updated_at),
        model_version: d.model().map(|m| m.version()),
    }
}

/// Creates or replaces a detector; true when it was created (never for `default`, which always
/// exists). Its models are kept on replace.
pub async fn put(
    state: &AppState,
    name: &str,
    spec: DetectorSpec,
) -> Result<(bool, DetectorInfo), ServiceError> {
    let _guard = state.detector_change_lock().lock().await;
    let (stores, n, text) = (state.stores().clone(), name.to_owned(), encode(&spec));
    let existing = state.detector(name);
    let spec = Arc::new(spec);
    let (created, row, built) = blocking(move || {
        // `default` always exists: putting its settings replaces v1's.
        let created =
            stores.detectors.put_detector(&n, &text, Utc::now())? && n != DEFAULT_DETECTOR;
        let row = stores.detectors.detector(&n)?;
        // A detector new to this process (created here, or deleted elsewhere and put again)
        // opens its model store; one already served keeps its models and only changes settings.
        let built = match existing {
            Some(_) => None,
            None => Some(build(&stores, &n, DetectorSpec::default())?),
        };
        Ok((created, row, built))
    })
    .await?;
    let detector = match built {
        Some(d) => {
            let d = Arc::new(d);
            state.insert_detector(d.clone());
            d
        }
        None => state
            .detector(name)
            .expect("served detectors are only removed under the lock"),
    };
    detector.set_spec(spec);
    tracing::info!(detector = name, created, "detector settings stored");
    Ok((created, info(&detector, row.as_ref())))
}

/// What deleting a detector removed.
pub struct Deleted {
    /// Model versions deleted with it.
    pub models: usize,
}

/// Deletes a detector's settings and its model versions; its alerts are kept. Without `force`
/// a detector that has model versions is refused ([`ServiceError::DetectorInUse`]).
pub async fn delete(state: &AppState, name: &str, force: bool) -> Result<Deleted, ServiceError> {
    if name == DEFAULT_DETECTOR {
        return Err(ServiceError::DefaultDetector);
    }
    let _guard = state.detector_change_lock().lock().await;
    let Some(detector) = state.detector(name) else {
        return Err(ServiceError::NoSuchDetector(name.to_owned()));
    };
    // No fit or rollback of this detector may run while its models go.
    let _models = detector.model_change_lock().lock().await;
    let (stores, n, d) = (state.stores().clone(), name.to_owned(), detector.clone());
    let deleted = blocking(move || {
        let versions = d.models().versions()?.len();
        if versions > 0 && !force {
            return Err(ServiceError::DetectorInUse { name: n, versions });
        }
        stores.detectors.delete_detector(&n)?;
        stores.models.remove(&n)?;
        stores.streams.delete_stream(&n)?;
        Ok(Deleted { models: versions })
    })
    .await?;
    state.remove_detector(name);
    tracing::info!(detector = name, models = deleted.models, "detector deleted");
    Ok(deleted)
}

/// Brings this process's detectors in step with the store (another replica created, changed
/// or deleted some): returns whether anything changed. Models follow in `model_sync`.
pub async fn follow_store(state: &AppState) -> Result<bool, ServiceError> {
    let _guard = state.detector_change_lock().lock().await;
    let stores = state.stores().clone();
    let served: Vec<String> = state
        .detectors()
        .iter()
        .map(|d| d.name().to_owned())
        .collect();
    let (rows, built) = blocking(move || {
        let rows = stores.detectors.detectors()?;
        let mut built = Vec::new();
        for row in &rows {
            if row.name != DEFAULT_DETECTOR && !served.contains(&row.name) {
                if let Ok(spec) = decode(row) {
                    built.push(build(&stores, &row.name, spec)?);
                }
            }
        }
        Ok((rows, built))
    })
    .await?;
    let mut changed = false;
    for d in built {
        tracing::info!(
            detector = d.name(),
            "detector created on another replica; now serving it"
        );
        state.insert_detector(Arc::new(d));
        changed = true;
    }
    for row in &rows {
        let Some(d) = state.detector(&row.name) else {
            continue;
        };
        match decode(row) {
            Ok(spec) if *d.spec() != spec => {
                d.set_spec(Arc::new(spec));
                changed = true;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}; keeping the settings in memory"),
        }
    }
    for d in state.detectors() {
        if !d.is_default() && !rows.iter().any(|r| r.name == d.name()) {
            tracing::info!(detector = d.name(), "detector deleted on another replica");
            state.remove_detector(d.name());
            changed = true;
        }
    }
    // `default` without a row has v1's settings (its row was never put, or was put elsewhere
    // and is the one above).
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_pattern() {
        for ok in ["a", "zeek-hosts", "0", "a_b-c9", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a.b",
            "a/b",
            "é",
            &"x".repeat(64),
            "a b",
        ] {
            assert_eq!(
                check_name(bad).unwrap_err().field.as_deref(),
                Some("name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_design_example_reads_once_the_later_features_are_left_out() {
        let spec = parse_spec(json!({
            "source": {"format": "zeek", "window": "5m", "group_by": "id.orig_h", "allowed_lateness": "2m"},
            "features": ["bytes_sent", "bytes_received", "connections", "active_sessions"],
            "params": {"contamination": "auto", "baseline": "global", "seasonality": "none"},
            "alerting": {"min_severity": 75, "close_after": "30m", "renotify_severity_step": 10},
            "training": {"auto": false, "min_windows": 2000, "history": "7d", "refit_every": "1d"}
        }))
        .unwrap();
        assert_eq!(spec.source.format, SourceFormat::Zeek);
        let z = spec.zeek_options(None, None).unwrap();
        assert_eq!(z.window.secs(), 300);
        assert_eq!(z.group_by, GroupBy::OrigHost);
        // The request's own settings win.
        assert_eq!(
            spec.zeek_options(Some("1m"), None).unwrap().window.secs(),
            60
        );
        assert_eq!(spec.alert_severity(90), 75);
        // What is stored reads back the same.
        let again: DetectorSpec = serde_json::from_str(&encode(&spec)).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn what_cannot_be_used_is_refused_naming_the_field() {
        let cases = [
            (json!({"sauce": {}}), Some("sauce")),
            (
                json!({"source": {"format": "syslog"}}),
                Some("source.format"),
            ),
            (
                json!({"source": {"format": "zeek", "window": "5x"}}),
                Some("source.window"),
            ),
            (json!({"source": {"window": "5m"}}), Some("source.window")),
            (
                json!({"source": {"format": "zeek", "group_by": "src_ip"}}),
                Some("source.group_by"),
            ),
            (
                json!({"source": {"allowed_lateness": "soon"}}),
                Some("source.allowed_lateness"),
            ),
            (
                json!({"params": {"baseline": "entity"}}),
                Some("source.group_by"),
            ),
            (
                json!({"source": {"format": "zeek", "group_by": "none"}, "params": {"baseline": "entity"}}),
                Some("source.group_by"),
            ),
            (
                json!({"params": {"seasonality": "daily"}}),
                Some("params.seasonality"),
            ),
            (json!({"params": {"baseline": "peer"}}), Some("params")),
            (json!({"params": {"seasonality": "hourly"}}), Some("params")),
            (
                json!({"params": {"contamination": 0.9}}),
                Some("params.contamination"),
            ),
            (json!({"params": {"n_trees": 5}}), Some("params")),
            (
                json!({"alerting": {"min_severity": 101}}),
                Some("alerting.min_severity"),
            ),
            (json!({"training": {"auto": true}}), Some("training.auto")),
            (json!({"features": ["a", "a"]}), Some("features")),
            (json!([]), None),
        ];
        for (body, field) in cases {
            let e = parse_spec(body.clone()).unwrap_err();
            assert_eq!(e.field.as_deref(), field, "{body}: {e}");
        }
        let e = parse_spec(json!({"sauce": {}})).unwrap_err();
        assert!(e.detail.contains("sauce"), "{e}");
    }

    #[test]
    fn entity_baselines_are_a_detector_setting_whose_fits_use_them() {
        use super::super::training::EntityFit;
        let spec = parse_spec(json!({
            "source": {"group_by": "src_ip"},
            "params": {"baseline": "entity", "seasonality": "daily"}
        }))
        .unwrap();
        assert_eq!(
            spec.entity_fit(),
            Some(EntityFit {
                field: "src_ip".into(),
                seasonality: Seasonality::Daily
            })
        );
        let again: DetectorSpec = serde_json::from_str(&encode(&spec)).unwrap();
        assert_eq!(again, spec);
        // A Zeek detector's entity is its windows' group.
        let zeek = parse_spec(json!({
            "source": {"format": "zeek", "window": "5m", "group_by": "id.orig_h"},
            "params": {"baseline": "entity", "seasonality": "weekly"}
        }))
        .unwrap();
        assert_eq!(zeek.entity_fit().unwrap().field, "entity");
        assert_eq!(parse_spec(json!({})).unwrap().entity_fit(), None);
    }

    #[test]
    fn an_empty_body_is_v1() {
        let spec = parse_spec(json!({})).unwrap();
        assert_eq!(spec, DetectorSpec::default());
        assert_eq!(
            spec.zeek_options(None, None).unwrap(),
            ZeekOptions::default()
        );
        assert_eq!(spec.alert_severity(75), 75);
    }
}
