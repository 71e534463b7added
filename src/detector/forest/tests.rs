//! Tests of the forest: every layout and kernel against one-record-at-a-time oracles, fitting, storage and attribution.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::super::Matrix;
use super::super::params::{CheckedParams, ForestParams};
use super::grow::height_limit;
use super::layout::FastTree;
use super::narrow::NARROW;
#[cfg(target_arch = "x86_64")]
use super::rank::CutIndex;
use super::rank::{RANK_MAX_FEATURES, RankForest};
use super::score::NarrowPath;
use super::stored::StoredForest;
use super::*;

/// One-record-at-a-time oracles that the fast layouts and kernels are tested against.
impl IsolationForest {
    /// Turns a sum of path lengths over all trees into the score.
    fn score_from_sum(&self, sum: f64) -> f64 {
        let mut s = [sum];
        self.scores_from_sums(&mut s);
        s[0]
    }

    /// The attribution as first written, straight from the canonical trees: the oracle the
    /// precomputed layout is tested against.
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
}

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
    for (psi, limit) in [(1, 1), (2, 1), (3, 2), (256, 8), (257, 9), (4096, 12)] {
        assert_eq!(height_limit(psi), limit, "psi {psi}");
    }
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
            if NarrowPath::detect() >= NarrowPath::Avx2Rank
                && max_samples <= 256
                && n_cols <= RANK_MAX_FEATURES
            {
                assert!(f.rank.is_some(), "complete trees use the rank kernel");
            }
            // Each rank kernel this CPU has, not only the one the forest was built for.
            for (kernel, g) in every_rank_layout(&f) {
                let got: Vec<u64> = g.score_matrix(&probe).iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{kernel:?}, {n_cols} features, ψ {max_samples}");
                if n_cols <= NARROW {
                    for (path, got) in every_narrow_path(&g, &probe) {
                        assert_eq!(got, want, "{kernel:?} layout, {path:?}, ψ {max_samples}");
                    }
                }
            }
            if n_cols <= NARROW {
                // Every narrow kernel this CPU has, not only the one score_matrix picks.
                for (path, got) in every_narrow_path(&f, &probe) {
                    assert_eq!(got, want, "{path:?}, {n_cols} features, ψ {max_samples}");
                }
            }
            let Some(rank) = &f.rank else { continue };
            if rank.kernel != NarrowPath::Avx512 {
                continue;
            }
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
                let got: Vec<u64> = g.score_matrix(&probe).iter().map(|v| v.to_bits()).collect();
                assert_eq!(
                    got, want,
                    "{width} values, {n_cols} features, ψ {max_samples}"
                );
            }
        }
    }
}

/// The forest with its rank layout rebuilt for each rank kernel this CPU runs (and the forest
/// fits): on a CPU with AVX-512BW, the AVX2 kernel is tested too.
fn every_rank_layout(f: &IsolationForest) -> Vec<(NarrowPath, IsolationForest)> {
    [NarrowPath::Avx2Rank, NarrowPath::Avx512]
        .into_iter()
        .filter_map(|kernel| {
            let rank = RankForest::build(&f.fast, f.n_features, kernel)?;
            let mut g = f.clone();
            g.rank = Some(rank);
            Some((kernel, g))
        })
        .collect()
}

