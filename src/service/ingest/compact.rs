//! A closed window as stored: its result in a compact binary form (postcard), kept as text
//! (`~` then base64: the `body` column is text on both backends, and a body that is not JSON
//! needs no schema change), its JSON built only when it is listed. What the row's columns
//! hold already is not repeated: the window start (`start_s`: a Zeek window's `timestamp` is
//! its text), the entity (the `entity` column, `''` for none) and `closed_at` to the
//! millisecond (`closed_at_ms`; the body keeps the nanoseconds within it). About 80 bytes of
//! text for a Zeek window without an explanation, where its JSON took about 350.
//!
//! A window stored before (or one this form cannot hold: a `closed_at` in a leap second) has
//! its JSON as its body (`{`…): listed as it is. Either way a listing answers, byte for byte,
//! what serialising the window's [`WindowResult`] writes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::WindowResult;
use crate::detector::explain::{Direction, FeatureContribution};
use crate::records::{RecordError, RecordErrorKind};
use crate::service::ServiceError;

/// The first character of a compact body (a JSON body starts with `{`).
const MARK: char = '~';
/// The encoding's version, the first byte of the decoded body.
const VERSION: u8 = 1;

/// A window's `timestamp`: the text of its start (`start_s`, whole seconds: a Zeek window), or
/// as written (a record's own time).
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Start<'a> {
    Secs,
    Text(Cow<'a, str>),
}

/// One feature's part in the window's score ([`FeatureContribution`], every field written).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Contribution<'a> {
    feature: Cow<'a, str>,
    value: f64,
    direction: Direction,
    contribution: f64,
    normal_range: [f64; 2],
    expected: Option<f64>,
    band: Option<[f64; 2]>,
    summary: Option<Cow<'a, str>>,
}

impl<'a> Contribution<'a> {
    fn of(c: &'a FeatureContribution) -> Self {
        // Every field named: a field added to the explanation fails to compile here.
        let FeatureContribution {
            feature,
            value,
            direction,
            contribution,
            normal_range,
            expected,
            band,
            summary,
        } = c;
        Self {
            feature: Cow::Borrowed(feature),
            value: *value,
            direction: *direction,
            contribution: *contribution,
            normal_range: *normal_range,
            expected: *expected,
            band: *band,
            summary: summary.as_deref().map(Cow::Borrowed),
        }
    }

    fn owned(self) -> FeatureContribution {
        FeatureContribution {
            feature: self.feature.into_owned(),
            value: self.value,
            direction: self.direction,
            contribution: self.contribution,
            normal_range: self.normal_range,
            expected: self.expected,
            band: self.band,
            summary: self.summary.map(Cow::into_owned),
        }
    }
}

/// A [`WindowResult`] less what its row's columns hold.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Compact<'a> {
    pub(super) start: Start<'a>,
    /// The row's `entity` column is the window's entity (else it has none).
    pub(super) entity: bool,
    pub(super) score: f64,
    pub(super) is_anomaly: bool,
    pub(super) severity: u8,
    pub(super) explanation: Option<Vec<Contribution<'a>>>,
    pub(super) bytes_sent: Option<f64>,
    pub(super) bytes_received: Option<f64>,
    pub(super) connections: Option<f64>,
    pub(super) active_sessions: Option<f64>,
    pub(super) values: Option<Cow<'a, BTreeMap<String, f64>>>,
    pub(super) fields: Option<Cow<'a, BTreeMap<String, String>>>,
    pub(super) model_version: u64,
    /// `closed_at`'s nanoseconds within its millisecond (`closed_at_ms`).
    pub(super) closed_sub_ms: u32,
    pub(super) suppressed: Option<Cow<'a, str>>,
}

/// An explanation as the compact form keeps it.
pub(super) fn explanation(e: Option<&[FeatureContribution]>) -> Option<Vec<Contribution<'_>>> {
    e.map(|e| e.iter().map(Contribution::of).collect())
}

/// `closed_at`'s nanoseconds within its millisecond, when `closed_at_ms` and they give it
/// back exactly (not in a leap second).
pub(super) fn sub_ms(at: DateTime<Utc>) -> Option<u32> {
    let sub = at.timestamp_subsec_nanos() % 1_000_000;
    (closed_at(at.timestamp_millis(), sub) == Some(at)).then_some(sub)
}

fn closed_at(ms: i64, sub: u32) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)?.checked_add_signed(TimeDelta::nanoseconds(i64::from(sub)))
}

