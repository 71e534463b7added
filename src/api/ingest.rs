//! Continuous ingest: `POST …/ingest` (202), `POST …/flush` and `GET …/windows`, for `default`
//! under `/v1` and for every detector under `/v1/detectors/{name}`.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::detectors::Detector;
use super::idempotency::{IdempotencyKey, Start, or_replay, request_parts, start_whole, whole};
use super::problems::{BadParameter, BodyProblems, IngestProblems};
use super::views::alerts::AlertView;
use super::views::bodies::{Binary, ContentEncodingHeader, IdempotencyKeyHeader};
use super::views::scoring::FeatureContributionView;
use crate::error::ApiError;
use crate::records::zeek::{Reject, ZeekFormat};
use crate::records::{BodyFormat, RecordError, RecordErrorKind};
use crate::service::detectors::SourceFormat;
use crate::service::idempotency::{Answer, AnswerOf};
use crate::service::ingest::{self, IngestOutcome};
use crate::state::AppState;
use crate::store::alerts::{Alert, AlertEvent};
use crate::store::streams::WindowQuery;

/// What an ingest or flush call did.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestAnswer {
    /// Conn lines folded into open windows; for a `records` detector, records scored and
    /// stored (each its own window).
    pub accepted: usize,
    /// Conn lines whose window had already closed: counted, never merged.
    pub late: usize,
    /// Conn lines whose `uid` their window already held (a retried batch): counted once.
    pub duplicates: usize,
    /// Lines skipped as unreadable (`source.on_invalid: skip`).
    pub rejected: usize,
    /// The first skipped lines (up to 100), by 1-based line number in this body.
    #[schema(value_type = Vec<RejectView>)]
    pub rejects: Vec<Reject>,
    pub windows_opened: usize,
    /// Windows closed (and scored, stored, alerted on) by this call.
    pub windows_closed: usize,
    /// Windows ending at or before this are closed; null before the first line.
    pub watermark: Option<DateTime<Utc>>,
    /// The alerts the closed windows opened or updated, as stored: each anomalous entity's
    /// incident (its id, `entity`, `count`, `status`), or a batch alert for windows of no
    /// entity, with what this call did to it (`event`).
    pub alerts: Vec<IngestAlert>,
    /// The model that scored the closed windows; null when the detector has no active model
    /// (the windows this call closed are kept pending).
    pub model_version: Option<u64>,
    /// Windows (for a `records` detector, records) kept pending after this call: closed while
    /// the detector had no active model, waiting to be scored, stored and alerted on by the
    /// first ingest or flush after a model is fitted or activated.
    pub windows_pending: u64,
    /// Windows kept pending by earlier calls that this call scored (with its own closed windows).
    pub pending_scored: usize,
}

/// An alert a call opened or updated, as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestAlert {
    #[serde(flatten)]
    #[schema(value_type = AlertView)]
    pub alert: Alert,
    /// `opened` (a new incident or batch alert), `updated` (folded into the entity's open
    /// incident, no delivery), `escalated` or `renotified` (folded in, and delivered again).
    #[schema(example = "opened")]
    pub event: &'static str,
}

/// A skipped line.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = Reject)]
#[allow(dead_code)] // describes `records::zeek::Reject`
pub struct RejectView {
    /// 1-based line number in the body (header lines count).
    line: usize,
    reason: String,
    /// The Zeek field at fault, when there is one.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    field: Option<String>,
}

impl From<IngestOutcome> for IngestAnswer {
    fn from(o: IngestOutcome) -> Self {
        let r = o.report;
        Self {
            accepted: r.accepted,
            late: r.late,
            duplicates: r.duplicates,
            rejected: r.rejected,
            rejects: r.rejects,
            windows_opened: r.windows_opened,
            windows_closed: r.windows_closed,
            watermark: r.watermark,
            alerts: o
                .alerts
                .into_iter()
                .map(|(alert, event)| IngestAlert {
                    alert,
                    event: event.map_or("updated", AlertEvent::as_str),
                })
                .collect(),
            model_version: o.model_version,
            windows_pending: o.windows_pending,
            pending_scored: o.pending_scored,
        }
    }
}

