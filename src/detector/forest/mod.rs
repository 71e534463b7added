//! Isolation Forest (Liu, Ting & Zhou 2008) with scikit-learn's semantics: fitting, fast scoring, attribution.
//!
//! The fitted trees are kept in one canonical form ([`Tree`]: flat node arrays, children stored in
//! pairs) that is serialised and used by the reference traversal and the attribution. Scoring uses
//! a derived layout rebuilt on load: trees no deeper than [`COMPLETE_MAX_HEIGHT`] become complete
//! binary trees (node `i` has children `2i+1`, `2i+2`; shallow leaves padded with always-left
//! nodes), deeper trees keep their pointer layout with self-looping leaves. Either way a record
//! walks a fixed number of branch-free steps, and a block of records is pushed through one tree
//! at a time so that the tree stays in L1 and several records are in flight at once. Forests of
//! at most 4 features (the service's default) use [`NarrowTree`]s, where a step is one 4-wide
//! compare of the whole record against the node (AVX when the CPU has it, checked at run time).
//! On CPUs with AVX-512BW, forests of at most 8 features and complete trees are scored by a
//! [`RankForest`] instead: values become 16-bit ranks among the forest's thresholds (the same
//! decisions, exactly), and 32 records walk a tree per register. Every layout and kernel adds the
//! trees in the same order, so scores are bit-identical whichever runs.

use std::fmt;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Matrix;
use super::params::CheckedParams;

/// Euler–Mascheroni constant, as `numpy.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Deepest tree scored through the complete layout: 2^8 leaves fill 5 KiB, so a tree stays in L1
/// while a block of records goes through it. `max_samples` = 256 (the default) gives height 8.
pub const COMPLETE_MAX_HEIGHT: usize = 8;
const COMPLETE_SLOTS: usize = 1 << COMPLETE_MAX_HEIGHT;

/// Records pushed through each tree before moving on to the next tree.
const BLOCK_ROWS: usize = 512;
/// Calls `f` on each block of up to [`BLOCK_ROWS`] records of row-major `rows` (`nf` values a
/// record) with its slice of `out`: in parallel when there are more than
/// [`SEQUENTIAL_RECORDS`](super::SEQUENTIAL_RECORDS) records, on this thread otherwise. The blocks are the same either way, so are the scores.
fn for_blocks<F>(rows: &[f64], nf: usize, out: &mut [f64], f: F)
where
    F: Fn(&[f64], &mut [f64]) + Send + Sync,
{
    if out.len() <= super::SEQUENTIAL_RECORDS {
        for (block, out) in rows.chunks(BLOCK_ROWS * nf).zip(out.chunks_mut(BLOCK_ROWS)) {
            f(block, out);
        }
    } else {
        rows.par_chunks(BLOCK_ROWS * nf)
            .zip(out.par_chunks_mut(BLOCK_ROWS))
            .for_each(|(block, out)| f(block, out));
    }
}

/// Records walked down a tree side by side; their loads overlap instead of waiting on each other.
const LANES: usize = 8;
/// Records in flight in the AVX narrow kernel, whose steps are cheaper (found best of 8/12/16).
const AVX_LANES: usize = 12;

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

/// Height limit of scikit-learn's trees: ceil(log2(max(ψ, 2))).
fn height_limit(max_samples: usize) -> usize {
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

/// A tree of height <= [`COMPLETE_MAX_HEIGHT`] as a complete binary tree: internal node `i` has
/// children `2i+1` and `2i+2`; after `height` steps a record sits at `2^height - 1 + leaf slot`.
/// Leaves shallower than `height` are padded with nodes whose threshold is +inf (always left),
/// and the leftmost slot below them holds their value.
#[derive(Clone)]
struct CompleteTree {
    threshold: [f64; COMPLETE_SLOTS],
    feature: [u32; COMPLETE_SLOTS],
    leaf: [f64; COMPLETE_SLOTS],
    height: usize,
}

/// A deeper tree in pointer form: step `i -> next[i] + (x[feature[i]] > threshold[i])`; a leaf
/// points to itself with threshold +inf, so walking `height` steps from the root ends on the leaf.
#[derive(Clone)]
struct PointerTree {
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

#[derive(Clone)]
enum FastTree {
    Narrow(Box<NarrowTree>),
    Complete(Box<CompleteTree>),
    Pointer(PointerTree),
}

/// Width of the rows a [`NarrowTree`] compares against.
const NARROW: usize = 4;

/// Kernels for forests of at most [`NARROW`] features, in order of preference. All make the same
/// decisions and add the trees in the same order, so they give bit-identical scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NarrowPath {
    /// Plain Rust.
    Portable,
    /// One 4-wide `vcmppd` per step ([`NarrowTree::accumulate_avx`]), for CPUs with AVX only.
    Avx,
    /// The same compiled with AVX2 (the other trees' index arithmetic is cheaper with it).
    Avx2,
    /// 16-bit keys, 32 records per register ([`RankForest::accumulate_avx512`]).
    Avx512,
}

impl NarrowPath {
    /// The best kernel this CPU can run (the standard library caches the CPUID checks).
    fn detect() -> NarrowPath {
        #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            return NarrowPath::Avx512;
        }
        NarrowPath::detect_f64()
    }

    /// The best of the f64 kernels (all but [`NarrowPath::Avx512`]) this CPU can run.
    fn detect_f64() -> NarrowPath {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                return NarrowPath::Avx2;
            }
            if std::arch::is_x86_feature_detected!("avx")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                return NarrowPath::Avx;
            }
        }
        NarrowPath::Portable
    }
}

/// A complete tree for forests of at most [`NARROW`] features: node `i` holds a threshold per
/// feature, its own threshold at its split feature and +inf elsewhere, so "goes right" is
/// `any(x > t)` over the record's whole (zero-padded) row. That is the same decision as
/// `x[feature] > threshold` (nothing exceeds +inf, NaN compares false) without loading the
/// feature index or the value, and it compiles to one vector compare per step.
#[derive(Clone)]
struct NarrowTree {
    node: [[f64; NARROW]; COMPLETE_SLOTS],
    leaf: [f64; COMPLETE_SLOTS],
    height: usize,
}

impl NarrowTree {
    fn from_complete(c: &CompleteTree) -> NarrowTree {
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

    #[inline(always)]
    fn accumulate(&self, rows: &[[f64; NARROW]], acc: &mut [f64]) {
        let first_leaf = (1usize << self.height) - 1;
        let leaf = |i: usize| self.leaf[i.wrapping_sub(first_leaf) & (COMPLETE_SLOTS - 1)];
        let mut groups = rows.chunks_exact(LANES);
        let mut accs = acc.chunks_exact_mut(LANES);
        for (g, a) in (&mut groups).zip(&mut accs) {
            let mut idx = [0usize; LANES];
            for _ in 0..self.height {
                for k in 0..LANES {
                    idx[k] = self.step(idx[k], &g[k]);
                }
            }
            for k in 0..LANES {
                a[k] += leaf(idx[k]);
            }
        }
        for (row, a) in groups.remainder().iter().zip(accs.into_remainder()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = self.step(idx, row);
            }
            *a += leaf(idx);
        }
    }

    /// `COPY` gives each caller its own copy: with two callers LLVM stopped inlining it into
    /// [`IsolationForest::narrow_block_avx2`] and callgrind counted 9 % more instructions.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx,popcnt")]
    unsafe fn accumulate_avx<const COPY: u8>(&self, rows: &[[f64; NARROW]], acc: &mut [f64]) {
        use std::arch::x86_64::{_CMP_GT_OQ, _mm256_cmp_pd, _mm256_loadu_pd, _mm256_movemask_pd};
        let first_leaf = (1usize << self.height) - 1;
        let leaf = |i: usize| self.leaf[i.wrapping_sub(first_leaf) & (COMPLETE_SLOTS - 1)];
        // 1 when any of the record's values exceeds the node's threshold for that feature.
        let right = |x: &[f64; NARROW], t: &[f64; NARROW]| {
            // SAFETY: both point to 4 readable f64s; AVX is enabled on the enclosing function.
            let m = unsafe {
                _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(
                    _mm256_loadu_pd(x.as_ptr()),
                    _mm256_loadu_pd(t.as_ptr()),
                ))
            };
            // At most one lane can be true: every other lane of `t` is +inf.
            m.count_ones() as usize
        };
        let mut groups = rows.chunks_exact(AVX_LANES);
        let mut accs = acc.chunks_exact_mut(AVX_LANES);
        for (g, a) in (&mut groups).zip(&mut accs) {
            let mut idx = [0usize; AVX_LANES];
            for _ in 0..self.height {
                for k in 0..AVX_LANES {
                    let i = idx[k];
                    idx[k] = 2 * i + 1 + right(&g[k], &self.node[i & (COMPLETE_SLOTS - 1)]);
                }
            }
            for k in 0..AVX_LANES {
                a[k] += leaf(idx[k]);
            }
        }
        for (row, a) in groups.remainder().iter().zip(accs.into_remainder()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = 2 * idx + 1 + right(row, &self.node[idx & (COMPLETE_SLOTS - 1)]);
            }
            *a += leaf(idx);
        }
    }
}

