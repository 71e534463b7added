//! A real pipeline: Debian's syslog-ng (`syslog-ng-core` + `syslog-ng-mod-http`) tails a Zeek
//! JSON conn log into `POST /v1/detectors/{name}/ingest` with the configuration the README
//! gives (`examples/pipelines/syslog-ng.conf`, compiled in here so the two cannot drift), while
//! the test appends the log in chunks, kills netsentinel with SIGKILL mid-stream, restarts it on
//! the same port, and injects a malformed line. After a flush the stored windows are those of
//! one `score` request with the good lines, bit for bit, and the bad line was skipped and
//! reported, not fatal.
//!
//! Needs `syslog-ng` with its http module: without it the test prints a loud SKIP and passes,
//! unless `CI` is set (`.ci/run` installs both packages): then it fails. Every wait is bounded.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use crate::support::data::shared_zeek;
use crate::support::eventually;
use crate::support::process::{Process, binary};
use crate::support::syslog_ng;

/// The tested configuration, exactly as users get it; the test only sets its `@define` values.
const CONF: &str = include_str!("../../examples/pipelines/syslog-ng.conf");
const JSON_LINES: &str = "application/x-zeek-json";
const DETECTOR: &str = "pipeline";
/// Copies of the real log in the stream, each this much later than the one before (more than
/// the log's span) and with its own uids: long enough for windows to close mid-stream.
const COPIES: usize = 4;
const COPY_SHIFT_SECS: f64 = 260.0;
/// Lines per request, as small as a busy pipeline's batches get.
const BATCH_LINES: usize = 10;
/// The most any one awaited condition may take: a bound for a loaded machine, not a timing
/// assertion (each takes about a second: syslog-ng polls the file every second).
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn syslog_ng_ships_a_zeek_log_across_a_kill_9_and_a_bad_line_and_the_windows_are_exact() {
    let Some(syslog_ng) = syslog_ng::Binaries::find_or_skip("pipeline_syslog_ng", &["http"]) else {
        return;
    };
    let good = json_log();
    let lateness = format!("{}s", max_disorder_secs(&good).ceil() as u64 + 1);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // netsentinel, a Zeek JSON detector fitted on the log.
    let server = serve(&data_dir, "127.0.0.1:0");
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let base = format!("/v1/detectors/{DETECTOR}");
    let put = client
        .put(server.url(&base))
        .json(
            &json!({"source": {"format": "zeek", "window": "30s", "group_by": "id.resp_h",
            "allowed_lateness": lateness}}),
        )
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let fit = post(
        &client,
        &server.url(&format!("{base}/model/fit?n_estimators=50&seed=3")),
        lines_body(&good),
    )
    .await;
    assert_eq!(fit.status(), StatusCode::CREATED, "{:?}", fit.text().await);

    // syslog-ng tailing an empty conn log into the detector's ingest.
    let conn_log = dir.path().join("conn.log");
    std::fs::write(&conn_log, "").unwrap();
    let sng = SyslogNg::start(&syslog_ng, dir.path(), &conn_log, &addr);

    // The bad line, mid-stream after the restart: a writer cut short mid-line.
    let bad_at = 3 * good.len() / 4 + 5;
    let mut stream = good.clone();
    stream.insert(
        bad_at,
        r#"{"ts":1379289420.5,"uid":"Ccut","id.orig_h":"192.1"#.into(),
    );
    let (a, b, c) = (stream.len() / 4, stream.len() / 2, 5 * stream.len() / 8);

    // 1. A first part, delivered while the service runs.
    append(&conn_log, &stream[..a]);
    sng.wait_delivered(a).await;
    // 2. The next part; once syslog-ng has delivered some of it, SIGKILL the service.
    append(&conn_log, &stream[a..b]);
    eventually("syslog-ng delivering the second part", DEADLINE, || async {
        (sng.stats().written > a as u64).then_some(())
    })
    .await;
    server.kill_9();
    // 3. More lines while the service is down: syslog-ng reads them and cannot deliver them.
    append(&conn_log, &stream[b..c]);
    eventually("syslog-ng finding the service down", DEADLINE, || async {
        sng.log()
            .contains("error sending HTTP request")
            .then_some(())
    })
    .await;
    // 4. The service back on the same address; the rest of the log, with the bad line.
    let server = serve(&data_dir, &addr);
    append(&conn_log, &stream[c..]);
    sng.wait_delivered(stream.len()).await;
    let stats = sng.stats();
    assert_eq!(stats.dropped, 0, "syslog-ng dropped lines: {stats:?}");

    // The bad line was skipped and reported: counted, logged with its reason, not fatal.
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rejected = counter(&metrics, "netsentinel_ingest_rejected_total");
    assert!(rejected >= 1, "the bad line was not counted: {rejected}");
    let skipped: Vec<Value> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "ingest skipped unreadable lines")
        .collect();
    assert!(
        skipped.iter().any(|e| e["first_reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid JSON"))),
        "the bad line is not logged with its reason: {skipped:?}"
    );
    // Windows closed as the stream went, before any flush.
    let before_flush = stored_windows(&client, &server, &base).await;
    assert!(!before_flush.is_empty(), "no window closed mid-stream");

    let flush = client
        .post(server.url(&format!("{base}/flush")))
        .send()
        .await
        .unwrap();
    assert_eq!(flush.status(), StatusCode::OK, "{:?}", flush.text().await);
    let got = by_window(&stored_windows(&client, &server, &base).await);
    let one = post(
        &client,
        &server.url(&format!("{base}/score")),
        lines_body(&good),
    )
    .await;
    assert_eq!(one.status(), StatusCode::OK);
    let one: Value = one.json().await.unwrap();
    let expected = by_window(one["results"].as_array().unwrap());
    assert!(
        expected.len() > 40 && before_flush.len() < expected.len(),
        "{} windows in one request, {} closed before the flush",
        expected.len(),
        before_flush.len()
    );
    eprintln!(
        "pipeline: {} lines through syslog-ng; {} windows, {} closed before the flush; after the \
         restart {} lines accepted, {} duplicates, {rejected} rejected",
        stream.len(),
        expected.len(),
        before_flush.len(),
        counter(&metrics, "netsentinel_ingest_accepted_total"),
        counter(&metrics, "netsentinel_ingest_duplicates_total"),
    );
    assert_eq!(
        got, expected,
        "the pipeline's windows differ from one request's"
    );
}

