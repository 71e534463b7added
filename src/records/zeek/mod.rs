//! Zeek conn logs (TSV or JSON lines) turned into per-window traffic records the detector scores.
//!
//! A conn log has one line per connection; the model scores one record per time window. This module
//! parses the log ([`parse_conn_log`]), buckets connections into windows ([`aggregate`]) and reads
//! the window records into a batch as any other body's records ([`read_zeek`]). It knows no HTTP.
//!
//! # What a window record holds
//!
//! Connections fall into the window `floor(ts / window) * window` (Unix seconds, so windows are
//! aligned to the epoch: hours start on the hour, days at 00:00 UTC), and, when grouped, into the
//! entity (`id.orig_h` or `id.resp_h`) of the connection. Per (window, entity):
//!
//! - `bytes_sent` = Σ `orig_bytes` (what the originators sent), `bytes_received` = Σ `resp_bytes`;
//!   an unset (`-`) or absent byte count counts as 0, as Zeek leaves it unset when it saw no payload.
//! - `connections` = the number of conn log lines.
//! - `active_sessions` = the number of distinct `(id.orig_h, id.resp_h, id.resp_p)`: the
//!   conversations (client to service) active in the window. We do not estimate concurrency from
//!   `duration` instead: `duration` is unset for many connections, and Zeek writes a connection
//!   when it ends, so a window's concurrency would depend on lines that arrive in later logs.
//!   Distinct conversations need only the required fields and, like the seed data's
//!   `active_sessions`, stay at or below `connections`; a scan or a beaconing burst moves them apart.
//!
//! Records are sorted by (window start, entity); entities sort as text.
//!
//! # Quiet windows are not records
//!
//! A window without connections is not emitted (no zero record). A log says nothing about the time
//! before its first line or after its last, and a silent window looks the same whether the network
//! was quiet or the sensor was down; zeros would teach a fitted model that "no traffic" is normal
//! (or flag every sensor restart), and with `group_by` they would invent a record for every host in
//! every window. Silence is better caught by monitoring the sensor. Note also that the first and
//! last windows of a log are usually partial (the capture began or ended inside them); send logs
//! that cover whole windows when those edges matter.
//!
//! # Errors
//!
//! A bad line is an error naming its 1-based line number in the body, header lines included, so a
//! client can find it with `sed -n Np`. Timestamps must lie between 1970 and 9999: Zeek's `ts` is
//! Unix time, an earlier one means a broken clock, and the window start must be RFC 3339 text.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::builder::{BatchBuilder, CellRef};
use super::error::{RecordError, RecordErrorKind, check_count};

pub mod aggregate;
mod json_line;
pub mod line;
#[cfg(test)]
mod oracle;
mod reader;
mod tsv_fast;

pub use aggregate::{Aggregator, Interner};
pub use line::{ConnLine, LineError, LineParser, LineSplitter, TsvHeader};
pub use reader::ZeekReader;
pub use tsv_fast::ConnFields;

/// Shortest and longest window: a second has too few connections to mean anything below it, and
/// past a week a batch holds too few records to score.
const MIN_WINDOW_SECS: u64 = 1;
const MAX_WINDOW_SECS: u64 = 7 * 86_400;
/// 10000-01-01T00:00:00Z: RFC 3339 years have four digits.
pub(crate) const MAX_TS_SECS: i64 = 253_402_300_800;

/// The length of an aggregation window, 1s to 7d. Parses `30s`, `5m`, `90m`, `1h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window(Duration);

impl Window {
    /// A window of `secs` seconds, or an error when it is outside 1s..=7d.
    pub fn from_secs(secs: u64) -> Result<Self, ZeekError> {
        if !(MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&secs) {
            return Err(ZeekError::InvalidOption {
                name: "window",
                message: format!("window must be between 1s and 7d, got {secs}s"),
            });
        }
        Ok(Self(Duration::from_secs(secs)))
    }

    pub fn duration(self) -> Duration {
        self.0
    }

