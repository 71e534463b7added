//! Wiring: open the stores, load the model, build the router with its middleware, bind, serve until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderName, Request};
use axum::response::IntoResponse;
use axum::{Router, middleware};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::edge;
use crate::auth::{self, Policy};
use crate::config::Settings;
use crate::error::{ApiError, ProblemCode};
use crate::server::ConnLimits;

use crate::state::{AppState, Stores};
use crate::store::alerts::SqliteAlertStore;
use crate::store::detectors::DetectorModelFiles;
use crate::store::postgres::{PgDetectorModels, PgOptions, PgStore};
use crate::webhooks::Webhooks;
use crate::{api, monitoring};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("loading the detectors: {0}")]
    Detectors(#[from] crate::service::ServiceError),
    #[error(
        "refusing to serve without API keys on {0}, which is not a loopback address: set NETSENTINEL_API_KEYS, or pass --insecure-open if this is really wanted"
    )]
    InsecureOpen(SocketAddr),
    #[error("{0}")]
    Webhooks(#[from] crate::webhooks::WebhookConfigError),
    #[error("start-up failed: {0}")]
    Task(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built, bound service, ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    limits: ConnLimits,
}

impl Application {
    /// Opens storage in the data dir, loads the active model, and binds the address (port 0 picks one).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let open = settings.api_keys.as_ref().is_none_or(|k| k.is_empty());
        if open && !settings.addr.ip().is_loopback() && !settings.insecure_open {
            return Err(StartupError::InsecureOpen(settings.addr));
        }
        if open {
            tracing::warn!(
                "no API keys configured: every endpoint is open to anyone who can reach {}",
                settings.addr
            );
        } else {
            tracing::info!(
                keys = settings.api_keys.as_ref().map_or(0, |k| k.len()),
                "API keys required"
            );
        }
        // Off the runtime: the PostgreSQL client blocks (and may wait for the server).
        let state = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || build_state(settings))
                .await
                .map_err(|e| StartupError::Task(e.to_string()))??
        };
        let router = app(state.clone());
        let listener =
            TcpListener::bind(settings.addr)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.addr,
                    source,
                })?;
        let fd_limit = crate::server::raise_fd_limit();
        crate::server::return_large_blocks();
        let max_connections = crate::server::connection_cap(
            usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
            fd_limit,
            u64::from(settings.database_pool_size),
        );
        if (max_connections as u64) < settings.max_connections {
            tracing::warn!(
                max_connections,
                fd_limit,
                "connection cap lowered to stay below the file-descriptor limit"
            );
        }
        let limits = ConnLimits {
            header_read_timeout: Duration::from_secs(settings.header_read_timeout_secs),
            keep_alive_timeout: Duration::from_secs(settings.keep_alive_timeout_secs),
            max_connections,
        };
        Ok(Self {
            listener,
            router,
            state,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; in-flight requests are finished first.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), "netsentinel listening");
        let (stop_delivery, stop) = tokio::sync::watch::channel(false);
        let follower = crate::model_sync::start(self.state.clone(), stop.clone());
        let retention = crate::service::retention::start(self.state.clone(), stop.clone());
        let delivery = self.state.webhooks().start(self.state.outbox(), stop);
        let served = crate::server::serve(self.listener, self.router, self.limits, shutdown).await;
        // After the last request: an alert raised while draining is in the outbox already and
        // is delivered after the restart; a delivery cut short stays pending (at least once).
        let _ = stop_delivery.send(true);
        if let Err(e) = delivery.await {
            tracing::error!(error = %e, "webhook delivery did not stop cleanly");
        }
        if let Err(e) = retention.await {
            tracing::error!(error = %e, "retention did not stop cleanly");
        }
        if let Some(follower) = follower {
            if let Err(e) = follower.await {
                tracing::error!(error = %e, "model follower did not stop cleanly");
            }
        }
        served
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let signal = shutdown_signal();
        self.run_until(signal).await
    }
}