/// Records scored side by side by [`RankForest::accumulate_avx512`]: one 16-bit key per record
/// in each of a 512-bit register's 32 lanes.
const RANK_LANES: usize = 32;
/// Groups of [`RANK_LANES`] records walked down a tree together (a divisor of
/// `BLOCK_ROWS / RANK_LANES`).
const RANK_GROUPS: usize = 4;
/// Key of a node that sends no record right: a padding node, or a feature it does not split on.
/// Record keys are at most the number of cut points, which is kept below it.
const NEVER_RIGHT: u16 = u16::MAX;
/// Nodes per level in a [`RankTree`] table: the widest level of a height-8 tree.
const RANK_LEVEL_SLOTS: usize = COMPLETE_SLOTS / 2;
/// Widest forest scored by [`RankForest`]: each level costs a permute and a compare per feature.
const RANK_MAX_FEATURES: usize = 8;

/// The layout of forests of at most [`RANK_MAX_FEATURES`] features and complete trees on CPUs
/// with AVX-512BW.
///
/// Each feature's split thresholds over the whole forest are sorted into `cuts`. A record is
/// turned once into one 16-bit key per feature, its rank `r(x)` = the number of cuts `< x`; a
/// split on threshold `cuts[k]` becomes the key `k`. Then `x > cuts[k]` exactly when
/// `r(x) > k` (the cuts are sorted, so `cuts[k] < x` holds iff the first k + 1 of them are below
/// x), and NaN counts no cut, so it goes left as before: every decision, hence every score, is
/// the one the f64 layouts make. With 16-bit keys a 512-bit register holds 32 records, and the
/// node keys and split features of a whole level (up to 128 each) fit in four registers, so a
/// step for 32 records is two table permutes, a blend tree picking each record's value on its
/// node's feature, and one unsigned compare, instead of 32 dependent loads.
#[derive(Clone)]
struct RankForest {
    /// Per feature: the distinct thresholds the forest splits that feature at, ascending.
    cuts: Vec<Vec<f64>>,
    /// Per feature: [`CutIndex`] of `cuts`, to rank a value with a few 16-wide compares.
    index: Vec<CutIndex>,
    trees: Vec<RankTree>,
}

/// A static 16-ary search tree over sorted cuts (after the S+ trees of Algorithmica's
/// "Algorithms for Modern Hardware"). `levels[0]` is the cuts; `levels[k + 1][i]` is
/// `levels[k][16 i + 15]`, the last cut of block i, so the blocks of `levels[k]` wholly below x
/// are counted by the cuts of `levels[k + 1]` below x; the top level has at most 15 cuts. Every
/// level is padded with +inf (below nothing) to whole blocks plus one.
#[derive(Clone)]
struct CutIndex {
    levels: Vec<Vec<f64>>,
}

impl CutIndex {
    fn new(cuts: &[f64]) -> CutIndex {
        let mut levels = Vec::new();
        let mut cur = cuts.to_vec();
        loop {
            let n = cur.len();
            let next: Vec<f64> = (0..n / 16).map(|i| cur[16 * i + 15]).collect();
            cur.resize(16 * (n / 16 + 1), f64::INFINITY);
            levels.push(cur);
            if next.is_empty() {
                break;
            }
            cur = next;
        }
        CutIndex { levels }
    }

    /// Number of cuts below `x` (0 for NaN), as `cuts.partition_point(|&c| c < x)`.
    #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
    // The AVX-512 intrinsics are stable since Rust 1.89; build.rs sets the cfg from 1.89 on.
    #[allow(clippy::incompatible_msrv)]
    #[target_feature(enable = "avx512f")]
    fn rank_avx512(&self, x: f64) -> usize {
        use std::arch::x86_64::{_CMP_LT_OQ, _mm512_cmp_pd_mask, _mm512_loadu_pd, _mm512_set1_pd};
        let xv = _mm512_set1_pd(x);
        let mut q = 0usize;
        for level in self.levels.iter().rev() {
            // q blocks of this level are wholly below x; count the cuts below x in the next one.
            let block = &level[16 * q..16 * q + 16];
            // SAFETY: `block` is 16 f64s; each load reads 8 of them.
            let (lo, hi) = unsafe {
                (
                    _mm512_loadu_pd(block.as_ptr()),
                    _mm512_loadu_pd(block[8..].as_ptr()),
                )
            };
            // Ordered `<`: false for NaN, so NaN counts nothing.
            let below = u32::from(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(lo, xv))
                | (u32::from(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(hi, xv)) << 8);
            q = 16 * q + below.count_ones() as usize;
        }
        q
    }
}

