//! What a raised alert is: [`Alert`], its records, status, feedback and incident policy, the
//! listing query and page, and the small rules every backend applies to one (its `status`
//! column, its feedback cap, when its latest event falls due). The SQLite backend and the
//! [`AlertStore`](super::alerts::AlertStore) trait are in `alerts.rs`, which re-exports these.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::alerts::Cursor;
use super::idempotency::KeyRecord;
use crate::detector::explain::FeatureContribution;
use crate::detector::model::BatchSummary;

/// Highest severity an alert or record can have.
pub const MAX_SEVERITY: u8 = 100;

/// Where an alert stands: raised, looked at, or (an incident only) over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Raised and not yet acknowledged.
    Open,
    /// Acknowledged by an operator; `acknowledged_at` says when.
    Acknowledged,
    /// An incident whose entity was quiet longer than its `close_after`; `resolved_at` says
    /// when. Batch alerts (no entity) are never resolved.
    Resolved,
}

impl AlertStatus {
    /// The wire spelling: `open`, `acknowledged` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }
}

/// How an entity's incident grows, notifies and ends: the detector's `alerting` block (the
/// service settings for the detector `default`), carried by a raised alert to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncidentPolicy {
    /// A quiet gap longer than this resolves the incident.
    pub close_after: Duration,
    /// An update raising `max_severity` by at least this much over what was last notified is
    /// delivered again (`escalated`).
    pub renotify_severity_step: u8,
    /// An update this long after the last notification is delivered again (`renotified`).
    pub renotify_after: Option<Duration>,
    /// Records an incident keeps across its batches (the most anomalous).
    pub top_records: usize,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        Self {
            close_after: Duration::from_secs(30 * 60),
            renotify_severity_step: 10,
            renotify_after: None,
            top_records: 10,
        }
    }
}

/// An analyst's word on an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    TruePositive,
    FalsePositive,
    Benign,
}

/// One verdict given on an alert, by whom and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub verdict: Verdict,
    /// Free text, at most [`MAX_NOTE_CHARS`] characters.
    pub note: Option<String>,
    /// The API key's name (`anonymous` when the service runs without keys).
    pub by: String,
    pub at: DateTime<Utc>,
}

/// Longest feedback note kept, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// Verdicts kept on one alert (the oldest go first).
pub const MAX_FEEDBACK: usize = 20;

/// An alert raised for a scored batch whose anomaly rate or top severity crossed the
/// configured limits.
///
/// Its serde form is what the API, the SIEM `json` export and webhooks show; rows store
/// their own versioned body (`stored_alert`), so changing this type does not change them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id: a UUID v7, so ids sort roughly by creation time.
    pub id: String,
    /// When the alert was raised (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// Version of the model that scored the batch.
    pub model_version: u64,
    /// The detector whose model scored the batch (`default` on the v1 paths).
    pub detector: String,
    /// Alert severity, 0–100: the highest record severity in the batch (an incident: in any
    /// of its batches, as `max_severity`).
    pub severity: u8,
    /// Open until acknowledged; an incident ends resolved.
    pub status: AlertStatus,
    /// When the alert was first acknowledged; absent while open.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Why the alert was raised, in words (an incident: its latest update's reason).
    pub reason: String,
    /// The scored batch as a whole (an incident: its latest batch).
    pub summary: BatchSummary,
    /// The most anomalous records, most anomalous first, each with its explanation (an
    /// incident: across all its batches).
    pub records: Vec<AlertRecord>,
    /// The entity (host) of an incident; null for a batch alert (records of no one entity).
    pub entity: Option<String>,
    /// Anomalous batches (or ingest calls closing anomalous windows) folded into the alert.
    pub count: u64,
    /// When its first and latest anomalous batch arrived.
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The highest severity the alert reached.
    pub max_severity: u8,
    /// When the incident was resolved (its last anomaly plus `close_after`).
    pub resolved_at: Option<DateTime<Utc>>,
    /// Analysts' verdicts, oldest first.
    pub feedback: Vec<Feedback>,
    /// The anomalous entities and records the batch's alert left out past
    /// `--max-alert-entities` (an incident: as of its latest update); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted: Option<Omitted>,
    /// What was last delivered: the max severity then, and when (incidents; the store keeps it).
    #[serde(skip)]
    pub notified: Option<(u8, DateTime<Utc>)>,
    /// How a new alert joins its entity's incident; set on a raised alert, never stored.
    #[serde(skip)]
    pub policy: Option<IncidentPolicy>,
}

impl Alert {
    /// A new open alert of the detector `default` created at `created_at`, with a fresh UUID v7 id.
    pub fn new(
        created_at: DateTime<Utc>,
        model_version: u64,
        severity: u8,
        reason: String,
        summary: BatchSummary,
        records: Vec<AlertRecord>,
    ) -> Self {
        let severity = severity.min(MAX_SEVERITY);
        Self {
            id: Uuid::now_v7().to_string(),
            created_at,
            model_version,
            detector: super::detectors::DEFAULT_DETECTOR.to_owned(),
            severity,
            status: AlertStatus::Open,
            acknowledged_at: None,
            reason,
            summary,
            records,
            entity: None,
            count: 1,
            first_seen: created_at,
            last_seen: created_at,
            max_severity: severity,
            resolved_at: None,
            feedback: Vec::new(),
            omitted: None,
            notified: None,
            policy: None,
        }
    }

