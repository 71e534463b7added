//! Webhook delivery end to end: real receivers on loopback that fail, go down across a service restart, check signatures, and speak different formats.
//!
//! Every receiver counts attempts and accepted deliveries per `Idempotency-Key`, the way a SIEM
//! that de-duplicates would; "every alert arrives once" means one accepted delivery per key.
//! Waits poll with a deadline (a bound, not a timing assertion).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use netsentinel::config::Settings;
use netsentinel::startup::Application;
use serde_json::{Value, json};
use sha2::Sha256;
use support::app::{TestApp, spawn_app_in};
use support::data::BURSTS;
use support::eventually;
use support::responses::json_ok;
use tempfile::TempDir;
use tokio::net::TcpListener;

/// How long any wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Seen {
    attempts: HashMap<String, usize>,
    accepted: HashMap<String, usize>,
    requests: Vec<Received>,
}

struct Behaviour {
    /// Answer 500 to the first this-many attempts of each key.
    fail_first: usize,
}

/// A webhook receiver on loopback.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, fail_first)
    }

    fn serve(listener: TcpListener, fail_first: usize) -> Self {
        let addr = listener.local_addr().expect("an address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = (Arc::clone(&seen), Arc::new(Behaviour { fail_first }));
        let router = Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn accepted(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().accepted.clone()
    }

    fn attempts(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().attempts.clone()
    }

    fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().requests.clone()
    }
}

async fn hook(
    State((seen, behaviour)): State<(Arc<Mutex<Seen>>, Arc<Behaviour>)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return (StatusCode::BAD_REQUEST, "no idempotency key");
    };
    let mut seen = seen.lock().unwrap();
    seen.requests.push(Received { headers, body });
    let attempt = {
        let n = seen.attempts.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    if attempt <= behaviour.fail_first {
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again later");
    }
    *seen.accepted.entry(key).or_default() += 1;
    (StatusCode::OK, "ok")
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("an address")
}

/// Settings for a service whose sinks are `sinks` (written to a file in `dir`), retrying fast.
fn settings(dir: &TempDir, sinks: Value) -> Settings {
    let path: PathBuf = dir.path().join("webhooks.json");
    std::fs::write(&path, json!({ "sinks": sinks }).to_string()).expect("write sinks file");
    Settings {
        addr: "127.0.0.1:0".parse().expect("an address"),
        webhooks_file: Some(path),
        webhook_retry_base_ms: 10,
        webhook_retry_cap_ms: 100,
        ..Settings::default()
    }
}

async fn spawn(settings: Settings) -> TestApp {
    let data = Arc::new(tempfile::tempdir().expect("a temp dir"));
    spawn_app_in(data, settings).await
}

/// Fits a small model and scores the seed bursts `n` times: `n` alerts; their ids.
async fn raise_alerts(app: &TestApp, n: usize) -> Vec<String> {
    app.fit_small(7).await;
    let records = app.seed_records().await;
    let bursts: Vec<Value> = BURSTS.iter().map(|&i| records[i].clone()).collect();
    let mut ids = Vec::new();
    for _ in 0..n {
        let scored = app.score(&bursts).await;
        ids.push(
            scored["alert"]["id"]
                .as_str()
                .expect("the bursts raise an alert")
                .to_string(),
        );
    }
    ids
}

/// The alert's `deliveries` entry for `sink`, once `done` holds for it.
async fn delivery_when(
    app: &TestApp,
    id: &str,
    sink: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("delivery of {id} to {sink}"), DEADLINE, || async {
        let alert = json_ok(app.get(&format!("/v1/alerts/{id}")).await).await;
        alert["deliveries"]
            .as_array()?
            .iter()
            .find(|d| d["sink"] == sink)
            .filter(|d| done(d))
            .cloned()
    })
    .await
}

/// The events of an alert's deliveries, as `GET /v1/alerts/{id}` lists them.
async fn events_of(app: &TestApp, id: &str) -> Vec<Value> {
    let alert = json_ok(app.get(&format!("/v1/alerts/{id}")).await).await;
    alert["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"].clone())
        .collect()
}

