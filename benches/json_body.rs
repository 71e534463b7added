//! How fast the JSON body readers go: a `{"records":[...]}` body read whole ([`read_json`]), read
//! as it arrives in 64 KiB chunks ([`read_json_stream`]), and the same records as NDJSON.
//!
//! `cargo bench --bench json_body` (env `RECORDS`, default 300000). Each line prints the median
//! of 5 runs in MiB/s of body; compare the lines of one run (the machine is shared).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use netsentinel::records::json::{TopLevel, read_json, read_ndjson};
use netsentinel::records::json_stream::read_json_stream;
use netsentinel::records::{BatchBuilder, Features};

const FEATURES: [&str; 4] = [
    "bytes_sent",
    "bytes_received",
    "connections",
    "active_sessions",
];

/// Records as the service's generator writes them (the bench-http.sh body).
fn records(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2024-01-{:02}T{:02}:{:02}:00Z\",\"bytes_sent\":{},\"bytes_received\":{},\"connections\":{},\"active_sessions\":{},\"label\":{},\"attack_kind\":\"{}\"}}",
                1 + i % 28,
                i % 24,
                i % 60,
                1000 + (i * 7919) % 90_000,
                2000 + (i * 104_729) % 190_000,
                1 + i % 97,
                i % 13,
                u8::from(i % 10 == 0),
                if i % 10 == 0 { "port_scan" } else { "" },
            )
        })
        .collect()
}

fn builder(n: usize) -> BatchBuilder {
    let features: Vec<String> = FEATURES.map(String::from).to_vec();
    BatchBuilder::with_features(Features::Given(&features), false, n)
}

fn time(name: &str, bytes: usize, mut run: impl FnMut()) {
    let mut secs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    let mib = bytes as f64 / (1 << 20) as f64;
    println!(
        "{name:<28} {:>8.1} MiB/s  ({:.3} s)",
        mib / secs[2],
        secs[2]
    );
}

fn main() {
    let n = std::env::var("RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let lines = records(n);
    let json = format!("{{\"records\":[{}]}}", lines.join(",")).into_bytes();
    let ndjson = (lines.join("\n") + "\n").into_bytes();
    let chunks: Vec<Bytes> = json.chunks(1 << 16).map(Bytes::copy_from_slice).collect();
    println!("{n} records, {} MiB of JSON", json.len() >> 20);
    time("JSON whole (read_json)", json.len(), || {
        let mut b = builder(n);
        read_json(&json, &mut b, TopLevel::RecordsOnly).unwrap();
        black_box(b.finish().unwrap());
    });
    time("JSON streamed, 64 KiB chunks", json.len(), || {
        let mut b = builder(n);
        let mut it = chunks.iter().cloned();
        read_json_stream(|| it.next(), &mut b, TopLevel::RecordsOnly).unwrap();
        black_box(b.finish().unwrap());
    });
    time("NDJSON (read_ndjson)", ndjson.len(), || {
        let mut b = builder(n);
        read_ndjson(&ndjson[..], &mut b).unwrap();
        black_box(b.finish().unwrap());
    });
}
