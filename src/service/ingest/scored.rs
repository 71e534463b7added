//! Closed windows scored as one `score` request would score them, each stored in its compact
//! form ([`compact`](super::compact)).

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use super::WindowResult;
use super::compact::{self, Compact, Start};
use crate::detector::model::Model;
use crate::records::zeek::{WindowRecord, read_windows};
use crate::records::{Batch, BatchBuilder, Features, RecordError, RecordErrorKind};
use crate::service::ServiceError;
use crate::service::scoring::{AlertRule, ExplainMode, ScoredBatch, plan_alert, score_batch};
use crate::store::alerts::Alert;
use crate::store::streams::StoredWindow;
use crate::stream::BookConfig;

/// A window result as stored: its compact form (or, when that cannot hold it, its JSON) and
/// what listings filter on.
pub(super) fn stored_window(
    result: &WindowResult,
    start: i64,
    entity: Option<String>,
) -> Result<StoredWindow, ServiceError> {
    let body = match Compact::of(result, start) {
        Some(compact) => compact.body()?,
        None => serde_json::to_string(result).map_err(|e| {
            RecordError::new(RecordErrorKind::Internal, format!("a window result: {e}"))
        })?,
    };
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
    let version = model.version();
    // Each window's stored form on both cores (this is a blocking thread, not the async
    // runtime); collected in the windows' order. Compact, built from the parts (a Zeek
    // window's start is its row's `start_s`); as a whole result in a leap second.
    let Some(closed_sub_ms) = compact::sub_ms(closed_at) else {
        let windows = closed
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let start = w.timestamp.timestamp();
                let entity = w.entity.as_deref().unwrap_or_default();
                let result = compact_of(w, i, &scored, version, 0)
                    .result_at(start, entity, closed_at)
                    .ok_or_else(|| {
                        let e = format!("window {start} has no result");
                        RecordError::new(RecordErrorKind::Internal, e)
                    })?;
                stored_window(&result, start, w.entity.clone())
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        return Ok(ScoredWindows { windows, alert });
    };
    let windows = closed
        .par_iter()
        .enumerate()
        .map(|(i, w)| {
            let compact = compact_of(w, i, &scored, version, closed_sub_ms);
            Ok(StoredWindow {
                start: w.timestamp.timestamp(),
                entity: w.entity.clone(),
                seq: 0,
                closed_at,
                is_anomaly: compact.is_anomaly,
                body: compact.body()?,
            })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(ScoredWindows { windows, alert })
}

/// The compact form of closed window `w`, record `i` of `scored` (closed `closed_sub_ms`
/// past its row's millisecond).
fn compact_of<'a>(
    w: &'a WindowRecord,
    i: usize,
    scored: &'a ScoredBatch,
    version: u64,
    closed_sub_ms: u32,
) -> Compact<'a> {
    let score = scored.scores[i];
    Compact {
        start: if w.timestamp.timestamp_subsec_nanos() == 0 {
            Start::Secs
        } else {
            Start::Text(w.start_text().into())
        },
        entity: w.entity.is_some(),
        score,
        is_anomaly: scored.is_anomaly(i),
        severity: crate::detector::severity::severity(score),
        explanation: compact::explanation(scored.explanation(i).map(Vec::as_slice)),
        bytes_sent: Some(w.bytes_sent),
        bytes_received: Some(w.bytes_received),
        connections: Some(w.connections),
        active_sessions: Some(w.active_sessions),
        values: None,
        fields: None,
        model_version: version,
        closed_sub_ms,
        suppressed: scored.suppressed.of(i).map(Into::into),
    }
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
