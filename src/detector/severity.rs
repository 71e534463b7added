//! Severity: the anomaly score on a 0–100 scale that analysts and SIEMs sort and filter by.
//!
//! The mapping is fixed, not per model, so a severity means the same thing across models:
//! `severity = round(100 × clamp((score − 0.4) / 0.4, 0, 1))`.
//! Isolation Forest scores sit near or below 0.5 for ordinary points and approach 1 for points
//! isolated in a few splits (Liu et al. 2008), so:
//!
//! | score | severity | reading |
//! |---|---|---|
//! | ≤ 0.40 | 0 | ordinary |
//! | 0.50 | 25 | the paper's "no distinct anomaly" line (the `auto` threshold) |
//! | 0.60 | 50 | unusual |
//! | 0.70 | 75 | strongly anomalous |
//! | ≥ 0.80 | 100 | isolated almost at once (the seed data's bursts score about here) |
//!
//! It is monotonic (non-decreasing) in the score.

/// Score at which severity starts to rise above 0.
pub const SEVERITY_FLOOR_SCORE: f64 = 0.4;
/// Score at which severity reaches 100.
pub const SEVERITY_CEIL_SCORE: f64 = 0.8;

/// Maps an anomaly score in (0, 1] to a severity in 0..=100. Non-finite scores map to 0.
pub fn severity(score: f64) -> u8 {
    if !score.is_finite() {
        return 0;
    }
    let t = (score - SEVERITY_FLOOR_SCORE) / (SEVERITY_CEIL_SCORE - SEVERITY_FLOOR_SCORE);
    (t.clamp(0.0, 1.0) * 100.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands() {
        let bands = [
            (0.3, 0),
            (0.4, 0),
            (0.5, 25),
            (0.6, 50),
            (0.7, 75),
            (0.8, 100),
            (1.0, 100),
            (f64::NAN, 0),
        ];
        for (score, band) in bands {
            assert_eq!(severity(score), band, "score {score}");
        }
    }

    #[test]
    fn monotonic() {
        let mut last = 0;
        for i in 0..=10_000 {
            let s = severity(i as f64 / 10_000.0);
            assert!(s >= last);
            last = s;
        }
    }
}
