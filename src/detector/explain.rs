//! Per-record explanations: which features drove a score, in the units the user sent.

use serde::{Deserialize, Serialize};

/// Whether a value sits above or below what training called normal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Above,
    Below,
    Within,
}

/// One feature's part in a record's score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureContribution {
    /// Feature name.
    pub feature: String,
    /// The record's value, in original units.
    pub value: f64,
    /// Where the value sits relative to the normal range.
    pub direction: Direction,
    /// Share of the record's isolation attributed to this feature, in [0, 1]; the list sums to 1.
    pub contribution: f64,
    /// Normal range seen in training: the 5th and 95th percentiles, in original units.
    pub normal_range: [f64; 2],
}
