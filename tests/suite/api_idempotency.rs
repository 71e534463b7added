//! `Idempotency-Key` on score and fit: a repeat gets the first answer byte for byte and changes
//! nothing; the same key with another request is 422; keys survive a restart, are scoped by
//! detector, operation and API key, hold off a concurrent repeat (409), and expire.

use std::io::Write;

use crate::support::app::{TestApp, oneshot_app, oneshot_app_with, spawn_app};
use crate::support::responses::{assert_problem, content_type, json_ok};
use crate::support::traffic::bursty_batch;
use chrono::Utc;
use netsentinel::detector::generator::{GeneratorConfig, generate};
use netsentinel::service::idempotency::{self, Lookup};
use netsentinel::store::idempotency::{KeyRecord, KeyScope, StoredAnswer};
use reqwest::{Method, Response, StatusCode, header};
use serde_json::{Value, json};

const KEY: &str = "batch-2026-11-30T03:00:00Z#17";

/// Status, content type, replay marker and body bytes of an answer.
async fn answer(response: Response) -> (StatusCode, String, Option<String>, Vec<u8>) {
    let status = response.status();
    let ct = content_type(&response);
    let replayed = response
        .headers()
        .get("idempotency-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        ct,
        replayed,
        response.bytes().await.unwrap().to_vec(),
    )
}

async fn score_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    app.send(
        app.request(Method::POST, path)
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}

async fn alert_count(app: &TestApp) -> usize {
    app.alerts("?limit=100").await.len()
}

#[tokio::test]
async fn a_repeated_score_returns_the_first_bytes_and_raises_no_second_alert() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let batch = bursty_batch(5);
    let first = answer(score_keyed(&app, "/v1/score", KEY, &batch).await).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.2, None, "a first answer is not a replay");
    let body: Value = serde_json::from_slice(&first.3).unwrap();
    assert!(body["alert"]["id"].is_string(), "the batch raises an alert");
    assert_eq!(alert_count(&app).await, 1);

    let again = answer(score_keyed(&app, "/v1/score", KEY, &batch).await).await;
    assert_eq!((again.0, &again.1, &again.3), (first.0, &first.1, &first.3));
    assert_eq!(again.2.as_deref(), Some("true"));
    // The same records gzip-encoded are the same request: the hash is over the decoded body.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&serde_json::to_vec(&batch).unwrap()).unwrap();
    let encoded = app
        .send(
            app.request(Method::POST, "/v1/score")
                .header("Idempotency-Key", KEY)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_ENCODING, "gzip")
                .body(gz.finish().unwrap()),
        )
        .await;
    assert_eq!(answer(encoded).await.3, first.3);
    assert_eq!(alert_count(&app).await, 1, "no second alert");

    // Another body, another answer type or another query under the same key: 422.
    let other = score_keyed(&app, "/v1/score", KEY, &bursty_batch(6)).await;
    let problem = assert_problem(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(problem["field"], "Idempotency-Key");
    let as_csv = app
        .send(
            app.request(Method::POST, "/v1/score")
                .header("Idempotency-Key", KEY)
                .header(header::ACCEPT, "text/csv")
                .json(&batch),
        )
        .await;
    assert_problem(
        as_csv,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    let queried = score_keyed(&app, "/v1/score?only_anomalies=true", KEY, &batch).await;
    assert_problem(
        queried,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(alert_count(&app).await, 1);

    // A batch that raises no alert keeps its key too.
    let calm: Vec<Value> = app
        .seed_records()
        .await
        .into_iter()
        .filter(|r| r.get("attack_kind").is_none_or(Value::is_null))
        .take(3)
        .collect();
    let calm_first = answer(score_keyed(&app, "/v1/score", "calm", &json!(calm)).await).await;
    let calm_body: Value = serde_json::from_slice(&calm_first.3).unwrap();
    assert!(calm_body["alert"].is_null(), "{calm_body}");
    let calm_again = answer(score_keyed(&app, "/v1/score", "calm", &json!(calm)).await).await;
    assert_eq!(calm_again.3, calm_first.3);
    assert_eq!(calm_again.2.as_deref(), Some("true"));
    // Without a key, the same batch is scored again and raises another alert.
    json_ok(app.post_json("/v1/score", &batch).await).await;
    assert_eq!(alert_count(&app).await, 2);
}

#[tokio::test]
async fn a_repeated_fit_makes_no_second_version() {
    let app = oneshot_app().await;
    let request = json!({"generate": {}, "params": {"n_estimators": 10, "seed": 3}});
    let fit = |key: &'static str, body: Value| {
        let app = &app;
        async move {
            let response = app
                .send(
                    app.request(Method::POST, "/v1/model/fit")
                        .header("Idempotency-Key", key)
                        .json(&body),
                )
                .await;
            let location = response.headers().get(header::LOCATION).cloned();
            (answer(response).await, location)
        }
    };
    let (first, location) = fit(KEY, request.clone()).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let (again, again_location) = fit(KEY, request.clone()).await;
    assert_eq!((again.0, &again.1, &again.3), (first.0, &first.1, &first.3));
    assert_eq!(again.2.as_deref(), Some("true"));
    assert_eq!(again_location, location);
    let versions = json_ok(app.get("/v1/model/versions").await).await;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );

    let other = json!({"generate": {}, "params": {"n_estimators": 11, "seed": 3}});
    let (reused, _) = fit(KEY, other).await;
    assert_eq!(reused.0, StatusCode::UNPROCESSABLE_ENTITY);
    // Keys are per operation: the fit's key on score is a new key.
    let scored = score_keyed(&app, "/v1/score", KEY, &bursty_batch(1)).await;
    assert_eq!(scored.status(), StatusCode::OK);
    assert_eq!(app.active_version().await, Some(1));
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let app = spawn_app().await;
    app.fit_small(2).await;
    let batch = bursty_batch(7);
    let first = answer(score_keyed(&app, "/v1/score", KEY, &batch).await).await;
    assert_eq!(first.0, StatusCode::OK);
    let app = app.restart().await;
    let again = answer(score_keyed(&app, "/v1/score", KEY, &batch).await).await;
    assert_eq!(again.3, first.3);
    assert_eq!(again.2.as_deref(), Some("true"));
    assert_eq!(alert_count(&app).await, 1);
}

