//! The complete-tree layout: trees of height <= 8 as implicit binary trees, children of node `i` at `2i+1` and `2i+2`.

use super::layout::LANES;
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

    /// One step down: `i` is below 2^height - 1 <= 255 while walking; the masks only tell the
    /// compiler so, which removes the bounds checks.
    #[inline(always)]
    fn step(&self, i: usize, x: impl Fn(usize) -> f64) -> usize {
        let m = i & (COMPLETE_SLOTS - 1);
        2 * i + 1 + usize::from(x(self.feature[m] as usize) > self.threshold[m])
    }

    #[inline(always)]
    fn leaf_at(&self, i: usize) -> f64 {
        let first_leaf = (1usize << self.height) - 1;
        self.leaf[i.wrapping_sub(first_leaf) & (COMPLETE_SLOTS - 1)]
    }

    pub(super) fn accumulate(&self, rows: &[f64], nf: usize, acc: &mut [f64]) {
        for (row, a) in rows.chunks_exact(nf).zip(acc.iter_mut()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = self.step(idx, |f| row[f]);
            }
            *a += self.leaf_at(idx);
        }
    }

    pub(super) fn accumulate_padded<const P: usize>(&self, rows: &[[f64; P]], acc: &mut [f64]) {
        let mut groups = rows.chunks_exact(LANES);
        let mut accs = acc.chunks_exact_mut(LANES);
        for (g, a) in (&mut groups).zip(&mut accs) {
            let mut idx = [0usize; LANES];
            for _ in 0..self.height {
                for k in 0..LANES {
                    idx[k] = self.step(idx[k], |f| g[k][f & (P - 1)]);
                }
            }
            for k in 0..LANES {
                a[k] += self.leaf_at(idx[k]);
            }
        }
        for (row, a) in groups.remainder().iter().zip(accs.into_remainder()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = self.step(idx, |f| row[f & (P - 1)]);
            }
            *a += self.leaf_at(idx);
        }
    }
}
