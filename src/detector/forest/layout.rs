//! What the f64 layouts share: the walk of records to their leaves, written once over any layout, and each tree's layout.

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

    /// As [`accumulate`](Self::accumulate) on rows zero-padded to a power-of-two width `P`.
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

/// A layout that brings every record to a leaf in exactly [`height`](Self::height) branch-free
/// steps from node 0: what the walks need besides the step, which a kernel may bring its own of
/// (the narrow ones compare the whole record at once).
pub(super) trait Layout {
    /// Steps from the root to a leaf, the same for every record.
    fn height(&self) -> usize;

    /// What the leaf at node `i`, where a record is after [`height`](Self::height) steps, adds
    /// to its path-length sum.
    fn leaf(&self, i: usize) -> f64;
}

/// A layout whose step reads one feature of the record. The loops over records are written
/// once, here and in [`accumulate_lanes`], and monomorphised per layout and row width. They
/// stay out of line so that each instance has its own registers whatever calls it: inlined into
/// the scoring closure, the lane loop spilled lanes to the stack (callgrind, +17 % Ir).
pub(super) trait FeatureStep: Layout {
    /// The node after `i` for a record whose value of feature `f` is `x(f)`.
    fn step(&self, i: usize, x: impl Fn(usize) -> f64) -> usize;

    /// Adds this tree's path length of each row of `rows` (row-major, `nf` wide) to `acc`.
    #[inline(never)]
    fn accumulate(&self, rows: &[f64], nf: usize, acc: &mut [f64]) {
        for (row, a) in rows.chunks_exact(nf).zip(acc.iter_mut()) {
            *a += walk(self, |i| self.step(i, |f| row[f]));
        }
    }

    /// As [`accumulate`](Self::accumulate) on rows zero-padded to a power-of-two width `P`:
    /// feature indices masked with `P - 1` need no bounds checks and row offsets are constants,
    /// which frees the registers that keep [`LANES`] records in flight.
    #[inline(never)]
    fn accumulate_padded<const P: usize>(&self, rows: &[[f64; P]], acc: &mut [f64]) {
        accumulate_lanes::<_, _, LANES>(self, rows, acc, |i, g, k| {
            self.step(i, |f| g[k][f & (P - 1)])
        });
    }
}

/// The value of the leaf of `tree` that one record reaches by `step` from node 0.
#[inline(always)]
fn walk<T: Layout + ?Sized>(tree: &T, step: impl Fn(usize) -> usize) -> f64 {
    let mut idx = 0usize;
    for _ in 0..tree.height() {
        idx = step(idx);
    }
    tree.leaf(idx)
}

/// Adds to `acc[r]` the value of the leaf of `tree` that record `r` of `rows` reaches:
/// `L` records at a time, interleaved step by step so that their loads overlap, then the rest
/// one by one. `step(i, group, k)` is the node after `i` for record `k` of `group`; taking the
/// group and lane, not the record, lets a step address the record only where it reads it, as
/// the loops written out per layout did (the same code, the same registers). The kernels pass
/// their own step: a closure inherits the target features of the function that defines it, so
/// an AVX step stays AVX once this is inlined there.
#[inline(always)]
// `k` is the lane the step reads as well as the index of `idx`: the loop of the hand-written
// kernels, kept as it was measured.
#[allow(clippy::needless_range_loop)]
pub(super) fn accumulate_lanes<T: Layout + ?Sized, R, const L: usize>(
    tree: &T,
    rows: &[R],
    acc: &mut [f64],
    step: impl Fn(usize, &[R], usize) -> usize,
) {
    let mut groups = rows.chunks_exact(L);
    let mut accs = acc.chunks_exact_mut(L);
    for (g, a) in (&mut groups).zip(&mut accs) {
        let mut idx = [0usize; L];
        for _ in 0..tree.height() {
            for k in 0..L {
                idx[k] = step(idx[k], g, k);
            }
        }
        for k in 0..L {
            a[k] += tree.leaf(idx[k]);
        }
    }
    for (row, a) in groups.remainder().iter().zip(accs.into_remainder()) {
        *a += walk(tree, |i| step(i, std::slice::from_ref(row), 0));
    }
}