/// Opens the stores and loads the model: everything the app needs but the socket.
pub fn build_state(settings: Settings) -> Result<AppState, StartupError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartupError::DataDir {
        path: settings.data_dir.display().to_string(),
        source,
    })?;
    let webhooks = Webhooks::from_settings(&settings)?;
    for sink in webhooks.sinks() {
        tracing::info!(sink = %sink.name, kind = sink.kind(), target = %sink.origin(), format = sink.format.as_str(), signed = sink.secret.is_some(), "webhook sink configured");
    }
    let stores = match &settings.database_url {
        Some(url) => {
            let store = Arc::new(PgStore::connect(&PgOptions {
                url: url.expose().to_owned(),
                pool_size: settings.database_pool_size,
                timeout: Duration::from_millis(settings.database_timeout_ms),
                keep_models: settings.keep_models as usize,
            })?);
            tracing::info!(
                pool_size = settings.database_pool_size,
                "storage: PostgreSQL (alerts, webhook outbox, detectors and models shared by every replica)"
            );
            Stores {
                alerts: store.clone(),
                outbox: store.clone(),
                detectors: store.clone(),
                idempotency: store.clone(),
                streams: store.clone(),
                suppressions: store.clone(),
                models: Arc::new(PgDetectorModels(store)),
            }
        }
        None => {
            let alerts = Arc::new(SqliteAlertStore::open(
                &settings.data_dir.join("alerts.db"),
            )?);
            Stores {
                alerts: alerts.clone(),
                outbox: alerts.clone(),
                detectors: alerts.clone(),
                idempotency: alerts.clone(),
                suppressions: alerts.clone(),
                streams: alerts,
                models: Arc::new(DetectorModelFiles::new(
                    &settings.data_dir,
                    settings.keep_models as usize,
                )),
            }
        }
    };
    let detectors = crate::service::detectors::load_all(&stores)?;
    // Windows kept pending before a restart are in /metrics from the start, not from the
    // detector's next call (the recorder is installed first, or the gauge would go nowhere).
    crate::monitoring::handle();
    for det in &detectors {
        match stores.streams.pending(det.name()) {
            Ok(0) => {}
            Ok(n) => crate::monitoring::windows_pending(det.name(), n),
            Err(e) => {
                tracing::warn!(detector = det.name(), error = %e, "pending windows not counted")
            }
        }
    }
    if detectors[0].model().is_none() && detectors[0].load_problem().is_none() {
        tracing::info!("no model yet: POST /v1/model/fit to train one");
    }
    Ok(AppState::new(settings, stores, webhooks, detectors))
}

/// The paths answered outside the work slots and the request timeout: an orchestrator's probes
/// and the metrics scraper must get through while every slot is busy.
pub const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The router with its middleware: request ids, tracing, problem+json for every error, the
/// minimum body rate, for all but the probes load shedding and timeouts, and compressed answers
/// for clients that accept them.
pub fn app(state: AppState) -> Router {
    let settings = state.settings().clone();
    let request_id = HeaderName::from_static("x-request-id");
    let policy = Arc::new(Policy {
        keys: settings.api_keys.clone().unwrap_or_default(),
        metrics_require_key: settings.metrics_require_key,
    });
    if let Some(m) = state.default_detector().model() {
        monitoring::model_active(m.version());
    }
    let min_rate = (settings.min_body_rate > 0).then(|| edge::MinBodyRate {
        bytes_per_sec: settings.min_body_rate,
        window: Duration::from_secs(settings.min_body_rate_window_secs),
    });
    // Per route, outermost first: request-id check and nosniff, request id, trace, the probes'
    // detour (to the same stack without work slots), metrics, request id in problems,
    // problem+json for every error, minimum body rate, work slots and timeout, API keys, handler.
    let limits = state.limits().clone();
    let routes = api::router(state).layer(middleware::from_fn_with_state(policy, auth::authorize));
    let common = |r: Router| {
        r.layer(middleware::from_fn_with_state(
            min_rate,
            edge::min_body_rate,
        ))
        .layer(middleware::from_fn(edge::problems_everywhere))
        .layer(middleware::from_fn(crate::error::attach_request_id))
        .layer(middleware::from_fn(api::metrics::track))
    };
    // The work slot is taken inside the timeout: a timeout drops the handler's future with the
    // slot's cancel-on-drop guard, which cancels the work it started (`api::slots`). One set of
    // slots for the whole service (`Router::layer` applies the stack to each route).
    let work = common(
        routes.clone().layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .timeout(Duration::from_secs(settings.request_timeout_secs))
                .layer(middleware::from_fn_with_state(
                    limits,
                    api::slots::work_slot,
                )),
        ),
    );
    let probes = common(routes);
    work.layer(middleware::from_fn_with_state(probes, divert_probes))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(edge::sanitize))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .layer(api::compression())
}

/// Sends the probes to the router without work slots or timeout, before they reach them.
async fn divert_probes(
    State(probes): State<Router>,
    mut req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    if !PROBES.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    // The probes' router matches the path itself (it would otherwise nest the matched path).
    req.extensions_mut().remove::<axum::extract::MatchedPath>();
    probes
        .oneshot(req)
        .await
        .unwrap_or_else(|never| match never {})
}

async fn overloaded(err: tower::BoxError) -> axum::response::Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::unavailable(
            ProblemCode::Timeout,
            "the request took too long and was cancelled",
            1,
        )
        .into_response()
    } else {
        ApiError::new(ProblemCode::Internal, "unexpected middleware error").into_response()
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives as soon as the service listens (a
/// supervisor stopping it right after start) is not lost to the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let received = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = received(interrupt) => {},
                _ = received(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}
