//! Behaviour under load: requests beyond `max_concurrency` are shed with 503 + Retry-After, a
//! request past `request_timeout_secs` is cancelled with 503, and scoring while models are fitted
//! and rolled back never mixes models: every response's scores are exactly those of the one
//! model version it names, and each client sees the versions in the order they were active.
//!
//! No assertion here is about wall-clock time: the slow requests are fits on a large generated
//! data set, and each test only relies on a later request arriving while such a fit is running.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::app::{TestApp, spawn_app, spawn_app_with};
use crate::support::data::scores;
use crate::support::responses::{assert_problem, json_ok};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};

/// A fit that keeps the service busy for a while (seconds in a debug build).
fn slow_fit() -> Value {
    json!({
        "generate": {"profile": "realistic", "n_records": 200_000},
        "params": {"n_estimators": 100}
    })
}

/// Asserts a 503 `code` problem with a positive whole-seconds Retry-After.
async fn assert_unavailable(response: Response, code: &str) {
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().expect("an ASCII Retry-After").to_string());
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, code).await;
    let retry_after = retry_after.expect("a 503 tells the client when to retry");
    let secs: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is whole seconds, got {retry_after:?}"));
    assert!(secs >= 1, "Retry-After: {secs}");
}

/// Polls `POST /v1/score` while `slow` runs (bounded); returns how many polls were shed.
async fn poll_scores_while(
    app: &TestApp,
    batch: &[Value],
    slow: &tokio::task::JoinHandle<Response>,
) -> (usize, usize) {
    let (mut shed, mut polls) = (0, 0);
    // At most 400 polls; stop once the slow request is back or enough polls were shed.
    while polls < 400 && !slow.is_finished() && shed < 3 {
        polls += 1;
        let response = app.post_json("/v1/score", &json!(batch)).await;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_unavailable(response, "overloaded").await;
                shed += 1;
            }
            other => panic!(
                "scoring next to a fit answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (shed, polls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_concurrency_are_shed_with_retry_after() {
    let app = Arc::new(spawn_app_with(|s| s.max_concurrency = 1).await);
    let batch = app.seed_records().await;
    app.fit_small(1).await;
    app.score(&batch).await;

    // The one slot is taken by a long fit: a score on another route must be refused, not queued.
    // Up to three slow fits, in case the first was over before any poll reached it.
    let mut total_shed = 0;
    for attempt in 0..3 {
        let slow = {
            let app = app.clone();
            tokio::spawn(async move { app.post_json("/v1/model/fit", &slow_fit()).await })
        };
        let (shed, polls) = poll_scores_while(&app, &batch, &slow).await;
        eprintln!("attempt {attempt}: {shed} of {polls} polls shed");
        let fitted = slow.await.expect("the fitting task did not panic");
        if fitted.status() == StatusCode::SERVICE_UNAVAILABLE {
            // A poll took the one slot before the fit reached the server (likely on a loaded
            // machine): the fit, on another route, was shed. That is the same service-wide
            // limit at work, so it counts.
            assert_unavailable(fitted, "overloaded").await;
            eprintln!("attempt {attempt}: the fit itself was shed by a poll");
            total_shed += shed + 1;
            break;
        }
        assert_eq!(fitted.status(), StatusCode::CREATED, "the slow fit itself");
        total_shed += shed;
        if total_shed > 0 {
            break;
        }
    }
    assert!(
        total_shed > 0,
        "with max_concurrency = 1, a score during a fit is shed"
    );

    // With the slot free again, requests go through.
    let scored = app.score(&batch).await;
    assert_eq!(scored["results"].as_array().unwrap().len(), batch.len());
    json_ok(app.get("/v1/model").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_fit_during_a_fit_is_shed() {
    // Same route, so this holds whether the limit is per route or for the whole service.
    let app = Arc::new(spawn_app_with(|s| s.max_concurrency = 1).await);
    let slow = {
        let app = app.clone();
        tokio::spawn(async move { app.post_json("/v1/model/fit", &slow_fit()).await })
    };
    let mut shed = false;
    for _ in 0..400 {
        if slow.is_finished() {
            break;
        }
        let response = app.post_json("/v1/model/fit", &json!({})).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_unavailable(response, "overloaded").await;
            shed = true;
            break;
        }
        // Got in before the slow fit: an empty fit request is refused as malformed.
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fitted = slow.await.expect("the fitting task did not panic");
    assert_eq!(fitted.status(), StatusCode::CREATED);
    assert!(shed, "a fit while the only slot is taken is shed");
    app.fit_small(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_is_cancelled_with_503() {
    let app = spawn_app_with(|s| s.request_timeout_secs = 1).await;
    // Five times the slow fit: far beyond one second even in a release build.
    let response = app
        .post_json(
            "/v1/model/fit",
            &json!({
                "generate": {"profile": "realistic", "n_records": 1_000_000},
                "params": {"n_estimators": 100}
            }),
        )
        .await;
    assert_unavailable(response, "timeout").await;
    // The cancelled fit published nothing (its blocking work may still be finishing, but the
    // handler that would publish it is gone), and the service keeps answering.
    assert_eq!(app.active_version().await, None);
    app.fit_small(1).await;
    assert_eq!(app.active_version().await, Some(1));
}

const SCORERS: usize = 4;
/// Each scorer keeps going until the changes are done, and makes at least this many requests.
const MIN_REQUESTS_PER_SCORER: usize = 5;

/// (model_version, scores) of one scoring response.
type Observation = (u64, Vec<f64>);

/// Scores `batch` again and again until `done` is set (and at least `min_requests` times); every
/// answer must be 2xx, and an alert must name the model version that scored its batch.
async fn score_until(
    app: Arc<TestApp>,
    batch: Arc<Vec<Value>>,
    done: Arc<AtomicBool>,
    min_requests: usize,
) -> Vec<Observation> {
    let mut seen = Vec::new();
    while seen.len() < min_requests || !done.load(Ordering::Acquire) {
        let response = app.post_json("/v1/score", &json!(*batch)).await;
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert!(
            status.is_success(),
            "scoring while the model changes answered {status}: {text}"
        );
        let body: Value = serde_json::from_str(&text).expect("JSON");
        let version = body["model_version"].as_u64().expect("a model version");
        if let Some(alert_version) = body["alert"]["model_version"].as_u64() {
            assert_eq!(
                alert_version, version,
                "the alert names the model that scored the batch"
            );
        }
        assert_eq!(body["results"].as_array().unwrap().len(), batch.len());
        seen.push((version, scores(&body)));
    }
    seen
}

/// Whether `seen`, the versions one client got request after request, can be read off
/// `timeline`, the versions active one after another, moving only forward: sequential requests
/// never see an earlier state of the service than the one before them did.
fn follows(seen: &[u64], timeline: &[u64]) -> bool {
    let mut at = 0;
    seen.iter()
        .all(|v| match timeline[at..].iter().position(|t| t == v) {
            Some(step) => {
                at += step;
                true
            }
            None => false,
        })
}

/// What the changer does, in order: fits (with a new seed) and rollbacks (to a version).
#[derive(Debug, Clone, Copy)]
enum Change {
    Fit(u64),
    Activate(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_during_fits_and_rollbacks_never_mixes_models() {
    let app = Arc::new(spawn_app().await);
    let batch = Arc::new(app.seed_records().await);
    app.fit(json!({"generate": {}, "params": {"n_estimators": 50, "seed": 1}}))
        .await;

    // v1 active; then v2, back to v1, v3, back to v2, v4, back to v3.
    let changes = [
        Change::Fit(2),
        Change::Activate(1),
        Change::Fit(3),
        Change::Activate(2),
        Change::Fit(4),
        Change::Activate(3),
    ];
    let done = Arc::new(AtomicBool::new(false));
    let scorers: Vec<_> = (0..SCORERS)
        .map(|_| {
            tokio::spawn(score_until(
                app.clone(),
                batch.clone(),
                done.clone(),
                MIN_REQUESTS_PER_SCORER,
            ))
        })
        .collect();
    let changer = {
        let app = app.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut active = Vec::new();
            for change in changes {
                let meta = match change {
                    Change::Fit(seed) => {
                        app.fit(
                            json!({"generate": {}, "params": {"n_estimators": 50, "seed": seed}}),
                        )
                        .await
                    }
                    Change::Activate(v) => {
                        json_ok(
                            app.post_empty(&format!("/v1/model/versions/{v}/activate"))
                                .await,
                        )
                        .await
                    }
                };
                active.push(meta["version"].as_u64().expect("a version"));
                // Let the scorers see each model.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done.store(true, Ordering::Release);
            active
        })
    };
    let active = changer.await.expect("the changer did not panic");
    assert_eq!(active, [2, 1, 3, 2, 4, 3], "fits and rollbacks as asked");
    // v1 was active before the scorers started; then each change in turn.
    let timeline: Vec<u64> = std::iter::once(1).chain(active).collect();
    let mut observations = Vec::new();
    for scorer in scorers {
        let seen = scorer.await.expect("a scorer did not panic");
        // Each scorer's requests are sequential and each change is complete before the next
        // starts, so the versions a scorer sees never go back in that order.
        let versions: Vec<u64> = seen.iter().map(|(v, _)| *v).collect();
        assert!(
            follows(&versions, &timeline),
            "versions seen by one scorer went backwards: {versions:?} (active in turn: {timeline:?})"
        );
        observations.extend(seen);
    }
    let mut per_version = BTreeMap::new();
    for (v, _) in &observations {
        *per_version.entry(*v).or_insert(0usize) += 1;
    }
    eprintln!("responses per model version: {per_version:?}");

    // Reference scores of each version, with nothing else going on.
    let mut reference = BTreeMap::new();
    for version in 1..=4u64 {
        let activated = json_ok(
            app.post_empty(&format!("/v1/model/versions/{version}/activate"))
                .await,
        )
        .await;
        assert_eq!(activated["version"], version);
        let scored = app.score(&batch).await;
        assert_eq!(scored["model_version"], version);
        reference.insert(version, scores(&scored));
    }
    let distinct: BTreeSet<String> = reference.values().map(|s| format!("{s:?}")).collect();
    assert_eq!(
        distinct.len(),
        4,
        "each seed gives its own scores, so a mix would show"
    );
    for (i, (version, got)) in observations.iter().enumerate() {
        let expected = reference
            .get(version)
            .unwrap_or_else(|| panic!("response {i} names version {version}, never fitted"));
        assert!(
            got == expected,
            "response {i} names version {version} but its scores are not that model's"
        );
    }
    assert!(observations.len() >= SCORERS * MIN_REQUESTS_PER_SCORER);
}
