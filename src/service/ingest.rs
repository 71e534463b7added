//! Continuous ingest: a detector's Zeek stream folded into event-time windows that persist
//! across requests, restarts and replicas; closed windows scored, stored and alerted on once.
//!
//! # One call, durably
//!
//! On a blocking thread, under the detector's stream mutex (one call per detector at a time in
//! this process) and inside ONE store transaction that locks the detector's stream
//! ([`StreamStore::commit_locked`]; other replicas wait for it): the stored version is read and
//! the stream reloaded when it is not the version this process holds (another replica
//! committed since), the body folded in ([`WindowBook::ingest`], or [`WindowBook::flush`]), the
//! windows it closed scored by the active model as one `score` request would score them, and
//! the transaction commits the new stream state, the closed windows, their alert with its
//! outbox rows, and the request's idempotency key with its answer. Replicas take turns; no call
//! loses a race and folds again. So the answer (202) is sent only for lines whose effect is
//! committed, a retry of them is a duplicate (`uid`) or a replay (`Idempotency-Key`), and every
//! window is closed by one commit only. A failed commit leaves the process without a stream in
//! memory: the next call reloads what is stored.
//!
//! # Without a model
//!
//! Refused with 409 `no-model` before anything is read or stored: nothing would score the
//! windows the batch closes. Shippers differ on a 409 (README, "Shipping from your pipeline"):
//! syslog-ng retries it, Vector and Fluent Bit drop the batch. Fit the detector before a
//! pipeline points at it.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::idempotency::{AnswerOf, KeyedRun};
use super::scoring::{AlertRule, ExplainMode, alert_for, scored_batch};
use super::{ServiceError, blocking};
use crate::detector::explain::FeatureContribution;
use crate::detector::model::Model;
use crate::records::zeek::{Reject, WINDOW_FEATURES, WindowRecord, ZeekFormat, read_windows};
use crate::records::{BatchBuilder, Features, RecordError, RecordErrorKind};
use crate::state::{AppState, DetectorState, LoadedStream};
use crate::store::alerts::Alert;
use crate::store::streams::{LockedStream, StoredWindow, StreamCommit, WindowPage, WindowQuery};
use crate::stream::{BookConfig, IngestReport, Ingested, WindowBook};

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
    /// The suppression rule that matched the window: scored as usual, it raised nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<String>,
}

/// An idempotency key's run and how the call's answer reads: the key is kept, with that
/// answer, in the call's own commit.
pub type KeyedIngest = (KeyedRun, AnswerOf<IngestOutcome>);

/// Folds a Zeek conn log body (the next lines of the detector's stream) into its windows.
pub async fn ingest(
    state: &AppState,
    det: &Arc<DetectorState>,
    format: ZeekFormat,
    body: Bytes,
    key: Option<KeyedIngest>,
) -> Result<IngestOutcome, ServiceError> {
    let (state2, det2) = (state.clone(), det.clone());
    let outcome = blocking(move || {
        let op = |book: &mut WindowBook| {
            book.ingest(&body, format)
                .map_err(|e| ServiceError::Records(e.into()))
        };
        run(&state2, &det2, &op, key)
    })
    .await?;
    counted(det.name(), &outcome);
    Ok(outcome)
}

