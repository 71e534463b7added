//! The memory budget: a request estimated to need more working memory than one request may use
//! is answered 413 `memory-budget` before it is read or generated; one that does not fit in what
//! the other requests left is answered 503 `overloaded` with `Retry-After`; what a request
//! reserved is given back when its work ends.

use std::time::Duration;

use crate::support::app::{TestApp, spawn_app_with};
use crate::support::eventually;
use crate::support::responses::assert_problem;
use reqwest::{StatusCode, header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(60);

/// Waits until `limits` holds no memory: every request's reservation was given back.
async fn all_memory_given_back(limits: &netsentinel::work::Limits) {
    eventually("the memory to be given back", BOUND, || {
        let free = limits.memory_reserved() == 0;
        async move { free.then_some(()) }
    })
    .await;
}

/// Waits until `limits` holds at least `bytes` (other requests' reservations).
async fn memory_held(limits: &netsentinel::work::Limits, bytes: u64) {
    eventually("the uploads to reserve their memory", BOUND, || {
        let n = limits.memory_reserved();
        async move { (n >= bytes).then_some(()) }
    })
    .await;
}

/// 64 MiB for the process, 24 MiB for one request.
async fn small_budget_app() -> TestApp {
    spawn_app_with(|s| {
        s.memory_budget_mib = 64;
        s.request_memory_budget_mib = 24;
        s.min_body_rate = 0;
    })
    .await
}

/// Starts `POST /v1/score` declaring a CSV body of `len` bytes and sends only its first line.
async fn declared_upload(app: &TestApp, len: usize) -> TcpStream {
    let addr = app.base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: {len}\r\n\r\nbytes_sent,bytes_received,connections,active_sessions\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Sends only the head of `POST /v1/score` declaring `len` bytes of `content_type` and reads
/// the answer the service gives before reading the body: its status, its head (lower-cased)
/// and its JSON body. (An HTTP client that also sends the body may see the connection closed
/// under it first: a broken pipe instead of the answer.)
async fn answer_before_body(
    app: &TestApp,
    content_type: &str,
    len: usize,
) -> (u16, String, serde_json::Value) {
    let addr = app.base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(BOUND, stream.read(&mut chunk))
            .await
            .expect("an answer before the body")
            .unwrap();
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let body_len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + body_len || n == 0 {
                let status = head[9..12].parse().unwrap();
                let body = serde_json::from_slice(&got[end + 4..]).unwrap_or_default();
                return (status, head, body);
            }
        }
        assert!(n > 0, "the connection closed without an answer: {text:?}");
    }
}

#[tokio::test]
async fn a_declared_body_over_the_request_budget_is_413_before_it_is_read() {
    let app = small_budget_app().await;
    app.fit_small(1).await;
    // 13 MiB of JSON costs an estimated 26 MiB: over 24.
    let (status, _, body) = answer_before_body(&app, "application/json", 13 << 20).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("memory-budget")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("24 MiB"),
        "{body}"
    );
    assert_eq!(app.state().limits().memory_reserved(), 0);
}

