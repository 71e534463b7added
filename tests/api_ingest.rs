//! Continuous ingest over HTTP: any split of a real Zeek log into requests, in any order within
//! the lateness, then flushed, gives the windows and bit-identical scores of one `score`
//! request; retries count once; bad lines are skipped and reported; late lines are counted;
//! acknowledged lines survive a restart and kill -9.

mod support;

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use support::app::{TestApp, oneshot_app, oneshot_app_with, spawn_app};
use support::data::{shared_zeek, zeek_json_lines_in_order};
use support::responses::{assert_problem, json_ok, json_with_status, without_closed_at};

/// The TSV log as its header lines and its data lines.
fn tsv() -> (String, Vec<String>) {
    let text = String::from_utf8(shared_zeek("conn.log")).unwrap();
    let (header, data): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("#close"))
        .partition(|l| l.starts_with('#'));
    let mut h = header.join("\n");
    h.push('\n');
    (h, data.iter().map(|l| format!("{l}\n")).collect())
}

const TSV: &str = "text/zeek-tsv";
const JSON_LINES: &str = "application/x-zeek-json";

/// A Zeek detector (30 s windows per responder, `lateness`), fitted on `fit_body`.
async fn detector(app: &TestApp, name: &str, lateness: &str, extra: Value) -> String {
    let mut source = json!({"format": "zeek", "window": "30s", "group_by": "id.resp_h",
        "allowed_lateness": lateness});
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            source[k] = v.clone();
        }
    }
    let put = app
        .send(
            app.request(reqwest::Method::PUT, &format!("/v1/detectors/{name}"))
                .json(&json!({"source": source})),
        )
        .await;
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let fit = app
        .post_raw(
            &format!("/v1/detectors/{name}/model/fit?n_estimators=50&seed=3"),
            Some(TSV),
            shared_zeek("conn.log"),
        )
        .await;
    json_with_status(fit, StatusCode::CREATED).await;
    format!("/v1/detectors/{name}")
}

/// (start, entity) -> (score, is_anomaly, severity) of one `score` request with `body`.
async fn scored_at_once(
    app: &TestApp,
    base: &str,
    content_type: &str,
    body: Vec<u8>,
) -> BTreeMap<(String, String), (f64, bool, u64)> {
    let answer = json_ok(
        app.post_raw(&format!("{base}/score"), Some(content_type), body)
            .await,
    )
    .await;
    as_map(answer["results"].as_array().unwrap())
}

