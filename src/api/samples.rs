//! `POST /v1/samples`: generated, labeled traffic as JSON, CSV or NDJSON.

use super::problems::{BodyProblems, NotAcceptable};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::views::samples::{GeneratorConfigView, SampleRecordView};
use super::{Produces, negotiate};
use crate::detector::generator::{GeneratorConfig, SampleRecord, generate_watched};
use crate::error::{ApiError, ProblemCode};
use crate::service::ServiceError;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct SamplesResponse {
    #[schema(value_type = Vec<SampleRecordView>)]
    pub records: Vec<SampleRecord>,
}

/// Generate labeled sample traffic.
///
/// Every field of the body is optional (an empty or `null` body gives the tutorial's 720 hourly records with
/// 8 bursts). The `seed` profile reproduces the tutorial; `realistic` adds daily and weekly rhythm,
/// correlated features and labeled attack kinds. The response format follows `Accept`.
#[utoipa::path(post, path = "/v1/samples", tag = "samples",
    request_body(content = Option<GeneratorConfigView>, content_type = "application/json", description = "Generator settings; no body (or `null`) means every default"),
    responses(
        (status = 200, description = "Records with `label` (and `attack_kind` for anomalies)", content(
            (SamplesResponse = "application/json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"),
        )),
        BodyProblems,
        NotAcceptable,
    ))]
pub async fn generate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = super::whole_body(&headers, body, state.settings().max_body_bytes).await?;
    let produces = negotiate(&headers, &[Produces::Json, Produces::Csv, Produces::Ndjson])?;
    // No body, or JSON `null` (what the document's optional body allows), is every default.
    let config: GeneratorConfig = if matches!(body.trim_ascii(), b"" | b"null") {
        GeneratorConfig::default()
    } else {
        super::body_format(&headers).and_then(|f| match f {
            crate::records::BodyFormat::Json => Ok(()),
            _ => Err(ApiError::new(
                ProblemCode::UnsupportedMediaType,
                "send the generator settings as application/json",
            )),
        })?;
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                ApiError::invalid_value(format!("generator settings: {e}"))
            } else {
                ApiError::new(ProblemCode::MalformedBody, format!("invalid JSON: {e}"))
            }
        })?
    };
    // The records and their encoding, held against the memory budget before either is made.
    crate::work::reserve(config.n_records as u64 * SAMPLE_RECORD_BYTES)?;
    let bytes = crate::work::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        // Generation and encoding both stop at their next block once the request is cancelled.
        let records =
            generate_watched(&config, &crate::work::cancelled)?.ok_or(ServiceError::Cancelled)?;
        encode(&records, produces).ok_or_else(|| ServiceError::Cancelled.into())
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, produces.content_type())], bytes).into_response())
}

/// Estimated bytes one generated sample record takes until its answer is sent: the record,
/// and its text in the largest format (JSON).
const SAMPLE_RECORD_BYTES: u64 = 320;

/// Records encoded between two checks for cancellation.
const ENCODE_BLOCK: usize = 65_536;

/// Writes records in the chosen format; `None` when the request was cancelled meanwhile.
pub fn encode(records: &[SampleRecord], produces: Produces) -> Option<Vec<u8>> {
    let blocks = records.chunks(ENCODE_BLOCK);
    let stopped = || crate::work::cancelled();
    Some(match produces {
        Produces::Json => {
            // `{"records":[...]}`, as serde_json writes it, a block at a time.
            let mut out = Vec::with_capacity(records.len() * 160 + 16);
            out.extend_from_slice(b"{\"records\":[");
            for (b, block) in blocks.enumerate() {
                if stopped() {
                    return None;
                }
                for (i, r) in block.iter().enumerate() {
                    if b + i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, r).expect("sample records always serialise");
                }
            }
            out.extend_from_slice(b"]}");
            out
        }
        Produces::Ndjson => {
            let mut out = Vec::with_capacity(records.len() * 160);
            for block in blocks {
                if stopped() {
                    return None;
                }
                for r in block {
                    serde_json::to_writer(&mut out, r).expect("sample records always serialise");
                    out.push(b'\n');
                }
            }
            out
        }
        Produces::Csv => {
            let mut out = Vec::with_capacity(records.len() * 100);
            // The network profile's records name their host: a column of its own, last.
            let hosts = records.first().is_some_and(|r| r.src_ip.is_some());
            out.extend_from_slice(
                b"timestamp,bytes_sent,bytes_received,connections,active_sessions,label,attack_kind",
            );
            out.extend_from_slice(if hosts { b",src_ip\n" } else { b"\n" });
            for (i, r) in records.iter().enumerate() {
                if i % ENCODE_BLOCK == 0 && stopped() {
                    return None;
                }
                let kind = r
                    .attack_kind
                    .and_then(|k| serde_json::to_value(k).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                out.extend_from_slice(
                    format!(
                        "{},{},{},{},{},{},{}\n",
                        r.timestamp
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        r.bytes_sent,
                        r.bytes_received,
                        r.connections,
                        r.active_sessions,
                        r.label,
                        kind
                    )
                    .as_bytes(),
                );
                if hosts {
                    out.pop();
                    out.push(b',');
                    out.extend_from_slice(r.src_ip.as_deref().unwrap_or_default().as_bytes());
                    out.push(b'\n');
                }
            }
            out
        }
    })
}
