//! Content codings over HTTP: gzip and zstd bodies read as the plain ones on every endpoint that
//! carries records, a decompression bomb refused at the body limit having pulled little of the
//! body, corrupt bodies and codings the service does not take answered as problems, and answers
//! compressed for clients that accept it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::app::{TestApp, oneshot_app, oneshot_app_with, spawn_app};
use crate::support::data::{to_csv, to_ndjson};
use crate::support::responses::{assert_problem, json_ok, json_with_status};
use bytes::Bytes;
use reqwest::{Method, Response, StatusCode, header};
use serde_json::{Value, json};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// The codings the service takes, with an encoder for each.
/// Bytes to bytes: an encoder or a decoder.
type Coder = fn(&[u8]) -> Vec<u8>;

const CODINGS: [(&str, Coder); 2] = [("gzip", gzip), ("zstd", zstd)];

/// POSTs `body` with this Content-Type and, when given, Content-Encoding.
async fn post(
    app: &TestApp,
    path: &str,
    content_type: &str,
    coding: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = app
        .request(Method::POST, path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body);
    if let Some(c) = coding {
        request = request.header(header::CONTENT_ENCODING, c);
    }
    app.send(request).await
}

/// A score answer without what differs between two requests for the same records (the alert's
/// id and time).
fn records_part(mut answer: Value) -> Value {
    if let Some(alert) = answer["alert"].as_object_mut() {
        // The alert's id and times (a batch alert is first and last seen at its creation).
        for key in ["id", "created_at", "first_seen", "last_seen"] {
            alert.remove(key);
        }
    }
    answer
}

/// The body plain, gzip'd and zstd'd gives the same answer from `path`.
async fn same_answer_coded(app: &TestApp, path: &str, content_type: &str, body: &[u8]) -> Value {
    let plain =
        records_part(json_ok(post(app, path, content_type, None, body.to_vec()).await).await);
    for (name, encode) in CODINGS {
        let coded = json_ok(post(app, path, content_type, Some(name), encode(body)).await).await;
        assert_eq!(
            records_part(coded),
            plain,
            "{path} with a {content_type} body as {name}"
        );
    }
    plain
}

