//! The complete-tree layout: trees of height <= 8 as implicit binary trees, children of node `i` at `2i+1` and `2i+2`.

use super::layout::{FeatureStep, Layout};
use super::{COMPLETE_SLOTS, Tree};

/// A tree of height <= [`COMPLETE_MAX_HEIGHT`](super::COMPLETE_MAX_HEIGHT) as a complete binary tree: internal node `i` has
/// children `2i+1` and `2i+2`; after `height` steps a record sits at `2^height - 1 + leaf slot`.
/// Leaves shallower than `height` are padded with nodes whose threshold is +inf (always left),
/// and the leftmost slot below them holds their value.
#[derive(Clone)]
pub(super) struct CompleteTree {
    pub(super) threshold: [f64; COMPLETE_SLOTS],
    pub(super) feature: [u32; COMPLETE_SLOTS],
    pub(super) leaf: [f64; COMPLETE_SLOTS],
    pub(super) height: usize,
}

impl CompleteTree {
    /// `tree` (validated) laid out complete; `depth` holds its nodes' depths and `height`, at most
    /// [`COMPLETE_MAX_HEIGHT`](super::COMPLETE_MAX_HEIGHT), is its deepest leaf's.
    pub(super) fn build(tree: &Tree, depth: &[usize], height: usize) -> Box<CompleteTree> {
        let mut c = Box::new(CompleteTree {
            threshold: [f64::INFINITY; COMPLETE_SLOTS],
            feature: [0; COMPLETE_SLOTS],
            leaf: [0.0; COMPLETE_SLOTS],
            height,
        });
        let first_leaf = (1usize << height) - 1;
        // (canonical node, complete index) pairs, parents before children.
        let mut todo = vec![(0usize, 0usize)];
        while let Some((i, ci)) = todo.pop() {
            if tree.is_leaf(i) {
                // Every slot below this leaf is reachable only through it: give all its value.
                let span = 1usize << (height - depth[i]);
                let first = (ci + 1) * span - 1 - first_leaf;
                let v = tree.leaf_value(i, depth[i]);
                c.leaf[first..first + span].fill(v);
            } else {
                c.threshold[ci] = tree.threshold[i];
                c.feature[ci] = tree.feature[i];
                let l = tree.left[i] as usize;
                todo.push((l, 2 * ci + 1));
                todo.push((l + 1, 2 * ci + 2));
            }
        }
        c
    }
}

/// The complete layouts, wide and narrow, keep their leaves by slot with the tree's height: one
/// [`Layout`] serves both.
pub(super) trait CompleteLeaves {
    /// The value of every leaf slot, and the height.
    fn leaves(&self) -> (&[f64; COMPLETE_SLOTS], usize);
}

impl<T: CompleteLeaves> Layout for T {
    #[inline(always)]
    fn height(&self) -> usize {
        self.leaves().1
    }

    /// After `height` steps a record sits at node `2^height - 1 + slot`. The mask only tells the
    /// compiler that the slot is in range, which removes the bounds check.
    #[inline(always)]
    fn leaf(&self, i: usize) -> f64 {
        let (leaf, height) = self.leaves();
        let first_leaf = (1usize << height) - 1;
        leaf[i.wrapping_sub(first_leaf) & (COMPLETE_SLOTS - 1)]
    }
}

impl CompleteLeaves for CompleteTree {
    #[inline(always)]
    fn leaves(&self) -> (&[f64; COMPLETE_SLOTS], usize) {
        (&self.leaf, self.height)
    }
}

impl FeatureStep for CompleteTree {
    /// `i` is below 2^height - 1 <= 255 while walking; the masks only tell the compiler so, which
    /// removes the bounds checks.
    #[inline(always)]
    fn step(&self, i: usize, x: impl Fn(usize) -> f64) -> usize {
        let m = i & (COMPLETE_SLOTS - 1);
        2 * i + 1 + usize::from(x(self.feature[m] as usize) > self.threshold[m])
    }
}
