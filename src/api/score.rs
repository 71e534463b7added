//! `POST /v1/score`: score a batch, explain its anomalies, and raise an alert when it is anomalous.

use super::idempotency::{IdempotencyKey, Start, or_replay, request_parts, start_streaming};
use super::problems::{BodyProblems, NoModelOrIdempotencyProblems, NotAcceptable};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use utoipa::{IntoParams, ToSchema};

use super::views::bodies::{ContentEncodingHeader, IdempotencyKeyHeader};

use std::collections::BTreeMap;

use super::detectors::Detector;
use super::views::alerts::AlertView;
use super::views::scoring::BatchSummaryView;
use super::{Produces, negotiate};
use crate::detector::explain::FeatureContribution;
use crate::detector::model::BatchSummary;
use crate::error::ApiError;
use crate::records::Batch;
use crate::records::zeek::{OnInvalid, Reject, Rejects};
use crate::service::scoring::{self, ExplainMode, ScoreCommand, ScoreOutcome, ScoredBatch};
use crate::state::AppState;
use crate::store::alerts::Alert;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScoreQuery {
    /// Return only the anomalous records (the summary still covers the whole batch).
    #[serde(default)]
    pub only_anomalies: bool,
    /// Which records get an explanation: `true`/`anomalies` (default), `all`, or `false`/`none`.
    #[param(value_type = Option<String>, example = "anomalies")]
    #[serde(default)]
    pub explain: ExplainMode,
    /// Zeek bodies only: aggregation window such as `1h` (default), `5m`, `30s`.
    #[param(example = "1h")]
    pub window: Option<String>,
    /// Zeek bodies only: `none` (default, the whole network), `id.orig_h` or `id.resp_h`.
    #[param(example = "id.orig_h")]
    pub group_by: Option<String>,
    /// Zeek bodies only: `reject` (default: a bad line is a 422 for the whole body) or `skip`
    /// (bad lines are left out, counted in `rejected` and listed in `rejects`).
    #[param(value_type = Option<String>, example = "skip")]
    pub on_invalid: Option<OnInvalid>,
}

/// One scored record as the API returns it.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordResult {
    /// Position in the posted batch (0-based).
    pub index: usize,
    pub timestamp: Option<String>,
    /// Anomaly score in (0, 1]; higher is more anomalous (= −scikit-learn's score_samples).
    pub score: f64,
    /// score > threshold.
    pub is_anomaly: bool,
    /// 0–100, monotonic in score.
    pub severity: u8,
    /// Features that drove the score, most important first (absent when not requested).
    #[schema(value_type = Option<Vec<crate::api::views::scoring::FeatureContributionView>>)]
    pub explanation: Option<Vec<FeatureContribution>>,
    /// `global_fallback` when a model with entity baselines judged the record against the
    /// global baseline: its entity was unseen in training or had too little history (absent
    /// otherwise).
    #[schema(value_type = Option<String>, example = "global_fallback")]
    pub baseline: Option<&'static str>,
    /// The id of the suppression rule that matched the record (absent when none did): it is
    /// scored as usual but raises nothing and does not count toward the batch's alert.
    pub suppressed: Option<String>,
    /// The record's string fields (src_ip, host, ...), echoed.
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

/// A scored batch.
#[derive(Serialize, ToSchema)]
pub struct ScoreResponse {
    /// The version of the model that produced every score here.
    pub model_version: u64,
    #[schema(value_type = BatchSummaryView)]
    pub summary: BatchSummary,
    pub results: Vec<RecordResult>,
    /// The alert this batch raised (already stored), or null.
    #[schema(value_type = Option<AlertView>)]
    pub alert: Option<Alert>,
    /// With `on_invalid=skip` only: the Zeek lines left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<usize>,
    /// With `on_invalid=skip` only: the first lines left out (up to 100), by line number.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<super::ingest::RejectView>>)]
    pub rejects: Option<Vec<Reject>>,
}

