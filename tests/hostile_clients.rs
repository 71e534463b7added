//! Clients that misbehave on purpose or by accident: half-sent request heads, idle and
//! trickling connections, slow uploads holding every work slot, forged request ids, odd paths;
//! and what the service hands on (CEF and NDJSON exports, echoed CSV strings).
//!
//! The socket tests talk raw HTTP/1.1 over loopback; every wait is bounded by a generous limit.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::app::{TestApp, oneshot_app, oneshot_app_with, spawn_app_with};
use support::eventually;
use support::responses::{assert_problem, json_ok};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bound on waits for the service to act, far beyond the timeouts these tests configure.
const BOUND: Duration = Duration::from_secs(30);

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base_url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("a connection")
}

/// Reads until the server closes the connection; what it sent meanwhile.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut all))
        .await
        .expect("the server closed the connection within the bound")
        .ok();
    all
}

#[tokio::test]
async fn a_half_sent_request_head_is_dropped_after_the_header_timeout() {
    let app = spawn_app_with(|s| s.header_read_timeout_secs = 1).await;
    let mut stream = connect(&app).await;
    stream.write_all(b"GET /healthz HTT").await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // A connection that never sends a byte is dropped the same way.
    let mut silent = connect(&app).await;
    assert!(read_to_close(&mut silent).await.is_empty());
    // The service itself is fine.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|s| {
        s.keep_alive_timeout_secs = 1;
        s.header_read_timeout_secs = 600;
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_half_sent_connections_do_not_stop_healthz() {
    let app = spawn_app_with(|s| s.header_read_timeout_secs = 600).await;
    let mut held = Vec::new();
    for _ in 0..500 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"POST /v1/score HTTP/1.1\r\nHo")
            .await
            .unwrap();
        held.push(stream);
    }
    let client = reqwest::Client::builder().timeout(BOUND).build().unwrap();
    for _ in 0..3 {
        let health = client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_waiting_connections_make_room_for_new_ones() {
    const CAP: usize = 20;
    const OPENED: usize = 150;
    // Half-sent heads would hold their connections for ten minutes: only the cap frees them.
    let app = spawn_app_with(|s| {
        s.max_connections = CAP as u64;
        s.header_read_timeout_secs = 600;
    })
    .await;
    let closed = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..OPENED {
        let mut stream = connect(&app).await;
        stream.write_all(b"GET /v1/mo").await.unwrap();
        let closed = closed.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            if let Ok(0) | Err(_) = stream.read(&mut buf).await {
                closed.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // A probe gets in (well within the ten-minute header timeout) ...
    let client = reqwest::Client::builder().timeout(BOUND).build().unwrap();
    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // ... and the oldest waiting connections were closed to keep the count near the cap.
    let at_least = OPENED - CAP - 64;
    eventually("connections over the cap to be closed", BOUND, || {
        let n = closed.load(Ordering::SeqCst);
        async move { (n >= at_least).then_some(()) }
    })
    .await;
    assert!(
        closed.load(Ordering::SeqCst) < OPENED,
        "connections within the cap stay open"
    );
    for r in readers {
        r.abort();
    }
}

/// Starts `POST /v1/score` with a body that never finishes.
async fn slow_upload(app: &TestApp) -> TcpStream {
    let mut stream = connect(app).await;
    stream
        .write_all(
            b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n\
              Content-Length: 1000000\r\n\r\nbytes_sent,bytes_received,connections,active_sessions\n1,",
        )
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_holding_every_work_slot_leave_the_probes_answering() {
    let app = spawn_app_with(|s| {
        s.min_body_rate = 0;
        s.max_concurrency = 64;
    })
    .await;
    let version = app.fit_small(1).await["version"].as_u64().unwrap();
    let mut uploads = Vec::new();
    for _ in 0..64 {
        uploads.push(slow_upload(&app).await);
    }
    // Wait for the server to take every upload's head without asking through a work slot: a
    // request polled here while the last uploads are still on their way would take the slot
    // one of them needs, that upload would be shed, and the slots would never fill.
    let limits = app.state().limits().clone();
    eventually("the uploads to take every work slot", BOUND, || {
        let n = limits.slots_in_use();
        async move { (n == 64).then_some(()) }
    })
    .await;
    // Every work slot is taken: the API sheds ...
    let busy = app.get("/v1/model").await;
    assert_problem(busy, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    let shed = app.get("/v1/alerts").await;
    assert_problem(shed, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    // ... and the probes answer as usual.
    for _ in 0..3 {
        let health = json_ok(app.get("/healthz").await).await;
        assert_eq!(health["status"], "ok");
        let ready = json_ok(app.get("/readyz").await).await;
        assert_eq!(ready["model_version"].as_u64(), Some(version));
        let metrics = app.get("/metrics").await;
        assert_eq!(metrics.status(), StatusCode::OK);
    }
    drop(uploads);
    eventually("the work slots to free", BOUND, || async {
        (app.get("/v1/model").await.status() == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_trickling_body_is_cut_with_408() {
    let app = spawn_app_with(|s| {
        s.min_body_rate = 1000;
        s.min_body_rate_window_secs = 1;
    })
    .await;
    app.fit_small(1).await;
    let mut stream = slow_upload(&app).await;
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("\"request-timeout\""),
        "{answer}"
    );
    // A body sent at once is not affected.
    let batch = app.seed_records().await;
    app.score(&batch).await;
}

#[tokio::test]
async fn every_answer_says_nosniff() {
    let app = oneshot_app().await;
    for response in [
        app.get("/healthz").await,
        app.get("/readyz").await,
        app.get("/v1/model").await,
        app.get("/nowhere").await,
        app.post_raw("/v1/score", Some("image/png"), "x").await,
    ] {
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{}",
            response.url()
        );
    }
}

#[tokio::test]
async fn request_ids_that_could_forge_log_fields_are_replaced() {
    let app = oneshot_app().await;
    let with_id = |id: &str| {
        app.send(
            app.request(Method::GET, "/v1/model")
                .header("x-request-id", id),
        )
    };
    let kept = with_id("trace-01:abc.DEF_9").await;
    assert_eq!(kept.headers()["x-request-id"], "trace-01:abc.DEF_9");
    let body = assert_problem(kept, StatusCode::NOT_FOUND, "no-model").await;
    assert_eq!(body["request_id"], "trace-01:abc.DEF_9");

    for forged in [
        "x\" level=error msg=\"forged",
        "a b",
        &"a".repeat(129),
        "\u{1b}[31mred",
    ] {
        let Ok(value) = header::HeaderValue::from_bytes(forged.as_bytes()) else {
            continue;
        };
        let response = app
            .send(
                app.request(Method::GET, "/v1/model")
                    .header("x-request-id", value),
            )
            .await;
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(id, forged);
        assert!(
            id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
            "{id}"
        );
        let body = assert_problem(response, StatusCode::NOT_FOUND, "no-model").await;
        assert_eq!(body["request_id"], id.as_str());
    }
}

#[tokio::test]
async fn every_error_is_problem_json() {
    let app = oneshot_app_with(|s| s.max_body_bytes = 4096).await;
    assert_problem(
        app.get("/no/such/path").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    assert_problem(
        app.send(app.request(Method::DELETE, "/v1/model")).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
    // A path segment that is not UTF-8 once decoded.
    let body = assert_problem(
        app.get("/v1/alerts/%FF").await,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    assert!(body["request_id"].is_string(), "{body}");
    // Over the body limit, declared and undeclared (chunked).
    let big = vec![b'1'; 8192];
    assert_problem(
        app.post_csv("/v1/model/fit", big.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    )
    .await;
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        big.chunks(1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    ));
    assert_problem(
        app.post_raw("/v1/model/fit", Some("text/csv"), chunked)
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    )
    .await;
}

#[tokio::test]
async fn a_problem_that_quotes_a_huge_field_name_keeps_its_body() {
    let app = oneshot_app().await;
    let huge = "k".repeat(200_000);
    let response = app
        .post_json("/v1/model/fit", &json!({"generate": {}, huge.as_str(): 1}))
        .await;
    let body = assert_problem(response, StatusCode::BAD_REQUEST, "invalid-parameter").await;
    assert!(body["request_id"].is_string(), "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.chars().count() <= 2049, "{}", detail.len());
}

#[tokio::test]
async fn unauthorized_requests_are_counted_in_metrics() {
    let app = oneshot_app_with(|s| {
        s.api_keys =
            Some(netsentinel::auth::ApiKeys::parse("read:reader-secret-key-0001").expect("a key"));
    })
    .await;
    let count = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("http_requests_total{")
                    && l.contains("route=\"/v1/alerts/{id}\"")
                    && l.contains("status=\"401\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = count(&app.get("/metrics").await.text().await.unwrap());
    for _ in 0..3 {
        let response = app.get("/v1/alerts/some-id").await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let after = count(&app.get("/metrics").await.text().await.unwrap());
    assert!(after >= before + 3, "401s counted: {before} -> {after}");
}

#[tokio::test]
async fn csv_string_columns_that_look_like_numbers_are_echoed_as_written() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let csv = "bytes_sent,bytes_received,connections,active_sessions,host,src_ip\n\
               1000000,1200000,40,20,web-1,10.0.0.1\n\
               1000000,1200000,40,20,123,1\n\
               1000000,1200000,40,20,nan,inf\n";
    let response = app.post_csv("/v1/score?explain=false", csv).await;
    let body = json_ok(response).await;
    let results = body["results"].as_array().unwrap();
    let echoed: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["host"].as_str().unwrap(), r["src_ip"].as_str().unwrap()))
        .collect();
    assert_eq!(
        echoed,
        [("web-1", "10.0.0.1"), ("123", "1"), ("nan", "inf")]
    );
}

/// Seed records with a hostile `host` on every one; scoring them raises an alert.
async fn alert_with_host(app: &TestApp, host: &str) {
    let mut batch = app.seed_records().await;
    for r in &mut batch {
        r["host"] = Value::from(host);
    }
    let body = app.score(&batch).await;
    assert!(body["alert"].is_object(), "the bursts raise an alert");
}

#[tokio::test]
async fn exports_carry_no_raw_line_breaks_or_control_characters() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let host = format!(
        "db\u{0}\u{1b}[31m\u{7}\u{b}\u{c}\u{7f}\u{85}\u{9b}\u{2028}\u{2029}\n\r|=x{}",
        "h".repeat(5000)
    );
    alert_with_host(&app, &host).await;

    let cef = app.get("/v1/alerts?format=cef").await.text().await.unwrap();
    let lines: Vec<&str> = cef.split_terminator('\n').collect();
    assert_eq!(lines.len(), 1, "one alert, one line: {cef:?}");
    let line = lines[0];
    assert!(
        !line
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
        "{line:?}"
    );
    let shost = line
        .split(" shost=")
        .nth(1)
        .and_then(|rest| rest.split(" out=").next())
        .expect("the host is in the line");
    assert!(shost.starts_with("db "), "{shost:?}");
    assert!(shost.contains("\\n\\r|\\=x"), "{shost:?}");
    // Capped twice over: the stored echo at 1 KiB (with its marker), the CEF value at 1,023
    // characters (with `...`); whichever bites first shows.
    assert!(
        (shost.ends_with("...") || shost.contains("[truncated from"))
            && shost.chars().count() <= 1023 + 8,
        "capped: {} chars: {shost:?}",
        shost.chars().count()
    );

    for format in ["ecs", "ocsf", "splunk_hec"] {
        let ndjson = app
            .get(&format!("/v1/alerts?format={format}"))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            !ndjson.contains(['\u{2028}', '\u{2029}', '\u{85}']),
            "{format}: raw line separators"
        );
        let docs: Vec<Value> = ndjson
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
            .collect();
        assert_eq!(docs.len(), 1, "{format}");
        assert!(
            docs[0].to_string().contains(&host[..2]),
            "{format}: the host is still there"
        );
        // Escaped, not dropped: the same characters come back when parsed.
        assert!(
            serde_json::to_string(&docs[0])
                .unwrap()
                .contains('\u{2028}'),
            "{format}"
        );
    }
}
