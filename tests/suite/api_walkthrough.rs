//! The walk a user makes through the API: generate traffic, fit, score, read and acknowledge the
//! alert, draw the chart, evaluate; plus the body formats and options of scoring.

use crate::support::app::{TestApp, oneshot_app};
use crate::support::data::{BURSTS, SEED_FEATURES, scores, to_csv, to_ndjson};
use crate::support::responses::{assert_problem, content_type, json_ok, json_with_status};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Decodes a PNG fully and returns its size.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).expect("PNG image data decodes");
    (frame.width, frame.height)
}

async fn chart_png(app: &TestApp, query: &str) -> (u32, u32) {
    let response = app.get(&format!("/v1/chart.png{query}")).await;
    assert_eq!(response.status(), StatusCode::OK, "chart.png{query}");
    assert_eq!(content_type(&response), "image/png");
    png_size(&response.bytes().await.expect("a body"))
}

#[tokio::test]
async fn health_is_ok_and_readiness_follows_the_model() {
    let app = oneshot_app().await;

    let health = json_ok(app.get("/healthz").await).await;
    assert_eq!(health, json!({"status": "ok"}));

    let problem = assert_problem(
        app.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("fit"),
        "readiness says how to become ready: {problem}"
    );

    app.fit_small(1).await;
    let ready = json_ok(app.get("/readyz").await).await;
    assert_eq!(ready["model_version"], 1);
}

#[tokio::test]
async fn samples_come_as_json_csv_or_ndjson() {
    let app = oneshot_app().await;

    let records = app.seed_records().await;
    assert_eq!(records.len(), 720);
    let labeled: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["label"] == 1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        labeled, BURSTS,
        "the seed profile has a burst every 100 records"
    );
    for f in SEED_FEATURES {
        assert!(records[1][f].is_number(), "{f} in {}", records[1]);
    }
    assert!(records[0]["timestamp"].is_string());

    let response = app
        .post_json_accept("/v1/samples", "text/csv", &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 721, "a header row and 720 records");
    for f in SEED_FEATURES {
        assert!(lines[0].split(',').any(|c| c == f), "{f} in {}", lines[0]);
    }

    let response = app
        .post_json_accept("/v1/samples", "application/x-ndjson", &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "application/x-ndjson");
    let ndjson = response.text().await.unwrap();
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    assert_eq!(lines.len(), 720);
    assert_eq!(lines, records, "NDJSON holds the same records as JSON");
}

#[tokio::test]
async fn the_network_profile_names_each_host_in_json_and_csv_and_fits() {
    let app = oneshot_app().await;
    let request = json!({"profile": "network", "hosts": 40, "n_records": 2880,
                         "interval_seconds": 300, "anomaly_rate": 0.02, "seed": 3});
    let body = json_ok(app.post_json("/v1/samples", &request).await).await;
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 2880);
    // Record i is host i % 40 in window i / 40.
    assert_eq!(records[0]["src_ip"], records[40]["src_ip"]);
    assert_ne!(records[0]["src_ip"], records[1]["src_ip"]);
    assert_eq!(records[40]["timestamp"], "2024-01-01T00:05:00Z");
    let kinds: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["attack_kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["beaconing", "exfiltration", "off_hours", "port_scan"].into()
    );
    assert_eq!(records.iter().filter(|r| r["label"] == 1).count(), 58);

    let csv = app
        .post_json_accept("/v1/samples", "text/csv", &request)
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "timestamp,bytes_sent,bytes_received,connections,active_sessions,label,attack_kind,src_ip"
    );
    assert_eq!(lines.len(), 2881);
    assert!(lines[1].ends_with(&format!(",{}", records[0]["src_ip"].as_str().unwrap())));

    // The generated records fit like any others (src_ip is not a feature).
    let meta = app.fit(json!({"generate": request})).await;
    assert_eq!(meta["n_training_records"], 2880);
    assert_eq!(meta["features"], json!(SEED_FEATURES));
}

