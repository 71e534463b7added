//! The checked-in `openapi/openapi.json` is exactly what the code generates, covers the API in
//! DESIGN.md, and documents the problems each operation can answer.

mod support;

use std::path::Path;

use serde_json::Value;
use support::app::oneshot_app;
use support::responses::json_ok;

const REGENERATE: &str = "cargo run -- openapi > openapi/openapi.json";

fn generated() -> String {
    let json = netsentinel::api::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    format!("{json}\n")
}

fn checked_in() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}); generate it with `{REGENERATE}`",
            path.display()
        )
    })
}

fn document() -> Value {
    serde_json::from_str(&generated()).expect("the document is JSON")
}

/// Every operation of the API (DESIGN.md's table, without /openapi.json and /docs,
/// which are plain routes outside the document and are checked live below), with the 4xx
/// statuses its handler can answer.
const OPERATIONS: &[(&str, &str, &[u16])] = &[
    ("get", "/healthz", &[]),
    ("get", "/readyz", &[]),
    ("get", "/metrics", &[]),
    ("post", "/v1/samples", &[400, 406, 413, 415, 422]),
    ("post", "/v1/model/fit", &[400, 409, 413, 415, 422]),
    ("get", "/v1/model", &[404]),
    ("get", "/v1/model/versions", &[]),
    (
        "post",
        "/v1/model/versions/{version}/activate",
        &[400, 404, 409],
    ),
    ("post", "/v1/score", &[400, 406, 409, 413, 415, 422]),
    ("post", "/v1/evaluate", &[400, 409, 413, 415, 422]),
    ("post", "/v1/evaluate/verdicts", &[400, 409, 422]),
    ("get", "/v1/alerts", &[400]),
    ("get", "/v1/alerts/export/{format}", &[400]),
    ("get", "/v1/alerts/{id}", &[404]),
    ("get", "/v1/alerts/{id}/export/{format}", &[400, 404]),
    ("post", "/v1/alerts/{id}/ack", &[404]),
    (
        "post",
        "/v1/alerts/{id}/feedback",
        &[400, 404, 413, 415, 422],
    ),
    ("get", "/v1/suppressions", &[]),
    ("post", "/v1/suppressions", &[400, 413, 415, 422]),
    ("delete", "/v1/suppressions/{id}", &[404]),
    ("get", "/v1/chart.png", &[400, 409]),
    ("get", "/v1/chart.svg", &[400, 409]),
    ("get", "/v1/detectors", &[]),
    ("get", "/v1/detectors/{name}", &[404]),
    ("put", "/v1/detectors/{name}", &[400, 415, 422]),
    ("delete", "/v1/detectors/{name}", &[400, 404, 409]),
    (
        "post",
        "/v1/detectors/{name}/model/fit",
        &[400, 404, 413, 415, 422],
    ),
    ("get", "/v1/detectors/{name}/model", &[404]),
    ("get", "/v1/detectors/{name}/model/versions", &[404]),
    (
        "post",
        "/v1/detectors/{name}/model/versions/{version}/activate",
        &[400, 404, 409],
    ),
    (
        "post",
        "/v1/detectors/{name}/score",
        &[400, 404, 406, 409, 413, 415, 422],
    ),
    (
        "post",
        "/v1/detectors/{name}/evaluate",
        &[400, 404, 409, 413, 415, 422],
    ),
    (
        "post",
        "/v1/detectors/{name}/evaluate/verdicts",
        &[400, 404, 409, 422],
    ),
    ("get", "/v1/detectors/{name}/chart.png", &[400, 404, 409]),
    ("get", "/v1/detectors/{name}/chart.svg", &[400, 404, 409]),
    ("post", "/v1/ingest", &[400, 409, 413, 415, 422]),
    ("post", "/v1/flush", &[409]),
    ("get", "/v1/windows", &[400]),
    (
        "post",
        "/v1/detectors/{name}/ingest",
        &[400, 404, 409, 413, 415, 422],
    ),
    ("post", "/v1/detectors/{name}/flush", &[404, 409]),
    ("get", "/v1/detectors/{name}/windows", &[400, 404]),
];