/// Score results or stored windows by (start, entity), each once.
fn as_map(windows: &[Value]) -> BTreeMap<(String, String), (f64, bool, u64)> {
    let map: BTreeMap<_, _> = windows
        .iter()
        .map(|w| {
            (
                (
                    w["timestamp"].as_str().unwrap().to_owned(),
                    w["entity"].as_str().unwrap().to_owned(),
                ),
                (
                    w["score"].as_f64().unwrap(),
                    w["is_anomaly"].as_bool().unwrap(),
                    w["severity"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(map.len(), windows.len(), "a window stored twice");
    map
}

/// Splits `lines` into `parts` consecutive pieces at random cut points.
fn split(lines: &[String], parts: usize, rng: &mut impl rand::Rng) -> Vec<String> {
    let mut cuts: Vec<usize> = (0..parts - 1)
        .map(|_| rng.random_range(0..=lines.len()))
        .collect();
    cuts.push(0);
    cuts.push(lines.len());
    cuts.sort_unstable();
    cuts.windows(2)
        .map(|w| lines[w[0]..w[1]].concat())
        .collect()
}

#[tokio::test]
async fn any_split_in_any_order_then_flush_gives_the_windows_and_scores_of_one_score_request() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let whole = format!("{header}{}", lines.concat());
    for seed in 0..4u64 {
        // A lateness longer than the log: no line is late, whatever the order.
        let base = detector(&app, &format!("split-{seed}"), "10m", json!({})).await;
        let expected = scored_at_once(&app, &base, TSV, whole.clone().into_bytes()).await;
        assert!(expected.len() > 20, "{}", expected.len());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut pieces = split(&lines, 2 + seed as usize * 3, &mut rng);
        pieces.shuffle(&mut rng);
        // The TSV header comes first (a later call reads with the header an earlier one gave).
        let mut accepted = app.ingest(&base, TSV, header.clone()).await["accepted"]
            .as_u64()
            .unwrap();
        for p in pieces {
            let a = app.ingest(&base, TSV, p).await;
            assert_eq!(a["late"], 0, "{a}");
            assert_eq!(a["rejected"], 0, "{a}");
            accepted += a["accepted"].as_u64().unwrap();
        }
        assert_eq!(accepted as usize, lines.len());
        let flushed = json_ok(app.post_empty(&format!("{base}/flush")).await).await;
        assert_eq!(flushed["windows_closed"], expected.len(), "{flushed}");
        let got = as_map(&app.windows(&base, 7).await);
        // Bit for bit: f64 equality of every score.
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[tokio::test]
async fn zeek_json_lines_in_order_close_windows_as_the_watermark_passes_them() {
    let app = oneshot_app().await;
    let lines = zeek_json_lines_in_order();
    let base = unfitted_json_detector(&app, "json-in-order").await;
    fit_json_detector(&app, &base, &lines).await;
    let expected = scored_at_once(&app, &base, JSON_LINES, lines.concat().into_bytes()).await;
    let mut closed_before_flush = 0;
    for chunk in lines.chunks(7) {
        let a = app.ingest(&base, JSON_LINES, chunk.concat()).await;
        assert_eq!(a["late"], 0, "{a}");
        closed_before_flush += a["windows_closed"].as_u64().unwrap();
    }
    assert!(closed_before_flush > 0, "the watermark closed no window");
    json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    assert_eq!(as_map(&app.windows(&base, 7).await), expected);
}

#[tokio::test]
async fn a_retried_batch_counts_once_and_late_lines_are_counted_not_merged() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let base = detector(&app, "retries", "10m", json!({})).await;
    let first = format!("{header}{}", lines[..100].concat());
    let a = app.ingest(&base, TSV, first.clone()).await;
    assert_eq!(
        (a["accepted"].as_u64(), a["duplicates"].as_u64()),
        (Some(100), Some(0))
    );
    // The pipeline timed out and sends the same batch again.
    let again = app.ingest(&base, TSV, first).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(100)),
        "{again}"
    );
    app.ingest(&base, TSV, lines[100..].concat()).await;
    let flushed = json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    let whole = format!("{header}{}", lines.concat());
    let expected = scored_at_once(&app, &base, TSV, whole.into_bytes()).await;
    assert_eq!(flushed["windows_closed"], expected.len());
    assert_eq!(as_map(&app.windows(&base, 7).await), expected);
    // After the flush every window of the log is closed: its lines are late, never merged.
    let late = app.ingest(&base, TSV, lines[..10].concat()).await;
    assert_eq!(
        (late["late"].as_u64(), late["accepted"].as_u64()),
        (Some(10), Some(0))
    );
    assert_eq!(as_map(&app.windows(&base, 7).await), expected);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("netsentinel_ingest_late_total{detector=\"retries\"}"))
        .unwrap_or_else(|| panic!("no late counter in {metrics}"));
    assert!(line.ends_with(" 10"), "{line}");
}

/// Posts `body` to `path` with an `Idempotency-Key`: status, replayed header, body bytes.
async fn keyed(app: &TestApp, path: &str, key: &str, body: String) -> (StatusCode, bool, Vec<u8>) {
    let r = app
        .send(
            app.request(reqwest::Method::POST, path)
                .header("Idempotency-Key", key)
                .header(reqwest::header::CONTENT_TYPE, TSV)
                .body(body),
        )
        .await;
    let replayed = r.headers().get("idempotency-replayed").is_some();
    (r.status(), replayed, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn an_idempotency_key_on_ingest_and_flush_replays_the_first_answer_and_changes_nothing() {
    let app = spawn_app().await;
    let (header, lines) = tsv();
    let base = detector(&app, "keyed", "10m", json!({})).await;
    let first = format!("{header}{}", lines[..100].concat());
    let path = format!("{base}/ingest");
    let (status, replayed, answer) = keyed(&app, &path, "batch-1", first.clone()).await;
    assert_eq!((status, replayed), (StatusCode::ACCEPTED, false));
    let a: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(a["accepted"], 100, "{a}");
    // The repeat is answered the first answer, byte for byte (a fold would say 0 accepted and
    // 100 duplicates), and counts nothing.
    let (status, replayed, again) = keyed(&app, &path, "batch-1", first.clone()).await;
    assert_eq!((status, replayed), (StatusCode::ACCEPTED, true));
    assert_eq!(again, answer);
    // The same key with another batch is refused; nothing of that batch is folded.
    let other = format!("{header}{}", lines[100..110].concat());
    let reused = app
        .send(
            app.request(reqwest::Method::POST, &path)
                .header("Idempotency-Key", "batch-1")
                .header(reqwest::header::CONTENT_TYPE, TSV)
                .body(other),
        )
        .await;
    assert_problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    // Keys survive a restart: they are committed with the stream.
    let app = app.restart().await;
    let (status, replayed, again) = keyed(&app, &path, "batch-1", first).await;
    assert_eq!(
        (status, replayed, again),
        (StatusCode::ACCEPTED, true, answer)
    );
    let (_, _, rest) = keyed(&app, &path, "batch-2", lines[100..].concat()).await;
    let rest: Value = serde_json::from_slice(&rest).unwrap();
    assert_eq!(rest["accepted"], lines.len() - 100, "{rest}");
    // A keyed flush, repeated: the first flush's answer (every window it closed), not an
    // empty flush.
    let flush = format!("{base}/flush");
    let (status, replayed, flushed) = keyed(&app, &flush, "flush-1", String::new()).await;
    assert_eq!((status, replayed), (StatusCode::OK, false));
    let (_, replayed, again) = keyed(&app, &flush, "flush-1", String::new()).await;
    assert_eq!((replayed, &again), (true, &flushed));
    let flushed: Value = serde_json::from_slice(&flushed).unwrap();
    let whole = format!("{header}{}", lines.concat());
    let expected = scored_at_once(&app, &base, TSV, whole.into_bytes()).await;
    assert_eq!(flushed["windows_closed"], expected.len());
    assert_eq!(as_map(&app.windows(&base, 7).await), expected);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // The repeats folded nothing: no line of theirs came back as a duplicate.
    let duplicates = metrics
        .lines()
        .find(|l| l.starts_with("netsentinel_ingest_duplicates_total{detector=\"keyed\"}"));
    assert!(
        duplicates.is_none_or(|l| l.ends_with(" 0")),
        "{duplicates:?}"
    );
}

#[tokio::test]
async fn a_malformed_line_mid_batch_is_skipped_and_reported_and_the_good_lines_kept() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let base = detector(&app, "bad-lines", "10m", json!({})).await;
    let header_lines = header.lines().count();
    // Line 5 of the data: body line header_lines + 5.
    let mut batch = lines[..40].to_vec();
    batch.insert(4, "this is not a conn line\n".into());
    let a = app
        .ingest(&base, TSV, format!("{header}{}", batch.concat()))
        .await;
    assert_eq!(a["accepted"], 40, "{a}");
    assert_eq!(a["rejected"], 1, "{a}");
    assert_eq!(a["rejects"][0]["line"], header_lines + 5, "{a}");
    assert!(a["rejects"][0]["reason"].as_str().unwrap().len() > 5);
    // The rest of the log, then flush: the windows of the good lines, as one request scores them.
    app.ingest(&base, TSV, lines[40..].concat()).await;
    json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    let whole = format!("{header}{}", lines.concat());
    let expected = scored_at_once(&app, &base, TSV, whole.into_bytes()).await;
    assert_eq!(as_map(&app.windows(&base, 7).await), expected);

    // With on_invalid: reject the whole batch is refused and nothing of it is kept.
    let strict = detector(&app, "strict", "10m", json!({"on_invalid": "reject"})).await;
    let refused = app
        .post_raw(
            &format!("{strict}/ingest"),
            Some(TSV),
            format!("{header}{}", batch.concat()),
        )
        .await;
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-zeek-line",
    )
    .await;
    let a = app
        .ingest(&strict, TSV, format!("{header}{}", lines[..40].concat()))
        .await;
    assert_eq!(
        (a["accepted"].as_u64(), a["duplicates"].as_u64()),
        (Some(40), Some(0))
    );
}

/// PUTs a Zeek detector of 1 s windows per originator, no lateness (lines in order close
/// windows as they come), without fitting it; returns its base path.
async fn unfitted_json_detector(app: &TestApp, name: &str) -> String {
    let base = format!("/v1/detectors/{name}");
    let put = app
        .send(
            app.request(reqwest::Method::PUT, &base)
                .json(&json!({"source": {
            "format": "zeek", "window": "1s", "group_by": "id.orig_h", "allowed_lateness": "0s"}})),
        )
        .await;
    assert!(put.status().is_success());
    base
}

async fn fit_json_detector(app: &TestApp, base: &str, lines: &[String]) {
    let fit = app
        .post_raw(
            &format!("{base}/model/fit?n_estimators=30&seed=1&max_samples=8"),
            Some(JSON_LINES),
            lines.concat(),
        )
        .await;
    json_with_status(fit, StatusCode::CREATED).await;
}

/// `windows_pending` of the detector's window listing.
async fn listed_pending(app: &TestApp, base: &str) -> (usize, u64) {
    let page = json_ok(app.get(&format!("{base}/windows?limit=1000")).await).await;
    (
        page["windows"].as_array().unwrap().len(),
        page["windows_pending"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn windows_closed_before_the_first_fit_wait_pending_across_a_restart_then_score_as_from_the_start()
 {
    let app = spawn_app().await;
    let lines = zeek_json_lines_in_order();
    let base = unfitted_json_detector(&app, "late-fit").await;
    let third = lines.len() / 3;
    let mut pending = 0;
    for chunk in lines[..2 * third].chunks(5) {
        let a = app.ingest(&base, JSON_LINES, chunk.concat()).await;
        assert_eq!(
            (a["late"].as_u64(), a["rejected"].as_u64()),
            (Some(0), Some(0)),
            "{a}"
        );
        assert_eq!(a["model_version"], Value::Null, "{a}");
        pending += a["windows_closed"].as_u64().unwrap();
        assert_eq!(a["windows_pending"].as_u64(), Some(pending), "{a}");
    }
    assert!(pending > 5, "the watermark closed only {pending} windows");
    // Kept, not listed: nothing is scored yet; and kept across a restart.
    assert_eq!(listed_pending(&app, &base).await, (0, pending));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "netsentinel_windows_pending{{detector=\"late-fit\"}} {pending}"
        )),
        "{metrics}"
    );
    // A new process starts with empty gauges: what /metrics shows after the restart is read
    // from the store at startup, not left over from the calls above.
    netsentinel::monitoring::windows_pending("late-fit", 0);
    let app = app.restart().await;
    assert_eq!(listed_pending(&app, &base).await, (0, pending));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "netsentinel_windows_pending{{detector=\"late-fit\"}} {pending}"
        )),
        "{metrics}"
    );
    fit_json_detector(&app, &base, &lines).await;
    // What a detector that had this model from the start stores (tested equal elsewhere).
    let expected = scored_at_once(&app, &base, JSON_LINES, lines.concat().into_bytes()).await;
    let mut scored = 0;
    for chunk in lines[2 * third..].chunks(5) {
        let a = app.ingest(&base, JSON_LINES, chunk.concat()).await;
        assert_eq!(a["late"], 0, "{a}");
        assert!(a["model_version"].is_u64(), "{a}");
        assert_eq!(a["windows_pending"], 0, "{a}");
        scored += a["pending_scored"].as_u64().unwrap();
    }
    // The first call after the fit scored every pending window, once.
    assert_eq!(scored, pending);
    let flushed = json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    assert_eq!(flushed["pending_scored"], 0, "{flushed}");
    // Bit for bit, every window once.
    assert_eq!(as_map(&app.windows(&base, 50).await), expected);
    assert_eq!(listed_pending(&app, &base).await.1, 0);
}

