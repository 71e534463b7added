//! Soak test: the release binary under mixed traffic for a while, watching throughput, latency and RSS.
//!
//! ```text
//! cargo build --release --bin netsentinel --example soak
//! SOAK_SECONDS=120 target/release/examples/soak
//! ```
//!
//! Starts `target/release/netsentinel` (or `NETSENTINEL_BIN`) on a free loopback port over a temp
//! data dir, fits once on the seed profile, then runs `SOAK_CLIENTS` (16) clients for
//! `SOAK_SECONDS` (120): 80 % score the 720 seed records as JSON, 10 % list alerts, 5 % render
//! chart.png, 5 % evaluate the labeled seed records. VmRSS of the service is sampled every 5 s.
//! Prints a Markdown report and, unless `SOAK_WRITE=0`, writes it into BENCHMARKS.md between
//! `<!-- soak:begin -->` and `<!-- soak:end -->` (appended if absent; nothing else is touched).
//! RSS is reported, not asserted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SCORE_RECORDS: usize = 720;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Score,
    Alerts,
    Chart,
    Evaluate,
}

impl Op {
    /// Position `i` in a cycle of 20: 16 scores, 2 alert lists, 1 chart, 1 evaluate.
    fn nth(i: u64) -> Op {
        match i % 20 {
            0..16 => Op::Score,
            16 | 17 => Op::Alerts,
            18 => Op::Chart,
            _ => Op::Evaluate,
        }
    }
}

#[derive(Default)]
struct ClientStats {
    /// (op, latency) of every answered request.
    done: Vec<(Op, Duration)>,
    errors: Vec<String>,
}

