//! Ingest of a `records` detector: each record one observation and its own window, closed on
//! arrival (see the parent module's doc, "Records").

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

use super::scored::{ScoredWindows, judge, stored_window};
use super::{
    IngestOutcome, KeyedIngest, WindowResult, announce, counted, format_switched, key_after, shown,
    within_bound,
};
use crate::detector::model::Model;
use crate::records::observations::{Observations, read_observations};
use crate::records::zeek::{OnInvalid, Rejects};
use crate::records::{Batch, BodyFormat, ReadSpec, RecordError, RecordErrorKind};
use crate::service::pending::Pending;
use crate::service::scoring::AlertRule;
use crate::service::{ServiceError, blocking};
use crate::state::{AppState, DetectorState};
use crate::store::streams::{PendingChunk, StreamCommit};
use crate::stream::{IngestReport, RecordStream, WindowBook};

/// Scores a records body (CSV, NDJSON or JSON) for a detector whose `source.format` is
/// `records`: each record is one observation and its own window, closed on arrival (see the
/// module doc, "Records"). `body` is `None` for a flush: nothing is open, and the answer says
/// so (keeping its `Idempotency-Key`).
pub async fn ingest_records(
    state: &AppState,
    det: &Arc<DetectorState>,
    body: Option<(BodyFormat, Bytes)>,
    key: Option<KeyedIngest>,
) -> Result<IngestOutcome, ServiceError> {
    let (state2, det2) = (state.clone(), det.clone());
    let outcome = blocking(move || run_records(&state2, &det2, body.as_ref(), key)).await?;
    counted(det.name(), &outcome);
    Ok(outcome)
}

