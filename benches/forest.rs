//! Criterion benchmarks of Isolation Forest fit and score on synthetic 4-feature traffic-like data.
//!
//! `cargo bench --bench forest`. Rows are Gaussian with 1 % far outliers; 100 trees,
//! max_samples "auto" (256), as the service's defaults.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netsentinel::detector::Matrix;
use netsentinel::detector::forest::IsolationForest;
use netsentinel::detector::params::{CheckedParams, ForestParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

const N_FEATURES: usize = 4;

fn synthetic(n_rows: usize) -> Matrix {
    let mut rng = StdRng::seed_from_u64(7);
    let normal = Normal::new(0.0, 1.0).expect("valid normal");
    let mut data = Vec::with_capacity(n_rows * N_FEATURES);
    for _ in 0..n_rows {
        let outlier = rng.random_bool(0.01);
        for _ in 0..N_FEATURES {
            let v: f64 = normal.sample(&mut rng);
            data.push(if outlier { v * 6.0 + 4.0 } else { v });
        }
    }
    Matrix::new(n_rows, N_FEATURES, data).expect("consistent shape")
}

fn params(n_rows: usize) -> CheckedParams {
    ForestParams::default()
        .check(n_rows, N_FEATURES)
        .expect("default parameters are valid")
}

fn forest(c: &mut Criterion) {
    let mut group = c.benchmark_group("forest");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for n_rows in [100_000usize, 1_000_000] {
        let x = synthetic(n_rows);
        let p = params(n_rows);
        group.throughput(Throughput::Elements(n_rows as u64));
        group.bench_with_input(BenchmarkId::new("fit", n_rows), &x, |b, x| {
            b.iter(|| IsolationForest::fit(black_box(x), &p))
        });
        let model = IsolationForest::fit(&x, &p);
        group.bench_with_input(BenchmarkId::new("score", n_rows), &x, |b, x| {
            b.iter(|| model.score_matrix(black_box(x)))
        });
        // Fitting with a contamination fraction also scores the whole training set.
        group.bench_with_input(
            BenchmarkId::new("fit_and_score_training", n_rows),
            &x,
            |b, x| {
                b.iter(|| {
                    let m = IsolationForest::fit(black_box(x), &p);
                    m.score_matrix(x)
                })
            },
        );
    }
    group.finish();
}

/// Explaining the anomalies of a tutorial-sized batch (about 10 % of 720 records): one record
/// at a time, and all together as `POST /v1/score` does.
fn explain(c: &mut Criterion) {
    let mut group = c.benchmark_group("explain");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let x = synthetic(10_000);
    let model = IsolationForest::fit(&x, &params(10_000));
    let scores = model.score_matrix(&x);
    let mut order: Vec<usize> = (0..x.n_rows()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let rows: Vec<f64> = order[..72]
        .iter()
        .flat_map(|&i| x.row(i).to_vec())
        .collect();
    group.throughput(Throughput::Elements(72));
    group.bench_function("one_at_a_time/72", |b| {
        b.iter(|| {
            rows.chunks_exact(N_FEATURES)
                .map(|r| model.attribution(black_box(r)))
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("together/72", |b| {
        b.iter(|| model.attributions(black_box(&rows)))
    });
    group.finish();
}

criterion_group!(benches, forest, explain);
criterion_main!(benches);
