//! Named detectors: create, read, replace and delete them; each has its own settings, model
//! versions, chart and alerts; the v1 paths are the detector `default`; detectors and their
//! active models survive a restart; a data directory from before detectors serves as `default`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::support::app::{TestApp, oneshot_app, oneshot_app_in, oneshot_app_with, spawn_app};
use crate::support::data::scores;
use crate::support::responses::{assert_problem, json_ok, json_with_status};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

fn zeek_log() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zeek/exfil_conn.log");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn put(app: &TestApp, name: &str, body: &Value) -> reqwest::Response {
    app.send(
        app.request(Method::PUT, &format!("/v1/detectors/{name}"))
            .json(body),
    )
    .await
}

async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.send(app.request(Method::DELETE, path)).await
}

/// POSTs the Zeek conn log fixture (TSV) to `path` and insists on `status`.
async fn post_zeek(app: &TestApp, path: &str, status: StatusCode) -> Value {
    json_with_status(
        app.post_raw(path, Some("text/zeek-tsv"), zeek_log()).await,
        status,
    )
    .await
}

async fn fit_at(app: &TestApp, detector: &str, body: &Value) -> Value {
    let response = app
        .post_json(&format!("/v1/detectors/{detector}/model/fit"), body)
        .await;
    json_with_status(response, StatusCode::CREATED).await
}

const ZEEK: &str = "zeek-hosts";
const RECORDS: &str = "flows";

fn zeek_settings() -> Value {
    json!({"source": {"format": "zeek", "window": "5m", "group_by": "id.orig_h", "allowed_lateness": "2m"},
           "params": {"n_estimators": 50, "contamination": "auto", "baseline": "global", "seasonality": "none"},
           "alerting": {"min_severity": 60, "close_after": "30m", "renotify_severity_step": 10}})
}

#[tokio::test]
async fn detectors_are_created_replaced_read_and_listed() {
    let app = oneshot_app().await;
    let list = json_ok(app.get("/v1/detectors").await).await;
    let names: Vec<&str> = list["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default"], "default always exists: {list}");
    let default = &list["detectors"][0];
    assert_eq!(default["source"]["format"], "records");
    assert_eq!(default["model_version"], Value::Null);
    assert_eq!(default["created_at"], Value::Null, "never put");

    let created = put(&app, ZEEK, &zeek_settings()).await;
    assert_eq!(
        created.headers()[header::LOCATION],
        "/v1/detectors/zeek-hosts"
    );
    let created = json_with_status(created, StatusCode::CREATED).await;
    assert_eq!(created["name"], ZEEK);
    assert_eq!(created["source"]["window"], "5m");
    assert_eq!(created["params"]["n_estimators"], 50);
    assert_eq!(created["params"]["seed"], 42, "defaults filled in");
    assert_eq!(created["alerting"]["min_severity"], 60);
    assert!(created["created_at"].is_string());

    // Replacing: 200, the new settings, the creation time kept.
    let mut changed = zeek_settings();
    changed["source"]["window"] = json!("1m");
    let replaced = json_ok(put(&app, ZEEK, &changed).await).await;
    assert_eq!(replaced["source"]["window"], "1m");
    assert_eq!(replaced["created_at"], created["created_at"]);
    let read = json_ok(app.get("/v1/detectors/zeek-hosts").await).await;
    assert_eq!(read, replaced);

    json_with_status(put(&app, RECORDS, &json!({})).await, StatusCode::CREATED).await;
    let list = json_ok(app.get("/v1/detectors").await).await;
    let names: Vec<&str> = list["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", RECORDS, ZEEK]);
}