/// One records call: read and score (no stream state is needed for it), then lock the stream
/// and commit the windows, the alert, the latest event time and the key together; blocking.
/// Without a model the records are read (checked, counted) and the body kept pending; with
/// one, the bodies kept pending are read again and scored under the lock, before this call's.
fn run_records(
    state: &AppState,
    det: &DetectorState,
    body: Option<&(BodyFormat, Bytes)>,
    key: Option<KeyedIngest>,
) -> Result<IngestOutcome, ServiceError> {
    let spec = det.spec();
    let model = det.model();
    let settings = state.settings();
    let mut rule = AlertRule::for_detector(settings, &spec);
    // As on `score`: a model with entity baselines names the entity field of its incidents.
    if let Some(entity) = model.as_ref().and_then(|m| m.entity()) {
        rule.entity_field = entity.field.clone();
    }
    let group_by = spec.source.group_by.as_deref();
    let on_invalid = spec.source.on_invalid.unwrap_or(OnInvalid::Skip);
    let read_spec = |format: BodyFormat| {
        let features = model.as_ref().map(|m| m.features().to_vec());
        ReadSpec::new(format, features, settings.max_records)
    };
    let read = match body {
        Some((format, bytes)) => {
            read_observations(bytes, &read_spec(*format), group_by, on_invalid)
                .map_err(ServiceError::Records)?
        }
        None => Observations {
            batch: None,
            times: Vec::new(),
            rejects: Rejects::default(),
        },
    };
    let rules = crate::service::suppression::active_now(state)?;
    let scored = match (&read.batch, &model) {
        (Some(batch), Some(model)) => score_records(
            model,
            batch,
            &read.times,
            group_by,
            (&rule, &rules),
            det.name(),
        )?,
        _ => ScoredWindows::default(),
    };
    let accepted = read.times.len();
    // Without a model: the body, kept pending (its records are read again by the model).
    let mut kept = match (body, &model) {
        (Some((format, bytes)), None) if accepted > 0 => Some(PendingChunk {
            windows: accepted as u64,
            body: Pending::Records {
                format: *format,
                body: bytes.to_vec(),
                records: accepted as u64,
            }
            .to_bytes(),
        }),
        _ => None,
    };
    let mut windows = Some(scored.windows);
    let alert = scored.alert;
    let sinks = state.webhooks().sink_names().to_vec();
    let streams = state.stores().streams.clone();
    // Calls into one detector take turns in this process; a window book held in memory (the
    // detector read Zeek logs before) is dropped: the stored stream changes now.
    let mut slot = det.stream();
    *slot = None;
    let (run, mut answer) = match key {
        Some((run, answer)) => (Some(run), Some(answer)),
        None => (None, None),
    };
    let mut done = None;
    let committed = streams.commit_locked(det.name(), None, model.is_some(), &mut |found| {
        let mut stream = match records_stream(det.name(), found.book.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                done = Some(Err(e));
                return None;
            }
        };
        let more = kept.as_ref().map_or(0, |k| k.windows);
        if let Err(e) = within_bound(
            det.name(),
            found.pending,
            more,
            settings.max_pending_windows,
        ) {
            done = Some(Err(e));
            return None;
        }
        // The bodies kept pending, scored first (they came first), each as its call would
        // have been.
        let mut all = Vec::new();
        let mut alerts = Vec::new();
        let mut pending_scored = 0;
        if let Some(model) = &model {
            for chunk in &found.chunks {
                let pending = match Pending::from_bytes(chunk) {
                    Ok(p) => p,
                    Err(e) => {
                        done = Some(Err(e));
                        return None;
                    }
                };
                let Pending::Records {
                    format,
                    body,
                    records,
                } = pending
                else {
                    done = Some(Err(format_switched(det.name(), "zeek")));
                    return None;
                };
                match score_pending_records(
                    model,
                    (format, &body, records),
                    (&read_spec(format), group_by, on_invalid),
                    (&rule, &rules),
                    det.name(),
                ) {
                    Ok(Some(scored)) => {
                        pending_scored += scored.windows.len();
                        all.extend(scored.windows);
                        alerts.extend(scored.alert);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        done = Some(Err(e));
                        return None;
                    }
                }
            }
        }
        all.extend(windows.take().unwrap_or_default());
        alerts.extend(alert.clone());
        for t in &read.times {
            stream.saw(*t);
        }
        // Unique in the stream: each commit has its own stored version.
        let base = i64::try_from(found.version).unwrap_or(i64::MAX >> 32) << 32;
        for (i, w) in all.iter_mut().enumerate() {
            w.seq = base + i as i64;
        }
        let outcome = IngestOutcome {
            report: IngestReport {
                accepted,
                rejected: read.rejects.total,
                rejects: read.rejects.first.clone(),
                windows_opened: accepted,
                windows_closed: accepted,
                watermark: stream.watermark(),
                ..IngestReport::default()
            },
            // Filled in from what the commit stored (`Committed::raised`).
            alerts: Vec::new(),
            model_version: model.as_ref().map(|m| m.version()),
            windows_pending: if model.is_some() {
                0
            } else {
                found.pending + more
            },
            pending_scored,
        };
        let key = run
            .as_ref()
            .zip(answer.take())
            .map(|(run, answer)| key_after(run, answer, &outcome));
        done = Some(Ok(outcome));
        Some(StreamCommit {
            book: stream.to_bytes(),
            windows: all,
            alerts: alerts.into_iter().map(|a| (a, sinks.clone())).collect(),
            key,
            pending: kept.take(),
            scored_pending: !found.chunks.is_empty(),
        })
    })?;
    let mut outcome = done.unwrap_or_else(|| {
        Err(ServiceError::Records(RecordError::new(
            RecordErrorKind::Internal,
            "the stream store committed without the call",
        )))
    })?;
    if let Some(c) = committed {
        outcome.alerts = shown(c.raised);
    }
    drop(slot);
    drop(run);
    announce(state, det.name(), &outcome.alerts, "ingested records");
    Ok(outcome)
}

