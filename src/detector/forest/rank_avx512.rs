//! The AVX-512BW kernel: records ranked with 16-wide compares, then walked 4 x 32 at a time down each tree in registers.
// The AVX-512 intrinsics are stable since Rust 1.89; build.rs sets the cfg that compiles this
// module from 1.89 on.
#![allow(clippy::incompatible_msrv)]

use super::IsolationForest;
use super::rank::{CutIndex, RANK_LEVEL_SLOTS, RANK_MAX_FEATURES, RankForest};
use super::score::BLOCK_ROWS;

/// Records scored side by side by [`RankForest::accumulate_avx512`]: one 16-bit key per record
/// in each of a 512-bit register's 32 lanes.
const RANK_LANES: usize = 32;
/// Groups of [`RANK_LANES`] records walked down a tree together (a divisor of
/// `BLOCK_ROWS / RANK_LANES`).
const RANK_GROUPS: usize = 4;

/// Entry `$i` of a table held in up to eight registers `$table(0)..$table(7)`: a two-register
/// permute looks it up within each pair, bit `$pair` of the index picks pair 1 over pair 0 (with
/// `$two`, registers 2-3) or within the upper half (with `$four`, registers 4-7), and bit `$half`
/// picks the upper half. The leaf codes (16-bit lanes) and the leaf values (f64 lanes) are the
/// same lookup with other intrinsics; a macro keeps each one's code exactly as written out.
macro_rules! table_lookup {
    ($permute:ident, $blend:ident, $test:ident, $table:ident, $i:expr, $pair:expr, $half:expr,
     $two:expr, $four:expr) => {{
        let mut e = $permute($table(0), $i, $table(1));
        if $two {
            let e1 = $permute($table(2), $i, $table(3));
            e = $blend($test($i, $pair), e, e1);
        }
        if $four {
            let e2 = $permute($table(4), $i, $table(5));
            let e3 = $permute($table(6), $i, $table(7));
            let upper = $blend($test($i, $pair), e2, e3);
            e = $blend($test($i, $half), e, upper);
        }
        e
    }};
}

impl CutIndex {
    /// Number of cuts below `x` (0 for NaN), as `cuts.partition_point(|&c| c < x)`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn rank_avx512(&self, x: f64) -> usize {
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

impl RankForest {
    /// Keys of row-major `rows` (`nf` wide, at most [`BLOCK_ROWS`]) into feature-major `keys`:
    /// per value, the number of cuts below it (NaN is below none, so it stays left everywhere).
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
                    let code = table_lookup!(
                        _mm512_permutex2var_epi16,
                        _mm512_mask_blend_epi16,
                        _mm512_test_epi16_mask,
                        code_table,
                        j,
                        level7_half,
                        slot_high,
                        h > 6,
                        h > 7
                    );
                    // SAFETY: 64-byte loads inside `values`, which holds 16, 32 or 64 f64s.
                    let value_table =
                        |k: usize| unsafe { _mm512_loadu_pd(values[8 * k..].as_ptr()) };
                    for q in 0..4 {
                        let c = _mm512_cvtepu16_epi64(extract_quarter(code, q));
                        let v = table_lookup!(
                            _mm512_permutex2var_pd,
                            _mm512_mask_blend_pd,
                            _mm512_test_epi64_mask,
                            value_table,
                            c,
                            sixteen,
                            thirty_two,
                            values.len() > 16,
                            values.len() > 32
                        );
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

impl IsolationForest {
    /// Scores one block (at most [`BLOCK_ROWS`] records) through a [`RankForest`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn rank_block(&self, rank: &RankForest, block: &[f64], out: &mut [f64]) {
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
}
