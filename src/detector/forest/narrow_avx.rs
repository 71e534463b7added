//! The AVX and AVX2 kernels of the narrow layout: a step's four compares are one `vcmppd`.

use super::layout::accumulate_lanes;
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
        accumulate_lanes::<_, _, AVX_LANES>(self, rows, acc, |i, g, k| {
            2 * i + 1 + right(&g[k], &self.node[i & (COMPLETE_SLOTS - 1)])
        });
    }
}

impl IsolationForest {
    /// [`narrow_block`](Self::narrow_block) with AVX: a step's four compares are one `vcmppd`
    /// (`_CMP_GT_OQ` is IEEE `>`: false on NaN), so scores are identical to the portable path.
    /// Needs AVX only (not AVX2), so CPUs with AVX but without AVX2 get it too.
    #[target_feature(enable = "avx,popcnt")]
    pub(super) unsafe fn narrow_block_avx(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
        // SAFETY: AVX and POPCNT are enabled on this function.
        self.narrow_trees(rows, out, |t, rows, out| unsafe {
            t.accumulate_avx::<0>(rows, out)
        });
    }

    /// [`narrow_block_avx`](Self::narrow_block_avx) compiled with AVX2 (as before the AVX-only
    /// variant existed): the same compares, so the same scores.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn narrow_block_avx2(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
        // SAFETY: AVX2 (hence AVX) and POPCNT are enabled on this function.
        self.narrow_trees(rows, out, |t, rows, out| unsafe {
            t.accumulate_avx::<1>(rows, out)
        });
    }
}
