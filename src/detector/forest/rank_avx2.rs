//! The AVX2 rank kernel: records ranked with 4-wide compares, then walked 8 to a register, a whole block level by level, down each tree.
//!
//! AVX2 has no 16-bit variable permute, so keys and node words are 32-bit: a register holds 8
//! records, and the 8-entry `vpermd` holds a level of up to 8 nodes. A record's heap position `u`
//! indexes the node tables directly (the permute reads its low 3 bits); levels of 16 and 32 nodes
//! are two and four permutes blended on bits 3 and 4 of `u`, wider levels and the leaf values are
//! read with scalar loads (cheaper than AVX2's gathers on the Zen 3 this was measured on). Each
//! node word carries the split feature bit-reversed in its top bits, so the record's key on that
//! feature is a tree of `vblendvps` reading one feature bit as the sign, shifting left by one
//! between levels.

// The register-only intrinsics are safe to call in an AVX2 function from Rust 1.87 on, unsafe
// before: the unsafe blocks around them keep the module building with the MSRV (1.85).
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::rank::{CutIndex, HeapTree, RANK_MAX_FEATURES, RankForest};
use super::score::BLOCK_ROWS;
use super::{COMPLETE_SLOTS, IsolationForest};

/// Records in a register: one 32-bit key per record.
const LANES: usize = 8;

impl CutIndex {
    /// Number of cuts below `x` (0 for NaN), as `cuts.partition_point(|&c| c < x)`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and POPCNT.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn rank_avx2(&self, x: f64) -> usize {
        // SAFETY: register-only; AVX is enabled on this function.
        let xv = unsafe { _mm256_set1_pd(x) };
        let mut q = 0usize;
        for level in self.levels.iter().rev() {
            // q blocks of this level are wholly below x; count the cuts below x in the next one.
            let block = &level[16 * q..16 * q + 16];
            // Ordered `<`: false for NaN, so NaN counts nothing.
            // SAFETY: `block` is 16 f64s; each load reads 4 of them.
            let below = |k: usize| unsafe {
                _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(
                    _mm256_loadu_pd(block[4 * k..].as_ptr()),
                    xv,
                )) as u32
            };
            let m = below(0) | (below(1) << 4) | (below(2) << 8) | (below(3) << 12);
            q = 16 * q + m.count_ones() as usize;
        }
        q
    }
}

impl RankForest {
    /// Keys of row-major `rows` (`nf` wide, at most [`BLOCK_ROWS`]) into feature-major `keys`:
    /// per value, the number of cuts below it (NaN is below none, so it stays left everywhere).
    ///
    /// # Safety
    /// The CPU must have AVX2 and POPCNT.
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn keys_avx2(&self, rows: &[f64], keys: &mut [[u32; BLOCK_ROWS]; RANK_MAX_FEATURES]) {
        let nf = self.cuts.len();
        for (r, row) in rows.chunks_exact(nf).enumerate() {
            for (f, index) in self.index.iter().enumerate() {
                // At most the cut count, which build() keeps below u16::MAX.
                // SAFETY: AVX2 and POPCNT are enabled on this function.
                keys[f][r] = unsafe { index.rank_avx2(row[f]) } as u32;
            }
        }
    }

    /// Adds every tree's path length of the first `groups * LANES` records of `keys` to `acc`,
    /// trees in forest order (the same sum, bit for bit, as the other layouts).
    ///
    /// # Safety
    /// The CPU must have AVX2. `groups` is at most `BLOCK_ROWS / LANES`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn accumulate_avx2<const NF: usize>(
        &self,
        keys: &[[u32; BLOCK_ROWS]; RANK_MAX_FEATURES],
        groups: usize,
        acc: &mut [f64; BLOCK_ROWS],
    ) {
        assert!(groups * LANES <= BLOCK_ROWS);
        for tree in &self.heap {
            // SAFETY: AVX2 is enabled on this function; groups checked above.
            unsafe { tree_avx2::<NF>(tree, keys, groups, acc) };
        }
    }
}