/// generate → fit → score → alert → list → get → ack → chart.
#[tokio::test]
async fn a_user_fits_scores_and_handles_the_alert() {
    let app = oneshot_app().await;
    let records = app.seed_records().await;

    // Fit with defaults on generated seed data.
    let meta = app.fit_seed().await;
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["features"], json!(SEED_FEATURES));
    assert_eq!(
        meta["threshold"], 0.5,
        "contamination auto means threshold 0.5"
    );
    assert_eq!(meta["n_training_records"], 720);
    let model = json_ok(app.get("/v1/model").await).await;
    assert_eq!(model["version"], 1);
    assert_eq!(model["features"], json!(SEED_FEATURES));

    // Score the same records.
    let scored = app.score(&records).await;
    assert_eq!(scored["model_version"], 1);
    assert_eq!(scored["summary"]["n_records"], 720);
    let results = scored["results"].as_array().unwrap();
    assert_eq!(results.len(), 720);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        let s = r["score"].as_f64().unwrap();
        assert!(s > 0.0 && s <= 1.0, "score {s} in (0, 1]");
        assert_eq!(
            r["is_anomaly"],
            s > 0.5,
            "is_anomaly is score > threshold: {r}"
        );
    }
    for &i in &BURSTS {
        let r = &results[i];
        assert_eq!(r["is_anomaly"], true, "burst {i} is flagged: {r}");
        let first = &r["explanation"][0];
        let feature = first["feature"].as_str().expect("an explanation");
        assert!(
            feature == "bytes_sent" || feature == "bytes_received",
            "burst {i} is explained by its bytes, not {feature}: {r}"
        );
        assert_eq!(first["direction"], "above", "{r}");
        assert_eq!(
            first["value"].as_f64(),
            records[i][feature].as_f64(),
            "the explanation shows the value exactly as sent"
        );
    }
    assert!(
        scored["summary"]["n_anomalies"].as_u64().unwrap() >= 8,
        "{}",
        scored["summary"]
    );

    // The bursts reach the alert severity, so the batch raised an alert.
    let alert = &scored["alert"];
    let id = alert["id"]
        .as_str()
        .expect("the batch raised an alert")
        .to_string();
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["model_version"], 1);
    assert!(alert["severity"].as_u64().unwrap() >= 75, "{alert}");
    let alert_records = alert["records"].as_array().unwrap();
    assert!(!alert_records.is_empty());
    assert!(
        BURSTS.contains(&(alert_records[0]["index"].as_u64().unwrap() as usize)),
        "the most anomalous record kept is a burst: {alert}"
    );

    // A second, smaller batch (bursts only) raises a newer alert, listed first.
    let bursts: Vec<Value> = BURSTS.iter().map(|&i| records[i].clone()).collect();
    let second = app.score(&bursts).await;
    let second_id = second["alert"]["id"]
        .as_str()
        .expect("a second alert")
        .to_string();
    let listed = app.alerts("").await;
    let ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second_id.as_str(), id.as_str()], "newest first");

    let one = json_ok(app.get(&format!("/v1/alerts/{id}")).await).await;
    assert_eq!(
        &one, alert,
        "GET /v1/alerts/{{id}} returns the alert as raised"
    );

    let acked = json_ok(app.post_empty(&format!("/v1/alerts/{id}/ack")).await).await;
    assert_eq!(acked["id"], id.as_str());
    assert_eq!(acked["status"], "acknowledged");
    assert!(acked["acknowledged_at"].is_string(), "{acked}");
    let open = app.alerts("?status=open").await;
    assert!(
        open.iter().all(|a| a["id"] != id.as_str()),
        "an acknowledged alert is not open"
    );
    assert!(open.iter().any(|a| a["id"] == second_id.as_str()));
    let acknowledged = app.alerts("?status=acknowledged").await;
    assert_eq!(acknowledged.len(), 1);
    assert_eq!(acknowledged[0]["id"], id.as_str());

    // The chart of the last scored batch.
    assert_eq!(chart_png(&app, "").await, (1200, 800));
    assert_eq!(chart_png(&app, "?width=600&height=400").await, (600, 400));
    let response = app.get("/v1/chart.svg").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "image/svg+xml");
    let svg = response.text().await.unwrap();
    assert!(
        svg.trim_start().starts_with("<svg"),
        "{}",
        &svg[..svg.len().min(80)]
    );
}

#[tokio::test]
async fn the_chart_draws_the_training_data_after_a_fit() {
    let app = oneshot_app().await;
    assert_problem(
        app.get("/v1/chart.png?source=training").await,
        StatusCode::CONFLICT,
        "nothing-to-draw",
    )
    .await;
    assert_problem(
        app.get("/v1/chart.png").await,
        StatusCode::CONFLICT,
        "nothing-to-draw",
    )
    .await;
    app.fit_small(3).await;
    assert_eq!(
        chart_png(&app, "?source=training&width=800&height=500").await,
        (800, 500)
    );
}

#[tokio::test]
async fn csv_and_ndjson_bodies_score_the_same_as_json() {
    let app = oneshot_app().await;
    app.fit_small(7).await;
    let records = app.seed_records().await;
    let from_json = app.score(&records).await;

    let from_csv = json_ok(app.post_csv("/v1/score", to_csv(&records, &[])).await).await;
    let from_ndjson = json_ok(app.post_ndjson("/v1/score", to_ndjson(&records)).await).await;
    let envelope = app
        .post_json("/v1/score", &json!({"records": records}))
        .await;
    let from_envelope = json_ok(envelope).await;

    let expected = scores(&from_json);
    assert_eq!(expected.len(), 720);
    assert_eq!(scores(&from_csv), expected, "CSV");
    assert_eq!(scores(&from_ndjson), expected, "NDJSON");
    assert_eq!(scores(&from_envelope), expected, "{{\"records\": [...]}}");
    assert_eq!(from_csv["summary"], from_json["summary"]);
}