    /// Whole seconds (a window is always a whole number of seconds).
    pub fn secs(self) -> i64 {
        // At most 7 days, so this never truncates.
        self.0.as_secs() as i64
    }
}

impl Default for Window {
    fn default() -> Self {
        Self(Duration::from_secs(3_600))
    }
}

impl FromStr for Window {
    type Err = ZeekError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ZeekError::InvalidOption {
            name: "window",
            message: format!(
                "window {s:?} {why}; give a whole number and a unit s, m, h or d, from 1s to 7d (e.g. 5m, 1h)"
            ),
        };
        let text = s.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad("has no unit"))?;
        let (digits, unit) = text.split_at(split);
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(bad("has an unknown unit")),
        };
        let count: u64 = digits.parse().map_err(|_| bad("is not a whole number"))?;
        let secs = count
            .checked_mul(unit_secs)
            .filter(|s| (MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(s))
            .ok_or_else(|| bad("is out of range"))?;
        Ok(Self(Duration::from_secs(secs)))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (n, unit) = [(86_400, "d"), (3_600, "h"), (60, "m")]
            .into_iter()
            .find(|(u, _)| secs % u == 0)
            .map(|(u, name)| (secs / u, name))
            .unwrap_or((secs, "s"));
        write!(f, "{n}{unit}")
    }
}

/// Which entity each record describes: the whole network, or one host per record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// One record per window for the whole network.
    #[default]
    None,
    /// One record per window and originating host (`id.orig_h`): who sends.
    OrigHost,
    /// One record per window and responding host (`id.resp_h`): who is contacted.
    RespHost,
}

/// The value of option `name` spelled `s` (trimmed), one of `spellings`; else the error that
/// lists them.
fn spelled<T: Copy>(name: &'static str, s: &str, spellings: &[(&str, T)]) -> Result<T, ZeekError> {
    let s = s.trim();
    match spellings.iter().find(|(spelling, _)| *spelling == s) {
        Some(&(_, value)) => Ok(value),
        None => {
            let all: Vec<&str> = spellings.iter().map(|&(spelling, _)| spelling).collect();
            Err(ZeekError::InvalidOption {
                name,
                message: format!("{name} {s:?} is not one of {}", all.join(", ")),
            })
        }
    }
}

impl FromStr for GroupBy {
    type Err = ZeekError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spellings = [
            ("none", Self::None),
            ("id.orig_h", Self::OrigHost),
            ("id.resp_h", Self::RespHost),
        ];
        spelled("group_by", s, &spellings)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::OrigHost => "id.orig_h",
            Self::RespHost => "id.resp_h",
        })
    }
}

/// How connections become records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeekOptions {
    pub window: Window,
    pub group_by: GroupBy,
    /// What a line that cannot be read does to the body.
    pub on_invalid: OnInvalid,
}

impl ZeekOptions {
    /// Options from the optional `window` and `group_by` query parameters (absent: the defaults).
    pub fn from_params(window: Option<&str>, group_by: Option<&str>) -> Result<Self, ZeekError> {
        Ok(Self {
            window: window.map(str::parse).transpose()?.unwrap_or_default(),
            group_by: group_by.map(str::parse).transpose()?.unwrap_or_default(),
            on_invalid: OnInvalid::Reject,
        })
    }
}

/// The two ways Zeek writes logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeekFormat {
    /// The default ASCII writer: `#` header lines, then tab-separated values.
    Tsv,
    /// The JSON writer (`LogAscii::use_json`): one object per line, flat `id.orig_h` keys.
    Json,
}

/// What went wrong reading a conn log or its options.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZeekError {
    /// A line that cannot be read; `field` is the Zeek field at fault when there is one.
    #[error("line {line}: {message}")]
    Line {
        line: usize,
        field: Option<String>,
        message: String,
    },
    /// The `#fields` header (at `line`) lacks a field every conn log has.
    #[error(
        "line {line}: the #fields header has no {field:?}; send a Zeek conn log (ts, id.orig_h, id.resp_h and id.resp_p are required)"
    )]
    MissingField { line: usize, field: String },
    /// Nothing but headers, blank lines or nothing at all.
    #[error("the log holds no connections")]
    NoConnections,
    /// A `window` or `group_by` value that cannot be used.
    #[error("{message}")]
    InvalidOption { name: &'static str, message: String },
}