/// JSON body of a score or evaluate request: an array of records, or `{"records": [...]}`.
#[derive(ToSchema)]
#[schema(example = json!({"records": [
    {"timestamp": "2024-01-01T00:00:00Z", "bytes_sent": 5247031.96, "bytes_received": 4287224.0, "connections": 56, "active_sessions": 23, "src_ip": "10.0.0.7"},
    {"timestamp": "2024-01-01T01:00:00Z", "bytes_sent": 972347.14, "bytes_received": 772457.9, "connections": 42, "active_sessions": 24, "src_ip": "10.0.0.8"}
]}))]
#[allow(dead_code)]
pub struct RecordsBody {
    /// Traffic records: the model's features as numbers; optional `timestamp` (RFC 3339); other string fields are echoed.
    #[schema(min_items = 1)]
    records: Vec<Object>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Object(serde_json::Map<String, serde_json::Value>);

/// Score a batch of traffic records.
///
/// Body: a JSON array of records or `{"records": [...]}`, NDJSON, or CSV with a header row. Every
/// record needs the model's features as finite numbers. The batch raises an alert (stored before
/// this response returns) when its anomaly rate exceeds the configured rate or a record reaches the
/// configured severity. With `Accept: text/csv` the answer is one row per record:
/// `index,score,is_anomaly,severity`.
#[utoipa::path(post, path = "/score", tag = "scoring",
    params(ScoreQuery, ContentEncodingHeader, IdempotencyKeyHeader),
    // And the text forms (binary strings): `api::reads_records`.
    request_body(content((RecordsBody = "application/json"))),
    responses(
        (status = 200, content(
            (ScoreResponse = "application/json"),
            (String = "text/csv"),
        )),
        BodyProblems,
        NotAcceptable,
        NoModelOrIdempotencyProblems,
    ))]
pub async fn score(
    State(state): State<AppState>,
    Detector(det): Detector,
    key: IdempotencyKey,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<ScoreQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let query = super::query(query)?;
    let declared_len = usize::try_from(HttpBody::size_hint(&body).lower()).unwrap_or(0);
    let body = super::body_stream(&headers, body, state.settings().max_body_bytes)?;
    let format = super::body_format(&headers)?;
    let produces = negotiate(&headers, &[Produces::Json, Produces::Csv])?;
    let mut zeek = super::zeek_options(format, &det.spec(), &query)?;
    let skip = query.on_invalid == Some(OnInvalid::Skip);
    if let Some(on_invalid) = query.on_invalid {
        if !format.is_zeek() {
            return Err(ApiError::new(
                crate::error::ProblemCode::InvalidParameter,
                "on_invalid applies to Zeek conn logs only (Content-Type text/zeek-tsv or application/x-zeek-json)",
            )
            .with_field("on_invalid"));
        }
        zeek.on_invalid = on_invalid;
    }
    let parts = (det.name(), request_parts("score", &uri, &headers));
    let (key, body, retry) = match start_streaming(&state, &key, parts, body, declared_len).await? {
        Start::Replay(answer) => return Ok(answer),
        Start::Run { key, body, retry } => (key, body, retry),
    };
    let explain = match produces {
        Produces::Csv => ExplainMode::None,
        _ => query.explain,
    };
    let answer_type = produces.content_type();
    let command = ScoreCommand {
        format,
        zeek,
        explain,
        answer_type,
        shows_alert: produces != Produces::Csv,
    };
    let only_anomalies = query.only_anomalies;
    // Small answers are written on the scoring thread at once; large ones stream out after the
    // alert is stored.
    let outcome = scoring::score(
        &state,
        &det,
        command,
        body,
        key,
        move |b, s, alert, v, r| {
            (b.len() <= STREAM_RECORDS).then(|| {
                ResponseBody::new(produces, only_anomalies, v, alert)
                    .with_rejects(skip.then_some(r))
                    .whole(b, s)
            })
        },
    )
    .await;
    let outcome = match or_replay(&state, retry, outcome).await? {
        Ok(outcome) => outcome,
        Err(replayed) => return Ok(replayed),
    };
    let content_type = [(header::CONTENT_TYPE, answer_type)];
    Ok(match outcome.rendered {
        Some(bytes) => (content_type, bytes).into_response(),
        None => (
            content_type,
            streamed(outcome, produces, only_anomalies, skip),
        )
            .into_response(),
    })
}

/// A large answer written in pieces on a blocking thread as the client reads it. Every record
/// was checked before, so the stream cannot meet a bad one: only the connection can end it
/// early, and then the writer stops.
fn streamed<R>(
    outcome: ScoreOutcome<R>,
    produces: Produces,
    only_anomalies: bool,
    skip: bool,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let ScoreOutcome {
        model_version,
        batch,
        scored,
        alert,
        rejects,
        ..
    } = outcome;
    // Holds the request's work (slot and memory) until the last piece is written or the
    // client is gone.
    crate::work::spawn_blocking(move || {
        ResponseBody::new(produces, only_anomalies, model_version, alert.as_ref())
            .with_rejects(skip.then_some(&rejects))
            .write(&batch, &scored, STREAM_RECORDS, |piece| {
                tx.blocking_send(Ok(Bytes::from(piece))).is_ok()
            });
    });
    // Fused: a compressing layer polls the body once more after its end.
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(futures_util::StreamExt::fuse(stream))
}

/// Batches up to this many records are answered in one piece; larger ones stream in pieces of
/// this many records.
const STREAM_RECORDS: usize = 65_536;

/// Writes a score response, `JSON` or CSV, in pieces.
struct ResponseBody<'a> {
    produces: Produces,
    only_anomalies: bool,
    model_version: u64,
    alert: Option<&'a Alert>,
    /// Written as `rejected` and `rejects` (JSON only) when the request skipped bad lines.
    rejects: Option<&'a Rejects>,
}

