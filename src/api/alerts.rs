//! `/v1/alerts`: list, read, acknowledge and judge the alerts (batch alerts and incidents)
//! scored batches and ingested windows raised.

use super::problems::{BadParameter, FeedbackProblems, NotFound};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::views::alerts::{
    AlertFormatView, AlertStatusView, AlertView, DeliveryStateView, ExportFormatView, VerdictView,
};
use super::views::suppressions::{CreatedSuppressionView, NewSuppressionView};
use crate::auth::ClientId;
use crate::error::{ApiError, ProblemCode};
use crate::service::alerts;
use crate::service::suppression::NewRule;
use crate::siem::formats::{AlertFormat, ExportContext, render_one, render_within};
use crate::state::AppState;
use crate::store::alerts::MAX_NOTE_CHARS;
use crate::store::alerts::{Alert, AlertPage, AlertQuery, AlertStatus};
use crate::store::outbox::DeliveryState;

/// Most alerts one page may hold.
pub const MAX_LIMIT: usize = 1000;
/// Bytes of an alert's compact JSON, counted without keeping them.
fn json_len(alert: &Alert) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising to a counter cannot fail: the alert is plain data and the writer never errs.
    let _ = serde_json::to_writer(&mut count, alert);
    count.0
}

/// Query structs that take the alert filters and paging (each with its own extra fields), and
/// turn them into a store query. One list of fields for the alert list and the SIEM export:
/// `deny_unknown_fields` cannot be combined with `#[serde(flatten)]`.
macro_rules! alert_filter_queries {
    ($($(#[$attr:meta])* struct $name:ident { $($extra:tt)* })+) => {$(
        $(#[$attr])*
        #[derive(Debug, Default, Deserialize, IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            /// Only alerts created at or after this time (RFC 3339).
            pub since: Option<DateTime<Utc>>,
            /// Only alerts created before this time (RFC 3339).
            pub until: Option<DateTime<Utc>>,
            /// Only alerts with at least this severity (0-100).
            pub min_severity: Option<u8>,
            /// `open`, `acknowledged` or `resolved` (incidents whose entity went quiet).
            #[param(inline, value_type = Option<AlertStatusView>)]
            pub status: Option<AlertStatus>,
            /// Only alerts of this detector (`default`: those of the v1 paths).
            #[param(example = "default")]
            pub detector: Option<String>,
            /// Only the incidents of this entity (host).
            #[param(example = "10.0.0.66")]
            pub entity: Option<String>,
            /// Page size, 1-1000 (default 50).
            #[param(minimum = 1, maximum = 1000)]
            pub limit: Option<usize>,
            /// The previous page's `next_cursor` (or its `x-next-cursor` header).
            pub cursor: Option<String>,
            $($extra)*
        }

        impl $name {
            /// The store query these parameters ask for; a 400 naming one out of range.
            fn alert_query(&mut self) -> Result<AlertQuery, ApiError> {
                checked(AlertQuery {
                    since: self.since,
                    until: self.until,
                    min_severity: self.min_severity,
                    status: self.status,
                    detector: self.detector.take(),
                    entity: self.entity.take(),
                    limit: self.limit.unwrap_or(50),
                    cursor: self.cursor.take(),
                })
            }
        }
    )+};
}

alert_filter_queries! {
    struct ListQuery {
        /// `json` (default: `{"alerts": [...], "next_cursor": ...}`), or one document per line in a SIEM's
        /// format: `ecs`, `ocsf`, `splunk_hec` (NDJSON) or `cef` (text); the next cursor is then in the
        /// `x-next-cursor` header. Generated clients read this operation's answer as JSON: for the
        /// SIEM formats they call `GET /v1/alerts/export/{format}`, which answers the same lines.
        #[param(inline, value_type = Option<AlertFormatView>, example = "ecs")]
        pub format: Option<AlertFormat>,
    }

    /// The filters of a SIEM export: those of the alert list, without `format` (it is in the path).
    struct ExportQuery {}
}

/// `query` if its page size and severity are in range, else a 400 naming the parameter.
fn checked(query: AlertQuery) -> Result<AlertQuery, ApiError> {
    if query.limit == 0 || query.limit > MAX_LIMIT {
        return Err(ApiError::new(
            ProblemCode::InvalidParameter,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )
        .with_field("limit"));
    }
    if query.min_severity.is_some_and(|s| s > 100) {
        return Err(ApiError::new(
            ProblemCode::InvalidParameter,
            "min_severity must be between 0 and 100",
        )
        .with_field("min_severity"));
    }
    Ok(query)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `json` (default), `ecs`, `ocsf`, `cef` or `splunk_hec`.
    #[param(inline, value_type = Option<AlertFormatView>, example = "ocsf")]
    pub format: Option<AlertFormat>,
}

/// The OpenAPI shape of one alert as JSON: the [`Alert`] itself (`format=json`, the default) or
/// the document a SIEM format defines for it (`ecs`, `ocsf`, `splunk_hec`), whose shape is that
/// SIEM's own.
pub struct AlertDocument;

impl utoipa::PartialSchema for AlertDocument {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Ref};
        AnyOfBuilder::new()
            .item(Ref::from_schema_name("AlertDetail"))
            .item(ObjectBuilder::new().description(Some(
                "An ECS, OCSF or Splunk HEC document, as `format` asked",
            )))
            .into()
    }
}

