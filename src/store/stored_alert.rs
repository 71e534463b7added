//! The JSON body of an alert row: its own versioned shape, so changing the domain `Alert`, the API or a SIEM format cannot change what is stored.
//!
//! **Format 1** is the alert as every build before this type wrote it (the domain `Alert`
//! serialised with serde_json), which had no version field; such rows decode as format 1.
//! Rows written now are format 1 with `"format_version":1` as their first key and are
//! otherwise byte for byte what those builds wrote, so a build from before the field still
//! reads them (it ignores unknown keys). A row whose format is newer than this build knows is
//! a decode error, never a silent misreading.
//!
//! `detector` (the detector that raised the alert) was added to format 1 as an optional last
//! key: absent for the detector `default`, so rows of `default` stay byte for byte what earlier
//! builds wrote and every row they wrote reads as `default`; an earlier build reading a row of
//! another detector ignores the key (it reads the alert, not its detector).
//!
//! **Format 2** adds, as optional last keys, what incidents and feedback need: `entity`, `count`,
//! `first_seen`, `last_seen`, `max_severity`, `resolved_at`, `notified_severity`,
//! `notified_at`, `feedback`, a record's `entity`, and the status `resolved`. A row is written
//! as format 2 only when it has one of them (an incident, or an alert with feedback); a batch
//! alert without feedback is still written as format 1, byte for byte, so earlier builds keep
//! reading it, and refuse (rather than misread) a format 2 row.
//!
//! `omitted` (what an alert left out past `--max-alert-entities`: `{"entities":N,"records":M}`)
//! was added to format 2 as an optional last key, written only when something was left out
//! (only incidents are capped, and they are format 2 already); a build from before the key
//! reads such a row and ignores it.
//!
//! Changing the stored shape otherwise means a new format number, a reader for the old one, and a test
//! that old rows still decode (see `tests/fixtures/alerts-v1.*`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::alerts::{Alert, AlertRecord, AlertStatus, Feedback, Omitted, Verdict};
use super::detectors::DEFAULT_DETECTOR;
use crate::detector::explain::{Direction, FeatureContribution};
use crate::detector::model::BatchSummary;

/// The body format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;

/// An alert as its row's `body` holds it. Written, it borrows the alert's text and maps
/// (nothing is copied on the way to JSON); read, it owns them.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredAlert<'a> {
    #[serde(default)]
    format_version: FormatVersion,
    id: Cow<'a, str>,
    created_at: DateTime<Utc>,
    model_version: u64,
    severity: u8,
    status: StoredStatus,
    acknowledged_at: Option<DateTime<Utc>>,
    reason: Cow<'a, str>,
    summary: StoredSummary,
    records: Vec<StoredRecord<'a>>,
    #[serde(
        default = "default_detector",
        skip_serializing_if = "is_default_detector"
    )]
    detector: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entity: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_severity: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notified_severity: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notified_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    feedback: Vec<StoredFeedback<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    omitted: Option<StoredOmitted>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct StoredOmitted {
    entities: u64,
    records: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredFeedback<'a> {
    verdict: StoredVerdict,
    note: Option<Cow<'a, str>>,
    by: Cow<'a, str>,
    at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredVerdict {
    TruePositive,
    FalsePositive,
    Benign,
}

fn default_detector() -> Cow<'static, str> {
    Cow::Borrowed(DEFAULT_DETECTOR)
}

fn is_default_detector(d: &str) -> bool {
    d == DEFAULT_DETECTOR
}

/// A known body format: 1 when the row has no `format_version` (written before the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
struct FormatVersion(u32);

impl Default for FormatVersion {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<u32> for FormatVersion {
    type Error = String;

    fn try_from(v: u32) -> Result<Self, String> {
        if (1..=FORMAT_VERSION).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!(
                "body format_version {v} is not one this build reads (1 to {FORMAT_VERSION}); \
                 a newer build wrote it"
            ))
        }
    }
}

