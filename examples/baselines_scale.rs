//! Entity baselines at scale (issue #16: 100,000 entities within 1 GB RSS, ≥ 1M records/s):
//! fits every entity's baseline on hourly records, then scores them all again, on one thread.
//!
//! `/usr/bin/time -v cargo run --release --example baselines_scale [entities] [records] [seasonality]`
//! (defaults 100,000 entities, 48 records each (two days of hours), `daily`; `none` and
//! `weekly` too). Prints the fit's time, the model's size (postcard, as a model file holds
//! it) and its bytes per entity, the process's peak RSS (`VmHWM`), and the scoring rate per
//! CPU-second. The data are synthetic: each entity a volume drawn over four orders of
//! magnitude, an office-hours rhythm, log-normal noise, counts as whole numbers. With `weekly`
//! the records are spread over the week instead (every `168 / records` hours, at least 1: 48
//! records are every 3 hours from Monday to Saturday) and weekends are quieter (daytime
//! activity at 30 %), so weekdays and weekends each need a day profile of their own.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use netsentinel::detector::Matrix;
use netsentinel::detector::baseline::{EntityBaselines, Seasonality, Tuning};

/// splitmix64: reproducible without the generator's dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Mean-one-ish multiplicative noise (σ about 0.3 on the log scale).
    fn noise(&mut self) -> f64 {
        (0.3 * (self.next() + self.next() + self.next() - 1.5) * 2.0).exp()
    }
}

/// This process's user + system CPU seconds (Linux `/proc/self/stat`, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// A `/proc/self/status` line's kB (`VmRSS`, `VmHWM`).
fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let per: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(48);
    let seasonality = match args.next().as_deref() {
        Some("none") => Seasonality::None,
        Some("weekly") => Seasonality::Weekly,
        _ => Seasonality::Daily,
    };
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let mut rng = Rng(42);
    let rows = n * per;
    let mut values = Vec::with_capacity(rows * 4);
    let mut names = Vec::with_capacity(n);
    let mut entity_of = Vec::with_capacity(rows);
    let mut times = Vec::with_capacity(rows);
    let weekly = seasonality == Seasonality::Weekly;
    let step = if weekly { (168 / per.max(1)).max(1) } else { 1 };
    for e in 0..n {
        names.push(format!(
            "10.{}.{}.{}",
            e / 62_500,
            (e / 250) % 250,
            e % 250 + 1
        ));
        let conns = 10f64.powf(rng.next() * 4.0 - 1.0);
        let per_conn = 1e3 * 10f64.powf(rng.next() * 2.0);
        for k in 0..per {
            let hours = (k * step) as i64;
            let t = start + TimeDelta::hours(hours);
            let hour = (hours % 24) as f64;
            let weekend = weekly && hours % 168 >= 120;
            let activity = match ((8.0..18.0).contains(&hour), weekend) {
                (true, false) => 1.0,
                (true, true) => 0.3,
                (false, _) => 0.1,
            };
            let c = (conns * activity * rng.noise()).round();
            values.extend([
                (c + 1.0) * per_conn * rng.noise(),
                (c + 1.0) * 2.0 * per_conn * rng.noise(),
                c,
                (0.4 * c * rng.noise()).round(),
            ]);
            entity_of.push(e as u32);
            times.push(t);
        }
    }
    let x = Matrix::new(rows, 4, values).expect("rows of four features");
    let keys: Vec<&str> = entity_of
        .iter()
        .map(|&e| names[e as usize].as_str())
        .collect();
    let rss_data = status_kb("VmRSS");
    println!(
        "{n} entities × {per} records ({rows} records), seasonality {seasonality:?}; data in memory: {} MB RSS",
        rss_data / 1024
    );

    let (c0, w0) = (cpu_seconds(), std::time::Instant::now());
    let b = EntityBaselines::fit(&x, &keys, &times, seasonality, Some(2), &Tuning::default());
    let (fit_cpu, fit_wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
    let peak_fit = status_kb("VmHWM");
    let bytes = postcard::experimental::serialized_size(&b).expect("baselines serialise");
    println!(
        "fit: {} entities in {fit_wall:.2} s ({fit_cpu:.2} CPU-s); model {:.1} MB on disk, {} bytes per entity; peak RSS so far {} MB",
        b.n_entities(),
        bytes as f64 / 1e6,
        bytes / b.n_entities().max(1),
        peak_fit / 1024
    );

    let passes = 4;
    let mut z = vec![0.0; b.n_signals()];
    let (c0, w0) = (cpu_seconds(), std::time::Instant::now());
    let mut flagged = 0usize;
    for _ in 0..passes {
        for i in 0..rows {
            let (s, _) = b.score_into(x.row(i), keys[i], times[i], &mut z);
            flagged += usize::from(s > 0.5);
        }
    }
    let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
    let scored = (passes * rows) as f64;
    println!(
        "score: {scored} records in {wall:.2} s ({cpu:.2} CPU-s): {:.2}M records per CPU-second on one thread ({:.2}M/s wall); {:.2} % over 0.5",
        scored / cpu.max(1e-9) / 1e6,
        scored / wall / 1e6,
        100.0 * flagged as f64 / scored
    );
    println!("peak RSS (VmHWM): {} MB", status_kb("VmHWM") / 1024);
}
