//! The pointer layout of trees too deep to be complete: explicit child indices, leaves that step onto themselves.

use super::Tree;
use super::layout::LANES;

/// A deeper tree in pointer form: step `i -> next[i] + (x[feature[i]] > threshold[i])`; a leaf
/// points to itself with threshold +inf, so walking `height` steps from the root ends on the leaf.
#[derive(Clone)]
pub(super) struct PointerTree {
    nodes: Vec<PointerNode>,
    value: Vec<f64>,
    height: usize,
}

#[derive(Clone, Copy)]
struct PointerNode {
    threshold: f64,
    feature: u32,
    next: u32,
}

impl PointerTree {
    /// `tree` (validated) in pointer form; `depth` holds its nodes' depths and `height` is its
    /// deepest leaf's.
    pub(super) fn build(tree: &Tree, depth: &[usize], height: usize) -> PointerTree {
        let mut nodes = Vec::with_capacity(tree.len());
        let mut value = vec![0.0; tree.len()];
        for i in 0..tree.len() {
            if tree.is_leaf(i) {
                nodes.push(PointerNode {
                    threshold: f64::INFINITY,
                    feature: 0,
                    next: i as u32,
                });
                value[i] = tree.leaf_value(i, depth[i]);
            } else {
                nodes.push(PointerNode {
                    threshold: tree.threshold[i],
                    feature: tree.feature[i],
                    next: tree.left[i],
                });
            }
        }
        PointerTree {
            nodes,
            value,
            height,
        }
    }

    #[inline(always)]
    fn step(&self, i: usize, x: impl Fn(usize) -> f64) -> usize {
        let n = self.nodes[i];
        n.next as usize + usize::from(x(n.feature as usize) > n.threshold)
    }

    pub(super) fn accumulate(&self, rows: &[f64], nf: usize, acc: &mut [f64]) {
        for (row, a) in rows.chunks_exact(nf).zip(acc.iter_mut()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = self.step(idx, |f| row[f]);
            }
            *a += self.value[idx];
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
                a[k] += self.value[idx[k]];
            }
        }
        for (row, a) in groups.remainder().iter().zip(accs.into_remainder()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = self.step(idx, |f| row[f & (P - 1)]);
            }
            *a += self.value[idx];
        }
    }
}
