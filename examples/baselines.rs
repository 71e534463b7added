//! ROC AUC per attack kind on the `network` profile: global vs entity vs entity + daily
//! seasonality baselines, as a Markdown table (the one in BENCHMARKS.md).
//!
//! `cargo run --release --example baselines [hosts] [seed] [tune|weekly]` (default 100 hosts,
//! seed 42): four days of 5-minute windows with 1 % attacks, fit on the first three, score the
//! fourth; "without the matched test" is the design before it (format 4). With `tune`, also the
//! entity + daily variants of the design choices. With `weekly`,
//! two weeks instead: fit on the first (Monday to Sunday), score the second, entity baselines
//! without seasonality, daily and weekly.

use chrono::TimeDelta;
use netsentinel::detector::baseline::measure::{Measured, measure_tuned};
use netsentinel::detector::baseline::{Baseline, MedianShrink, Seasonality, Tuning};
use netsentinel::detector::generator::{GeneratorConfig, generate};
use netsentinel::detector::params::ForestParams;

fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(42);
    let mode = args.next();
    let tune = mode.as_deref() == Some("tune");
    let weekly = mode.as_deref() == Some("weekly");
    let (days, fit_days) = if weekly { (14, 7) } else { (4, 3) };
    let cfg = GeneratorConfig::network(hosts, days, 0.01, seed);
    let records = generate(&cfg).expect("valid generator settings");
    let split = cfg.start + TimeDelta::days(fit_days);
    println!(
        "network profile: {hosts} hosts, {days} days of 5-minute windows ({} records, 1 % attacks), seed {seed}; fit on days 1-{fit_days}, score days {}-{days}\n",
        records.len(),
        fit_days + 1
    );
    let d = Tuning::default();
    let mut variants = vec![
        ("global", Baseline::Global, Seasonality::None, d),
        ("entity", Baseline::Entity, Seasonality::None, d),
        ("entity", Baseline::Entity, Seasonality::Daily, d),
    ];
    let before = Tuning {
        matched: false,
        ..d
    };
    variants.push((
        "entity, without the matched test",
        Baseline::Entity,
        Seasonality::Daily,
        before,
    ));
    if weekly {
        variants.remove(0);
        variants.push(("entity", Baseline::Entity, Seasonality::Weekly, d));
        variants.push((
            "entity, without the matched test",
            Baseline::Entity,
            Seasonality::Weekly,
            before,
        ));
    }
    if tune {
        let daily = |name, t| (name, Baseline::Entity, Seasonality::Daily, t);
        variants.extend([
            daily(
                "root sum of squares",
                Tuning {
                    classes: false,
                    ..d
                },
            ),
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
            daily(
                "median by noise",
                Tuning {
                    median: MedianShrink::Noise,
                    ..d
                },
            ),
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