fn delivered(d: &Value) -> bool {
    d["state"] == "delivered"
}

/// The value of a metric line `name{labels} value` whose labels include all of `labels`.
async fn metric(app: &TestApp, name: &str, labels: &[&str]) -> f64 {
    let text = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn unique_keys(ids: &[String]) -> HashMap<String, usize> {
    ids.iter().map(|id| (id.clone(), 1)).collect()
}

#[tokio::test]
async fn a_receiver_that_fails_the_first_attempts_gets_every_alert_once() {
    let receiver = Receiver::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(settings(
        &dir,
        json!([{"name": "flaky-siem", "url": receiver.url()}]),
    ))
    .await;

    let ids = raise_alerts(&app, 3).await;
    eventually("three accepted deliveries", DEADLINE, || async {
        (receiver.accepted().len() == 3).then_some(())
    })
    .await;
    for id in &ids {
        let d = delivery_when(&app, id, "flaky-siem", delivered).await;
        assert_eq!(d["attempts"], 4, "three 500s, then the 200: {d}");
        assert_eq!(d["last_status"], 200, "{d}");
        assert!(d["last_error"].is_null(), "{d}");
        assert!(d["delivered_at"].is_string(), "{d}");
        assert!(d["next_attempt_at"].is_null(), "{d}");
    }
    assert_eq!(receiver.accepted(), unique_keys(&ids), "once per key");
    assert!(receiver.attempts().values().all(|&n| n == 4));

    let retrying = metric(
        &app,
        "netsentinel_webhook_deliveries_total",
        &["sink=\"flaky-siem\"", "result=\"retrying\""],
    )
    .await;
    let ok = metric(
        &app,
        "netsentinel_webhook_deliveries_total",
        &["sink=\"flaky-siem\"", "result=\"ok\""],
    )
    .await;
    assert_eq!((retrying, ok), (9.0, 3.0));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("netsentinel_outbox_depth"), "{metrics}");
}

#[tokio::test]
async fn alerts_raised_while_the_receiver_is_down_arrive_after_a_restart() {
    let port = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(
        &dir,
        json!([{"name": "down-siem", "url": format!("http://{port}/hook")}]),
    );
    let mut app = spawn(settings.clone()).await;
    let ids = raise_alerts(&app, 2).await;
    for id in &ids {
        let d = delivery_when(&app, id, "down-siem", |d| d["attempts"].as_u64() >= Some(1)).await;
        assert_eq!(d["state"], "pending", "{d}");
        assert!(d["last_status"].is_null(), "no answer at all: {d}");
        let error = d["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("connect"), "{d}");
        assert!(!error.contains(&port.to_string()), "no URL in errors: {d}");
    }

    app.stop().await;
    let receiver = Receiver::serve(
        TcpListener::bind(port)
            .await
            .expect("the port is free again"),
        0,
    );
    let app = spawn_app_in(app.data_dir.clone(), settings).await;

    eventually(
        "both alerts delivered after the restart",
        DEADLINE,
        || async { (receiver.accepted().len() == 2).then_some(()) },
    )
    .await;
    for id in &ids {
        let d = delivery_when(&app, id, "down-siem", delivered).await;
        assert!(d["attempts"].as_u64() >= Some(2), "{d}");
    }
    assert_eq!(receiver.accepted(), unique_keys(&ids));
}

/// Stripe-style verification written independently of the service's code: HMAC-SHA256 over
/// "<t>.<body>", compared against each v1.
fn signature_valid(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_string()),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => return false,
        }
    }
    let Some(t) = t else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    v1.contains(&expected)
}

