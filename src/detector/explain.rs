//! Per-record explanations: which features drove a score, in the units the user sent.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether a value sits above or below what training called normal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Above,
    Below,
    Within,
}

/// One feature's part in a record's score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureContribution {
    /// Feature name.
    #[schema(example = "bytes_sent")]
    pub feature: String,
    /// The record's value, in original units.
    #[schema(example = 5247031.96)]
    pub value: f64,
    /// Where the value sits relative to the normal range.
    pub direction: Direction,
    /// Share of the record's isolation attributed to this feature, in [0, 1]; the list sums to 1.
    #[schema(example = 0.82)]
    pub contribution: f64,
    /// Normal range seen in training: the 5th and 95th percentiles, in original units.
    #[schema(example = json!([671000.0, 1330000.0]))]
    pub normal_range: [f64; 2],
}
