//! Scoring: which layout or kernel takes a block of records, and how path-length sums become scores.

use rayon::prelude::*;

use super::super::Matrix;
use super::layout::{FastTree, FeatureStep};
use super::narrow::{NARROW, NarrowTree};
use super::rank::RankForest;
use super::{IsolationForest, average_path_length};

/// Records pushed through each tree before moving on to the next tree.
pub(super) const BLOCK_ROWS: usize = 512;
/// Calls `f` on each block of up to [`BLOCK_ROWS`] records of row-major `rows` (`nf` values a
/// record) with its slice of `out`: in parallel when there are more than
/// [`SEQUENTIAL_RECORDS`](super::super::SEQUENTIAL_RECORDS) records, on this thread otherwise. The blocks are the same either way, so are the scores.
pub(super) fn for_blocks<F>(rows: &[f64], nf: usize, out: &mut [f64], f: F)
where
    F: Fn(&[f64], &mut [f64]) + Send + Sync,
{
    if out.len() <= super::super::SEQUENTIAL_RECORDS {
        for (block, out) in rows.chunks(BLOCK_ROWS * nf).zip(out.chunks_mut(BLOCK_ROWS)) {
            f(block, out);
        }
    } else {
        rows.par_chunks(BLOCK_ROWS * nf)
            .zip(out.par_chunks_mut(BLOCK_ROWS))
            .for_each(|(block, out)| f(block, out));
    }
}

/// Kernels for forests of at most [`NARROW`] features, in order of preference. All make the same
/// decisions and add the trees in the same order, so they give bit-identical scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum NarrowPath {
    /// Plain Rust.
    Portable,
    /// One 4-wide `vcmppd` per step ([`NarrowTree::accumulate_avx`]), for CPUs with AVX only.
    Avx,
    /// The same compiled with AVX2 (the other trees' index arithmetic is cheaper with it).
    Avx2,
    /// The ranks of [`RankForest`](super::rank::RankForest) in 32-bit lanes, 8 records per
    /// register, node tables in registers ([`RankForest::accumulate_avx2`](super::rank::RankForest::accumulate_avx2)), for CPUs with AVX2 but not AVX-512BW.
    Avx2Rank,
    /// 16-bit keys, 32 records per register ([`RankForest::accumulate_avx512`](super::rank::RankForest::accumulate_avx512)).
    Avx512,
}

impl NarrowPath {
    /// The best kernel this CPU can run (the standard library caches the CPUID checks).
    pub(super) fn detect() -> NarrowPath {
        #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            return NarrowPath::Avx512;
        }
        match NarrowPath::detect_f64() {
            // The AVX2 rank kernel needs what the f64 AVX2 one does: AVX2 and POPCNT.
            NarrowPath::Avx2 => NarrowPath::Avx2Rank,
            path => path,
        }
    }

    /// The best of the f64 kernels (all but the rank kernels) this CPU can run.
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

/// Rows of width `P` holding the records of row-major `block` (`nf` values each), zero-padded.
fn padded<const P: usize>(block: &[f64], nf: usize, n: usize) -> Vec<[f64; P]> {
    let mut padded = vec![[0.0f64; P]; n];
    for (p, row) in padded.iter_mut().zip(block.chunks_exact(nf)) {
        p[..nf].copy_from_slice(row);
    }
    padded
}

impl IsolationForest {
    /// Turns sums of path lengths over all trees into scores, in place, with c(ψ) computed once.
    /// With ψ = 1, c(ψ) = 0 and every score is 0.5, as scikit-learn does.
    pub(super) fn scores_from_sums(&self, sums: &mut [f64]) {
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
            let padded = padded::<P>(block, nf, out.len());
            out.fill(0.0);
            // Trees in a fixed order per record: the sum, hence the score, is bit-identical
            // whatever the thread count or block size.
            for tree in &self.fast {
                tree.accumulate_padded(&padded, out);
            }
            self.scores_from_sums(out);
        });
    }

    /// At most [`NARROW`] features, with the best kernel this CPU has.
    fn score_narrow(&self, rows: &[f64], out: &mut [f64]) {
        self.score_narrow_with(rows, out, NarrowPath::detect());
    }

    /// At most [`NARROW`] features: with a [`RankForest`](super::rank::RankForest) laid out for a
    /// rank kernel up to `path`, that kernel (AVX-512BW or AVX2); otherwise rows zero-padded to
    /// [`NARROW`] values, trees narrow or pointer. `path` is capped at what the CPU has, so tests
    /// can ask for any path safely.
    pub(super) fn score_narrow_with(&self, rows: &[f64], out: &mut [f64], path: NarrowPath) {
        let path = path.min(NarrowPath::detect());
        let nf = self.n_features;
        for_blocks(rows, nf, out, |block, out| {
            // The rank layout is built for one kernel: the one detect() picked, or one below it.
            if let Some(rank) = self.rank.as_ref().filter(|r| r.kernel <= path) {
                self.rank_any_block(rank, block, out);
                return;
            }
            let padded = padded::<NARROW>(block, nf, out.len());
            out.fill(0.0);
            match path.min(NarrowPath::detect_f64()) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: detect_f64 says Avx2 only where the CPU has AVX2 and POPCNT.
                NarrowPath::Avx2 | NarrowPath::Avx2Rank | NarrowPath::Avx512 => unsafe {
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

    /// Forests of [`NARROW`] + 1 to [`RANK_MAX_FEATURES`](super::rank::RANK_MAX_FEATURES) features with a
    /// [`RankForest`](super::rank::RankForest): the rank kernel it was built for.
    fn score_rank(&self, rank: &RankForest, rows: &[f64], out: &mut [f64]) {
        for_blocks(rows, self.n_features, out, |block, out| {
            self.rank_any_block(rank, block, out)
        });
    }

    /// Scores one block (at most [`BLOCK_ROWS`] records) with the rank kernel `rank` is laid
    /// out for.
    fn rank_any_block(&self, rank: &RankForest, block: &[f64], out: &mut [f64]) {
        match rank.kernel {
            #[cfg(all(target_arch = "x86_64", netsentinel_avx512))]
            // SAFETY: RankForest::build lays out for Avx512 only where detect() found AVX-512F
            // and AVX-512BW.
            NarrowPath::Avx512 => unsafe { self.rank_block(rank, block, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: RankForest::build lays out for Avx2Rank (the only other kernel) only where
            // detect() found AVX2 and POPCNT.
            _ => unsafe { self.rank2_block(rank, block, out) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("rank layouts are built only on x86_64"),
        }
    }

    /// The portable kernel of a narrow forest.
    #[inline(always)]
    pub(super) fn narrow_block(&self, rows: &[[f64; NARROW]], out: &mut [f64]) {
        self.narrow_trees(rows, out, |t, rows, out| t.accumulate(rows, out));
    }

    /// Adds every tree's path lengths of `rows` to `out`, [`NarrowTree`]s through the kernel
    /// `narrow`, the others through their layout. Trees in a fixed order per record: the sum,
    /// hence the score, is bit-identical whatever the thread count, block size or instruction
    /// set.
    #[inline(always)]
    pub(super) fn narrow_trees(
        &self,
        rows: &[[f64; NARROW]],
        out: &mut [f64],
        narrow: impl Fn(&NarrowTree, &[[f64; NARROW]], &mut [f64]),
    ) {
        for tree in &self.fast {
            match tree {
                FastTree::Narrow(t) => narrow(t, rows, out),
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
}
