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
//! # Records
//!
//! A detector whose `source.format` is `records` ingests CSV, NDJSON or JSON records
//! ([`ingest_records`]): each record is one observation (no aggregation) and its own window,
//! closed on arrival: scored by the active model as one `score` request with those records
//! scores them, stored at the record's timestamp under its `group_by` entity, and alerted on
//! (incidents and suppression rules as for Zeek windows). Nothing stays open, so lateness does
//! not apply (no record is late; `allowed_lateness` is not used) and a flush closes nothing; the
//! stream keeps only the latest event time, the answer's `watermark`. Records carry no `uid`:
//! a retry is told apart only by its `Idempotency-Key`. The body is read and scored before
//! the stream is locked (it needs no stream state); the commit is the same single
//! transaction as above, so a 202 means every accepted record's window is stored, once.
//!
//! # Without a model
//!
//! Accepted (202) as with one: lines fold into windows as usual, and the windows a call closes
//! (for a `records` detector, the call's records) are kept **pending** instead of scored, in
//! the same commit as the stream state (`pending_windows`, [`pending`](super::pending)); the
//! answer's `windows_pending` counts them. The first ingest or flush commit of the detector
//! that has a model (a fit or activation on any replica; a flush right after it is the way to
//! score them at once) reads them under the lock, scores them with the windows it closes
//! itself (Zeek: one batch in event-time order; records: each pending call's body read again
//! by the model, as that call would have been), stores them and alerts on them, and deletes
//! them, in one commit: each is scored once. A call that would keep more than
//! `max_pending_windows` (server setting) pending is refused whole (503 `overloaded`, with
//! `Retry-After`): nothing of it is kept, so shippers retry it.

mod compact;
mod records;
mod scored;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_with::skip_serializing_none;

use self::scored::score_closed;
use super::detectors::SourceFormat;
use super::idempotency::{AnswerOf, KeyedRun};
use super::pending::Pending;
use super::scoring::AlertRule;
use super::{ServiceError, blocking};
use crate::detector::explain::FeatureContribution;
use crate::detector::model::Model;
use crate::records::zeek::{Reject, WINDOW_FEATURES, WindowRecord, ZeekFormat};
use crate::records::{RecordError, RecordErrorKind};
use crate::state::{AppState, DetectorState, LoadedStream};
use crate::store::alerts::{Alert, AlertEvent, Raised};
use crate::store::streams::{
    KeyAfter, LockedStream, PendingChunk, StreamCommit, WindowPage, WindowQuery,
};
use crate::stream::{BookConfig, IngestReport, Ingested, RecordStream, WindowBook};
pub use records::ingest_records;

/// What an ingest or flush call did: the engine's report, and the alerts its closed windows
/// opened or updated, as stored (an entity's incident, or a batch alert), each with what
/// happened to it (`None`: updated without a delivery).
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub report: IngestReport,
    pub alerts: Vec<(Alert, Option<AlertEvent>)>,
    /// The model that scored the closed windows; `None` when the detector has none (they are
    /// kept pending).
    pub model_version: Option<u64>,
    /// Windows kept pending after the call (closed while the detector had no model).
    pub windows_pending: u64,
    /// Windows kept pending by earlier calls that this call scored.
    pub pending_scored: usize,
}

