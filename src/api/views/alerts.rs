//! Alert shapes: mirrors of the alert (whose JSON is also the SIEM `json` export) and views of webhook delivery states.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
#[cfg(test)]
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use super::scoring::{BatchSummaryView, FeatureContributionView};
use crate::store::outbox::{DeliveryState, DeliveryStatus};

/// Where an alert stands: `open`, `acknowledged`, or (an incident whose entity went quiet
/// past `close_after`) `resolved`.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = AlertStatus)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatusView {
    Open,
    Acknowledged,
    Resolved,
}

/// An analyst's verdict on an alert.
#[derive(ToSchema, serde::Deserialize)]
#[cfg_attr(test, derive(Serialize))]
#[schema(as = Verdict)]
#[serde(rename_all = "snake_case")]
pub enum VerdictView {
    TruePositive,
    FalsePositive,
    Benign,
}

impl From<VerdictView> for crate::store::alerts::Verdict {
    fn from(v: VerdictView) -> Self {
        match v {
            VerdictView::TruePositive => Self::TruePositive,
            VerdictView::FalsePositive => Self::FalsePositive,
            VerdictView::Benign => Self::Benign,
        }
    }
}

/// A verdict given on an alert.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = Feedback)]
pub struct FeedbackView {
    pub verdict: VerdictView,
    /// The analyst's note.
    #[schema(example = "nightly backup to the new NAS")]
    pub note: Option<String>,
    /// Who gave it: `key-` and the first 16 hex digits of the API key's client id (the
    /// digest idempotency keys are scoped by; keys have no names), or `anonymous` without keys.
    #[schema(example = "key-3f2a9c0d1e4b5a69")]
    pub by: String,
    /// When it was given.
    pub at: DateTime<Utc>,
}

/// An alert raised for a scored batch whose anomaly rate or top severity crossed the
/// configured limits.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = Alert)]
pub struct AlertView {
    /// Unique id: a UUID v7, so ids sort roughly by creation time.
    #[schema(example = "01928f6e-7c3a-7d41-9b2e-5f0c8a1d2e3f")]
    pub id: String,
    /// When the alert was raised (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// Version of the model that scored the batch.
    #[schema(example = 3)]
    pub model_version: u64,
    /// The detector that raised it (`default` for the v1 paths).
    #[schema(example = "default")]
    pub detector: String,
    /// Alert severity, 0–100: the highest record severity in the batch (an incident: in any
    /// of its batches, as `max_severity`).
    #[schema(maximum = 100, example = 87)]
    pub severity: u8,
    /// Open until acknowledged; an incident ends `resolved`.
    pub status: AlertStatusView,
    /// When the alert was first acknowledged; absent while open.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Why the alert was raised, in words.
    #[schema(example = "anomaly rate 12.5% exceeds 10.0%")]
    pub reason: String,
    /// The scored batch as a whole.
    pub summary: BatchSummaryView,
    /// The most anomalous records, most anomalous first, each with its explanation (an
    /// incident: across all its batches, at most `--alert-top-records`).
    pub records: Vec<AlertRecordView>,
    /// The entity (host) of an incident: one alert per (detector, entity) that anomalous
    /// batches or windows of that entity update. Null for a batch alert.
    #[schema(example = "10.0.0.66")]
    pub entity: Option<String>,
    /// Anomalous batches (or ingest calls closing anomalous windows) folded into the alert.
    #[schema(example = 15)]
    pub count: u64,
    /// When the first anomalous batch arrived.
    pub first_seen: DateTime<Utc>,
    /// When the latest anomalous batch arrived.
    pub last_seen: DateTime<Utc>,
    /// The highest severity the alert reached.
    #[schema(maximum = 100, example = 91)]
    pub max_severity: u8,
    /// When the incident was resolved: its last anomaly plus `close_after`.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Analysts' verdicts (`POST /v1/alerts/{id}/feedback`), oldest first.
    pub feedback: Vec<FeedbackView>,
    /// Present when the batch's alert named more anomalous entities than
    /// `--max-alert-entities`: those with the highest scores became incidents, the others
    /// were left out (of the alert and of the store; still scored and answered). An incident
    /// shows it as of its latest update.
    #[cfg_attr(test, serde(default, skip_serializing_if = "Option::is_none"))]
    pub omitted: Option<OmittedView>,
}