#[tokio::test]
async fn keys_are_scoped_by_detector() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let put = app
        .send(
            app.request(Method::PUT, "/v1/detectors/flows")
                .json(&json!({})),
        )
        .await;
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let fitted = app
        .post_json(
            "/v1/detectors/flows/model/fit",
            &json!({"generate": {}, "params": {"n_estimators": 10}}),
        )
        .await;
    assert_eq!(fitted.status(), StatusCode::CREATED);
    let batch = bursty_batch(2);
    let a = answer(score_keyed(&app, "/v1/score", KEY, &batch).await).await;
    let b = answer(score_keyed(&app, "/v1/detectors/flows/score", KEY, &batch).await).await;
    assert_eq!((a.2, b.2), (None, None), "each detector ran the batch");
    assert_eq!(alert_count(&app).await, 2);
    let again = answer(score_keyed(&app, "/v1/detectors/flows/score", KEY, &batch).await).await;
    assert_eq!(again.3, b.3);
    assert_eq!(alert_count(&app).await, 2);
}

#[tokio::test]
async fn one_clients_key_never_returns_anothers_answer() {
    const A: &str = "score-secret-key-aaaa1";
    const B: &str = "score-secret-key-bbbb2";
    const ADMIN: &str = "admin-secret-key-00001";
    let app = oneshot_app_with(|s| {
        let keys = format!("score:{A},score:{B},admin:{ADMIN}");
        s.api_keys = Some(netsentinel::auth::ApiKeys::parse(&keys).unwrap());
    })
    .await;
    let fit = app.send(
        app.request(Method::POST, "/v1/model/fit")
            .bearer_auth(ADMIN)
            .json(&json!({"generate": {}, "params": {"n_estimators": 10}})),
    );
    assert_eq!(fit.await.status(), StatusCode::CREATED);
    let send = |client: &'static str, body: Value| {
        app.send(
            app.request(Method::POST, "/v1/score")
                .bearer_auth(client)
                .header("Idempotency-Key", KEY)
                .json(&body),
        )
    };
    let a = answer(send(A, bursty_batch(1)).await).await;
    // B's other batch under A's key is B's own first request, not a reuse of A's key.
    let b = answer(send(B, bursty_batch(2)).await).await;
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!((a.2, b.2), (None, None));
    assert_ne!(a.3, b.3);
    let a_again = answer(send(A, bursty_batch(1)).await).await;
    assert_eq!(a_again.3, a.3);
    assert_eq!(a_again.2.as_deref(), Some("true"));
}

