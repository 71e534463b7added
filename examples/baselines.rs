//! ROC AUC per attack kind on the `network` profile: global vs entity vs entity + daily
//! seasonality baselines, as a Markdown table (the one in BENCHMARKS.md).
//!
//! `cargo run --release --example baselines [hosts] [seed] [tune]` (default 100 hosts, seed
//! 42): four days of 5-minute windows with 1 % attacks, fit on the first three, score the
//! fourth. With `tune`, also the entity + daily variants of the design choices.

use chrono::TimeDelta;
use netsentinel::detector::baseline::measure::{Measured, measure_tuned};
use netsentinel::detector::baseline::{Baseline, Seasonality, Tuning};
use netsentinel::detector::generator::{GeneratorConfig, generate};
use netsentinel::detector::params::ForestParams;

fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(42);
    let tune = args.next().is_some_and(|a| a == "tune");
    let cfg = GeneratorConfig::network(hosts, 4, 0.01, seed);
    let records = generate(&cfg).expect("valid generator settings");
    let split = cfg.start + TimeDelta::days(3);
    println!(
        "network profile: {hosts} hosts, 4 days of 5-minute windows ({} records, 1 % attacks), seed {seed}; fit on days 1-3, score day 4\n",
        records.len()
    );
    let d = Tuning::default();
    let mut variants = vec![
        ("global", Baseline::Global, Seasonality::None, d),
        ("entity", Baseline::Entity, Seasonality::None, d),
        ("entity", Baseline::Entity, Seasonality::Daily, d),
    ];
    if tune {
        let daily = |name, t| (name, Baseline::Entity, Seasonality::Daily, t);
        variants.extend([
            daily("no ratios", Tuning { ratios: false, ..d }),
            daily(
                "below 0.5",
                Tuning {
                    below_weight: 0.5,
                    ..d
                },
            ),
            daily("max", Tuning { max: true, ..d }),
            daily("shrink 0", Tuning { shrink: 0.0, ..d }),
            daily("shrink 2", Tuning { shrink: 2.0, ..d }),
            daily("shrink 20", Tuning { shrink: 20.0, ..d }),
            daily("log counts", Tuning { counts: false, ..d }),
            daily("interpolated", Tuning { smooth: true, ..d }),
            daily(
                "max, interpolated",
                Tuning {
                    smooth: true,
                    max: true,
                    ..d
                },
            ),
        ]);
    }
    let mut header = false;
    for (name, baseline, seasonality, tuning) in variants {
        let m: Measured = measure_tuned(
            &records,
            split,
            baseline,
            seasonality,
            &ForestParams::default(),
            &tuning,
        )
        .expect("the forest fits");
        if !header {
            let kinds: Vec<String> = m.per_kind.iter().map(|(k, _)| format!("{k:?}")).collect();
            println!(
                "| baseline | seasonality | overall | {} | normal flagged (day 4) | normal flagged (training) | attacks flagged (day 4) |",
                kinds.join(" | ")
            );
            println!(
                "|---|---|---:|{}---:|---:|---:|",
                "---:|".repeat(kinds.len())
            );
            header = true;
        }
        let per_kind: Vec<String> = m.per_kind.iter().map(|(_, a)| format!("{a:.3}")).collect();
        println!(
            "| {name} | {seasonality:?} | {:.3} | {} | {:.2} % | {:.2} % | {:.1} % |",
            m.overall,
            per_kind.join(" | "),
            100.0 * m.normal_flagged,
            100.0 * m.training_flagged,
            100.0 * m.attacks_flagged
        );
    }
}
