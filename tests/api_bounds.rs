//! What a request can make the service keep is bounded: long echoed strings are cut with a
//! marker, alert records keep a bounded number of fields, and fits past the cost ceiling are
//! refused (the last in `api_errors`' table).

mod support;

use serde_json::{Value, json};
use support::app::oneshot_app;

const MAX_ECHO_BYTES: usize = netsentinel::records::MAX_ECHO_BYTES;

#[tokio::test]
async fn long_echoed_fields_are_cut_in_results_alerts_and_exports() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let mut records = app.seed_records().await;
    records.truncate(50);
    // One record far outside the training data, so the batch raises an alert that keeps it.
    let huge_host = "h".repeat(2 * 1024 * 1024);
    let r = &mut records[7];
    r["bytes_sent"] = json!(1e12);
    r["bytes_received"] = json!(1e12);
    r["host"] = json!(huge_host);
    for k in 0..40 {
        r[format!("tag{k:02}")] = json!(format!("value {k}"));
    }
    let answer = app.score(&records).await;
    let result = &answer["results"][7];
    let host = result["host"].as_str().expect("host echoed");
    assert!(host.len() <= MAX_ECHO_BYTES, "{} bytes echoed", host.len());
    assert!(
        host.ends_with(&format!("…[truncated from {} bytes]", huge_host.len())),
        "{}",
        &host[host.len() - 60..]
    );
    assert_eq!(result["tag39"], "value 39", "short fields are kept whole");

    let alert_id = answer["alert"]["id"]
        .as_str()
        .expect("an alert")
        .to_string();
    let alert = support::responses::json_ok(app.get(&format!("/v1/alerts/{alert_id}")).await).await;
    let kept = alert["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rec| rec["index"] == 7)
        .expect("the anomalous record is in the alert");
    let fields = kept["fields"].as_object().unwrap();
    // 41 echoed fields: 32 kept, plus the count of those left out.
    assert_eq!(fields.len(), 33, "{fields:?}");
    assert_eq!(fields["netsentinel.fields_left_out"], "9");
    assert!(fields["host"].as_str().unwrap().len() <= MAX_ECHO_BYTES);
    let stored: Value = alert;
    assert!(
        stored.to_string().len() < 64 * 1024,
        "a stored alert stays small: {} bytes",
        stored.to_string().len()
    );

    let cef = app
        .get("/v1/alerts?format=cef")
        .await
        .text()
        .await
        .expect("a CEF page");
    assert!(
        cef.len() < 64 * 1024,
        "the export page is {} bytes",
        cef.len()
    );
}

#[tokio::test]
async fn alert_pages_stop_at_their_byte_budget_and_the_cursor_goes_on() {
    let app = support::app::oneshot_app_with(|s| s.alerts_page_bytes = 6 * 1024).await;
    app.fit_seed().await;
    let mut records = app.seed_records().await;
    records.truncate(20);
    records[3]["bytes_sent"] = json!(1e12);
    records[3]["note"] = json!("n".repeat(MAX_ECHO_BYTES));
    let mut ids = Vec::new();
    for _ in 0..6 {
        let answer = app.score(&records).await;
        ids.push(
            answer["alert"]["id"]
                .as_str()
                .expect("an alert")
                .to_string(),
        );
    }
    ids.reverse(); // newest first, as listed
    // CEF lines carry no echoed fields, so its six lines fit one page.
    for (format, paged) in [("", true), ("&format=ecs", true), ("&format=cef", false)] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let after = cursor
                .as_ref()
                .map(|c| format!("&cursor={c}"))
                .unwrap_or_default();
            let response = app
                .get(&format!("/v1/alerts?limit=100{format}{after}"))
                .await;
            let next_header = response
                .headers()
                .get("x-next-cursor")
                .map(|v| v.to_str().unwrap().to_string());
            let text = response.text().await.unwrap();
            pages += 1;
            assert!(
                text.len() <= 6 * 1024 || pages == 1,
                "{format}: page of {} bytes",
                text.len()
            );
            if format.is_empty() {
                let page: Value = serde_json::from_str(&text).unwrap();
                let alerts = page["alerts"].as_array().unwrap();
                assert!(!alerts.is_empty(), "every page carries at least one alert");
                seen.extend(alerts.iter().map(|a| a["id"].as_str().unwrap().to_string()));
                cursor = page["next_cursor"].as_str().map(str::to_string);
            } else {
                assert!(!text.is_empty());
                seen.extend(ids.iter().filter(|id| text.contains(id.as_str())).cloned());
                cursor = next_header;
            }
            if cursor.is_none() {
                break;
            }
            assert!(pages < 20, "{format}: the cursor does not end");
        }
        assert!(
            (pages > 1) == paged,
            "{format}: 6 alerts of over 1 KiB each need more than one page (CEF: one)"
        );
        assert_eq!(
            seen, ids,
            "{format}: every alert once, in order, across pages"
        );
    }
}

#[tokio::test]
async fn alerts_past_retention_are_deleted_and_counted() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let mut records = app.seed_records().await;
    records.truncate(20);
    records[3]["bytes_sent"] = json!(1e12);
    let answer = app.score(&records).await;
    assert!(answer["alert"]["id"].is_string());
    assert_eq!(app.alerts("").await.len(), 1);
    // Young alerts survive a round; with retention 0 days everything created before now goes.
    let state = app.state();
    assert_eq!(
        netsentinel::service::retention::prune_once(state, 1).await,
        0
    );
    assert_eq!(app.alerts("").await.len(), 1);
    assert_eq!(
        netsentinel::service::retention::prune_once(state, 0).await,
        1
    );
    assert!(app.alerts("").await.is_empty());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("netsentinel_alerts_pruned_total 1"),
        "{metrics}"
    );
}
