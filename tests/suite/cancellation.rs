//! Work that outlives its request: a client that goes away, a request that times out, an
//! answer streamed to a slow reader. The work stops (counted by the service's limits as
//! cancelled and stopped) and holds its work slot until it really ends.
//!
//! The clients talk raw HTTP/1.1 over loopback; every wait is bounded by a generous limit.

use std::time::Duration;

use crate::support::app::{TestApp, spawn_app_with};
use crate::support::eventually;
use crate::support::responses::assert_problem;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bound on waits for the service to act, far beyond what the work takes.
const BOUND: Duration = Duration::from_secs(60);

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base_url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("a connection")
}

/// Sends a whole JSON request and returns the connection without reading the answer.
async fn send_json(app: &TestApp, path: &str, body: &serde_json::Value) -> TcpStream {
    send(app, path, "application/json", &body.to_string()).await
}

/// Sends a whole request with a `content_type` body and returns the connection without
/// reading the answer.
async fn send(app: &TestApp, path: &str, content_type: &str, body: &str) -> TcpStream {
    let mut stream = connect(app).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    stream
}

/// Waits until no work holds a slot or memory any more.
async fn all_work_ended(app: &TestApp) {
    let limits = app.state().limits().clone();
    eventually(
        "every work slot and reservation to be given back",
        BOUND,
        || {
            let done = limits.slots_in_use() == 0 && limits.memory_reserved() == 0;
            async move { done.then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_sample_requests_stop_their_work() {
    let app = spawn_app_with(|_| {}).await;
    let limits = app.state().limits().clone();
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(send_json(&app, "/v1/samples", &json!({"n_records": 1_000_000})).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(clients);
    all_work_ended(&app).await;
    // The requests were cancelled, and their generation stopped before it was done.
    assert!(limits.cancelled() >= 1, "cancelled: {}", limits.cancelled());
    assert!(limits.stopped() >= 1, "stopped: {}", limits.stopped());
    // The service serves as before.
    let small = app
        .post_json("/v1/samples", &json!({"n_records": 10}))
        .await;
    assert_eq!(small.status(), StatusCode::OK);
}

/// A fit of 10,000 trees over 100,000 generated records: seconds of work.
fn long_fit() -> serde_json::Value {
    json!({
        "generate": {"n_records": 100_000},
        "params": {"n_estimators": 10_000, "max_samples": 400, "seed": 7}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_fit_stops_growing_trees_and_changes_no_model() {
    let app = spawn_app_with(|_| {}).await;
    let limits = app.state().limits().clone();
    let version = app.fit_small(1).await["version"].as_u64().unwrap();
    let client = send_json(&app, "/v1/model/fit", &long_fit()).await;
    // Long enough for the fit to be under way on a loaded machine (it runs for minutes), so
    // what is tested is the fit noticing, not a request dropped before its work began.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(client);
    all_work_ended(&app).await;
    assert_eq!(limits.cancelled(), 1);
    assert_eq!(limits.stopped(), 1, "the fit noticed and stopped");
    assert_eq!(app.active_version().await, Some(version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_fit_is_cancelled_and_answered_503() {
    let app = spawn_app_with(|s| s.request_timeout_secs = 1).await;
    let limits = app.state().limits().clone();
    let answer = app.post_json("/v1/model/fit", &long_fit()).await;
    assert_problem(answer, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
    all_work_ended(&app).await;
    assert_eq!(limits.cancelled(), 1);
    assert_eq!(limits.stopped(), 1, "the fit noticed and stopped");
    assert_eq!(app.active_version().await, None, "no model was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_holds_its_work_slot_until_its_last_byte() {
    let app = spawn_app_with(|s| {
        s.max_concurrency = 1;
        s.min_body_rate = 0;
    })
    .await;
    app.fit_small(1).await;
    // 150,000 records: the answer streams (over 65,536 records) and is far larger than what
    // the sockets buffer.
    let records = app.seed_records().await;
    let rows: Vec<_> = records.iter().cycle().take(150_000).cloned().collect();
    let body = crate::support::data::to_csv(&rows, &[]);
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/score?explain=all HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // The answer has started ...
    let mut first = [0u8; 12];
    tokio::time::timeout(BOUND, stream.read_exact(&mut first))
        .await
        .expect("the answer starts within the bound")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // ... and while it is not read, its slot is taken: other requests are shed.
    let shed = app.get("/v1/model").await;
    assert_problem(shed, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    // Once it is read to its end, the slot is free again.
    let mut rest = Vec::new();
    tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            rest.extend_from_slice(&buf[..n]);
            // The chunked answer's last chunk.
            if n == 0 || rest.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await
    .expect("the answer ends within the bound");
    assert!(rest.len() > 1 << 20, "{} bytes", rest.len());
    eventually("the slot to be free", BOUND, || async {
        (app.get("/v1/model").await.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// `n` of the seed profile's records as CSV.
async fn seed_csv(app: &TestApp, n: usize) -> String {
    let records = app.seed_records().await;
    let rows: Vec<_> = records.iter().cycle().take(n).cloned().collect();
    crate::support::data::to_csv(&rows, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_score_stops_between_blocks_and_keeps_nothing() {
    let app = spawn_app_with(|_| {}).await;
    let limits = app.state().limits().clone();
    // 10,000 small trees: scoring 100,000 records walks 1e9 trees (tens of seconds here),
    // while reading the 6 MB body takes a fraction of a second.
    app.fit(json!({
        "generate": {"n_records": 2000},
        "params": {"n_estimators": 10_000, "max_samples": 64, "seed": 7}
    }))
    .await;
    let body = seed_csv(&app, 100_000).await;
    let client = send(&app, "/v1/score?explain=false", "text/csv", &body).await;
    // The body is read and parsed by now (on a loaded machine too), and its scoring is under
    // way: the first 65,536 records on the rayon pool, the rest on the parser's thread.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(client);
    all_work_ended(&app).await;
    assert_eq!(limits.cancelled(), 1);
    // Cancelled after its body was read, the score is only noticed by the checks between its
    // blocks (none is made after it ends): it stopped there.
    assert!(limits.stopped() >= 1, "stopped: {}", limits.stopped());
    // Nothing of the batch was kept.
    let chart = app.get("/v1/chart.png").await;
    assert_problem(chart, StatusCode::CONFLICT, "nothing-to-draw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_charts_stop_while_they_draw() {
    let app = spawn_app_with(|_| {}).await;
    let limits = app.state().limits().clone();
    app.fit_small(1).await;
    let body = seed_csv(&app, 200_000).await;
    let scored = app
        .post_csv("/v1/score?explain=false&only_anomalies=true", body)
        .await;
    assert_eq!(scored.status(), StatusCode::OK);
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /v1/chart.png?width=4000&height=4000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        clients.push(stream);
    }
    // Twelve 4000×4000 charts of 200,000 points share two cores: each takes seconds, so 50 ms
    // in they are all being drawn.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(clients);
    all_work_ended(&app).await;
    // Every chart cancelled noticed it and stopped: before drawing, between its panels or
    // before its encoding, not after a whole bitmap was drawn and encoded for nobody.
    assert!(limits.cancelled() >= 1, "cancelled: {}", limits.cancelled());
    assert_eq!(limits.stopped(), limits.cancelled());
    let small = app.get("/v1/chart.png?width=400&height=300").await;
    assert_eq!(small.status(), StatusCode::OK);
}
