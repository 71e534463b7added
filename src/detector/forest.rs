//! STUB (lead's local placeholder, never committed)
use super::Matrix;
use super::params::CheckedParams;
use serde::{Deserialize, Serialize};
pub fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.5772156649) - 2.0 * (n - 1.0) / n
    }
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    d: usize,
}
impl IsolationForest {
    pub fn fit(x: &Matrix, _p: &CheckedParams) -> IsolationForest {
        IsolationForest { d: x.n_cols() }
    }
    pub fn n_features(&self) -> usize {
        self.d
    }
    pub fn n_trees(&self) -> usize {
        1
    }
    pub fn max_samples(&self) -> usize {
        256
    }
    pub fn score_matrix(&self, x: &Matrix) -> Vec<f64> {
        let mut o = vec![0.0; x.n_rows()];
        self.score_into(x.as_slice(), &mut o);
        o
    }
    pub fn score_into(&self, rows: &[f64], out: &mut [f64]) {
        for (r, o) in rows.chunks(self.d).zip(out.iter_mut()) {
            let m = r.iter().map(|v| v.abs()).fold(0.0, f64::max);
            *o = 1.0 - 0.6 / (1.0 + m);
        }
    }
    pub fn attribution(&self, row: &[f64]) -> Vec<f64> {
        let s: f64 = row.iter().map(|v| v.abs()).sum();
        row.iter()
            .map(|v| if s > 0.0 { v.abs() / s } else { 0.0 })
            .collect()
    }
}