/// One tree of [`RankForest::accumulate_avx2`].
///
/// # Safety
/// The CPU must have AVX2; `groups * LANES <= BLOCK_ROWS`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tree_avx2<const NF: usize>(
    tree: &HeapTree,
    keys: &[[u32; BLOCK_ROWS]; RANK_MAX_FEATURES],
    groups: usize,
    acc: &mut [f64; BLOCK_ROWS],
) {
    // SAFETY (every unsafe block without its own comment): intrinsics on registers only, with
    // AVX2 enabled on this function (closures inherit it).
    let h = tree.height;
    let node = &tree.node;
    let key_bits = unsafe { _mm256_set1_epi32(0xffff) };
    // SAFETY: 8 u32 at 8 q <= 56 lie inside the 256-entry table.
    let table = |q: usize| unsafe { _mm256_loadu_si256(node[8 * q..].as_ptr().cast()) };
    // Levels 1 and 2 (u in 2..8) share a register, level 3 (u in 8..16) has one, level 4 two,
    // level 5 four.
    let t12 = table(0);
    let t3 = table(1);
    let t4 = [table(2), table(3)];
    let t5 = [table(4), table(5), table(6), table(7)];
    let root = node[1];
    let root_feature = ((root >> 31) | ((root >> 29) & 2) | ((root >> 27) & 4)) as usize;
    let root_key = unsafe { _mm256_set1_epi32((root & 0xffff) as i32) };
    let first_leaf = unsafe { _mm256_set1_epi32(1 << h) };
    // Each record's key on the feature of its node: a blend tree over the feature's bits, which
    // `e` holds bit-reversed from its sign bit down (NF <= 8: at most three levels of blends).
    let select = |x: &[__m256i; NF], e: __m256i| unsafe {
        let mut v = *x;
        let (mut n, mut m) = (NF, _mm256_castsi256_ps(e));
        while n > 1 {
            for i in 0..n / 2 {
                v[i] = _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(v[2 * i]),
                    _mm256_castsi256_ps(v[2 * i + 1]),
                    m,
                ));
            }
            if n % 2 == 1 {
                // The last one has no partner: no feature index selects past NF - 1.
                v[n / 2] = v[n - 1];
            }
            n = n.div_ceil(2);
            m = _mm256_castsi256_ps(_mm256_slli_epi32::<1>(_mm256_castps_si256(m)));
        }
        v[0]
    };
    // Next position 2u + [key > node key] (both below 2^16, so the signed compare is exact): the
    // compare is -1 where the record goes right.
    let step = |u: __m256i, e: __m256i, x: &[__m256i; NF]| unsafe {
        let k = _mm256_and_si256(e, key_bits);
        let right = _mm256_cmpgt_epi32(select(x, e), k);
        _mm256_sub_epi32(_mm256_add_epi32(u, u), right)
    };
    // 8 table words picked by the low 3 bits of each position.
    let permute = |t: __m256i, u: __m256i| unsafe { _mm256_permutevar8x32_epi32(t, u) };
    // Where bit `b` of each position is set: that bit moved to the sign, as blendv reads it.
    let bit3 = |u: __m256i| unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<28>(u)) };
    let bit4 = |u: __m256i| unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<27>(u)) };
    let blend = |a: __m256i, b: __m256i, m: __m256| unsafe {
        _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(a),
            _mm256_castsi256_ps(b),
            m,
        ))
    };
    // SAFETY: 8 u32 of a [u32; 512] row at 8 g <= 504 (g < groups <= 64).
    let load =
        |f: usize, g: usize| unsafe { _mm256_loadu_si256(keys[f][g * LANES..].as_ptr().cast()) };
    let x = |g: usize| -> [__m256i; NF] { std::array::from_fn(|f| load(f, g)) };
    // Heap positions: the root is 1, node u's children 2u and 2u + 1. Level by level over all
    // the block's registers: each is an independent chain, so the CPU always has work while
    // one waits on its permute, load and compare latencies.
    let mut us = [unsafe { _mm256_set1_epi32(1) }; BLOCK_ROWS / LANES];
    let us = &mut us[..groups];
    if h > 0 {
        // The root splits on one feature: one compare.
        for (g, u) in us.iter_mut().enumerate() {
            let right = unsafe { _mm256_cmpgt_epi32(load(root_feature, g), root_key) };
            *u = unsafe { _mm256_sub_epi32(_mm256_add_epi32(*u, *u), right) };
        }
    }
    for level in 1..h.min(4) {
        let t = if level < 3 { t12 } else { t3 };
        for (g, u) in us.iter_mut().enumerate() {
            *u = step(*u, permute(t, *u), &x(g));
        }
    }
    if h > 4 {
        for (g, u) in us.iter_mut().enumerate() {
            let e = blend(permute(t4[0], *u), permute(t4[1], *u), bit3(*u));
            *u = step(*u, e, &x(g));
        }
    }
    if h > 5 {
        for (g, u) in us.iter_mut().enumerate() {
            let (odd, pair) = (bit3(*u), bit4(*u));
            let lo = blend(permute(t5[0], *u), permute(t5[1], *u), odd);
            let hi = blend(permute(t5[2], *u), permute(t5[3], *u), odd);
            *u = step(*u, blend(lo, hi, pair), &x(g));
        }
    }
    // The lanes of a register of positions, to index tables with scalar loads: on this Zen 3
    // (EPYC, AVX2 only) 8 loads and inserts cost less than a `vpgatherdd` or two `vgatherdpd`,
    // and than the 8 permutes and 7 blends of a 64-node level (measured, CPU time per pass).
    let lanes = |u: __m256i| {
        let mut i = [0u32; LANES];
        // SAFETY: 32 bytes into an array of 8 u32.
        unsafe { _mm256_storeu_si256(i.as_mut_ptr().cast(), u) };
        // Positions and slots are below 2^8 = 256, the length of `node` and `leaf`: the mask
        // only tells the compiler so.
        i.map(|i| i as usize & (COMPLETE_SLOTS - 1))
    };
    for _ in 6..h {
        for (g, u) in us.iter_mut().enumerate() {
            let i = lanes(*u);
            let n = |k: usize| node[i[k]] as i32;
            let e = unsafe { _mm256_setr_epi32(n(0), n(1), n(2), n(3), n(4), n(5), n(6), n(7)) };
            *u = step(*u, e, &x(g));
        }
    }
    for (u, a) in us.iter().zip(acc.chunks_exact_mut(LANES)) {
        // u is 2^h + the leaf slot.
        let i = lanes(unsafe { _mm256_sub_epi32(*u, first_leaf) });
        let l = |k: usize| tree.leaf[i[k]];
        // SAFETY: `a` is 8 f64s; the rest works on registers.
        unsafe {
            let lo = _mm256_setr_pd(l(0), l(1), l(2), l(3));
            let hi = _mm256_setr_pd(l(4), l(5), l(6), l(7));
            let p = a.as_mut_ptr();
            _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), lo));
            _mm256_storeu_pd(p.add(4), _mm256_add_pd(_mm256_loadu_pd(p.add(4)), hi));
        }
    }
}