impl<'a> ResponseBody<'a> {
    fn with_rejects(self, rejects: Option<&'a Rejects>) -> Self {
        Self { rejects, ..self }
    }

    fn new(
        produces: Produces,
        only_anomalies: bool,
        model_version: u64,
        alert: Option<&'a Alert>,
    ) -> Self {
        Self {
            produces,
            only_anomalies,
            model_version,
            alert,
            rejects: None,
        }
    }

    /// The whole answer at once.
    fn whole(&self, batch: &Batch, scored: &ScoredBatch) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(batch, scored, usize::MAX, |piece| {
            out.extend_from_slice(&piece);
            true
        });
        out
    }

    /// Hands `emit` the body in pieces of at most `per_piece` records (the JSON head and tail
    /// travel with the first and last records); stops when `emit` returns false. The
    /// concatenated pieces equal the whole response serialised at once.
    fn write(
        &self,
        batch: &Batch,
        scored: &ScoredBatch,
        per_piece: usize,
        mut emit: impl FnMut(Vec<u8>) -> bool,
    ) {
        use std::io::Write;
        let json = self.produces != Produces::Csv;
        // Room for a piece without growing: a JSON result is about 110 bytes, an explanation
        // about 170 a feature; a CSV row about 30.
        let records = per_piece.min(batch.len());
        let capacity = if json {
            records * 128 + scored.explanations.len().min(records) * 512
        } else {
            records * 32
        };
        let mut out = Vec::with_capacity(capacity);
        if json {
            out.extend_from_slice(b"{\"model_version\":");
            let _ = write!(out, "{}", self.model_version);
            out.extend_from_slice(b",\"summary\":");
            crate::records::json::write(&mut out, &scored.summary);
            out.extend_from_slice(b",\"results\":[");
        } else {
            out.extend_from_slice(b"index,score,is_anomaly,severity\n");
        }
        let mut in_piece = 0;
        let mut first = true;
        let mut floats = ryu::Buffer::new();
        let mut ints = itoa::Buffer::new();
        for (i, &s) in scored.scores.iter().enumerate() {
            let anomalous = scored.is_anomaly(i);
            if self.only_anomalies && !anomalous {
                continue;
            }
            if json {
                if !first {
                    out.push(b',');
                }
                crate::records::json::write(&mut out, &ResultView { batch, scored, i });
            } else {
                // As `writeln!(out, "{i},{s},{anomalous},{severity}")` writes it, without
                // the formatting machinery (most of a large CSV answer's time).
                out.extend_from_slice(ints.format(i).as_bytes());
                out.push(b',');
                write_score(&mut out, s, &mut floats);
                out.extend_from_slice(if anomalous { b",true," } else { b",false," });
                out.extend_from_slice(
                    ints.format(crate::detector::severity::severity(s))
                        .as_bytes(),
                );
                out.push(b'\n');
            }
            first = false;
            in_piece += 1;
            if in_piece == per_piece {
                in_piece = 0;
                if !emit(std::mem::take(&mut out)) {
                    return;
                }
            }
        }
        if json {
            out.extend_from_slice(b"],\"alert\":");
            crate::records::json::write(&mut out, &self.alert);
            if let Some(r) = self.rejects {
                let _ = write!(out, ",\"rejected\":{},\"rejects\":", r.total);
                crate::records::json::write(&mut out, &r.first);
            }
            out.push(b'}');
        }
        if !out.is_empty() {
            emit(out);
        }
    }
}

/// Record `i`'s result serialised straight from the batch, as [`RecordResult`] serialises (same
/// keys, same order, echoed fields last by name) without copying its strings first.
struct ResultView<'a> {
    batch: &'a Batch,
    scored: &'a ScoredBatch,
    i: usize,
}

impl Serialize for ResultView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (batch, scored, i) = (self.batch, self.scored, self.i);
        let score = scored.scores[i];
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("index", &i)?;
        if let Some(ts) = batch.timestamps.get(i) {
            map.serialize_entry("timestamp", ts)?;
        }
        map.serialize_entry("score", &score)?;
        map.serialize_entry("is_anomaly", &scored.is_anomaly(i))?;
        map.serialize_entry("severity", &crate::detector::severity::severity(score))?;
        if let Some(e) = scored.explanation(i) {
            map.serialize_entry("explanation", e)?;
        }
        if scored.is_global_fallback(i) {
            map.serialize_entry("baseline", "global_fallback")?;
        }
        if let Some(rule) = scored.suppressed.of(i) {
            map.serialize_entry("suppressed", rule)?;
        }
        for (name, value) in batch.echo.fields(i) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Writes a score as `f64`'s `Display` does (the shortest text that reads back the same), with