impl From<FormatVersion> for u32 {
    fn from(v: FormatVersion) -> u32 {
        v.0
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredStatus {
    Open,
    Acknowledged,
    Resolved,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSummary {
    n_records: usize,
    n_anomalies: usize,
    anomaly_rate: f64,
    threshold: f64,
    max_severity: u8,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord<'a> {
    index: usize,
    timestamp: Option<Cow<'a, str>>,
    score: f64,
    severity: u8,
    values: Cow<'a, BTreeMap<String, f64>>,
    fields: Cow<'a, BTreeMap<String, String>>,
    explanation: Vec<StoredContribution<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entity: Option<Cow<'a, str>>,
}

#[skip_serializing_none]
#[derive(Debug, Serialize, Deserialize)]
struct StoredContribution<'a> {
    feature: Cow<'a, str>,
    value: f64,
    direction: StoredDirection,
    contribution: f64,
    normal_range: [f64; 2],
    #[serde(default)]
    expected: Option<f64>,
    #[serde(default)]
    band: Option<[f64; 2]>,
    #[serde(default)]
    summary: Option<Cow<'a, str>>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoredDirection {
    Above,
    Below,
    Within,
}

/// The body to store for `alert`, in the current format: `Err` names the first number JSON
/// cannot hold (NaN or an infinity, which serde_json writes as `null` and which would not read
/// back), so no body is stored that a later read would fail on.
pub(super) fn encode(alert: &Alert) -> Result<String, String> {
    let stored = StoredAlert::from(alert);
    if let Some(at) = stored.non_finite() {
        return Err(format!("{at} is not a finite number"));
    }
    let body = serde_json::to_string(&stored).map_err(|e| e.to_string())?;
    // What `non_finite` checks is every number a body holds; a debug build proves it on each
    // body written (the tests), a release build does not pay for a second parse.
    debug_assert!(
        decode(&body).is_ok(),
        "a checked body does not read back: {body}"
    );
    Ok(body)
}

impl StoredAlert<'_> {
    /// Where the first non-finite number is. Every `f64` of the format is checked here: a field
    /// added to the format with a float must be added too (the test
    /// `every_float_of_the_format_is_checked` sets each one to NaN).
    fn non_finite(&self) -> Option<String> {
        let bad = |x: f64| !x.is_finite();
        if bad(self.summary.anomaly_rate) {
            return Some("summary.anomaly_rate".into());
        }
        if bad(self.summary.threshold) {
            return Some("summary.threshold".into());
        }
        for (i, r) in self.records.iter().enumerate() {
            if bad(r.score) {
                return Some(format!("records[{i}].score"));
            }
            if let Some((name, _)) = r.values.iter().find(|(_, v)| bad(**v)) {
                return Some(format!("records[{i}].values.{name}"));
            }
            for c in &r.explanation {
                let floats = [
                    c.value,
                    c.contribution,
                    c.normal_range[0],
                    c.normal_range[1],
                ];
                let band = c.band.unwrap_or([0.0; 2]);
                if floats.into_iter().chain(c.expected).chain(band).any(bad) {
                    return Some(format!("records[{i}].explanation.{}", c.feature));
                }
            }
        }
        None
    }
}

/// The alert a stored body holds, whatever known format it is in.
pub(super) fn decode(body: &str) -> serde_json::Result<Alert> {
    serde_json::from_str::<StoredAlert>(body).map(Alert::from)
}

impl<'a> From<&'a Alert> for StoredAlert<'a> {
    fn from(a: &'a Alert) -> Self {
        let v2 = a.is_incident() || !a.feedback.is_empty() || a.status == AlertStatus::Resolved;
        let incident = a.is_incident();
        Self {
            format_version: FormatVersion(if v2 { 2 } else { 1 }),
            id: Cow::Borrowed(&a.id),
            created_at: a.created_at,
            model_version: a.model_version,
            severity: a.severity,
            status: match a.status {
                AlertStatus::Open => StoredStatus::Open,
                AlertStatus::Acknowledged => StoredStatus::Acknowledged,
                AlertStatus::Resolved => StoredStatus::Resolved,
            },
            acknowledged_at: a.acknowledged_at,
            reason: Cow::Borrowed(&a.reason),
            summary: StoredSummary {
                n_records: a.summary.n_records,
                n_anomalies: a.summary.n_anomalies,
                anomaly_rate: a.summary.anomaly_rate,
                threshold: a.summary.threshold,
                max_severity: a.summary.max_severity,
            },
            records: a.records.iter().map(StoredRecord::from).collect(),
            detector: Cow::Borrowed(&a.detector),
            entity: a.entity.as_deref().map(Cow::Borrowed),
            count: incident.then_some(a.count),
            first_seen: incident.then_some(a.first_seen),
            last_seen: incident.then_some(a.last_seen),
            max_severity: incident.then_some(a.max_severity),
            resolved_at: a.resolved_at,
            notified_severity: a.notified.map(|(s, _)| s),
            notified_at: a.notified.map(|(_, t)| t),
            feedback: a
                .feedback
                .iter()
                .map(|f| StoredFeedback {
                    verdict: match f.verdict {
                        Verdict::TruePositive => StoredVerdict::TruePositive,
                        Verdict::FalsePositive => StoredVerdict::FalsePositive,
                        Verdict::Benign => StoredVerdict::Benign,
                    },
                    note: f.note.as_deref().map(Cow::Borrowed),
                    by: Cow::Borrowed(&f.by),
                    at: f.at,
                })
                .collect(),
            omitted: a.omitted.map(|o| StoredOmitted {
                entities: o.entities,
                records: o.records,
            }),
        }
    }
}

