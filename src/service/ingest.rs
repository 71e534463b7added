//! Continuous ingest: a detector's Zeek stream folded into event-time windows that persist
//! across requests, restarts and replicas; closed windows scored, stored and alerted on once.
//!
//! # One call, durably
//!
//! On a blocking thread, under the detector's stream lock (one call per detector at a time in
//! this process): the open windows as last committed (loaded from the store when this process
//! has none), the body folded in ([`WindowBook::ingest`], or [`WindowBook::flush`]), the
//! windows it closed scored by the active model as one `score` request would score them, and
//! then ONE commit ([`StreamStore::commit_stream`]): the new stream state, the closed windows,
//! and their alert with its outbox rows. The commit applies only over the stream version this
//! process read; when another replica committed first, nothing is written, the state is
//! reloaded and the body folded again. So the answer (202) is sent only for lines whose effect
//! is committed, a retry of them is a duplicate (`uid`), and every window is closed by one
//! commit only. A failed commit leaves the process without a stream in memory: the next call
//! reloads what is stored.
//!
//! # Without a model
//!
//! Refused with 409 `no-model` before anything is read or stored: a pipeline keeps the batch
//! (it drops batches on 4xx only after its retries; a 409 says "not yet") and nothing would
//! score the windows it closes. Fit the detector first.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::scoring::{AlertRule, ExplainMode, alert_for, scored_batch};
use super::{ServiceError, blocking};
use crate::detector::explain::FeatureContribution;
use crate::detector::model::Model;
use crate::records::zeek::{Reject, WINDOW_FEATURES, WindowRecord, ZeekFormat, read_windows};
use crate::records::{BatchBuilder, Features, RecordError, RecordErrorKind};
use crate::state::{AppState, DetectorState, LoadedStream};
use crate::store::alerts::Alert;
use crate::store::streams::{StoredWindow, StreamCommit, WindowPage, WindowQuery};
use crate::stream::{BookConfig, IngestReport, Ingested, WindowBook};

/// Commits tried before a call gives up because other replicas keep committing first.
const MAX_ATTEMPTS: usize = 16;

/// What an ingest or flush call did: the engine's report, and the alert its closed windows
/// raised (already stored).
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub report: IngestReport,
    pub alerts: Vec<Alert>,
    /// The model that scored the closed windows.
    pub model_version: u64,
}

/// A closed window as stored and listed: a score result plus `closed_at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowResult {
    /// The window's start.
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub score: f64,
    pub is_anomaly: bool,
    pub severity: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Vec<FeatureContribution>>,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub connections: f64,
    pub active_sessions: f64,
    pub model_version: u64,
    pub closed_at: DateTime<Utc>,
}

/// Folds a Zeek conn log body (the next lines of the detector's stream) into its windows.
pub async fn ingest(
    state: &AppState,
    det: &Arc<DetectorState>,
    format: ZeekFormat,
    body: Bytes,
) -> Result<IngestOutcome, ServiceError> {
    let (state2, det2) = (state.clone(), det.clone());
    let outcome = blocking(move || {
        run(&state2, &det2, &|book: &mut WindowBook| {
            book.ingest(&body, format)
                .map_err(|e| ServiceError::Records(e.into()))
        })
    })
    .await?;
    counted(det.name(), &outcome);
    Ok(outcome)
}

/// Closes every open window of the detector's stream (the end of a log, or a quiet period).
pub async fn flush(
    state: &AppState,
    det: &Arc<DetectorState>,
) -> Result<IngestOutcome, ServiceError> {
    let (state2, det2) = (state.clone(), det.clone());
    let outcome = blocking(move || {
        run(&state2, &det2, &|book: &mut WindowBook| {
            let closed = book.flush();
            let report = IngestReport {
                windows_closed: closed.len(),
                watermark: book.watermark(),
                ..IngestReport::default()
            };
            Ok(Ingested { report, closed })
        })
    })
    .await?;
    counted(det.name(), &outcome);
    Ok(outcome)
}

