//! The pointer layout of trees too deep to be complete: explicit child indices, leaves that step onto themselves.

use super::Tree;
use super::layout::{FeatureStep, Layout};

/// A deeper tree in pointer form: step `i -> next[i] + (x[feature[i]] > threshold[i])`; a leaf
/// points to itself with threshold +inf, so walking `height` steps from the root ends on the leaf.
#[derive(Clone)]
pub(super) struct PointerTree {
    nodes: Vec<PointerNode>,
    value: Vec<f64>,
    height: usize,
}

/// A node of a [`PointerTree`], and of the attribution's layout, whose indices run over the
/// whole forest's nodes.
#[derive(Clone, Copy, Debug)]
pub(super) struct PointerNode {
    /// Split threshold; +inf at a leaf, so no value goes right.
    threshold: f64,
    /// Split feature (0 at a leaf).
    feature: u32,
    /// Index of the left child (the right one follows it); a leaf's own index.
    next: u32,
}

impl PointerNode {
    /// Node `i` of `tree` (validated), its indices shifted by `start`.
    pub(super) fn new(tree: &Tree, i: usize, start: usize) -> PointerNode {
        let index =
            |i: usize| u32::try_from(start + i).expect("forests stay under 2^32 nodes and weights");
        if tree.is_leaf(i) {
            PointerNode {
                threshold: f64::INFINITY,
                feature: 0,
                next: index(i),
            }
        } else {
            PointerNode {
                threshold: tree.threshold[i],
                feature: tree.feature[i],
                next: index(tree.left[i] as usize),
            }
        }
    }

    /// The next node for a record whose value of feature `f` is `x(f)`.
    #[inline(always)]
    pub(super) fn step(self, x: impl Fn(usize) -> f64) -> usize {
        self.next as usize + usize::from(x(self.feature as usize) > self.threshold)
    }
}

impl PointerTree {
    /// `tree` (validated) in pointer form; `depth` holds its nodes' depths and `height` is its
    /// deepest leaf's.
    pub(super) fn build(tree: &Tree, depth: &[usize], height: usize) -> PointerTree {
        let nodes = (0..tree.len())
            .map(|i| PointerNode::new(tree, i, 0))
            .collect();
        let value = (0..tree.len())
            .map(|i| {
                if tree.is_leaf(i) {
                    tree.leaf_value(i, depth[i])
                } else {
                    0.0
                }
            })
            .collect();
        PointerTree {
            nodes,
            value,
            height,
        }
    }
}

impl Layout for PointerTree {
    #[inline(always)]
    fn height(&self) -> usize {
        self.height
    }

    #[inline(always)]
    fn leaf(&self, i: usize) -> f64 {
        self.value[i]
    }
}

impl FeatureStep for PointerTree {
    #[inline(always)]
    fn step(&self, i: usize, x: impl Fn(usize) -> f64) -> usize {
        self.nodes[i].step(x)
    }
}
