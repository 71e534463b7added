//! Isolation Forest (Liu, Ting & Zhou 2008) with scikit-learn's semantics: the model and its canonical trees.
//!
//! The fitted trees are kept in one canonical form ([`Tree`]: flat node arrays, children stored in
//! pairs) that is serialised and used by the reference traversal and the attribution. Scoring uses
//! a derived layout rebuilt on load: trees no deeper than [`COMPLETE_MAX_HEIGHT`] become complete
//! binary trees (node `i` has children `2i+1`, `2i+2`; shallow leaves padded with always-left
//! nodes), deeper trees keep their pointer layout with self-looping leaves. Either way a record
//! walks a fixed number of branch-free steps, and a block of records is pushed through one tree
//! at a time so that the tree stays in L1 and several records are in flight at once. Forests of
//! at most 4 features (the service's default) use [`NarrowTree`](narrow::NarrowTree)s, where a step is one 4-wide
//! compare of the whole record against the node (AVX when the CPU has it, checked at run time).
//! On CPUs with AVX-512BW or AVX2, forests of at most 8 features and complete trees are scored by
//! a [`RankForest`] instead: values become 16-bit ranks among the forest's thresholds (the same
//! decisions, exactly), and 32 records (AVX-512BW) or 8 (AVX2, 32-bit lanes) walk a tree per
//! register. Every layout and kernel adds the trees in the same order, so scores are
//! bit-identical whichever runs.
//!
//! By job: `grow.rs` fits the trees, `stored.rs` is the serialised form, `score.rs` picks the
//! kernel for a block of records; the f64 layouts are in `complete.rs`, `pointer.rs` and
//! `narrow.rs` (their walk is written once in `layout.rs`), the AVX/AVX2 kernel of the narrow one
//! in `narrow_avx.rs`; the rank layouts are built in `rank.rs` and walked in `rank_avx512.rs`
//! (AVX-512BW) and `rank_avx2.rs` (AVX2); `attribution.rs` explains records.

use std::fmt;

use serde::{Deserialize, Serialize};

mod attribution;
mod complete;
mod grow;
mod layout;
mod narrow;
#[cfg(target_arch = "x86_64")]
mod narrow_avx;
mod pointer;
mod rank;
#[cfg(target_arch = "x86_64")]
mod rank_avx2;
#[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
mod rank_avx512;
mod score;
mod stored;
#[cfg(test)]
mod tests;

use attribution::ExplainLayout;
pub use grow::{FitWatch, Unwatched};
use layout::FastTree;
use rank::RankForest;
use score::NarrowPath;
pub use stored::ForestFormatError;
use stored::StoredForest;

/// Euler–Mascheroni constant, as `numpy.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Deepest tree scored through the complete layout: 2^8 leaves fill 5 KiB, so a tree stays in L1
/// while a block of records goes through it. `max_samples` = 256 (the default) gives height 8.
pub const COMPLETE_MAX_HEIGHT: usize = 8;
const COMPLETE_SLOTS: usize = 1 << COMPLETE_MAX_HEIGHT;

/// c(n): the average path length of an unsuccessful search in a binary search tree of n points,
/// exactly as scikit-learn's `_average_path_length` (0 for n <= 1, 1 for n = 2).
pub fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

/// One isolation tree in its canonical, serialised form. Node 0 is the root; an internal node's
/// children are `left[i]` and `left[i] + 1`, both with larger indices; `left[i] == 0` marks a leaf.
/// A record goes right when `x[feature] > threshold` (scikit-learn sends `x <= threshold` left).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Tree {
    feature: Vec<u32>,
    threshold: Vec<f64>,
    left: Vec<u32>,
    /// Training rows (bootstrap duplicates included) that reached each node.
    n_samples: Vec<u32>,
}

impl Tree {
    fn len(&self) -> usize {
        self.feature.len()
    }

    fn is_leaf(&self, i: usize) -> bool {
        self.left[i] == 0
    }

    /// Depth of every node (root 0); valid because children always follow their parent.
    fn depths(&self) -> Vec<usize> {
        let mut depth = vec![0usize; self.len()];
        for i in 0..self.len() {
            if !self.is_leaf(i) {
                let l = self.left[i] as usize;
                depth[l] = depth[i] + 1;
                depth[l + 1] = depth[i] + 1;
            }
        }
        depth
    }

    /// h contribution of a leaf: edges from the root plus c(rows left in the leaf).
    fn leaf_value(&self, i: usize, depth: usize) -> f64 {
        depth as f64 + average_path_length(f64::from(self.n_samples[i]))
    }
}

/// A fitted Isolation Forest.
///
/// Scores are `2^(-E[h(x)] / c(ψ))` in (0, 1], higher = more anomalous (minus scikit-learn's
/// `score_samples`). Serialises only the canonical trees; the scoring layout is rebuilt on load,
/// so a round trip gives bit-identical scores.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "StoredForest", into = "StoredForest")]
pub struct IsolationForest {
    n_features: usize,
    max_samples: usize,
    trees: Vec<Tree>,
    fast: Vec<FastTree>,
    /// Built only where the CPU can use it (AVX-512BW or AVX2) and the forest fits it.
    rank: Option<RankForest>,
    /// Every tree's nodes laid out for [`attribution`](Self::attribution), trees one after
    /// another, with what each leaf adds to the attribution worked out once (see
    /// [`ExplainLayout`]).
    explain: ExplainLayout,
}

impl PartialEq for IsolationForest {
    fn eq(&self, other: &Self) -> bool {
        // The scoring layout is a function of the trees.
        self.n_features == other.n_features
            && self.max_samples == other.max_samples
            && self.trees == other.trees
    }
}

impl fmt::Debug for IsolationForest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsolationForest")
            .field("n_features", &self.n_features)
            .field("max_samples", &self.max_samples)
            .field("n_trees", &self.trees.len())
            .field("n_nodes", &self.trees.iter().map(Tree::len).sum::<usize>())
            .finish_non_exhaustive()
    }
}

impl IsolationForest {
    fn from_trees(n_features: usize, max_samples: usize, trees: Vec<Tree>) -> Self {
        let fast: Vec<FastTree> = trees
            .iter()
            .map(|t| FastTree::build(t, n_features))
            .collect();
        let rank = RankForest::build(&fast, n_features, NarrowPath::detect());
        let explain = ExplainLayout::build(&trees, n_features);
        IsolationForest {
            n_features,
            max_samples,
            trees,
            fast,
            rank,
            explain,
        }
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// ψ used for c(ψ).
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }
}
