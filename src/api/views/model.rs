//! Model shapes: the view of a model's metadata (the model file keeps its own JSON) and the mirror of the forest parameters a fit reads.

use chrono::{DateTime, Utc};
#[cfg(test)]
use serde::Deserialize;
use serde::Serialize;
use serde_with::skip_serializing_none;
use utoipa::ToSchema;

use crate::detector::baseline::{Baseline, Seasonality};
use crate::detector::model::{FeatureStats, ModelMeta, ThresholdSource};
use crate::detector::params::{Contamination, ForestParams, MaxFeatures, MaxSamples};

/// Parameters as a user gives them; [`ForestParams::check`] validates them.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = ForestParams)]
#[serde(default, deny_unknown_fields)]
pub struct ForestParamsView {
    /// Number of trees (default 100).
    #[schema(example = 100)]
    pub n_estimators: u64,
    /// `"auto"` (= min(256, n)), a row count, or a fraction of n.
    #[schema(schema_with = schema::max_samples, example = "auto")]
    pub max_samples: MaxSamples,
    /// `"auto"` (threshold 0.5) or a fraction in (0, 0.5].
    #[schema(schema_with = schema::contamination, example = "auto")]
    pub contamination: Contamination,
    /// A fraction in (0, 1] or a count of features (default 1.0: all).
    #[schema(schema_with = schema::max_features, example = 1.0)]
    pub max_features: MaxFeatures,
    /// Draw each tree's rows with replacement (default false).
    pub bootstrap: bool,
    /// Seed of every random choice; same seed, same model.
    #[schema(example = 42)]
    pub seed: u64,
}

default_from_domain!(ForestParamsView: ForestParams {
    n_estimators,
    max_samples,
    contamination,
    max_features,
    bootstrap,
    seed,
});

/// OpenAPI shapes of the "auto, a count or a fraction" parameters. `anyOf`, not the `oneOf` a
/// derived untagged enum gives: a whole number such as 1 is both a JSON Schema integer and a
/// number, so `oneOf` would reject it.
pub(super) mod schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaType, Type};

    fn auto() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(["auto"]))
    }

    fn count() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .minimum(Some(1))
    }

    fn fraction(max: f64) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Number))
            .exclusive_minimum(Some(0.0))
            .maximum(Some(max))
    }

    pub fn max_samples() -> AnyOfBuilder {
        AnyOfBuilder::new()
            .item(auto())
            .item(count())
            .item(fraction(1.0))
            .description(Some(
                "`\"auto\"` (= min(256, n)), a row count, or a fraction of n in (0, 1].",
            ))
    }

    pub fn contamination() -> AnyOfBuilder {
        AnyOfBuilder::new()
            .item(auto())
            .item(fraction(0.5))
            .description(Some(
                "`\"auto\"` (threshold 0.5) or a fraction in (0, 0.5].",
            ))
    }

    pub fn max_features() -> AnyOfBuilder {
        AnyOfBuilder::new()
            .item(count())
            .item(fraction(1.0))
            .description(Some(
                "A count of features or a fraction in (0, 1] (default 1.0: all).",
            ))
    }
}

/// The schema of one feature's training distribution: [`FeatureStats`] is written as the
/// model keeps it, and described here.
pub struct FeatureStatsView;

impl ToSchema for FeatureStatsView {
    fn name() -> std::borrow::Cow<'static, str> {
        "FeatureStats".into()
    }
}

impl utoipa::PartialSchema for FeatureStatsView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        let fields = [
            ("mean", None),
            ("std", Some("Population standard deviation (ddof = 0).")),
            ("min", None),
            (
                "p05",
                Some("5th percentile: the low end of the normal range used in explanations."),
            ),
            ("median", None),
            (
                "p95",
                Some("95th percentile: the high end of the normal range used in explanations."),
            ),
            ("max", None),
        ];
        let mut object = ObjectBuilder::new()
            .description(Some(
                "One feature's distribution in the training data, in original units.",
            ))
            .property("name", ObjectBuilder::new().schema_type(Type::String))
            .required("name");
        for (field, description) in fields {
            let number = ObjectBuilder::new()
                .schema_type(Type::Number)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
                .description(description);
            object = object.property(field, number).required(field);
        }
        object.into()
    }
}