#[tokio::test]
async fn scoring_options_shape_the_results() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let mut records = app.seed_records().await;
    for (i, r) in records.iter_mut().enumerate() {
        r["src_ip"] = json!(format!("10.0.{}.{}", i / 256, i % 256));
        r["host"] = json!("edge-1");
    }

    // Echoed string fields and timestamps come back with each result.
    let all = app.score(&records).await;
    let results = all["results"].as_array().unwrap();
    assert_eq!(results[5]["src_ip"], "10.0.0.5");
    assert_eq!(results[300]["src_ip"], "10.0.1.44");
    assert_eq!(results[300]["host"], "edge-1");
    assert_eq!(results[5]["timestamp"], records[5]["timestamp"]);
    let alert_record = &all["alert"]["records"][0];
    assert!(
        alert_record["fields"]["src_ip"].is_string(),
        "alerts keep the echoed fields: {alert_record}"
    );
    let n_anomalies = all["summary"]["n_anomalies"].as_u64().unwrap() as usize;

    // only_anomalies: only flagged records, the summary still covers the batch.
    let response = app
        .post_json("/v1/score?only_anomalies=true", &json!(records))
        .await;
    let only = json_ok(response).await;
    let flagged = only["results"].as_array().unwrap();
    assert_eq!(flagged.len(), n_anomalies);
    assert!(flagged.iter().all(|r| r["is_anomaly"] == true));
    for &i in &BURSTS {
        assert!(flagged.iter().any(|r| r["index"] == i), "burst {i} listed");
    }
    assert_eq!(only["summary"], all["summary"]);

    // explain=false: no explanation anywhere.
    let response = app
        .post_json("/v1/score?explain=false", &json!(records))
        .await;
    let plain = json_ok(response).await;
    assert!(
        plain["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("explanation").is_none()),
        "explain=false leaves explanations out"
    );
    assert_eq!(scores(&plain), scores(&all));

    // explain=all: every record explained.
    let response = app
        .post_json("/v1/score?explain=all", &json!(&records[..10]))
        .await;
    let explained = json_ok(response).await;
    assert!(
        explained["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["explanation"].is_array())
    );

    // Accept: text/csv gives one row per record.
    let response = app
        .post_json_accept("/v1/score", "text/csv", &json!(records))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("index,score,is_anomaly,severity"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 720);
    for (i, row) in rows.iter().enumerate() {
        let r = &results[i];
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[1].parse::<f64>().unwrap(), r["score"].as_f64().unwrap());
        assert_eq!(row[2], r["is_anomaly"].as_bool().unwrap().to_string());
        assert_eq!(row[3], r["severity"].to_string());
    }
}

#[tokio::test]
async fn evaluation_finds_every_burst() {
    let app = oneshot_app().await;
    assert_problem(
        app.post_json("/v1/evaluate", &json!([{"bytes_sent": 1, "label": 0}]))
            .await,
        StatusCode::CONFLICT,
        "no-model",
    )
    .await;
    app.fit_seed().await;
    let records = app.seed_records().await;

    let report = json_ok(app.post_json("/v1/evaluate", &json!(records)).await).await;
    assert_eq!(report["model_version"], 1);
    assert_eq!(report["n_records"], 720);
    let cm = &report["confusion_matrix"];
    assert_eq!(cm["tp"], 8, "all 8 bursts are found: {cm}");
    assert_eq!(cm["fn"], 0, "{cm}");
    let total: u64 = ["tp", "fp", "tn", "fn"]
        .iter()
        .map(|k| cm[*k].as_u64().unwrap())
        .sum();
    assert_eq!(total, 720);
    let auc = report["roc_auc"].as_f64().expect("both classes present");
    assert!(auc > 0.99, "ROC AUC {auc}");
    assert!(report["average_precision"].as_f64().unwrap() > 0.9);
    assert_eq!(report["threshold"], 0.5);
    assert_eq!(report["classification_report"]["anomaly"]["recall"], 1.0);
    assert!(report.get("budget").is_none());

    let response = app
        .post_json(
            "/v1/evaluate",
            &json!({"records": records, "max_false_positive_rate": 0.01}),
        )
        .await;
    let with_budget = json_ok(response).await;
    let budget = &with_budget["budget"];
    assert!(budget["threshold"].is_number(), "{budget}");
    let fpr = budget["false_positive_rate"].as_f64().unwrap();
    assert!(fpr <= 0.01, "the budget is kept: {budget}");
    assert_eq!(
        with_budget["confusion_matrix"], *cm,
        "the budget does not move the model's threshold"
    );

    // The budget may also come in the query string (and CSV bodies must use it).
    let csv = to_csv(&records, &["label"]);
    let response = app
        .post_csv("/v1/evaluate?max_false_positive_rate=0.01", csv)
        .await;
    let from_csv = json_with_status(response, StatusCode::OK).await;
    assert_eq!(from_csv["confusion_matrix"], *cm);
    assert_eq!(from_csv["budget"], *budget);
}