impl<'a> From<&'a AlertRecord> for StoredRecord<'a> {
    fn from(r: &'a AlertRecord) -> Self {
        Self {
            index: r.index,
            timestamp: r.timestamp.as_deref().map(Cow::Borrowed),
            score: r.score,
            severity: r.severity,
            values: Cow::Borrowed(&r.values),
            fields: Cow::Borrowed(&r.fields),
            explanation: r
                .explanation
                .iter()
                .map(|c| StoredContribution {
                    feature: Cow::Borrowed(&c.feature),
                    value: c.value,
                    direction: match c.direction {
                        Direction::Above => StoredDirection::Above,
                        Direction::Below => StoredDirection::Below,
                        Direction::Within => StoredDirection::Within,
                    },
                    contribution: c.contribution,
                    normal_range: c.normal_range,
                    expected: c.expected,
                    band: c.band,
                    summary: c.summary.as_deref().map(Cow::Borrowed),
                })
                .collect(),
            entity: r.entity.as_deref().map(Cow::Borrowed),
        }
    }
}

impl From<StoredAlert<'_>> for Alert {
    fn from(s: StoredAlert<'_>) -> Self {
        let StoredSummary {
            n_records,
            n_anomalies,
            anomaly_rate,
            threshold,
            max_severity,
        } = s.summary;
        let notified = s.notified_severity.zip(s.notified_at);
        Alert {
            entity: s.entity.map(Cow::into_owned),
            count: s.count.unwrap_or(1),
            first_seen: s.first_seen.unwrap_or(s.created_at),
            last_seen: s.last_seen.unwrap_or(s.created_at),
            max_severity: s.max_severity.unwrap_or(s.severity),
            resolved_at: s.resolved_at,
            notified,
            policy: None,
            omitted: s.omitted.map(|o| Omitted {
                entities: o.entities,
                records: o.records,
            }),
            feedback: s
                .feedback
                .into_iter()
                .map(|f| Feedback {
                    verdict: match f.verdict {
                        StoredVerdict::TruePositive => Verdict::TruePositive,
                        StoredVerdict::FalsePositive => Verdict::FalsePositive,
                        StoredVerdict::Benign => Verdict::Benign,
                    },
                    note: f.note.map(Cow::into_owned),
                    by: f.by.into_owned(),
                    at: f.at,
                })
                .collect(),
            id: s.id.into_owned(),
            created_at: s.created_at,
            model_version: s.model_version,
            detector: s.detector.into_owned(),
            severity: s.severity,
            status: match s.status {
                StoredStatus::Open => AlertStatus::Open,
                StoredStatus::Acknowledged => AlertStatus::Acknowledged,
                StoredStatus::Resolved => AlertStatus::Resolved,
            },
            acknowledged_at: s.acknowledged_at,
            reason: s.reason.into_owned(),
            summary: BatchSummary {
                n_records,
                n_anomalies,
                anomaly_rate,
                threshold,
                max_severity,
            },
            records: s.records.into_iter().map(AlertRecord::from).collect(),
        }
    }
}

