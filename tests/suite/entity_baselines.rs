//! Entity baselines over HTTP (issue #16): a fit with `params.baseline=entity` on the network
//! profile, scores judged against each host's own hours, unseen hosts on the global fallback,
//! explanations in the host's terms, and the same through a CSV body's query string.

use chrono::{TimeDelta, Timelike};
use netsentinel::detector::generator::network::{HostKind, hosts};
use netsentinel::detector::generator::{GeneratorConfig, SampleRecord, generate};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::app::oneshot_app;
use crate::support::data::to_csv;
use crate::support::responses::{assert_problem, json_ok};

const FEATURES: [&str; 4] = [
    "bytes_sent",
    "bytes_received",
    "connections",
    "active_sessions",
];

fn as_json(r: &SampleRecord) -> Value {
    json!({
        "timestamp": r.timestamp.to_rfc3339(),
        "src_ip": r.src_ip,
        "bytes_sent": r.bytes_sent,
        "bytes_received": r.bytes_received,
        "connections": r.connections,
        "active_sessions": r.active_sessions,
    })
}

/// Three days of 20 hosts to fit on (no attacks) and the fourth day.
fn network() -> (Vec<SampleRecord>, Vec<SampleRecord>) {
    let cfg = GeneratorConfig::network(20, 4, 0.0, 11);
    let split = cfg.start + TimeDelta::days(3);
    generate(&cfg)
        .unwrap()
        .into_iter()
        .partition(|r| r.timestamp < split)
}

#[tokio::test]
async fn an_entity_fit_judges_each_host_by_its_own_hours_and_says_when_it_cannot() {
    let app = oneshot_app().await;
    let (train, test) = network();
    let records: Vec<Value> = train.iter().map(as_json).collect();
    let meta = app
        .fit(json!({
            "records": records,
            "features": FEATURES,
            "params": {"baseline": "entity", "seasonality": "daily", "group_by": "src_ip", "n_estimators": 20},
        }))
        .await;
    assert_eq!(meta["baseline"], "entity", "{meta}");
    assert_eq!(meta["seasonality"], "daily");
    assert_eq!(meta["entity_field"], "src_ip");
    assert_eq!(meta["threshold"], 0.5);
    assert!(
        meta["training_anomaly_rate"].as_f64().unwrap() <= 0.01,
        "{meta}"
    );
    let model = json_ok(app.get("/v1/model").await).await;
    assert_eq!(model["baseline"], "entity");

    // A workstation's noon window, the same values at 03:00, and at noon from an unseen host.
    let ws = hosts(20, 11)
        .into_iter()
        .find(|h| h.kind == HostKind::Workstation)
        .unwrap();
    let at = |hour: u32| {
        test.iter()
            .find(|r| r.src_ip.as_deref() == Some(&ws.ip) && r.timestamp.hour() == hour)
            .unwrap()
    };
    let noon = at(13);
    let mut night = noon.clone();
    night.timestamp = at(3).timestamp;
    let mut stranger = noon.clone();
    stranger.src_ip = Some("10.250.0.1".into());
    let body: Vec<Value> = [noon, &night, &stranger].into_iter().map(as_json).collect();
    let answer = json_ok(app.post_json("/v1/score?explain=all", &json!(body)).await).await;
    let results = answer["results"].as_array().unwrap();
    let score = |i: usize| results[i]["score"].as_f64().unwrap();
    assert_eq!(
        results[0]["is_anomaly"], false,
        "its day peak is usual: {answer}"
    );
    assert_eq!(
        results[1]["is_anomaly"], true,
        "the same at night is not: {answer}"
    );
    assert!(score(1) > score(0) + 0.2, "{answer}");
    // Judged by its own baseline: no `baseline` field; the unseen host says so.
    assert!(results[0].get("baseline").is_none() && results[1].get("baseline").is_none());
    assert_eq!(results[2]["baseline"], "global_fallback", "{answer}");
    // Explained against the workstation's band at 03:00, far below the noon values.
    let explained = results[1]["explanation"].as_array().unwrap();
    assert!(!explained.is_empty(), "{answer}");
    for c in explained {
        assert_eq!(c["direction"], "above", "{c}");
        let value = c["value"].as_f64().unwrap();
        assert!(c["normal_range"][1].as_f64().unwrap() < value, "{c}");
        // The expected value and band are the host's at 03:00, and say so in words.
        let [lo, hi] = [0, 1].map(|k| c["band"][k].as_f64().unwrap());
        let expected = c["expected"].as_f64().unwrap();
        assert_eq!(c["band"], c["normal_range"], "{c}");
        assert!(lo <= expected && expected <= hi && hi < value, "{c}");
        let line = c["summary"].as_str().unwrap();
        let head = format!("{} ", c["feature"].as_str().unwrap());
        assert!(line.starts_with(&head), "{line}");
        assert!(
            line.contains(&format!("usual for {} at 03:00 is ", ws.ip)),
            "{line}"
        );
    }
    // The unseen host's band is the population's, and its line says so.
    let line = results[2]["explanation"][0]["summary"].as_str().unwrap();
    assert!(
        line.contains("usual across all entities at 13:00"),
        "{line}"
    );
    // At noon the band holds the noon value's bytes.
    let day = results[0]["explanation"].as_array().unwrap();
    if let Some(c) = day.iter().find(|c| c["feature"] == "bytes_sent") {
        let [lo, hi] = [0, 1].map(|k| c["normal_range"][k].as_f64().unwrap());
        assert!(lo < c["value"].as_f64().unwrap() && lo < hi, "{c}");
    }
    // The alert the night window raised keeps the explanation in the host's terms.
    let alert = &answer["alert"];
    assert!(alert.is_object(), "{answer}");
    let top = &alert["records"][0]["explanation"][0];
    assert!(
        top["band"].is_array() && top["summary"].is_string(),
        "{alert}"
    );
    // And so do the SIEM formats: the stored alert read back, as OCSF, ECS, CEF and JSON.
    let id = alert["id"].as_str().unwrap();
    let line = top["summary"].as_str().unwrap();
    for format in ["ocsf", "ecs", "cef", "json"] {
        let exported = app.get(&format!("/v1/alerts/{id}?format={format}")).await;
        assert_eq!(exported.status(), StatusCode::OK, "{format}");
        let text = exported.text().await.unwrap();
        assert!(text.contains(line), "{format}: {text}");
    }
    // It is the workstation's incident (the fit's group_by names the entity), and the same
    // window again joins it instead of raising another alert.
    assert_eq!(alert["entity"], ws.ip.as_str(), "{alert}");
    let again = json_ok(app.post_json("/v1/score", &json!([as_json(&night)])).await).await;
    assert_eq!(again["alert"]["id"], alert["id"], "{again}");
    assert_eq!(again["alert"]["count"], 2, "{again}");
}