/// The detector's closed windows, a page at a time.
pub async fn windows(state: &AppState, q: WindowQuery) -> Result<WindowPage, ServiceError> {
    let store = state.stores().streams.clone();
    blocking(move || Ok(store.windows(&q)?)).await
}

type Op<'a> = &'a dyn Fn(&mut WindowBook) -> Result<Ingested, ServiceError>;

/// One call: fold, score, commit (see the module doc); blocking.
fn run(state: &AppState, det: &DetectorState, op: Op<'_>) -> Result<IngestOutcome, ServiceError> {
    let spec = det.spec();
    let config = spec.book_config().ok_or_else(|| {
        ServiceError::Ingest(format!(
            "detector {:?} reads records (source.format \"records\"); continuous ingest windows \
             Zeek conn logs: PUT the detector with source.format \"zeek\", or score records \
             with POST …/score",
            det.name()
        ))
    })?;
    let model = det.model().ok_or(ServiceError::NoModel)?;
    if let Some(f) = model
        .features()
        .iter()
        .find(|f| !WINDOW_FEATURES.contains(&f.as_str()))
    {
        return Err(ServiceError::Ingest(format!(
            "the active model (version {}) uses the feature {f:?}, which Zeek windows do not \
             have ({}); fit the detector on Zeek windows first",
            model.version(),
            WINDOW_FEATURES.join(", ")
        )));
    }
    let settings = state.settings();
    let rule = AlertRule::for_detector(settings, &spec);
    let streams = state.stores().streams.clone();
    let sinks = state.webhooks().sink_names().to_vec();
    let mut slot = det.stream();
    for _ in 0..MAX_ATTEMPTS {
        let loaded = match slot.take() {
            Some(loaded) => loaded,
            None => load(state, det.name(), &config)?,
        };
        let mut loaded = reconcile(loaded, &config)?;
        // On any error below the slot stays empty, so the next call reloads the stored state.
        let ingested = op(&mut loaded.book)?;
        let closed_at = Utc::now();
        let scored = score_closed(
            &model,
            &ingested.closed,
            &config,
            &rule,
            det.name(),
            closed_at,
        )?;
        let book = loaded.book.to_bytes();
        let committed = streams.commit_stream(&StreamCommit {
            detector: det.name(),
            expected: loaded.version,
            book: &book,
            windows: &scored.windows,
            alert: scored.alert.as_ref().map(|a| (a, sinks.as_slice())),
        })?;
        let Some(version) = committed else {
            // Another replica committed first: fold again over what it stored.
            metrics::counter!("netsentinel_ingest_conflicts_total", "detector" => det.name().to_owned())
                .increment(1);
            continue;
        };
        loaded.version = version;
        *slot = Some(loaded);
        drop(slot);
        if let Some(alert) = &scored.alert {
            state.webhooks().alert_stored();
            tracing::warn!(
                alert = %alert.id, detector = det.name(), severity = alert.severity,
                reason = %alert.reason, "alert raised by closed windows"
            );
        }
        return Ok(IngestOutcome {
            report: ingested.report,
            alerts: scored.alert.into_iter().collect(),
            model_version: model.version(),
        });
    }
    Err(ServiceError::Store(crate::store::StoreError::Unavailable(
        "other replicas kept committing to this detector's stream first; retry".into(),
    )))
}

/// The stored stream of `detector`, or a new one.
fn load(
    state: &AppState,
    detector: &str,
    config: &BookConfig,
) -> Result<LoadedStream, ServiceError> {
    match state.stores().streams.stream(detector)? {
        Some(stored) => {
            let book = WindowBook::from_bytes(&stored.book).map_err(|e| {
                ServiceError::Ingest(format!(
                    "the stored stream of detector {detector:?} cannot be read ({e}); it is kept \
                     as it is"
                ))
            })?;
            Ok(LoadedStream {
                version: stored.version,
                book,
            })
        }
        None => Ok(LoadedStream {
            version: 0,
            book: WindowBook::new(*config),
        }),
    }
}