#[tokio::test]
async fn past_the_pending_bound_ingest_is_503_and_keeps_nothing_of_the_call() {
    let app = oneshot_app_with(|s| s.max_pending_windows = 8).await;
    let lines = zeek_json_lines_in_order();
    let base = unfitted_json_detector(&app, "bounded").await;
    let chunks: Vec<&[String]> = lines.chunks(3).collect();
    let mut pending = 0;
    let mut refused = None;
    for (i, chunk) in chunks.iter().enumerate() {
        let r = app
            .post_raw(&format!("{base}/ingest"), Some(JSON_LINES), chunk.concat())
            .await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.headers().contains_key("retry-after"));
            assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
            refused = Some(i);
            break;
        }
        let a = json_with_status(r, StatusCode::ACCEPTED).await;
        pending = a["windows_pending"].as_u64().unwrap();
        assert!(pending <= 8, "{a}");
    }
    let refused = refused.expect("the bound was never reached");
    assert!(pending > 0);
    // Nothing of the refused call is kept: the same call is refused again, and the pending
    // windows are what they were.
    let again = app
        .post_raw(
            &format!("{base}/ingest"),
            Some(JSON_LINES),
            chunks[refused].concat(),
        )
        .await;
    assert_problem(again, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_eq!(listed_pending(&app, &base).await, (0, pending));
    // Once a model is active the retry goes through: its lines are new (not duplicates), and
    // the pending windows are scored with the ones it closes.
    fit_json_detector(&app, &base, &lines).await;
    let a = app
        .ingest(&base, JSON_LINES, chunks[refused].concat())
        .await;
    assert_eq!(
        (a["accepted"].as_u64(), a["duplicates"].as_u64()),
        (Some(chunks[refused].len() as u64), Some(0)),
        "{a}"
    );
    assert_eq!(a["pending_scored"].as_u64(), Some(pending), "{a}");
    let stored = app.windows(&base, 100).await.len() as u64;
    assert_eq!(stored, pending + a["windows_closed"].as_u64().unwrap());
}

