//! The SIEM exports as their own operations (`/v1/alerts/export/{format}`,
//! `/v1/alerts/{id}/export/{format}`) answer what `?format=` answers, and the samples body may be
//! `null`, as the OpenAPI document says.

use crate::support::app::oneshot_app;
use crate::support::responses::{assert_problem, content_type, json_ok};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// Status, Content-Type, `x-next-cursor` and body of a GET.
async fn fetch(
    app: &crate::support::app::TestApp,
    path: &str,
) -> (StatusCode, String, Option<String>, String) {
    let r = app.get(path).await;
    let cursor = r
        .headers()
        .get("x-next-cursor")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status(),
        content_type(&r),
        cursor,
        r.text().await.unwrap(),
    )
}

#[tokio::test]
async fn exports_answer_what_the_format_parameter_answers() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let records = app.seed_records().await;
    for _ in 0..3 {
        let scored = app.score(&records).await;
        assert!(
            scored["alert"].is_object(),
            "each seed batch raises an alert"
        );
    }
    for (format, media_type) in [
        ("ecs", "application/x-ndjson"),
        ("ocsf", "application/x-ndjson"),
        ("splunk_hec", "application/x-ndjson"),
        ("cef", "text/plain; charset=utf-8"),
    ] {
        let old = fetch(&app, &format!("/v1/alerts?format={format}&limit=2")).await;
        let new = fetch(&app, &format!("/v1/alerts/export/{format}?limit=2")).await;
        assert_eq!(new, old, "{format}");
        let (status, ctype, cursor, body) = new;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, media_type),
            "{format}"
        );
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2, "{format}: {body}");
        for line in &lines {
            if format == "cef" {
                assert!(line.starts_with("CEF:0|netsentinel|"), "{line}");
            } else {
                let doc: Value = serde_json::from_str(line).unwrap();
                assert!(doc.is_object(), "{line}");
            }
        }
        // The next page, by the cursor in the header.
        let cursor = cursor.expect("a next page");
        let old = fetch(
            &app,
            &format!("/v1/alerts?format={format}&limit=2&cursor={cursor}"),
        )
        .await;
        let new = fetch(
            &app,
            &format!("/v1/alerts/export/{format}?limit=2&cursor={cursor}"),
        )
        .await;
        assert_eq!(new, old, "{format}, page 2");
        assert_eq!(new.3.lines().count(), 1, "{format}: the third alert");
        assert_eq!(new.2, None, "{format}: the last page");
    }

    // One alert: the document `?format=` answers, as one line.
    let id = app.alerts("?limit=1").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for format in ["ecs", "ocsf", "splunk_hec"] {
        let (status, ctype, _, line) =
            fetch(&app, &format!("/v1/alerts/{id}/export/{format}")).await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "application/x-ndjson")
        );
        assert!(line.ends_with('\n') && line.lines().count() == 1, "{line}");
        let doc: Value = serde_json::from_str(&line).unwrap();
        let one = json_ok(app.get(&format!("/v1/alerts/{id}?format={format}")).await).await;
        assert_eq!(doc, one, "{format}");
    }
    let (status, _, _, line) = fetch(&app, &format!("/v1/alerts/{id}/export/cef")).await;
    let (_, _, _, text) = fetch(&app, &format!("/v1/alerts/{id}?format=cef")).await;
    assert_eq!((status, line), (StatusCode::OK, format!("{text}\n")));

    // `json` is not a SIEM format, nor is anything else; unknown filters and alerts as before.
    for path in [
        "/v1/alerts/export/json",
        "/v1/alerts/export/xml",
        &format!("/v1/alerts/{id}/export/json"),
    ] {
        let problem = assert_problem(
            app.get(path).await,
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
        )
        .await;
        assert_eq!(problem["field"], "format", "{path}");
    }
    assert_problem(
        app.get("/v1/alerts/export/ecs?format=ecs").await,
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
    )
    .await;
    assert_problem(
        app.get("/v1/alerts/export/ecs?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
    )
    .await;
    assert_problem(
        app.get("/v1/alerts/nope/export/ecs").await,
        StatusCode::NOT_FOUND,
        "no-such-alert",
    )
    .await;
}

#[tokio::test]
async fn a_null_samples_body_is_every_default() {
    let app = oneshot_app().await;
    let empty = json_ok(app.post_empty("/v1/samples").await).await;
    let null = json_ok(
        app.send(
            app.request(reqwest::Method::POST, "/v1/samples")
                .header(header::CONTENT_TYPE, "application/json")
                .body("null"),
        )
        .await,
    )
    .await;
    assert_eq!(null["records"].as_array().unwrap().len(), 720);
    assert_eq!(null, empty);
    let other = json_ok(
        app.post_json("/v1/samples", &json!({"n_records": 10}))
            .await,
    )
    .await;
    assert_ne!(other, empty);
}