fn zeek_sample(name: &str) -> Vec<u8> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = if name == "exfil_conn.log" {
        manifest.join("tests/fixtures/zeek").join(name)
    } else {
        manifest
            .ancestors()
            .skip(1)
            .map(|dir| dir.join("shared/data/zeek").join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("shared/data/zeek/{name} not found"))
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn gzip_and_zstd_bodies_score_as_the_plain_ones() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let records = app.seed_records().await;
    let csv = to_csv(&records, &["src_ip"]);
    let answer = same_answer_coded(&app, "/v1/score", "text/csv", csv.as_bytes()).await;
    assert_eq!(answer["results"].as_array().unwrap().len(), 720);
    assert!(
        answer["summary"]["n_anomalies"].as_u64().unwrap() >= 8,
        "{}",
        answer["summary"]
    );
    let ndjson = to_ndjson(&records);
    same_answer_coded(&app, "/v1/score", "application/x-ndjson", ndjson.as_bytes()).await;
    let json = serde_json::to_vec(&json!({ "records": records })).unwrap();
    same_answer_coded(&app, "/v1/score", "application/json", &json).await;
    // The CSV answer too.
    let plain = post(&app, "/v1/score", "text/csv", None, csv.clone()).await;
    let plain = plain.text().await.unwrap();
    for (name, encode) in CODINGS {
        let request = app
            .request(Method::POST, "/v1/score")
            .header(header::CONTENT_TYPE, "text/csv")
            .header(header::ACCEPT, "text/csv")
            .header(header::CONTENT_ENCODING, name)
            .body(encode(csv.as_bytes()));
        let coded = app.send(request).await;
        assert_eq!(coded.status(), StatusCode::OK);
        let request = app
            .request(Method::POST, "/v1/score")
            .header(header::CONTENT_TYPE, "text/csv")
            .header(header::ACCEPT, "text/csv")
            .body(csv.clone());
        let again = app.send(request).await.text().await.unwrap();
        assert_eq!(coded.text().await.unwrap(), again, "{name}");
        assert_ne!(again, plain, "the CSV answer is not the JSON one");
    }

    // Zeek conn logs, TSV and JSON, on a model of Zeek windows.
    let zeek = oneshot_app().await;
    let exfil = zeek_sample("exfil_conn.log");
    let fitted = json_with_status(
        post(
            &zeek,
            "/v1/model/fit?window=5m&n_estimators=50&seed=3",
            "text/zeek-tsv",
            Some("gzip"),
            gzip(&exfil),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(
        fitted["n_training_records"].as_u64().unwrap() > 10,
        "{fitted}"
    );
    let answer = same_answer_coded(&zeek, "/v1/score?window=5m", "text/zeek-tsv", &exfil).await;
    assert_eq!(
        answer["results"].as_array().unwrap().len() as u64,
        fitted["n_training_records"].as_u64().unwrap()
    );
    let json_log = zeek_sample("conn.json.log");
    let answer = same_answer_coded(
        &zeek,
        "/v1/score?window=1m",
        "application/x-zeek-json",
        &json_log,
    )
    .await;
    assert!(!answer["results"].as_array().unwrap().is_empty());
    same_answer_coded(
        &zeek,
        "/v1/score?window=1m",
        "text/zeek-tsv",
        &zeek_sample("conn.log"),
    )
    .await;
}

#[tokio::test]
async fn fit_evaluate_and_samples_read_coded_bodies() {
    let app = oneshot_app().await;
    let records = app.seed_records().await;
    let csv = to_csv(&records, &["label"]);
    let fit = "/v1/model/fit?n_estimators=40&seed=9&features=bytes_sent,bytes_received,connections,active_sessions";
    let meta = |m: Value| {
        json!([
            m["features"],
            m["n_training_records"],
            m["threshold"],
            m["params"]
        ])
    };
    let plain = meta(
        json_with_status(
            post(&app, fit, "text/csv", None, csv.clone()).await,
            StatusCode::CREATED,
        )
        .await,
    );
    for (name, encode) in CODINGS {
        let coded = post(&app, fit, "text/csv", Some(name), encode(csv.as_bytes())).await;
        assert_eq!(
            meta(json_with_status(coded, StatusCode::CREATED).await),
            plain,
            "{name}"
        );
    }
    // A JSON fit: the settings and the records both come out of the coded body.
    let body =
        serde_json::to_vec(&json!({"records": records, "params": {"n_estimators": 40, "seed": 9}}))
            .unwrap();
    let coded = post(
        &app,
        "/v1/model/fit",
        "application/json",
        Some("zstd"),
        zstd(&body),
    )
    .await;
    assert_eq!(
        meta(json_with_status(coded, StatusCode::CREATED).await),
        plain
    );

    let evaluated = same_answer_coded(&app, "/v1/evaluate", "text/csv", csv.as_bytes()).await;
    assert_eq!(evaluated["n_records"], 720);
    let body =
        serde_json::to_vec(&json!({"records": records, "max_false_positive_rate": 0.01})).unwrap();
    let evaluated = same_answer_coded(&app, "/v1/evaluate", "application/json", &body).await;
    assert!(evaluated["budget"].is_object(), "{evaluated}");

    let settings = br#"{"n_records": 50, "seed": 4}"#;
    let samples = same_answer_coded(&app, "/v1/samples", "application/json", settings).await;
    assert_eq!(samples["records"].as_array().unwrap().len(), 50);
}

/// A body sent in `piece`-byte chunks, counting the bytes the service pulled.
fn counted(body: Vec<u8>, piece: usize) -> (reqwest::Body, Arc<AtomicUsize>) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let chunks: Vec<Bytes> = body.chunks(piece).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::StreamExt::map(futures_util::stream::iter(chunks), move |c| {
        counter.fetch_add(c.len(), Ordering::SeqCst);
        Ok::<_, std::io::Error>(c)
    });
    (reqwest::Body::wrap_stream(stream), pulled)
}

/// 1 GiB of zeros in a coding: a MiB of zeros coded once, repeated 1024 times (gzip members and
/// zstd frames one after the other are one body). The single-member bomb is in the unit tests of
/// `records::encoding`; this one is quick to make.
fn zeros_coded(coding: &str) -> Vec<u8> {
    let mib = vec![0u8; 1 << 20];
    let one = if coding == "gzip" {
        gzip(&mib)
    } else {
        zstd(&mib)
    };
    one.repeat(1024)
}

#[tokio::test]
async fn a_decompression_bomb_is_a_413_having_pulled_little_of_the_body() {
    const MAX_BODY: usize = 4 << 20;
    let app = oneshot_app_with(|s| s.max_body_bytes = MAX_BODY).await;
    app.fit_small(1).await;
    for coding in ["gzip", "zstd"] {
        let bomb = zeros_coded(coding);
        let sent = bomb.len();
        // 4 MiB is 1/256 of the decoded body: a reader that stops at the limit pulls about
        // 1/256 of what was sent, plus what the channels hold (about 20 pieces of 1/1024).
        assert!(
            sent < MAX_BODY,
            "{coding}: the bomb itself fits the limit ({sent} bytes)"
        );
        let piece = sent / 1024;
        for (path, content_type) in [
            ("/v1/score", "text/csv"),
            ("/v1/score", "application/json"),
            ("/v1/model/fit", "text/csv"),
            ("/v1/evaluate", "application/x-ndjson"),
        ] {
            let (body, pulled) = counted(bomb.clone(), piece);
            let response = post(&app, path, content_type, Some(coding), body).await;
            let problem =
                assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "body-too-large").await;
            let pulled = pulled.load(Ordering::SeqCst);
            assert!(
                pulled < sent / 10,
                "{coding} {path} {content_type}: pulled {pulled} of {sent} bytes: {problem}"
            );
        }
    }
}

