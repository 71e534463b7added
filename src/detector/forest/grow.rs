//! Growing the forest: each tree draws its rows and features, then splits until isolation or the height limit.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

use super::super::Matrix;
use super::super::params::CheckedParams;
use super::{IsolationForest, Tree};

/// Height limit of scikit-learn's trees: ceil(log2(max(ψ, 2))).
pub(super) fn height_limit(max_samples: usize) -> usize {
    let psi = max_samples.max(2);
    // ceil(log2(psi)) for integers, without floating-point rounding.
    (usize::BITS - (psi - 1).leading_zeros()) as usize
}

/// SplitMix64 finaliser: spreads (seed, tree index) into unrelated RNG seeds.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Each tree draws from its own stream, so fitting trees in parallel equals fitting them in order.
fn tree_rng(seed: u64, tree: usize) -> StdRng {
    StdRng::seed_from_u64(splitmix64(splitmix64(seed) ^ tree as u64))
}

/// Grows one tree on the rows `sample` of `x`, splitting only on `features`.
fn grow_tree(
    x: &Matrix,
    sample: &[usize],
    features: &[usize],
    limit: usize,
    rng: &mut StdRng,
) -> Tree {
    let n_cols = x.n_cols();
    let data = x.as_slice();
    // Column-major copy of the sample: node statistics scan one feature over contiguous memory.
    let psi = sample.len();
    let mut cols = vec![0.0f64; features.len() * psi];
    for (j, &f) in features.iter().enumerate() {
        for (i, &r) in sample.iter().enumerate() {
            cols[j * psi + i] = data[r * n_cols + f];
        }
    }
    let mut tree = Tree {
        feature: vec![0],
        threshold: vec![0.0],
        left: vec![0],
        n_samples: vec![psi as u32],
    };
    let mut rows: Vec<u32> = (0..psi as u32).collect();
    // (node, rows range, depth, candidate features = tree features not yet seen constant).
    let mut stack: Vec<(usize, usize, usize, usize, Vec<usize>)> =
        vec![(0, 0, psi, 0, (0..features.len()).collect())];
    while let Some((node, start, end, depth, mut cand)) = stack.pop() {
        let n = end - start;
        if n < 2 || depth >= limit {
            continue;
        }
        let node_rows = &mut rows[start..end];
        // scikit-learn draws features until one is non-constant in the node; a constant one is
        // never drawn again below this node. That is a uniform pick among non-constant features.
        let mut split = None;
        while !cand.is_empty() {
            let k = rng.random_range(0..cand.len());
            let col = &cols[cand[k] * psi..(cand[k] + 1) * psi];
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &r in node_rows.iter() {
                let v = col[r as usize];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if lo < hi {
                split = Some((k, lo, hi));
                break;
            }
            cand.swap_remove(k);
        }
        let Some((k, lo, hi)) = split else { continue };
        let j = cand[k];
        let u: f64 = rng.random();
        let mut thr = lo + (hi - lo) * u;
        if !thr.is_finite() {
            // hi - lo overflowed; the convex form cannot.
            thr = lo * (1.0 - u) + hi * u;
        }
        if !(thr >= lo && thr < hi) {
            // scikit-learn: a threshold that rounded up to the max becomes the min.
            thr = lo;
        }
        let col = &cols[j * psi..(j + 1) * psi];
        // Partition: rows going left (x <= thr) first. Both sides are non-empty because lo <= thr < hi.
        let mut mid = 0;
        for i in 0..n {
            if col[node_rows[i] as usize] <= thr || col[node_rows[i] as usize].is_nan() {
                node_rows.swap(i, mid);
                mid += 1;
            }
        }
        let l = tree.len();
        tree.feature[node] = features[j] as u32;
        tree.threshold[node] = thr;
        tree.left[node] = l as u32;
        for count in [mid, n - mid] {
            tree.feature.push(0);
            tree.threshold.push(0.0);
            tree.left.push(0);
            tree.n_samples.push(count as u32);
        }
        stack.push((l + 1, start + mid, end, depth + 1, cand.clone()));
        stack.push((l, start, start + mid, depth + 1, cand));
    }
    tree
}

/// What a fit tells its caller and asks of it while the trees grow.
pub trait FitWatch: Sync {
    /// Another tree was grown: `done` of `total` are.
    fn tree_grown(&self, _done: usize, _total: usize) {}
    /// Whether to stop growing (the fit then ends without a forest).
    fn stop(&self) -> bool {
        false
    }
}

/// A fit nobody watches: it never stops early.
pub struct Unwatched;

impl FitWatch for Unwatched {}

impl IsolationForest {
    /// Fits on a (typically already standardised) matrix, trees in parallel.
    ///
    /// `params` should come from [`ForestParams::check`](super::params::ForestParams::check) for
    /// this matrix's shape; out-of-range values are clamped rather than trusted (ψ to
    /// 1..=n_rows, max_features to 1..=n_cols, at least one tree). An empty matrix gives
    /// single-leaf trees that score every record 0.5. Same params and data, same model, whatever
    /// the thread count.
    pub fn fit(x: &Matrix, params: &CheckedParams) -> IsolationForest {
        Self::fit_watched(x, params, &Unwatched).expect("an unwatched fit never stops")
    }

    /// [`IsolationForest::fit`], telling `watch` of each tree grown and asking it before each
    /// whether to stop (`None`: stopped).
    pub fn fit_watched(
        x: &Matrix,
        params: &CheckedParams,
        watch: &dyn FitWatch,
    ) -> Option<IsolationForest> {
        let done = AtomicUsize::new(0);
        let n_rows = x.n_rows();
        let n_features = x.n_cols().max(1);
        let psi = params.max_samples.clamp(1, n_rows.max(1));
        let max_features = params.max_features.clamp(1, n_features);
        let n_trees = params.n_estimators.max(1);
        let limit = height_limit(psi);
        let trees = (0..n_trees)
            .into_par_iter()
            .map(|t| {
                if watch.stop() {
                    return None;
                }
                let mut rng = tree_rng(params.seed, t);
                let features: Vec<usize> = if max_features < n_features {
                    rand::seq::index::sample(&mut rng, n_features, max_features).into_vec()
                } else {
                    (0..n_features).collect()
                };
                if n_rows == 0 {
                    return Some(Tree {
                        feature: vec![0],
                        threshold: vec![0.0],
                        left: vec![0],
                        n_samples: vec![0],
                    });
                }
                let sample: Vec<usize> = if params.bootstrap {
                    (0..psi).map(|_| rng.random_range(0..n_rows)).collect()
                } else {
                    rand::seq::index::sample(&mut rng, n_rows, psi).into_vec()
                };
                let tree = grow_tree(x, &sample, &features, limit, &mut rng);
                watch.tree_grown(done.fetch_add(1, Ordering::Relaxed) + 1, n_trees);
                Some(tree)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(IsolationForest::from_trees(n_features, psi, trees))
    }
}