/// Feed the detector's stream: Zeek lines into open windows, or records as windows of their own.
///
/// For a detector with `source.format: zeek`, the body is a Zeek conn log (TSV, whose `#fields` header may have come in an earlier call,
/// or JSON lines), compressed or not. Lines fall into event-time windows per entity (the
/// detector's `source.window` and `group_by`) that persist across calls, restarts and
/// replicas; a window closes when the watermark (latest event time − `allowed_lateness`)
/// passes its end, and is then scored by the active model, stored (`GET …/windows`) and may
/// raise an alert. A retried line (same `uid`) counts once; a line for a closed window is
/// `late`. With `source.on_invalid: skip` (the default) unreadable lines are reported and the
/// rest accepted. Without an active model the call is accepted all the same: the windows it
/// closes (a `records` detector: its records) are kept pending (`windows_pending`, up to the
/// server's `NETSENTINEL_MAX_PENDING_WINDOWS`; past it 503 `overloaded` and nothing of the call
/// is kept) and scored by the first ingest or flush after a fit or activation, exactly as the
/// model would have scored them on closing. Everything in a 202 is committed. With an
/// `Idempotency-Key`, a repeat of the
/// request answers the first answer again and changes nothing (the key is committed with the
/// call's effect); the same key with another body is 422 `idempotency-key-reused`.
///
/// For a detector with `source.format: records`, the body is records (JSON array or
/// `{"records": [...]}`, NDJSON, or CSV with a header row), each with an RFC 3339 `timestamp`
/// and, when the detector has a `source.group_by`, that string field as its entity. Each
/// record is one observation and its own window, closed on arrival: scored by the active
/// model as `score` would, stored (`GET …/windows`, with its feature `values` and echoed
/// `fields`) and alerted on. No record is late (nothing waits open); `watermark` is the latest
/// record time seen. With `on_invalid: skip` a record that cannot be read (or lacks its
/// timestamp or entity) is a reject, by the line it starts on, and the rest are accepted.
/// Records have no `uid`: send an `Idempotency-Key` so a retried batch counts once.
#[utoipa::path(post, path = "/ingest", tag = "ingest",
    params(ContentEncodingHeader, IdempotencyKeyHeader),
    request_body(content(
        (Binary = "text/zeek-tsv"),
        (Binary = "application/x-zeek-json"),
        (Binary = "application/json"),
        (Binary = "application/x-ndjson"),
        (Binary = "text/csv"),
    )),
    responses(
        (status = 202, body = IngestAnswer, description = "The lines' effect is committed"),
        BodyProblems,
        IngestProblems,
    ))]
pub async fn ingest(
    State(state): State<AppState>,
    Detector(det): Detector,
    key: IdempotencyKey,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let records = det.spec().source.format == SourceFormat::Records;
    let format = match (super::body_format(&headers)?, records) {
        (BodyFormat::ZeekTsv, false) => Ok(ZeekFormat::Tsv),
        (BodyFormat::ZeekJson, false) => Ok(ZeekFormat::Json),
        (f, true) if !f.is_zeek() => Err(f),
        (_, false) => {
            return Err(RecordError::new(
                RecordErrorKind::UnsupportedFormat,
                "this detector reads Zeek conn logs (source.format \"zeek\"): Content-Type \
                 text/zeek-tsv or application/x-zeek-json",
            )
            .into());
        }
        (_, true) => {
            return Err(RecordError::new(
                RecordErrorKind::UnsupportedFormat,
                "this detector reads records (source.format \"records\"): Content-Type \
                 application/json, application/x-ndjson or text/csv",
            )
            .into());
        }
    };
    let body = super::whole_body(&headers, body, state.settings().max_body_bytes).await?;
    let parts = (det.name(), request_parts("ingest", &uri, &headers));
    let (key, retry) = match start_whole(&state, &key, parts, body.clone()).await? {
        Start::Replay(answer) => return Ok(answer),
        Start::Run { key, retry, .. } => (key, retry),
    };
    let keyed = key.map(|k| (k, answer_of(StatusCode::ACCEPTED)));
    let outcome = match format {
        Ok(zeek) => ingest::ingest(&state, &det, zeek, body, keyed).await,
        Err(records) => ingest::ingest_records(&state, &det, Some((records, body)), keyed).await,
    };
    Ok(match or_replay(&state, retry, outcome).await? {
        Ok(o) => whole(answered(StatusCode::ACCEPTED, o).await?),
        Err(replayed) => replayed,
    })
}