#[tokio::test]
async fn deliveries_are_signed_and_a_wrong_secret_or_tampered_body_is_detected() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(settings(
        &dir,
        json!([{
            "name": "signed", "url": receiver.url(), "secret": "whsec-test-0123456789",
            "headers": {"X-Team": "soc"}
        }]),
    ))
    .await;
    let ids = raise_alerts(&app, 1).await;
    eventually("the signed delivery", DEADLINE, || async {
        (!receiver.accepted().is_empty()).then_some(())
    })
    .await;

    let request = &receiver.requests()[0];
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("idempotency-key"), ids[0]);
    assert_eq!(header("x-netsentinel-alert-id"), ids[0]);
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("x-team"), "soc", "custom headers are sent");
    let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
    assert_eq!(body["id"], ids[0].as_str());
    assert!(
        body.get("deliveries").is_none(),
        "the pushed alert is the alert"
    );

    let signature = header("x-netsentinel-signature");
    let t: i64 = signature
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("t=<unix seconds> first: {signature}"));
    let now = chrono::Utc::now().timestamp();
    assert!((now - t).abs() < 300, "signed just now: {t} vs {now}");

    let secret = b"whsec-test-0123456789";
    let mut tampered = request.body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(signature_valid(secret, &signature, &request.body));
    assert!(!signature_valid(b"wrong-secret", &signature, &request.body));
    assert!(!signature_valid(secret, &signature, &tampered));

    // The service's own verifier (what a Rust receiver would use) agrees.
    use netsentinel::webhooks::signature::{SignatureError, verify};
    assert_eq!(verify(secret, &signature, &request.body, now, 300), Ok(()));
    assert_eq!(
        verify(b"wrong-secret", &signature, &request.body, now, 300),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify(secret, &signature, &tampered, now, 300),
        Err(SignatureError::Mismatch)
    );
}

#[tokio::test]
async fn each_sink_gets_every_alert_in_its_format_and_a_failing_sink_holds_up_no_other() {
    let json_sink = Receiver::start(0).await;
    let cef_sink = Receiver::start(0).await;
    let broken = Receiver::start(usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(settings(
        &dir,
        json!([
            {"name": "broken-hec", "url": broken.url(), "format": "splunk_hec", "max_attempts": 2},
            {"name": "fmt-json", "url": json_sink.url(), "format": "json"},
            {"name": "fmt-cef", "url": cef_sink.url(), "format": "cef"},
        ]),
    ))
    .await;
    let ids = raise_alerts(&app, 3).await;
    eventually("every alert at both healthy sinks", DEADLINE, || async {
        (json_sink.accepted().len() == 3 && cef_sink.accepted().len() == 3).then_some(())
    })
    .await;
    assert_eq!(json_sink.accepted(), unique_keys(&ids));
    assert_eq!(cef_sink.accepted(), unique_keys(&ids));

    for r in json_sink.requests() {
        let body: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(r.headers["idempotency-key"], body["id"].as_str().unwrap());
        assert!(
            r.headers.get("x-netsentinel-signature").is_none(),
            "no secret, no signature"
        );
    }
    for r in cef_sink.requests() {
        let line = String::from_utf8(r.body.to_vec()).expect("text");
        let key = r.headers["idempotency-key"].to_str().unwrap();
        assert!(line.starts_with("CEF:0|netsentinel|"), "{line}");
        assert!(line.contains(&format!("externalId={key}")), "{line}");
        assert!(!line.contains('\n'), "one line");
        assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    }

    // The broken sink was tried in its own format, and given up after max_attempts.
    for id in &ids {
        let d = delivery_when(&app, id, "broken-hec", |d| d["state"] == "failed").await;
        assert_eq!(d["attempts"], 2, "{d}");
        assert_eq!(d["last_status"], 500, "{d}");
        assert!(
            d["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("500") && e.contains("try again later")),
            "{d}"
        );
        for sink in ["fmt-json", "fmt-cef"] {
            delivery_when(&app, id, sink, delivered).await;
        }
    }
    let hec: Value = serde_json::from_slice(&broken.requests()[0].body).expect("HEC JSON");
    assert_eq!(hec["sourcetype"], "netsentinel:alert", "{hec}");
    let failed = metric(
        &app,
        "netsentinel_webhook_deliveries_total",
        &["sink=\"broken-hec\"", "result=\"failed\""],
    )
    .await;
    assert_eq!(failed, 3.0);

    // SIEM formats of the alert stay as exported: no deliveries in them.
    let ecs = json_ok(app.get(&format!("/v1/alerts/{}?format=ecs", ids[0])).await).await;
    assert!(ecs.get("deliveries").is_none(), "{ecs}");
}

#[tokio::test]
async fn a_bad_sink_configuration_stops_startup_with_a_clear_error_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut bad = settings(
        &dir,
        json!([{"name": "siem", "url": "ftp://siem.example/in", "secret": "do-not-print-me"}]),
    );
    bad.data_dir = data.path().to_path_buf();
    let err = Application::build(bad)
        .await
        .err()
        .expect("a bad sink refuses to start")
        .to_string();
    assert!(err.contains("\"siem\"") && err.contains("http://"), "{err}");
    assert!(!err.contains("do-not-print-me"), "{err}");

    let mut missing = Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        ..Settings::default()
    };
    missing.webhooks_file = Some(dir.path().join("nope.json"));
    let err = Application::build(missing).await.err().expect("refused");
    assert!(err.to_string().contains("nope.json"), "{err}");
}

