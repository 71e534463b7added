//! `POST /v1/score`: score a batch, explain its anomalies, and raise an alert when it is anomalous.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{BodyFormat, Features, parse_table_with};
use super::{Produces, negotiate};
use crate::detector::model::BatchSummary;
use crate::error::{ApiError, Problem};
use crate::scoring::{
    AlertRule, ExplainMode, RecordResult, alert_for, chart_data, results, score_batch,
};
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
}

/// A scored batch.
#[derive(Serialize, ToSchema)]
pub struct ScoreResponse {
    /// The version of the model that produced every score here.
    pub model_version: u64,
    pub summary: BatchSummary,
    pub results: Vec<RecordResult>,
    /// The alert this batch raised (already stored), or null.
    pub alert: Option<Alert>,
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
#[utoipa::path(post, path = "/v1/score", tag = "scoring",
    params(ScoreQuery),
    request_body(content(
        (RecordsBody = "application/json"),
        (String = "text/csv"),
        (String = "application/x-ndjson"),
        (String = "text/zeek-tsv"),
        (String = "application/x-zeek-json"),
    )),
    responses(
        (status = 200, content(
            (ScoreResponse = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 406, body = Problem, content_type = "application/problem+json", description = "Accept allows neither JSON nor CSV"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "No model yet"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn score(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ScoreQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = super::query(query)?;
    let body = super::body(body)?;
    let format = BodyFormat::from_headers(&headers)?;
    let produces = negotiate(&headers, &[Produces::Json, Produces::Csv])?;
    let zeek = super::zeek_options(format, query.window.as_deref(), query.group_by.as_deref())?;
    let model = state.model().ok_or_else(ApiError::no_model)?;
    let settings = state.settings();
    let max_records = settings.max_records;
    let top_k = settings.explain_top_k as usize;
    let rule = AlertRule {
        rate: settings.alert_rate,
        severity: settings.alert_severity,
        top_records: settings.alert_top_records,
        explain_top_k: top_k,
    };
    let explain = if produces == Produces::Csv {
        ExplainMode::None
    } else {
        query.explain
    };

    let scoring_model = model.clone();
    let (batch, scored, alert) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let batch = parse_table_with(format, &body, max_records, &zeek)?
            .into_batch(Features::Given(scoring_model.features()), false)?;
        let scored = score_batch(&scoring_model, &batch, explain, top_k);
        let alert = alert_for(&scoring_model, &batch, &scored, &rule);
        Ok((batch, scored, alert))
    })
    .await??;

    if let Some(alert) = &alert {
        let store = state.alerts();
        let stored = alert.clone();
        let sinks = state.webhooks().sink_names().to_vec();
        // The alert and the deliveries it owes commit together, before the response: an
        // alert a client has seen is always pushed too.
        tokio::task::spawn_blocking(move || store.insert_with_outbox(&stored, &sinks)).await??;
        state.webhooks().alert_stored();
        tracing::warn!(
            alert = %alert.id, severity = alert.severity, reason = %alert.reason,
            "alert raised"
        );
    }

    crate::monitoring::batch_scored(
        scored.summary.n_records,
        scored.summary.n_anomalies,
        alert.is_some(),
    );
    let model_version = model.version();
    let only_anomalies = query.only_anomalies;
    let (bytes, chart) = tokio::task::spawn_blocking(move || {
        let anomalies: Vec<bool> = (0..batch.len()).map(|i| scored.is_anomaly(i)).collect();
        let bytes = match produces {
            Produces::Csv => {
                let mut out = Vec::with_capacity(batch.len() * 32);
                out.extend_from_slice(b"index,score,is_anomaly,severity\n");
                for (i, &s) in scored.scores.iter().enumerate() {
                    if only_anomalies && !anomalies[i] {
                        continue;
                    }
                    use std::io::Write;
                    let _ = writeln!(
                        out,
                        "{i},{s},{},{}",
                        anomalies[i],
                        crate::detector::severity::severity(s)
                    );
                }
                out
            }
            _ => {
                let response = ScoreResponse {
                    model_version,
                    summary: scored.summary.clone(),
                    results: results(&batch, &scored, only_anomalies),
                    alert,
                };
                serde_json::to_vec(&response).expect("score responses always serialise")
            }
        };
        (bytes, chart_data(model_version, &batch, anomalies))
    })
    .await?;
    state.set_last_batch(chart);
    Ok(([(header::CONTENT_TYPE, produces.content_type())], bytes).into_response())
}
