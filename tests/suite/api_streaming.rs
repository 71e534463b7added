//! Big batches over HTTP: bodies that arrive in small pieces, answers that stream out in pieces,
//! and a bad record deep in a big body, which must still be a plain 4xx problem.

use std::collections::BTreeSet;

use crate::support::app::spawn_app;
use crate::support::data::{to_csv, to_ndjson};
use crate::support::responses::assert_problem;
use bytes::Bytes;
use reqwest::{StatusCode, header};
use serde_json::Value;

/// More records than one streamed piece of the answer holds (65,536).
const BIG: usize = 70_000;

/// `n` records: the seed batch repeated, with a `src_ip` that differs per record.
async fn records(app: &crate::support::app::TestApp, n: usize) -> Vec<Value> {
    let seed = app.seed_records().await;
    (0..n)
        .map(|i| {
            let mut r = seed[i % seed.len()].clone();
            r["src_ip"] = Value::String(format!("10.0.{}.{}", i / 256 % 256, i % 256));
            r
        })
        .collect()
}

/// A body sent as many small chunks (chunked transfer encoding), so records, quoted fields and
/// line ends are cut at arbitrary places.
fn in_pieces(body: String, piece: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .into_bytes()
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

async fn post(
    app: &crate::support::app::TestApp,
    ctype: &str,
    accept: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/v1/score"))
        .header(header::CONTENT_TYPE, ctype)
        .header(header::ACCEPT, accept)
        .body(body)
        .send()
        .await
        .expect("the request is sent")
}

#[tokio::test]
async fn a_streamed_answer_equals_the_answers_of_its_parts() {
    let app = spawn_app().await;
    app.fit_seed().await;
    let batch = records(&app, BIG).await;

    // The whole batch: a CSV answer that streams out in pieces, from a CSV body sent in pieces
    // of 997 bytes (CRLF line ends, so a piece may end between CR and LF).
    let csv = to_csv(&batch, &["src_ip"]).replace('\n', "\r\n");
    let response = post(&app, "text/csv", "text/csv", in_pieces(csv, 997)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let whole = response.text().await.unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    assert_eq!(lines.len(), BIG + 1);
    assert_eq!(lines[0], "index,score,is_anomaly,severity");

    // The same records in small batches, answered in one piece each: same rows.
    for start in [0, 65_000, BIG - 720] {
        let part = &batch[start..start + 720];
        let response = post(
            &app,
            "application/json",
            "text/csv",
            serde_json::to_vec(part).unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        for (k, line) in text.lines().skip(1).enumerate() {
            let (index, rest) = line.split_once(',').unwrap();
            assert_eq!(index.parse::<usize>().unwrap(), k);
            let (_, whole_rest) = lines[start + k + 1].split_once(',').unwrap();
            assert_eq!(rest, whole_rest, "record {}", start + k);
        }
    }

    // JSON out, from NDJSON sent in pieces of 1,013 bytes: one result per record, in order,
    // with the echoed field, and the same scores as the CSV answer.
    let response = post(
        &app,
        "application/x-ndjson",
        "application/json",
        in_pieces(to_ndjson(&batch), 1013),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), BIG);
    assert_eq!(body["summary"]["n_records"], BIG);
    for i in [0, 1, 65_535, 65_536, BIG - 1] {
        assert_eq!(results[i]["index"], i);
        assert_eq!(results[i]["src_ip"], batch[i]["src_ip"]);
        let csv_score: f64 = lines[i + 1].split(',').nth(1).unwrap().parse().unwrap();
        assert_eq!(results[i]["score"].as_f64().unwrap(), csv_score);
    }
    let explained: BTreeSet<bool> = results
        .iter()
        .map(|r| r["is_anomaly"] == r.get("explanation").is_some())
        .collect();
    assert_eq!(
        explained,
        BTreeSet::from([true]),
        "exactly the anomalies are explained"
    );
}

#[tokio::test]
async fn a_bad_record_deep_in_a_big_body_is_the_usual_problem() {
    let app = spawn_app().await;
    app.fit_seed().await;
    let mut batch = records(&app, BIG).await;
    batch[BIG - 2]["connections"] = Value::String("many".into());
    batch[BIG - 1]["bytes_sent"] = Value::Null;

    let csv = to_csv(&batch, &["src_ip"]);
    let response = post(&app, "text/csv", "text/csv", in_pieces(csv, 4096)).await;
    let problem =
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-record").await;
    assert_eq!(problem["index"], BIG - 2);
    assert_eq!(problem["field"], "connections");

    let response = post(&app, "application/x-ndjson", "text/csv", to_ndjson(&batch)).await;
    let problem =
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid-record").await;
    assert_eq!(problem["index"], BIG - 2);

    // Malformed syntax after the bad record still wins, as when the body was parsed whole first.
    let mut ndjson = to_ndjson(&batch);
    ndjson.push_str("{oops\n");
    let response = post(&app, "application/x-ndjson", "text/csv", ndjson).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed-body").await;
}
