//! Fits and scores our Isolation Forest on a labeled CSV and prints timings, rows/s, ROC AUC and AP.
//!
//! `cargo run --release --example bench_csv -- FILE.csv [--seeds N] [--trees N] [--contamination F]`
//!
//! Same protocol as `shared/bench/anchors.py`: features are the numeric columns other than
//! `label`; for each seed 0..N the forest (100 trees, max_samples "auto") is fit on all rows and
//! every row is scored. "fit+contamination" also scores the training set and takes the
//! (1 - contamination) quantile of the scores, which is what fitting with a contamination fraction
//! costs (scikit-learn's `offset_`). Prints one JSON line, then a table.

use std::error::Error;
use std::time::Instant;

use clap::Parser;
use netsentinel::detector::Matrix;
use netsentinel::detector::forest::IsolationForest;
use netsentinel::detector::metrics::{average_precision, roc_auc};
use netsentinel::detector::params::{Contamination, ForestParams};

#[derive(Parser)]
struct Args {
    /// Labeled CSV: header, numeric feature columns, integer `label`.
    file: String,
    /// Seeds 0..N.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    #[arg(long, default_value_t = 100)]
    trees: u64,
    /// Contamination used for the fit+contamination timing.
    #[arg(long, default_value_t = 0.1)]
    contamination: f64,
}

/// Features and labels of a labeled CSV, with the names of the columns used.
struct Labeled {
    x: Matrix,
    y: Vec<bool>,
    features: Vec<String>,
}

fn load(path: &str) -> Result<Labeled, Box<dyn Error>> {
    let mut rdr = csv::Reader::from_path(path)?;
    let header: Vec<String> = rdr.headers()?.iter().map(str::to_owned).collect();
    let label = header
        .iter()
        .position(|h| h == "label")
        .ok_or_else(|| format!("{path}: no 'label' column"))?;
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); header.len()];
    let mut numeric = vec![true; header.len()];
    let mut y = Vec::new();
    for rec in rdr.records() {
        let rec = rec?;
        for (j, field) in rec.iter().enumerate().take(header.len()) {
            if j == label {
                let v: f64 = field.trim().parse()?;
                y.push(v != 0.0);
            } else if numeric[j] {
                match field.trim().parse::<f64>() {
                    Ok(v) => cols[j].push(v),
                    // Like pandas' select_dtypes: one non-number makes the column non-numeric.
                    Err(_) => numeric[j] = false,
                }
            }
        }
    }
    let keep: Vec<usize> = (0..header.len())
        .filter(|&j| j != label && numeric[j] && cols[j].len() == y.len())
        .collect();
    if keep.is_empty() {
        return Err(format!("{path}: no numeric feature columns").into());
    }
    let mut data = vec![0.0; y.len() * keep.len()];
    for (c, &j) in keep.iter().enumerate() {
        for (row, &v) in data.chunks_exact_mut(keep.len()).zip(&cols[j]) {
            row[c] = v;
        }
    }
    Ok(Labeled {
        x: Matrix::new(y.len(), keep.len(), data)?,
        y,
        features: keep.iter().map(|&j| header[j].clone()).collect(),
    })
}

/// numpy's default (linear) percentile of `v` at `q` in [0, 100].
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let (_, a, rest) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    let frac = pos - lo as f64;
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    let b = rest.iter().copied().fold(f64::INFINITY, f64::min);
    a + (b - a) * frac
}