#[tokio::test]
async fn settings_and_names_that_cannot_be_used_are_clear_problems() {
    let app = oneshot_app().await;
    for (name, body, field) in [
        ("Bad.Name", json!({}), Some("name")),
        ("-x", json!({}), Some("name")),
        (&"x".repeat(64)[..], json!({}), Some("name")),
        ("ok", json!({"sauce": {}}), Some("sauce")),
        (
            "ok",
            json!({"source": {"format": "syslog"}}),
            Some("source.format"),
        ),
        (
            "ok",
            json!({"source": {"format": "zeek", "window": "5 minutes"}}),
            Some("source.window"),
        ),
        (
            "ok",
            json!({"source": {"format": "zeek", "group_by": "src_ip"}}),
            Some("source.group_by"),
        ),
        (
            "ok",
            json!({"source": {"window": "5m"}}),
            Some("source.window"),
        ),
        (
            "ok",
            json!({"params": {"baseline": "entity"}}),
            Some("source.group_by"),
        ),
        (
            "ok",
            json!({"params": {"seasonality": "daily"}}),
            Some("params.seasonality"),
        ),
        (
            "ok",
            json!({"params": {"baseline": "peers"}}),
            Some("params"),
        ),
        (
            "ok",
            json!({"params": {"contamination": 0.7}}),
            Some("params.contamination"),
        ),
        (
            "ok",
            json!({"alerting": {"min_severity": 101}}),
            Some("alerting.min_severity"),
        ),
        (
            "ok",
            json!({"training": {"auto": true}}),
            Some("training.auto"),
        ),
        (
            "ok",
            json!({"training": {"history": "a week"}}),
            Some("training.history"),
        ),
        ("ok", json!([1, 2]), None),
    ] {
        let problem = assert_problem(
            put(&app, name, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-detector",
        )
        .await;
        assert_eq!(problem["field"].as_str(), field, "{name} {body}: {problem}");
    }
    let problem = assert_problem(
        put(&app, "ok", &json!({"params": {"baseline": "entity"}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-detector",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("group_by"),
        "{problem}"
    );
    // Not JSON at all, or not sent as JSON.
    let malformed = app.send(
        app.request(Method::PUT, "/v1/detectors/ok")
            .header(header::CONTENT_TYPE, "application/json")
            .body("{\"source\":"),
    );
    assert_problem(malformed.await, StatusCode::BAD_REQUEST, "malformed-body").await;
    let csv = app.send(
        app.request(Method::PUT, "/v1/detectors/ok")
            .header(header::CONTENT_TYPE, "text/csv")
            .body("a,b\n1,2\n"),
    );
    assert_problem(
        csv.await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    // Nothing of the refused requests was stored.
    let list = json_ok(app.get("/v1/detectors").await).await;
    assert_eq!(list["detectors"].as_array().unwrap().len(), 1, "{list}");

    // Unknown detectors, on every kind of route.
    for path in [
        "/v1/detectors/nope",
        "/v1/detectors/nope/model",
        "/v1/detectors/nope/model/versions",
        "/v1/detectors/nope/chart.png",
    ] {
        assert_problem(
            app.get(path).await,
            StatusCode::NOT_FOUND,
            "no-such-detector",
        )
        .await;
    }
    let score = app
        .post_json("/v1/detectors/nope/score", &json!([{"a": 1}]))
        .await;
    assert_problem(score, StatusCode::NOT_FOUND, "no-such-detector").await;
    assert_problem(
        delete(&app, "/v1/detectors/nope").await,
        StatusCode::NOT_FOUND,
        "no-such-detector",
    )
    .await;
    assert_problem(
        delete(&app, "/v1/detectors/default").await,
        StatusCode::CONFLICT,
        "default-detector",
    )
    .await;
}

#[tokio::test]
async fn a_zeek_detector_and_a_records_detector_fit_and_score_side_by_side() {
    let app = oneshot_app().await;
    json_with_status(put(&app, ZEEK, &zeek_settings()).await, StatusCode::CREATED).await;
    json_with_status(
        put(
            &app,
            RECORDS,
            &json!({"params": {"n_estimators": 30, "seed": 7}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    // The Zeek detector's own window and entity apply without query parameters.
    let fit = app
        .post_raw(
            "/v1/detectors/zeek-hosts/model/fit",
            Some("text/zeek-tsv"),
            zeek_log(),
        )
        .await;
    assert_eq!(
        fit.headers()[header::LOCATION],
        "/v1/detectors/zeek-hosts/model"
    );
    let zeek_model = json_with_status(fit, StatusCode::CREATED).await;
    // 8 hosts, each busy in (nearly) every 5-minute window of 6 hours: far more records than
    // the 48 host-hours the same log gives with `window=1h`.
    let windows = zeek_model["n_training_records"].as_u64().unwrap();
    assert!(windows > 8 * 6 * 5, "5-minute windows per host: {windows}");
    assert_eq!(
        zeek_model["params"]["n_estimators"], 50,
        "the detector's params"
    );
    let records_model = fit_at(&app, RECORDS, &json!({"generate": {}})).await;
    assert_eq!(records_model["n_training_records"], 720);
    assert_eq!(records_model["params"]["n_estimators"], 30);
    assert_eq!(records_model["params"]["seed"], 7);
    // A fit's own parameter overrides the detector's one by one.
    let reseeded = fit_at(
        &app,
        RECORDS,
        &json!({"generate": {}, "params": {"seed": 8}}),
    )
    .await;
    assert_eq!(reseeded["params"]["n_estimators"], 30);
    assert_eq!(reseeded["params"]["seed"], 8);
    json_ok(
        app.post_empty(&format!(
            "/v1/detectors/flows/model/versions/{}/activate",
            records_model["version"]
        ))
        .await,
    )
    .await;

    // Each detector serves its own model; default has none.
    let zeek_read = json_ok(app.get("/v1/detectors/zeek-hosts/model").await).await;
    assert_eq!(zeek_read, zeek_model);
    let records_read = json_ok(app.get("/v1/detectors/flows/model").await).await;
    assert_eq!(records_read, records_model);
    assert_problem(
        app.get("/v1/model").await,
        StatusCode::NOT_FOUND,
        "no-model",
    )
    .await;
    let versions = json_ok(app.get("/v1/detectors/flows/model/versions").await).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert_eq!(versions["active"], records_model["version"]);
    let versions = json_ok(app.get("/v1/detectors/zeek-hosts/model/versions").await).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);

    // Scoring: the Zeek log per host and 5-minute window; the exfiltrating host stands out.
    let scored = post_zeek(&app, "/v1/detectors/zeek-hosts/score", StatusCode::OK).await;
    assert_eq!(scored["model_version"], zeek_model["version"]);
    let results = scored["results"].as_array().unwrap();
    assert_eq!(results.len() as u64, windows);
    let top = results
        .iter()
        .max_by(|a, b| {
            a["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["score"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(top["entity"], "10.0.0.6", "{top}");
    assert_eq!(scored["alert"]["detector"], ZEEK);
    // The request's own window still wins over the detector's.
    let hourly = post_zeek(
        &app,
        "/v1/detectors/zeek-hosts/score?window=1h",
        StatusCode::OK,
    )
    .await;
    assert_eq!(hourly["results"].as_array().unwrap().len(), 48);

    let records = app.seed_records().await;
    let flows = json_ok(
        app.post_json("/v1/detectors/flows/score", &json!(records))
            .await,
    )
    .await;
    assert_eq!(flows["model_version"], records_model["version"]);
    assert_eq!(flows["results"].as_array().unwrap().len(), 720);
    assert_eq!(flows["alert"]["detector"], RECORDS);
    assert_problem(
        app.post_json("/v1/score", &json!(records)).await,
        StatusCode::CONFLICT,
        "no-model",
    )
    .await;

    // Evaluating and drawing, per detector.
    let evaluated = json_ok(
        app.post_json("/v1/detectors/flows/evaluate", &json!(records))
            .await,
    )
    .await;
    assert_eq!(evaluated["model_version"], records_model["version"]);
    assert_eq!(evaluated["n_records"], 720);
    let png = app.get("/v1/detectors/zeek-hosts/chart.png").await;
    assert_eq!(png.status(), StatusCode::OK);
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let svg = app
        .get("/v1/detectors/flows/chart.svg?source=training")
        .await;
    assert_eq!(svg.status(), StatusCode::OK);
    assert_problem(
        app.get("/v1/chart.png").await,
        StatusCode::CONFLICT,
        "nothing-to-draw",
    )
    .await;

    // Alerts, filtered by detector, in JSON and in a SIEM's format.
    let zeek_alerts = app.alerts("?detector=zeek-hosts").await;
    let flows_alerts = app.alerts("?detector=flows").await;
    // Windows grouped by host are incidents: one per anomalous host across the 5-minute and
    // the hourly batch, never two open for one host.
    let hosts: std::collections::HashSet<&str> = zeek_alerts
        .iter()
        .map(|a| a["entity"].as_str().expect("a host's incident"))
        .collect();
    assert_eq!(hosts.len(), zeek_alerts.len(), "one incident per host");
    assert!(zeek_alerts.len() >= 2, "{zeek_alerts:?}");
    assert!(zeek_alerts.iter().all(|a| a["count"].as_u64() >= Some(1)));
    assert_eq!(flows_alerts.len(), 1);
    assert!(zeek_alerts.iter().all(|a| a["detector"] == ZEEK));
    assert_eq!(flows_alerts[0]["id"], flows["alert"]["id"]);
    assert!(
        flows_alerts[0]["entity"].is_null(),
        "records without entity: a batch alert"
    );
    assert!(app.alerts("?detector=default").await.is_empty());
    assert_eq!(app.alerts("").await.len(), zeek_alerts.len() + 1);
    let ecs = app.get("/v1/alerts?detector=flows&format=ecs").await;
    let ecs: Value = serde_json::from_str(ecs.text().await.unwrap().trim()).unwrap();
    assert_eq!(ecs["rule"]["ruleset"], RECORDS);
    assert_eq!(ecs["event"]["id"], flows["alert"]["id"]);
}

#[tokio::test]
async fn the_v1_paths_are_the_detector_default() {
    let app = oneshot_app_with(|s| s.alert_rate = 1.0).await;
    let fitted = app.fit_small(3).await;
    let via_detector = json_ok(app.get("/v1/detectors/default/model").await).await;
    assert_eq!(via_detector, fitted);
    assert_eq!(
        json_ok(app.get("/v1/detectors/default/model/versions").await).await,
        json_ok(app.get("/v1/model/versions").await).await
    );
    let records = app.seed_records().await;
    let v1 = app.score(&records).await;
    let named = json_ok(
        app.post_json("/v1/detectors/default/score", &json!(records))
            .await,
    )
    .await;
    assert_eq!(scores(&named), scores(&v1));
    assert_eq!(named["summary"], v1["summary"]);
    // A fit through the detector path is v1's next version.
    let again = fit_at(
        &app,
        "default",
        &json!({"generate": {}, "params": {"n_estimators": 20, "seed": 4}}),
    )
    .await;
    assert_eq!(again["version"], fitted["version"].as_u64().unwrap() + 1);
    assert_eq!(app.active_version().await, again["version"].as_u64());
    let listed = json_ok(app.get("/v1/detectors/default").await).await;
    assert_eq!(listed["model_version"], again["version"]);
    // Its alerts are default's, and its settings apply to the v1 paths.
    let alerts = app.alerts("?detector=default").await;
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().all(|a| a["detector"] == "default"));
    // `alerting.min_severity` of `default` is the v1 paths' alert severity: a batch whose top
    // severity is m alerts at min_severity m and not at m + 1 (the rate rule is off here).
    let calm: Vec<Value> = v1["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["severity"].as_u64().unwrap() < 100)
        .map(|r| records[r["index"].as_u64().unwrap() as usize].clone())
        .collect();
    let top = app.score(&calm).await["summary"]["max_severity"]
        .as_u64()
        .unwrap();
    assert!(top < 100);
    for (min, alerts) in [(top, true), (top + 1, false)] {
        json_ok(put(&app, "default", &json!({"alerting": {"min_severity": min}})).await).await;
        let scored = app.score(&calm).await;
        assert_eq!(
            !scored["alert"].is_null(),
            alerts,
            "min_severity {min}, top {top}"
        );
    }
}

#[tokio::test]
async fn deleting_keeps_alerts_and_refuses_to_drop_models_without_force() {
    let app = oneshot_app().await;
    json_with_status(
        put(&app, RECORDS, &json!({"params": {"n_estimators": 20}})).await,
        StatusCode::CREATED,
    )
    .await;
    fit_at(&app, RECORDS, &json!({"generate": {}})).await;
    let records = app.seed_records().await;
    let scored = json_ok(
        app.post_json("/v1/detectors/flows/score", &json!(records))
            .await,
    )
    .await;
    let alert_id = scored["alert"]["id"].as_str().unwrap().to_owned();
    let models_dir = app.data_path().join("detectors/flows/models");
    assert!(models_dir.is_dir(), "its own model directory");

    let refused = assert_problem(
        delete(&app, "/v1/detectors/flows").await,
        StatusCode::CONFLICT,
        "detector-in-use",
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().contains("force=true"));
    json_ok(app.get("/v1/detectors/flows/model").await).await;

    let deleted = json_ok(delete(&app, "/v1/detectors/flows?force=true").await).await;
    assert_eq!(
        deleted,
        json!({"name": RECORDS, "models_deleted": 1, "alerts_kept": true})
    );
    assert!(!app.data_path().join("detectors/flows").exists());
    assert_problem(
        app.get("/v1/detectors/flows").await,
        StatusCode::NOT_FOUND,
        "no-such-detector",
    )
    .await;
    assert_problem(
        app.get("/v1/detectors/flows/model").await,
        StatusCode::NOT_FOUND,
        "no-such-detector",
    )
    .await;
    let kept = app.alerts("?detector=flows").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["id"], alert_id);

    // A detector without models goes without force; one put again starts afresh.
    json_with_status(put(&app, RECORDS, &json!({})).await, StatusCode::CREATED).await;
    let fresh = json_ok(app.get("/v1/detectors/flows").await).await;
    assert_eq!(fresh["model_version"], Value::Null);
    json_ok(delete(&app, "/v1/detectors/flows").await).await;
}

#[tokio::test]
async fn detectors_and_their_active_models_survive_a_restart() {
    let app = spawn_app().await;
    json_with_status(put(&app, ZEEK, &zeek_settings()).await, StatusCode::CREATED).await;
    json_with_status(
        put(&app, RECORDS, &json!({"params": {"n_estimators": 20}})).await,
        StatusCode::CREATED,
    )
    .await;
    let first = post_zeek(
        &app,
        "/v1/detectors/zeek-hosts/model/fit",
        StatusCode::CREATED,
    )
    .await;
    let _second = post_zeek(
        &app,
        "/v1/detectors/zeek-hosts/model/fit?seed=9",
        StatusCode::CREATED,
    )
    .await;
    // Rolled back to the first: that is what a restart must serve.
    json_ok(
        app.post_empty("/v1/detectors/zeek-hosts/model/versions/1/activate")
            .await,
    )
    .await;
    let flows_model = fit_at(&app, RECORDS, &json!({"generate": {}})).await;
    let before = post_zeek(&app, "/v1/detectors/zeek-hosts/score", StatusCode::OK).await;
    let settings_before = json_ok(app.get("/v1/detectors").await).await;

    let app = app.restart().await;
    let settings_after = json_ok(app.get("/v1/detectors").await).await;
    assert_eq!(settings_after, settings_before);
    assert_eq!(
        json_ok(app.get("/v1/detectors/zeek-hosts/model").await).await,
        first
    );
    assert_eq!(
        json_ok(app.get("/v1/detectors/flows/model").await).await,
        flows_model
    );
    let after = post_zeek(&app, "/v1/detectors/zeek-hosts/score", StatusCode::OK).await;
    assert_eq!(scores(&after), scores(&before));
    assert_eq!(after["model_version"], 1);
    assert_eq!(
        app.active_version().await,
        None,
        "default still has no model"
    );
}

/// A data directory laid out as the code before detectors left it: model files in `models/`
/// with an `ACTIVE` pointer, and an alert database at schema 2 (the fixture written by an
/// earlier build).
#[tokio::test]
async fn a_data_dir_from_before_detectors_serves_as_default() {
    use netsentinel::detector::Matrix;
    use netsentinel::detector::model::Model;
    use netsentinel::detector::params::ForestParams;
    use netsentinel::store::model_files::ModelFiles;

    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(crate::alerts_v1::SQLITE, dir.path().join("alerts.db")).unwrap();
    let features: Vec<String> = [
        "bytes_sent",
        "bytes_received",
        "connections",
        "active_sessions",
    ]
    .map(String::from)
    .to_vec();
    let data: Vec<f64> = (0..400).map(|i| f64::from((i * 37) % 101)).collect();
    let mut model = Model::fit(
        &Matrix::new(100, 4, data).unwrap(),
        features,
        &ForestParams {
            n_estimators: 10,
            ..ForestParams::default()
        },
        chrono::Utc::now(),
    )
    .unwrap();
    model.set_version(7);
    let files = ModelFiles::open(dir.path(), 10).unwrap();
    files.save(7, &model.to_bytes()).unwrap();
    files.set_active(7).unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let settings = netsentinel::config::Settings::default();
    let app = oneshot_app_in(dir.clone(), settings).await;
    let v1 = json_ok(app.get("/v1/model").await).await;
    assert_eq!(v1["version"], 7);
    assert_eq!(
        json_ok(app.get("/v1/detectors/default/model").await).await,
        v1
    );
    let default = json_ok(app.get("/v1/detectors/default").await).await;
    assert_eq!(default["model_version"], 7);
    let old = app.alerts("?detector=default").await;
    assert_eq!(old.len(), 4, "the old alerts are default's");
    assert!(old.iter().all(|a| a["detector"] == "default"));
    assert!(app.alerts("?detector=other").await.is_empty());
    // Nothing moved: the model files are where they were.
    let mut after: Vec<_> = std::fs::read_dir(dir.path().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(after, before);
    let scored = app
        .score(&[
            json!({"bytes_sent": 1, "bytes_received": 2, "connections": 3, "active_sessions": 4}),
        ])
        .await;
    assert_eq!(scored["model_version"], 7);
}