#[tokio::test]
async fn keys_must_be_printable_ascii_of_at_most_255_bytes() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    for key in ["".to_owned(), "x".repeat(256), "tab\there".to_owned()] {
        let response = score_keyed(&app, "/v1/score", &key, &bursty_batch(1)).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "invalid-parameter").await;
        assert_eq!(problem["field"], "Idempotency-Key");
    }
    let non_ascii = app
        .send(
            app.request(Method::POST, "/v1/score")
                .header(
                    "Idempotency-Key",
                    header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
                )
                .json(&bursty_batch(1)),
        )
        .await;
    assert_problem(non_ascii, StatusCode::BAD_REQUEST, "invalid-parameter").await;
    assert_eq!(alert_count(&app).await, 0, "nothing was scored");
    let longest = score_keyed(&app, "/v1/score", &"~".repeat(255), &bursty_batch(1)).await;
    assert_eq!(longest.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_whose_request_still_runs_is_409_with_retry_after() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let scope = KeyScope {
        client: String::new(),
        detector: "default".into(),
        operation: "score".into(),
    };
    // The first request, still running: its claim is held.
    let Lookup::Run(claim) = idempotency::begin(app.state(), scope, KEY.into())
        .await
        .unwrap()
    else {
        panic!("a new key is claimed");
    };
    let response = score_keyed(&app, "/v1/score", KEY, &bursty_batch(1)).await;
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let problem = assert_problem(response, StatusCode::CONFLICT, "idempotency-key-in-flight").await;
    assert_eq!(problem["field"], "Idempotency-Key");
    let secs: u64 = retry_after
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1);
    assert_eq!(alert_count(&app).await, 0);
    drop(claim);
    let ran = score_keyed(&app, "/v1/score", KEY, &bursty_batch(1)).await;
    assert_eq!(ran.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_run_once() {
    let app = spawn_app().await;
    app.fit_small(1).await;
    let batch = bursty_batch(9);
    let sends = (0..8).map(|_| async {
        let response = score_keyed(&app, "/v1/score", KEY, &batch).await;
        answer(response).await
    });
    let answers = futures_util::future::join_all(sends).await;
    let ok: Vec<_> = answers.iter().filter(|a| a.0 == StatusCode::OK).collect();
    for a in &answers {
        assert!(
            a.0 == StatusCode::OK || a.0 == StatusCode::CONFLICT,
            "{:?}: {}",
            a.0,
            String::from_utf8_lossy(&a.3)
        );
    }
    assert!(!ok.is_empty());
    assert!(ok.iter().all(|a| a.3 == ok[0].3), "one answer for one key");
    assert_eq!(
        ok.iter().filter(|a| a.2.is_none()).count(),
        1,
        "exactly one request ran"
    );
    assert_eq!(alert_count(&app).await, 1);
}

#[tokio::test]
async fn expired_keys_are_pruned_and_fresh_ones_kept() {
    let app = oneshot_app_with(|s| s.idempotency_ttl_hours = 2).await;
    app.fit_small(1).await;
    let batch = bursty_batch(3);
    let fresh = answer(score_keyed(&app, "/v1/score", "fresh", &batch).await).await;
    let old = KeyRecord {
        scope: KeyScope {
            client: String::new(),
            detector: "default".into(),
            operation: "score".into(),
        },
        key: "old".into(),
        request_hash: "0".repeat(64),
        created_at: Utc::now() - chrono::Duration::hours(3),
        answer: StoredAnswer {
            status: 200,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: Some(b"{}".to_vec()),
            body_len: 2,
            body_sha256: String::new(),
        },
    };
    app.state().stores().idempotency.record_key(&old).unwrap();
    let reused = score_keyed(&app, "/v1/score", "old", &batch).await;
    assert_problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;

    assert_eq!(
        netsentinel::service::retention::prune_keys_once(app.state()).await,
        1
    );
    // The old key is gone: a request with it runs; the fresh one still replays.
    let ran = answer(score_keyed(&app, "/v1/score", "old", &batch).await).await;
    assert_eq!((ran.0, ran.2), (StatusCode::OK, None));
    let replayed = answer(score_keyed(&app, "/v1/score", "fresh", &batch).await).await;
    assert_eq!(replayed.3, fresh.3);
    assert_eq!(replayed.2.as_deref(), Some("true"));
}

#[tokio::test]
async fn an_answer_too_large_to_keep_is_not_replayed_nor_run_again() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    let records = generate(&GeneratorConfig {
        n_records: 4000,
        anomaly_every: 2,
        seed: 4,
        ..GeneratorConfig::default()
    })
    .unwrap();
    let body = serde_json::to_value(records).unwrap();
    let path = "/v1/score?explain=all";
    let first = answer(score_keyed(&app, path, KEY, &body).await).await;
    assert_eq!(first.0, StatusCode::OK);
    assert!(
        first.3.len() > idempotency::MAX_KEPT_ANSWER,
        "the answer is {} bytes",
        first.3.len()
    );
    let again = score_keyed(&app, path, KEY, &body).await;
    assert_problem(again, StatusCode::CONFLICT, "idempotency-answer-not-kept").await;
    assert_eq!(alert_count(&app).await, 1, "not run again");
}