/// CPU seconds (user + system, all threads) this process has used, from /proc/self/stat; NaN
/// where unavailable. On a shared machine wall-clock time includes waiting for the CPU, CPU time
/// does not.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // The kernel reports in USER_HZ, which is 100 on every Linux ABI we build for.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`), if readable.
fn status_kib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Memory that scoring the whole batch adds on top of what the process already holds (the
/// batch, the model, the loaded CSV): the peak resident set while scoring minus the resident set
/// before, in MiB. The kernel's high-water mark is reset first (`clear_refs` 5); NaN where that
/// is not possible.
fn score_peak_extra_mib(forest: &IsolationForest, x: &Matrix) -> f64 {
    let Some(before) = status_kib("VmRSS") else {
        return f64::NAN;
    };
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        return f64::NAN;
    }
    let scores = forest.score_matrix(x);
    let peak = status_kib("VmHWM").unwrap_or(f64::NAN);
    std::hint::black_box(scores);
    (peak - before) / 1024.0
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let t0 = Instant::now();
    let data = load(&args.file)?;
    let load_s = t0.elapsed().as_secs_f64();
    let (n, d) = (data.x.n_rows(), data.x.n_cols());
    // Start rayon's pool outside the timings, as the anchors' joblib pool is warm after seed 0.
    rayon::broadcast(|_| ());

    let (mut fit_s, mut fitc_s, mut score_s, mut score_cpu_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut aucs, mut aps) = (Vec::new(), Vec::new());
    let mut score_extra_mib = f64::NAN;
    for seed in 0..args.seeds {
        let base = ForestParams {
            n_estimators: args.trees,
            seed,
            ..Default::default()
        };
        let params = base.check(n, d)?;
        let t = Instant::now();
        let forest = IsolationForest::fit(&data.x, &params);
        fit_s.push(t.elapsed().as_secs_f64());

        let cparams = ForestParams {
            contamination: Contamination::Fraction(args.contamination),
            ..base
        }
        .check(n, d)?;
        let t = Instant::now();
        let f2 = IsolationForest::fit(&data.x, &cparams);
        let mut train = f2.score_matrix(&data.x);
        let threshold = percentile(&mut train, 100.0 * (1.0 - args.contamination));
        fitc_s.push(t.elapsed().as_secs_f64());
        std::hint::black_box(threshold);

        let (t, c) = (Instant::now(), cpu_seconds());
        let scores = forest.score_matrix(&data.x);
        score_s.push(t.elapsed().as_secs_f64());
        score_cpu_s.push(cpu_seconds() - c);
        aucs.push(roc_auc(&data.y, &scores).unwrap_or(f64::NAN));
        aps.push(average_precision(&data.y, &scores).unwrap_or(f64::NAN));
        drop(scores);
        if seed + 1 == args.seeds {
            score_extra_mib = score_peak_extra_mib(&forest, &data.x);
        }
    }
    let (fit, fitc, score) = (mean(&fit_s), mean(&fitc_s), mean(&score_s));
    let rate = |s: f64| n as f64 / s;
    let json = serde_json::json!({
        "file": args.file,
        "rows": n,
        "features": data.features,
        "seeds": args.seeds,
        "trees": args.trees,
        "threads": rayon::current_num_threads(),
        "load_s": load_s,
        "fit_s": fit,
        "fit_contamination_s": fitc,
        "contamination": args.contamination,
        "score_s": score,
        "fit_rows_per_s": rate(fit),
        "fit_contamination_rows_per_s": rate(fitc),
        "score_rows_per_s": rate(score),
        "auc": mean(&aucs),
        "ap": mean(&aps),
        "auc_per_seed": aucs,
        "ap_per_seed": aps,
        "fit_s_per_seed": fit_s,
        "fit_contamination_s_per_seed": fitc_s,
        "score_s_per_seed": score_s,
        "score_cpu_s": mean(&score_cpu_s),
        "batch_mib": (n * d * 8) as f64 / (1024.0 * 1024.0),
        "score_peak_extra_mib": score_extra_mib,
    });
    println!("{json}");
    println!(
        "{}: {n} rows x {d} features, {} trees, seeds 0..{}, {} threads (load {load_s:.2} s)",
        args.file,
        args.trees,
        args.seeds,
        rayon::current_num_threads()
    );
    println!(
        "| fit s | fit rows/s | fit+contamination {} s | rows/s | score s | score rows/s | AUC | AP |",
        args.contamination
    );
    println!("|---:|---:|---:|---:|---:|---:|---|---|");
    let score_cpu = mean(&score_cpu_s);
    println!(
        "| {fit:.4} | {:.0} | {fitc:.4} | {:.0} | {score:.4} | {:.0} | {:.4} | {:.4} |",
        rate(fit),
        rate(fitc),
        rate(score),
        mean(&aucs),
        mean(&aps)
    );
    println!(
        "score CPU time {score_cpu:.3} s ({:.0} rows per CPU-second)",
        n as f64 / score_cpu
    );
    println!(
        "scoring the whole batch ({:.1} MiB as f64) added {score_extra_mib:.1} MiB to the resident set at its peak",
        (n * d * 8) as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
