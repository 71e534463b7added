//! The narrow layout: complete trees of forests of at most 4 features, where a step compares the whole record at once.

use super::COMPLETE_SLOTS;
use super::complete::{CompleteLeaves, CompleteTree};
use super::layout::{LANES, accumulate_lanes};

/// Width of the rows a [`NarrowTree`] compares against.
pub(super) const NARROW: usize = 4;

/// A complete tree for forests of at most [`NARROW`] features: node `i` holds a threshold per
/// feature, its own threshold at its split feature and +inf elsewhere, so "goes right" is
/// `any(x > t)` over the record's whole (zero-padded) row. That is the same decision as
/// `x[feature] > threshold` (nothing exceeds +inf, NaN compares false) without loading the
/// feature index or the value, and it compiles to one vector compare per step.
#[derive(Clone)]
pub(super) struct NarrowTree {
    pub(super) node: [[f64; NARROW]; COMPLETE_SLOTS],
    pub(super) leaf: [f64; COMPLETE_SLOTS],
    pub(super) height: usize,
}

impl NarrowTree {
    pub(super) fn from_complete(c: &CompleteTree) -> NarrowTree {
        let mut node = [[f64::INFINITY; NARROW]; COMPLETE_SLOTS];
        for (n, (&f, &t)) in node.iter_mut().zip(c.feature.iter().zip(&c.threshold)) {
            n[f as usize % NARROW] = t;
        }
        NarrowTree {
            node,
            leaf: c.leaf,
            height: c.height,
        }
    }

    #[inline(always)]
    fn step(&self, i: usize, x: &[f64; NARROW]) -> usize {
        let t = &self.node[i & (COMPLETE_SLOTS - 1)];
        let right = (x[0] > t[0]) | (x[1] > t[1]) | (x[2] > t[2]) | (x[3] > t[3]);
        2 * i + 1 + usize::from(right)
    }

    /// Adds this tree's path length of each row to `acc`, [`LANES`] records in flight.
    #[inline(always)]
    pub(super) fn accumulate(&self, rows: &[[f64; NARROW]], acc: &mut [f64]) {
        accumulate_lanes::<_, _, LANES>(self, rows, acc, |i, g, k| self.step(i, &g[k]));
    }
}

impl CompleteLeaves for NarrowTree {
    #[inline(always)]
    fn leaves(&self) -> (&[f64; COMPLETE_SLOTS], usize) {
        (&self.leaf, self.height)
    }
}
