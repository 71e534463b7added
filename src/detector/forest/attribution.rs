//! Attribution: each leaf's per-feature weights worked out once, then records walked to one leaf per tree.

use super::pointer::PointerNode;
use super::{IsolationForest, Tree};

/// The forest laid out for attribution. A record's attribution is a sum over the trees of what
/// the leaf it reaches contributes, and that depends on the leaf alone: for every feature split
/// on along the root-to-leaf path, the sum of the edges' imbalances divided by the leaf's path
/// length h. So each leaf's (feature, weight) pairs are computed here once, and explaining a
/// record is a walk to one leaf per tree and a few additions, without the divisions and
/// logarithms of computing them per record. Leaves point at themselves (threshold +inf), so
/// [`EXPLAIN_LANES`] records walk a tree in lockstep for its height, without branches:
/// independent walks overlap their memory latency.
///
/// In forests of at most [`DENSE_MAX_FEATURES`] features a leaf's weights are stored densely, one
/// per feature (zero for features not on its path), so adding them is a fixed-length loop the
/// compiler unrolls; wider forests keep the (feature, weight) pairs of the features on the path.
#[derive(Clone, Debug, Default)]
pub(super) struct ExplainLayout {
    /// Every tree's nodes, indices into the whole forest's; leaves step onto themselves.
    nodes: Vec<PointerNode>,
    /// Each node's range in `dense` (at most [`DENSE_MAX_FEATURES`] features) or in `weights`;
    /// empty for internal nodes.
    leaf_weights: Vec<(u32, u32)>,
    /// Wider forests: leaves' (feature, weight) pairs, each leaf's features in order of first use
    /// on its path.
    weights: Vec<(u32, f64)>,
    /// Narrow forests: each leaf's weight of every feature.
    dense: Vec<f64>,
    /// Each tree's root in `nodes` and its height.
    trees: Vec<(u32, u32)>,
}

/// Widest forest whose leaves' attribution weights are stored densely (see [`ExplainLayout`]).
const DENSE_MAX_FEATURES: usize = 8;

/// An edge of a root-to-leaf path: the parent's split feature and the edge's imbalance.
type Edge = (u32, f64);

/// Records walked down a tree at once by [`IsolationForest::attributions`].
const EXPLAIN_LANES: usize = 16;

impl ExplainLayout {
    pub(super) fn build(trees: &[Tree], n_features: usize) -> ExplainLayout {
        let index = |i: usize| u32::try_from(i).expect("forests stay under 2^32 nodes and weights");
        let dense = n_features <= DENSE_MAX_FEATURES;
        let n_nodes = trees.iter().map(Tree::len).sum();
        let mut layout = ExplainLayout {
            nodes: Vec::with_capacity(n_nodes),
            leaf_weights: vec![(0, 0); n_nodes],
            weights: Vec::new(),
            dense: Vec::new(),
            trees: Vec::with_capacity(trees.len()),
        };
        // Depth-first: (node, depth, the edge entering it) of nodes still to visit; `path` holds
        // the (feature, imbalance) of the edges from the root down to the node being visited.
        let mut todo: Vec<(usize, usize, Option<Edge>)> = Vec::new();
        let mut path: Vec<Edge> = Vec::new();
        for t in trees {
            let start = layout.nodes.len();
            layout
                .nodes
                .extend((0..t.len()).map(|i| PointerNode::new(t, i, start)));
            let mut height = 0;
            todo.push((0, 0, None));
            while let Some((i, depth, edge)) = todo.pop() {
                path.truncate(depth.saturating_sub(1));
                path.extend(edge);
                if t.is_leaf(i) {
                    height = height.max(depth);
                    let first = layout.weights.len();
                    if depth > 0 {
                        let h = t.leaf_value(i, depth);
                        for &(f, imbalance) in &path {
                            let w = imbalance / h;
                            match layout.weights[first..].iter_mut().find(|(g, _)| *g == f) {
                                Some((_, sum)) => *sum += w,
                                None => layout.weights.push((f, w)),
                            }
                        }
                    }
                    layout.leaf_weights[start + i] = if dense {
                        let at = layout.dense.len();
                        layout.dense.resize(at + n_features, 0.0);
                        for (f, w) in layout.weights.drain(first..) {
                            layout.dense[at + f as usize] = w;
                        }
                        (index(at), index(at + n_features))
                    } else {
                        (index(first), index(layout.weights.len()))
                    };
                    continue;
                }
                // Imbalance of an edge: 1 − (rows in the child / rows in the parent), in [0, 1];
                // 1 when the parent saw no rows.
                let n_node = f64::from(t.n_samples[i]);
                let l = t.left[i] as usize;
                // Right pushed first, so the left subtree is visited first.
                for child in [l + 1, l] {
                    let imbalance = if n_node > 0.0 {
                        (1.0 - f64::from(t.n_samples[child]) / n_node).clamp(0.0, 1.0)
                    } else {
                        1.0
                    };
                    todo.push((child, depth + 1, Some((t.feature[i], imbalance))));
                }
            }
            layout.trees.push((index(start), index(height)));
        }
        layout
    }
}

