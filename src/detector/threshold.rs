//! STUB
pub fn percentile_linear(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let idx = (v.len() - 1) as f64 * q / 100.0;
    let lo = idx.floor() as usize;
    let hi = idx.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (idx - lo as f64)
}
pub fn contamination_threshold(s: &[f64], c: f64) -> f64 {
    percentile_linear(s, 100.0 * (1.0 - c))
}
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BudgetThreshold {
    pub threshold: f64,
    pub max_false_positive_rate: f64,
    pub false_positive_rate: f64,
    pub recall: f64,
    pub precision: f64,
    pub n_flagged: u64,
}
#[derive(Debug, thiserror::Error)]
#[error("budget")]
pub struct ThresholdError;
pub fn threshold_for_fpr_budget(
    _y: &[bool],
    _s: &[f64],
    _m: f64,
) -> Result<BudgetThreshold, ThresholdError> {
    Err(ThresholdError)
}