/// What an alert left out past `--max-alert-entities`.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = AlertOmitted)]
pub struct OmittedView {
    /// Anomalous entities left out (those with the lowest scores).
    #[schema(example = 99000)]
    pub entities: u64,
    /// Their anomalous records (windows), left out with them.
    #[schema(example = 99000)]
    pub records: u64,
}

/// One anomalous record of the batch that raised an alert.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = AlertRecord)]
pub struct AlertRecordView {
    /// Position of the record in the scored batch (0-based).
    pub index: usize,
    /// The record's own timestamp, as sent, if it had one.
    #[schema(example = "2024-01-05T04:00:00Z")]
    pub timestamp: Option<String>,
    /// Anomaly score in (0, 1]; higher is more anomalous.
    #[schema(example = 0.71)]
    pub score: f64,
    /// Record severity, 0–100.
    #[schema(maximum = 100, example = 87)]
    pub severity: u8,
    /// The record's feature values, by feature name.
    pub values: BTreeMap<String, f64>,
    /// String fields of the record echoed back (`src_ip`, `host`, ...), never used as features.
    pub fields: BTreeMap<String, String>,
    /// Features that drove the score, most important first.
    pub explanation: Vec<FeatureContributionView>,
    /// The entity the record is about, when its batch names one per record.
    #[cfg_attr(test, serde(default, skip_serializing_if = "Option::is_none"))]
    pub entity: Option<String>,
}

/// The export formats, as named in `?format=`.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = AlertFormat)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormatView {
    Json,
    Ecs,
    Ocsf,
    Cef,
    SplunkHec,
}

/// A SIEM's format, for the export operations: every export format but `json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = ExportFormat)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormatView {
    Ecs,
    Ocsf,
    Cef,
    SplunkHec,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = DeliveryStatus)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatusView {
    /// Not delivered yet; retried at `next_attempt_at`.
    Pending,
    /// The sink answered 2xx.
    Delivered,
    /// Given up after the sink's `max_attempts`.
    Failed,
}

impl From<DeliveryStatus> for DeliveryStatusView {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Delivered => Self::Delivered,
            DeliveryStatus::Failed => Self::Failed,
        }
    }
}

/// How the delivery of one alert to one webhook sink is going.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[schema(as = DeliveryState)]
pub struct DeliveryStateView {
    /// The sink's configured name.
    #[schema(example = "splunk")]
    pub sink: String,
    /// `pending`, `delivered` or `failed`.
    pub state: DeliveryStatusView,
    /// Attempts made so far (an attempt cut short by a shutdown does not count).
    #[schema(example = 1)]
    pub attempts: u32,
    /// Why the last attempt failed; null once delivered.
    #[schema(example = "HTTP 503 Service Unavailable")]
    pub last_error: Option<String>,
    /// HTTP status of the last answer, if the sink answered at all.
    #[schema(example = 200)]
    pub last_status: Option<u16>,
    /// When the next attempt is due (while one is in flight: when it counts as abandoned and is
    /// retried); null once delivered or failed.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the sink accepted the alert.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The alert's event this delivers, numbered from 0 (its opening).
    #[schema(example = 0)]
    pub seq: u32,
    /// `opened`, `escalated` (max severity up by the detector's step), `renotified` (after
    /// `renotify_after`) or `resolved`.
    #[schema(example = "opened")]
    pub event: String,
}