#[tokio::test]
async fn a_body_of_unknown_length_is_held_to_the_budget_as_it_arrives() {
    let app = small_budget_app().await;
    app.fit_small(1).await;
    // 16 MiB of CSV in chunks, no Content-Length: an estimated 32 MiB once it has arrived.
    let row = b"1,2,3,4\n".repeat(8192);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = std::iter::once(Ok(
        b"bytes_sent,bytes_received,connections,active_sessions\n".to_vec(),
    ))
    .chain((0..(16 << 20) / row.len()).map(|_| Ok(row.clone())))
    .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let answer = app
        .send(
            app.request(reqwest::Method::POST, "/v1/score")
                .header(header::CONTENT_TYPE, "text/csv")
                .body(body),
        )
        .await;
    assert_problem(answer, StatusCode::PAYLOAD_TOO_LARGE, "memory-budget").await;
    let limits = app.state().limits().clone();
    all_memory_given_back(&limits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_other_requests_hold_the_budget_a_request_is_503_with_retry_after() {
    let app = small_budget_app().await;
    app.fit_small(1).await;
    let limits = app.state().limits().clone();
    // Two uploads declaring 12 MiB of CSV (an estimated 24 MiB each) hold 48 of the 64 MiB.
    let first = declared_upload(&app, 12 << 20).await;
    let second = declared_upload(&app, 12 << 20).await;
    memory_held(&limits, 48 << 20).await;
    // A third would take 72: over the process budget for now.
    let (status, head, body) = answer_before_body(&app, "text/csv", 12 << 20).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("overloaded")),
        "{body}"
    );
    assert!(head.contains("\r\nretry-after: 2"), "{head}");
    assert!(limits.refused() >= 1);
    // When they go, the budget is free again and a request of that size is read.
    drop((first, second));
    all_memory_given_back(&limits).await;
    let records = app.seed_records().await;
    let csv = crate::support::data::to_csv(&records, &[]);
    let scored = app.post_csv("/v1/score", csv).await;
    assert_eq!(scored.status(), StatusCode::OK);
}

#[tokio::test]
async fn samples_and_charts_over_the_request_budget_are_413() {
    let app = small_budget_app().await;
    // A million sample records cost an estimated 305 MiB.
    let answer = app
        .post_json("/v1/samples", &json!({"n_records": 1_000_000}))
        .await;
    assert_problem(answer, StatusCode::PAYLOAD_TOO_LARGE, "memory-budget").await;
    let small = app
        .post_json("/v1/samples", &json!({"n_records": 1_000}))
        .await;
    assert_eq!(small.status(), StatusCode::OK);
    // A 4000 × 4000 chart costs an estimated 122 MiB.
    app.fit_small(1).await;
    let chart = app
        .get("/v1/chart.png?source=training&width=4000&height=4000")
        .await;
    assert_problem(chart, StatusCode::PAYLOAD_TOO_LARGE, "memory-budget").await;
    assert_eq!(app.state().limits().memory_reserved(), 0);
}

/// A Zeek TSV conn log of about `bytes` bytes. `new_hosts`: every line a connection of a new
/// host in a second of its own, so with `window=1s&group_by=id.orig_h` every line of ~55 bytes
/// opens a window of a new host (the reader's state grows by hundreds of bytes a line);
/// otherwise 20 hosts with a line every 5 ms (a window per 10 lines).
fn zeek_log(bytes: usize, new_hosts: bool) -> Vec<u8> {
    let mut s = String::from(
        "#separator \\x09\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n",
    );
    let mut i = 0usize;
    while s.len() < bytes {
        let (millis, host) = if new_hosts {
            (i * 1000, i)
        } else {
            (i * 5, i % 20)
        };
        s.push_str(&format!(
            "{}.{:03}000\tC{i}\t10.{}.{}.{}\t8.8.8.8\t53\t{}\t{}\n",
            1_700_000_000 + millis / 1000,
            millis % 1000,
            (host >> 16) & 255,
            (host >> 8) & 255,
            host & 255,
            100 + i % 7,
            200 + i % 11,
        ));
        i += 1;
    }
    s.into_bytes()
}

const ZEEK_SCORE: &str = "/v1/score?window=1s&group_by=id.orig_h";

/// [`small_budget_app`] whose batches raise no alert, so what is charged is the reader's.
async fn small_budget_app_without_alerts() -> TestApp {
    spawn_app_with(|s| {
        s.memory_budget_mib = 64;
        s.request_memory_budget_mib = 24;
        s.min_body_rate = 0;
        s.alert_rate = 1.0;
        s.alert_severity = 100;
    })
    .await
}

fn zeek_score(app: &TestApp, key: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    app.request(reqwest::Method::POST, ZEEK_SCORE)
        .header(header::CONTENT_TYPE, "text/zeek-tsv")
        .header("Idempotency-Key", key)
        .body(body)
}

