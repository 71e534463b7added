//! Measures the Zeek engine alone (no HTTP): a conn log read in 64 KiB chunks into window records
//! (`read`, the stateless score path) or ingested into a window book in batches (`book`, the
//! continuous ingest engine), best of N runs, as lines per second.
//!
//! Usage: cargo run --release --example bench_zeek -- FILE tsv|json read|book [RUNS] [BATCH_LINES]
//! (`scripts/bench-zeek.sh` runs it on its generated logs).

use std::time::Instant;

use netsentinel::records::zeek::{GroupBy, OnInvalid, ZeekFormat, ZeekOptions, ZeekReader};
use netsentinel::stream::{BookConfig, Dedupe, WindowBook};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, format, mode, rest @ ..] = args.as_slice() else {
        eprintln!("usage: bench_zeek FILE tsv|json read|book [RUNS] [BATCH_LINES]");
        std::process::exit(2);
    };
    let format = match format.as_str() {
        "tsv" => ZeekFormat::Tsv,
        "json" => ZeekFormat::Json,
        other => panic!("format {other:?}"),
    };
    let runs: usize = rest.first().map_or(3, |r| r.parse().unwrap());
    let batch_lines: usize = rest.get(1).map_or(10_000, |r| r.parse().unwrap());
    let body = std::fs::read(file).unwrap();
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    let opts = ZeekOptions {
        window: "5m".parse().unwrap(),
        group_by: GroupBy::OrigHost,
        ..ZeekOptions::default()
    };
    let mut best = f64::INFINITY;
    let mut windows = 0;
    for _ in 0..runs {
        let t = Instant::now();
        windows = match mode.as_str() {
            "read" => {
                let mut reader = ZeekReader::new(format, &opts);
                for chunk in body.chunks(1 << 16) {
                    reader.push(chunk).unwrap();
                }
                reader.finish().unwrap().0.len()
            }
            "book" => {
                // Batches of whole lines, as a pipeline ships them; 5m windows, 2m lateness.
                let mut book = WindowBook::new(BookConfig {
                    window: opts.window,
                    group_by: opts.group_by,
                    allowed_lateness_secs: 120,
                    dedupe: Dedupe::Uid,
                    on_invalid: OnInvalid::Skip,
                });
                let mut closed = 0;
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let cut = memchr::memchr_iter(b'\n', rest)
                        .nth(batch_lines - 1)
                        .map_or(rest.len(), |i| i + 1);
                    let out = book.ingest(&rest[..cut], format).unwrap();
                    assert_eq!(out.report.late + out.report.rejected, 0);
                    closed += out.closed.len();
                    rest = &rest[cut..];
                }
                closed + book.flush().len()
            }
            other => panic!("mode {other:?}"),
        };
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"mode\":\"{mode}\",\"lines\":{lines},\"windows\":{windows},\"seconds\":{best:.4},\"lines_per_sec\":{:.0}}}",
        lines as f64 / best
    );
}