impl ToSchema for AlertDocument {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            AlertDetail::name().into(),
            <AlertDetail as utoipa::PartialSchema>::schema(),
        ));
        <AlertDetail as ToSchema>::schemas(schemas);
    }
}

/// A page of alerts, newest first.
#[derive(Serialize, ToSchema)]
pub struct AlertList {
    #[schema(value_type = Vec<AlertView>)]
    pub alerts: Vec<Alert>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// List alerts, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(ListQuery), responses(
    (status = 200, content(
        (AlertList = "application/json"),
        (String = "application/x-ndjson"),
        (String = "text/plain"),
    ), description = "A page of alerts; NDJSON or CEF lines with `format`"),
    BadParameter,
))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mut q = super::query(query)?;
    let format = q.format.unwrap_or(AlertFormat::Json);
    let mut page = alerts::list(&state, q.alert_query()?).await?;
    // One alert always goes out, however large.
    let budget = state.settings().alerts_page_bytes as usize;
    if format == AlertFormat::Json {
        let mut total = 0;
        let kept = page
            .alerts
            .iter()
            .take_while(|a| {
                total += json_len(a);
                total <= budget
            })
            .count();
        page.keep_first(kept.max(1));
        return Ok(Json(AlertList {
            alerts: page.alerts,
            next_cursor: page.next_cursor,
        })
        .into_response());
    }
    Ok(lines(page, format, budget))
}

/// Alerts as lines in a SIEM's format, no more than `budget` bytes of them (one at least), with
/// the next page's cursor in `x-next-cursor`.
fn lines(mut page: AlertPage, format: AlertFormat, budget: usize) -> Response {
    let (body, kept) = render_within(&page.alerts, format, &export_context(), budget);
    page.keep_first(kept);
    let mut response = ([(header::CONTENT_TYPE, format.content_type_many())], body).into_response();
    if let Some(cursor) = page
        .next_cursor
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response.headers_mut().insert("x-next-cursor", cursor);
    }
    response
}

/// The SIEM format named in an export path; `json` is not one (`GET /v1/alerts` answers it).
fn export_format(format: Result<Path<String>, PathRejection>) -> Result<AlertFormat, ApiError> {
    format
        .ok()
        .and_then(|Path(f)| AlertFormat::parse(&f))
        .filter(|&f| f != AlertFormat::Json)
        .ok_or_else(|| {
            ApiError::new(
                ProblemCode::InvalidParameter,
                "format must be one of ecs, ocsf, cef, splunk_hec",
            )
            .with_field("format")
        })
}

