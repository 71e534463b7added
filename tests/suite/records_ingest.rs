//! Continuous ingest for a detector with `source.format: records`: each record is one
//! observation and its own window, closed on arrival. Any split of a body into requests stores
//! exactly the records, scores (bit for bit) and entities of one `score` request; bad records
//! are skipped by line; the key, a restart, alerts and suppression rules work as for Zeek
//! windows.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::app::{TestApp, oneshot_app, spawn_app};
use crate::support::data::{to_csv, to_ndjson};
use crate::support::responses::{assert_problem, json_ok, json_with_status};

const NDJSON: &str = "application/x-ndjson";

/// A records detector (entity `src_ip`, `extra` in its source) fitted on seed data.
async fn detector(app: &TestApp, name: &str, extra: Value) -> String {
    let base = unfitted(app, name, extra).await;
    fit(app, &base).await;
    base
}

/// A records detector (entity `src_ip`, `extra` in its source) without a model.
async fn unfitted(app: &TestApp, name: &str, extra: Value) -> String {
    let mut source = json!({"format": "records", "group_by": "src_ip"});
    for (k, v) in extra.as_object().unwrap() {
        source[k] = v.clone();
    }
    let base = format!("/v1/detectors/{name}");
    let put = app
        .send(
            app.request(Method::PUT, &base)
                .json(&json!({"source": source})),
        )
        .await;
    assert!(put.status().is_success(), "{:?}", put.text().await);
    base
}

/// Fits the detector at `base` on seed data.
async fn fit(app: &TestApp, base: &str) {
    let fit = app
        .post_json(
            &format!("{base}/model/fit"),
            &json!({"generate": {}, "params": {"n_estimators": 30, "seed": 4}}),
        )
        .await;
    json_with_status(fit, StatusCode::CREATED).await;
}

#[tokio::test]
async fn records_sent_before_the_first_fit_are_kept_pending_then_scored_as_from_the_start() {
    let app = oneshot_app().await;
    let base = unfitted(&app, "early", json!({})).await;
    let records = records(&app).await;
    let (a, b) = records.split_at(250);
    let first = app.ingest(&base, "text/csv", to_csv(a, &["src_ip"])).await;
    assert_eq!(
        (
            first["accepted"].as_u64(),
            first["windows_pending"].as_u64()
        ),
        (Some(250), Some(250)),
        "{first}"
    );
    assert_eq!(first["model_version"], Value::Null, "{first}");
    // A bad record is skipped by line, as with a model; the good ones are kept pending.
    let mut body = to_ndjson(b);
    body.push_str("{\"timestamp\": \"yesterday\", \"src_ip\": \"10.0.0.1\"}\n");
    let second = app.ingest(&base, NDJSON, body).await;
    let total = records.len() as u64;
    assert_eq!(
        (
            second["accepted"].as_u64(),
            second["rejected"].as_u64(),
            second["windows_pending"].as_u64()
        ),
        (Some(b.len() as u64), Some(1), Some(total)),
        "{second}"
    );
    let page = json_ok(app.get(&format!("{base}/windows")).await).await;
    assert_eq!(page["windows"], json!([]));
    assert_eq!(page["windows_pending"].as_u64(), Some(total));
    fit(&app, &base).await;
    let whole = json_ok(
        app.post_raw(&format!("{base}/score"), Some(NDJSON), to_ndjson(&records))
            .await,
    )
    .await;
    let expected = keyed(whole["results"].as_array().unwrap());
    // A flush scores what is pending (the next ingest would as well).
    let flushed = json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    assert_eq!(
        (
            flushed["pending_scored"].as_u64(),
            flushed["windows_pending"].as_u64()
        ),
        (Some(total), Some(0)),
        "{flushed}"
    );
    // Bit for bit, each record once.
    assert_eq!(keyed(&app.windows(&base, 100).await), expected);
    let again = json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    assert_eq!(again["pending_scored"], 0, "{again}");
    assert_eq!(app.windows(&base, 100).await.len() as u64, total);
}

/// The seed records, each with a host `src_ip` (seven hosts).
async fn records(app: &TestApp) -> Vec<Value> {
    let mut records = app.seed_records().await;
    for (i, r) in records.iter_mut().enumerate() {
        r["src_ip"] = json!(format!("10.0.0.{}", i % 7));
        r.as_object_mut().unwrap().remove("label");
    }
    records
}