/// Close every open window of the detector's stream now.
///
/// For the end of a log or a quiet period: the open windows are scored, stored and alerted on
/// as if the watermark had passed them, and the watermark moves past them, so later lines for
/// them are `late`. Windows kept pending while the detector had no model are scored, stored
/// and alerted on with them once it has one (`pending_scored`); without a model the closed
/// windows are kept pending. With an `Idempotency-Key`, a repeat answers what the first flush
/// did.
#[utoipa::path(post, path = "/flush", tag = "ingest",
    params(IdempotencyKeyHeader),
    responses(
        (status = 200, body = IngestAnswer),
        BadParameter,
        IngestProblems,
    ))]
pub async fn flush(
    State(state): State<AppState>,
    Detector(det): Detector,
    key: IdempotencyKey,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let parts = (det.name(), request_parts("flush", &uri, &headers));
    let (key, retry) = match start_whole(&state, &key, parts, Bytes::new()).await? {
        Start::Replay(answer) => return Ok(answer),
        Start::Run { key, retry, .. } => (key, retry),
    };
    let keyed = key.map(|k| (k, answer_of(StatusCode::OK)));
    let outcome = ingest::flush(&state, &det, keyed).await;
    Ok(match or_replay(&state, retry, outcome).await? {
        Ok(o) => whole(answered(StatusCode::OK, o).await?),
        Err(replayed) => replayed,
    })
}

/// An ingest or flush answer (kept as sent for its `Idempotency-Key`).
fn answer_of(status: StatusCode) -> AnswerOf<IngestOutcome> {
    Box::new(move |o: &IngestOutcome| answer(status, o.clone()))
}

/// The answer of a call that ran: the same as [`answer_of`] writes, from the outcome itself (not
/// a copy) and on a blocking thread: with up to `--max-alert-entities` alerts, each with its
/// records, its JSON is CPU work the async runtime should not do.
async fn answered(status: StatusCode, o: IngestOutcome) -> Result<Answer, ApiError> {
    let answer = crate::work::spawn_blocking(move || answer(status, o)).await;
    Ok(answer.map_err(crate::service::ServiceError::from)?)
}

fn answer(status: StatusCode, o: IngestOutcome) -> Answer {
    Answer {
        status: status.as_u16(),
        content_type: "application/json".to_owned(),
        headers: Vec::new(),
        body: serde_json::to_vec(&IngestAnswer::from(o)).unwrap_or_default(),
    }
}

/// Which closed windows to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowsQuery {
    /// Windows starting at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Windows starting before this.
    pub until: Option<DateTime<Utc>>,
    /// Only this entity's windows.
    pub entity: Option<String>,
    /// Only anomalous windows.
    #[serde(default)]
    pub only_anomalies: bool,
    /// Windows per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the page before.
    pub cursor: Option<String>,
}

/// A page of closed windows, by start then entity.
#[derive(ToSchema)]
#[allow(dead_code)] // the answer is written from the stored JSON
pub struct WindowList {
    windows: Vec<WindowView>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
    /// Windows (for a `records` detector, records) the detector keeps pending: closed while it
    /// had no active model, not listed here until an ingest or flush after a fit or
    /// activation scores them.
    windows_pending: u64,
}

