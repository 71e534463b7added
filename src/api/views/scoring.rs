//! Mirrors of what a score response writes per batch and per record (hot path: the domain types are serialised as they are).

#[cfg(test)]
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether a value sits above or below what training called normal.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = Direction)]
#[serde(rename_all = "lowercase")]
pub enum DirectionView {
    Above,
    Below,
    Within,
}

/// One feature's part in a record's score.
#[cfg_attr(test, serde_with::skip_serializing_none)]
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = FeatureContribution)]
pub struct FeatureContributionView {
    /// Feature name.
    #[schema(example = "bytes_sent")]
    pub feature: String,
    /// The record's value, in original units.
    #[schema(example = 5247031.96)]
    pub value: f64,
    /// Where the value sits relative to the normal range.
    pub direction: DirectionView,
    /// Share of the record's isolation attributed to this feature, in [0, 1]; the list sums to 1.
    #[schema(example = 0.82)]
    pub contribution: f64,
    /// Normal range seen in training: the 5th and 95th percentiles, in original units (with
    /// entity baselines the entity's band at the record's hour, as `band`).
    #[schema(example = json!([671000.0, 1330000.0]))]
    pub normal_range: [f64; 2],
    /// Entity baselines only: the entity's usual value of this feature at the record's hour
    /// (its band's median), in original units.
    #[cfg_attr(test, serde(default))]
    #[schema(example = 905000.0)]
    pub expected: Option<f64>,
    /// Entity baselines only: the entity's usual band `[lo, hi]` at the record's hour
    /// (median ± 2 robust scales on the log scale, mapped back).
    #[cfg_attr(test, serde(default))]
    #[schema(example = json!([671000.0, 1330000.0]))]
    pub band: Option<[f64; 2]>,
    /// Entity baselines only: the same in words.
    #[cfg_attr(test, serde(default))]
    #[schema(example = "bytes_sent 5.2 MB; usual for 10.0.0.7 at 03:00 is 0.7–1.3 MB")]
    pub summary: Option<String>,
}

/// What a scored batch looked like as a whole.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = BatchSummary)]
pub struct BatchSummaryView {
    pub n_records: usize,
    pub n_anomalies: usize,
    /// n_anomalies / n_records.
    pub anomaly_rate: f64,
    /// The model threshold in force: a record is anomalous when score > threshold.
    pub threshold: f64,
    /// Highest severity in the batch (0 when empty).
    pub max_severity: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::views::check::mirrors;
    use crate::detector::explain::{Direction, FeatureContribution};
    use crate::detector::model::BatchSummary;

    fn contribution(direction: Direction) -> FeatureContribution {
        FeatureContribution {
            feature: "bytes_sent".into(),
            value: 5_247_031.96,
            direction,
            contribution: 0.82,
            normal_range: [671_000.0, 1_330_000.0],
            expected: Some(905_000.0),
            band: Some([671_000.0, 1_330_000.0]),
            summary: Some("bytes_sent 5.2 MB; usual for 10.0.0.7 at 03:00 is 0.7–1.3 MB".into()),
        }
    }

    #[test]
    fn feature_contribution_mirrors_the_domain_type() {
        for direction in [Direction::Above, Direction::Below, Direction::Within] {
            mirrors::<FeatureContributionView>(&contribution(direction));
            mirrors::<DirectionView>(&direction);
        }
    }

    #[test]
    fn batch_summary_mirrors_the_domain_type() {
        mirrors::<BatchSummaryView>(&BatchSummary {
            n_records: 8,
            n_anomalies: 1,
            anomaly_rate: 0.125,
            threshold: 0.5,
            max_severity: 87,
        });
    }
}
