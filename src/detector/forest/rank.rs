//! The rank layouts (AVX-512BW and AVX2): the forest's thresholds as 16-bit ranks, built from its complete trees.

use rayon::prelude::*;

use super::complete::CompleteTree;
use super::layout::FastTree;
use super::narrow::{NARROW, NarrowTree};
use super::score::NarrowPath;
use super::{COMPLETE_MAX_HEIGHT, COMPLETE_SLOTS};

/// Key of a node that sends no record right: a padding node, or a feature it does not split on.
/// Record keys are at most the number of cut points, which is kept below it.
const NEVER_RIGHT: u16 = u16::MAX;
/// Nodes per level in a [`RankTree`] table: the widest level of a height-8 tree.
pub(super) const RANK_LEVEL_SLOTS: usize = COMPLETE_SLOTS / 2;
/// Widest forest scored by [`RankForest`]: each level costs a permute and a compare per feature.
pub(super) const RANK_MAX_FEATURES: usize = 8;

/// The layout of forests of at most [`RANK_MAX_FEATURES`] features and complete trees on CPUs
/// with AVX-512BW ([`RankTree`]s) or AVX2 ([`HeapTree`]s).
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
pub(super) struct RankForest {
    /// Per feature: the distinct thresholds the forest splits that feature at, ascending.
    pub(super) cuts: Vec<Vec<f64>>,
    /// Per feature: [`CutIndex`] of `cuts`, to rank a value with a few 16-wide compares.
    pub(super) index: Vec<CutIndex>,
    /// The kernel the trees are laid out for: [`NarrowPath::Avx512`] or [`NarrowPath::Avx2Rank`].
    pub(super) kernel: NarrowPath,
    /// The trees for the AVX-512BW kernel (empty for the AVX2 one).
    pub(super) trees: Vec<RankTree>,
    /// The trees for the AVX2 kernel (empty for the AVX-512BW one).
    pub(super) heap: Vec<HeapTree>,
}

/// A static 16-ary search tree over sorted cuts (after the S+ trees of Algorithmica's
/// "Algorithms for Modern Hardware"). `levels[0]` is the cuts; `levels[k + 1][i]` is
/// `levels[k][16 i + 15]`, the last cut of block i, so the blocks of `levels[k]` wholly below x
/// are counted by the cuts of `levels[k + 1]` below x; the top level has at most 15 cuts. Every
/// level is padded with +inf (below nothing) to whole blocks plus one.
#[derive(Clone)]
pub(super) struct CutIndex {
    pub(super) levels: Vec<Vec<f64>>,
}

impl CutIndex {
    pub(super) fn new(cuts: &[f64]) -> CutIndex {
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
}

/// One complete tree of a [`RankForest`]: for each level, the split key of every node of that
/// level ([`NEVER_RIGHT`] for padding) and its split feature, indexed by the node's position
/// within the level; `leaf` as in [`CompleteTree`].
#[derive(Clone)]
pub(super) struct RankTree {
    pub(super) keys: Box<[[u16; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT]>,
    /// The feature each node splits on (0 for nodes that send nothing right), same indexing.
    pub(super) feats: Box<[[u16; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT]>,
    pub(super) leaf: Box<[f64; COMPLETE_SLOTS]>,
    /// When the tree has at most [`RANK_MAX_VALUES`] distinct leaf values: the code of each
    /// leaf slot and the values, padded to 16, 32 or 64 entries. Leaf values are then looked up
    /// with register permutes; a gather of 8 values costs more than a whole level of the walk.
    pub(super) leaf_codes: Option<(Box<[u16; COMPLETE_SLOTS]>, Vec<f64>)>,
    /// The root's split feature and key (level 0 of `keys` in short): one compare instead of
    /// one per feature.
    pub(super) root: (usize, u16),
    pub(super) height: usize,
}

/// One complete tree of a [`RankForest`] for the AVX2 kernel, whose permutes and loads have
/// 32-bit lanes: node `u` in heap order (root 1, children `2u` and `2u + 1`; entry 0 unused) is
/// one word, its split key in the low 16 bits ([`NEVER_RIGHT`] for padding) and its split feature
/// in the top three, bit-reversed (bit 31 is the feature's bit 0, bit 30 its bit 1, bit 29 its bit
/// 2), so that each level of the blend tree picking a record's key reads its bit as the sign.
/// After `height` steps a record is at `2^height + slot`; `leaf` as in [`CompleteTree`].
#[derive(Clone)]
pub(super) struct HeapTree {
    pub(super) node: Box<[u32; COMPLETE_SLOTS]>,
    pub(super) leaf: Box<[f64; COMPLETE_SLOTS]>,
    pub(super) height: usize,
}

impl HeapTree {
    /// From the per-level keys and features of a [`RankTree`].
    fn new(
        keys: &[[u16; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT],
        feats: &[[u16; RANK_LEVEL_SLOTS]; COMPLETE_MAX_HEIGHT],
        leaf: &[f64; COMPLETE_SLOTS],
        height: usize,
    ) -> HeapTree {
        let mut node = Box::new([u32::from(NEVER_RIGHT); COMPLETE_SLOTS]);
        for level in 0..height {
            for j in 0..1usize << level {
                let f = u32::from(feats[level][j]);
                let reversed = ((f & 1) << 31) | ((f & 2) << 29) | ((f & 4) << 27);
                node[(1 << level) + j] = u32::from(keys[level][j]) | reversed;
            }
        }
        HeapTree {
            node,
            leaf: Box::new(*leaf),
            height,
        }
    }
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
    /// The layout for `kernel` ([`NarrowPath::Avx512`] or [`NarrowPath::Avx2Rank`]); `None` unless
    /// this CPU runs that kernel, every tree is complete (narrow or not) and each feature has
    /// fewer cuts than 16-bit keys allow.
    pub(super) fn build(
        fast: &[FastTree],
        n_features: usize,
        kernel: NarrowPath,
    ) -> Option<RankForest> {
        let runs = match kernel {
            NarrowPath::Avx512 => NarrowPath::detect() == NarrowPath::Avx512,
            NarrowPath::Avx2Rank => NarrowPath::detect() >= NarrowPath::Avx2Rank,
            _ => false,
        };
        if !runs || n_features > RANK_MAX_FEATURES {
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
        let levels = narrow.par_iter().map(|t| {
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
            (keys, feats, t)
        });
        let (trees, heap) = if kernel == NarrowPath::Avx512 {
            let trees = levels
                .map(|(keys, feats, t)| {
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
            (trees, Vec::new())
        } else {
            let heap = levels
                .map(|(keys, feats, t)| HeapTree::new(&keys, &feats, t.leaf(), t.height()))
                .collect();
            (Vec::new(), heap)
        };
        let index = cuts.iter().map(|c| CutIndex::new(c)).collect();
        Some(RankForest {
            cuts,
            index,
            kernel,
            trees,
            heap,
        })
    }
}