#[test]
fn every_operation_id_is_unique() {
    let doc = document();
    let mut seen = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op["operationId"].as_str() {
                assert!(
                    seen.insert(id.to_owned()),
                    "{method} {path}: operationId {id} twice"
                );
            }
        }
    }
}

#[test]
fn the_checked_in_document_matches_the_code() {
    let expected = generated();
    let actual = checked_in();
    if actual != expected {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .find(|(_, (e, a))| e != a)
            .map(|(i, (e, a))| {
                format!(
                    "first difference at line {}:\n  code:       {e}\n  checked in: {a}",
                    i + 1
                )
            })
            .unwrap_or_else(|| "one is a prefix of the other".to_string());
        panic!(
            "openapi/openapi.json is out of date with the code; run `{REGENERATE}` and commit it.\n{first_difference}"
        );
    }
}

#[test]
fn every_operation_is_documented_with_its_problems() {
    let doc = document();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut missing = Vec::new();
    for (method, path, statuses) in OPERATIONS {
        let Some(op) = paths.get(*path).and_then(|p| p.get(*method)) else {
            missing.push(format!(
                "{} {path} is not documented",
                method.to_uppercase()
            ));
            continue;
        };
        let responses = op["responses"].as_object().expect("responses");
        let success = responses.keys().any(|s| s.starts_with('2'));
        if !success {
            missing.push(format!("{} {path}: no 2xx response", method.to_uppercase()));
        }
        for status in *statuses {
            let documented = responses
                .get(&status.to_string())
                .and_then(|r| r["content"].get("application/problem+json"))
                .is_some_and(|c| c["schema"]["$ref"] == "#/components/schemas/Problem");
            if !documented {
                missing.push(format!(
                    "{} {path}: {status} problem+json response not documented",
                    method.to_uppercase()
                ));
            }
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]
                        .get("application/problem+json")
                        .is_some(),
                    "{} {path}: error {status} is not a problem+json body",
                    method.to_uppercase()
                );
            }
        }
        assert!(
            op["summary"].is_string() || op["description"].is_string(),
            "{} {path} has no description",
            method.to_uppercase()
        );
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in [
        "type", "title", "status", "detail", "code", "index", "field",
    ] {
        assert!(problem.get(field).is_some(), "Problem schema lacks {field}");
    }
}

#[tokio::test]
async fn the_service_serves_the_document_and_the_docs() {
    let app = oneshot_app().await;
    let served = json_ok(app.get("/openapi.json").await).await;
    assert_eq!(
        served,
        document(),
        "/openapi.json serves the generated document"
    );
    json_ok(app.get("/healthz").await).await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), reqwest::StatusCode::OK, "GET /metrics");
    let text = response.text().await.unwrap();
    assert!(
        text.contains("http_requests_total"),
        "Prometheus text with request counts (the /healthz above was counted): {text}"
    );
    let response = app.get("/docs/").await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("swagger"),
        "Swagger UI is served from the binary"
    );
}

/// Reads a counter or gauge from Prometheus text (the sum over its label sets).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_what_the_service_did() {
    let app = oneshot_app().await;
    let before = app.get("/metrics").await.text().await.unwrap();
    let fitted = app.fit_seed().await;
    let version = fitted["version"].as_u64().unwrap() as f64;
    let records = app.seed_records().await;
    let body = app.score(&records).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    // The recorder is process-wide and tests run in parallel, so counters only ever grow by at least our share.
    let scored = metric(&text, "netsentinel_records_scored_total")
        - metric(&before, "netsentinel_records_scored_total");
    assert!(scored >= 720.0, "720 records scored: {scored}");
    let anomalies = metric(&text, "netsentinel_anomalies_total")
        - metric(&before, "netsentinel_anomalies_total");
    assert!(anomalies >= body["summary"]["n_anomalies"].as_f64().unwrap());
    assert!(metric(&text, "netsentinel_alerts_raised_total") >= 1.0);
    assert!(metric(&text, "netsentinel_fits_total") >= 1.0);
    assert!(text.contains("netsentinel_fit_duration_seconds_bucket"));
    assert!(metric(&text, "netsentinel_model_version") >= 1.0 && version >= 1.0);
    assert!(
        text.contains("route=\"/v1/score\""),
        "requests are labelled by route pattern"
    );
}
