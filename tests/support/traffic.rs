//! Traffic for tests against a real `netsentinel serve`: a batch that raises an alert, and the
//! alerts a service lists. Shared by the crash tests (`tests/crash_restart.rs`) and the replica
//! tests (`tests/pg_harness`), each of which includes this file with `#[path]`.

#![allow(dead_code)] // each test binary uses a different subset

use netsentinel::detector::generator::{GeneratorConfig, generate};
use serde_json::Value;

/// A batch in which every other record is a burst, so scoring it raises an alert.
pub fn bursty_batch(seed: u64) -> Value {
    let records = generate(&GeneratorConfig {
        n_records: 20,
        anomaly_every: 2,
        seed,
        ..GeneratorConfig::default()
    })
    .expect("valid generator settings");
    serde_json::to_value(records).expect("records serialise")
}

/// Every page of `/v1/alerts?{query}` from the service at `base_url`, as lists of ids,
/// following cursors.
pub async fn alert_pages(
    client: &reqwest::Client,
    base_url: &str,
    query: &str,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("{base_url}/v1/alerts?{query}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = match client.get(&url).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        };
        assert_eq!(status, 200, "{url}: {page}");
        pages.push(
            page["alerts"]
                .as_array()
                .expect("an alerts array")
                .iter()
                .map(|a| a["id"].as_str().expect("an id").to_string())
                .collect(),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return pages,
        }
    }
    panic!("alert pagination did not end");
}