#[tokio::test]
async fn corrupt_coded_bodies_are_400_naming_the_coding() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let records = app.seed_records().await;
    let csv = to_csv(&records, &["label"]);
    for (name, encode) in CODINGS {
        let whole = encode(csv.as_bytes());
        let mut flipped = whole.clone();
        let n = flipped.len();
        flipped[n / 2] ^= 0x55;
        flipped[n - 5] ^= 0x55;
        for (what, body) in [
            ("cut short", whole[..n - 8].to_vec()),
            ("flipped", flipped),
            ("not coded at all", csv.clone().into_bytes()),
        ] {
            for path in ["/v1/score", "/v1/model/fit", "/v1/evaluate"] {
                let response = post(&app, path, "text/csv", Some(name), body.clone()).await;
                let problem =
                    assert_problem(response, StatusCode::BAD_REQUEST, "malformed-body").await;
                let detail = problem["detail"].as_str().unwrap();
                assert!(
                    detail.contains(&format!("not valid {name}")),
                    "{path} {what}: {detail}"
                );
                assert_eq!(problem["field"], "Content-Encoding");
            }
        }
    }
}

#[tokio::test]
async fn other_codings_are_415_with_accept_encoding() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let body = gzip(b"bytes_sent,bytes_received,connections,active_sessions\n1,2,3,4\n");
    for coding in [
        "br",
        "deflate",
        "compress",
        "snappy",
        "gzip, zstd",
        "gzip, gzip",
    ] {
        for path in ["/v1/score", "/v1/model/fit", "/v1/evaluate", "/v1/samples"] {
            let response = post(&app, path, "text/csv", Some(coding), body.clone()).await;
            let accept_encoding = response
                .headers()
                .get(header::ACCEPT_ENCODING)
                .map(|v| v.to_str().unwrap().to_string());
            let problem = assert_problem(
                response,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
            )
            .await;
            assert_eq!(
                accept_encoding.as_deref(),
                Some("gzip, zstd"),
                "{coding} {path}: {problem}"
            );
        }
    }
    // `identity` and `x-gzip` are taken.
    let csv = b"bytes_sent,bytes_received,connections,active_sessions\n1,2,3,4\n";
    json_ok(
        post(
            &app,
            "/v1/score",
            "text/csv",
            Some("identity"),
            csv.to_vec(),
        )
        .await,
    )
    .await;
    json_ok(post(&app, "/v1/score", "text/csv", Some("x-gzip"), gzip(csv)).await).await;
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unzstd(b: &[u8]) -> Vec<u8> {
    zstd::decode_all(b).unwrap()
}

