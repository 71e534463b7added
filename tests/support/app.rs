//! The service in-process over a temp data dir, with request helpers: on a loopback socket
//! (`spawn_app*`) for tests of connection behaviour, or through `tower::ServiceExt::oneshot` on
//! the same router (`oneshot_app*`) for tests that only check statuses and bodies.
//!
//! Each test gets its own service and directory, so the suite runs in parallel. `restart()` stops a
//! service gracefully and starts a new one on the same directory, as an operator's restart would.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use netsentinel::config::Settings;
use netsentinel::startup::{self, Application};
use netsentinel::state::AppState;
use reqwest::{Method, RequestBuilder, Response, ResponseBuilderExt, StatusCode, header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::responses::{json_ok, json_with_status};

/// The base URL of a service without a socket: `.invalid` never resolves, so a request that
/// bypasses [`TestApp::send`] fails at once.
const ONESHOT_BASE_URL: &str = "http://oneshot.invalid";

/// A running service and a client for it.
pub struct TestApp {
    pub base_url: String,
    /// Kept alive (and shared across restarts) until the last handle is dropped.
    pub data_dir: Arc<TempDir>,
    pub client: reqwest::Client,
    settings: Settings,
    state: AppState,
    server: Server,
}

/// How requests reach the service.
enum Server {
    /// `Application::run_until` on a loopback port, until `shutdown` fires.
    Socket {
        shutdown: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    },
    /// `startup::app` with no socket: each request is one `oneshot` call. No background task
    /// runs (webhook delivery, model follower), so these apps have neither sinks nor a database.
    Router(Router),
    Stopped,
}

#[derive(Clone, Copy)]
enum Transport {
    Socket,
    Oneshot,
}

/// A service on a socket, with default settings over a fresh temp directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A service on a socket over a fresh temp directory with settings adjusted by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (dir, settings) = fresh(tweak);
    spawn_app_in(dir, settings).await
}

/// A service on a socket on `dir` (which outlives it) with `settings`; `settings.data_dir` is
/// set to `dir`.
pub async fn spawn_app_in(dir: Arc<TempDir>, settings: Settings) -> TestApp {
    start(Transport::Socket, dir, settings).await
}

/// A service without a socket, with default settings over a fresh temp directory.
pub async fn oneshot_app() -> TestApp {
    oneshot_app_with(|_| {}).await
}

/// A service without a socket over a fresh temp directory with settings adjusted by `tweak`.
pub async fn oneshot_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (dir, settings) = fresh(tweak);
    oneshot_app_in(dir, settings).await
}

/// A service without a socket on `dir` (which outlives it) with `settings`; `settings.data_dir`
/// is set to `dir`.
pub async fn oneshot_app_in(dir: Arc<TempDir>, settings: Settings) -> TestApp {
    start(Transport::Oneshot, dir, settings).await
}

/// A fresh temp directory and loopback settings for it, adjusted by `tweak`.
fn fresh(tweak: impl FnOnce(&mut Settings)) -> (Arc<TempDir>, Settings) {
    let dir = Arc::new(tempfile::tempdir().expect("a temp dir"));
    let mut settings = Settings {
        addr: "127.0.0.1:0".parse().expect("a socket address"),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    tweak(&mut settings);
    (dir, settings)
}

async fn start(transport: Transport, dir: Arc<TempDir>, mut settings: Settings) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        netsentinel::telemetry::init(settings.log_format, &settings.log);
    }
    settings.data_dir = dir.path().to_path_buf();
    let (base_url, state, server) = match transport {
        Transport::Socket => {
            let app = Application::build(settings.clone())
                .await
                .expect("the application builds");
            let base_url = format!("http://{}", app.local_addr());
            let state = app.state().clone();
            let (shutdown, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(app.run_until(async {
                let _ = rx.await;
            }));
            (base_url, state, Server::Socket { shutdown, task })
        }
        Transport::Oneshot => {
            assert!(
                settings.webhooks_file.is_none() && settings.database_url.is_none(),
                "a service without a socket runs no background task: use spawn_app_in"
            );
            // Off the runtime, as `Application::build` does: opening the stores blocks.
            let state = {
                let settings = settings.clone();
                tokio::task::spawn_blocking(move || startup::build_state(settings))
                    .await
                    .expect("building the state did not panic")
                    .expect("the application builds")
            };
            (
                ONESHOT_BASE_URL.to_string(),
                state.clone(),
                Server::Router(startup::app(state)),
            )
        }
    };
    TestApp {
        base_url,
        data_dir: dir,
        client: reqwest::Client::builder().build().expect("an HTTP client"),
        settings,
        state,
        server,
    }
}

