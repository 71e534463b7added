//! The fitted model: scaler, forest, threshold and training statistics, and its file format.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a scored batch looked like as a whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchSummary {
    pub n_records: usize,
    pub n_anomalies: usize,
    /// n_anomalies / n_records.
    pub anomaly_rate: f64,
    /// The model threshold in force: a record is anomalous when score > threshold.
    pub threshold: f64,
    /// Highest severity in the batch (0 when empty).
    pub max_severity: u8,
}