/// Everything about a model except its trees: what `GET /v1/model` shows.
#[skip_serializing_none]
#[derive(Serialize, ToSchema)]
#[schema(as = ModelMeta)]
pub struct ModelMetaView {
    /// Version number, increasing with each fit; 0 until the model is stored.
    #[schema(example = 1)]
    pub version: u64,
    pub trained_at: DateTime<Utc>,
    /// Feature names, in the order the model reads them.
    #[schema(example = json!(["bytes_sent", "bytes_received", "connections", "active_sessions"]))]
    pub features: Vec<String>,
    // Written as a fit reads it: the domain type, described by its mirror.
    #[schema(value_type = ForestParamsView)]
    pub params: ForestParams,
    /// A record is anomalous when its score is strictly greater than this.
    #[schema(example = 0.5)]
    pub threshold: f64,
    /// Where the threshold came from.
    pub threshold_source: ThresholdSourceView,
    pub n_training_records: usize,
    /// Share of training records above the threshold.
    pub training_anomaly_rate: f64,
    /// Wall-clock seconds the fit took (scaling, trees, threshold, statistics).
    pub fit_seconds: f64,
    /// Training distribution of each feature.
    #[schema(value_type = Vec<FeatureStatsView>)]
    pub feature_stats: Vec<FeatureStats>,
    /// `entity` when each record is judged against its own entity's baseline (absent:
    /// `global`, one baseline for all).
    #[schema(value_type = Option<String>, example = "entity")]
    pub baseline: Option<&'static str>,
    /// The entity baseline's seasonality, `daily` or `weekly` (absent: `none`).
    #[schema(value_type = Option<String>, example = "daily")]
    pub seasonality: Option<&'static str>,
    /// The string field naming each record's entity (entity baselines only; `entity` for
    /// Zeek windows grouped by host).
    #[schema(example = "src_ip")]
    pub entity_field: Option<String>,
    /// Records of the training data a suppression rule matched: left out of the fit (not
    /// counted in `n_training_records`).
    pub suppressed_records: usize,
}

impl From<&ModelMeta> for ModelMetaView {
    fn from(m: &ModelMeta) -> Self {
        Self {
            version: m.version,
            trained_at: m.trained_at,
            features: m.features.clone(),
            params: m.params.clone(),
            threshold: m.threshold,
            threshold_source: m.threshold_source.into(),
            n_training_records: m.n_training_records,
            training_anomaly_rate: m.training_anomaly_rate,
            fit_seconds: m.fit_seconds,
            feature_stats: m.feature_stats.clone(),
            baseline: (m.baseline == Baseline::Entity).then_some("entity"),
            seasonality: match m.seasonality {
                Seasonality::None => None,
                Seasonality::Daily => Some("daily"),
                Seasonality::Weekly => Some("weekly"),
            },
            entity_field: m.entity_field.clone(),
            suppressed_records: m.suppressed_records,
        }
    }
}

/// How a model's threshold was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ThresholdSource)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSourceView {
    /// `contamination: "auto"`: 0.5, the paper's cut-off.
    Auto,
    /// A contamination fraction: that quantile of the training scores.
    Contamination,
    /// A score given at fit time (for example the one `POST /v1/evaluate` found for a false-alert budget).
    Fixed,
}

impl From<ThresholdSource> for ThresholdSourceView {
    fn from(s: ThresholdSource) -> Self {
        match s {
            ThresholdSource::Auto => Self::Auto,
            ThresholdSource::Contamination => Self::Contamination,
            ThresholdSource::Fixed => Self::Fixed,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::views::check::{mirrors, same_json};
    use crate::detector::params::AutoTag;

    fn params() -> [ForestParams; 3] {
        [
            ForestParams::default(),
            ForestParams {
                n_estimators: 7,
                max_samples: MaxSamples::Count(64),
                contamination: Contamination::Fraction(0.05),
                max_features: MaxFeatures::Count(2),
                bootstrap: true,
                seed: 1,
            },
            ForestParams {
                max_samples: MaxSamples::Fraction(0.5),
                contamination: Contamination::Auto(AutoTag::Auto),
                max_features: MaxFeatures::Fraction(0.75),
                ..ForestParams::default()
            },
        ]
    }

    #[test]
    fn forest_params_mirror_the_domain_type() {
        for p in params() {
            mirrors::<ForestParamsView>(&p);
        }
    }

    #[test]
    fn model_metadata_is_written_as_before() {
        let sources = [
            ThresholdSource::Auto,
            ThresholdSource::Contamination,
            ThresholdSource::Fixed,
        ];
        for (params, threshold_source) in params().into_iter().zip(sources) {
            let meta = ModelMeta {
                version: 3,
                trained_at: Utc.timestamp_opt(1_704_067_200, 123_000_000).unwrap(),
                features: vec!["bytes_sent".into(), "connections".into()],
                params,
                threshold: 0.512_345_678_9,
                threshold_source,
                n_training_records: 720,
                training_anomaly_rate: 0.011_111_111_111_111_112,
                fit_seconds: 0.25,
                feature_stats: vec![FeatureStats {
                    name: "bytes_sent".into(),
                    mean: 1_000_123.5,
                    std: 99_999.25,
                    min: 0.0,
                    p05: 671_000.0,
                    median: 1e6,
                    p95: 1_330_000.0,
                    max: 5_247_031.96,
                }],
                baseline: Baseline::Global,
                seasonality: Seasonality::None,
                entity_field: None,
                suppressed_records: 12,
            };
            same_json(&ModelMetaView::from(&meta), &meta);
            let entity = ModelMeta {
                baseline: Baseline::Entity,
                seasonality: Seasonality::Daily,
                entity_field: Some("src_ip".into()),
                ..meta
            };
            same_json(&ModelMetaView::from(&entity), &entity);
        }
    }
}