    /// Whether this alert is an entity's incident (it can be updated and resolved).
    pub fn is_incident(&self) -> bool {
        self.entity.is_some()
    }

    /// A copy of this alert without its records (which a copy would spend most of its time on).
    pub fn without_records(&self) -> Alert {
        let Alert {
            id,
            created_at,
            model_version,
            detector,
            severity,
            status,
            acknowledged_at,
            reason,
            summary,
            records: _,
            entity,
            count,
            first_seen,
            last_seen,
            max_severity,
            resolved_at,
            feedback,
            omitted,
            notified,
            policy,
        } = self;
        Alert {
            id: id.clone(),
            created_at: *created_at,
            model_version: *model_version,
            detector: detector.clone(),
            severity: *severity,
            status: *status,
            acknowledged_at: *acknowledged_at,
            reason: reason.clone(),
            summary: summary.clone(),
            records: Vec::new(),
            entity: entity.clone(),
            count: *count,
            first_seen: *first_seen,
            last_seen: *last_seen,
            max_severity: *max_severity,
            resolved_at: *resolved_at,
            feedback: feedback.clone(),
            omitted: *omitted,
            notified: *notified,
            policy: *policy,
        }
    }
}

/// What an alert left out: the anomalous entities past `--max-alert-entities` (those with the
/// lowest scores) and their anomalous records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Omitted {
    pub entities: u64,
    pub records: u64,
}

/// One anomalous record of the batch that raised an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Position of the record in the scored batch (0-based).
    pub index: usize,
    /// The record's own timestamp, as sent, if it had one.
    pub timestamp: Option<String>,
    /// Anomaly score in (0, 1]; higher is more anomalous.
    pub score: f64,
    /// Record severity, 0–100.
    pub severity: u8,
    /// The record's feature values, by feature name.
    pub values: BTreeMap<String, f64>,
    /// String fields of the record echoed back (`src_ip`, `host`, ...), never used as features.
    pub fields: BTreeMap<String, String>,
    /// Features that drove the score, most important first.
    pub explanation: Vec<FeatureContribution>,
    /// The entity the record is about, when the batch names one per record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
}

/// Which alerts to list. `since` is inclusive and `until` exclusive, so consecutive windows
/// neither overlap nor leave gaps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertQuery {
    /// Only alerts created at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only alerts created strictly before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Only alerts at least this severe.
    pub min_severity: Option<u8>,
    /// Only alerts in this status.
    pub status: Option<AlertStatus>,
    /// Only alerts of this detector.
    pub detector: Option<String>,
    /// Only incidents of this entity.
    pub entity: Option<String>,
    /// Page size. Clamping to a sensible maximum is the caller's job; 0 is treated as 1.
    pub limit: usize,
    /// `next_cursor` of the previous page, to continue from there.
    pub cursor: Option<String>,
}

/// One page of alerts, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertPage {
    /// Alerts on this page, newest first.
    pub alerts: Vec<Alert>,
    /// Opaque cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl AlertPage {
    /// Keeps only the first `kept` alerts; the next page then starts after the last one kept.
    pub fn keep_first(&mut self, kept: usize) {
        if kept >= self.alerts.len() {
            return;
        }
        self.alerts.truncate(kept);
        // Stored alerts passed `insert`'s check that their time fits the nanosecond column.
        self.next_cursor = self.alerts.last().and_then(|a| {
            let created_at_ns = a.created_at.timestamp_nanos_opt()?;
            Some(
                Cursor {
                    created_at_ns,
                    id: a.id.clone(),
                }
                .encode(),
            )
        });
    }
}

/// A new alert, the webhook sinks owed a delivery of it, and the idempotency key of the
/// request that raised it, if any: what [`AlertStore::insert_keyed`] stores in one transaction.
#[derive(Clone, Debug)]
pub struct NewAlert<'a> {
    /// Owned when the caller is done with it: an incident alert's records then move into its
    /// entities' updates instead of being copied.
    pub alert: Cow<'a, Alert>,
    pub sinks: &'a [String],
    pub key: Option<&'a KeyRecord>,
}

/// The `status` column's value for an alert: `acknowledged` once acknowledged, else `open`
/// (whether it is resolved is `resolved_at_ns`).
pub(super) fn column_status(alert: &Alert) -> &'static str {
    match alert.acknowledged_at {
        Some(_) => "acknowledged",
        None => "open",
    }
}

/// Adds a verdict, keeping the latest [`MAX_FEEDBACK`].
pub(super) fn with_feedback(alert: &mut Alert, feedback: Feedback) {
    alert.feedback.push(feedback);
    let excess = alert.feedback.len().saturating_sub(MAX_FEEDBACK);
    alert.feedback.drain(..excess);
}

/// When a delivery of the alert's latest event falls due: at once (its latest anomaly, or its
/// resolution).
pub(super) fn event_due(alert: &Alert) -> DateTime<Utc> {
    alert
        .resolved_at
        .unwrap_or(alert.last_seen)
        .max(alert.last_seen)
}