impl From<StoredRecord<'_>> for AlertRecord {
    fn from(r: StoredRecord<'_>) -> Self {
        AlertRecord {
            index: r.index,
            timestamp: r.timestamp.map(Cow::into_owned),
            score: r.score,
            severity: r.severity,
            values: r.values.into_owned(),
            fields: r.fields.into_owned(),
            explanation: r
                .explanation
                .into_iter()
                .map(|c| FeatureContribution {
                    feature: c.feature.into_owned(),
                    value: c.value,
                    direction: match c.direction {
                        StoredDirection::Above => Direction::Above,
                        StoredDirection::Below => Direction::Below,
                        StoredDirection::Within => Direction::Within,
                    },
                    contribution: c.contribution,
                    normal_range: c.normal_range,
                    expected: c.expected,
                    band: c.band,
                    summary: c.summary.map(Cow::into_owned),
                })
                .collect(),
            entity: r.entity.map(Cow::into_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four bodies written by the code before this type existed (format 1, no version field).
    const V1_BODIES: &str = include_str!("../../tests/fixtures/alerts-v1.ndjson");

    fn v1_bodies() -> Vec<&'static str> {
        let bodies: Vec<&str> = V1_BODIES.lines().collect();
        assert_eq!(bodies.len(), 4);
        bodies
    }

    #[test]
    fn a_row_from_before_the_version_field_reads_back_byte_for_byte_with_the_version_in_front() {
        for old in v1_bodies() {
            assert!(!old.contains("format_version"));
            let alert = decode(old).unwrap_or_else(|e| panic!("{e}: {old}"));
            let new = encode(&alert).unwrap();
            assert_eq!(new, format!("{{\"format_version\":1,{}", &old[1..]));
            assert_eq!(decode(&new).unwrap(), alert);
        }
    }

    #[test]
    fn the_detector_is_stored_only_when_it_is_not_default() {
        let old = v1_bodies()[0];
        let mut alert = decode(old).unwrap();
        assert_eq!(
            alert.detector, "default",
            "rows from before detectors are default's"
        );
        alert.detector = "zeek-hosts".into();
        let body = encode(&alert).unwrap();
        assert!(body.ends_with(r#","detector":"zeek-hosts"}"#), "{body}");
        assert_eq!(decode(&body).unwrap(), alert);
    }

    #[test]
    fn what_an_alert_left_out_is_stored_as_a_last_key_only_when_there_is_some() {
        let old = v1_bodies()[0];
        let mut alert = decode(old).unwrap();
        assert_eq!(alert.omitted, None);
        assert!(!encode(&alert).unwrap().contains("omitted"));
        alert.entity = Some("10.0.0.66".into());
        alert.omitted = Some(Omitted {
            entities: 99_000,
            records: 99_500,
        });
        let body = encode(&alert).unwrap();
        assert!(
            body.ends_with(r#","omitted":{"entities":99000,"records":99500}}"#),
            "{body}"
        );
        assert_eq!(decode(&body).unwrap(), alert);
    }

    #[test]
    fn an_explicit_format_1_reads_and_an_unknown_format_is_refused() {
        let old = v1_bodies()[0];
        let explicit = format!("{{\"format_version\":1,{}", &old[1..]);
        assert_eq!(decode(&explicit).unwrap(), decode(old).unwrap());
        for bad in [0, 3, 99] {
            let body = format!("{{\"format_version\":{bad},{}", &old[1..]);
            let err = decode(&body).unwrap_err().to_string();
            assert!(err.contains(&format!("format_version {bad}")), "{err}");
        }
    }

    #[test]
    fn every_float_of_the_format_is_checked() {
        let mut alert = decode(v1_bodies()[0]).unwrap();
        let c = &mut alert.records[0].explanation[0];
        c.expected = Some(1.0);
        c.band = Some([0.5, 2.0]);
        encode(&alert).expect("finite numbers encode");
        type Set = fn(&mut Alert, f64);
        let positions: [(&str, Set); 11] = [
            ("summary.anomaly_rate", |a, x| a.summary.anomaly_rate = x),
            ("summary.threshold", |a, x| a.summary.threshold = x),
            ("records[0].score", |a, x| a.records[0].score = x),
            ("records[0].values.connections", |a, x| {
                a.records[0].values.insert("connections".into(), x);
            }),
            ("explanation.bytes_sent", |a, x| {
                a.records[0].explanation[0].value = x
            }),
            ("explanation.bytes_sent", |a, x| {
                a.records[0].explanation[0].contribution = x
            }),
            ("explanation.bytes_sent", |a, x| {
                a.records[0].explanation[0].normal_range[0] = x
            }),
            ("explanation.bytes_sent", |a, x| {
                a.records[0].explanation[0].normal_range[1] = x
            }),
            ("explanation.bytes_sent", |a, x| {
                a.records[0].explanation[0].expected = Some(x)
            }),
            ("explanation.bytes_sent", |a, x| {
                a.records[0].explanation[0].band = Some([x, 2.0])
            }),
            ("explanation.bytes_sent", |a, x| {
                a.records[0].explanation[0].band = Some([0.5, x])
            }),
        ];
        for (at, set) in positions {
            for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let mut bad = alert.clone();
                set(&mut bad, x);
                let err = encode(&bad).expect_err(at);
                assert!(err.contains(at), "{at}: {err}");
            }
        }
    }
}