/// A closed window as stored and listed: a score result plus `closed_at`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowResult {
    /// The window's start.
    pub timestamp: String,
    pub entity: Option<String>,
    pub score: f64,
    pub is_anomaly: bool,
    pub severity: u8,
    pub explanation: Option<Vec<FeatureContribution>>,
    /// A Zeek window's values (absent for a record).
    pub bytes_sent: Option<f64>,
    pub bytes_received: Option<f64>,
    pub connections: Option<f64>,
    pub active_sessions: Option<f64>,
    /// A record's feature values, by the model's features (absent for a Zeek window).
    pub values: Option<BTreeMap<String, f64>>,
    /// A record's string fields, echoed (absent for a Zeek window).
    pub fields: Option<BTreeMap<String, String>>,
    pub model_version: u64,
    pub closed_at: DateTime<Utc>,
    /// The suppression rule that matched the window: scored as usual, it raised nothing.
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
        let op = |book: &mut WindowBook, charge: &mut BookCharge<'_>| {
            book.ingest_within(&body, format, |held| {
                charge.hold(held).map_err(Charged::Refused)
            })
            .map_err(|e| match e {
                Charged::Zeek(e) => ServiceError::Records(e.into()),
                Charged::Refused(e) => e,
            })
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
    if det.spec().source.format == SourceFormat::Records {
        // Nothing is open: the answer says so (and keeps its key).
        return ingest_records(state, det, None, key).await;
    }
    let (state2, det2) = (state.clone(), det.clone());
    let outcome = blocking(move || {
        let op = |book: &mut WindowBook, _: &mut BookCharge<'_>| {
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

/// The detector's closed windows, a page at a time (each as its result's JSON), and how many
/// windows it keeps pending.
pub async fn windows(state: &AppState, q: WindowQuery) -> Result<(WindowPage, u64), ServiceError> {
    let store = state.stores().streams.clone();
    blocking(move || {
        let listed = store.listed_windows(&q)?;
        let windows = listed
            .windows
            .into_iter()
            .map(|w| compact::listed(w.body, w.start, &w.entity, w.closed_at_ms))
            .collect::<Result<Vec<_>, _>>()?;
        let page = WindowPage {
            windows,
            next_cursor: listed.next_cursor,
        };
        Ok((page, store.pending(&q.detector)?))
    })
    .await
}

type Op<'a> = &'a dyn Fn(&mut WindowBook, &mut BookCharge<'_>) -> Result<Ingested, ServiceError>;

/// What a detector's open windows may hold, charged as a call grows them: the call's growth
/// past what the book held (and holds of the budget, [`LoadedStream::resident`]) is reserved
/// for the request (413 `memory-budget` past the per-request budget, 503 `overloaded` when the
/// process budget has no room), and the whole past `--max-open-window-bytes` is refused (503
/// `overloaded`). A refused call keeps nothing: the book it grew is dropped, and the next call
/// reloads the stored one.
pub(crate) struct BookCharge<'a> {
    detector: &'a str,
    max: u64,
    /// What the book held (of the budget) before the call.
    resident: u64,
    work: Option<crate::work::Work>,
    /// What the request had reserved before the call.
    reserved: u64,
}

impl BookCharge<'_> {
    pub(crate) fn hold(&mut self, held: u64) -> Result<(), ServiceError> {
        if held > self.max {
            return Err(ServiceError::OpenWindowsFull {
                detector: self.detector.to_owned(),
                held_mib: self.resident.div_ceil(1 << 20),
                max_mib: self.max.div_ceil(1 << 20),
            });
        }
        let growth = held.saturating_sub(self.resident);
        if let Some(work) = &self.work {
            work.reserve_total(self.reserved + growth, crate::work::RESERVE_STEP)?;
        }
        Ok(())
    }
}

/// A Zeek body's error, or the charge of what it grew refused.
enum Charged {
    Zeek(crate::records::zeek::ZeekError),
    Refused(ServiceError),
}

impl From<crate::records::zeek::ZeekError> for Charged {
    fn from(e: crate::records::zeek::ZeekError) -> Self {
        Self::Zeek(e)
    }
}

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
            "detector {:?} reads records (source.format \"records\"): its ingest takes CSV, \
             NDJSON or JSON records, not Zeek conn logs",
            det.name()
        ))
    })?;
    let model = det.model();
    if let Some((model, f)) = model.as_ref().and_then(|m| {
        m.features()
            .iter()
            .find(|f| !WINDOW_FEATURES.contains(&f.as_str()))
            .map(|f| (m, f))
    }) {
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
        model: model.as_deref(),
        rule: &rule,
        rules: &rules,
        sinks: &sinks,
        max_pending: settings.max_pending_windows,
        max_open_bytes: settings.max_open_window_bytes,
        limits: state.limits(),
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
    let committed =
        streams.commit_locked(
            det.name(),
            known,
            model.is_some(),
            &mut |found| match call.fold(found, held.take(), op, run.as_ref().zip(answer.take())) {
                Ok((loaded, outcome, commit)) => {
                    done = Some(Ok((loaded, outcome)));
                    Some(commit)
                }
                Err(e) => {
                    done = Some(Err(e));
                    None
                }
            },
        )?;
    let (loaded, outcome) = match (committed, done) {
        (Some(c), Some(Ok((loaded, outcome)))) => {
            let outcome = IngestOutcome {
                alerts: shown(c.raised),
                ..outcome
            };
            let version = c.version;
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
    // The book's open windows stay held against the budget while they are kept: the call's
    // growth moves from its request to the book (what closed is given back). When even that
    // fails, the book is not kept in memory; the next call reloads what is stored.
    let mut loaded = loaded;
    let work = crate::work::current();
    if loaded
        .resident
        .set(loaded.book.state_bytes(), work.as_ref())
        .is_ok()
    {
        *slot = Some(loaded);
    }
    drop(slot);
    drop(run);
    announce(state, det.name(), &outcome.alerts, "closed windows");
    Ok(outcome)
}

/// Wakes the deliverers for what a commit stored and logs each alert it opened or updated.
fn announce(state: &AppState, detector: &str, alerts: &[(Alert, Option<AlertEvent>)], by: &str) {
    if !alerts.is_empty() {
        state.webhooks().alert_stored();
    }
    for (alert, event) in alerts {
        tracing::warn!(
            alert = %alert.id, detector, entity = alert.entity.as_deref().unwrap_or(""),
            count = alert.count, severity = alert.severity, event = event.map_or("updated", AlertEvent::as_str),
            reason = %alert.reason, "alert raised or updated by {by}"
        );
    }
}

/// What a call's answer shows of what its alert did to the store: the alerts it opened or
/// updated, as stored (a stale incident it resolved before opening the entity's next one is
/// left out; its `resolved` delivery says so).
///
/// Takes what the commit stored (up to `--max-alert-entities` incidents, each with its records)
/// rather than copying it; a caller holding only a reference clones.
fn shown(
    raised: impl IntoIterator<Item = (Alert, Option<AlertEvent>)>,
) -> Vec<(Alert, Option<AlertEvent>)> {
    raised
        .into_iter()
        .filter(|(_, e)| *e != Some(AlertEvent::Resolved))
        .collect()
}

/// The call's idempotency key with its answer, written inside the commit once the alerts it
/// opened or updated are known.
fn key_after(run: &KeyedRun, answer: AnswerOf<IngestOutcome>, outcome: &IngestOutcome) -> KeyAfter {
    let later = run.record_later(answer);
    let outcome = outcome.clone();
    Box::new(move |raised: &Raised| {
        later(&IngestOutcome {
            alerts: shown(raised.iter().cloned()),
            ..outcome
        })
    })
}

/// What one call folds with.
struct Call<'a> {
    detector: &'a str,
    config: &'a BookConfig,
    /// `None`: the windows the call closes are kept pending.
    model: Option<&'a Model>,
    rule: &'a AlertRule,
    rules: &'a [super::suppression::Matcher],
    sinks: &'a [String],
    max_pending: u64,
    max_open_bytes: u64,
    limits: &'a crate::work::Limits,
}

/// `more` windows kept pending beside `pending` others, within `max`; else the call is
/// refused whole.
fn within_bound(detector: &str, pending: u64, more: u64, max: u64) -> Result<(), ServiceError> {
    if more > 0 && pending.saturating_add(more) > max {
        return Err(ServiceError::PendingFull {
            detector: detector.to_owned(),
            pending,
            more,
            max,
        });
    }
    Ok(())
}

/// A detector whose `source.format` changed while it kept windows pending in the other one.
fn format_switched(detector: &str, kept: &str) -> ServiceError {
    let what = if kept == "zeek" {
        "Zeek windows"
    } else {
        "records"
    };
    ServiceError::Ingest(format!(
        "detector {detector:?} keeps {what} pending from when its source.format was {kept:?}: \
         PUT it back with source.format {kept:?} and POST …/flush to score them, then switch"
    ))
}

/// The pending chunks of a Zeek stream: their windows, in the order they were kept.
fn pending_windows(detector: &str, chunks: &[Vec<u8>]) -> Result<Vec<WindowRecord>, ServiceError> {
    let mut out = Vec::new();
    for c in chunks {
        match Pending::from_bytes(c)? {
            Pending::Zeek(ws) => out.extend(ws),
            Pending::Records { .. } => {
                return Err(format_switched(detector, "records"));
            }
        }
    }
    Ok(out)
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
        let LockedStream {
            version,
            book,
            pending,
            chunks,
        } = found;
        let found = LockedStream {
            version,
            book,
            ..LockedStream::default()
        };
        let loaded = match held {
            Some(l) if l.version == found.version => l,
            held => {
                if held.is_some() {
                    // Another replica committed since this one did: its state is the truth.
                    metrics::counter!("netsentinel_ingest_reloads_total", "detector" => self.detector.to_owned())
                        .increment(1);
                }
                stored(self.detector, found, self.config, self.limits)?
            }
        };
        let mut loaded = reconcile(loaded, self.config)?;
        let work = crate::work::current();
        let mut charge = BookCharge {
            detector: self.detector,
            max: self.max_open_bytes,
            resident: loaded.resident.bytes(),
            reserved: work.as_ref().map_or(0, crate::work::Work::reserved),
            work,
        };
        let ingested = op(&mut loaded.book, &mut charge)?;
        let Some(model) = self.model else {
            // Kept pending, in this commit, for the detector's first model.
            let more = ingested.closed.len() as u64;
            within_bound(self.detector, pending, more, self.max_pending)?;
            let outcome = IngestOutcome {
                report: ingested.report,
                alerts: Vec::new(),
                model_version: None,
                windows_pending: pending + more,
                pending_scored: 0,
            };
            let key = key.map(|(run, answer)| key_after(run, answer, &outcome));
            let commit = StreamCommit {
                book: loaded.book.to_bytes(),
                pending: (more > 0).then(|| PendingChunk {
                    windows: more,
                    body: Pending::Zeek(ingested.closed).to_bytes(),
                }),
                key,
                ..StreamCommit::default()
            };
            return Ok((loaded, outcome, commit));
        };
        // Windows kept pending (no model then) are scored with this call's, in event-time order.
        let mut closed = pending_windows(self.detector, &chunks)?;
        let pending_scored = closed.len();
        if pending_scored > 0 {
            closed.extend(ingested.closed);
            closed.sort_by(|a, b| (a.timestamp, &a.entity).cmp(&(b.timestamp, &b.entity)));
        } else {
            closed = ingested.closed;
        }
        let closed_at = Utc::now();
        let scored = score_closed(
            model,
            &closed,
            self.config,
            (self.rule, self.rules),
            self.detector,
            closed_at,
        )?;
        // The alerts are filled in from what the commit stored (`Committed::raised`).
        let outcome = IngestOutcome {
            report: ingested.report,
            alerts: Vec::new(),
            model_version: Some(model.version()),
            windows_pending: 0,
            pending_scored,
        };
        let key = key.map(|(run, answer)| key_after(run, answer, &outcome));
        let commit = StreamCommit {
            book: loaded.book.to_bytes(),
            windows: scored.windows,
            alerts: scored
                .alert
                .map(|a| (a, self.sinks.to_vec()))
                .into_iter()
                .collect(),
            key,
            pending: None,
            scored_pending: !chunks.is_empty(),
        };
        Ok((loaded, outcome, commit))
    }
}

