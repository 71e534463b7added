//! What the f64 layouts share: the choice of layout per tree and the walk's lane count.

use super::complete::CompleteTree;
use super::narrow::{NARROW, NarrowTree};
use super::pointer::PointerTree;
use super::{COMPLETE_MAX_HEIGHT, Tree};

/// Records walked down a tree side by side; their loads overlap instead of waiting on each other.
pub(super) const LANES: usize = 8;

#[derive(Clone)]
pub(super) enum FastTree {
    Narrow(Box<NarrowTree>),
    Complete(Box<CompleteTree>),
    Pointer(PointerTree),
}

impl FastTree {
    /// Builds the scoring layout; `tree` has been validated (features < n_features, children in range).
    pub(super) fn build(tree: &Tree, n_features: usize) -> FastTree {
        let depth = tree.depths();
        let height = (0..tree.len())
            .filter(|&i| tree.is_leaf(i))
            .map(|i| depth[i])
            .max()
            .unwrap_or(0);
        if height <= COMPLETE_MAX_HEIGHT {
            let c = CompleteTree::build(tree, &depth, height);
            if n_features <= NARROW {
                FastTree::Narrow(Box::new(NarrowTree::from_complete(&c)))
            } else {
                FastTree::Complete(c)
            }
        } else {
            FastTree::Pointer(PointerTree::build(tree, &depth, height))
        }
    }

    /// Adds this tree's path length of each row of `rows` (row-major, `nf` wide) to `acc`.
    pub(super) fn accumulate(&self, rows: &[f64], nf: usize, acc: &mut [f64]) {
        match self {
            FastTree::Complete(t) => t.accumulate(rows, nf, acc),
            FastTree::Pointer(t) => t.accumulate(rows, nf, acc),
            FastTree::Narrow(_) => unreachable_layout(),
        }
    }

    /// As [`accumulate`](Self::accumulate) on rows zero-padded to a power-of-two width `P`:
    /// feature indices masked with `P - 1` need no bounds checks and row offsets are constants,
    /// which frees the registers that keep [`LANES`] records in flight.
    pub(super) fn accumulate_padded<const P: usize>(&self, rows: &[[f64; P]], acc: &mut [f64]) {
        match self {
            FastTree::Complete(t) => t.accumulate_padded(rows, acc),
            FastTree::Pointer(t) => t.accumulate_padded(rows, acc),
            FastTree::Narrow(_) => unreachable_layout(),
        }
    }
}

/// Narrow trees exist only in forests of at most [`NARROW`] features, which are always scored
/// through [`IsolationForest::score_narrow`](super::IsolationForest::score_narrow).
#[cold]
fn unreachable_layout() {
    debug_assert!(false, "narrow tree outside a narrow forest");
}
