//! Closed windows scored as one `score` request would score them, each stored as its
//! [`WindowResult`]'s JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;
use serde_with::skip_serializing_none;

use super::WindowResult;
use crate::detector::explain::FeatureContribution;
use crate::detector::model::Model;
use crate::records::zeek::{WindowRecord, read_windows};
use crate::records::{Batch, BatchBuilder, Features, RecordError, RecordErrorKind};
use crate::service::ServiceError;
use crate::service::scoring::{AlertRule, ExplainMode, ScoredBatch, plan_alert, score_batch};
use crate::store::alerts::Alert;
use crate::store::streams::StoredWindow;
use crate::stream::BookConfig;

/// A [`WindowResult`] as it serialises, from borrowed parts, with `closed_at` as its JSON
/// text already (one call closes every window at the same instant: formatted once, not once
/// per window). The same fields in the same order, so the same bytes.
#[skip_serializing_none]
#[derive(Serialize)]
pub(super) struct WindowJson<'a> {
    timestamp: &'a str,
    entity: Option<&'a str>,
    score: f64,
    is_anomaly: bool,
    severity: u8,
    explanation: Option<&'a [FeatureContribution]>,
    bytes_sent: Option<f64>,
    bytes_received: Option<f64>,
    connections: Option<f64>,
    active_sessions: Option<f64>,
    values: Option<&'a BTreeMap<String, f64>>,
    fields: Option<&'a BTreeMap<String, String>>,
    model_version: u64,
    closed_at: &'a str,
    suppressed: Option<&'a str>,
}

impl<'a> WindowJson<'a> {
    pub(super) fn of(r: &'a WindowResult, closed_at: &'a ClosedAt) -> Self {
        debug_assert_eq!(r.closed_at, closed_at.at);
        Self {
            timestamp: &r.timestamp,
            entity: r.entity.as_deref(),
            score: r.score,
            is_anomaly: r.is_anomaly,
            severity: r.severity,
            explanation: r.explanation.as_deref(),
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            connections: r.connections,
            active_sessions: r.active_sessions,
            values: r.values.as_ref(),
            fields: r.fields.as_ref(),
            model_version: r.model_version,
            closed_at: &closed_at.text,
            suppressed: r.suppressed.as_deref(),
        }
    }
}

/// The instant a call closes its windows, and its text as a [`WindowResult`] serialises it.
pub(super) struct ClosedAt {
    pub(super) at: DateTime<Utc>,
    text: String,
}

impl ClosedAt {
    pub(super) fn new(at: DateTime<Utc>) -> Result<Self, ServiceError> {
        // chrono's own serialisation, read back: the text is what serialising `at` writes.
        let text = match serde_json::to_value(at) {
            Ok(serde_json::Value::String(text)) => text,
            other => {
                return Err(ServiceError::Records(RecordError::new(
                    RecordErrorKind::Internal,
                    format!("a window's closed_at serialised as {other:?}"),
                )));
            }
        };
        Ok(Self { at, text })
    }
}

/// A window result as stored: its JSON and what listings filter on.
pub(super) fn stored_window(
    result: &WindowResult,
    closed_at: &ClosedAt,
    start: i64,
    entity: Option<String>,
) -> Result<StoredWindow, ServiceError> {
    let body = serde_json::to_string(&WindowJson::of(result, closed_at)).map_err(|e| {
        RecordError::new(RecordErrorKind::Internal, format!("a window result: {e}"))
    })?;
    Ok(StoredWindow {
        start,
        entity,
        seq: 0,
        closed_at: result.closed_at,
        is_anomaly: result.is_anomaly,
        body,
    })
}

/// Closed windows scored, as stored, and the alert they raise.
#[derive(Default)]
pub(super) struct ScoredWindows {
    pub(super) windows: Vec<StoredWindow>,
    pub(super) alert: Option<Alert>,
}

