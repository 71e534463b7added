//! ROC AUC per attack kind on the `network` profile: global vs entity vs entity + daily
//! seasonality baselines, as a Markdown table (the one in BENCHMARKS.md).
//!
//! `cargo run --release --example baselines [hosts] [seed]` (default 100 hosts, seed 42):
//! four days of 5-minute windows with 1 % attacks, fit on the first three, score the fourth.

use chrono::TimeDelta;
use netsentinel::detector::baseline::measure::measure;
use netsentinel::detector::baseline::{Baseline, Seasonality};
use netsentinel::detector::generator::{GeneratorConfig, generate};
use netsentinel::detector::params::ForestParams;

fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(42);
    let cfg = GeneratorConfig::network(hosts, 4, 0.01, seed);
    let records = generate(&cfg).expect("valid generator settings");
    let split = cfg.start + TimeDelta::days(3);
    println!(
        "network profile: {hosts} hosts, 4 days of 5-minute windows ({} records, 1 % attacks), seed {seed}; fit on days 1-3, score day 4; forest defaults (100 trees, contamination auto)\n",
        records.len()
    );
    let variants = [
        (Baseline::Global, Seasonality::None),
        (Baseline::Entity, Seasonality::None),
        (Baseline::Entity, Seasonality::Daily),
    ];
    let mut header = false;
    for (baseline, seasonality) in variants {
        let m = measure(
            &records,
            split,
            baseline,
            seasonality,
            &ForestParams::default(),
        )
        .expect("the forest fits");
        if !header {
            let kinds: Vec<String> = m.per_kind.iter().map(|(k, _)| format!("{k:?}")).collect();
            println!(
                "| baseline | seasonality | overall | {} | normal flagged (day 4) | normal flagged (training) |",
                kinds.join(" | ")
            );
            println!("|---|---|---:|{}---:|---:|", "---:|".repeat(kinds.len()));
            header = true;
        }
        let per_kind: Vec<String> = m.per_kind.iter().map(|(_, a)| format!("{a:.3}")).collect();
        println!(
            "| {baseline:?} | {seasonality:?} | {:.3} | {} | {:.2} % | {:.2} % |",
            m.overall,
            per_kind.join(" | "),
            100.0 * m.normal_flagged,
            100.0 * m.training_flagged
        );
    }
}