#[tokio::test]
async fn a_zeek_log_is_not_what_a_records_detector_ingests() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let put = app
        .send(
            app.request(reqwest::Method::PUT, "/v1/detectors/unfitted")
                .json(&json!({"source": {"format": "zeek", "window": "30s"}})),
        )
        .await;
    assert!(put.status().is_success());
    let body = format!("{header}{}", lines[..20].concat());
    // `default` reads records: a Zeek log is not what its ingest takes.
    app.fit_small(1).await;
    let r = app.post_raw("/v1/ingest", Some(TSV), body.clone()).await;
    assert_problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let r = app
        .post_csv("/v1/detectors/unfitted/ingest", "a,b\n1,2\n")
        .await;
    assert_problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let page = json_ok(app.get("/v1/detectors/unfitted/windows").await).await;
    assert_eq!(
        page,
        json!({"windows": [], "next_cursor": null, "windows_pending": 0})
    );
}

#[tokio::test]
async fn acknowledged_lines_survive_a_restart() {
    let app = spawn_app().await;
    let (header, lines) = tsv();
    let base = detector(&app, "restarts", "10m", json!({})).await;
    let whole = format!("{header}{}", lines.concat());
    let expected = scored_at_once(&app, &base, TSV, whole.into_bytes()).await;
    let third = lines.len() / 3;
    app.ingest(&base, TSV, format!("{header}{}", lines[..third].concat()))
        .await;
    let app = app.restart().await;
    // The TSV header of the first call still applies after the restart.
    app.ingest(&base, TSV, lines[third..2 * third].concat())
        .await;
    let app = app.restart().await;
    // A retry of lines acknowledged before the restart counts once.
    let again = app.ingest(&base, TSV, lines[..2 * third].concat()).await;
    assert_eq!(
        again["duplicates"].as_u64(),
        Some(2 * third as u64),
        "{again}"
    );
    app.ingest(&base, TSV, lines[2 * third..].concat()).await;
    json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    assert_eq!(as_map(&app.windows(&base, 7).await), expected);
}

