//! Prometheus metrics: one process-wide recorder and the counters the service layer records
//! (the per-request middleware and the `/metrics` route are in `api/metrics.rs`).
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms). Routes are
//! labelled by their matched pattern (`/v1/alerts/{id}`), never the raw path, so label sets stay small.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds): sub-millisecond scoring up to long fits.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The process-wide recorder's handle (installed on first use; tests build many apps in one process).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("bucket list is non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        describe();
        handle
    })
}

/// Every counter this process exports, with its help text.
const COUNTERS: [(&str, &str); 17] = [
    (
        "http_requests_total",
        "HTTP requests by method, route and status",
    ),
    ("netsentinel_records_scored_total", "Records scored"),
    ("netsentinel_anomalies_total", "Records scored as anomalous"),
    ("netsentinel_alerts_raised_total", "Alerts raised"),
    (
        "netsentinel_alert_entities_omitted_total",
        "Anomalous entities left out of an alert past --max-alert-entities (not stored as incidents), by detector",
    ),
    (
        "netsentinel_alert_records_omitted_total",
        "Anomalous records (windows) of the entities left out past --max-alert-entities, by detector",
    ),
    (
        "netsentinel_alerts_pruned_total",
        "Alerts deleted past --alert-retention-days",
    ),
    ("netsentinel_fits_total", "Models fitted"),
    (
        "netsentinel_suppressed_records_total",
        "Records (or Zeek windows) scored while a suppression rule matched them, by rule",
    ),
    (
        "netsentinel_ingest_accepted_total",
        "Conn lines folded into open windows by continuous ingest, by detector",
    ),
    (
        "netsentinel_ingest_late_total",
        "Conn lines whose window had already closed (counted, not merged), by detector",
    ),
    (
        "netsentinel_ingest_rejected_total",
        "Unreadable lines skipped by continuous ingest, by detector",
    ),
    (
        "netsentinel_ingest_duplicates_total",
        "Conn lines whose uid their window already held (retries), by detector",
    ),
    (
        "netsentinel_windows_closed_total",
        "Windows closed, scored and stored by continuous ingest, by detector",
    ),
    (
        "netsentinel_ingest_reloads_total",
        "Ingest calls that found, under the stream lock, another replica's commit since their own and reloaded the stream",
    ),
    (
        "netsentinel_windows_pruned_total",
        "Closed windows deleted past --window-retention-days",
    ),
    (
        "netsentinel_webhook_deliveries_total",
        "Webhook delivery attempts by sink and result (ok, retrying, failed)",
    ),
];

fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        "HTTP request latency by route"
    );
    metrics::describe_histogram!("netsentinel_fit_duration_seconds", "Time to fit a model");
    metrics::describe_gauge!(
        "netsentinel_model_version",
        "Version of the active model (0: none)"
    );
    metrics::describe_gauge!(
        "netsentinel_outbox_depth",
        "Webhook deliveries still pending, all sinks"
    );
}

/// Records what a scored batch contributed.
pub fn batch_scored(records: usize, anomalies: usize, alert_raised: bool) {
    metrics::counter!("netsentinel_records_scored_total").increment(records as u64);
    metrics::counter!("netsentinel_anomalies_total").increment(anomalies as u64);
    if alert_raised {
        metrics::counter!("netsentinel_alerts_raised_total").increment(1);
    }
}

/// Counts the entities (and their anomalous records) an alert of `detector` left out past
/// `--max-alert-entities`.
pub fn alert_entities_omitted(detector: &str, entities: u64, records: u64) {
    metrics::counter!("netsentinel_alert_entities_omitted_total", "detector" => detector.to_owned())
        .increment(entities);
    metrics::counter!("netsentinel_alert_records_omitted_total", "detector" => detector.to_owned())
        .increment(records);
}

/// Counts records a suppression rule matched, per rule id.
pub fn suppressed(rule: &str, records: usize) {
    metrics::counter!("netsentinel_suppressed_records_total", "rule" => rule.to_owned())
        .increment(records as u64);
}

/// Records a fit and the model now active.
pub fn model_fitted(seconds: f64) {
    metrics::counter!("netsentinel_fits_total").increment(1);
    metrics::histogram!("netsentinel_fit_duration_seconds").record(seconds);
}

/// How many closed windows `detector` keeps pending until it has a model.
pub fn windows_pending(detector: &str, n: u64) {
    metrics::gauge!("netsentinel_windows_pending", "detector" => detector.to_owned()).set(n as f64);
}

pub fn model_active(version: u64) {
    metrics::gauge!("netsentinel_model_version").set(version as f64);
}
