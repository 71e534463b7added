//! The tutorial's StandardScaler (mean 0, unit variance per feature), fitted by linfa and kept in the model.
//!
//! linfa-preprocessing's `LinearScaler::standard()` computes exactly scikit-learn's statistics
//! (mean, population standard deviation, scale 1 for a constant column), so it does the fitting.
//! Applying it is done here on our row-major [`Matrix`] so that scoring can scale a chunk at a time
//! into a reused buffer instead of copying a whole batch into an `ndarray`.

use linfa::prelude::*;
use linfa_preprocessing::linear_scaling::LinearScaler;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::Matrix;

/// Per-feature mean and multiplier: `scaled = (x - mean) * inv_std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    means: Vec<f64>,
    inv_stds: Vec<f64>,
}

/// Why a scaler could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalerError {
    #[error("cannot fit a scaler on zero rows")]
    NoRows,
    #[error("scaler fit failed: {0}")]
    Linfa(String),
}

impl Scaler {
    /// Learns each column's mean and standard deviation (ddof = 0, as scikit-learn).
    pub fn fit(x: &Matrix) -> Result<Self, ScalerError> {
        if x.is_empty() {
            return Err(ScalerError::NoRows);
        }
        let view = ArrayView2::from_shape((x.n_rows(), x.n_cols()), x.as_slice())
            .map_err(|e| ScalerError::Linfa(e.to_string()))?;
        let dataset = DatasetBase::from(view);
        let fitted: LinearScaler<f64> = LinearScaler::standard()
            .fit(&dataset)
            .map_err(|e| ScalerError::Linfa(e.to_string()))?;
        Ok(Self {
            means: fitted.offsets().to_vec(),
            inv_stds: fitted.scales().to_vec(),
        })
    }

    pub fn n_features(&self) -> usize {
        self.means.len()
    }

    /// Column means seen in training.
    pub fn means(&self) -> &[f64] {
        &self.means
    }

    /// Standard deviations seen in training (1 for a constant column).
    pub fn stds(&self) -> Vec<f64> {
        self.inv_stds.iter().map(|s| 1.0 / s).collect()
    }

    /// Scales row-major `rows` into `out` (same length, a multiple of the feature count).
    pub fn transform_into(&self, rows: &[f64], out: &mut [f64]) {
        let d = self.means.len();
        for (src, dst) in rows.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            for j in 0..d {
                dst[j] = (src[j] - self.means[j]) * self.inv_stds[j];
            }
        }
    }

    /// Scales one row.
    pub fn transform_row(&self, row: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; row.len()];
        self.transform_into(row, &mut out);
        out
    }

    /// Scales a whole matrix into a new one.
    pub fn transform(&self, x: &Matrix) -> Matrix {
        let mut out = vec![0.0; x.as_slice().len()];
        self.transform_into(x.as_slice(), &mut out);
        Matrix::new(x.n_rows(), x.n_cols(), out).expect("same shape as a valid matrix")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn_standard_scaler() {
        // sklearn: StandardScaler().fit([[1,10,5],[2,20,5],[3,60,5]]) -> mean_ [2, 30, 5],
        // scale_ [0.816496580927726, 21.602468994692867, 1.0]
        let x = Matrix::from_rows(&[[1.0, 10.0, 5.0], [2.0, 20.0, 5.0], [3.0, 60.0, 5.0]]).unwrap();
        let s = Scaler::fit(&x).unwrap();
        assert_eq!(s.means(), &[2.0, 30.0, 5.0]);
        let stds = s.stds();
        assert!((stds[0] - 0.816496580927726).abs() < 1e-12);
        assert!((stds[1] - 21.602468994692867).abs() < 1e-12);
        assert_eq!(stds[2], 1.0);
        let t = s.transform(&x);
        assert!((t.row(0)[0] + 1.224744871391589).abs() < 1e-12);
        assert_eq!(t.row(1)[2], 0.0);
    }

    #[test]
    fn empty_is_an_error() {
        let x = Matrix::new(0, 2, vec![]).unwrap();
        assert_eq!(Scaler::fit(&x), Err(ScalerError::NoRows));
    }
}