struct Service {
    child: Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

async fn start(bin: &Path, data_dir: &Path) -> Service {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["--addr", &addr, "--data-dir"])
        .arg(data_dir)
        .env("NETSENTINEL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it first)", bin.display()));
    let service = Service {
        child,
        base: format!("http://{addr}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..300 {
        let up = client.get(format!("{}/healthz", service.base)).send().await;
        if up.is_ok_and(|r| r.status().is_success()) {
            return service;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the service did not answer /healthz within 30 s");
}

async fn client_loop(
    id: u64,
    client: reqwest::Client,
    base: Arc<str>,
    score_body: bytes::Bytes,
    deadline: Instant,
) -> ClientStats {
    let mut stats = ClientStats::default();
    // Clients start at different points of the cycle, so the mix holds at every moment.
    let mut i = id * 7;
    while Instant::now() < deadline {
        let op = Op::nth(i);
        i += 1;
        let request = match op {
            Op::Score => client
                .post(format!("{base}/v1/score"))
                .header("content-type", "application/json")
                .body(score_body.clone()),
            Op::Alerts => client.get(format!("{base}/v1/alerts?limit=20")),
            Op::Chart => client.get(format!("{base}/v1/chart.png")),
            Op::Evaluate => client
                .post(format!("{base}/v1/evaluate"))
                .header("content-type", "application/json")
                .body(score_body.clone()),
        };
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(r) => {
                let status = r.status();
                match r.bytes().await {
                    Ok(body) if status.is_success() => Ok(body.len()),
                    Ok(body) => Err(format!(
                        "{op:?}: {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )),
                    Err(e) => Err(format!("{op:?}: body: {e}")),
                }
            }
            Err(e) => Err(format!("{op:?}: {e}")),
        };
        match outcome {
            Ok(_) => stats.done.push((op, started.elapsed())),
            Err(e) => stats.errors.push(e),
        }
    }
    stats
}

#[tokio::main]
async fn main() {
    let seconds: u64 = env_or("SOAK_SECONDS", 120);
    let clients: u64 = env_or("SOAK_CLIENTS", 16);
    let write = std::env::var("SOAK_WRITE").map_or(true, |v| v != "0");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("NETSENTINEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/netsentinel"));
    let data = tempfile::tempdir().expect("a temp dir");

    let service = start(&bin, data.path()).await;
    let pid = service.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .expect("an HTTP client");
    let base: Arc<str> = service.base.clone().into();

    let fit = client
        .post(format!("{base}/v1/model/fit"))
        .json(&json!({"generate": {}}))
        .send()
        .await
        .expect("fit sent");
    assert_eq!(
        fit.status(),
        201,
        "fit: {}",
        fit.text().await.unwrap_or_default()
    );
    let samples: Value = client
        .post(format!("{base}/v1/samples"))
        .json(&json!({}))
        .send()
        .await
        .expect("samples sent")
        .json()
        .await
        .expect("samples JSON");
    let records = samples["records"].as_array().expect("records").clone();
    assert_eq!(records.len(), SCORE_RECORDS);
    // Labeled records: score ignores the label, evaluate needs it.
    let score_body = bytes::Bytes::from(serde_json::to_vec(&records).expect("JSON"));
    // One scored batch before the clients start, so the chart has something to draw (else 409).
    let first = client
        .post(format!("{base}/v1/score"))
        .header("content-type", "application/json")
        .body(score_body.clone())
        .send()
        .await
        .expect("first score sent");
    assert_eq!(first.status(), 200, "first score");

    let rss_start = rss_kib(pid).unwrap_or(0);
    eprintln!(
        "soak: {clients} clients for {seconds} s against pid {pid} (RSS {} MiB after the fit)",
        mib(rss_start)
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                client.clone(),
                base.clone(),
                score_body.clone(),
                deadline,
            ))
        })
        .collect();

    let mut rss = vec![(0u64, rss_start)];
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(5),
        Duration::from_secs(5),
    );
    while Instant::now() < deadline {
        tick.tick().await;
        if let Some(kib) = rss_kib(pid) {
            let at = started.elapsed().as_secs();
            eprintln!("  t={at:>4}s RSS {} MiB", mib(kib));
            rss.push((at, kib));
        }
    }
    let mut all = ClientStats::default();
    for t in tasks {
        let s = t.await.expect("a client did not panic");
        all.done.extend(s.done);
        all.errors.extend(s.errors);
    }
    let elapsed = started.elapsed();
    let rss_end = rss_kib(pid).unwrap_or(0);
    rss.push((elapsed.as_secs(), rss_end));
    let alerts_db = std::fs::metadata(data.path().join("alerts.db")).map_or(0, |m| m.len());
    drop(service);

    let total = all.done.len() + all.errors.len();
    let mut score_lat: Vec<Duration> = all
        .done
        .iter()
        .filter(|(op, _)| *op == Op::Score)
        .map(|(_, d)| *d)
        .collect();
    score_lat.sort();
    let count = |op: Op| all.done.iter().filter(|(o, _)| *o == op).count();
    let secs = elapsed.as_secs_f64();
    let rss_max = rss.iter().map(|(_, k)| *k).max().unwrap_or(0);
    let series: Vec<String> = rss
        .iter()
        .map(|(t, k)| format!("{t}s {}", mib(*k)))
        .collect();
    let (load1, load5, load15) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            let f: Vec<String> = s.split_whitespace().map(str::to_string).collect();
            (f[0].clone(), f[1].clone(), f[2].clone())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut errors_note = String::new();
    if !all.errors.is_empty() {
        errors_note = format!(" First error: `{}`.", all.errors[0].replace('`', "'"));
    }

    let report = format!(
        "## Soak: the release binary under mixed traffic\n\n\
Command: `cargo build --release --bin netsentinel --example soak && SOAK_SECONDS={seconds} target/release/examples/soak` \
(examples/soak.rs), run {now}.\n\n\
Machine: {nproc} CPUs (`nproc`), {cpu}; client and service share it. Load average (1/5/15 min) at the end: {load1} {load5} {load15}.\n\n\
Setup: service on loopback over a fresh data dir, one fit on the seed profile (720 records, default params), then \
{clients} concurrent keep-alive clients for {secs:.0} s: 80 % `POST /v1/score` of the 720 seed records as JSON, \
10 % `GET /v1/alerts?limit=20`, 5 % `GET /v1/chart.png`, 5 % `POST /v1/evaluate` of the same labeled records.\n\n\
| metric | value |\n|---|---:|\n\
| requests answered 2xx | {ok} |\n\
| errors (non-2xx or transport) | {errors} |\n\
| throughput, all requests | {rps:.1} req/s |\n\
| score requests | {scores} ({score_rps:.1} req/s) |\n\
| records scored | {records_per_s:.0} records/s |\n\
| score latency p50 / p90 / p99 | {p50} / {p90} / {p99} ms |\n\
| score latency max | {pmax} ms |\n\
| alerts / chart / evaluate requests | {alerts} / {charts} / {evals} |\n\
| RSS start (after the fit) / max / end | {rs} / {rm} / {re} MiB |\n\
| alerts.db at the end | {db:.1} MiB |\n\n\
RSS every 5 s (MiB): {series}.\n\n\
Every scored seed batch is anomalous enough to raise an alert, so the alert database grows by one row per score \
request ({scores} rows here); RSS growth that tracks it is likely SQLite's page cache \
(not proven: no heap profile was taken).{errors_note}\n",
        now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        cpu = cpu_model(),
        ok = all.done.len(),
        errors = all.errors.len(),
        rps = total as f64 / secs,
        scores = score_lat.len(),
        score_rps = score_lat.len() as f64 / secs,
        records_per_s = (score_lat.len() * SCORE_RECORDS) as f64 / secs,
        p50 = ms(percentile(&score_lat, 50.0)),
        p90 = ms(percentile(&score_lat, 90.0)),
        p99 = ms(percentile(&score_lat, 99.0)),
        pmax = ms(score_lat.last().copied().unwrap_or_default()),
        alerts = count(Op::Alerts),
        charts = count(Op::Chart),
        evals = count(Op::Evaluate),
        rs = mib(rss_start),
        rm = mib(rss_max),
        re = mib(rss_end),
        db = alerts_db as f64 / (1024.0 * 1024.0),
        series = series.join(", "),
    );
    println!("{report}");
    if write {
        write_section(&root.join("BENCHMARKS.md"), &report);
        eprintln!("soak: wrote the soak section of BENCHMARKS.md");
    }
}

/// Replaces the text between the soak markers (or appends the section), leaving the rest alone.
fn write_section(path: &Path, report: &str) {
    const BEGIN: &str =
        "<!-- soak:begin (generated by examples/soak.rs; edit the example, not this) -->";
    const BEGIN_PREFIX: &str = "<!-- soak:begin";
    const END: &str = "<!-- soak:end -->";
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{BEGIN}\n{report}{END}");
    let updated = match (existing.find(BEGIN_PREFIX), existing.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &existing[..b], &existing[e + END.len()..])
        }
        _ => {
            let sep = if existing.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{existing}{sep}{section}\n")
        }
    };
    std::fs::write(path, updated).expect("BENCHMARKS.md is writable");
}
