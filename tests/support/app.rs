//! The service in-process on a real socket (port 0) over a temp data dir, with request helpers.
//!
//! Each test gets its own server and directory, so the suite runs in parallel. `restart()` stops a
//! server gracefully and starts a new one on the same directory, as an operator's restart would.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use netsentinel::config::Settings;
use netsentinel::startup::Application;
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::responses::json_ok;

/// A running service and a client for it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    /// Kept alive (and shared across restarts) until the last handle is dropped.
    pub data_dir: Arc<TempDir>,
    pub client: reqwest::Client,
    settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// A service with default settings over a fresh temp directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A service over a fresh temp directory with settings adjusted by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("a temp dir"));
    let mut settings = Settings {
        addr: "127.0.0.1:0".parse().expect("a socket address"),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    tweak(&mut settings);
    spawn_app_in(dir, settings).await
}

/// A service on `dir` (which outlives it) with `settings`; `settings.data_dir` is set to `dir`.
pub async fn spawn_app_in(dir: Arc<TempDir>, mut settings: Settings) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        netsentinel::telemetry::init(settings.log_format, &settings.log);
    }
    settings.data_dir = dir.path().to_path_buf();
    let app = Application::build(settings.clone())
        .await
        .expect("the application builds");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base_url: format!("http://{addr}"),
        data_dir: dir,
        client: reqwest::Client::builder().build().expect("an HTTP client"),
        settings,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the server and waits until it has finished every in-flight request and returned.
    pub async fn stop(&mut self) {
        // Dropping pooled keep-alive connections lets graceful shutdown finish at once.
        self.client = reqwest::Client::new();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task did not panic")
                .expect("the server stopped cleanly");
        }
    }

    /// Stops this server gracefully and starts a new one with the same settings on the same data dir.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let mut settings = self.settings.clone();
        settings.addr = "127.0.0.1:0".parse().expect("a socket address");
        spawn_app_in(self.data_dir.clone(), settings).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn get_accept(&self, path: &str, accept: &str) -> Response {
        self.client
            .get(self.url(path))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("the request is sent")
    }

    /// POSTs raw bytes with the given Content-Type (None: no Content-Type header at all).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.send().await.expect("the request is sent")
    }

    pub async fn post_csv(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.post_raw(path, Some("text/csv"), body).await
    }

    pub async fn post_ndjson(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.post_raw(path, Some("application/x-ndjson"), body)
            .await
    }

    /// POST with an empty body.
    pub async fn post_empty(&self, path: &str) -> Response {
        self.client
            .post(self.url(path))
            .send()
            .await
            .expect("the request is sent")
    }

    /// The seed profile's 720 labeled records (`POST /v1/samples` with defaults).
    pub async fn seed_records(&self) -> Vec<Value> {
        let body = json_ok(self.post_json("/v1/samples", &json!({})).await).await;
        body["records"]
            .as_array()
            .expect("samples carry a records array")
            .clone()
    }

    /// Fits on generated seed data with default parameters; returns the model metadata.
    pub async fn fit_seed(&self) -> Value {
        self.fit(json!({"generate": {}})).await
    }

    /// Fits a small, fast forest on seed data with this seed; returns the model metadata.
    pub async fn fit_small(&self, seed: u64) -> Value {
        self.fit(json!({"generate": {}, "params": {"n_estimators": 20, "seed": seed}}))
            .await
    }

    /// Posts a fit request and insists on 201.
    pub async fn fit(&self, request: Value) -> Value {
        let response = self.post_json("/v1/model/fit", &request).await;
        let status = response.status();
        let body = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::CREATED, "fit failed: {body}");
        serde_json::from_str(&body).expect("fit answers JSON")
    }

    /// Scores records (JSON) and insists on 200; returns the response body.
    pub async fn score(&self, records: &[Value]) -> Value {
        json_ok(self.post_json("/v1/score", &json!(records)).await).await
    }

    pub async fn alerts(&self, query: &str) -> Vec<Value> {
        let body = json_ok(self.get(&format!("/v1/alerts{query}")).await).await;
        body["alerts"].as_array().expect("an alerts array").clone()
    }

    pub async fn active_version(&self) -> Option<u64> {
        version_of(self.get("/v1/model").await).await
    }

    /// [`TestApp::active_version`] for a service that needs an API key.
    pub async fn active_version_with(&self, key: &str) -> Option<u64> {
        let response = self
            .client
            .get(self.url("/v1/model"))
            .bearer_auth(key)
            .send()
            .await
            .expect("the request is sent");
        version_of(response).await
    }
}

/// The version in a `GET /v1/model` answer; None on its 404.
async fn version_of(response: Response) -> Option<u64> {
    match response.status() {
        StatusCode::NOT_FOUND => None,
        _ => json_ok(response).await["version"].as_u64(),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