/// (time, entity, score bits, is_anomaly, severity) of results or windows, sorted.
fn keyed(results: &[Value]) -> Vec<(i64, String, u64, bool, u64)> {
    let mut out: Vec<_> = results
        .iter()
        .map(|r| {
            let t = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp_micros();
            let entity = r["entity"]
                .as_str()
                .or(r["src_ip"].as_str())
                .unwrap()
                .to_owned();
            (
                t,
                entity,
                r["score"].as_f64().unwrap().to_bits(),
                r["is_anomaly"].as_bool().unwrap(),
                r["severity"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn any_split_stores_each_record_as_a_window_with_the_scores_of_one_score_request() {
    let app = oneshot_app().await;
    let base = detector(&app, "flows", json!({})).await;
    let records = records(&app).await;
    let whole = json_ok(
        app.post_raw(&format!("{base}/score"), Some(NDJSON), to_ndjson(&records))
            .await,
    )
    .await;
    let expected = keyed(whole["results"].as_array().unwrap());
    assert_eq!(expected.len(), records.len());
    // Three requests in three formats, the last first: records are never late.
    let (a, rest) = records.split_at(200);
    let (b, c) = rest.split_at(300);
    let mut accepted = 0;
    for (content_type, body) in [
        ("text/csv", to_csv(c, &["src_ip"])),
        ("application/json", json!({ "records": a }).to_string()),
        (NDJSON, to_ndjson(b)),
    ] {
        let answer = app.ingest(&base, content_type, body).await;
        let n = answer["accepted"].as_u64().unwrap();
        assert_eq!(
            (answer["late"].as_u64(), answer["rejected"].as_u64()),
            (Some(0), Some(0)),
            "{answer}"
        );
        assert_eq!(answer["windows_closed"].as_u64(), Some(n), "{answer}");
        accepted += n;
    }
    assert_eq!(accepted as usize, records.len());
    let windows = app.windows(&base, 50).await;
    // Bit for bit, each record once.
    assert_eq!(keyed(&windows), expected);
    // A window carries its record's values and echoed fields.
    let w = windows
        .iter()
        .find(|w| w["timestamp"] == records[5]["timestamp"] && w["entity"] == "10.0.0.5")
        .unwrap();
    assert_eq!(w["values"]["bytes_sent"], records[5]["bytes_sent"]);
    assert_eq!(w["fields"]["src_ip"], "10.0.0.5");
    assert!(w.get("connections").is_none(), "{w}");
    // One entity's windows, and nothing is open to flush.
    let one = json_ok(
        app.get(&format!("{base}/windows?entity=10.0.0.3&limit=1000"))
            .await,
    )
    .await;
    let n3 = records.iter().filter(|r| r["src_ip"] == "10.0.0.3").count();
    assert_eq!(one["windows"].as_array().unwrap().len(), n3);
    let flushed = json_ok(app.post_empty(&format!("{base}/flush")).await).await;
    assert_eq!(flushed["windows_closed"], 0, "{flushed}");
    let latest = records
        .iter()
        .map(|r| chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap()).unwrap())
        .max()
        .unwrap();
    let watermark = chrono::DateTime::parse_from_rfc3339(flushed["watermark"].as_str().unwrap());
    assert_eq!(watermark.unwrap(), latest);
}

#[tokio::test]
async fn bad_records_are_skipped_by_line_and_the_good_ones_kept_unless_the_detector_rejects() {
    let app = oneshot_app().await;
    let base = detector(&app, "skips", json!({})).await;
    let records = records(&app).await;
    let mut lines: Vec<String> = records[..10].iter().map(|r| r.to_string()).collect();
    lines[2] = "{not json".into();
    let mut no_time = records[4].clone();
    no_time.as_object_mut().unwrap().remove("timestamp");
    lines[4] = no_time.to_string();
    let mut no_host = records[6].clone();
    no_host.as_object_mut().unwrap().remove("src_ip");
    lines[6] = no_host.to_string();
    let body = format!("{}\n", lines.join("\n"));
    let answer = app.ingest(&base, NDJSON, body.clone()).await;
    assert_eq!(answer["accepted"], 7, "{answer}");
    assert_eq!(answer["rejected"], 3, "{answer}");
    let rejects = answer["rejects"].as_array().unwrap();
    let at: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(at, [3, 5, 7]);
    assert_eq!(rejects[1]["field"], "timestamp");
    assert_eq!(rejects[2]["field"], "src_ip");
    assert_eq!(app.windows(&base, 50).await.len(), 7);
    // A CSV row too short for its header is its line's reject.
    let mut csv = to_csv(&records[10..13], &["src_ip"]);
    csv.push_str("2024-01-01T00:00:00Z,1,2\n");
    let answer = app.ingest(&base, "text/csv", csv).await;
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(answer["rejects"][0]["line"], 5);

    // `on_invalid: reject`: the batch is refused whole, as `score` refuses it (its syntax
    // error: 400), and nothing is kept; a batch whose only problem is a record's is a 422.
    let strict = detector(&app, "strict", json!({"on_invalid": "reject"})).await;
    let r = app
        .post_raw(&format!("{strict}/ingest"), Some(NDJSON), body)
        .await;
    assert_problem(r, StatusCode::BAD_REQUEST, "malformed-body").await;
    let no_time = format!("{}\n{}\n", records[0], lines[4]);
    let r = app
        .post_raw(&format!("{strict}/ingest"), Some(NDJSON), no_time)
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(app.windows(&strict, 50).await.is_empty());
}

async fn keyed_ingest(app: &TestApp, base: &str, key: &str, body: String) -> reqwest::Response {
    app.send(
        app.request(Method::POST, &format!("{base}/ingest"))
            .header("content-type", NDJSON)
            .header("idempotency-key", key)
            .body(body),
    )
    .await
}

#[tokio::test]
async fn a_key_replays_a_restart_keeps_everything_and_records_of_one_second_stay_apart() {
    let app = spawn_app().await;
    let base = detector(&app, "durable", json!({})).await;
    let records = records(&app).await;
    let body = to_ndjson(&records[..40]);
    let first = keyed_ingest(&app, &base, "batch-1", body.clone()).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first = first.text().await.unwrap();
    let app = app.restart().await;
    // The retry after the restart is the first answer again, and stores nothing more.
    let again = keyed_ingest(&app, &base, "batch-1", body.clone()).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.text().await.unwrap(), first);
    assert_eq!(app.windows(&base, 50).await.len(), 40);
    // The same records under another key are new observations: stored beside the first ones
    // (same second, same entity), not over them.
    let other = keyed_ingest(&app, &base, "batch-2", body).await;
    assert_eq!(other.status(), StatusCode::ACCEPTED);
    let windows = app.windows(&base, 50).await;
    assert_eq!(windows.len(), 80);
    let mut twice = keyed(&windows);
    twice.dedup();
    assert_eq!(twice.len(), 40);
    // A Zeek log is not what this detector reads.
    let r = app
        .post_raw(
            &format!("{base}/ingest"),
            Some("text/zeek-tsv"),
            "#fields\tts\n",
        )
        .await;
    assert_problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
}

#[tokio::test]
async fn anomalous_records_raise_their_hosts_incidents_and_a_suppressed_host_raises_nothing() {
    let app = oneshot_app().await;
    let base = detector(&app, "alerting", json!({})).await;
    let rule = json!({"detector": "alerting", "entity": "10.0.0.1", "reason": "scanner"});
    json_with_status(
        app.post_json("/v1/suppressions", &rule).await,
        StatusCode::CREATED,
    )
    .await;
    // Seed bursts (every 100th record) with hosts 0..7 by position: 0, 100 -> 10.0.0.2, ...
    let records = records(&app).await;
    let answer = app.ingest(&base, NDJSON, to_ndjson(&records)).await;
    let alerts = answer["alerts"].as_array().unwrap();
    assert!(!alerts.is_empty(), "{answer}");
    let stored_alerts = app.alerts("?detector=alerting").await;
    assert!(!stored_alerts.is_empty());
    for a in &stored_alerts {
        assert_eq!(a["detector"], "alerting", "{a}");
        assert_ne!(a["entity"], "10.0.0.1", "{a}");
    }
    let windows = app.windows(&base, 50).await;
    let suppressed: Vec<&Value> = windows
        .iter()
        .filter(|w| w.get("suppressed").is_some())
        .collect();
    let n1 = records.iter().filter(|r| r["src_ip"] == "10.0.0.1").count();
    assert_eq!(suppressed.len(), n1);
    assert!(suppressed.iter().all(|w| w["entity"] == "10.0.0.1"));
    // The anomalous windows of other hosts are what the alerts are about.
    let anomalous = windows
        .iter()
        .filter(|w| w["is_anomaly"] == true && w["entity"] != "10.0.0.1")
        .count();
    assert!(anomalous > 0);
}