#[tokio::test]
async fn a_detectors_entity_setting_makes_its_fits_entity_fits_and_needs_timestamps() {
    let app = oneshot_app().await;
    let settings = json!({
        "source": {"group_by": "src_ip"},
        "features": FEATURES,
        "params": {"baseline": "entity", "seasonality": "daily", "n_estimators": 10},
    });
    let put = app.send(
        app.request(reqwest::Method::PUT, "/v1/detectors/hosts")
            .json(&settings),
    );
    let view = json_ok_status(put.await, StatusCode::CREATED).await;
    assert_eq!(view["params"]["baseline"], "entity", "{view}");
    assert_eq!(view["params"]["seasonality"], "daily", "{view}");
    // A fit that names no baseline takes the detector's.
    let (train, test) = network();
    let records: Vec<Value> = train.iter().map(as_json).collect();
    let fitted = app
        .post_json(
            "/v1/detectors/hosts/model/fit",
            &json!({"records": records}),
        )
        .await;
    let meta = json_ok_status(fitted, StatusCode::CREATED).await;
    assert_eq!(meta["baseline"], "entity", "{meta}");
    assert_eq!(meta["seasonality"], "daily", "{meta}");
    assert_eq!(meta["entity_field"], "src_ip", "{meta}");
    // Its own baseline=global wins.
    let global = app
        .post_json(
            "/v1/detectors/hosts/model/fit",
            &json!({"records": records, "params": {"baseline": "global"}}),
        )
        .await;
    let meta = json_ok_status(global, StatusCode::CREATED).await;
    assert!(meta.get("baseline").is_none(), "{meta}");
    let again = app
        .post_json(
            "/v1/detectors/hosts/model/fit",
            &json!({"records": records}),
        )
        .await;
    json_ok_status(again, StatusCode::CREATED).await;

    // A seasonal model cannot place a record without a timestamp at an hour: 422, naming it.
    let mut undated: Vec<Value> = test[..3].iter().map(as_json).collect();
    undated[1].as_object_mut().unwrap().remove("timestamp");
    let problem = assert_problem(
        app.post_json("/v1/detectors/hosts/score", &json!(undated))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-records",
    )
    .await;
    assert_eq!(problem["field"], "timestamp", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("daily"),
        "{problem}"
    );
    // With every timestamp the same records score.
    let dated: Vec<Value> = test[..3].iter().map(as_json).collect();
    let answer = json_ok(
        app.post_json("/v1/detectors/hosts/score", &json!(dated))
            .await,
    )
    .await;
    assert_eq!(answer["results"].as_array().unwrap().len(), 3, "{answer}");
}

#[tokio::test]
async fn a_csv_fit_takes_the_baseline_from_the_query_string() {
    let app = oneshot_app().await;
    let (train, _) = network();
    let records: Vec<Value> = train.iter().map(as_json).collect();
    let csv = to_csv(&records, &["src_ip"]);
    let response = app
        .post_csv(
            "/v1/model/fit?baseline=entity&seasonality=weekly&group_by=src_ip&n_estimators=10",
            csv.clone(),
        )
        .await;
    let meta = json_ok_status(response, StatusCode::CREATED).await;
    assert_eq!(meta["seasonality"], "weekly", "{meta}");
    assert_eq!(meta["entity_field"], "src_ip");
    // An entity baseline needs its entity field; seasonality needs an entity baseline.
    for (query, field) in [
        ("baseline=entity", "group_by"),
        ("seasonality=daily", "seasonality"),
        ("baseline=peers", "baseline"),
    ] {
        let problem = assert_problem(
            app.post_csv(&format!("/v1/model/fit?{query}"), csv.clone())
                .await,
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
        )
        .await;
        assert_eq!(problem["field"], field, "{query}: {problem}");
    }
    // A global fit's answer says nothing of baselines, as before.
    let response = app.post_csv("/v1/model/fit?n_estimators=10", csv).await;
    let meta = json_ok_status(response, StatusCode::CREATED).await;
    assert!(
        meta.get("baseline").is_none() && meta.get("entity_field").is_none(),
        "{meta}"
    );
}

async fn json_ok_status(response: reqwest::Response, status: StatusCode) -> Value {
    crate::support::responses::json_with_status(response, status).await
}