#[tokio::test]
async fn without_sinks_an_alert_reads_back_exactly_as_raised() {
    let data = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_in(
        data,
        Settings {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Settings::default()
        },
    )
    .await;
    let ids = raise_alerts(&app, 1).await;
    let alert = json_ok(app.get(&format!("/v1/alerts/{}", ids[0])).await).await;
    assert!(alert.get("deliveries").is_none(), "{alert}");
}

#[tokio::test]
async fn fifteen_anomalous_batches_of_one_host_are_one_incident_delivered_once() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(settings(
        &dir,
        json!([{"name": "siem", "url": receiver.url(), "format": "ocsf"}]),
    ))
    .await;
    app.fit_small(7).await;
    let records = app.seed_records().await;
    let of_host = |host: &str| -> Vec<Value> {
        BURSTS
            .iter()
            .map(|&i| {
                let mut r = records[i].clone();
                r["entity"] = json!(host);
                r
            })
            .collect()
    };
    let mut shown = Vec::new();
    for _ in 0..15 {
        let scored = app.score(&of_host("10.0.0.66")).await;
        shown.push(scored["alert"].clone());
    }
    let incident_id = shown[0]["id"].as_str().expect("an alert").to_string();
    // Every answer shows the one incident, counting up.
    for (n, alert) in shown.iter().enumerate() {
        assert_eq!(alert["id"], incident_id.as_str());
        assert_eq!(alert["count"], n + 1);
        assert_eq!(alert["entity"], "10.0.0.66");
    }
    // Another anomalous host still gets its own.
    let other = app.score(&of_host("10.0.0.9")).await;
    assert_ne!(other["alert"]["id"], incident_id.as_str());

    let listed = json_ok(app.get("/v1/alerts?entity=10.0.0.66&status=open").await).await;
    let listed = listed["alerts"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["count"], 15);
    assert_eq!(listed[0]["first_seen"], shown[0]["first_seen"]);
    assert!(listed[0]["last_seen"].as_str() > listed[0]["first_seen"].as_str());

    delivery_when(&app, &incident_id, "siem", delivered).await;
    let other_id = other["alert"]["id"].as_str().unwrap().to_string();
    delivery_when(&app, &other_id, "siem", delivered).await;
    // The same bursts every time: the severity never rose, so the opening is all there is.
    let opened: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.headers["x-netsentinel-alert-id"] == incident_id.as_str())
        .collect();
    assert_eq!(opened.len(), 1, "exactly one delivery of the incident");
    assert_eq!(opened[0].headers["x-netsentinel-event"], "opened");
    assert_eq!(opened[0].headers["idempotency-key"], incident_id.as_str());
    let doc: Value = serde_json::from_slice(&opened[0].body).unwrap();
    assert_eq!(doc["activity_id"], 1, "OCSF Create");
    assert_eq!(events_of(&app, &incident_id).await, [json!("opened")]);

    // An analyst's verdict is kept on the alert and shown in its exports.
    let judged = app
        .post_json(
            &format!("/v1/alerts/{incident_id}/feedback"),
            &json!({"verdict": "false_positive", "note": "nightly backup"}),
        )
        .await;
    let judged = json_ok(judged).await;
    assert_eq!(judged["feedback"][0]["verdict"], "false_positive");
    assert_eq!(judged["feedback"][0]["note"], "nightly backup");
    assert_eq!(judged["feedback"][0]["by"], "anonymous");
    assert_eq!(judged["count"], 15, "feedback changes nothing else");
    assert!(judged.get("suppression").is_none(), "{judged}");
    let listed = json_ok(app.get("/v1/alerts?entity=10.0.0.66").await).await;
    assert_eq!(listed["alerts"][0]["feedback"], judged["feedback"]);
    let ecs = app
        .get(&format!("/v1/alerts/{incident_id}?format=ecs"))
        .await;
    let ecs: Value = serde_json::from_str(&ecs.text().await.unwrap()).unwrap();
    assert_eq!(
        ecs["netsentinel"]["feedback"][0]["verdict"],
        "false_positive"
    );

    // A rule that does not cover the incident (its records fail the condition; another
    // network) resolves nothing.
    for rule in [
        json!({"entity": "10.0.0.66", "reason": "r",
               "conditions": [{"feature": "bytes_sent", "op": ">", "value": 1e300}]}),
        json!({"cidr": "192.168.0.0/16", "reason": "r"}),
        json!({"detector": "other", "entity": "10.0.0.66", "reason": "r"}),
    ] {
        let created = app.post_json("/v1/suppressions", &rule).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let created: Value = created.json().await.unwrap();
        assert_eq!(created["resolved_alerts"], json!([]), "{rule}: {created}");
    }
    // A rule covering the host's network resolves its incident at once, not the other host's.
    let created = app
        .post_json(
            "/v1/suppressions",
            &json!({"cidr": "10.0.0.64/30", "reason": "backup subnet"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created["resolved_alerts"],
        json!([incident_id]),
        "{created}"
    );
    let resolved = json_ok(app.get(&format!("/v1/alerts/{incident_id}")).await).await;
    assert_eq!(resolved["status"], "resolved");
    assert!(resolved["resolved_at"].is_string());
    assert_eq!(
        resolved["feedback"], judged["feedback"],
        "the verdict stays"
    );
    let other_now = json_ok(app.get(&format!("/v1/alerts/{other_id}")).await).await;
    assert_eq!(
        other_now["status"], "open",
        "another host's incident stays open"
    );
    // A second covering rule finds nothing left to resolve.
    let again = app
        .post_json(
            "/v1/suppressions",
            &json!({"entity": "10.0.0.66", "reason": "again"}),
        )
        .await;
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["resolved_alerts"], json!([]), "{again}");
    // Exactly one `resolved` delivery, through the outbox like any resolution.
    eventually("the resolved delivery", DEADLINE, || async {
        let alert = json_ok(app.get(&format!("/v1/alerts/{incident_id}")).await).await;
        let deliveries = alert["deliveries"].as_array()?.clone();
        (deliveries.len() == 2 && deliveries.iter().all(delivered)).then_some(())
    })
    .await;
    assert_eq!(
        events_of(&app, &incident_id).await,
        [json!("opened"), json!("resolved")]
    );
    let of_incident: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.headers["x-netsentinel-alert-id"] == incident_id.as_str())
        .collect();
    assert_eq!(of_incident.len(), 2, "opened, then resolved, once each");
    assert_eq!(of_incident[1].headers["x-netsentinel-event"], "resolved");
    let doc: Value = serde_json::from_slice(&of_incident[1].body).unwrap();
    assert_eq!(doc["activity_id"], 3, "OCSF Close");
    let missing = app
        .post_json("/v1/alerts/no-such/feedback", &json!({"verdict": "benign"}))
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