/// The stream under the detector's current settings. `on_invalid` changes at once; a change
/// of window, grouping or lateness starts a new stream only when no window is open (else the
/// open windows would change meaning: flush them first).
fn reconcile(mut loaded: LoadedStream, config: &BookConfig) -> Result<LoadedStream, ServiceError> {
    let current = BookConfig {
        on_invalid: config.on_invalid,
        ..*loaded.book.config()
    };
    if current == *config {
        loaded.book.set_on_invalid(config.on_invalid);
        return Ok(loaded);
    }
    if loaded.book.open_windows() == 0 {
        loaded.book = WindowBook::new(*config);
        return Ok(loaded);
    }
    Err(ServiceError::Ingest(format!(
        "the detector's source settings changed while {} window(s) of its stream are open; \
         POST …/flush to close them under the settings they opened with, then ingest",
        loaded.book.open_windows()
    )))
}

/// Closed windows scored, as stored, and the alert they raise.
struct ScoredWindows {
    windows: Vec<StoredWindow>,
    alert: Option<Alert>,
}

/// Scores closed windows as a `score` request with the same lines scores its window records:
/// the same batch, the same model, so the same bits.
fn score_closed(
    model: &Model,
    closed: &[WindowRecord],
    config: &BookConfig,
    rule: &AlertRule,
    detector: &str,
    closed_at: DateTime<Utc>,
) -> Result<ScoredWindows, ServiceError> {
    if closed.is_empty() {
        return Ok(ScoredWindows {
            windows: Vec::new(),
            alert: None,
        });
    }
    let features = model.features().to_vec();
    let mut b = BatchBuilder::with_features(Features::Given(&features), false, usize::MAX);
    read_windows(closed, config.group_by, &mut b).map_err(ServiceError::Records)?;
    let batch = b.finish().map_err(ServiceError::Records)?;
    let scores = model.score(&batch.matrix);
    let scored = scored_batch(
        model,
        &batch,
        scores,
        ExplainMode::Anomalies,
        rule.explain_top_k,
    );
    let alert = alert_for(model, &batch, &scored, rule).map(|a| Alert {
        detector: detector.to_owned(),
        ..a
    });
    let windows = closed
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let score = scored.scores[i];
            let result = WindowResult {
                timestamp: w.start_text(),
                entity: w.entity.clone(),
                score,
                is_anomaly: scored.is_anomaly(i),
                severity: crate::detector::severity::severity(score),
                explanation: scored.explanation(i).cloned(),
                bytes_sent: w.bytes_sent,
                bytes_received: w.bytes_received,
                connections: w.connections,
                active_sessions: w.active_sessions,
                model_version: model.version(),
                closed_at,
            };
            let body = serde_json::to_string(&result).map_err(|e| {
                RecordError::new(RecordErrorKind::Internal, format!("a window result: {e}"))
            })?;
            Ok(StoredWindow {
                start: w.timestamp.timestamp(),
                entity: w.entity.clone(),
                closed_at,
                is_anomaly: result.is_anomaly,
                body,
            })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(ScoredWindows { windows, alert })
}

/// Counts a committed call in /metrics and logs its skipped lines.
fn counted(detector: &str, o: &IngestOutcome) {
    let r = &o.report;
    let label = [("detector", detector.to_owned())];
    for (name, n) in [
        ("netsentinel_ingest_accepted_total", r.accepted),
        ("netsentinel_ingest_late_total", r.late),
        ("netsentinel_ingest_rejected_total", r.rejected),
        ("netsentinel_ingest_duplicates_total", r.duplicates),
        ("netsentinel_windows_closed_total", r.windows_closed),
    ] {
        metrics::counter!(name, &label).increment(n as u64);
    }
    if r.rejected > 0 {
        let first: Option<&Reject> = r.rejects.first();
        tracing::warn!(
            detector,
            skipped = r.rejected,
            first_line = first.map(|f| f.line),
            first_reason = first.map(|f| f.reason.as_str()),
            "ingest skipped unreadable lines"
        );
    }
    if r.late > 0 {
        tracing::info!(detector, late = r.late, "ingest counted late lines");
    }
}