/// Closes every open window of the detector's stream (the end of a log, or a quiet period).
pub async fn flush(
    state: &AppState,
    det: &Arc<DetectorState>,
    key: Option<KeyedIngest>,
) -> Result<IngestOutcome, ServiceError> {
    let (state2, det2) = (state.clone(), det.clone());
    let outcome = blocking(move || {
        let op = |book: &mut WindowBook| {
            let closed = book.flush();
            let report = IngestReport {
                windows_closed: closed.len(),
                watermark: book.watermark(),
                ..IngestReport::default()
            };
            Ok(Ingested { report, closed })
        };
        run(&state2, &det2, &op, key)
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

/// One call: lock, fold, score, commit (see the module doc); blocking.
fn run(
    state: &AppState,
    det: &DetectorState,
    op: Op<'_>,
    key: Option<KeyedIngest>,
) -> Result<IngestOutcome, ServiceError> {
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
    // Read once per call, from the store: a rule created on any replica applies from the next call.
    let rules = super::suppression::active_now(state)?;
    let call = Call {
        detector: det.name(),
        config: &config,
        model: &model,
        rule: &rule,
        rules: &rules,
        sinks: &sinks,
    };
    // The slot stays empty until the commit succeeds: after any error the next call reloads
    // what is stored.
    let mut slot = det.stream();
    let mut held = slot.take();
    let known = held.as_ref().map(|l| l.version);
    // The key's claim is held until the commit ends (a repeat meanwhile is 409 in flight).
    let (run, mut answer) = match key {
        Some((run, answer)) => (Some(run), Some(answer)),
        None => (None, None),
    };
    let mut done = None;
    let committed = streams.commit_locked(det.name(), known, &mut |found| match call.fold(
        found,
        held.take(),
        op,
        run.as_ref().zip(answer.take()),
    ) {
        Ok((loaded, outcome, commit)) => {
            done = Some(Ok((loaded, outcome)));
            Some(commit)
        }
        Err(e) => {
            done = Some(Err(e));
            None
        }
    })?;
    let (loaded, outcome) = match (committed, done) {
        (Some(version), Some(Ok((loaded, outcome)))) => {
            (LoadedStream { version, ..loaded }, outcome)
        }
        (_, Some(Err(e))) => return Err(e),
        _ => {
            return Err(ServiceError::Records(RecordError::new(
                RecordErrorKind::Internal,
                "the stream store committed without folding the call",
            )));
        }
    };
    let alert = outcome.alerts.first().cloned();
    *slot = Some(loaded);
    drop(slot);
    drop(run);
    if let Some(alert) = &alert {
        state.webhooks().alert_stored();
        tracing::warn!(
            alert = %alert.id, detector = det.name(), severity = alert.severity,
            reason = %alert.reason, "alert raised by closed windows"
        );
    }
    Ok(outcome)
}

/// What one call folds with.
struct Call<'a> {
    detector: &'a str,
    config: &'a BookConfig,
    model: &'a Model,
    rule: &'a AlertRule,
    rules: &'a [super::suppression::Matcher],
    sinks: &'a [String],
}

impl Call<'_> {
    /// Under the stream lock: the stream as stored (the copy in memory when it is that
    /// version), the call folded in and scored; the new state, the answer and the commit.
    fn fold(
        &self,
        found: LockedStream,
        held: Option<LoadedStream>,
        op: Op<'_>,
        key: Option<(&KeyedRun, AnswerOf<IngestOutcome>)>,
    ) -> Result<(LoadedStream, IngestOutcome, StreamCommit), ServiceError> {
        let loaded = match held {
            Some(l) if l.version == found.version => l,
            held => {
                if held.is_some() {
                    // Another replica committed since this one did: its state is the truth.
                    metrics::counter!("netsentinel_ingest_reloads_total", "detector" => self.detector.to_owned())
                        .increment(1);
                }
                stored(self.detector, found, self.config)?
            }
        };
        let mut loaded = reconcile(loaded, self.config)?;
        let ingested = op(&mut loaded.book)?;
        let closed_at = Utc::now();
        let scored = score_closed(
            self.model,
            &ingested.closed,
            self.config,
            (self.rule, self.rules),
            self.detector,
            closed_at,
        )?;
        let outcome = IngestOutcome {
            report: ingested.report,
            alerts: scored.alert.iter().cloned().collect(),
            model_version: self.model.version(),
        };
        let key = key.map(|(run, answer)| {
            let a = answer(&outcome);
            run.record(a.status, &a.content_type, a.headers, Some(&a.body))
        });
        let commit = StreamCommit {
            book: loaded.book.to_bytes(),
            windows: scored.windows,
            alert: scored.alert.map(|a| (a, self.sinks.to_vec())),
            key,
        };
        Ok((loaded, outcome, commit))
    }
}

/// The stream as the lock found it stored, or a new one when none is.
fn stored(
    detector: &str,
    found: LockedStream,
    config: &BookConfig,
) -> Result<LoadedStream, ServiceError> {
    let Some(bytes) = found.book else {
        return Ok(LoadedStream {
            version: found.version,
            book: WindowBook::new(*config),
        });
    };
    let book = WindowBook::from_bytes(&bytes).map_err(|e| {
        ServiceError::Ingest(format!(
            "the stored stream of detector {detector:?} cannot be read ({e}); it is kept as it is"
        ))
    })?;
    Ok(LoadedStream {
        version: found.version,
        book,
    })
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
    (rule, rules): (&AlertRule, &[super::suppression::Matcher]),
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
    let mut scored = scored_batch(
        model,
        &batch,
        scores,
        ExplainMode::Anomalies,
        rule.explain_top_k,
    );
    // Windows carry their entity as the echoed field `entity`, as on `score`.
    scored.suppressed = super::suppression::mark(rules, detector, "entity", &batch);
    scored.suppressed.count(detector);
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
                suppressed: scored.suppressed.of(i).map(str::to_owned),
            };
            let body = serde_json::to_string(&result).map_err(|e| {
                RecordError::new(RecordErrorKind::Internal, format!("a window result: {e}"))
            })?;
            Ok(StoredWindow {
                start: w.timestamp.timestamp(),
                entity: w.entity.clone(),
                seq: 0,
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