impl IsolationForest {
    /// Per-feature attribution of one record's isolation (DIFFI-style, after Carletti, Terzi &
    /// Susto 2020): non-negative, `n_features` long, summing to 1.
    ///
    /// For each tree t, let the record's path pass the split nodes v_1..v_k and end in a leaf, so
    /// that its path length is h_t(x) = k + c(n_leaf). Each split node v credits its feature
    ///
    /// ```text
    /// w_t(v) = (1 / h_t(x)) * (1 - n(child_t(v, x)) / n(v))
    /// ```
    ///
    /// where n(v) is the number of training rows that reached v and child_t(v, x) is the child the
    /// record went to. The first factor favours trees that isolate the record quickly; the
    /// second favours splits that cut the record off from most of the node's rows (a split that
    /// keeps the record with the crowd says little about why it is unusual). The credits are
    /// summed over all trees per feature and divided by their total.
    ///
    /// The result is all zeros when the record never passed a split (every tree is a single
    /// leaf) or when `row.len() != n_features`.
    ///
    /// One record walks alone through lanes made for 16: to explain several,
    /// [`attributions`](Self::attributions) does them together for about the cost of one.
    pub fn attribution(&self, row: &[f64]) -> Vec<f64> {
        if row.len() != self.n_features {
            return vec![0.0; self.n_features];
        }
        self.attributions(row)
    }

    /// [`attribution`](Self::attribution) of every record of row-major `rows` (`n_features`
    /// values each), row-major in the same order. Each tree is walked by all the records
    /// before the next tree, so its nodes stay in L1 while they do, and [`EXPLAIN_LANES`]
    /// records walk it in lockstep (leaves point at themselves, so no branches), overlapping
    /// their loads. Each record still adds its trees' leaf weights in tree order, so its
    /// attribution does not depend on the records beside it.
    ///
    /// # Panics
    /// If `rows.len()` is not a multiple of `n_features`.
    pub fn attributions(&self, rows: &[f64]) -> Vec<f64> {
        let nf = self.n_features;
        assert_eq!(rows.len() % nf, 0, "rows of {nf} values");
        let mut attr = vec![0.0; rows.len()];
        match nf {
            1 => self.add_leaf_weights::<1>(rows, &mut attr),
            2 => self.add_leaf_weights::<2>(rows, &mut attr),
            3 => self.add_leaf_weights::<3>(rows, &mut attr),
            4 => self.add_leaf_weights::<4>(rows, &mut attr),
            5 => self.add_leaf_weights::<5>(rows, &mut attr),
            6 => self.add_leaf_weights::<6>(rows, &mut attr),
            7 => self.add_leaf_weights::<7>(rows, &mut attr),
            8 => self.add_leaf_weights::<8>(rows, &mut attr),
            _ => self.add_leaf_weights::<0>(rows, &mut attr),
        }
        for attr in attr.chunks_exact_mut(nf) {
            let total: f64 = attr.iter().sum();
            if total > 0.0 && total.is_finite() {
                for a in attr.iter_mut() {
                    *a /= total;
                }
            } else {
                attr.fill(0.0);
            }
        }
        attr
    }

    /// Adds to `attr` the weights of the leaf each record of `rows` reaches in every tree, tree
    /// by tree. `NF` is the forest's width when its leaves' weights are dense (at most
    /// [`DENSE_MAX_FEATURES`]), so a leaf's weights are `NF` unrolled additions; 0 reads the
    /// sparse (feature, weight) pairs of a wider forest.
    fn add_leaf_weights<const NF: usize>(&self, rows: &[f64], attr: &mut [f64]) {
        let nf = if NF > 0 { NF } else { self.n_features };
        debug_assert_eq!(NF > 0, nf <= DENSE_MAX_FEATURES);
        let ExplainLayout {
            nodes,
            leaf_weights,
            weights,
            dense,
            trees,
        } = &self.explain;
        for &(root, height) in trees {
            for (group, attr) in rows
                .chunks(EXPLAIN_LANES * nf)
                .zip(attr.chunks_mut(EXPLAIN_LANES * nf))
            {
                // Always EXPLAIN_LANES walks, so the lanes live in registers: lanes past the
                // group's records walk its last record again, and their leaves are not used.
                let n = group.len() / nf;
                let row: [usize; EXPLAIN_LANES] = std::array::from_fn(|l| l.min(n - 1) * nf);
                let mut at = [root as usize; EXPLAIN_LANES];
                for _ in 0..height {
                    for l in 0..EXPLAIN_LANES {
                        at[l] = nodes[at[l]].step(|f| group[row[l] + f]);
                    }
                }
                for (&leaf, attr) in at[..n].iter().zip(attr.chunks_exact_mut(nf)) {
                    let (first, end) = leaf_weights[leaf];
                    if NF > 0 {
                        let w = &dense[first as usize..first as usize + NF];
                        for j in 0..NF {
                            attr[j] += w[j];
                        }
                    } else {
                        for &(f, w) in &weights[first as usize..end as usize] {
                            attr[f as usize] += w;
                        }
                    }
                }
            }
        }
    }
}
