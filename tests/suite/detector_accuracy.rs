//! Accuracy of our Isolation Forest on the shared labeled datasets, against scikit-learn's anchors.
//!
//! Data: every `*.csv` in `$NETSENTINEL_SHARED_DIR/data` when that variable is set, else in the
//! `shared/data` beside the repository (`../shared/data` from the crate root, as CI clones it; a
//! git worktree one level deeper finds it at `../../shared/data`).
//! Features are the numeric columns other than `label`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netsentinel::detector::Matrix;
use netsentinel::detector::forest::IsolationForest;
use netsentinel::detector::metrics::roc_auc;
use netsentinel::detector::params::ForestParams;

/// scikit-learn 1.9.1 `IsolationForest(n_estimators=100, max_samples='auto')`, ROC AUC of
/// `-score_samples` fitting and scoring all rows, mean and std over 5 seeds: copied from
/// `shared/bench/anchors_results.md` (produced by `shared/bench/anchors.py --seeds 5`).
const SKLEARN_AUC: &[(&str, f64, f64)] = &[
    ("seed_traffic", 1.0000, 0.0000),
    ("breastw", 0.9876, 0.0017),
    ("pima", 0.6704, 0.0084),
    ("satellite", 0.6962, 0.0194),
    ("annthyroid", 0.8274, 0.0137),
    ("mammography", 0.8588, 0.0040),
    ("shuttle", 0.9971, 0.0004),
    ("http", 0.9995, 0.0005),
];

const SEEDS: u64 = 10;

fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NETSENTINEL_SHARED_DIR") {
        return PathBuf::from(dir).join("data");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .skip(1)
        .take(2)
        .map(|a| a.join("shared/data"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| root.join("../shared/data"))
}

struct Labeled {
    x: Matrix,
    y: Vec<bool>,
    features: Vec<String>,
}

/// Reads a labeled CSV; a column with any non-number (such as `timestamp`) is not a feature.
fn load(path: &Path) -> Labeled {
    let mut rdr = csv::Reader::from_path(path).expect("dataset readable");
    let header: Vec<String> = rdr
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let label = header
        .iter()
        .position(|h| h == "label")
        .expect("a label column");
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); header.len()];
    let mut numeric = vec![true; header.len()];
    let mut y = Vec::new();
    for rec in rdr.records() {
        let rec = rec.expect("well-formed row");
        for (j, field) in rec.iter().enumerate() {
            if j == label {
                y.push(field.trim().parse::<f64>().expect("numeric label") != 0.0);
            } else if numeric[j] {
                match field.trim().parse::<f64>() {
                    Ok(v) => cols[j].push(v),
                    Err(_) => numeric[j] = false,
                }
            }
        }
    }
    let keep: Vec<usize> = (0..header.len())
        .filter(|&j| j != label && numeric[j])
        .collect();
    let mut data = vec![0.0; y.len() * keep.len()];
    for (c, &j) in keep.iter().enumerate() {
        for (row, &v) in data.chunks_exact_mut(keep.len()).zip(&cols[j]) {
            row[c] = v;
        }
    }
    Labeled {
        x: Matrix::new(y.len(), keep.len(), data).expect("rectangular data"),
        y,
        features: keep.iter().map(|&j| header[j].clone()).collect(),
    }
}

fn fit(x: &Matrix, seed: u64) -> IsolationForest {
    let params = ForestParams {
        seed,
        ..Default::default()
    }
    .check(x.n_rows(), x.n_cols())
    .expect("default parameters are valid");
    IsolationForest::fit(x, &params)
}

/// Mean ROC AUC over seeds 0..SEEDS, fitting on all rows and scoring all rows (as anchors.py).
fn mean_auc(d: &Labeled) -> f64 {
    let total: f64 = (0..SEEDS)
        .map(|seed| {
            let scores = fit(&d.x, seed).score_matrix(&d.x);
            roc_auc(&d.y, &scores).expect("both classes present")
        })
        .sum();
    total / SEEDS as f64
}

#[test]
fn auc_matches_scikit_learn_on_every_shared_dataset() {
    let dir = data_dir();
    let mut csvs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (clone shared/ beside the repo)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    csvs.sort();
    let anchors: BTreeMap<&str, (f64, f64)> =
        SKLEARN_AUC.iter().map(|&(n, m, s)| (n, (m, s))).collect();
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for path in &csvs {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let Some(&(sk_mean, sk_std)) = anchors.get(name) else {
            failures.push(format!(
                "{name}: no scikit-learn anchor; add it to SKLEARN_AUC"
            ));
            continue;
        };
        let d = load(path);
        let ours = mean_auc(&d);
        let floor = sk_mean - f64::max(0.01, 2.0 * sk_std);
        println!(
            "{name:>13}: {} rows x {} features, our mean AUC {ours:.4} (seeds 0..{SEEDS}), \
             scikit-learn {sk_mean:.4} ± {sk_std:.4}, floor {floor:.4}",
            d.x.n_rows(),
            d.x.n_cols()
        );
        if ours < floor {
            failures.push(format!("{name}: mean AUC {ours:.4} < {floor:.4}"));
        }
        seen.push(name.to_owned());
    }
    for (name, _, _) in SKLEARN_AUC {
        if !seen.iter().any(|s| s == name) {
            failures.push(format!("{name}.csv missing from {}", dir.display()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn seed_traffic() -> Labeled {
    let d = load(&data_dir().join("seed_traffic.csv"));
    assert_eq!(
        d.features,
        [
            "bytes_sent",
            "bytes_received",
            "connections",
            "active_sessions"
        ]
    );
    d
}

#[test]
fn seed_bursts_get_the_eight_highest_scores() {
    let d = seed_traffic();
    let bursts: Vec<usize> = (0..d.y.len()).filter(|&i| d.y[i]).collect();
    assert_eq!(bursts, [0, 100, 200, 300, 400, 500, 600, 700]);
    for seed in [0, 1, 42] {
        let scores = fit(&d.x, seed).score_matrix(&d.x);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut top: Vec<usize> = order[..8].to_vec();
        top.sort_unstable();
        assert_eq!(top, bursts, "seed {seed}");
    }
}

#[test]
fn seed_bursts_are_attributed_to_bytes() {
    let d = seed_traffic();
    for seed in [0, 1, 42] {
        let forest = fit(&d.x, seed);
        for i in (0..8).map(|k| k * 100) {
            let a = forest.attribution(d.x.row(i));
            assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            let top = (0..a.len())
                .max_by(|&p, &q| a[p].total_cmp(&a[q]))
                .expect("four features");
            assert!(
                top <= 1,
                "seed {seed}, row {i}: largest attribution is {} ({a:?})",
                d.features[top]
            );
        }
    }
}