/// A records body kept pending, read again by `model` as its call would have read it and
/// scored as its call would have scored it: its windows and their alert. Records the model
/// cannot read are counted as rejected (and logged) now; `None` when none can be read.
fn score_pending_records(
    model: &Model,
    (format, body, records): (BodyFormat, &[u8], u64),
    (spec, group_by, on_invalid): (&ReadSpec, Option<&str>, OnInvalid),
    (rule, rules): (&AlertRule, &[crate::service::suppression::Matcher]),
    detector: &str,
) -> Result<Option<ScoredWindows>, ServiceError> {
    let read = match read_observations(body, spec, group_by, on_invalid) {
        Ok(read) => read,
        Err(e) => {
            metrics::counter!("netsentinel_ingest_rejected_total", "detector" => detector.to_owned())
                .increment(records);
            tracing::warn!(
                detector, records, format = ?format, error = %e.detail,
                "records kept pending (no model then) cannot be read by the model now active: \
                 counted as rejected"
            );
            return Ok(None);
        }
    };
    if read.rejects.total > 0 {
        metrics::counter!("netsentinel_ingest_rejected_total", "detector" => detector.to_owned())
            .increment(read.rejects.total as u64);
        tracing::warn!(
            detector,
            rejected = read.rejects.total,
            first_reason = read.rejects.first.first().map(|r| r.reason.as_str()),
            "records kept pending (no model then) skipped by the model now active"
        );
    }
    let Some(batch) = &read.batch else {
        return Ok(None);
    };
    score_records(model, batch, &read.times, group_by, (rule, rules), detector).map(Some)
}

/// A records detector's stream as stored: a records stream, or none yet, or the window book
/// of a detector that read Zeek logs before (taken over only when no window of it is open).
fn records_stream(detector: &str, bytes: Option<&[u8]>) -> Result<RecordStream, ServiceError> {
    let Some(bytes) = bytes else {
        return Ok(RecordStream::default());
    };
    if let Some(s) = RecordStream::from_bytes(bytes) {
        return Ok(s);
    }
    let open = WindowBook::from_bytes(bytes).map_or(0, |b| b.open_windows());
    if open > 0 {
        return Err(ServiceError::Ingest(format!(
            "detector {detector:?} reads records now, but {open} Zeek window(s) of its stream are \
             still open: PUT it back with source.format \"zeek\" and POST …/flush to close them, \
             then switch"
        )));
    }
    Ok(RecordStream::default())
}

/// Scores a batch of records as `score` scores it (the same model, batch and rules, so the
/// same bits), each record a window at its own time.
fn score_records(
    model: &Model,
    batch: &Batch,
    times: &[DateTime<Utc>],
    group_by: Option<&str>,
    (rule, rules): (&AlertRule, &[crate::service::suppression::Matcher]),
    detector: &str,
) -> Result<ScoredWindows, ServiceError> {
    let (scored, alert) = judge(model, batch, (rule, rules), detector, &rule.entity_field)?;
    let closed_at = Utc::now();
    let windows = (0..batch.len())
        .map(|i| {
            let fields = batch.echo.fields(i);
            let entity = group_by
                .and_then(|f| fields.get(f))
                .map(|v| (*v).to_owned());
            let score = scored.scores[i];
            let result = WindowResult {
                timestamp: times[i].to_rfc3339_opts(SecondsFormat::AutoSi, true),
                entity: entity.clone(),
                score,
                is_anomaly: scored.is_anomaly(i),
                severity: crate::detector::severity::severity(score),
                explanation: scored.explanation(i).cloned(),
                bytes_sent: None,
                bytes_received: None,
                connections: None,
                active_sessions: None,
                values: Some(
                    batch
                        .features
                        .iter()
                        .cloned()
                        .zip(batch.matrix.row(i).iter().copied())
                        .collect(),
                ),
                fields: Some(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ),
                model_version: model.version(),
                closed_at,
                suppressed: scored.suppressed.of(i).map(str::to_owned),
            };
            stored_window(&result, times[i].timestamp(), entity)
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(ScoredWindows { windows, alert })
}