/// A Zeek log's reader state grows with its windows and hosts, not its bytes: it is charged as
/// it grows, so a 4 MiB log whose every line opens a window of a new host (some 75,000 windows,
/// far more than its body's cost) is 413 `memory-budget`, leaving nothing behind, while an
/// ordinary log of the same size passes under the same budget.
#[tokio::test]
async fn a_zeek_log_whose_windows_outgrow_the_request_budget_is_413() {
    let app = small_budget_app_without_alerts().await;
    app.fit_small(1).await;
    let limits = app.state().limits().clone();
    let hostile = zeek_log(4 << 20, true);
    let ordinary = zeek_log(hostile.len(), false);
    let answer = app.send(zeek_score(&app, "new-hosts", hostile)).await;
    let body = assert_problem(answer, StatusCode::PAYLOAD_TOO_LARGE, "memory-budget").await;
    assert!(
        body["detail"].as_str().unwrap().contains("24 MiB"),
        "{body}"
    );
    assert_eq!(limits.refused(), 1);
    all_memory_given_back(&limits).await;
    // The key of the refused request was not kept: the same key with another body runs.
    let answer = app.send(zeek_score(&app, "new-hosts", ordinary)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers().get("idempotency-replayed").is_none());
    let scored: serde_json::Value = answer.json().await.unwrap();
    let windows = scored["results"].as_array().unwrap().len();
    assert!((5_000..20_000).contains(&windows), "{windows} windows");
    assert_eq!(
        limits.refused(),
        1,
        "the ordinary log was charged within its budget"
    );
    all_memory_given_back(&limits).await;
}