/// The service binary serving `dir`, as its own process (the kill -9 tests).
fn serve(dir: &std::path::Path) -> support::process::Process {
    let mut cmd = support::process::binary();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir);
    support::process::Process::spawn(cmd, "the service")
}

#[tokio::test]
async fn acknowledged_lines_survive_kill_9() {
    use support::process::Process;
    let dir = tempfile::tempdir().unwrap();
    let start = || serve(dir.path());
    let client = reqwest::Client::new();
    let (header, lines) = tsv();
    let post = |p: &Process, path: &str, ct: &str, body: String| {
        client
            .post(p.url(path))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let base = "/v1/detectors/crash";
    let server = start();
    let put = client
        .put(server.url(base))
        .json(
            &json!({"source": {"format": "zeek", "window": "30s", "group_by": "id.resp_h",
            "allowed_lateness": "10m"}}),
        )
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let half = lines.len() / 2;
    let a = post(
        &server,
        &format!("{base}/ingest"),
        TSV,
        format!("{header}{}", lines[..half].concat()),
    )
    .await
    .unwrap();
    // No model yet: accepted all the same.
    assert_eq!(a.status(), StatusCode::ACCEPTED);
    server.kill_9();
    let server = start();
    // Lines ingested before the detector had a model were kept as well.
    let fit = post(
        &server,
        &format!("{base}/model/fit?n_estimators=50&seed=3"),
        TSV,
        String::from_utf8(shared_zeek("conn.log")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(fit.status(), StatusCode::CREATED);
    let a: Value = post(&server, &format!("{base}/ingest"), TSV, lines.concat())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // What was acknowledged before the kill is there: its lines are duplicates now.
    assert_eq!(
        (a["duplicates"].as_u64(), a["accepted"].as_u64()),
        (Some(half as u64), Some((lines.len() - half) as u64)),
        "{a}"
    );
    let flushed: Value = client
        .post(server.url(&format!("{base}/flush")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let whole = format!("{header}{}", lines.concat());
    let one: Value = post(&server, &format!("{base}/score"), TSV, whole)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        flushed["windows_closed"],
        one["results"].as_array().unwrap().len()
    );
}

#[tokio::test]
async fn stateless_score_skips_bad_lines_when_asked_and_rejects_them_by_default() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let base = detector(&app, "score-skip", "0s", json!({})).await;
    let good = format!("{header}{}", lines.concat());
    let mut with_bad = lines.clone();
    with_bad.insert(10, "garbage\tline\n".into());
    let bad = format!("{header}{}", with_bad.concat());
    let refused = app
        .post_raw(&format!("{base}/score"), Some(TSV), bad.clone())
        .await;
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-zeek-line",
    )
    .await;
    let skipped = json_ok(
        app.post_raw(&format!("{base}/score?on_invalid=skip"), Some(TSV), bad)
            .await,
    )
    .await;
    assert_eq!(skipped["rejected"], 1, "{}", skipped["rejects"]);
    assert_eq!(skipped["rejects"][0]["line"], header.lines().count() + 11);
    let plain = json_ok(
        app.post_raw(&format!("{base}/score"), Some(TSV), good)
            .await,
    )
    .await;
    assert_eq!(skipped["results"], plain["results"]);
    assert!(plain.get("rejects").is_none(), "v1 answers are unchanged");
    let r = app.post_csv("/v1/score?on_invalid=skip", "a\n1\n").await;
    assert_problem(r, StatusCode::BAD_REQUEST, "invalid-parameter").await;
}

#[tokio::test]
async fn closed_windows_past_retention_are_deleted_and_counted() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let base = detector(&app, "retained", "10m", json!({})).await;
    app.ingest(&base, TSV, format!("{header}{}", lines.concat()))
        .await;
    json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    let closed = app.windows(&base, 7).await.len();
    assert!(closed > 20, "{closed}");
    // Windows closed just now survive a round with 1 day of retention; with 0 days every window
    // closed before now goes, and the listing is empty.
    let state = app.state();
    assert_eq!(
        netsentinel::service::retention::prune_windows_once(state, 1).await,
        0
    );
    assert_eq!(app.windows(&base, 7).await.len(), closed);
    assert_eq!(
        netsentinel::service::retention::prune_windows_once(state, 0).await,
        closed as u64
    );
    assert!(app.windows(&base, 7).await.is_empty());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("netsentinel_windows_pruned_total {closed}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_suppression_rule_marks_an_entitys_closed_windows_which_raise_nothing() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let whole = format!("{header}{}", lines.concat());
    let base = detector(&app, "muted", "10m", json!({})).await;
    let expected = scored_at_once(&app, &base, TSV, whole.clone().into_bytes()).await;
    let anomalous: Vec<&String> = expected
        .iter()
        .filter(|(_, (_, is_anomaly, _))| *is_anomaly)
        .map(|((_, entity), _)| entity)
        .collect();
    let muted = anomalous
        .first()
        .expect("the log has an anomalous window")
        .to_string();
    let rule = json_with_status(
        app.post_json(
            "/v1/suppressions",
            &json!({"detector": "muted", "entity": muted, "reason": "the test's host"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = rule["id"].as_str().unwrap().to_owned();

    let a = app.ingest(&base, TSV, whole).await;
    let flushed = json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    for answer in [&a, &flushed] {
        for alert in answer["alerts"].as_array().unwrap() {
            for r in alert["records"].as_array().unwrap() {
                assert_ne!(
                    r["entity"],
                    muted.as_str(),
                    "a suppressed window alerted: {alert}"
                );
            }
        }
    }
    let stored = app.windows(&base, 7).await;
    // Scored as usual: the same scores as one score request.
    assert_eq!(as_map(&stored), expected);
    let mut marked = 0;
    for w in &stored {
        if w["entity"] == muted.as_str() {
            assert_eq!(w["suppressed"], id.as_str(), "{w}");
            marked += 1;
        } else {
            assert!(w.get("suppressed").is_none(), "{w}");
        }
    }
    assert!(marked >= 1);
}

#[tokio::test]
async fn the_answer_shows_each_incident_its_windows_opened_or_updated_as_stored() {
    let app = oneshot_app().await;
    let (header, lines) = tsv();
    let base = detector(&app, "incidents", "10m", json!({})).await;
    let half = lines.len() / 2;
    let answers = [
        app.ingest(&base, TSV, format!("{header}{}", lines[..half].concat()))
            .await,
        app.ingest(&base, TSV, lines[half..].concat()).await,
        json_ok(app.post_empty(&format!("{base}/flush")).await).await,
    ];
    let mut seen: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut shown = 0;
    for answer in &answers {
        for alert in answer["alerts"].as_array().unwrap() {
            shown += 1;
            let id = alert["id"].as_str().unwrap().to_owned();
            let stored = json_ok(app.get(&format!("/v1/alerts/{id}")).await).await;
            let entity = alert["entity"]
                .as_str()
                .expect("windows of one host: an incident");
            assert_eq!(stored["entity"], entity, "{alert}");
            assert_eq!(alert["status"], "open");
            assert_eq!(alert["detector"], "incidents");
            let event = alert["event"].as_str().unwrap();
            match seen.get(entity) {
                None => assert_eq!(event, "opened", "{alert}"),
                Some((first, count)) => {
                    assert_eq!(&id, first, "the entity's one incident");
                    assert!(alert["count"].as_u64().unwrap() > *count, "{alert}");
                    assert!(["updated", "escalated"].contains(&event), "{alert}");
                }
            }
            seen.insert(
                entity.to_owned(),
                (id.clone(), alert["count"].as_u64().unwrap()),
            );
        }
    }
    assert!(shown >= 1, "the log raises at least one incident");
    // What the answers showed last is what is stored.
    for (entity, (id, count)) in &seen {
        let stored = json_ok(app.get(&format!("/v1/alerts/{id}")).await).await;
        assert_eq!(stored["count"], *count, "{entity}: {stored}");
        let open = json_ok(
            app.get(&format!("/v1/alerts?entity={entity}&status=open"))
                .await,
        )
        .await;
        assert_eq!(open["alerts"].as_array().unwrap().len(), 1, "{open}");
        assert_eq!(open["alerts"][0]["id"], id.as_str());
    }
}

#[tokio::test]
async fn windows_pending_without_a_model_survive_kill_9() {
    use support::process::Process;
    let dir = tempfile::tempdir().unwrap();
    let start = || serve(dir.path());
    let client = reqwest::Client::new();
    let lines = zeek_json_lines_in_order();
    let base = "/v1/detectors/pending-crash";
    let ingest = |p: &Process, body: String| {
        client
            .post(p.url(&format!("{base}/ingest")))
            .header("content-type", JSON_LINES)
            .body(body)
            .send()
    };
    let server = start();
    let put = client
        .put(server.url(base))
        .json(&json!({"source": {
            "format": "zeek", "window": "1s", "group_by": "id.orig_h", "allowed_lateness": "0s"}}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let half = lines.len() / 2;
    let mut pending = 0;
    for chunk in lines[..half].chunks(5) {
        let r = ingest(&server, chunk.concat()).await.unwrap();
        let a: Value = json_with_status(r, StatusCode::ACCEPTED).await;
        pending = a["windows_pending"].as_u64().unwrap();
    }
    assert!(pending > 0);
    server.kill_9();
    let server = start();
    let page: Value = client
        .get(server.url(&format!("{base}/windows")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["windows_pending"].as_u64(), Some(pending), "{page}");
    let fit = client
        .post(server.url(&format!(
            "{base}/model/fit?n_estimators=30&seed=1&max_samples=8"
        )))
        .header("content-type", JSON_LINES)
        .body(lines.concat())
        .send()
        .await
        .unwrap();
    assert_eq!(fit.status(), StatusCode::CREATED);
    let r = ingest(&server, lines[half..].concat()).await.unwrap();
    let a: Value = json_with_status(r, StatusCode::ACCEPTED).await;
    assert_eq!(a["pending_scored"].as_u64(), Some(pending), "{a}");
    let r = client
        .post(server.url(&format!("{base}/flush")))
        .send()
        .await
        .unwrap();
    json_ok(r).await;
    let one: Value = client
        .post(server.url(&format!("{base}/score")))
        .header("content-type", JSON_LINES)
        .body(lines.concat())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page: Value = client
        .get(server.url(&format!("{base}/windows?limit=1000")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        as_map(page["windows"].as_array().unwrap()),
        as_map(one["results"].as_array().unwrap())
    );
}

/// A data directory written before windows were stored compactly (each row's body its JSON;
/// `tests/fixtures/windows-v1`, made by its `make.sh` with main's binary at 11c8802) keeps
/// its rows and lists them byte for byte as the old code did; windows closed after the
/// upgrade are stored compactly and list as the old code listed the same windows (all but
/// `closed_at`, the instant they closed), for a Zeek and a records detector.
#[tokio::test]
async fn windows_stored_as_json_before_the_compact_form_list_as_they_did() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/windows-v1");
    let read = |name: &str| std::fs::read_to_string(fixture.join(name)).unwrap();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut stack = vec![(fixture.join("data"), dir.path().to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push((entry.path(), target));
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let db = dir.path().join("alerts.db");
    let bodies = |compact: bool| -> usize {
        let raw = rusqlite::Connection::open(&db).unwrap();
        let like = if compact { "~%" } else { "{%" };
        raw.query_row(
            "SELECT COUNT(*) FROM windows WHERE body LIKE ?1",
            [like],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize
    };
    let settings = netsentinel::config::Settings::default();
    let app = support::app::oneshot_app_in(dir.clone(), settings).await;
    let listing = |name: &'static str| {
        let app = &app;
        async move {
            let answer = app
                .get(&format!("/v1/detectors/{name}/windows?limit=1000"))
                .await;
            assert_eq!(answer.status(), StatusCode::OK);
            answer.text().await.unwrap()
        }
    };
    // The old rows, as the old code listed them.
    assert_eq!(listing("z").await, read("z-before.json"));
    assert_eq!(listing("r").await, read("r-before.json"));
    let old = bodies(false);
    assert_eq!((old, bodies(true)), (114 + 40, 0));
    // New windows beside them: stored compactly, listed as the old code listed them.
    let header: String = String::from_utf8(shared_zeek("conn.log"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('#') && !l.starts_with("#close"))
        .map(|l| format!("{l}\n"))
        .collect();
    app.ingest(
        "/v1/detectors/z",
        TSV,
        format!("{header}{}", read("zeek-rest.log")),
    )
    .await;
    json_ok(app.post_empty("/v1/detectors/z/flush").await).await;
    app.ingest(
        "/v1/detectors/r",
        "application/x-ndjson",
        read("records-rest.ndjson"),
    )
    .await;
    assert_eq!(bodies(false), old, "the old rows are kept as they were");
    assert_eq!(bodies(true), (232 - 114) + 40);
    for name in ["z", "r"] {
        let after = read(&format!("{name}-after.json"));
        let now = listing(name).await;
        assert_ne!(now, after, "closed_at differs");
        assert_eq!(without_closed_at(&now), without_closed_at(&after), "{name}");
    }
}
