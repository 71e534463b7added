//! The detection engine: Isolation Forest, scaler, thresholds, explanations, generator and metrics.
//!
//! Nothing here knows about HTTP; the API layer converts its bodies into these types.

pub mod baseline;
pub mod explain;
pub mod forest;
pub mod generator;
pub mod metrics;
pub mod model;
pub mod params;
pub mod scaler;
pub mod severity;
pub mod threshold;

/// Work on up to this many records stays on the calling thread (scoring, explaining): handing
/// it to the rayon pool costs two thread switches (and idle workers spinning), more than the
/// work takes, and under concurrent requests the other core is busy anyway. Larger batches are
/// split across the pool.
pub const SEQUENTIAL_RECORDS: usize = 4096;

use serde::{Deserialize, Serialize};

/// A dense, row-major table of `f64` features: row `i` is `data[i * n_cols..(i + 1) * n_cols]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    n_rows: usize,
    n_cols: usize,
    data: Vec<f64>,
}

/// Why a [`Matrix`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixError {
    #[error("expected {expected} values for {n_rows} rows of {n_cols} columns, got {got}")]
    Shape {
        n_rows: usize,
        n_cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("a matrix needs at least one column")]
    NoColumns,
}

impl Matrix {
    /// Wraps row-major `data` of `n_rows` x `n_cols` values.
    pub fn new(n_rows: usize, n_cols: usize, data: Vec<f64>) -> Result<Self, MatrixError> {
        if n_cols == 0 {
            return Err(MatrixError::NoColumns);
        }
        let expected = n_rows * n_cols;
        if data.len() != expected {
            return Err(MatrixError::Shape {
                n_rows,
                n_cols,
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            n_rows,
            n_cols,
            data,
        })
    }

    /// Builds a matrix from equally long rows.
    pub fn from_rows<R: AsRef<[f64]>>(rows: &[R]) -> Result<Self, MatrixError> {
        let n_cols = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * n_cols);
        for r in rows {
            data.extend_from_slice(r.as_ref());
        }
        Self::new(rows.len(), n_cols, data)
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    pub fn is_empty(&self) -> bool {
        self.n_rows == 0
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f64> {
        self.data
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }

    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f64]> {
        self.data.chunks_exact(self.n_cols)
    }

    /// Values of column `j`, top to bottom.
    pub fn column(&self, j: usize) -> impl Iterator<Item = f64> + '_ {
        self.data.iter().skip(j).step_by(self.n_cols).copied()
    }
}
