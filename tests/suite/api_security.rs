//! Problem bodies never carry internals: a storage failure or a damaged data directory is
//! answered without the filesystem paths the service log names (the data dir is usually under
//! /tmp here, /var/lib in production).

use std::sync::Arc;

use crate::support::app::{TestApp, oneshot_app, oneshot_app_in};
use crate::support::responses::assert_problem;
use netsentinel::config::Settings;
use reqwest::StatusCode;

/// Fails if `body` mentions the data directory or any absolute temp path.
fn assert_no_paths(app: &TestApp, body: &str) {
    let dir = app.data_path().to_string_lossy().into_owned();
    assert!(!body.contains(&dir), "the body leaks the data dir: {body}");
    assert!(!body.contains("/tmp"), "the body leaks a path: {body}");
    assert!(!body.contains("/models"), "the body leaks a path: {body}");
}

#[tokio::test]
async fn a_storage_failure_is_a_500_without_paths() {
    let app = oneshot_app().await;
    app.fit_small(1).await;
    // The model directory becomes a regular file: every later model write or listing fails.
    let models = app.data_path().join("models");
    std::fs::remove_dir_all(&models).unwrap();
    std::fs::write(&models, b"not a directory").unwrap();

    let response = app
        .post_json(
            "/v1/model/fit",
            &serde_json::json!({"generate": {}, "params": {"n_estimators": 5}}),
        )
        .await;
    let body = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    assert_no_paths(&app, &body.to_string());
    assert!(
        body["request_id"].is_string(),
        "the request id lets an operator find the logged cause: {body}"
    );

    let response = app.get("/v1/model/versions").await;
    let body = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    assert_no_paths(&app, &body.to_string());

    // The model in memory still serves.
    assert_eq!(app.active_version().await, Some(1));
}

#[tokio::test]
async fn readiness_explains_a_damaged_data_dir_without_paths() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("ACTIVE"), b"garbage").unwrap();
    std::fs::write(models.join("model-0000000001.bin"), b"NSMODEL\0 damaged").unwrap();
    let settings = Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    };
    let app = oneshot_app_in(dir, settings).await;

    let response = app.get("/readyz").await;
    let body = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "not-ready").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("ACTIVE") && detail.contains("model version 1 is corrupt"),
        "the reason still says what is wrong: {detail}"
    );
    assert_no_paths(&app, &body.to_string());
}

/// Without API keys the service must not listen beyond loopback unless told to.
#[tokio::test]
async fn refuses_to_serve_open_on_a_non_loopback_address() {
    use netsentinel::config::Settings;
    use netsentinel::startup::{Application, StartupError};
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        addr: "0.0.0.0:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    let refused = Application::build(settings.clone()).await;
    assert!(
        matches!(refused, Err(StartupError::InsecureOpen(_))),
        "open on 0.0.0.0 without keys must be refused"
    );
    let allowed = Application::build(Settings {
        insecure_open: true,
        ..settings.clone()
    })
    .await;
    assert!(allowed.is_ok(), "--insecure-open allows it");
    let keys = netsentinel::auth::ApiKeys::parse("admin:a-long-enough-secret-key").unwrap();
    let with_keys = Application::build(Settings {
        api_keys: Some(keys),
        ..settings
    })
    .await;
    assert!(with_keys.is_ok(), "with API keys any address is fine");
}