impl From<DeliveryState> for DeliveryStateView {
    fn from(d: DeliveryState) -> Self {
        Self {
            sink: d.sink,
            state: d.state.into(),
            attempts: d.attempts,
            last_error: d.last_error,
            last_status: d.last_status,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
            seq: d.seq,
            event: d.event.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::views::check::mirrors;
    use crate::siem::formats::AlertFormat;
    use crate::store::alerts::{Alert, AlertStatus};

    fn alert() -> Alert {
        crate::store::alerts::tests::alert(Utc.timestamp_opt(1_704_067_200, 5).unwrap(), 87)
    }

    #[test]
    fn an_alert_mirrors_the_domain_type_open_or_acknowledged() {
        let mut a = alert();
        a.records.push(crate::store::alerts::AlertRecord {
            timestamp: None,
            fields: BTreeMap::new(),
            explanation: Vec::new(),
            ..a.records[0].clone()
        });
        mirrors::<AlertView>(&a);
        a.status = AlertStatus::Acknowledged;
        a.acknowledged_at = Some(Utc.timestamp_opt(1_704_067_260, 0).unwrap());
        mirrors::<AlertView>(&a);
        a.entity = Some("10.0.0.66".into());
        a.records[0].entity = a.entity.clone();
        a.count = 15;
        a.status = AlertStatus::Resolved;
        a.resolved_at = Some(Utc.timestamp_opt(1_704_069_060, 0).unwrap());
        a.feedback.push(crate::store::alerts::Feedback {
            verdict: crate::store::alerts::Verdict::FalsePositive,
            note: Some("backup".into()),
            by: "anonymous".into(),
            at: Utc.timestamp_opt(1_704_069_000, 0).unwrap(),
        });
        mirrors::<AlertView>(&a);
        a.omitted = Some(crate::store::alerts::Omitted {
            entities: 99_000,
            records: 99_500,
        });
        mirrors::<AlertView>(&a);
        for status in [
            AlertStatus::Open,
            AlertStatus::Acknowledged,
            AlertStatus::Resolved,
        ] {
            mirrors::<AlertStatusView>(&status);
        }
    }

    #[test]
    fn the_export_format_is_every_format_but_json() {
        for format in AlertFormat::ALL {
            let name = serde_json::to_value(format).unwrap();
            let view = serde_json::from_value::<ExportFormatView>(name.clone());
            assert_eq!(view.is_ok(), format != AlertFormat::Json, "{name}");
        }
    }

    #[test]
    fn the_format_parameter_mirrors_every_export_format() {
        for format in AlertFormat::ALL {
            mirrors::<AlertFormatView>(&format);
        }
    }

    #[test]
    fn the_alert_schema_is_documented() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(AlertView::schema()).unwrap();
        let props = &schema["properties"];
        for field in [
            "id",
            "created_at",
            "severity",
            "status",
            "summary",
            "records",
        ] {
            assert!(
                props[field]["description"].is_string(),
                "{field} has no description: {schema}"
            );
        }
    }

    #[test]
    fn a_delivery_state_is_written_as_before_with_its_event_last() {
        let at = Utc.timestamp_opt(1_704_067_200, 0).unwrap();
        let pending = DeliveryState {
            sink: "splunk".into(),
            state: DeliveryStatus::Pending,
            attempts: 1,
            last_error: Some("HTTP 503 Service Unavailable".into()),
            last_status: Some(503),
            next_attempt_at: Some(at),
            delivered_at: None,
            seq: 2,
            event: crate::store::incidents::AlertEvent::Escalated,
        };
        // What the handler wrote when it serialised the store's type, then the event.
        assert_eq!(
            serde_json::to_string(&DeliveryStateView::from(pending)).unwrap(),
            r#"{"sink":"splunk","state":"pending","attempts":1,"last_error":"HTTP 503 Service Unavailable","last_status":503,"next_attempt_at":"2024-01-01T00:00:00Z","delivered_at":null,"seq":2,"event":"escalated"}"#
        );
        for (status, spelling) in [
            (DeliveryStatus::Pending, "pending"),
            (DeliveryStatus::Delivered, "delivered"),
            (DeliveryStatus::Failed, "failed"),
        ] {
            assert_eq!(
                serde_json::to_value(DeliveryStatusView::from(status)).unwrap(),
                spelling
            );
        }
    }
}
