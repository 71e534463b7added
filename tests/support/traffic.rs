//! Requests to a real `netsentinel serve` by URL, as the crash tests (`tests/suite/crash_restart.rs`)
//! and the replica tests make them: a client for a process that may be killed, JSON calls that
//! report a failed request as status 0, a batch that raises an alert, and every page of alerts.

use std::time::Duration;

use netsentinel::detector::generator::{GeneratorConfig, generate};
use serde_json::Value;

/// A client that never reuses a connection, so a killed replica cannot hand it a stale one.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client")
}

/// GET `url`: status and JSON body (null when the body is not JSON or the request failed).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// POST `body` as JSON to `url`: status and JSON body (status 0 when the request failed).
pub async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    match client.post(url).json(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

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
        let (status, page) = get_json(client, &url).await;
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