/// The text of a window start `start_s` (what a Zeek window's `timestamp` is).
fn start_text(start_s: i64) -> Option<String> {
    DateTime::from_timestamp(start_s, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn internal(what: String) -> ServiceError {
    ServiceError::Records(RecordError::new(RecordErrorKind::Internal, what))
}

impl<'a> Compact<'a> {
    /// `r` stored at `start_s`, in its compact form; `None` when the form cannot hold it (its
    /// JSON is stored instead).
    pub(super) fn of(r: &'a WindowResult, start_s: i64) -> Option<Self> {
        // Every field named: a field added to the result fails to compile here.
        let WindowResult {
            timestamp,
            entity,
            score,
            is_anomaly,
            severity,
            explanation: e,
            bytes_sent,
            bytes_received,
            connections,
            active_sessions,
            values,
            fields,
            model_version,
            closed_at,
            suppressed,
        } = r;
        let start = if start_text(start_s).as_deref() == Some(timestamp.as_str()) {
            Start::Secs
        } else {
            Start::Text(Cow::Borrowed(timestamp))
        };
        Some(Self {
            start,
            entity: entity.is_some(),
            score: *score,
            is_anomaly: *is_anomaly,
            severity: *severity,
            explanation: explanation(e.as_deref()),
            bytes_sent: *bytes_sent,
            bytes_received: *bytes_received,
            connections: *connections,
            active_sessions: *active_sessions,
            values: values.as_ref().map(Cow::Borrowed),
            fields: fields.as_ref().map(Cow::Borrowed),
            model_version: *model_version,
            closed_sub_ms: sub_ms(*closed_at)?,
            suppressed: suppressed.as_deref().map(Cow::Borrowed),
        })
    }

    /// The body stored: `~` and the base64 of the version byte and postcard.
    pub(super) fn body(&self) -> Result<String, ServiceError> {
        let mut bytes = vec![VERSION];
        postcard::to_io(self, &mut bytes)
            .map_err(|e| internal(format!("a window's compact form: {e}")))?;
        let mut out = String::with_capacity(1 + bytes.len().div_ceil(3) * 4);
        out.push(MARK);
        BASE64.encode_string(&bytes, &mut out);
        Ok(out)
    }

    /// The window this body of the row (`start_s`, `entity`, `closed_at_ms`) holds.
    fn result(self, start_s: i64, entity: &str, closed_at_ms: i64) -> Option<WindowResult> {
        let at = closed_at(closed_at_ms, self.closed_sub_ms)?;
        self.result_at(start_s, entity, at)
    }

    /// The window this form holds, closed at `closed_at` (its `closed_sub_ms` not read).
    pub(super) fn result_at(
        self,
        start_s: i64,
        entity: &str,
        closed_at: DateTime<Utc>,
    ) -> Option<WindowResult> {
        Some(WindowResult {
            timestamp: match self.start {
                Start::Secs => start_text(start_s)?,
                Start::Text(t) => t.into_owned(),
            },
            entity: self.entity.then(|| entity.to_owned()),
            score: self.score,
            is_anomaly: self.is_anomaly,
            severity: self.severity,
            explanation: self
                .explanation
                .map(|e| e.into_iter().map(Contribution::owned).collect()),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            connections: self.connections,
            active_sessions: self.active_sessions,
            values: self.values.map(Cow::into_owned),
            fields: self.fields.map(Cow::into_owned),
            model_version: self.model_version,
            closed_at,
            suppressed: self.suppressed.map(Cow::into_owned),
        })
    }
}

/// A stored window's JSON as listed: a JSON body as it is; a compact one (see the module doc)
/// as its [`WindowResult`] serialises.
pub(crate) fn listed(
    body: String,
    start_s: i64,
    entity: &str,
    closed_at_ms: i64,
) -> Result<String, ServiceError> {
    let Some(text) = body.strip_prefix(MARK) else {
        return Ok(body);
    };
    let unreadable =
        |why: String| internal(format!("a stored window ({start_s}, {entity:?}): {why}"));
    let bytes = BASE64.decode(text).map_err(|e| unreadable(e.to_string()))?;
    let (version, rest) = bytes
        .split_first()
        .ok_or_else(|| unreadable("empty".into()))?;
    if *version != VERSION {
        return Err(unreadable(format!(
            "format version {version} (this build reads {VERSION})"
        )));
    }
    let compact: Compact<'_> = postcard::from_bytes(rest).map_err(|e| unreadable(e.to_string()))?;
    let result = compact
        .result(start_s, entity, closed_at_ms)
        .ok_or_else(|| unreadable("a time out of range".into()))?;
    serde_json::to_string(&result).map_err(|e| unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ingest::tests::explanation as one_feature;
    use chrono::NaiveDate;

    /// Every kind of window, stored compactly and listed, reads byte for byte as its
    /// [`WindowResult`] serialises (what main stored as the body): a Zeek window with and
    /// without an explanation, ungrouped, a record with values and fields at a fractional
    /// time, an entity `""`, and `closed_at` with and without fractions of a millisecond.
    #[test]
    fn a_compact_window_lists_as_its_results_json() {
        let mut sparse = one_feature("bytes_sent 5 B; usual for \"10.0.0.1\" is 1–2 B");
        sparse.push(FeatureContribution {
            feature: "connections".into(),
            value: f64::MIN_POSITIVE,
            direction: Direction::Below,
            contribution: 0.0,
            normal_range: [-1.5, 1e300],
            expected: None,
            band: None,
            summary: None,
        });
        let instants = [
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 120_000_000).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 999_999_999).unwrap(),
            Utc::now(),
        ];
        let mut n = 0;
        for at in instants {
            for (entity, explanation, zeek, time) in [
                (None, None, true, "2024-01-01T00:05:00Z"),
                (
                    Some("10.0.0.1"),
                    Some(sparse.clone()),
                    true,
                    "2024-01-01T00:05:00Z",
                ),
                (Some(""), None, true, "2024-01-01T00:05:00Z"),
                (Some("10.0.0.2"), None, false, "2024-01-01T00:05:00.25Z"),
                (None, Some(sparse.clone()), false, "2024-01-01T00:05:00Z"),
            ] {
                let suppressed = entity.map(|_| "0192".to_owned());
                let (z, r) = (zeek.then_some(1.5e9), (!zeek).then_some(()));
                let result = WindowResult {
                    timestamp: time.into(),
                    entity: entity.map(str::to_owned),
                    score: 0.1 + 0.2,
                    is_anomaly: explanation.is_some(),
                    severity: 53,
                    explanation,
                    bytes_sent: z,
                    bytes_received: z.map(|v| v / 3.0),
                    connections: z,
                    active_sessions: z.map(|_| 0.0),
                    values: r.map(|()| [("bytes".to_owned(), 5.0), ("x".into(), -0.0)].into()),
                    fields: r.map(|()| [("src_ip".to_owned(), "10.0.0.2 \"é\"".to_owned())].into()),
                    model_version: 4,
                    closed_at: at,
                    suppressed,
                };
                let start = 1_704_067_500;
                let body = Compact::of(&result, start).unwrap().body().unwrap();
                let json = serde_json::to_string(&result).unwrap();
                assert!(body.starts_with(MARK) && body.len() < json.len(), "{body}");
                let column = entity.unwrap_or("");
                let shown = listed(body, start, column, at.timestamp_millis()).unwrap();
                assert_eq!(shown, json);
                // A body stored as JSON (before this form) is listed as it is.
                assert_eq!(listed(json.clone(), start, column, 0).unwrap(), json);
                // Closed in a leap second, which this form cannot hold: the same window comes
                // back whole with that `closed_at` (stored as its JSON, `scored.rs`).
                let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
                    .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
                    .unwrap()
                    .and_utc();
                assert_eq!(sub_ms(leap), None);
                let whole = Compact::of(&result, start).unwrap();
                let again = whole.result_at(start, column, leap).unwrap();
                assert_eq!(
                    again,
                    WindowResult {
                        closed_at: leap,
                        ..result.clone()
                    }
                );
                n += 1;
            }
        }
        assert_eq!(n, 25);
        // A Zeek window's start is not repeated in its body; a record's own time is.
        let zeek = WindowResult {
            timestamp: "2024-01-01T00:05:00Z".into(),
            entity: None,
            score: 0.5,
            is_anomaly: false,
            severity: 0,
            explanation: None,
            bytes_sent: Some(1.0),
            bytes_received: Some(1.0),
            connections: Some(1.0),
            active_sessions: Some(1.0),
            values: None,
            fields: None,
            model_version: 1,
            closed_at: instants[0],
            suppressed: None,
        };
        assert!(matches!(
            Compact::of(&zeek, 1_704_067_500).unwrap().start,
            Start::Secs
        ));
        assert!(matches!(
            Compact::of(&zeek, 1_704_067_501).unwrap().start,
            Start::Text(_)
        ));
    }

    #[test]
    fn a_damaged_compact_body_is_an_error_not_a_guess() {
        for body in ["~", "~!!", "~AA", "~Ag"] {
            assert!(listed(body.into(), 0, "", 0).is_err(), "{body}");
        }
    }
}