/// With most of the process budget held by other requests, a Zeek log whose state would fit
/// the request budget but not what is left is 503 `overloaded` with `Retry-After` as its state
/// grows; when the others are gone it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeek_log_whose_state_does_not_fit_what_is_left_is_503_with_retry_after() {
    let app = small_budget_app_without_alerts().await;
    app.fit_small(1).await;
    let limits = app.state().limits().clone();
    // Three uploads declaring 10 MiB of CSV (an estimated 20 MiB each) hold 60 of the 64 MiB.
    let uploads = [
        declared_upload(&app, 10 << 20).await,
        declared_upload(&app, 10 << 20).await,
        declared_upload(&app, 10 << 20).await,
    ];
    memory_held(&limits, 60 << 20).await;
    // 1.5 MiB of new hosts' windows: its body (3 MiB) fits in the 4 MiB left, its state (some
    // 28,000 windows, under the 24 MiB a request may use) does not.
    let hostile = zeek_log(3 << 19, true);
    let answer = app.send(zeek_score(&app, "busy", hostile.clone())).await;
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    assert_problem(answer, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_eq!(retry_after.unwrap(), "2");
    drop(uploads);
    all_memory_given_back(&limits).await;
    let answer = app.send(zeek_score(&app, "busy", hostile)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    all_memory_given_back(&limits).await;
}

/// An alert of many entities is split into an incident per entity, each with its records, and
/// stored: it costs far more than the batch, so it is charged before that (413 over the
/// request budget, and nothing is stored), while the same log raising no alert is read.
#[tokio::test]
async fn an_alert_of_more_entities_than_the_budget_holds_is_413_and_stores_nothing() {
    // Some 9,000 windows of new hosts: a small state, but an alert of thousands of entities
    // (the cap on an alert's entities raised past them).
    let hostile = zeek_log(1 << 19, true);
    let app = spawn_app_with(|s| {
        s.memory_budget_mib = 64;
        s.request_memory_budget_mib = 24;
        s.min_body_rate = 0;
        s.max_alert_entities = 100_000;
    })
    .await;
    app.fit_small(1).await;
    let answer = app.send(zeek_score(&app, "alert", hostile.clone())).await;
    assert_problem(answer, StatusCode::PAYLOAD_TOO_LARGE, "memory-budget").await;
    assert!(app.alerts("").await.is_empty(), "no incident was stored");
    let limits = app.state().limits().clone();
    all_memory_given_back(&limits).await;

    let quiet = small_budget_app_without_alerts().await;
    quiet.fit_small(1).await;
    let answer = quiet.send(zeek_score(&quiet, "alert", hostile)).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

/// A service whose alerts keep at most `cap` entities, with the detector `name` (Zeek,
/// one-second windows by source host) fitted. Each test names its own detector, so its
/// /metrics counters are its own.
async fn capped_app(name: &str, cap: u64) -> TestApp {
    let app = spawn_app_with(|s| s.max_alert_entities = cap).await;
    let source = json!({"format": "zeek", "window": "1s", "group_by": "id.orig_h"});
    zeek_detector(&app, name, source).await;
    app
}

/// Creates the detector `name` reading `source`, fits it a small model, and returns its base
/// path.
async fn zeek_detector(app: &TestApp, name: &str, source: serde_json::Value) -> String {
    let put = app
        .send(
            app.request(reqwest::Method::PUT, &format!("/v1/detectors/{name}"))
                .json(&json!({ "source": source })),
        )
        .await;
    assert!(put.status().is_success(), "{}", put.status());
    let fit = app
        .post_json(
            &format!("/v1/detectors/{name}/model/fit"),
            &json!({"generate": {}, "params": {"n_estimators": 20, "seed": 1}}),
        )
        .await;
    assert_eq!(fit.status(), StatusCode::CREATED);
    format!("/v1/detectors/{name}")
}

/// The anomalous entities of scored windows, most anomalous first (an entity by its highest
/// score; of equal scores, the one whose window came first), with their anomalous windows.
fn ranked_entities(results: &[serde_json::Value]) -> Vec<(String, usize)> {
    let mut best: Vec<(String, f64, usize, usize)> = Vec::new();
    let mut at = std::collections::HashMap::new();
    for (i, r) in results.iter().enumerate() {
        if r["is_anomaly"] != true {
            continue;
        }
        let entity = r["entity"].as_str().expect("an entity").to_owned();
        let score = r["score"].as_f64().unwrap();
        match at.get(&entity) {
            Some(&k) => {
                let e: &mut (String, f64, usize, usize) = &mut best[k];
                if score > e.1 {
                    (e.1, e.2) = (score, i);
                }
                e.3 += 1;
            }
            None => {
                at.insert(entity.clone(), best.len());
                best.push((entity, score, i, 1));
            }
        }
    }
    best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    best.into_iter().map(|(e, _, _, n)| (e, n)).collect()
}

fn omitted_counter(metrics: &str, name: &str, detector: &str) -> u64 {
    let prefix = format!("{name}{{detector=\"{detector}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A request whose alert names more anomalous entities than `--max-alert-entities` stores
/// exactly that many incidents, those of the highest scores, each marked with what was left
/// out; the answer still lists every window, and /metrics counts what was left out.
#[tokio::test]
async fn an_alert_of_more_entities_than_the_cap_keeps_the_highest_scoring_ones() {
    const CAP: usize = 5;
    const CAPPED: &str = "capped-score";
    let app = capped_app(CAPPED, CAP as u64).await;
    let log = zeek_log(64 << 10, true);
    let lines = log.iter().filter(|&&b| b == b'\n').count() - 3;
    let answer = app
        .send(
            app.request(
                reqwest::Method::POST,
                &format!("/v1/detectors/{CAPPED}/score"),
            )
            .header(header::CONTENT_TYPE, "text/zeek-tsv")
            .body(log),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let scored: serde_json::Value = answer.json().await.unwrap();
    let results = scored["results"].as_array().unwrap();
    assert_eq!(results.len(), lines, "every window is answered");
    let ranked = ranked_entities(results);
    assert!(
        ranked.len() > 10 * CAP,
        "{} anomalous entities",
        ranked.len()
    );
    let left_out = &ranked[CAP..];
    let expected_omitted = json!({
        "entities": left_out.len(),
        "records": left_out.iter().map(|(_, n)| n).sum::<usize>(),
    });
    assert_eq!(
        scored["alert"]["omitted"], expected_omitted,
        "{}",
        scored["alert"]
    );

    let stored = app.alerts(&format!("?detector={CAPPED}&limit=100")).await;
    let mut got: Vec<&str> = stored
        .iter()
        .map(|a| a["entity"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = ranked[..CAP].iter().map(|(e, _)| e.as_str()).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "the incidents are the highest-scoring entities'");
    for a in &stored {
        assert_eq!(a["omitted"], expected_omitted, "{a}");
    }

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        omitted_counter(&metrics, "netsentinel_alert_entities_omitted_total", CAPPED),
        left_out.len() as u64
    );
    assert_eq!(
        omitted_counter(&metrics, "netsentinel_alert_records_omitted_total", CAPPED),
        expected_omitted["records"].as_u64().unwrap()
    );
}

/// Continuous ingest decides its alert as `score` does: the windows one call closes raise
/// incidents for at most `--max-alert-entities` entities, marked with what was left out,
/// while every window is still scored and stored.
#[tokio::test]
async fn an_ingest_call_closing_more_anomalous_entities_than_the_cap_keeps_the_cap() {
    const CAP: usize = 4;
    const CAPPED: &str = "capped-ingest";
    let app = capped_app(CAPPED, CAP as u64).await;
    let log = zeek_log(64 << 10, true);
    let lines = log.iter().filter(|&&b| b == b'\n').count() - 3;
    let base = format!("/v1/detectors/{CAPPED}");
    let answer = app
        .ingest(&base, "text/zeek-tsv", String::from_utf8(log).unwrap())
        .await;
    let closed = answer["windows_closed"].as_u64().unwrap() as usize;
    assert!(closed + 1 >= lines && closed < lines, "{closed} of {lines}");
    let alerts = answer["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), CAP, "{answer}");
    let omitted = alerts[0]["omitted"]["entities"].as_u64().unwrap();
    assert!(omitted > 10 * CAP as u64, "{}", alerts[0]);
    for a in alerts {
        assert_eq!(a["event"], "opened");
        assert_eq!(a["omitted"], alerts[0]["omitted"]);
    }
    let windows = app.windows(&base, 1000).await;
    assert_eq!(windows.len(), closed, "every closed window is stored");
    let stored = app.alerts(&format!("?detector={CAPPED}&limit=100")).await;
    assert_eq!(stored.len(), CAP);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        omitted_counter(&metrics, "netsentinel_alert_entities_omitted_total", CAPPED),
        omitted
    );
}

/// Creates the Zeek detector `name` (one-minute windows by source host, kept open for a day of
/// event time) with a small model, and returns its base path.
async fn open_windows_detector(app: &TestApp, name: &str) -> String {
    let source = json!({"format": "zeek", "window": "1m", "group_by": "id.orig_h",
                        "allowed_lateness": "24h"});
    zeek_detector(app, name, source).await
}

async fn post_ingest(app: &TestApp, base: &str, body: Vec<u8>) -> reqwest::Response {
    app.post_raw(&format!("{base}/ingest"), Some("text/zeek-tsv"), body)
        .await
}

/// A detector's windows as flushed and stored: (start, entity, sums), sorted.
async fn flushed_windows(app: &TestApp, base: &str) -> Vec<(String, String, String)> {
    let flushed = app.post_empty(&format!("{base}/flush")).await;
    assert_eq!(flushed.status(), StatusCode::OK);
    let mut out: Vec<(String, String, String)> = app
        .windows(base, 1000)
        .await
        .iter()
        .map(|w| {
            let sums = format!(
                "{} {} {} {}",
                w["bytes_sent"], w["bytes_received"], w["connections"], w["active_sessions"]
            );
            (w["timestamp"].to_string(), w["entity"].to_string(), sums)
        })
        .collect();
    out.sort();
    out
}

/// What a detector's open windows hold is charged as a call grows them: a call of new hosts
/// whose windows would take more than a request may use is 413 `memory-budget`, and nothing of
/// it is kept (the next call and a flush give the windows of a detector that never saw it);
/// the open windows kept hold the process budget until they close.
#[tokio::test]
async fn an_ingest_call_whose_open_windows_outgrow_the_request_budget_is_413_and_keeps_nothing() {
    let app = spawn_app_with(|s| {
        s.memory_budget_mib = 64;
        s.request_memory_budget_mib = 8;
        s.min_body_rate = 0;
    })
    .await;
    let limits = app.state().limits().clone();
    let refused = open_windows_detector(&app, "book-refused").await;
    let reference = open_windows_detector(&app, "book-reference").await;
    let ordinary = zeek_log(64 << 10, false);
    // ~17,000 windows of new hosts: a 1 MiB body (2 MiB charged), some 12 MiB of windows.
    let hostile = zeek_log(1 << 20, true);
    let answer = post_ingest(&app, &refused, hostile).await;
    let body = assert_problem(answer, StatusCode::PAYLOAD_TOO_LARGE, "memory-budget").await;
    assert!(body["detail"].as_str().unwrap().contains("8 MiB"), "{body}");
    all_memory_given_back(&limits).await;

    for base in [&refused, &reference] {
        let answer = post_ingest(&app, base, ordinary.clone()).await;
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }
    // Both books' open windows are held against the process budget while kept.
    eventually("the requests' own reservations to end", BOUND, || {
        let n = limits.memory_reserved();
        async move { (n > 0 && n < 4 << 20).then_some(()) }
    })
    .await;
    let kept = flushed_windows(&app, &refused).await;
    assert!(!kept.is_empty());
    assert_eq!(kept, flushed_windows(&app, &reference).await);
    all_memory_given_back(&limits).await;
}

/// With most of the process budget held by other requests, an ingest call whose open windows
/// would fit the request budget but not what is left is 503 `overloaded` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_call_whose_open_windows_do_not_fit_what_is_left_is_503() {
    let app = small_budget_app().await;
    let limits = app.state().limits().clone();
    let base = open_windows_detector(&app, "book-busy").await;
    app.fit_small(1).await;
    let uploads = [
        declared_upload(&app, 10 << 20).await,
        declared_upload(&app, 10 << 20).await,
        declared_upload(&app, 10 << 20).await,
    ];
    memory_held(&limits, 60 << 20).await;
    // 256 KiB of new hosts: its body (512 KiB charged) fits in the 4 MiB left, its ~4,000
    // windows (some 3 MiB more) do not.
    let hostile = zeek_log(256 << 10, true);
    let answer = post_ingest(&app, &base, hostile.clone()).await;
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    assert_problem(answer, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_eq!(retry_after.unwrap(), "2");
    drop(uploads);
    all_memory_given_back(&limits).await;
    let answer = post_ingest(&app, &base, hostile).await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
}

/// `--max-open-window-bytes` bounds what one detector's open windows may hold: a call that
/// would pass it is 503 `overloaded` with `Retry-After`, nothing of it kept, while calls
/// within it go on.
#[tokio::test]
async fn an_ingest_call_past_the_open_window_bound_is_503_and_keeps_nothing() {
    let app = spawn_app_with(|s| s.max_open_window_bytes = 2 << 20).await;
    let bounded = open_windows_detector(&app, "book-bounded").await;
    let reference = open_windows_detector(&app, "book-unbounded-ref").await;
    let ordinary = zeek_log(64 << 10, false);
    let answer = post_ingest(&app, &bounded, ordinary.clone()).await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    // ~4,500 windows of new hosts: some 3 MiB.
    let hostile = zeek_log(256 << 10, true);
    let answer = post_ingest(&app, &bounded, hostile).await;
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    let body = assert_problem(answer, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("NETSENTINEL_MAX_OPEN_WINDOW_BYTES"),
        "{body}"
    );
    assert_eq!(retry_after.unwrap(), "60");
    let later = zeek_log(128 << 10, false);
    for base in [&bounded, &reference] {
        if base == &reference {
            let answer = post_ingest(&app, base, ordinary.clone()).await;
            assert_eq!(answer.status(), StatusCode::ACCEPTED);
        }
        let answer = post_ingest(&app, base, later.clone()).await;
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }
    let kept = flushed_windows(&app, &bounded).await;
    assert!(!kept.is_empty());
    assert_eq!(kept, flushed_windows(&app, &reference).await);
}