/// One complete tree of a [`RankForest`]: for each level, the split key of every node of that
/// level ([`NEVER_RIGHT`] for padding) and its split feature, indexed by the node's position
/// within the level; `leaf` as in [`CompleteTree`].
#[derive(Clone)]
struct RankTree {
    keys: Box<[[u16; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT]>,
    /// The feature each node splits on (0 for nodes that send nothing right), same indexing.
    feats: Box<[[u16; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT]>,
    leaf: Box<[f64; COMPLETE_SLOTS]>,
    /// When the tree has at most [`RANK_MAX_VALUES`] distinct leaf values: the code of each
    /// leaf slot and the values, padded to 16, 32 or 64 entries. Leaf values are then looked up
    /// with register permutes; a gather of 8 values costs more than a whole level of the walk.
    leaf_codes: Option<(Box<[u16; COMPLETE_SLOTS]>, Vec<f64>)>,
    /// The root's split feature and key (level 0 of `keys` in short): one compare instead of
    /// one per feature.
    root: (usize, u16),
    height: usize,
}

/// Most distinct leaf values looked up by permutes (four two-register `vpermt2pd`s).
const RANK_MAX_VALUES: usize = 64;

/// Leaf codes and the padded table of distinct values (by bits), if there are few enough.
fn leaf_codes(leaf: &[f64; COMPLETE_SLOTS]) -> Option<(Box<[u16; COMPLETE_SLOTS]>, Vec<f64>)> {
    let mut values: Vec<u64> = leaf.iter().map(|v| v.to_bits()).collect();
    values.sort_unstable();
    values.dedup();
    if values.len() > RANK_MAX_VALUES {
        return None;
    }
    let mut codes = Box::new([0u16; COMPLETE_SLOTS]);
    for (c, v) in codes.iter_mut().zip(leaf) {
        // Found: v's bits are in the table.
        *c = values.binary_search(&v.to_bits()).unwrap_or(0) as u16;
    }
    let padded = match values.len() {
        0..=16 => 16,
        17..=32 => 32,
        _ => 64,
    };
    let mut table: Vec<f64> = values.into_iter().map(f64::from_bits).collect();
    table.resize(padded, 0.0);
    Some((codes, table))
}

/// A complete tree in either of its scoring forms, as [`RankForest::build`] reads it.
enum CompleteView<'a> {
    Narrow(&'a NarrowTree),
    Wide(&'a CompleteTree),
}

impl CompleteView<'_> {
    fn height(&self) -> usize {
        match self {
            CompleteView::Narrow(t) => t.height,
            CompleteView::Wide(t) => t.height,
        }
    }

    fn leaf(&self) -> &[f64; COMPLETE_SLOTS] {
        match self {
            CompleteView::Narrow(t) => &t.leaf,
            CompleteView::Wide(t) => &t.leaf,
        }
    }

    /// Node `i`'s split feature and threshold, or `None` for a node that sends nothing right
    /// (padding, or a +inf or NaN threshold).
    fn split(&self, i: usize) -> Option<(usize, f64)> {
        // +inf and NaN thresholds send nothing right: no cut.
        let splits = |t: f64| t < f64::INFINITY;
        match self {
            // A narrow node holds its threshold at its feature and +inf elsewhere.
            CompleteView::Narrow(t) => (0..NARROW)
                .find(|&f| splits(t.node[i][f]))
                .map(|f| (f, t.node[i][f])),
            CompleteView::Wide(t) => {
                splits(t.threshold[i]).then(|| (t.feature[i] as usize, t.threshold[i]))
            }
        }
    }
}

impl RankForest {
    /// `None` unless every tree is complete (narrow or not) and each feature has fewer cuts than
    /// 16-bit keys allow.
    fn build(fast: &[FastTree], n_features: usize) -> Option<RankForest> {
        if n_features > RANK_MAX_FEATURES {
            return None;
        }
        let narrow: Vec<CompleteView> = fast
            .iter()
            .map(|t| match t {
                FastTree::Narrow(n) => Some(CompleteView::Narrow(n)),
                FastTree::Complete(c) => Some(CompleteView::Wide(c)),
                FastTree::Pointer(_) => None,
            })
            .collect::<Option<_>>()?;
        let mut cuts = vec![Vec::new(); n_features];
        for t in &narrow {
            for i in 0..(1usize << t.height()) - 1 {
                if let Some((f, v)) = t.split(i) {
                    cuts[f].push(v);
                }
            }
        }
        for c in &mut cuts {
            c.sort_unstable_by(f64::total_cmp);
            // -0.0 and 0.0 are one cut: the same decisions.
            c.dedup_by(|a, b| a == b);
            if c.len() >= usize::from(NEVER_RIGHT) {
                return None;
            }
        }
        let trees = narrow
            .par_iter()
            .map(|t| {
                let mut keys = Box::new([[NEVER_RIGHT; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT]);
                let mut feats = Box::new([[0u16; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT]);
                for level in 0..t.height() {
                    let first = (1usize << level) - 1;
                    for j in 0..1usize << level {
                        if let Some((f, v)) = t.split(first + j) {
                            // v is one of feature f's cuts (or equal to one): its index.
                            keys[level][j] = cuts[f].partition_point(|&x| x < v) as u16;
                            feats[level][j] = f as u16;
                        }
                    }
                }
                let root = (usize::from(feats[0][0]), keys[0][0]);
                RankTree {
                    keys,
                    feats,
                    leaf: Box::new(*t.leaf()),
                    leaf_codes: leaf_codes(t.leaf()),
                    root,
                    height: t.height(),
                }
            })
            .collect();
        let index = cuts.iter().map(|c| CutIndex::new(c)).collect();
        Some(RankForest { cuts, index, trees })
    }

    /// Keys of row-major `rows` (`nf` wide, at most [`BLOCK_ROWS`]) into feature-major `keys`:
    /// per value, the number of cuts below it (NaN is below none, so it stays left everywhere).
    #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
    // The AVX-512 intrinsics are stable since Rust 1.89; build.rs sets the cfg from 1.89 on.
    #[allow(clippy::incompatible_msrv)]
    #[target_feature(enable = "avx512f")]
    fn keys_avx512(&self, rows: &[f64], keys: &mut [[u16; BLOCK_ROWS]; RANK_MAX_FEATURES]) {
        let nf = self.cuts.len();
        for (r, row) in rows.chunks_exact(nf).enumerate() {
            for (f, index) in self.index.iter().enumerate() {
                // At most the cut count, which build() keeps below u16::MAX.
                keys[f][r] = index.rank_avx512(row[f]) as u16;
            }
        }
    }

    /// Adds every tree's path length of the first `groups * RANK_LANES` records of `keys` to
    /// `acc`, trees in forest order (the same sum, bit for bit, as the other layouts).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW. `groups` is a multiple of [`RANK_GROUPS`]
    /// (groups past `BLOCK_ROWS` are ignored).
    #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
    // The AVX-512 intrinsics are stable since Rust 1.89; build.rs sets the cfg from 1.89 on.
    #[allow(clippy::incompatible_msrv)]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn accumulate_avx512<const NF: usize>(
        &self,
        keys: &[[u16; BLOCK_ROWS]; RANK_MAX_FEATURES],
        groups: usize,
        acc: &mut [f64; BLOCK_ROWS],
    ) {
        use std::arch::x86_64::*;
        debug_assert!(groups * RANK_LANES <= BLOCK_ROWS);
        let ones = _mm512_set1_epi16(1);
        let level7_half = _mm512_set1_epi16(64);
        let slot_high = _mm512_set1_epi16(128);
        let (sixteen, thirty_two) = (_mm512_set1_epi64(16), _mm512_set1_epi64(32));
        for tree in &self.trees {
            let h = tree.height;
            for g0 in (0..groups.min(BLOCK_ROWS / RANK_LANES)).step_by(RANK_GROUPS) {
                // SAFETY (every load below): each reads 64 bytes inside a fixed-size array: 32
                // keys of a [u16; 512] row at (g0 + gi) * 32 <= 480 (groups is a multiple of
                // RANK_GROUPS, at most 16), or 32 keys at offset 0/32/64/96 of a [u16; 128] table.
                let x: [[__m512i; NF]; RANK_GROUPS] = std::array::from_fn(|gi| {
                    std::array::from_fn(|f| unsafe {
                        _mm512_loadu_si512(keys[f][(g0 + gi) * RANK_LANES..].as_ptr().cast())
                    })
                });
                let mut js = [_mm512_setzero_si512(); RANK_GROUPS];
                // Next position 2j + [went right]: one masked add. Written as assembly because
                // LLVM turns the intrinsic into three instructions (mask to vector, shift, or).
                let step = |j: __m512i, right: __mmask32| {
                    let mut next = _mm512_add_epi16(j, j);
                    // SAFETY: a register-only AVX-512BW add under a mask (enabled on this
                    // function); lanes outside the mask keep 2j.
                    unsafe {
                        std::arch::asm!(
                            "vpaddw {next}{{{right}}}, {next}, {ones}",
                            next = inout(zmm_reg) next,
                            right = in(kreg) right,
                            ones = in(zmm_reg) ones,
                            options(pure, nomem, nostack, preserves_flags),
                        );
                    }
                    next
                };
                // Levels 0..6 hold at most 32 nodes: one permute of one register per feature.
                // The RANK_GROUPS groups are independent chains, interleaved so that the CPU
                // always has work while one waits on its permute and compare latencies.
                if h > 0 {
                    // Level 0: the root splits on one feature, so one compare.
                    let (f, key) = tree.root;
                    let key = _mm512_set1_epi16(key as i16);
                    for (gi, j) in js.iter_mut().enumerate() {
                        // SAFETY: f is a feature of the forest, below RANK_MAX_FEATURES; 32 keys
                        // of a [u16; 512] row at (g0 + gi) * 32 <= 480.
                        let x = unsafe {
                            _mm512_loadu_si512(keys[f][(g0 + gi) * RANK_LANES..].as_ptr().cast())
                        };
                        *j = step(*j, _mm512_cmpgt_epu16_mask(x, key));
                    }
                }
                // Each record's value on the feature its node splits on: a blend tree over the
                // feature's bits (NF <= 8, so at most 3 levels of blends).
                let select = |x: &[__m512i; NF], f: __m512i| -> __m512i {
                    let mut v = *x;
                    let (mut n, mut bit) = (NF, 1i16);
                    while n > 1 {
                        let hi = _mm512_test_epi16_mask(f, _mm512_set1_epi16(bit));
                        for i in 0..n / 2 {
                            v[i] = _mm512_mask_blend_epi16(hi, v[2 * i], v[2 * i + 1]);
                        }
                        if n % 2 == 1 {
                            // The last one has no partner: no feature index selects past NF - 1.
                            v[n / 2] = v[n - 1];
                        }
                        n = n.div_ceil(2);
                        bit <<= 1;
                    }
                    v[0]
                };
                // Levels 1..6 hold at most 32 nodes: one register each for keys and features.
                // The RANK_GROUPS groups are independent chains, interleaved so that the CPU
                // always has work while one waits on its permute and compare latencies.
                for level in h.min(1)..h.min(6) {
                    // SAFETY: the first 32 entries of two [u16; 128] tables.
                    let (kt, ft) = unsafe {
                        (
                            _mm512_loadu_si512(tree.keys[level].as_ptr().cast()),
                            _mm512_loadu_si512(tree.feats[level].as_ptr().cast()),
                        )
                    };
                    for gi in 0..RANK_GROUPS {
                        let k = _mm512_permutexvar_epi16(js[gi], kt);
                        let xv = select(&x[gi], _mm512_permutexvar_epi16(js[gi], ft));
                        js[gi] = step(js[gi], _mm512_cmpgt_epu16_mask(xv, k));
                    }
                }
                // 32 entries of a [u16; 128] table from offset 32 q (q < 4).
                let part = |t: &[u16; RANK_LEVEL_SLOTS], q: usize| {
                    // SAFETY: 32 u16 at 32 q <= 96 lie inside the 128-entry table.
                    unsafe { _mm512_loadu_si512(t[32 * q..].as_ptr().cast()) }
                };
                if h > 6 {
                    // 64 nodes: a two-register permute.
                    let (k0, k1) = (part(&tree.keys[6], 0), part(&tree.keys[6], 1));
                    let (f0, f1) = (part(&tree.feats[6], 0), part(&tree.feats[6], 1));
                    for gi in 0..RANK_GROUPS {
                        let j = js[gi];
                        let k = _mm512_permutex2var_epi16(k0, j, k1);
                        let xv = select(&x[gi], _mm512_permutex2var_epi16(f0, j, f1));
                        js[gi] = step(j, _mm512_cmpgt_epu16_mask(xv, k));
                    }
                }
                if h > 7 {
                    // 128 nodes: two two-register permutes, chosen by bit 6 of the position.
                    let kt: [__m512i; 4] = std::array::from_fn(|q| part(&tree.keys[7], q));
                    let ft: [__m512i; 4] = std::array::from_fn(|q| part(&tree.feats[7], q));
                    for gi in 0..RANK_GROUPS {
                        let j = js[gi];
                        let upper = _mm512_test_epi16_mask(j, level7_half);
                        let k = _mm512_mask_blend_epi16(
                            upper,
                            _mm512_permutex2var_epi16(kt[0], j, kt[1]),
                            _mm512_permutex2var_epi16(kt[2], j, kt[3]),
                        );
                        let f = _mm512_mask_blend_epi16(
                            upper,
                            _mm512_permutex2var_epi16(ft[0], j, ft[1]),
                            _mm512_permutex2var_epi16(ft[2], j, ft[3]),
                        );
                        js[gi] = step(j, _mm512_cmpgt_epu16_mask(select(&x[gi], f), k));
                    }
                }
                for (gi, &j) in js.iter().enumerate() {
                    let r0 = (g0 + gi) * RANK_LANES;
                    // j is each record's leaf slot, below 2^h <= 256.
                    let Some((codes, values)) = &tree.leaf_codes else {
                        for q in 0..4 {
                            let idx = _mm512_cvtepu16_epi64(extract_quarter(j, q));
                            let a = &mut acc[r0 + 8 * q..r0 + 8 * q + 8];
                            // SAFETY: every index is a leaf slot below 256, the length of `leaf`;
                            // `a` is 8 f64s.
                            unsafe {
                                let v = _mm512_i64gather_pd::<8>(idx, tree.leaf.as_ptr());
                                let sum = _mm512_add_pd(_mm512_loadu_pd(a.as_ptr()), v);
                                _mm512_storeu_pd(a.as_mut_ptr(), sum);
                            }
                        }
                        continue;
                    };
                    // SAFETY: 64-byte loads inside the [u16; 256] code table (offsets 0..224 words).
                    let code_table =
                        |k: usize| unsafe { _mm512_loadu_si512(codes[32 * k..].as_ptr().cast()) };
                    // Codes of slots 0..64, then (taller trees) 64..128 and 128..256.
                    let mut code = _mm512_permutex2var_epi16(code_table(0), j, code_table(1));
                    if h > 6 {
                        let c1 = _mm512_permutex2var_epi16(code_table(2), j, code_table(3));
                        code = _mm512_mask_blend_epi16(
                            _mm512_test_epi16_mask(j, level7_half),
                            code,
                            c1,
                        );
                    }
                    if h > 7 {
                        let c2 = _mm512_permutex2var_epi16(code_table(4), j, code_table(5));
                        let c3 = _mm512_permutex2var_epi16(code_table(6), j, code_table(7));
                        let upper =
                            _mm512_mask_blend_epi16(_mm512_test_epi16_mask(j, level7_half), c2, c3);
                        code = _mm512_mask_blend_epi16(
                            _mm512_test_epi16_mask(j, slot_high),
                            code,
                            upper,
                        );
                    }
                    // SAFETY: 64-byte loads inside `values`, which holds 16, 32 or 64 f64s.
                    let value_table =
                        |k: usize| unsafe { _mm512_loadu_pd(values[8 * k..].as_ptr()) };
                    for q in 0..4 {
                        let c = _mm512_cvtepu16_epi64(extract_quarter(code, q));
                        let mut v = _mm512_permutex2var_pd(value_table(0), c, value_table(1));
                        if values.len() > 16 {
                            let v1 = _mm512_permutex2var_pd(value_table(2), c, value_table(3));
                            v = _mm512_mask_blend_pd(_mm512_test_epi64_mask(c, sixteen), v, v1);
                        }
                        if values.len() > 32 {
                            let v2 = _mm512_permutex2var_pd(value_table(4), c, value_table(5));
                            let v3 = _mm512_permutex2var_pd(value_table(6), c, value_table(7));
                            let upper =
                                _mm512_mask_blend_pd(_mm512_test_epi64_mask(c, sixteen), v2, v3);
                            v = _mm512_mask_blend_pd(
                                _mm512_test_epi64_mask(c, thirty_two),
                                v,
                                upper,
                            );
                        }
                        let a = &mut acc[r0 + 8 * q..r0 + 8 * q + 8];
                        // SAFETY: `a` is 8 f64s.
                        unsafe {
                            let sum = _mm512_add_pd(_mm512_loadu_pd(a.as_ptr()), v);
                            _mm512_storeu_pd(a.as_mut_ptr(), sum);
                        }
                    }
                }
            }
        }
    }
}

/// Lanes 8q..8q+8 of 32 16-bit lanes.
#[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
// The AVX-512 intrinsics are stable since Rust 1.89; build.rs sets the cfg from 1.89 on.
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f")]
fn extract_quarter(v: std::arch::x86_64::__m512i, q: usize) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::_mm512_extracti32x4_epi32;
    match q {
        0 => _mm512_extracti32x4_epi32::<0>(v),
        1 => _mm512_extracti32x4_epi32::<1>(v),
        2 => _mm512_extracti32x4_epi32::<2>(v),
        _ => _mm512_extracti32x4_epi32::<3>(v),
    }
}

impl FastTree {
    /// Builds the scoring layout; `tree` has been validated (features < n_features, children in range).
    fn build(tree: &Tree, n_features: usize) -> FastTree {
        let depth = tree.depths();
        let height = (0..tree.len())
            .filter(|&i| tree.is_leaf(i))
            .map(|i| depth[i])
            .max()
            .unwrap_or(0);
        if height <= COMPLETE_MAX_HEIGHT {
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
            if n_features <= NARROW {
                FastTree::Narrow(Box::new(NarrowTree::from_complete(&c)))
            } else {
                FastTree::Complete(c)
            }
        } else {
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
            FastTree::Pointer(PointerTree {
                nodes,
                value,
                height,
            })
        }
    }

    /// Adds this tree's path length of each row of `rows` (row-major, `nf` wide) to `acc`.
    fn accumulate(&self, rows: &[f64], nf: usize, acc: &mut [f64]) {
        match self {
            FastTree::Complete(t) => t.accumulate(rows, nf, acc),
            FastTree::Pointer(t) => t.accumulate(rows, nf, acc),
            FastTree::Narrow(_) => unreachable_layout(),
        }
    }

    /// As [`accumulate`](Self::accumulate) on rows zero-padded to a power-of-two width `P`:
    /// feature indices masked with `P - 1` need no bounds checks and row offsets are constants,
    /// which frees the registers that keep [`LANES`] records in flight.
    fn accumulate_padded<const P: usize>(&self, rows: &[[f64; P]], acc: &mut [f64]) {
        match self {
            FastTree::Complete(t) => t.accumulate_padded(rows, acc),
            FastTree::Pointer(t) => t.accumulate_padded(rows, acc),
            FastTree::Narrow(_) => unreachable_layout(),
        }
    }
}

/// Narrow trees exist only in forests of at most [`NARROW`] features, which are always scored
/// through [`IsolationForest::score_narrow`].
#[cold]
fn unreachable_layout() {
    debug_assert!(false, "narrow tree outside a narrow forest");
}

impl CompleteTree {
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

    fn accumulate(&self, rows: &[f64], nf: usize, acc: &mut [f64]) {
        for (row, a) in rows.chunks_exact(nf).zip(acc.iter_mut()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = self.step(idx, |f| row[f]);
            }
            *a += self.leaf_at(idx);
        }
    }

    fn accumulate_padded<const P: usize>(&self, rows: &[[f64; P]], acc: &mut [f64]) {
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

impl PointerTree {
    #[inline(always)]
    fn step(&self, i: usize, x: impl Fn(usize) -> f64) -> usize {
        let n = self.nodes[i];
        n.next as usize + usize::from(x(n.feature as usize) > n.threshold)
    }

    fn accumulate(&self, rows: &[f64], nf: usize, acc: &mut [f64]) {
        for (row, a) in rows.chunks_exact(nf).zip(acc.iter_mut()) {
            let mut idx = 0usize;
            for _ in 0..self.height {
                idx = self.step(idx, |f| row[f]);
            }
            *a += self.value[idx];
        }
    }

    fn accumulate_padded<const P: usize>(&self, rows: &[[f64; P]], acc: &mut [f64]) {
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
    /// Built only where the CPU can use it (AVX-512BW) and the forest fits it.
    rank: Option<RankForest>,
    /// Every tree's nodes laid out for [`attribution`](Self::attribution), trees one after
    /// another, with what each leaf adds to the attribution worked out once (see
    /// [`ExplainLayout`]).
    explain: ExplainLayout,
}

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
struct ExplainLayout {
    nodes: Vec<ExplainNode>,
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

/// One node of the explanation layout. Indices are into the whole forest's node array.
#[derive(Clone, Copy, Debug)]
struct ExplainNode {
    /// Split threshold; +inf at a leaf, so no value goes right.
    threshold: f64,
    /// Split feature (0 at a leaf).
    feature: u32,
    /// Index of the left child (the right one follows it); a leaf's own index.
    next: u32,
}

impl ExplainLayout {
    fn build(trees: &[Tree], n_features: usize) -> ExplainLayout {
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
            layout.nodes.extend((0..t.len()).map(|i| {
                if t.is_leaf(i) {
                    ExplainNode {
                        threshold: f64::INFINITY,
                        feature: 0,
                        next: index(start + i),
                    }
                } else {
                    ExplainNode {
                        threshold: t.threshold[i],
                        feature: t.feature[i],
                        next: index(start + t.left[i] as usize),
                    }
                }
            }));
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

/// The serialised form of [`IsolationForest`].
#[derive(Clone, Serialize, Deserialize)]
struct StoredForest {
    n_features: u64,
    max_samples: u64,
    trees: Vec<Tree>,
}

impl From<IsolationForest> for StoredForest {
    fn from(f: IsolationForest) -> Self {
        StoredForest {
            n_features: f.n_features as u64,
            max_samples: f.max_samples as u64,
            trees: f.trees,
        }
    }
}

/// Why stored forest data cannot be turned into a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForestFormatError {
    #[error("a forest needs at least one feature, one tree and max_samples >= 1")]
    Empty,
    #[error("tree {0} is malformed: {1}")]
    Tree(usize, &'static str),
}

impl TryFrom<StoredForest> for IsolationForest {
    type Error = ForestFormatError;

    fn try_from(s: StoredForest) -> Result<Self, Self::Error> {
        let n_features = usize::try_from(s.n_features).map_err(|_| ForestFormatError::Empty)?;
        let max_samples = usize::try_from(s.max_samples).map_err(|_| ForestFormatError::Empty)?;
        if n_features == 0 || max_samples == 0 || s.trees.is_empty() {
            return Err(ForestFormatError::Empty);
        }
        for (t, tree) in s.trees.iter().enumerate() {
            validate_tree(tree, n_features).map_err(|why| ForestFormatError::Tree(t, why))?;
        }
        Ok(IsolationForest::from_trees(
            n_features,
            max_samples,
            s.trees,
        ))
    }
}

/// Checks what scoring relies on: equal lengths, a root, features in range, and children that
/// exist, come after their parent (so there are no cycles) and are claimed once.
fn validate_tree(tree: &Tree, n_features: usize) -> Result<(), &'static str> {
    let n = tree.feature.len();
    if n == 0 {
        return Err("no nodes");
    }
    if tree.threshold.len() != n || tree.left.len() != n || tree.n_samples.len() != n {
        return Err("node arrays differ in length");
    }
    if n > u32::MAX as usize {
        return Err("too many nodes");
    }
    let mut claimed = vec![false; n];
    claimed[0] = true;
    for i in 0..n {
        let l = tree.left[i] as usize;
        if l == 0 {
            continue;
        }
        if tree.feature[i] as usize >= n_features {
            return Err("split on a feature the forest does not have");
        }
        if l <= i || l + 1 >= n {
            return Err("child index out of order or out of range");
        }
        if claimed[l] || claimed[l + 1] {
            return Err("node has two parents");
        }
        claimed[l] = true;
        claimed[l + 1] = true;
    }
    if claimed.iter().any(|c| !c) {
        return Err("unreachable node");
    }
    Ok(())
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
        let rank = if NarrowPath::detect() == NarrowPath::Avx512 {
            RankForest::build(&fast, n_features)
        } else {
            None
        };
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

    /// Fits on a (typically already standardised) matrix, trees in parallel.
    ///
    /// `params` should come from [`ForestParams::check`](super::params::ForestParams::check) for
    /// this matrix's shape; out-of-range values are clamped rather than trusted (ψ to
    /// 1..=n_rows, max_features to 1..=n_cols, at least one tree). An empty matrix gives
    /// single-leaf trees that score every record 0.5. Same params and data, same model, whatever
    /// the thread count.
    pub fn fit(x: &Matrix, params: &CheckedParams) -> IsolationForest {
        let n_rows = x.n_rows();
        let n_features = x.n_cols().max(1);
        let psi = params.max_samples.clamp(1, n_rows.max(1));
        let max_features = params.max_features.clamp(1, n_features);
        let n_trees = params.n_estimators.max(1);
        let limit = height_limit(psi);
        let trees = (0..n_trees)
            .into_par_iter()
            .map(|t| {
                let mut rng = tree_rng(params.seed, t);
                let features: Vec<usize> = if max_features < n_features {
                    rand::seq::index::sample(&mut rng, n_features, max_features).into_vec()
                } else {
                    (0..n_features).collect()
                };
                if n_rows == 0 {
                    return Tree {
                        feature: vec![0],
                        threshold: vec![0.0],
                        left: vec![0],
                        n_samples: vec![0],
                    };
                }
                let sample: Vec<usize> = if params.bootstrap {
                    (0..psi).map(|_| rng.random_range(0..n_rows)).collect()
                } else {
                    rand::seq::index::sample(&mut rng, n_rows, psi).into_vec()
                };
                grow_tree(x, &sample, &features, limit, &mut rng)
            })
            .collect();
        IsolationForest::from_trees(n_features, psi, trees)
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

    /// Turns a sum of path lengths over all trees into the score.
    #[cfg(test)]
    fn score_from_sum(&self, sum: f64) -> f64 {
        let mut s = [sum];
        self.scores_from_sums(&mut s);
        s[0]
    }

    /// Turns sums of path lengths over all trees into scores, in place, with c(ψ) computed once.
    /// With ψ = 1, c(ψ) = 0 and every score is 0.5, as scikit-learn does.
    fn scores_from_sums(&self, sums: &mut [f64]) {
        let c = average_path_length(self.max_samples as f64);
        let n_trees = self.trees.len() as f64;
        for s in sums {
            *s = if c == 0.0 {
                0.5
            } else {
                (-(*s / n_trees) / c).exp2()
            };
        }
    }

    /// Scores every row (parallel over blocks of records). Output length = `x.n_rows()`; an
    /// empty matrix gives an empty vector. A matrix whose column count differs from
    /// [`n_features`](Self::n_features) gets NaN for every row.
    pub fn score_matrix(&self, x: &Matrix) -> Vec<f64> {
        let mut out = vec![f64::NAN; x.n_rows()];
        if x.n_cols() == self.n_features {
            self.score_into(x.as_slice(), &mut out);
        }
        out
    }

    /// Scores row-major `rows` (`out.len() * n_features` values) into `out`, in parallel.
    /// If `rows` holds fewer complete rows than `out.len()`, the missing rows score NaN; values
    /// past `out.len()` rows are ignored.
    pub fn score_into(&self, rows: &[f64], out: &mut [f64]) {
        let nf = self.n_features;
        let n = (rows.len() / nf).min(out.len());
        out[n..].fill(f64::NAN);
        let rows = &rows[..n * nf];
        let out = &mut out[..n];
        #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
        if let (true, Some(rank)) = (nf > NARROW, &self.rank) {
            return self.score_rank(rank, rows, out);
        }
        match nf.next_power_of_two() {
            1..=NARROW => self.score_narrow(rows, out),
            8 => self.score_padded::<8>(rows, out),
            16 => self.score_padded::<16>(rows, out),
            32 => self.score_padded::<32>(rows, out),
            64 => self.score_padded::<64>(rows, out),
            _ => self.score_wide(rows, out),
        }
    }

    /// Blocks of records copied into rows of width `P` (zero-padded), then pushed through every
    /// tree in turn.
    fn score_padded<const P: usize>(&self, rows: &[f64], out: &mut [f64]) {
        let nf = self.n_features;
        for_blocks(rows, nf, out, |block, out| {
            let mut padded = vec![[0.0f64; P]; out.len()];
            for (p, row) in padded.iter_mut().zip(block.chunks_exact(nf)) {
                p[..nf].copy_from_slice(row);
            }
            out.fill(0.0);
            // Trees in a fixed order per record: the sum, hence the score, is bit-identical
            // whatever the thread count or block size.
            for tree in &self.fast {
                tree.accumulate_padded(&padded, out);
            }
            self.scores_from_sums(out);
        });
    }

    /// Scores one block (at most [`BLOCK_ROWS`] records) through a [`RankForest`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW.
    #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn rank_block(&self, rank: &RankForest, block: &[f64], out: &mut [f64]) {
        let mut keys = [[0u16; BLOCK_ROWS]; RANK_MAX_FEATURES];
        let mut acc = [0.0f64; BLOCK_ROWS];
        let groups = out.len().div_ceil(RANK_LANES * RANK_GROUPS) * RANK_GROUPS;
        // SAFETY: the caller guarantees AVX-512F/BW; a block has at most BLOCK_ROWS records.
        unsafe {
            rank.keys_avx512(block, &mut keys);
            match self.n_features {
                1 => rank.accumulate_avx512::<1>(&keys, groups, &mut acc),
                2 => rank.accumulate_avx512::<2>(&keys, groups, &mut acc),
                3 => rank.accumulate_avx512::<3>(&keys, groups, &mut acc),
                4 => rank.accumulate_avx512::<4>(&keys, groups, &mut acc),
                5 => rank.accumulate_avx512::<5>(&keys, groups, &mut acc),
                6 => rank.accumulate_avx512::<6>(&keys, groups, &mut acc),
                7 => rank.accumulate_avx512::<7>(&keys, groups, &mut acc),
                _ => rank.accumulate_avx512::<8>(&keys, groups, &mut acc),
            }
        }
        out.copy_from_slice(&acc[..out.len()]);
        self.scores_from_sums(out);
    }

    /// Forests of [`NARROW`] + 1 to [`RANK_MAX_FEATURES`] features on CPUs with AVX-512BW.
    #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
    fn score_rank(&self, rank: &RankForest, rows: &[f64], out: &mut [f64]) {
        let nf = self.n_features;
        // SAFETY: a RankForest is built only where detect() found AVX-512F and AVX-512BW.
        for_blocks(rows, nf, out, |block, out| unsafe {
            self.rank_block(rank, block, out)
        });
    }

    /// At most [`NARROW`] features, with the best kernel this CPU has.
    fn score_narrow(&self, rows: &[f64], out: &mut [f64]) {
        self.score_narrow_with(rows, out, NarrowPath::detect());
    }

    /// At most [`NARROW`] features: with AVX-512 and a [`RankForest`], 16-bit keys 32 records
    /// at a time; otherwise rows zero-padded to [`NARROW`] values, trees narrow or pointer.
    /// `path` is capped at what the CPU has, so tests can ask for any path safely.
    fn score_narrow_with(&self, rows: &[f64], out: &mut [f64], path: NarrowPath) {
        let path = path.min(NarrowPath::detect());
        let nf = self.n_features;
        for_blocks(rows, nf, out, |block, out| {
            #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
            if let (NarrowPath::Avx512, Some(rank)) = (path, &self.rank) {
                // SAFETY: path is Avx512 only where the CPU has AVX-512F and AVX-512BW
                // (capped by detect above).
                unsafe { self.rank_block(rank, block, out) };
                return;
            }
            let mut padded = vec![[0.0f64; NARROW]; out.len()];
            for (p, row) in padded.iter_mut().zip(block.chunks_exact(nf)) {
                p[..nf].copy_from_slice(row);
            }
            out.fill(0.0);
            match path.min(NarrowPath::detect_f64()) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: detect_f64 says Avx2 only where the CPU has AVX2 and POPCNT.
                NarrowPath::Avx2 | NarrowPath::Avx512 => unsafe {
                    self.narrow_block_avx2(&padded, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: detect_f64 says Avx or more only where the CPU has AVX and POPCNT.
                NarrowPath::Avx => unsafe { self.narrow_block_avx(&padded, out) },
                _ => self.narrow_block(&padded, out),
            }
            self.scores_from_sums(out);
        });
    }

    /// Trees in a fixed order per record: the sum, hence the score, is bit-identical whatever
    /// the thread count, block size or instruction set.
    #[inline(always)]
    fn narrow_block(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
        for tree in &self.fast {
            match tree {
                FastTree::Narrow(t) => t.accumulate(rows, out),
                FastTree::Pointer(t) => t.accumulate_padded(rows, out),
                FastTree::Complete(t) => t.accumulate_padded(rows, out),
            }
        }
    }

    /// [`narrow_block`](Self::narrow_block) with AVX: a step's four compares are one `vcmppd`
    /// (`_CMP_GT_OQ` is IEEE `>`: false on NaN), so scores are identical to the portable path.
    /// Needs AVX only (not AVX2), so CPUs with AVX but without AVX2 get it too.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx,popcnt")]
    unsafe fn narrow_block_avx(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
        for tree in &self.fast {
            match tree {
                // SAFETY: AVX and POPCNT are enabled on this function.
                FastTree::Narrow(t) => unsafe { t.accumulate_avx::<0>(rows, out) },
                FastTree::Pointer(t) => t.accumulate_padded(rows, out),
                FastTree::Complete(t) => t.accumulate_padded(rows, out),
            }
        }
    }

    /// [`narrow_block_avx`](Self::narrow_block_avx) compiled with AVX2 (as before the AVX-only
    /// variant existed): the same compares, so the same scores.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn narrow_block_avx2(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
        for tree in &self.fast {
            match tree {
                // SAFETY: AVX2 (hence AVX) and POPCNT are enabled on this function.
                FastTree::Narrow(t) => unsafe { t.accumulate_avx::<1>(rows, out) },
                FastTree::Pointer(t) => t.accumulate_padded(rows, out),
                FastTree::Complete(t) => t.accumulate_padded(rows, out),
            }
        }
    }

    /// More than 64 features: rows are used in place, one record at a time.
    fn score_wide(&self, rows: &[f64], out: &mut [f64]) {
        let nf = self.n_features;
        for_blocks(rows, nf, out, |block, out| {
            out.fill(0.0);
            for tree in &self.fast {
                tree.accumulate(block, nf, out);
            }
            self.scores_from_sums(out);
        });
    }

    /// The attribution as first written, straight from the canonical trees: the oracle the
    /// precomputed layout is tested against.
    #[cfg(test)]
    fn attribution_reference(&self, row: &[f64]) -> Vec<f64> {
        let mut attr = vec![0.0; self.n_features];
        let mut path: Vec<(usize, f64)> = Vec::new();
        for t in &self.trees {
            path.clear();
            let mut i = 0;
            let mut depth = 0usize;
            while !t.is_leaf(i) {
                let l = t.left[i] as usize;
                let next = if row[t.feature[i] as usize] > t.threshold[i] {
                    l + 1
                } else {
                    l
                };
                let n_node = f64::from(t.n_samples[i]);
                let imbalance = if n_node > 0.0 {
                    (1.0 - f64::from(t.n_samples[next]) / n_node).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                path.push((t.feature[i] as usize, imbalance));
                i = next;
                depth += 1;
            }
            if path.is_empty() {
                continue;
            }
            let h = t.leaf_value(i, depth);
            for &(f, imbalance) in &path {
                attr[f] += imbalance / h;
            }
        }
        let total: f64 = attr.iter().sum();
        if total > 0.0 && total.is_finite() {
            for a in &mut attr {
                *a /= total;
            }
        } else {
            attr.fill(0.0);
        }
        attr
    }

    /// Straightforward recursive traversal of the canonical trees: the oracle the fast layout is
    /// tested against.
    #[cfg(test)]
    fn score_reference(&self, row: &[f64]) -> f64 {
        fn walk(t: &Tree, i: usize, depth: usize, row: &[f64]) -> f64 {
            if t.is_leaf(i) {
                return t.leaf_value(i, depth);
            }
            let l = t.left[i] as usize;
            let next = if row[t.feature[i] as usize] > t.threshold[i] {
                l + 1
            } else {
                l
            };
            walk(t, next, depth + 1, row)
        }
        let mut sum = 0.0;
        for t in &self.trees {
            sum += walk(t, 0, 0, row);
        }
        self.score_from_sum(sum)
    }

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
                        let node = nodes[at[l]];
                        let right = group[row[l] + node.feature as usize] > node.threshold;
                        at[l] = node.next as usize + usize::from(right);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::params::ForestParams;

    fn params(n_rows: usize, n_features: usize, seed: u64) -> CheckedParams {
        ForestParams {
            seed,
            ..Default::default()
        }
        .check(n_rows, n_features)
        .unwrap()
    }

    /// Deterministic pseudo-random data with a few outliers.
    fn random_matrix(n_rows: usize, n_cols: usize, seed: u64) -> Matrix {
        let mut rng = StdRng::seed_from_u64(seed);
        let data = (0..n_rows * n_cols)
            .map(|i| {
                let v: f64 = rng.random::<f64>() * 2.0 - 1.0;
                if (i / n_cols) % 97 == 0 { v * 8.0 } else { v }
            })
            .collect();
        Matrix::new(n_rows, n_cols, data).unwrap()
    }

    #[test]
    fn average_path_length_matches_scikit_learn() {
        assert_eq!(average_path_length(0.0), 0.0);
        assert_eq!(average_path_length(1.0), 0.0);
        assert_eq!(average_path_length(2.0), 1.0);
        // scikit-learn: _average_path_length([256]) = 10.244770920119917
        assert!((average_path_length(256.0) - 10.244_770_920_119_917).abs() < 1e-12);
        // 2 * (ln 2 + gamma) - 2 * 2 / 3
        let c3 = 2.0 * (2f64.ln() + EULER_GAMMA) - 4.0 / 3.0;
        assert_eq!(average_path_length(3.0), c3);
    }

    #[test]
    fn height_limit_is_ceil_log2() {
        assert_eq!(height_limit(1), 1);
        assert_eq!(height_limit(2), 1);
        assert_eq!(height_limit(3), 2);
        assert_eq!(height_limit(256), 8);
        assert_eq!(height_limit(257), 9);
        assert_eq!(height_limit(4096), 12);
    }

    #[test]
    fn fast_layout_matches_reference_traversal() {
        // ψ = 256 → complete layout; larger ψ → pointer layout; small ψ → short complete trees.
        for (n_rows, n_cols, max_samples) in [
            (3000, 4, 256u64),
            (3000, 3, 2000),
            (500, 5, 37),
            (40, 2, 3),
            (700, 9, 256),
            (700, 9, 600),
            (300, 70, 128),
            (300, 1, 256),
        ] {
            let x = random_matrix(n_rows, n_cols, 7);
            let p = ForestParams {
                n_estimators: 25,
                max_samples: crate::detector::params::MaxSamples::Count(max_samples),
                ..Default::default()
            }
            .check(n_rows, n_cols)
            .unwrap();
            let f = IsolationForest::fit(&x, &p);
            let complete = f
                .fast
                .iter()
                .filter(|t| matches!(t, FastTree::Complete(_) | FastTree::Narrow(_)))
                .count();
            if max_samples > 256 {
                assert_eq!(complete, 0, "deep trees use the pointer layout");
            } else {
                assert_eq!(complete, f.n_trees());
            }
            // Score data the forest has not seen too, including values outside the training range.
            let probe = random_matrix(1237, n_cols, 99);
            for m in [&x, &probe] {
                let fast = f.score_matrix(m);
                for (i, row) in m.rows().enumerate() {
                    assert_eq!(
                        fast[i].to_bits(),
                        f.score_reference(row).to_bits(),
                        "row {i}"
                    );
                }
            }
        }
    }

    /// Probe rows for a forest: random values, training rows, and values exactly equal to split
    /// thresholds of the forest (and their neighbours), where an off-by-one comparison would show.
    fn probe_with_thresholds(f: &IsolationForest, x: &Matrix, n_rows: usize, seed: u64) -> Matrix {
        let nf = f.n_features();
        let mut per_feature: Vec<Vec<f64>> = vec![Vec::new(); nf];
        for t in &f.trees {
            for i in 0..t.len() {
                if !t.is_leaf(i) {
                    per_feature[t.feature[i] as usize].push(t.threshold[i]);
                }
            }
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = Vec::with_capacity(n_rows * nf);
        for r in 0..n_rows {
            let base = x.row(rng.random_range(0..x.n_rows()));
            // Every 5th row is made only of thresholds; the others mix thresholds in.
            let all_thresholds = r % 5 == 0;
            for (j, thresholds) in per_feature.iter().enumerate() {
                let pick = rng.random_range(0..6u32);
                let v = if !thresholds.is_empty() && (all_thresholds || pick < 3) {
                    let t = thresholds[rng.random_range(0..thresholds.len())];
                    match pick {
                        0 if !all_thresholds => t.next_up(),
                        1 if !all_thresholds => t.next_down(),
                        _ => t,
                    }
                } else if pick == 3 {
                    rng.random::<f64>() * 20.0 - 10.0
                } else {
                    base[j]
                };
                data.push(v);
            }
        }
        Matrix::new(n_rows, nf, data).unwrap()
    }

    #[test]
    fn optimized_scorer_matches_reference_on_thresholds_feature_counts_and_heights() {
        // max_samples 12 → height 4 (shallow complete), 256 → height 8 (complete, the default),
        // 700 → height 10 (pointer layout).
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for n_cols in [1usize, 3, 4, 5, 17, 36] {
            for max_samples in [12u64, 256, 700] {
                let n_rows = 1500;
                let x = random_matrix(n_rows, n_cols, 3 + n_cols as u64);
                let p = ForestParams {
                    n_estimators: 30,
                    max_samples: crate::detector::params::MaxSamples::Count(max_samples),
                    seed: max_samples,
                    ..Default::default()
                }
                .check(n_rows, n_cols)
                .unwrap();
                let f = IsolationForest::fit(&x, &p);
                // 1237 rows: several blocks plus a partial one, not a multiple of any lane count.
                let probe = probe_with_thresholds(&f, &x, 1237, n_cols as u64);
                let want: Vec<u64> = probe
                    .rows()
                    .map(|r| f.score_reference(r).to_bits())
                    .collect();
                let got: Vec<u64> = f.score_matrix(&probe).iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{n_cols} features, max_samples {max_samples}");
                let got_one: Vec<u64> = one
                    .install(|| f.score_matrix(&probe))
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(
                    got_one, want,
                    "1 thread, {n_cols} features, max_samples {max_samples}"
                );
                if NarrowPath::detect() == NarrowPath::Avx512
                    && max_samples <= 256
                    && n_cols <= RANK_MAX_FEATURES
                {
                    assert!(f.rank.is_some(), "complete trees use the rank kernel");
                }
                if n_cols <= NARROW {
                    // Every narrow kernel this CPU has, not only the one score_matrix picks.
                    for (path, got) in every_narrow_path(&f, &probe) {
                        assert_eq!(got, want, "{path:?}, {n_cols} features, ψ {max_samples}");
                    }
                }
                let Some(rank) = &f.rank else { continue };
                assert!(rank.trees.iter().all(|t| t.leaf_codes.is_some()));
                // The gather fallback for trees with many distinct leaf values, and wider
                // value tables than needed (the other lookup branches).
                for width in [0, 32, 64] {
                    let mut g = f.clone();
                    for t in &mut g.rank.as_mut().unwrap().trees {
                        match &mut t.leaf_codes {
                            Some((_, values)) if width > 0 => {
                                values.resize(values.len().max(width), 0.0)
                            }
                            codes => *codes = None,
                        }
                    }
                    let got: Vec<u64> =
                        g.score_matrix(&probe).iter().map(|v| v.to_bits()).collect();
                    assert_eq!(
                        got, want,
                        "{width} values, {n_cols} features, ψ {max_samples}"
                    );
                }
            }
        }
    }

    /// The scores' bits from every narrow kernel (each capped at what this CPU has).
    fn every_narrow_path(f: &IsolationForest, probe: &Matrix) -> Vec<(NarrowPath, Vec<u64>)> {
        [
            NarrowPath::Portable,
            NarrowPath::Avx,
            NarrowPath::Avx2,
            NarrowPath::Avx512,
        ]
        .into_iter()
        .map(|path| {
            let mut out = vec![0.0; probe.n_rows()];
            f.score_narrow_with(probe.as_slice(), &mut out, path);
            (path, out.iter().map(|v| v.to_bits()).collect())
        })
        .collect()
    }

    #[test]
    fn rank_kernel_keeps_decisions_on_non_finite_and_signed_zero_inputs() {
        // Data with many exact zeros so that 0.0 is a split threshold; probe NaN, ±inf, ±0.0.
        let mut x = random_matrix(2000, 4, 21).into_vec();
        for (i, v) in x.iter_mut().enumerate() {
            if i % 3 == 0 {
                *v = 0.0;
            }
        }
        let x = Matrix::new(2000, 4, x).unwrap();
        let f = IsolationForest::fit(&x, &params(2000, 4, 5));
        let odd = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            1e300,
            -1e-300,
        ];
        let mut data = Vec::new();
        for a in odd {
            for b in odd {
                data.extend_from_slice(&[a, b, -b, a]);
            }
        }
        let probe = Matrix::new(data.len() / 4, 4, data).unwrap();
        let want: Vec<u64> = probe
            .rows()
            .map(|r| f.score_reference(r).to_bits())
            .collect();
        for (path, got) in every_narrow_path(&f, &probe) {
            assert_eq!(got, want, "{path:?}");
        }
    }

    #[test]
    #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
    fn cut_index_ranks_like_partition_point() {
        if NarrowPath::detect() != NarrowPath::Avx512 {
            return;
        }
        let mut rng = StdRng::seed_from_u64(4);
        for n in [0usize, 1, 15, 16, 17, 255, 256, 257, 4111] {
            let mut cuts: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 10.0 - 5.0).collect();
            if n > 3 {
                cuts[0] = f64::NEG_INFINITY;
                cuts[1] = 0.0;
            }
            cuts.sort_unstable_by(f64::total_cmp);
            cuts.dedup();
            let index = CutIndex::new(&cuts);
            let mut probes = vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 7.0];
            probes.extend(cuts.iter().flat_map(|&c| [c, c.next_up(), c.next_down()]));
            probes.extend((0..300).map(|_| rng.random::<f64>() * 12.0 - 6.0));
            for x in probes {
                // SAFETY: AVX-512F checked above.
                let got = unsafe { index.rank_avx512(x) };
                assert_eq!(got, cuts.partition_point(|&c| c < x), "{n} cuts, x = {x}");
            }
        }
    }

    #[test]
    fn portable_narrow_path_matches_reference() {
        // The AVX path runs wherever the CPU has it; check the portable one explicitly too.
        let x = random_matrix(1000, 3, 12);
        let f = IsolationForest::fit(&x, &params(1000, 3, 8));
        let padded: Vec<[f64; NARROW]> = x.rows().map(|r| [r[0], r[1], r[2], 0.0]).collect();
        let mut out = vec![0.0; x.n_rows()];
        f.narrow_block(&padded, &mut out);
        f.scores_from_sums(&mut out);
        for (i, row) in x.rows().enumerate() {
            assert_eq!(
                out[i].to_bits(),
                f.score_reference(row).to_bits(),
                "row {i}"
            );
        }
    }

    #[test]
    fn same_seed_same_scores_any_thread_count() {
        let x = random_matrix(5000, 4, 1);
        let p = params(5000, 4, 42);
        let a = IsolationForest::fit(&x, &p);
        let sa = a.score_matrix(&x);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (b, sb) = one.install(|| {
            let b = IsolationForest::fit(&x, &p);
            let sb = b.score_matrix(&x);
            (b, sb)
        });
        assert_eq!(a, b);
        assert_eq!(
            sa.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            sb.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let c = IsolationForest::fit(&x, &params(5000, 4, 43));
        assert_ne!(a, c, "another seed grows other trees");
    }

    #[test]
    fn serde_round_trip_keeps_scores() {
        let x = random_matrix(2000, 3, 5);
        for max_samples in [256u64, 1000] {
            let p = ForestParams {
                n_estimators: 20,
                max_samples: crate::detector::params::MaxSamples::Count(max_samples),
                ..Default::default()
            }
            .check(2000, 3)
            .unwrap();
            let f = IsolationForest::fit(&x, &p);
            let bytes = postcard::to_allocvec(&f).unwrap();
            let g: IsolationForest = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(f, g);
            assert_eq!(f.score_matrix(&x), g.score_matrix(&x));
            let json = serde_json::to_string(&f).unwrap();
            let h: IsolationForest = serde_json::from_str(&json).unwrap();
            assert_eq!(f.score_matrix(&x), h.score_matrix(&x));
        }
    }

    #[test]
    fn corrupt_model_is_rejected() {
        let x = random_matrix(300, 2, 5);
        let f = IsolationForest::fit(&x, &params(300, 2, 0));
        let mut s = StoredForest::from(f.clone());
        s.trees[0].feature[0] = 7;
        assert!(IsolationForest::try_from(s).is_err());
        let mut s = StoredForest::from(f.clone());
        s.trees[1].left[0] = 0;
        assert!(IsolationForest::try_from(s).is_err(), "orphaned nodes");
        let mut s = StoredForest::from(f.clone());
        let last = s.trees[2].left.len() - 1;
        s.trees[2].left[last] = 1;
        assert!(IsolationForest::try_from(s).is_err(), "child before parent");
        let mut s = StoredForest::from(f);
        s.trees.clear();
        assert!(IsolationForest::try_from(s).is_err());
    }

    #[test]
    fn constant_columns_are_never_split() {
        let mut x = random_matrix(1000, 3, 3).into_vec();
        for r in 0..1000 {
            x[r * 3 + 1] = 4.2;
        }
        let x = Matrix::new(1000, 3, x).unwrap();
        let f = IsolationForest::fit(&x, &params(1000, 3, 0));
        for t in &f.trees {
            for i in 0..t.len() {
                if !t.is_leaf(i) {
                    assert_ne!(t.feature[i], 1);
                }
            }
        }
        // All columns constant: single-leaf trees, every score 2^-1.
        let c = Matrix::new(500, 2, vec![1.0; 1000]).unwrap();
        let f = IsolationForest::fit(&c, &params(500, 2, 0));
        assert!(f.trees.iter().all(|t| t.len() == 1));
        let s = f.score_matrix(&random_matrix(10, 2, 1));
        assert!(s.iter().all(|&v| (v - 0.5).abs() < 1e-12));
        assert!(f.attribution(&[3.0, 4.0]).iter().all(|&a| a == 0.0));
    }

    #[test]
    fn single_row_and_empty_inputs() {
        let one = Matrix::new(1, 3, vec![1.0, 2.0, 3.0]).unwrap();
        let f = IsolationForest::fit(&one, &params(1, 3, 0));
        assert_eq!(f.max_samples(), 1);
        assert_eq!(f.score_matrix(&one), vec![0.5]);
        let empty = Matrix::new(0, 3, vec![]).unwrap();
        assert!(f.score_matrix(&empty).is_empty());
        let g = IsolationForest::fit(&empty, &params(1, 3, 0));
        assert_eq!(g.score_matrix(&one), vec![0.5]);
        // Wrong widths never panic.
        assert!(
            f.score_matrix(&random_matrix(4, 2, 0))
                .iter()
                .all(|v| v.is_nan())
        );
        let mut out = [0.0; 3];
        f.score_into(&[1.0; 7], &mut out);
        assert!(out[0].is_finite() && out[1].is_finite() && out[2].is_nan());
        assert_eq!(f.attribution(&[1.0]), vec![0.0; 3]);
    }

    #[test]
    fn scores_are_in_unit_interval_and_outliers_score_higher() {
        let x = random_matrix(4000, 4, 11);
        let f = IsolationForest::fit(&x, &params(4000, 4, 3));
        let s = f.score_matrix(&x);
        assert!(s.iter().all(|&v| v > 0.0 && v <= 1.0));
        let far = Matrix::new(1, 4, vec![30.0, -30.0, 30.0, 30.0]).unwrap();
        let centre = Matrix::new(1, 4, vec![0.0; 4]).unwrap();
        assert!(f.score_matrix(&far)[0] > 0.7);
        assert!(f.score_matrix(&centre)[0] < 0.5);
        // Non-finite inputs score without panicking.
        let odd = Matrix::new(
            2,
            4,
            vec![
                f64::NAN,
                f64::INFINITY,
                -1.0,
                0.0,
                1.0,
                2.0,
                3.0,
                -f64::INFINITY,
            ],
        )
        .unwrap();
        assert!(f.score_matrix(&odd).iter().all(|v| *v > 0.0 && *v <= 1.0));
    }

    #[test]
    fn max_features_and_bootstrap_are_honoured() {
        let x = random_matrix(2000, 6, 2);
        let p = ForestParams {
            max_features: crate::detector::params::MaxFeatures::Count(2),
            bootstrap: true,
            ..Default::default()
        }
        .check(2000, 6)
        .unwrap();
        let f = IsolationForest::fit(&x, &p);
        for t in &f.trees {
            let used: std::collections::BTreeSet<u32> = (0..t.len())
                .filter(|&i| !t.is_leaf(i))
                .map(|i| t.feature[i])
                .collect();
            assert!(used.len() <= 2);
            assert_eq!(t.n_samples[0], 256);
        }
        for (i, row) in x.rows().enumerate().take(300) {
            assert_eq!(f.score_matrix(&x)[i], f.score_reference(row));
        }
    }

    #[test]
    fn attribution_points_at_the_unusual_feature() {
        let mut data = random_matrix(1000, 3, 4).into_vec();
        for r in 0..1000 {
            data[r * 3 + 2] = data[r * 3 + 2].clamp(-1.0, 1.0);
        }
        let x = Matrix::new(1000, 3, data).unwrap();
        let f = IsolationForest::fit(&x, &params(1000, 3, 9));
        let a = f.attribution(&[0.1, -0.2, 6.0]);
        assert_eq!(a.len(), 3);
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(a.iter().all(|&v| v >= 0.0));
        assert!(a[2] > a[0] && a[2] > a[1], "{a:?}");
    }

    #[test]
    fn attributions_of_many_records_equal_one_at_a_time() {
        let x = random_matrix(600, 4, 21);
        let f = IsolationForest::fit(&x, &params(600, 4, 5));
        // 203 rows: whole groups of EXPLAIN_LANES and a partial one; NaN and far outliers too.
        let mut rows: Vec<f64> = x.as_slice()[..200 * 4].to_vec();
        rows.extend([
            f64::NAN,
            0.0,
            1.0,
            -1.0,
            80.0,
            -80.0,
            0.0,
            0.0,
            0.5,
            0.5,
            0.5,
            0.5,
        ]);
        let together = f.attributions(&rows);
        assert_eq!(together.len(), rows.len());
        for (row, got) in rows.chunks_exact(4).zip(together.chunks_exact(4)) {
            // Bit for bit: each record adds its trees in the same order either way.
            let alone = f.attribution(row);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{row:?}"
            );
        }
        assert!(f.attributions(&[]).is_empty());
    }

    #[test]
    fn attribution_layout_agrees_with_the_reference() {
        // Shallow, complete (height 8) and deep (max_samples 2000, height 11) trees; bootstrap
        // makes repeated rows, so some edges have imbalance 0; rows on thresholds and outliers.
        // Up to DENSE_MAX_FEATURES features leaves' weights are dense; 12 takes the sparse path.
        for (n_rows, n_cols, max_samples, bootstrap) in [
            (40, 1, 40, false),
            (1000, 4, 256, false),
            (3000, 5, 2000, true),
            (800, 12, 256, false),
        ] {
            let x = random_matrix(n_rows, n_cols, 11);
            let p = ForestParams {
                max_samples: crate::detector::params::MaxSamples::Count(max_samples),
                bootstrap,
                ..Default::default()
            }
            .check(n_rows, n_cols)
            .unwrap();
            let f = IsolationForest::fit(&x, &p);
            let on_threshold: Vec<f64> = (0..n_cols)
                .map(|c| {
                    let t = &f.trees[c % f.trees.len()];
                    if t.is_leaf(0) { 0.0 } else { t.threshold[0] }
                })
                .collect();
            let rows = x.rows().take(200).map(<[f64]>::to_vec).chain([
                on_threshold,
                vec![50.0; n_cols],
                vec![f64::NAN; n_cols],
            ]);
            for row in rows {
                let fast = f.attribution(&row);
                let reference = f.attribution_reference(&row);
                // Sums are associated per tree rather than per edge: equal up to rounding.
                assert_eq!(fast.len(), reference.len());
                for (a, b) in fast.iter().zip(&reference) {
                    assert!(
                        (a - b).abs() <= 1e-12,
                        "row {row:?}: {fast:?} vs {reference:?}"
                    );
                }
            }
        }
    }
}