/// The scores' bits from every narrow kernel (each capped at what this CPU has).
fn every_narrow_path(f: &IsolationForest, probe: &Matrix) -> Vec<(NarrowPath, Vec<u64>)> {
    [
        NarrowPath::Portable,
        NarrowPath::Avx,
        NarrowPath::Avx2,
        NarrowPath::Avx2Rank,
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
    for (kernel, g) in every_rank_layout(&f) {
        for (path, got) in every_narrow_path(&g, &probe) {
            assert_eq!(got, want, "{kernel:?} layout, {path:?}");
        }
    }
}

#[test]
fn rank_kernels_match_reference_on_1_to_8_features_every_height_and_odd_values() {
    // ψ 1..256: trees of height 0 to 8, most of them with leaves shallower than the height;
    // 1..8 features: every blend tree of the AVX2 kernel; NaN, ±inf and ±0.0 mixed into
    // probes that also sit exactly on, and next to, the forest's thresholds.
    let odd = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
    for n_cols in 1..=RANK_MAX_FEATURES {
        for max_samples in [1u64, 2, 3, 6, 12, 25, 50, 100, 256] {
            let n_rows = 600;
            let mut x = random_matrix(n_rows, n_cols, 40 + n_cols as u64).into_vec();
            // Exact zeros, so that 0.0 is a threshold too.
            for v in x.iter_mut().step_by(7) {
                *v = 0.0;
            }
            let x = Matrix::new(n_rows, n_cols, x).unwrap();
            let p = ForestParams {
                n_estimators: 20,
                max_samples: crate::detector::params::MaxSamples::Count(max_samples),
                seed: max_samples + 100 * n_cols as u64,
                ..Default::default()
            }
            .check(n_rows, n_cols)
            .unwrap();
            let f = IsolationForest::fit(&x, &p);
            let mut probe = probe_with_thresholds(&f, &x, 1001, max_samples).into_vec();
            let mut rng = StdRng::seed_from_u64(max_samples);
            for v in probe.iter_mut() {
                if rng.random_range(0..8u32) == 0 {
                    *v = odd[rng.random_range(0..odd.len())];
                }
            }
            let probe = Matrix::new(1001, n_cols, probe).unwrap();
            let want: Vec<u64> = probe
                .rows()
                .map(|r| f.score_reference(r).to_bits())
                .collect();
            let layouts = every_rank_layout(&f);
            if NarrowPath::detect() >= NarrowPath::Avx2Rank {
                assert!(!layouts.is_empty(), "complete trees have a rank layout");
            }
            for (kernel, g) in layouts {
                let got: Vec<u64> = g.score_matrix(&probe).iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{kernel:?}, {n_cols} features, ψ {max_samples}");
            }
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn cut_index_ranks_like_partition_point() {
    if NarrowPath::detect() < NarrowPath::Avx2Rank {
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
            let want = cuts.partition_point(|&c| c < x);
            // SAFETY: AVX2 and POPCNT checked above (detect).
            let got = unsafe { index.rank_avx2(x) };
            assert_eq!(got, want, "AVX2, {n} cuts, x = {x}");
            #[cfg(netsentinel_avx512)]
            if NarrowPath::detect() == NarrowPath::Avx512 {
                // SAFETY: AVX-512F checked by detect.
                let got = unsafe { index.rank_avx512(x) };
                assert_eq!(got, want, "AVX-512, {n} cuts, x = {x}");
            }
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

/// Records what a fit tells its watch, and stops it after `stop_after` trees.
struct Recorder {
    grown: std::sync::Mutex<Vec<(usize, usize)>>,
    stop_after: usize,
}

impl FitWatch for Recorder {
    fn tree_grown(&self, done: usize, total: usize) {
        self.grown.lock().unwrap().push((done, total));
    }
    fn stop(&self) -> bool {
        self.grown.lock().unwrap().len() >= self.stop_after
    }
}

#[test]
fn a_watched_fit_reports_every_tree_and_stops_when_asked() {
    let x = random_matrix(500, 3, 5);
    let p = CheckedParams {
        n_estimators: 37,
        ..params(500, 3, 9)
    };
    // Watched to the end: each tree reported once, counting 1..=37 of 37, and the same forest.
    let all = Recorder {
        grown: Default::default(),
        stop_after: usize::MAX,
    };
    let forest = IsolationForest::fit_watched(&x, &p, &all).unwrap();
    let mut grown = all.grown.into_inner().unwrap();
    grown.sort_unstable();
    assert_eq!(grown, (1..=37).map(|d| (d, 37)).collect::<Vec<_>>());
    assert!(forest.trees == IsolationForest::fit(&x, &p).trees);
    // Asked to stop after 5 trees: no forest, and far fewer than 37 trees were grown (the ones
    // already started when it said stop still finish: at most one per thread).
    let few = Recorder {
        grown: Default::default(),
        stop_after: 5,
    };
    assert!(IsolationForest::fit_watched(&x, &p, &few).is_none());
    let n = few.grown.into_inner().unwrap().len();
    assert!(
        (5..5 + rayon::current_num_threads() + 1).contains(&n),
        "grew {n}"
    );
}
