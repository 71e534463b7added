//! The AVX and AVX2 kernels of the narrow layout: a step's four compares are one `vcmppd`.

use super::layout::FastTree;
use super::narrow::{NARROW, NarrowTree};
use super::{COMPLETE_SLOTS, IsolationForest};

/// Records in flight in the AVX narrow kernel, whose steps are cheaper (found best of 8/12/16).
const AVX_LANES: usize = 12;

impl NarrowTree {
    /// `COPY` gives each caller its own copy: with two callers LLVM stopped inlining it into
    /// [`IsolationForest::narrow_block_avx2`] and callgrind counted 9 % more instructions.
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

impl IsolationForest {
    /// [`narrow_block`](Self::narrow_block) with AVX: a step's four compares are one `vcmppd`
    /// (`_CMP_GT_OQ` is IEEE `>`: false on NaN), so scores are identical to the portable path.
    /// Needs AVX only (not AVX2), so CPUs with AVX but without AVX2 get it too.
    #[target_feature(enable = "avx,popcnt")]
    pub(super) unsafe fn narrow_block_avx(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
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
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn narrow_block_avx2(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
        for tree in &self.fast {
            match tree {
                // SAFETY: AVX2 (hence AVX) and POPCNT are enabled on this function.
                FastTree::Narrow(t) => unsafe { t.accumulate_avx::<1>(rows, out) },
                FastTree::Pointer(t) => t.accumulate_padded(rows, out),
                FastTree::Complete(t) => t.accumulate_padded(rows, out),
            }
        }
    }
}