impl ZeekError {
    /// The 1-based line of the body at fault, when one is.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Line { line, .. } | Self::MissingField { line, .. } => Some(*line),
            Self::NoConnections | Self::InvalidOption { .. } => None,
        }
    }

    /// The Zeek field or option at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Line { field, .. } => field.as_deref(),
            Self::MissingField { field, .. } => Some(field),
            Self::InvalidOption { name, .. } => Some(name),
            Self::NoConnections => None,
        }
    }

    pub(crate) fn line_error(line: usize, message: impl Into<String>) -> Self {
        Self::Line {
            line,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn field_error(line: usize, field: &str, message: impl Into<String>) -> Self {
        Self::Line {
            line,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

/// One connection: the fields aggregation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Conn {
    pub ts: DateTime<Utc>,
    pub orig_h: String,
    pub resp_h: String,
    pub resp_p: u16,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
}

impl From<ConnLine<'_>> for Conn {
    /// The line's connection, its hosts owned (its `uid` is left).
    fn from(c: ConnLine<'_>) -> Self {
        Conn {
            ts: c.ts,
            orig_h: c.orig_h.into_owned(),
            resp_h: c.resp_h.into_owned(),
            resp_p: c.resp_p,
            orig_bytes: c.orig_bytes,
            resp_bytes: c.resp_bytes,
        }
    }
}

/// One window (and entity, when grouped) of traffic: the record the detector scores.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRecord {
    /// The window's start.
    pub timestamp: DateTime<Utc>,
    /// The host, when grouped.
    pub entity: Option<String>,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub connections: f64,
    pub active_sessions: f64,
}

/// What to do with a data line that cannot be read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// The first bad line is an error for the whole body (what `score` does by default).
    #[default]
    Reject,
    /// A bad line is counted and reported ([`Rejects`]); the good lines are read. Header problems
    /// (`#fields` without a required field, another log's `#path`, a bad `#separator`) still end
    /// the body: the lines after them cannot be read as meant.
    Skip,
}

impl FromStr for OnInvalid {
    type Err = ZeekError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        spelled(
            "on_invalid",
            s,
            &[("reject", Self::Reject), ("skip", Self::Skip)],
        )
    }
}

/// How many skipped lines are reported one by one; the rest are only counted.
pub const REJECTS_KEPT: usize = 100;

/// A line skipped: its 1-based number in the body and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reject {
    pub line: usize,
    pub reason: String,
    /// The Zeek field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The lines skipped in a body: the first [`REJECTS_KEPT`] of them, and how many in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejects {
    pub total: usize,
    pub first: Vec<Reject>,
}

