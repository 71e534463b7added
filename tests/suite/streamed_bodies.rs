//! Fit and evaluate read their bodies as they arrive (issue #15.2): a body sent in many small
//! pieces, as a slow client sends it, trains the model one piece trains, and a body over the
//! limit is a 413 that leaves nothing behind (no version, no kept Idempotency-Key).

use std::io::Write;

use futures_util::StreamExt;

use crate::support::app::{TestApp, spawn_app_with};
use crate::support::responses::{assert_problem, json_ok};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

/// `body` sent in `piece`-byte chunks with no `Content-Length`, each after the runtime had a
/// turn, so the service meets it a piece at a time.
fn trickled(body: Vec<u8>, piece: usize) -> reqwest::Body {
    let pieces: Vec<Vec<u8>> = body.chunks(piece).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(pieces).then(|p| async move {
        tokio::task::yield_now().await;
        Ok::<_, std::io::Error>(p)
    });
    reqwest::Body::wrap_stream(stream)
}

async fn fit_with(app: &TestApp, path: &str, content_type: &str, body: reqwest::Body) -> Value {
    let answer = app
        .send(
            app.request(Method::POST, path)
                .header(header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await;
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The active model's scores of `probe`, bit for bit, and what it says of itself that does not
/// change from one fit to the next (all but its version and times).
async fn model_view(app: &TestApp, probe: &[Value]) -> (Vec<u64>, Value) {
    let scored = app.score(probe).await;
    let scores = scored["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap().to_bits())
        .collect();
    let mut meta = json_ok(app.get("/v1/model").await).await;
    let m = meta.as_object_mut().unwrap();
    for volatile in ["version", "trained_at", "fit_seconds"] {
        m.remove(volatile);
    }
    (scores, meta)
}

#[tokio::test]
async fn a_fit_body_in_many_small_pieces_trains_the_model_one_piece_trains() {
    let app = spawn_app_with(|s| s.min_body_rate = 0).await;
    let records = app.seed_records().await;
    let probe: Vec<Value> = records.iter().step_by(37).cloned().collect();
    let csv = crate::support::data::to_csv(&records, &[]);
    let params = json!({"n_estimators": 40, "seed": 7});
    // A JSON object with its settings first, one with its records first (read whole: its
    // `features` could still follow), a bare array, and CSV with the settings in the query.
    let features = ["bytes_sent", "connections", "active_sessions"];
    let settings_first = format!(
        r#"{{"features":{},"params":{},"records":{}}}"#,
        json!(features),
        params,
        json!(records)
    );
    let records_first = format!(
        r#"{{"records":{},"params":{},"features":{}}}"#,
        json!(records),
        params,
        json!(features)
    );
    let array = json!(records).to_string();
    let cases: [(&str, &str, Vec<u8>); 4] = [
        (
            "/v1/model/fit",
            "application/json",
            settings_first.into_bytes(),
        ),
        (
            "/v1/model/fit",
            "application/json",
            records_first.into_bytes(),
        ),
        (
            "/v1/detectors/default/model/fit",
            "application/json",
            array.into_bytes(),
        ),
        (
            "/v1/model/fit?n_estimators=40&seed=7&features=bytes_sent,connections,active_sessions",
            "text/csv",
            csv.into_bytes(),
        ),
    ];
    for (path, content_type, body) in cases {
        let whole = fit_with(&app, path, content_type, body.clone().into()).await;
        let one_piece = model_view(&app, &probe).await;
        for piece in [7, 1000] {
            let trickled_fit =
                fit_with(&app, path, content_type, trickled(body.clone(), piece)).await;
            assert!(trickled_fit["version"].as_u64() > whole["version"].as_u64());
            let view = model_view(&app, &probe).await;
            assert_eq!(
                view.1, one_piece.1,
                "{path} {content_type} in {piece}-byte pieces"
            );
            assert!(
                view.0 == one_piece.0,
                "{path} {content_type} in {piece}-byte pieces: other scores"
            );
        }
    }
}

#[tokio::test]
async fn fit_and_evaluate_bodies_over_the_limit_are_413_and_leave_nothing() {
    const LIMIT: usize = 256 * 1024;
    let app = spawn_app_with(|s| {
        s.max_body_bytes = LIMIT;
        s.min_body_rate = 0;
    })
    .await;
    app.fit_small(1).await;
    let versions = json_ok(app.get("/v1/model/versions").await).await;
    let records = app.seed_records().await;
    let mut many = Vec::new();
    while crate::support::data::to_csv(&many, &["label"]).len() <= 2 * LIMIT {
        many.extend(records.iter().cloned());
    }
    let big = json!({"params": {"n_estimators": 10}, "records": many}).to_string();
    let big_csv = crate::support::data::to_csv(&many, &["label"]);
    let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzipped.write_all(big_csv.as_bytes()).unwrap();
    let gzipped = gzipped.finish().unwrap();
    assert!(
        gzipped.len() < LIMIT,
        "sent under the limit, over it decoded"
    );
    for path in ["/v1/model/fit", "/v1/evaluate"] {
        for (content_type, encoding, body) in [
            ("application/json", None, big.clone().into_bytes()),
            ("text/csv", None, big_csv.clone().into_bytes()),
            ("text/csv", Some("gzip"), gzipped.clone()),
        ] {
            let mut request = app
                .request(Method::POST, path)
                .header(header::CONTENT_TYPE, content_type)
                .header("Idempotency-Key", format!("over-{path}-{content_type}"))
                .body(trickled(body, 8192));
            if let Some(e) = encoding {
                request = request.header(header::CONTENT_ENCODING, e);
            }
            let answer = app.send(request).await;
            assert_problem(answer, StatusCode::PAYLOAD_TOO_LARGE, "body-too-large").await;
        }
    }
    let after = json_ok(app.get("/v1/model/versions").await).await;
    assert_eq!(after, versions, "no version was stored");
    // The key of a refused fit was not kept: the same key with a body that fits runs.
    let fits = json!({"generate": {}, "params": {"n_estimators": 10}});
    let answer = app
        .send(
            app.request(Method::POST, "/v1/model/fit")
                .header("Idempotency-Key", "over-/v1/model/fit-application/json")
                .json(&fits),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert!(answer.headers().get("idempotency-replayed").is_none());
    assert_eq!(app.state().limits().memory_reserved(), 0);
}