impl TestApp {
    /// The running service's state, for tests that drive a background task by hand.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the service; one on a socket first finishes every in-flight request.
    pub async fn stop(&mut self) {
        // Dropping pooled keep-alive connections lets graceful shutdown finish at once.
        self.client = reqwest::Client::new();
        if let Server::Socket { shutdown, task } =
            std::mem::replace(&mut self.server, Server::Stopped)
        {
            let _ = shutdown.send(());
            task.await
                .expect("the server task did not panic")
                .expect("the server stopped cleanly");
        }
    }

    /// Stops this service gracefully and starts a new one the same way (socket or not) with the
    /// same settings on the same data dir.
    pub async fn restart(mut self) -> TestApp {
        let transport = match self.server {
            Server::Router(_) => Transport::Oneshot,
            Server::Socket { .. } | Server::Stopped => Transport::Socket,
        };
        self.stop().await;
        let mut settings = self.settings.clone();
        settings.addr = "127.0.0.1:0".parse().expect("a socket address");
        start(transport, self.data_dir.clone(), settings).await
    }

    /// A request to `path`, to finish and pass to [`TestApp::send`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends `request` over the socket, or through the router's `oneshot` (the whole answer is
    /// read, then handed back as a `reqwest::Response` carrying the request's URL).
    pub async fn send(&self, request: RequestBuilder) -> Response {
        let Server::Router(router) = &self.server else {
            return request.send().await.expect("the request is sent");
        };
        let request = request.build().expect("a valid request");
        let url = request.url().clone();
        let request = axum::http::Request::try_from(request)
            .expect("an HTTP request")
            .map(axum::body::Body::new);
        let response = router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never: Infallible| match never {});
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("the whole body");
        let mut answer = axum::http::Response::builder()
            .status(parts.status)
            .version(parts.version)
            .url(url);
        *answer.headers_mut().expect("a valid response") = parts.headers;
        Response::from(answer.body(body).expect("a valid response"))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn get_accept(&self, path: &str, accept: &str) -> Response {
        self.send(
            self.request(Method::GET, path)
                .header(header::ACCEPT, accept),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// POSTs `body` as JSON asking for the answer as `accept`.
    pub async fn post_json_accept(&self, path: &str, accept: &str, body: &Value) -> Response {
        self.send(
            self.request(Method::POST, path)
                .header(header::ACCEPT, accept)
                .json(body),
        )
        .await
    }

    /// POSTs raw bytes with the given Content-Type (None: no Content-Type header at all).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self.request(Method::POST, path).body(body);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        self.send(request).await
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
        self.send(self.request(Method::POST, path)).await
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

    /// Posts a body to the detector's `ingest` at `base` and insists on 202; returns the answer.
    pub async fn ingest(&self, base: &str, content_type: &str, body: String) -> Value {
        json_with_status(
            self.post_raw(&format!("{base}/ingest"), Some(content_type), body)
                .await,
            StatusCode::ACCEPTED,
        )
        .await
    }

    /// Every stored window of the detector at `base` (`/v1/detectors/{name}`), `limit` a
    /// page, following the cursors.
    pub async fn windows(&self, base: &str, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("{base}/windows?limit={limit}&cursor={c}"),
                None => format!("{base}/windows?limit={limit}"),
            };
            let page = json_ok(self.get(&path).await).await;
            out.extend(
                page["windows"]
                    .as_array()
                    .expect("a windows array")
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    pub async fn active_version(&self) -> Option<u64> {
        version_of(self.get("/v1/model").await).await
    }

    /// [`TestApp::active_version`] for a service that needs an API key.
    pub async fn active_version_with(&self, key: &str) -> Option<u64> {
        version_of(
            self.send(self.request(Method::GET, "/v1/model").bearer_auth(key))
                .await,
        )
        .await
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
        if let Server::Socket { shutdown, .. } =
            std::mem::replace(&mut self.server, Server::Stopped)
        {
            let _ = shutdown.send(());
        }
    }
}