impl Rejects {
    pub fn add(&mut self, e: ZeekError) {
        self.total += 1;
        if self.first.len() < REJECTS_KEPT {
            let line = e.line().unwrap_or(0);
            let field = e.field().map(str::to_string);
            let reason = match e {
                ZeekError::Line { message, .. } => message,
                other => other.to_string(),
            };
            self.first.push(Reject {
                line,
                reason,
                field,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Reads every connection of a conn log; a bad line is an error naming it. (The service reads
/// logs with [`ZeekReader`], which keeps no connection; this is for tools and tests.)
pub fn parse_conn_log(body: &[u8], format: ZeekFormat) -> Result<Vec<Conn>, ZeekError> {
    let body = body.strip_prefix(line::BOM).unwrap_or(body);
    let mut parser = LineParser::new(format);
    let mut conns = Vec::new();
    let mut keep = |no: usize, text: &[u8]| -> Result<(), ZeekError> {
        if let Some(c) = parser.line(no, text).map_err(LineError::into_inner)? {
            conns.push(c.into());
        }
        Ok(())
    };
    let mut lines = LineSplitter::new();
    lines.push(body, &mut keep)?;
    lines.finish(&mut keep)?;
    if conns.is_empty() {
        return Err(ZeekError::NoConnections);
    }
    Ok(conns)
}

/// Buckets connections into windows (and entities); see the module doc for what each field means.
pub fn aggregate(conns: &[Conn], opts: &ZeekOptions) -> Vec<WindowRecord> {
    let mut agg = Aggregator::new(opts);
    for c in conns {
        agg.add(&ConnLine {
            ts: c.ts,
            uid: None,
            orig_h: Cow::Borrowed(&c.orig_h),
            resp_h: Cow::Borrowed(&c.resp_h),
            resp_p: c.resp_p,
            orig_bytes: c.orig_bytes,
            resp_bytes: c.resp_bytes,
        });
    }
    agg.into_records()
}

/// The window records of a whole conn log, and the lines skipped (with `on_invalid: skip`).
pub fn window_records(
    body: &[u8],
    format: ZeekFormat,
    opts: &ZeekOptions,
) -> Result<(Vec<WindowRecord>, Rejects), ZeekError> {
    let mut reader = ZeekReader::new(format, opts);
    reader.push(body.strip_prefix(line::BOM).unwrap_or(body))?;
    reader.finish()
}

/// The features of a window record, in this order.
pub const WINDOW_FEATURES: [&str; 4] = [
    "bytes_sent",
    "bytes_received",
    "connections",
    "active_sessions",
];

impl WindowRecord {
    /// The window start as RFC 3339 text (what a record's `timestamp` holds).
    pub fn start_text(&self) -> String {
        self.timestamp.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The values of [`WINDOW_FEATURES`].
    pub fn features(&self) -> [f64; 4] {
        [
            self.bytes_sent,
            self.bytes_received,
            self.connections,
            self.active_sessions,
        ]
    }
}

/// Parses and aggregates a conn log, then reads its window records into `b` ([`read_windows`]);
/// hands back the lines skipped (only with `on_invalid: skip`).
pub fn read_zeek(
    body: &[u8],
    format: ZeekFormat,
    opts: &ZeekOptions,
    b: &mut BatchBuilder,
) -> Result<Rejects, RecordError> {
    let (records, rejects) = window_records(body, format, opts)?;
    read_windows(&records, opts.group_by, b)?;
    Ok(rejects)
}

/// Reads window records into `b` as records with fields `timestamp` (RFC 3339 window start),
/// `entity` (only when grouped) and the [`WINDOW_FEATURES`]. `b`'s record limit bounds the window
/// records, not the connections: the body size limit bounds those.
pub fn read_windows(
    records: &[WindowRecord],
    group_by: GroupBy,
    b: &mut BatchBuilder,
) -> Result<(), RecordError> {
    check_count(records.len(), b.max_records())?;
    let grouped = group_by != GroupBy::None;
    let mut names = vec!["timestamp".to_string()];
    if grouped {
        names.push("entity".to_string());
    }
    names.extend(WINDOW_FEATURES.map(String::from));
    let roles = b.header_roles(&names);
    b.reserve(records.len());
    // Records come sorted by window start: each start is written once.
    let mut start: Option<(DateTime<Utc>, String)> = None;
    for r in records {
        b.start_record();
        if start.as_ref().is_none_or(|(t, _)| *t != r.timestamp) {
            start = Some((r.timestamp, r.start_text()));
        }
        let (t, text) = start.as_ref().expect("set above");
        b.time_field(roles[0], text, *t);
        let mut next = 1;
        if grouped {
            match &r.entity {
                Some(e) => b.field(roles[1], CellRef::Text(e)),
                None => b.field(roles[1], CellRef::Missing),
            }
            next = 2;
        }
        for (j, v) in r.features().into_iter().enumerate() {
            b.field(roles[next + j], CellRef::Num(v));
        }
        b.end_record();
    }
    Ok(())
}

impl From<ZeekError> for RecordError {
    fn from(e: ZeekError) -> Self {
        let detail = e.to_string();
        let field = e.field().map(str::to_string);
        let err = match &e {
            // The detail starts with "line N:"; `field` names the Zeek field when there is one.
            ZeekError::Line { .. } => RecordError::new(RecordErrorKind::InvalidZeekLine, detail),
            ZeekError::MissingField { .. } => {
                RecordError::new(RecordErrorKind::MissingZeekField, detail)
            }
            ZeekError::NoConnections => RecordError::new(
                RecordErrorKind::EmptyBatch,
                "the Zeek log holds no connections",
            ),
            ZeekError::InvalidOption { .. } => {
                RecordError::new(RecordErrorKind::InvalidOption, detail)
            }
        };
        match field {
            Some(f) => err.with_field(f),
            None => err,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn options_parse_their_spellings_and_name_them_all_when_wrong() {
        assert_eq!(" id.resp_h ".parse::<GroupBy>().unwrap(), GroupBy::RespHost);
        assert_eq!("none".parse::<GroupBy>().unwrap(), GroupBy::None);
        assert_eq!("skip".parse::<OnInvalid>().unwrap(), OnInvalid::Skip);
        let message = |e: ZeekError| match e {
            ZeekError::InvalidOption { name, message } => (name, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message("id.orig".parse::<GroupBy>().unwrap_err()),
            (
                "group_by",
                r#"group_by "id.orig" is not one of none, id.orig_h, id.resp_h"#.to_string()
            )
        );
        assert_eq!(
            message(" Skip ".parse::<OnInvalid>().unwrap_err()),
            (
                "on_invalid",
                r#"on_invalid "Skip" is not one of reject, skip"#.to_string()
            )
        );
    }

    /// A real sample from `shared/data/zeek`, found above the checkout (worktrees sit at other
    /// depths than the main checkout).
    pub(crate) fn shared_sample(name: &str) -> Vec<u8> {
        let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let path = manifest
            .ancestors()
            .skip(1)
            .map(|dir| dir.join("shared/data/zeek").join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("shared/data/zeek/{name} not found"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n#types\ttime\tstring\taddr\tport\taddr\tport\tcount\tcount\n";

    fn tsv(rows: &[&str]) -> Vec<u8> {
        let mut s = HEADER.to_string();
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s.into_bytes()
    }

    #[test]
    fn windows_parse_and_display() {
        for (text, secs) in [
            ("1h", 3600),
            ("5m", 300),
            ("30s", 30),
            ("1d", 86400),
            ("90m", 5400),
            ("7d", 604800),
            ("1s", 1),
        ] {
            let w: Window = text.parse().unwrap();
            assert_eq!(w.secs(), secs, "{text}");
        }
        assert_eq!("90m".parse::<Window>().unwrap().to_string(), "90m");
        assert_eq!("120m".parse::<Window>().unwrap().to_string(), "2h");
        for bad in [
            "",
            "h",
            "0h",
            "8d",
            "1.5h",
            "-1h",
            "1w",
            "1H",
            "99999999999999999999h",
            "1 h",
        ] {
            let err = bad.parse::<Window>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            assert_eq!(err.field(), Some("window"));
        }
        assert_eq!(Window::default().secs(), 3600);
    }

    #[test]
    fn group_by_parses() {
        assert_eq!("none".parse::<GroupBy>().unwrap(), GroupBy::None);
        assert_eq!("id.orig_h".parse::<GroupBy>().unwrap(), GroupBy::OrigHost);
        assert_eq!("id.resp_h".parse::<GroupBy>().unwrap(), GroupBy::RespHost);
        let err = "host".parse::<GroupBy>().unwrap_err();
        assert!(err.to_string().contains("\"host\""));
        assert_eq!(
            ZeekOptions::from_params(None, None).unwrap(),
            ZeekOptions::default()
        );
        assert_eq!(
            ZeekOptions::from_params(Some("5m"), Some("id.resp_h"))
                .unwrap()
                .group_by,
            GroupBy::RespHost
        );
    }

    #[test]
    fn tsv_lines_and_unset_fields() {
        let body = tsv(&[
            "3600.5\tC1\t10.0.0.1\t1000\t8.8.8.8\t53\t10\t20",
            "3601\tC2\t10.0.0.1\t1001\t8.8.8.8\t53\t-\t(empty)",
            "7300\tC3\t10.0.0.2\t1002\t1.1.1.1\t443\t5\t-",
        ]);
        let conns = parse_conn_log(&body, ZeekFormat::Tsv).unwrap();
        assert_eq!(conns.len(), 3);
        assert_eq!(conns[0].ts.timestamp_micros(), 3_600_500_000);
        assert_eq!((conns[1].orig_bytes, conns[1].resp_bytes), (0, 0));
        let recs = aggregate(&conns, &ZeekOptions::default());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].timestamp.timestamp(), 3600);
        assert_eq!(
            (
                recs[0].bytes_sent,
                recs[0].bytes_received,
                recs[0].connections
            ),
            (10.0, 20.0, 2.0)
        );
        // Two connections, one conversation.
        assert_eq!(recs[0].active_sessions, 1.0);
        assert_eq!(recs[1].timestamp.timestamp(), 7200);
    }

    #[test]
    fn bad_lines_name_their_line() {
        // Header is 7 lines, so the first data line is line 8.
        let cases = [
            ("3600\tC1\t10.0.0.1\t1000\t8.8.8.8\t53\t10", None, "fields"),
            (
                "abc\tC1\t10.0.0.1\t1000\t8.8.8.8\t53\t10\t20",
                Some("ts"),
                "ts",
            ),
            (
                "3600\tC1\t10.0.0.1\t1000\t8.8.8.8\t53\t-5\t20",
                Some("orig_bytes"),
                "negative",
            ),
            (
                "3600\tC1\t10.0.0.1\t1000\t8.8.8.8\t70000\t1\t2",
                Some("id.resp_p"),
                "port",
            ),
            (
                "-1\tC1\t10.0.0.1\t1000\t8.8.8.8\t53\t1\t2",
                Some("ts"),
                "1970",
            ),
            (
                "1e300\tC1\t10.0.0.1\t1000\t8.8.8.8\t53\t1\t2",
                Some("ts"),
                "9999",
            ),
            (
                "NaN\tC1\t10.0.0.1\t1000\t8.8.8.8\t53\t1\t2",
                Some("ts"),
                "1970",
            ),
            (
                "3600\tC1\t-\t1000\t8.8.8.8\t53\t1\t2",
                Some("id.orig_h"),
                "unset",
            ),
        ];
        for (row, field, needle) in cases {
            let body = tsv(&["3600\tC0\t10.0.0.1\t1\t8.8.8.8\t53\t1\t1", row]);
            let err = parse_conn_log(&body, ZeekFormat::Tsv).unwrap_err();
            assert_eq!(err.line(), Some(9), "{row}: {err}");
            assert_eq!(err.field(), field, "{row}");
            assert!(err.to_string().contains(needle), "{row}: {err}");
            assert!(err.to_string().starts_with("line 9: "), "{err}");
        }
        let mut body = tsv(&[]);
        body.extend_from_slice(b"3600\tC\xff\t10.0.0.1\t1\t8.8.8.8\t53\t1\t1\n");
        let err = parse_conn_log(&body, ZeekFormat::Tsv).unwrap_err();
        assert_eq!(err.line(), Some(8));
        assert!(err.to_string().contains("UTF-8"));
    }

    #[test]
    fn headers_are_checked() {
        let err =
            parse_conn_log(b"#fields\tts\tid.orig_h\tid.resp_h\n", ZeekFormat::Tsv).unwrap_err();
        assert_eq!(
            err,
            ZeekError::MissingField {
                line: 1,
                field: "id.resp_p".into()
            }
        );
        assert_eq!(
            parse_conn_log(HEADER.as_bytes(), ZeekFormat::Tsv).unwrap_err(),
            ZeekError::NoConnections
        );
        assert_eq!(
            parse_conn_log(b"", ZeekFormat::Tsv).unwrap_err(),
            ZeekError::NoConnections
        );
        let err = parse_conn_log(b"1\ta\tb\t1\n", ZeekFormat::Tsv).unwrap_err();
        assert!(err.to_string().contains("#fields"), "{err}");
        let dns = HEADER.replace("#path\tconn", "#path\tdns");
        let err = parse_conn_log(dns.as_bytes(), ZeekFormat::Tsv).unwrap_err();
        assert_eq!(err.line(), Some(5));
    }

    #[test]
    fn custom_separator_and_unset_markers() {
        let body = "#separator \\x2c\n#unset_field,NONE\n#empty_field,EMPTY\n#fields,ts,id.orig_h,id.resp_h,id.resp_p,orig_bytes,resp_bytes\r\n60,a,b,80,NONE,EMPTY\r\n61,a,b,81,7,8\r\n";
        let conns = parse_conn_log(body.as_bytes(), ZeekFormat::Tsv).unwrap();
        assert_eq!(conns.len(), 2);
        assert_eq!((conns[0].orig_bytes, conns[1].resp_bytes), (0, 8));
        // "-" is no longer the unset marker: here it is a bad count.
        let body = "#separator \\x2c\n#unset_field,NONE\n#fields,ts,id.orig_h,id.resp_h,id.resp_p,orig_bytes\n60,a,b,80,-\n";
        let err = parse_conn_log(body.as_bytes(), ZeekFormat::Tsv).unwrap_err();
        assert_eq!(err.line(), Some(4));
    }

    #[test]
    fn a_new_fields_header_resets_the_columns() {
        // Two logs concatenated (cat conn.*.log), the second with another field order.
        let mut body = tsv(&["3600\tC1\t10.0.0.1\t1\t8.8.8.8\t53\t1\t2"]);
        body.extend_from_slice(
            b"#fields\tid.resp_p\tid.resp_h\tid.orig_h\tts\n443\t1.1.1.1\t10.0.0.9\t3700\n",
        );
        let conns = parse_conn_log(&body, ZeekFormat::Tsv).unwrap();
        assert_eq!(conns[1].orig_h, "10.0.0.9");
        assert_eq!(conns[1].resp_p, 443);
        assert_eq!(conns[1].orig_bytes, 0);
    }

    #[test]
    fn json_lines_accept_epoch_iso_and_nested_ids() {
        let body = br#"{"ts":3600.25,"id.orig_h":"10.0.0.1","id.resp_h":"8.8.8.8","id.resp_p":53,"orig_bytes":10,"resp_bytes":20}

{"ts":"1970-01-01T01:30:00.000000Z","id.orig_h":"10.0.0.1","id.resp_h":"8.8.8.8","id.resp_p":53}
{"ts":3700,"id":{"orig_h":"10.0.0.2","resp_h":"8.8.4.4","resp_p":53},"orig_bytes":1.0e3,"resp_bytes":null}
"#;
        let conns = parse_conn_log(body, ZeekFormat::Json).unwrap();
        assert_eq!(conns.len(), 3);
        assert_eq!(conns[1].ts.timestamp(), 5400);
        assert_eq!((conns[1].orig_bytes, conns[1].resp_bytes), (0, 0));
        assert_eq!(conns[2].orig_h, "10.0.0.2");
        assert_eq!(conns[2].orig_bytes, 1000);
        let recs = aggregate(
            &conns,
            &ZeekOptions {
                window: Window::default(),
                group_by: GroupBy::OrigHost,
                ..ZeekOptions::default()
            },
        );
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].entity.as_deref(), Some("10.0.0.1"));
        assert_eq!(recs[0].connections, 2.0);
    }

    #[test]
    fn bad_json_lines_name_their_line() {
        let ok = r#"{"ts":1,"id.orig_h":"a","id.resp_h":"b","id.resp_p":1}"#;
        for (bad, field) in [
            ("{oops", None),
            ("[1,2]", None),
            (
                r#"{"id.orig_h":"a","id.resp_h":"b","id.resp_p":1}"#,
                Some("ts"),
            ),
            (
                r#"{"ts":true,"id.orig_h":"a","id.resp_h":"b","id.resp_p":1}"#,
                Some("ts"),
            ),
            (
                r#"{"ts":1,"id.orig_h":"a","id.resp_h":"b","id.resp_p":1,"orig_bytes":-3}"#,
                Some("orig_bytes"),
            ),
            (
                r#"{"ts":1,"id.orig_h":"a","id.resp_h":"b","id.resp_p":1,"resp_bytes":1.5}"#,
                Some("resp_bytes"),
            ),
            (
                r#"{"ts":1,"id.orig_h":"a","id.resp_h":"b","id.resp_p":1,"resp_bytes":"9"}"#,
                Some("resp_bytes"),
            ),
            (
                r#"{"ts":1,"id.orig_h":7,"id.resp_h":"b","id.resp_p":1}"#,
                Some("id.orig_h"),
            ),
            (
                r#"{"ts":1,"id.orig_h":"a","id.resp_h":"b","id.resp_p":-1}"#,
                Some("id.resp_p"),
            ),
            (
                r#"{"ts":1e20,"id.orig_h":"a","id.resp_h":"b","id.resp_p":1}"#,
                Some("ts"),
            ),
        ] {
            let body = format!("{ok}\n\n{bad}\n{ok}\n");
            let err = parse_conn_log(body.as_bytes(), ZeekFormat::Json).unwrap_err();
            assert_eq!(err.line(), Some(3), "{bad}: {err}");
            assert_eq!(err.field(), field, "{bad}: {err}");
        }
        assert_eq!(
            parse_conn_log(b"\n \n", ZeekFormat::Json).unwrap_err(),
            ZeekError::NoConnections
        );
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let max = u64::MAX;
        let body = tsv(&[
            &format!("0\tC1\ta\t1\tb\t1\t{max}\t{max}"),
            &format!("1\tC2\ta\t1\tb\t1\t{max}\t0"),
        ]);
        let conns = parse_conn_log(&body, ZeekFormat::Tsv).unwrap();
        let recs = aggregate(&conns, &ZeekOptions::default());
        assert_eq!(recs[0].bytes_sent, 2.0 * max as f64);
        assert!(recs[0].bytes_sent.is_finite());
        // 9999-12-31 is the last day a window start can be written in RFC 3339.
        let body = tsv(&["253402300799.9\tC1\ta\t1\tb\t1\t1\t1"]);
        let batch = window_batch(&body, &ZeekOptions::default());
        assert_eq!(batch.timestamps.get(0), Some("9999-12-31T23:00:00Z"));
    }

    /// A conn log read into a batch of its window records.
    fn window_batch(body: &[u8], opts: &ZeekOptions) -> crate::records::Batch {
        let mut b = BatchBuilder::new(&WINDOW_FEATURES.map(String::from), false, 1000);
        read_zeek(body, ZeekFormat::Tsv, opts, &mut b).unwrap();
        b.finish().unwrap()
    }

    #[test]
    fn window_records_have_the_record_fields() {
        let body = tsv(&[
            "3600\tC1\t10.0.0.2\t1\t8.8.8.8\t53\t1\t2",
            "3601\tC2\t10.0.0.1\t1\t8.8.8.8\t53\t3\t4",
        ]);
        let plain = window_batch(&body, &ZeekOptions::default());
        assert_eq!(plain.features, WINDOW_FEATURES);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain.timestamps.get(0), Some("1970-01-01T01:00:00Z"));
        assert_eq!(plain.matrix.row(0), &[4.0, 6.0, 2.0, 2.0]);
        assert!(plain.echo.fields(0).is_empty());
        let opts = ZeekOptions {
            window: "30m".parse().unwrap(),
            group_by: GroupBy::OrigHost,
            ..ZeekOptions::default()
        };
        let grouped = window_batch(&body, &opts);
        assert_eq!(grouped.len(), 2);
        // Sorted by entity within the window.
        assert_eq!(grouped.echo.fields(0).get("entity"), Some(&"10.0.0.1"));
        assert_eq!(grouped.matrix.row(0)[0], 3.0);
    }
}