/// ryu where its output is the same text: in (1e-4, 1) neither uses an exponent, and both
/// print the shortest round-trip digits. Display is several times slower.
fn write_score(out: &mut Vec<u8>, s: f64, buf: &mut ryu::Buffer) {
    if s > 1e-4 && s < 1.0 {
        out.extend_from_slice(buf.format_finite(s).as_bytes());
    } else {
        use std::io::Write;
        let _ = write!(out, "{s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    use crate::service::scoring::tests::{fitted, json_batch};
    use crate::service::scoring::{AlertRule, alert_for, score_batch};

    /// The per-record results as `RecordResult`s: what the handler serialised before results
    /// were written straight from the batch, the oracle of `ResultView`.
    fn results(batch: &Batch, scored: &ScoredBatch, only_anomalies: bool) -> Vec<RecordResult> {
        (0..batch.len())
            .filter(|&i| !only_anomalies || scored.is_anomaly(i))
            .map(|i| RecordResult {
                index: i,
                timestamp: batch.timestamps.owned(i),
                score: scored.scores[i],
                is_anomaly: scored.is_anomaly(i),
                severity: crate::detector::severity::severity(scored.scores[i]),
                explanation: scored.explanation(i).cloned(),
                baseline: scored.is_global_fallback(i).then_some("global_fallback"),
                suppressed: scored.suppressed.of(i).map(str::to_owned),
                fields: batch.echo.get(i),
            })
            .collect()
    }

    #[test]
    fn streamed_pieces_equal_the_whole_response() {
        let records: Vec<serde_json::Value> = (0..300)
            .map(|i| {
                serde_json::json!({
                    "timestamp": format!("2024-01-01T{:02}:00:00Z", i % 24),
                    "a": f64::from(i % 17) * if i % 50 == 0 { 40.0 } else { 1.0 },
                    "b": f64::from(i * 7 % 13),
                    "host": format!("h{i}"),
                })
            })
            .collect();
        let batch = json_batch(records);
        let model = fitted(&batch);
        let scored = score_batch(&model, &batch, ExplainMode::Anomalies, 3);
        let rule = AlertRule {
            rate: 0.0,
            severity: 0,
            top_records: 5,
            explain_top_k: 3,
            entity_field: "entity".into(),
            max_entities: 1000,
            incidents: Default::default(),
        };
        let alert = alert_for(&model, &batch, &scored, &rule);
        assert!(alert.is_some() && scored.summary.n_anomalies > 0);
        for produces in [Produces::Json, Produces::Csv] {
            for only_anomalies in [false, true] {
                let body = ResponseBody {
                    produces,
                    only_anomalies,
                    model_version: 3,
                    alert: alert.as_ref(),
                    rejects: None,
                };
                let mut pieces = Vec::new();
                body.write(&batch, &scored, 7, |p| {
                    pieces.push(p);
                    true
                });
                assert!(pieces.len() > 1);
                let mut whole = Vec::new();
                body.write(&batch, &scored, usize::MAX, |p| {
                    whole.extend_from_slice(&p);
                    true
                });
                assert_eq!(pieces.concat(), whole);
                // What the handler wrote before responses streamed.
                let reference = if produces == Produces::Json {
                    serde_json::to_vec(&ScoreResponse {
                        model_version: 3,
                        summary: scored.summary.clone(),
                        results: results(&batch, &scored, only_anomalies),
                        alert: alert.clone(),
                        rejected: None,
                        rejects: None,
                    })
                    .unwrap()
                } else {
                    use std::io::Write;
                    let mut out = b"index,score,is_anomaly,severity\n".to_vec();
                    for (i, &s) in scored.scores.iter().enumerate() {
                        if only_anomalies && !scored.is_anomaly(i) {
                            continue;
                        }
                        let sev = crate::detector::severity::severity(s);
                        writeln!(out, "{i},{s},{},{sev}", scored.is_anomaly(i)).unwrap();
                    }
                    out
                };
                assert_eq!(
                    String::from_utf8(whole).unwrap(),
                    String::from_utf8(reference).unwrap()
                );
            }
        }
    }

    #[test]
    fn scores_print_as_display_prints_them() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut buf = ryu::Buffer::new();
        let specials = [
            1.0,
            0.5,
            0.1,
            1e-4,
            1.0001e-4,
            0.999_999_999_999_999_9,
            0.3333333333333333,
        ];
        let random = (0..200_000).map(|_| rng.random::<f64>());
        let tiny = (0..1000).map(|k| f64::from(k) * 1e-7);
        for s in specials.into_iter().chain(random).chain(tiny) {
            let mut out = Vec::new();
            write_score(&mut out, s, &mut buf);
            assert_eq!(String::from_utf8(out).unwrap(), s.to_string());
        }
    }
}
