//! Every way a request can be wrong gets the right status and an RFC 9457 problem with a stable
//! `code` (and, for bad records, the record `index` and `field`), and none of them changes state.
//!
//! No socket: each request goes through the service's router with `oneshot` (`oneshot_app`).

mod support;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::app::{TestApp, oneshot_app, oneshot_app_with};
use support::responses::{assert_problem, json_ok};

/// One bad request and the problem it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    /// None: no Content-Type header.
    content_type: Option<&'static str>,
    accept: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// For bad records: the record's position; None means the problem must not carry one.
    index: Option<u64>,
    /// The field or parameter named; None means "not checked".
    field: Option<&'static str>,
}

impl Case {
    fn new(name: &'static str, method: Method, path: &'static str) -> Self {
        Case {
            name,
            method,
            path,
            content_type: None,
            accept: None,
            body: Vec::new(),
            status: 0,
            code: "",
            index: None,
            field: None,
        }
    }
    fn get(name: &'static str, path: &'static str) -> Self {
        Self::new(name, Method::GET, path)
    }
    fn post(name: &'static str, path: &'static str) -> Self {
        Self::new(name, Method::POST, path)
    }
    fn json(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = Some("application/json");
        self.body = body.into();
        self
    }
    fn body(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }
    fn accept(mut self, accept: &'static str) -> Self {
        self.accept = Some(accept);
        self
    }
    fn expect(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }
    fn at(mut self, index: u64, field: &'static str) -> Self {
        self.index = Some(index);
        self.field = Some(field);
        self
    }
    fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// Sends the request; describes every way the answer differs from the expected problem.
    async fn check(&self, app: &TestApp) -> Result<(), String> {
        let mut request = app
            .request(self.method.clone(), self.path)
            .body(self.body.clone());
        if let Some(ct) = self.content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        if let Some(accept) = self.accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = app.send(request).await;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = support::responses::content_type(&response);
        let text = response.text().await.map_err(|e| e.to_string())?;
        let mut wrong = Vec::new();
        if status != self.status {
            wrong.push(format!("status {status}, expected {}", self.status));
        }
        if content_type != "application/problem+json" {
            wrong.push(format!("content-type {content_type:?}"));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if body["code"] != self.code {
            wrong.push(format!("code {}, expected {:?}", body["code"], self.code));
        }
        if body["status"] != status {
            wrong.push(format!(
                "body status {} differs from {status}",
                body["status"]
            ));
        }
        if body["type"] != format!("/problems/{}", self.code) {
            wrong.push(format!("type {}", body["type"]));
        }
        if body["detail"].as_str().is_none_or(str::is_empty) {
            wrong.push("no detail".into());
        }
        if request_id.is_none() || body["request_id"].as_str() != request_id.as_deref() {
            wrong.push(format!(
                "request_id {} differs from the x-request-id header {request_id:?}",
                body["request_id"]
            ));
        }
        match self.index {
            Some(i) if body["index"] != i => {
                wrong.push(format!("index {}, expected {i}", body["index"]))
            }
            None if body.get("index").is_some() => {
                wrong.push(format!("unexpected index {}", body["index"]))
            }
            _ => {}
        }
        // An empty expected field means the problem must not name one (the record as a whole is bad).
        match self.field {
            Some("") if body.get("field").is_some() => {
                wrong.push(format!("field {}, expected none", body["field"]));
            }
            Some(f) if !f.is_empty() && body["field"] != f => {
                wrong.push(format!("field {}, expected {f:?}", body["field"]));
            }
            _ => {}
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{}; body: {text}", wrong.join("; ")))
        }
    }
}

/// Runs every case and fails once, listing all that went wrong.
async fn run(app: &TestApp, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        if let Err(e) = case.check(app).await {
            failures.push(format!(
                "{} ({} {}): {e}",
                case.name, case.method, case.path
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} error cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn record(bytes_sent: f64) -> Value {
    json!({
        "timestamp": "2024-01-01T00:00:00Z",
        "bytes_sent": bytes_sent,
        "bytes_received": 1.2e6,
        "connections": 50,
        "active_sessions": 25,
    })
}

fn records(n: usize) -> Vec<Value> {
    (0..n).map(|i| record(1e6 + i as f64 * 1e4)).collect()
}

fn with(mut records: Vec<Value>, index: usize, field: &str, value: Value) -> Vec<u8> {
    if value.is_null() {
        records[index].as_object_mut().unwrap().remove(field);
    } else {
        records[index][field] = value;
    }
    serde_json::to_vec(&records).unwrap()
}

const CSV_HEADER: &str = "timestamp,bytes_sent,bytes_received,connections,active_sessions\n";
const CSV_ROW: &str = "2024-01-01T00:00:00Z,1000000,1200000,50,25\n";

fn csv_with(bad_row: &str) -> String {
    format!("{CSV_HEADER}{CSV_ROW}{CSV_ROW}{bad_row}\n")
}

/// Requests that must fail while no model exists.
fn before_fit_cases() -> Vec<Case> {
    let valid = serde_json::to_vec(&records(3)).unwrap();
    vec![
        Case::post("score before fit", "/v1/score")
            .json(valid.clone())
            .expect(409, "no-model"),
        Case::post("evaluate before fit", "/v1/evaluate")
            .json(r#"[{"bytes_sent":1,"label":0}]"#)
            .expect(409, "no-model"),
        Case::get("model before fit", "/v1/model").expect(404, "no-model"),
        Case::get("readiness before fit", "/readyz").expect(503, "not-ready"),
    ]
}

/// Requests that must fail with a model in place.
fn cases() -> Vec<Case> {
    let five = records(5);
    vec![
        // Bodies that are not traffic records at all.
        Case::post("malformed JSON", "/v1/score")
            .json(r#"[{"bytes_sent": 1,"#)
            .expect(400, "malformed-body"),
        Case::post("empty body", "/v1/score")
            .json("")
            .expect(400, "malformed-body"),
        Case::post("empty body, no content type", "/v1/score").expect(400, "malformed-body"),
        Case::post("deeply nested JSON", "/v1/score")
            .json(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)))
            .expect(400, "malformed-body"),
        Case::post("invalid UTF-8 in JSON", "/v1/score")
            .json(b"[{\"bytes_sent\": 1, \"host\": \"\xff\xfe\"}]".to_vec())
            .expect(400, "malformed-body"),
        Case::post("invalid UTF-8 in CSV", "/v1/score")
            .body("text/csv", b"bytes_sent,host\n1,\xff\xfe\n".to_vec())
            .expect(400, "malformed-body"),
        Case::post("invalid UTF-8 in NDJSON", "/v1/score")
            .body("application/x-ndjson", b"{\"host\": \"\xc3\x28\"}\n".to_vec())
            .expect(400, "malformed-body"),
        Case::post("CSV without a header row", "/v1/score")
            .body("text/csv", "")
            .expect(400, "malformed-body"),
        Case::post("very long field name instead of the feature", "/v1/score")
            .json(format!(
                "[{{\"{}\": 1, \"bytes_received\": 1, \"connections\": 1, \"active_sessions\": 1}}]",
                "b".repeat(100_000)
            ))
            .expect(422, "invalid-record")
            .at(0, "bytes_sent"),
        Case::post("JSON number", "/v1/score")
            .json("42")
            .expect(400, "malformed-body"),
        Case::post("JSON string", "/v1/score")
            .json(r#""records""#)
            .expect(400, "malformed-body"),
        Case::post("records is not an array", "/v1/score")
            .json(r#"{"records": {"bytes_sent": 1}}"#)
            .expect(400, "malformed-body")
            .field("records"),
        Case::post("object without records", "/v1/score")
            .json(r#"{}"#)
            .expect(400, "malformed-body")
            .field("records"),
        Case::post("unknown top-level field", "/v1/score")
            .json(format!(r#"{{"records": [{}], "threshold": 0.9}}"#, record(1e6)))
            .expect(400, "unknown-field")
            .field("threshold"),
        Case::post("NDJSON broken line", "/v1/score")
            .body("application/x-ndjson", format!("{}\n{{oops\n", record(1e6)))
            .expect(400, "malformed-body"),
        Case::post("CSV ragged row", "/v1/score")
            .body("text/csv", csv_with("2024-01-01T02:00:00Z,1,2,3,4,5"))
            .expect(400, "malformed-body"),
        Case::post("CSV duplicate header", "/v1/score")
            .body(
                "text/csv",
                "bytes_sent,bytes_sent,bytes_received,connections,active_sessions\n1,2,3,4,5\n",
            )
            .expect(400, "malformed-body"),
        // Bad records: 422 naming the record and the field.
        Case::post("missing feature in record 3", "/v1/score")
            .json(with(five.clone(), 3, "bytes_received", Value::Null))
            .expect(422, "invalid-record")
            .at(3, "bytes_received"),
        Case::post("null feature", "/v1/score")
            .json({
                let mut r = five.clone();
                r[1]["active_sessions"] = Value::Null;
                serde_json::to_vec(&r).unwrap()
            })
            .expect(422, "invalid-record")
            .at(1, "active_sessions"),
        Case::post("non-numeric feature", "/v1/score")
            .json(with(five.clone(), 2, "connections", json!("many")))
            .expect(422, "invalid-record")
            .at(2, "connections"),
        Case::post("nested feature", "/v1/score")
            .json(with(five.clone(), 4, "bytes_sent", json!([1, 2])))
            .expect(422, "invalid-record")
            .at(4, "bytes_sent"),
        Case::post("record is not an object", "/v1/score")
            .json(format!("[{}, 7]", record(1e6)))
            .expect(422, "invalid-record")
            .at(1, ""),
        Case::post("timestamp not RFC 3339", "/v1/score")
            .json(with(five.clone(), 1, "timestamp", json!("yesterday")))
            .expect(422, "invalid-record")
            .at(1, "timestamp"),
        // 1e999 overflows f64. serde_json refuses out-of-range numbers while parsing
        // ("number out of range"), so in JSON the body itself is malformed: 400. JSON cannot
        // carry a non-finite number; the contract's 422 applies where one can arrive, in CSV.
        Case::post("1e999 in JSON", "/v1/score")
            .json(format!(
                r#"[{}, {{"bytes_sent": 1e999, "bytes_received": 1, "connections": 1, "active_sessions": 1}}]"#,
                record(1e6)
            ))
            .expect(400, "malformed-body"),
        Case::post("1e999 in CSV", "/v1/score")
            .body("text/csv", csv_with("2024-01-01T02:00:00Z,1e999,1200000,50,25"))
            .expect(422, "invalid-record")
            .at(2, "bytes_sent"),
        Case::post("NaN in CSV", "/v1/score")
            .body("text/csv", csv_with("2024-01-01T02:00:00Z,1000000,NaN,50,25"))
            .expect(422, "invalid-record")
            .at(2, "bytes_received"),
        Case::post("-inf in CSV", "/v1/score")
            .body("text/csv", csv_with("2024-01-01T02:00:00Z,1000000,1200000,-inf,25"))
            .expect(422, "invalid-record")
            .at(2, "connections"),
        Case::post("empty batch", "/v1/score")
            .json("[]")
            .expect(422, "empty-batch"),
        Case::post("empty records envelope", "/v1/score")
            .json(r#"{"records": []}"#)
            .expect(422, "empty-batch"),
        Case::post("CSV header only", "/v1/score")
            .body("text/csv", CSV_HEADER)
            .expect(422, "empty-batch"),
        // Media types.
        Case::post("text/plain body", "/v1/score")
            .body("text/plain", serde_json::to_vec(&five).unwrap())
            .expect(415, "unsupported-media-type"),
        Case::post("XML body to fit", "/v1/model/fit")
            .body("application/xml", "<records/>")
            .expect(415, "unsupported-media-type"),
        Case::post("Accept image/png on score", "/v1/score")
            .json(serde_json::to_vec(&five).unwrap())
            .accept("image/png")
            .expect(406, "not-acceptable"),
        // Fit parameters: 422 naming the parameter.
        Case::post("n_estimators 0", "/v1/model/fit")
            .json(r#"{"generate": {}, "params": {"n_estimators": 0}}"#)
            .expect(422, "invalid-parameter")
            .field("n_estimators"),
        Case::post("contamination 0.9", "/v1/model/fit")
            .json(r#"{"generate": {}, "params": {"contamination": 0.9}}"#)
            .expect(422, "invalid-parameter")
            .field("contamination"),
        Case::post("max_samples 0", "/v1/model/fit")
            .json(r#"{"generate": {}, "params": {"max_samples": 0}}"#)
            .expect(422, "invalid-parameter")
            .field("max_samples"),
        Case::post("trees x rows per tree over the fit ceiling", "/v1/model/fit")
            .json(r#"{"generate": {}, "params": {"n_estimators": 10000, "max_samples": 1000000}}"#)
            .expect(422, "invalid-parameter")
            .field("max_samples"),
        Case::post("max_features above the feature count", "/v1/model/fit")
            .json(r#"{"generate": {}, "params": {"max_features": 9}}"#)
            .expect(422, "invalid-parameter")
            .field("max_features"),
        Case::post("n_estimators 0 in the query (CSV fit)", "/v1/model/fit?n_estimators=0")
            .body("text/csv", csv_with(CSV_ROW.trim_end()))
            .expect(422, "invalid-parameter")
            .field("n_estimators"),
        Case::post("contamination not a number (CSV fit)", "/v1/model/fit?contamination=lots")
            .body("text/csv", csv_with(CSV_ROW.trim_end()))
            .expect(400, "invalid-parameter")
            .field("contamination"),
        Case::post("unknown parameter", "/v1/model/fit")
            .json(r#"{"generate": {}, "params": {"trees": 10}}"#)
            .expect(400, "invalid-parameter"),
        Case::post("fit with neither records nor generate", "/v1/model/fit")
            .json(r#"{"params": {}}"#)
            .expect(400, "malformed-body")
            .field("records"),
        Case::post("fit with both records and generate", "/v1/model/fit")
            .json(format!(r#"{{"records": [{}], "generate": {{}}}}"#, record(1e6)))
            .expect(400, "invalid-parameter"),
        Case::post("fit on a missing named feature", "/v1/model/fit")
            .json(format!(r#"{{"records": [{}], "features": ["latency"]}}"#, record(1e6)))
            .expect(422, "invalid-record")
            .at(0, "latency"),
        // Training data that cannot separate anything: 422, and the active model stays.
        Case::post("fit on one record", "/v1/model/fit")
            .json(format!(r#"{{"records": [{}]}}"#, record(1e6)))
            .expect(422, "insufficient-training-data")
            .field("records"),
        Case::post("fit on one record fewer than the minimum", "/v1/model/fit")
            .json(json!({"records": records(7)}).to_string())
            .expect(422, "insufficient-training-data")
            .field("records"),
        Case::post("fit on one generated record", "/v1/model/fit")
            .json(r#"{"generate": {"n_records": 1}}"#)
            .expect(422, "insufficient-training-data")
            .field("records"),
        Case::post("fit on constant records", "/v1/model/fit")
            .json(json!({"records": vec![record(1e6); 500]}).to_string())
            .expect(422, "insufficient-training-data")
            .field("records"),
        Case::post("CSV fit on three records", "/v1/model/fit")
            .body("text/csv", csv_with(CSV_ROW.trim_end()))
            .expect(422, "insufficient-training-data")
            .field("records"),
        Case::post("fit on constant records of a detector", "/v1/detectors/default/model/fit")
            .body("text/csv", format!("{CSV_HEADER}{}", CSV_ROW.repeat(50)))
            .expect(422, "insufficient-training-data")
            .field("records"),
        Case::post("query parameters with a JSON fit", "/v1/model/fit?n_estimators=5")
            .json(r#"{"generate": {}}"#)
            .expect(400, "invalid-parameter"),
        Case::post("evaluate without labels", "/v1/evaluate")
            .json(serde_json::to_vec(&five).unwrap())
            .expect(422, "invalid-record")
            .at(0, "label"),
        Case::post("evaluate with label 2", "/v1/evaluate")
            .json({
                let mut r = five.clone();
                for (i, rec) in r.iter_mut().enumerate() {
                    rec["label"] = json!(if i == 3 { 2 } else { 0 });
                }
                serde_json::to_vec(&r).unwrap()
            })
            .expect(422, "invalid-record")
            .at(3, "label"),
        Case::post("generator setting of the wrong type", "/v1/samples")
            .json(r#"{"n_records": "many"}"#)
            .expect(422, "invalid-parameter"),
        // Query strings.
        Case::post("unknown query parameter on score", "/v1/score?verbose=1")
            .json(serde_json::to_vec(&five).unwrap())
            .expect(400, "invalid-parameter"),
        Case::post("only_anomalies not a boolean", "/v1/score?only_anomalies=maybe")
            .json(serde_json::to_vec(&five).unwrap())
            .expect(400, "invalid-parameter"),
        Case::get("alerts limit=0", "/v1/alerts?limit=0")
            .expect(400, "invalid-parameter")
            .field("limit"),
        Case::get("alerts limit too large", "/v1/alerts?limit=100000")
            .expect(400, "invalid-parameter")
            .field("limit"),
        Case::get("alerts limit not a number", "/v1/alerts?limit=ten")
            .expect(400, "invalid-parameter"),
        Case::get("alerts bad cursor", "/v1/alerts?cursor=not-a-cursor")
            .expect(400, "invalid-parameter")
            .field("cursor"),
        Case::get("alerts unknown status", "/v1/alerts?status=closed")
            .expect(400, "invalid-parameter"),
        Case::get("alerts since not a time", "/v1/alerts?since=last-week")
            .expect(400, "invalid-parameter"),
        Case::get("alerts unknown parameter", "/v1/alerts?sort=asc")
            .expect(400, "invalid-parameter"),
        Case::get("chart unknown source", "/v1/chart.png?source=yesterday")
            .expect(400, "invalid-parameter"),
        Case::get("chart too small", "/v1/chart.png?source=training&width=10")
            .expect(400, "invalid-parameter")
            .field("width"),
        // Things that do not exist.
        Case::get("unknown alert", "/v1/alerts/0190c1b2-0000-7000-8000-000000000000")
            .expect(404, "no-such-alert"),
        Case::post("ack unknown alert", "/v1/alerts/nope/ack").expect(404, "no-such-alert"),
        Case::get("unknown route", "/v1/nothing-here").expect(404, "not-found"),
        Case::get("unversioned route", "/score").expect(404, "not-found"),
        Case::get("wrong method on score", "/v1/score").expect(405, "method-not-allowed"),
        Case::new("wrong method on model", Method::DELETE, "/v1/model")
            .expect(405, "method-not-allowed"),
        Case::get("wrong method on fit", "/v1/model/fit").expect(405, "method-not-allowed"),
    ]
}

/// What a client can see of the state the failed requests must leave alone.
async fn observable_state(app: &TestApp) -> (Value, usize, Value) {
    let model = json_ok(app.get("/v1/model").await).await;
    let alerts = app.alerts("?limit=1000").await.len();
    let versions = json_ok(app.get("/v1/model/versions").await).await;
    (model, alerts, versions)
}

#[tokio::test]
async fn every_bad_request_gets_the_right_problem_and_changes_nothing() {
    let app = oneshot_app().await;
    run(&app, &before_fit_cases()).await;

    app.fit_small(1).await;
    let bursts: Vec<Value> = app
        .seed_records()
        .await
        .into_iter()
        .filter(|r| r["label"] == 1)
        .collect();
    let scored = app.score(&bursts).await;
    assert!(
        scored["alert"].is_object(),
        "a batch of bursts raises an alert"
    );
    let before = observable_state(&app).await;

    run(&app, &cases()).await;

    assert_eq!(json_ok(app.get("/healthz").await).await["status"], "ok");
    let after = observable_state(&app).await;
    assert_eq!(after.0, before.0, "the active model is unchanged");
    assert_eq!(after.1, before.1, "no alert was added");
    assert_eq!(after.2, before.2, "no model version was added");
    let rescored = app.score(&bursts).await;
    assert_eq!(
        support::data::scores(&rescored),
        support::data::scores(&scored),
        "the service still scores as before"
    );
}

#[tokio::test]
async fn degenerate_training_data_is_refused_naming_why_and_the_model_stays() {
    let app = oneshot_app().await;
    // Before any fit: refused, and still no model.
    let response = app
        .post_json("/v1/model/fit", &json!({"records": [record(1e6)]}))
        .await;
    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient-training-data",
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("1 training records are too few") && detail.contains("at least 8"),
        "{detail}"
    );
    assert_eq!(app.active_version().await, None);

    let model = app.fit_small(1).await;
    let bursts: Vec<Value> = app
        .seed_records()
        .await
        .into_iter()
        .filter(|r| r["label"] == 1)
        .collect();
    let scored = app.score(&bursts).await;
    let response = app
        .post_json("/v1/model/fit", &json!({"records": vec![record(2e6); 300]}))
        .await;
    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient-training-data",
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("every feature is constant"), "{detail}");
    assert_eq!(app.active_version().await, model["version"].as_u64());
    let rescored = app.score(&bursts).await;
    assert_eq!(
        support::data::scores(&rescored),
        support::data::scores(&scored)
    );
    // The model still separates: every burst is flagged, as before the refused fit.
    assert!(
        rescored["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["is_anomaly"] == true)
    );

    // Eight records that vary are enough.
    let fitted = app.fit(json!({"records": records(8)})).await;
    assert_eq!(fitted["n_training_records"], 8);
}

#[tokio::test]
async fn oversized_bodies_and_batches_are_413() {
    let app = oneshot_app_with(|s| {
        s.max_body_bytes = 4096;
        s.max_records = 10;
    })
    .await;
    let ten = records(10);
    let meta = app
        .fit(json!({"records": ten, "params": {"n_estimators": 5}}))
        .await;
    assert_eq!(meta["n_training_records"], 10);

    let eleven = records(11);
    let big: Vec<Value> = (0..60).map(|i| record(i as f64)).collect();
    let big = serde_json::to_vec(&big).unwrap();
    assert!(big.len() > 4096);
    let eleven_csv = {
        let mut s = CSV_HEADER.to_string();
        for _ in 0..11 {
            s.push_str(CSV_ROW);
        }
        s
    };
    let eleven_ndjson: String = eleven.iter().map(|r| format!("{r}\n")).collect();
    run(
        &app,
        &[
            Case::post("body over the limit", "/v1/score")
                .json(big.clone())
                .expect(413, "body-too-large"),
            Case::post("fit body over the limit", "/v1/model/fit")
                .json(big.clone())
                .expect(413, "body-too-large"),
            Case::post("too many records (JSON)", "/v1/score")
                .json(serde_json::to_vec(&eleven).unwrap())
                .expect(413, "too-many-records"),
            Case::post("too many records (CSV)", "/v1/score")
                .body("text/csv", eleven_csv.clone())
                .expect(413, "too-many-records"),
            Case::post("too many records (NDJSON)", "/v1/score")
                .body("application/x-ndjson", eleven_ndjson)
                .expect(413, "too-many-records"),
            Case::post("too many training records", "/v1/model/fit")
                .body("text/csv", eleven_csv)
                .expect(413, "too-many-records"),
            Case::post("too many records to evaluate", "/v1/evaluate")
                .json(serde_json::to_vec(&eleven).unwrap())
                .expect(413, "too-many-records"),
        ],
    )
    .await;

    // At the limits exactly, everything is accepted.
    let scored = app.score(&ten).await;
    assert_eq!(scored["summary"]["n_records"], 10);
    assert_eq!(json_ok(app.get("/v1/model").await).await, meta);
    assert_problem(
        app.get("/v1/nothing").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn api_keys_guard_the_endpoints_by_scope() {
    const READER: &str = "reader-secret-key-0001";
    const ADMIN: &str = "admin-secret-key-00001";
    let app = oneshot_app_with(|s| {
        s.api_keys = Some(
            netsentinel::auth::ApiKeys::parse(&format!("read:{READER},admin:{ADMIN}"))
                .expect("a valid key list"),
        );
    })
    .await;
    let send = |method: Method, path: &str, key: Option<&str>| {
        let mut request = app.request(method, path);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        app.send(request.json(&json!({"generate": {}, "params": {"n_estimators": 5}})))
    };

    // Probes and the document stay open for orchestrators and tooling.
    let health = send(Method::GET, "/healthz", None).await;
    assert_eq!(health.status(), StatusCode::OK);
    let document = send(Method::GET, "/openapi.json", None).await;
    assert_eq!(document.status(), StatusCode::OK);

    let response = send(Method::GET, "/v1/alerts", None).await;
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Bearer realm=\"netsentinel\""
    );
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = send(Method::GET, "/v1/alerts", Some("not-a-key-of-ours-at-all")).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    json_ok(send(Method::GET, "/v1/alerts", Some(READER)).await).await;
    for path in ["/v1/model/fit", "/v1/score"] {
        let response = send(Method::POST, path, Some(READER)).await;
        assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    assert_eq!(
        app.active_version_with(READER).await,
        None,
        "a refused fit fits nothing"
    );

    let response = send(Method::POST, "/v1/model/fit", Some(ADMIN)).await;
    assert_eq!(response.status(), StatusCode::CREATED, "admin may fit");
    assert_eq!(app.active_version_with(READER).await, Some(1));
}

/// The process's resident set size in KiB (Linux), or None where /proc is not there.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Bad input must not leak: the whole table, many times over, leaves memory and state as they were.
#[tokio::test]
async fn repeated_bad_requests_do_not_grow_memory_or_state() {
    const ROUNDS: usize = 20;
    /// Generous: the table's bodies total well under 1 MB, so a leak of even a fraction of each
    /// body per request would pass this only if it were tiny.
    const MAX_GROWTH_KIB: u64 = 50 * 1024;
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let bursts: Vec<Value> = app
        .seed_records()
        .await
        .into_iter()
        .filter(|r| r["label"] == 1)
        .collect();
    app.score(&bursts).await;
    let cases = cases();
    // One warm-up round: allocator pools, connection pools and lazy statics settle first.
    run(&app, &cases).await;
    let before = observable_state(&app).await;
    let Some(rss_before) = rss_kib() else {
        eprintln!("no /proc/self/status here; skipping the memory check");
        return;
    };
    for _ in 0..ROUNDS {
        run(&app, &cases).await;
    }
    let rss_after = rss_kib().expect("read before, readable after");
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "{} bad requests: RSS {rss_before} KiB -> {rss_after} KiB",
        ROUNDS * cases.len()
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew by {growth} KiB over {ROUNDS} rounds of bad input"
    );
    let after = observable_state(&app).await;
    assert_eq!(after.0, before.0, "the active model is unchanged");
    assert_eq!(after.1, before.1, "no alert was added");
    assert_eq!(after.2, before.2, "no model version was added");
}