/// The stream as the lock found it stored, or a new one when none is; its open windows held
/// against the process budget (503 `overloaded` when it has no room for them).
fn stored(
    detector: &str,
    found: LockedStream,
    config: &BookConfig,
    limits: &crate::work::Limits,
) -> Result<LoadedStream, ServiceError> {
    let resident = limits.resident();
    // A records stream (the detector read records before) holds no open window.
    let Some(bytes) = found.book.filter(|b| !RecordStream::is_records(b)) else {
        return Ok(LoadedStream {
            version: found.version,
            book: WindowBook::new(*config),
            resident,
        });
    };
    let book = WindowBook::from_bytes(&bytes).map_err(|e| {
        ServiceError::Ingest(format!(
            "the stored stream of detector {detector:?} cannot be read ({e}); it is kept as it is"
        ))
    })?;
    let mut loaded = LoadedStream {
        version: found.version,
        book,
        resident,
    };
    loaded.resident.set(loaded.book.state_bytes(), None)?;
    Ok(loaded)
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
    crate::monitoring::windows_pending(detector, o.windows_pending);
    if o.pending_scored > 0 {
        tracing::info!(
            detector,
            scored = o.pending_scored,
            "windows kept pending without a model scored"
        );
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

#[cfg(test)]
pub(crate) mod tests {
    use crate::detector::explain::FeatureContribution;

    /// An explanation of one feature with every optional part set, `summary` its summary.
    pub(crate) fn explanation(summary: &str) -> Vec<FeatureContribution> {
        vec![FeatureContribution {
            feature: "bytes_sent".into(),
            value: 5.0,
            direction: crate::detector::explain::Direction::Above,
            contribution: 1.0,
            normal_range: [1.0, 2.0],
            expected: Some(1.5),
            band: Some([1.0, 2.0]),
            summary: Some(summary.into()),
        }]
    }
}