/// Export alerts to a SIEM: a page of alerts, newest first, one document per line.
///
/// `ecs`, `ocsf` and `splunk_hec` answer NDJSON (`application/x-ndjson`), `cef` answers CEF
/// lines (`text/plain`): either way text to hand to the SIEM as it is, never JSON to parse
/// whole. The filters and paging are those of `GET /v1/alerts`; the next page's cursor is in
/// the `x-next-cursor` header (absent on the last page). `GET /v1/alerts?format=` answers the
/// same.
#[utoipa::path(get, path = "/v1/alerts/export/{format}", tag = "alerts",
    params(("format" = inline(ExportFormatView), Path, description = "The SIEM's format"), ExportQuery),
    responses(
        (status = 200, content(
            (String = "application/x-ndjson"),
            (String = "text/plain"),
        ), headers(
            ("x-next-cursor" = String, description = "Pass as `cursor` for the next page; absent on the last page"),
        ), description = "NDJSON for ecs, ocsf and splunk_hec; CEF lines (text) for cef"),
        BadParameter,
    ))]
pub async fn export(
    State(state): State<AppState>,
    format: Result<Path<String>, PathRejection>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let format = export_format(format)?;
    let query = super::query(query)?.alert_query()?;
    let page = alerts::list(&state, query).await?;
    Ok(lines(
        page,
        format,
        state.settings().alerts_page_bytes as usize,
    ))
}

/// Export one alert to a SIEM: its document in that format as one line.
///
/// As `GET /v1/alerts/export/{format}` answers it (NDJSON for ecs, ocsf and splunk_hec, a CEF
/// line for cef); `GET /v1/alerts/{id}?format=` answers the same document as JSON or text.
#[utoipa::path(get, path = "/v1/alerts/{id}/export/{format}", tag = "alerts",
    params(
        ("id" = String, Path, description = "Alert id"),
        ("format" = inline(ExportFormatView), Path, description = "The SIEM's format"),
    ),
    responses(
        (status = 200, content(
            (String = "application/x-ndjson"),
            (String = "text/plain"),
        ), description = "One NDJSON line for ecs, ocsf and splunk_hec; one CEF line for cef"),
        BadParameter,
        NotFound,
    ))]
pub async fn export_one(
    State(state): State<AppState>,
    Path((id, format)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let format = export_format(Ok(Path(format)))?;
    let (alert, _) = alerts::get(&state, &id, false)
        .await?
        .ok_or_else(|| no_such_alert(&id))?;
    let one = AlertPage {
        alerts: vec![alert],
        next_cursor: None,
    };
    Ok(lines(one, format, usize::MAX))
}

fn export_context() -> ExportContext<'static> {
    crate::siem::local_context()
}

/// One alert with how its webhook deliveries are going.
#[derive(Serialize, ToSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    #[schema(value_type = AlertView)]
    pub alert: Alert,
    /// One entry per webhook sink the alert is owed to, by sink name; absent when the alert was
    /// raised with no sink configured. Only in the `json` format: SIEM formats stay as exported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryStateView>,
}

fn one(alert: Alert, deliveries: Vec<DeliveryState>, format: Option<AlertFormat>) -> Response {
    match format.unwrap_or(AlertFormat::Json) {
        AlertFormat::Json => Json(AlertDetail {
            alert,
            deliveries: deliveries.into_iter().map(Into::into).collect(),
        })
        .into_response(),
        format => (
            [(header::CONTENT_TYPE, format.content_type())],
            render_one(&alert, format, &export_context()),
        )
            .into_response(),
    }
}