/// What must match one request's windows: (start, entity) → the score's bits, whether it is
/// an anomaly, its severity.
type Windows = BTreeMap<(String, String), (u64, bool, u64)>;

fn by_window(windows: &[Value]) -> Windows {
    let map: Windows = windows
        .iter()
        .map(|w| {
            (
                (
                    w["timestamp"].as_str().unwrap().to_owned(),
                    w["entity"].as_str().unwrap().to_owned(),
                ),
                (
                    w["score"].as_f64().unwrap().to_bits(),
                    w["is_anomaly"].as_bool().unwrap(),
                    w["severity"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(map.len(), windows.len(), "a window stored twice");
    map
}

/// Every stored window of the detector, page by page.
async fn stored_windows(client: &reqwest::Client, server: &Process, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = server.url(&format!("{base}/windows?limit=25"));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        out.extend(page["windows"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// The value of a counter of this test's detector in a /metrics page (0 when absent).
fn counter(metrics: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{detector=\"{DETECTOR}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn serve(data_dir: &Path, addr: &str) -> Process {
    let mut cmd = binary();
    cmd.args(["serve", "--addr", addr, "--log-format", "json"])
        .arg("--data-dir")
        .arg(data_dir);
    Process::spawn(cmd, "the service")
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", JSON_LINES)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn lines_body(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Appends lines to the log as Zeek's writer does: whole lines, at the end.
fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(lines_body(lines).as_bytes()).unwrap();
}

/// The real TSV conn log (`shared/data/zeek/conn.log`) as Zeek's JSON writer writes it (one
/// object per line, unset fields left out, numbers as numbers), `COPIES` times, each copy
/// `COPY_SHIFT_SECS` later with its own uids. In file order, as Zeek wrote it: up to minutes
/// out of order (a line is written when its connection ends).
fn json_log() -> Vec<String> {
    let text = String::from_utf8(shared_zeek("conn.log")).unwrap();
    let header = |name: &str| -> Vec<&str> {
        let tag = format!("#{name}\t");
        let line = text.lines().find_map(|l| l.strip_prefix(&tag)).unwrap();
        line.split('\t').collect()
    };
    let (fields, types) = (header("fields"), header("types"));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
        .collect();
    let mut out = Vec::new();
    for copy in 0..COPIES {
        for row in &rows {
            assert_eq!(row.len(), fields.len(), "{row:?}");
            let mut line = Map::new();
            for ((&name, &ty), &cell) in fields.iter().zip(&types).zip(row) {
                if cell == "-" {
                    continue;
                }
                let value = match (name, ty) {
                    ("ts", _) => {
                        json!(cell.parse::<f64>().unwrap() + copy as f64 * COPY_SHIFT_SECS)
                    }
                    ("uid", _) => json!(format!("{cell}{copy}")),
                    (_, "time" | "interval" | "double" | "count" | "int" | "port") => {
                        serde_json::from_str(cell).unwrap()
                    }
                    (_, "bool") => json!(cell == "T"),
                    (_, t) if t.contains('[') && cell == "(empty)" => json!([]),
                    (_, t) if t.contains('[') => json!(cell.split(',').collect::<Vec<_>>()),
                    _ => json!(cell),
                };
                line.insert(name.to_owned(), value);
            }
            out.push(Value::Object(line).to_string());
        }
    }
    out
}

/// How far behind the latest `ts` seen so far a line's `ts` gets.
fn max_disorder_secs(lines: &[String]) -> f64 {
    let mut latest = f64::MIN;
    let mut worst = 0.0_f64;
    for l in lines {
        let ts = serde_json::from_str::<Value>(l).unwrap()["ts"]
            .as_f64()
            .unwrap();
        latest = latest.max(ts);
        worst = worst.max(latest - ts);
    }
    worst
}

/// The destination's counters in `syslog-ng-ctl stats`.
#[derive(Debug, Default, Clone, Copy)]
struct DestStats {
    /// Lines answered 2xx.
    written: u64,
    /// Lines waiting or in flight.
    queued: u64,
    dropped: u64,
}

/// syslog-ng running the README's configuration.
struct SyslogNg(syslog_ng::SyslogNg);

impl SyslogNg {
    /// Runs the README's configuration with its `@define` values pointed at `conn_log`, the
    /// service at `addr`, a disk buffer in `dir`, and batches of `BATCH_LINES`.
    fn start(bins: &syslog_ng::Binaries, dir: &Path, conn_log: &Path, addr: &str) -> SyslogNg {
        let url = format!("http://{addr}/v1/detectors/{DETECTOR}/ingest");
        let buffer_dir = dir.join("buffer");
        std::fs::create_dir_all(&buffer_dir).unwrap();
        let conf = configured(
            CONF,
            &[
                ("netsentinel_ingest_url", &url),
                ("zeek_conn_log", &conn_log.display().to_string()),
                ("buffer_dir", &buffer_dir.display().to_string()),
                ("batch_lines", &BATCH_LINES.to_string()),
            ],
        );
        SyslogNg(syslog_ng::SyslogNg::start(bins, dir, &conf))
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// The http destination's counters.
    fn try_stats(&self) -> Option<DestStats> {
        let rows = self.0.stats_rows()?;
        let mut stats = DestStats::default();
        let mut seen = false;
        for row in rows.lines() {
            let cols: Vec<&str> = row.split(';').collect();
            if cols.len() != 6 || cols[0] != "dst.http" {
                continue;
            }
            seen = true;
            let n: u64 = cols[5].trim().parse().unwrap_or(0);
            match cols[4] {
                "written" => stats.written = n,
                "queued" => stats.queued = n,
                "dropped" => stats.dropped = n,
                _ => {}
            }
        }
        seen.then_some(stats)
    }

    fn stats(&self) -> DestStats {
        self.try_stats()
            .unwrap_or_else(|| panic!("syslog-ng-ctl stats failed; syslog-ng: {}", self.log()))
    }

    /// Waits until `lines` lines were answered 2xx and none waits.
    async fn wait_delivered(&self, lines: usize) {
        eventually(
            &format!("syslog-ng delivering {lines} lines"),
            DEADLINE,
            || async {
                let s = self.stats();
                (s.written >= lines as u64 && s.queued == 0).then_some(())
            },
        )
        .await;
    }
}

/// `conf` with each `@define NAME "..."` given its value; panics when one is not there.
fn configured(conf: &str, values: &[(&str, &str)]) -> String {
    let mut out = conf.to_owned();
    for (name, value) in values {
        let prefix = format!("@define {name} \"");
        let start = out
            .find(&prefix)
            .unwrap_or_else(|| panic!("examples/pipelines/syslog-ng.conf defines no {name}"));
        let value_start = start + prefix.len();
        let end = value_start + out[value_start..].find('"').unwrap();
        out.replace_range(value_start..end, value);
    }
    out
}

#[test]
fn the_readme_shows_the_tested_syslog_ng_configuration_verbatim() {
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&format!("```\n{CONF}```\n")),
        "README.md, \"Shipping from your pipeline\", must show examples/pipelines/syslog-ng.conf \
         as it is"
    );
}