/// The response's Content-Encoding, or "" when it has none.
fn coding_of(r: &Response) -> String {
    r.headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn answers_are_compressed_for_clients_that_accept_it() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let records = app.seed_records().await;
    let score = |accept_encoding: &'static str| {
        app.request(Method::POST, "/v1/score")
            .header(header::ACCEPT_ENCODING, accept_encoding)
            .json(&records)
    };
    let plain = app
        .send(app.request(Method::POST, "/v1/score").json(&records))
        .await;
    assert_eq!(coding_of(&plain), "");
    let plain: Value = records_part(plain.json().await.unwrap());
    for (accept, expect, decode) in [
        ("gzip", "gzip", gunzip as Coder),
        ("zstd", "zstd", unzstd),
        ("br;q=1, zstd;q=0.5", "zstd", unzstd),
    ] {
        let response = app.send(score(accept)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(coding_of(&response), expect, "Accept-Encoding: {accept}");
        let sent = response.bytes().await.unwrap();
        let answer: Value = serde_json::from_slice(&decode(&sent)).unwrap();
        assert_eq!(records_part(answer), plain);
    }
    // A coding the service does not produce: the answer as it is.
    let response = app.send(score("br")).await;
    assert_eq!(coding_of(&response), "");
    assert_eq!(records_part(response.json().await.unwrap()), plain);

    // Not the PNG chart (compressed already), nor a tiny answer; the SVG chart is text.
    let get = |path: &'static str| {
        app.request(Method::GET, path)
            .header(header::ACCEPT_ENCODING, "gzip, zstd")
    };
    let png = app.send(get("/v1/chart.png")).await;
    assert_eq!(png.status(), StatusCode::OK);
    assert_eq!(coding_of(&png), "");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let healthz = app.send(get("/healthz")).await;
    assert_eq!(coding_of(&healthz), "");
    let svg = app.send(get("/v1/chart.svg")).await;
    assert_ne!(coding_of(&svg), "");
    let problem = app.send(get("/v1/nope")).await;
    assert_eq!(coding_of(&problem), "", "a problem is small");
}

#[tokio::test]
async fn a_streamed_answer_is_compressed_as_it_streams() {
    let app = spawn_app().await;
    app.fit_seed().await;
    let seed = app.seed_records().await;
    // More records than one streamed piece of the answer holds (65,536).
    let records: Vec<Value> = (0..70_000).map(|i| seed[i % seed.len()].clone()).collect();
    let csv = to_csv(&records, &[]);
    let send = |accept_encoding: Option<&str>| {
        let mut request = reqwest::Client::new()
            .post(app.url("/v1/score"))
            .header(header::CONTENT_TYPE, "text/csv")
            .header(header::CONTENT_ENCODING, "zstd")
            .header(header::ACCEPT, "text/csv")
            .body(zstd(csv.as_bytes()));
        if let Some(a) = accept_encoding {
            request = request.header(header::ACCEPT_ENCODING, a);
        }
        request.send()
    };
    let plain = send(None).await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    let plain = plain.bytes().await.unwrap();
    assert_eq!(plain.iter().filter(|&&b| b == b'\n').count(), 70_001);
    for (coding, decode) in [("gzip", gunzip as Coder), ("zstd", unzstd)] {
        let mut response = send(Some(coding)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(coding_of(&response), coding);
        assert!(
            response.headers().get(header::CONTENT_LENGTH).is_none(),
            "a streamed answer has no length up front"
        );
        let mut sent = Vec::new();
        let mut pieces = 0;
        while let Some(chunk) = response.chunk().await.unwrap() {
            pieces += 1;
            sent.extend_from_slice(&chunk);
        }
        assert!(pieces > 1, "{coding}: the answer came in {pieces} piece(s)");
        assert!(
            sent.len() * 2 < plain.len(),
            "{coding}: {} of {} bytes",
            sent.len(),
            plain.len()
        );
        assert_eq!(decode(&sent), plain, "{coding}");
    }
}
