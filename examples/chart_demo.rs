//! Renders the analysis chart of tutorial-like traffic and reports how long it took.
//!
//! `cargo run --release --example chart_demo -- [RECORDS] [OUT_DIR]` writes
//! `chart_example.png` and `chart_example.svg` (default: 720 records, into /tmp).

use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use netsentinel::chart::{
    ChartFormat, ChartInput, ChartSeries, DEFAULT_HEIGHT, DEFAULT_WIDTH, render,
};

/// Deterministic noise in [-1, 1]: the tutorial's Gaussian noise without a RNG dependency.
fn noise(i: usize, salt: f64) -> f64 {
    let v = ((i as f64 + salt) * 12.9898).sin() * 43_758.545_3;
    (v - v.floor()) * 2.0 - 1.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(720);
    let out = args.next().unwrap_or_else(|| "/tmp".to_owned());

    // The seed: hourly records over 30 days, an exfiltration-like burst every 100th hour.
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .ok_or("bad start")?;
    let timestamps: Vec<DateTime<Utc>> =
        (0..n).map(|i| start + Duration::hours(i as i64)).collect();
    let burst: Vec<bool> = (0..n).map(|i| i % 100 == 0).collect();
    let pick = |i: usize, normal: f64, spread: f64, peak: f64, salt: f64| {
        let base = if burst[i] { peak } else { normal };
        base + spread * noise(i, salt)
    };
    let sent: Vec<f64> = (0..n).map(|i| pick(i, 1.0e6, 3.0e5, 5.0e6, 1.0)).collect();
    let received: Vec<f64> = (0..n).map(|i| pick(i, 1.2e6, 3.5e5, 6.0e6, 2.0)).collect();
    let connections: Vec<f64> = (0..n)
        .map(|i| (50.0 + 12.0 * noise(i, 3.0)).round())
        .collect();
    let sessions: Vec<f64> = (0..n)
        .map(|i| (25.0 + 8.0 * noise(i, 4.0)).round())
        .collect();
    let input = ChartInput {
        timestamps: Some(&timestamps),
        series: vec![
            ChartSeries {
                name: "bytes_sent",
                values: &sent,
            },
            ChartSeries {
                name: "bytes_received",
                values: &received,
            },
            ChartSeries {
                name: "connections",
                values: &connections,
            },
            ChartSeries {
                name: "active_sessions",
                values: &sessions,
            },
        ],
        anomalies: &burst,
        title: Some("Network traffic analysis — seed data"),
    };

    for (format, ext) in [(ChartFormat::Png, "png"), (ChartFormat::Svg, "svg")] {
        // The first render also registers the font; time a second one too.
        for attempt in 1..=3 {
            let started = Instant::now();
            let bytes = render(&input, format, DEFAULT_WIDTH, DEFAULT_HEIGHT)?;
            let elapsed = started.elapsed();
            println!(
                "{n} records, {ext}, run {attempt}: {elapsed:?}, {} bytes",
                bytes.len()
            );
            if attempt == 1 {
                std::fs::write(format!("{out}/chart_example.{ext}"), &bytes)?;
            }
        }
    }
    Ok(())
}
