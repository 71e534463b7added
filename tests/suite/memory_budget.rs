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
    eventually("the reservation to be given back", BOUND, || {
        let free = limits.memory_reserved() == 0;
        async move { free.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_other_requests_hold_the_budget_a_request_is_503_with_retry_after() {
    let app = small_budget_app().await;
    app.fit_small(1).await;
    let limits = app.state().limits().clone();
    // Two uploads declaring 12 MiB of CSV (an estimated 24 MiB each) hold 48 of the 64 MiB.
    let first = declared_upload(&app, 12 << 20).await;
    let second = declared_upload(&app, 12 << 20).await;
    eventually("the uploads to reserve their memory", BOUND, || {
        let n = limits.memory_reserved();
        async move { (n >= 48 << 20).then_some(()) }
    })
    .await;
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
    eventually("the uploads' memory to be given back", BOUND, || {
        let n = limits.memory_reserved();
        async move { (n == 0).then_some(()) }
    })
    .await;
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