/// A closed window: a score result (the window start as `timestamp`) plus `closed_at`. A
/// Zeek window carries its four values; a record of a `records` detector (its own window, at
/// its own `timestamp`) carries its feature `values` and echoed `fields` instead.
#[cfg_attr(test, serde_with::skip_serializing_none)]
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = Window)]
#[allow(dead_code)] // mirrors `service::ingest::WindowResult`
pub struct WindowView {
    timestamp: DateTime<Utc>,
    entity: Option<String>,
    score: f64,
    is_anomaly: bool,
    severity: u8,
    explanation: Option<Vec<FeatureContributionView>>,
    bytes_sent: Option<f64>,
    bytes_received: Option<f64>,
    connections: Option<f64>,
    active_sessions: Option<f64>,
    /// A record's feature values, by feature (records detectors).
    values: Option<std::collections::BTreeMap<String, f64>>,
    /// A record's string fields, echoed (records detectors).
    fields: Option<std::collections::BTreeMap<String, String>>,
    model_version: u64,
    closed_at: DateTime<Utc>,
    /// The id of the suppression rule that matched the window (absent when none did): scored
    /// as usual, it raised nothing.
    suppressed: Option<String>,
}

/// The detector's closed windows, a page at a time.
#[utoipa::path(get, path = "/windows", tag = "ingest", params(WindowsQuery), responses(
    (status = 200, body = WindowList),
    BadParameter,
))]
pub async fn windows(
    State(state): State<AppState>,
    Detector(det): Detector,
    query: Result<Query<WindowsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = super::query(query)?;
    let limit = q.limit.unwrap_or(100).clamp(1, super::alerts::MAX_LIMIT);
    let (page, pending) = ingest::windows(
        &state,
        WindowQuery {
            detector: det.name().to_owned(),
            since: q.since,
            until: q.until,
            entity: q.entity,
            only_anomalies: q.only_anomalies,
            limit,
            cursor: q.cursor,
        },
    )
    .await?;
    // The stored bodies are the windows' JSON already.
    let mut out = String::from("{\"windows\":[");
    out.push_str(&page.windows.join(","));
    out.push_str("],\"next_cursor\":");
    out.push_str(&serde_json::to_string(&page.next_cursor).unwrap_or_else(|_| "null".into()));
    out.push_str(&format!(",\"windows_pending\":{pending}}}"));
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::views::check::mirrors;
    use crate::service::ingest::WindowResult;
    use crate::service::ingest::tests::explanation;

    #[test]
    fn the_views_mirror_what_the_service_writes() {
        let explanation = explanation("bytes_sent 5 B; usual for 10.0.0.1 is 1–2 B");
        for (entity, explanation, zeek) in [
            (None, None, true),
            (Some("10.0.0.1".to_owned()), Some(explanation), true),
            (Some("10.0.0.2".to_owned()), None, false),
        ] {
            let suppressed = entity.as_ref().map(|_| "0192".to_owned());
            let (z, r) = (zeek.then_some(1.0), (!zeek).then_some(()));
            mirrors::<WindowView>(&WindowResult {
                timestamp: "2024-01-01T00:05:00Z".into(),
                entity,
                score: 0.61,
                is_anomaly: true,
                severity: 53,
                explanation,
                bytes_sent: z,
                bytes_received: z,
                connections: z,
                active_sessions: z,
                values: r.map(|()| [("bytes".to_owned(), 5.0)].into()),
                fields: r.map(|()| [("src_ip".to_owned(), "10.0.0.2".to_owned())].into()),
                model_version: 4,
                closed_at: chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
                suppressed,
            });
        }
        for field in [None, Some("ts".to_owned())] {
            mirrors::<RejectView>(&Reject {
                line: 3,
                reason: "bad".into(),
                field,
            });
        }
    }
}