impl IsolationForest {
    /// Scores one block (at most [`BLOCK_ROWS`] records) through a [`RankForest`] laid out for
    /// the AVX2 kernel.
    ///
    /// # Safety
    /// The CPU must have AVX2 and POPCNT.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn rank2_block(&self, rank: &RankForest, block: &[f64], out: &mut [f64]) {
        let mut keys = [[0u32; BLOCK_ROWS]; RANK_MAX_FEATURES];
        let mut acc = [0.0f64; BLOCK_ROWS];
        // Registers of 8 records; past out.len(), keys are 0 and the sums are dropped.
        let groups = out.len().div_ceil(LANES);
        // SAFETY: the caller guarantees AVX2 and POPCNT; groups covers at most BLOCK_ROWS
        // records, since out.len() <= BLOCK_ROWS, a multiple of LANES.
        unsafe {
            rank.keys_avx2(block, &mut keys);
            match self.n_features {
                1 => rank.accumulate_avx2::<1>(&keys, groups, &mut acc),
                2 => rank.accumulate_avx2::<2>(&keys, groups, &mut acc),
                3 => rank.accumulate_avx2::<3>(&keys, groups, &mut acc),
                4 => rank.accumulate_avx2::<4>(&keys, groups, &mut acc),
                5 => rank.accumulate_avx2::<5>(&keys, groups, &mut acc),
                6 => rank.accumulate_avx2::<6>(&keys, groups, &mut acc),
                7 => rank.accumulate_avx2::<7>(&keys, groups, &mut acc),
                _ => rank.accumulate_avx2::<8>(&keys, groups, &mut acc),
            }
        }
        out.copy_from_slice(&acc[..out.len()]);
        self.scores_from_sums(out);
    }
}