/// One alert, in our JSON or a SIEM's format (`?format=ecs|ocsf|cef|splunk_hec`).
///
/// The JSON form adds `deliveries`: per webhook sink, whether the alert was delivered, how
/// many attempts it took, the last error and when the next attempt is due.
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id"), FormatQuery),
    responses(
        (status = 200, content(
            (AlertDocument = "application/json"),
            (String = "text/plain"),
        ), description = "The alert; with `format`, the SIEM's document for it"),
        BadParameter,
        NotFound,
    ))]
pub async fn get_alert(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = super::query(query)?;
    let json = matches!(q.format, None | Some(AlertFormat::Json));
    let (alert, deliveries) = alerts::get(&state, &id, json)
        .await?
        .ok_or_else(|| no_such_alert(&id))?;
    Ok(one(alert, deliveries, q.format))
}

/// Acknowledge an alert (idempotent: a second ack keeps the first time).
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses(
        (status = 200, body = AlertView),
        NotFound,
    ))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let alert = alerts::acknowledge(&state, &id).await?;
    alert.map(Json).ok_or_else(|| no_such_alert(&id))
}

/// An analyst's word on an alert.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    pub verdict: VerdictView,
    /// Free text, at most 2000 characters.
    #[schema(example = "nightly backup to the new NAS")]
    pub note: Option<String>,
    /// A suppression rule to create with the verdict, as `POST /v1/suppressions` takes it;
    /// `detector` and `entity` default to the alert's (no `entity` when it names a `cidr`),
    /// `reason` to the note.
    #[schema(value_type = Option<NewSuppressionView>)]
    pub suppress: Option<NewRule>,
}

/// The alert with the verdict added, and the rule created with it.
#[derive(Serialize, ToSchema)]
pub struct FeedbackAnswer {
    #[serde(flatten)]
    #[schema(value_type = AlertView)]
    pub alert: Alert,
    /// The suppression rule `suppress` created (absent without `suppress`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppression: Option<CreatedSuppressionView>,
}

/// Record an analyst's verdict on an alert: `true_positive`, `false_positive` or `benign`,
/// with a note. It is kept with the API key that gave it and the time, and shown on the alert
/// (and in its exports).
///
/// With `suppress`, a suppression rule is created too (the same checks and errors as `POST
/// /v1/suppressions`, fields named `suppress.…`; nothing is kept when it is refused), and the
/// incidents it covers, this alert's included, are resolved at once: the answer adds
/// `suppression`, the rule with `resolved_alerts`. An alert without an entity needs
/// `suppress.entity` or `suppress.cidr`.
#[utoipa::path(post, path = "/v1/alerts/{id}/feedback", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    request_body(content = FeedbackRequest, content_type = "application/json"),
    responses(
        (status = 200, body = FeedbackAnswer, description = "The alert with the verdict added"),
        FeedbackProblems,
        NotFound,
    ))]
pub async fn feedback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    client: Option<Extension<ClientId>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<FeedbackAnswer>, ApiError> {
    let body = super::whole_json_body(&state, &headers, body, "verdicts").await?;
    let request: FeedbackRequest = super::json_of(&body)?;
    if request
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(ApiError::invalid_value(format!(
            "note is at most {MAX_NOTE_CHARS} characters"
        ))
        .with_field("note"));
    }
    let client = client.map(|Extension(ClientId(id))| id);
    let by = match &client {
        Some(id) => format!("key-{}", &id[..id.len().min(16)]),
        None => "anonymous".to_owned(),
    };
    let suppress = request.suppress.map(|rule| alerts::Suppress {
        rule,
        created_by: client,
    });
    let verdict = (request.verdict.into(), request.note);
    let judged = alerts::feedback(&state, &id, verdict, by, suppress).await?;
    let judged = judged.ok_or_else(|| no_such_alert(&id))?;
    Ok(Json(FeedbackAnswer {
        alert: judged.alert,
        suppression: judged
            .suppression
            .map(|c| CreatedSuppressionView::of(c, Utc::now())),
    }))
}

fn no_such_alert(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::new(
        ProblemCode::NoSuchAlert,
        format!("there is no alert {shown:?}"),
    )
}