/// Scores closed windows as a `score` request with the same lines scores its window records:
/// the same batch, the same model, so the same bits.
pub(super) fn score_closed(
    model: &Model,
    closed: &[WindowRecord],
    config: &BookConfig,
    (rule, rules): (&AlertRule, &[crate::service::suppression::Matcher]),
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
    // Windows carry their entity as the echoed field `entity`, as on `score`.
    let (scored, alert) = judge(model, &batch, (rule, rules), detector, "entity")?;
    let closed_at = ClosedAt::new(closed_at)?;
    // Each window's result and JSON on both cores (this is a blocking thread, not the async
    // runtime); collected in the windows' order.
    let windows = closed
        .par_iter()
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
                bytes_sent: Some(w.bytes_sent),
                bytes_received: Some(w.bytes_received),
                connections: Some(w.connections),
                active_sessions: Some(w.active_sessions),
                values: None,
                fields: None,
                model_version: model.version(),
                closed_at: closed_at.at,
                suppressed: scored.suppressed.of(i).map(str::to_owned),
            };
            stored_window(
                &result,
                &closed_at,
                w.timestamp.timestamp(),
                w.entity.clone(),
            )
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(ScoredWindows { windows, alert })
}

/// Scores closed windows as one batch, marks (and counts) what `rules` suppress by the
/// `entity_field`, and decides the alert they raise, tagged with the detector: as `score`
/// decides it (at most `--max-alert-entities` entities per call), its memory charged to the
/// call before it is built.
pub(super) fn judge(
    model: &Model,
    batch: &Batch,
    (rule, rules): (&AlertRule, &[crate::service::suppression::Matcher]),
    detector: &str,
    entity_field: &str,
) -> Result<(ScoredBatch, Option<Alert>), ServiceError> {
    let mut scored = score_batch(model, batch, ExplainMode::Anomalies, rule.explain_top_k);
    scored.suppressed = crate::service::suppression::mark(rules, detector, entity_field, batch);
    scored.suppressed.count(detector);
    let plan = plan_alert(model, batch, &scored, rule);
    if let Some(plan) = &plan {
        crate::work::reserve(plan.bytes())?;
        plan.note_omitted(detector);
    }
    let alert = plan.map(|p| Alert {
        detector: detector.to_owned(),
        ..p.build(model, batch, &scored)
    });
    Ok((scored, alert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ingest::tests::explanation;

    /// A window stored through [`WindowJson`] reads byte for byte as its [`WindowResult`]
    /// serialises: a Zeek window with and without an explanation, a record, and instants
    /// with and without fractions of a second.
    #[test]
    fn a_stored_window_is_its_results_json() {
        let explanation = explanation("bytes_sent 5 B; usual for \"10.0.0.1\" is 1–2 B");
        let instants = [
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 120_000_000).unwrap(),
            Utc::now(),
        ];
        for at in instants {
            let closed_at = ClosedAt::new(at).unwrap();
            for (entity, explanation, zeek) in [
                (None, None, true),
                (Some("10.0.0.1".to_owned()), Some(explanation.clone()), true),
                (Some("10.0.0.2".to_owned()), None, false),
            ] {
                let suppressed = entity.as_ref().map(|_| "0192".to_owned());
                let (z, r) = (zeek.then_some(1.5e9), (!zeek).then_some(()));
                let result = WindowResult {
                    timestamp: "2024-01-01T00:05:00Z".into(),
                    entity: entity.clone(),
                    score: 0.1 + 0.2,
                    is_anomaly: explanation.is_some(),
                    severity: 53,
                    explanation,
                    bytes_sent: z,
                    bytes_received: z.map(|v| v / 3.0),
                    connections: z,
                    active_sessions: z,
                    values: r.map(|()| [("bytes".to_owned(), 5.0)].into()),
                    fields: r.map(|()| [("src_ip".to_owned(), "10.0.0.2".to_owned())].into()),
                    model_version: 4,
                    closed_at: at,
                    suppressed,
                };
                let stored = stored_window(&result, &closed_at, 7, entity).unwrap();
                assert_eq!(stored.body, serde_json::to_string(&result).unwrap());
                assert_eq!(stored.closed_at, at);
            }
        }
    }
}
