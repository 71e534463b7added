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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::builder::{BatchBuilder, CellRef};
use super::error::{RecordError, RecordErrorKind, check_count};

/// Shortest and longest window: a second has too few connections to mean anything below it, and
/// past a week a batch holds too few records to score.
const MIN_WINDOW_SECS: u64 = 1;
const MAX_WINDOW_SECS: u64 = 7 * 86_400;
/// 10000-01-01T00:00:00Z: RFC 3339 years have four digits.
const MAX_TS_SECS: i64 = 253_402_300_800;

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

impl FromStr for GroupBy {
    type Err = ZeekError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "none" => Ok(Self::None),
            "id.orig_h" => Ok(Self::OrigHost),
            "id.resp_h" => Ok(Self::RespHost),
            other => Err(ZeekError::InvalidOption {
                name: "group_by",
                message: format!("group_by {other:?} is not one of none, id.orig_h, id.resp_h"),
            }),
        }
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
}

impl ZeekOptions {
    /// Options from the optional `window` and `group_by` query parameters (absent: the defaults).
    pub fn from_params(window: Option<&str>, group_by: Option<&str>) -> Result<Self, ZeekError> {
        Ok(Self {
            window: window.map(str::parse).transpose()?.unwrap_or_default(),
            group_by: group_by.map(str::parse).transpose()?.unwrap_or_default(),
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

    fn line_error(line: usize, message: impl Into<String>) -> Self {
        Self::Line {
            line,
            field: None,
            message: message.into(),
        }
    }

    fn field_error(line: usize, field: &str, message: impl Into<String>) -> Self {
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

/// Reads every connection of a conn log; a bad line is an error naming it.
pub fn parse_conn_log(body: &[u8], format: ZeekFormat) -> Result<Vec<Conn>, ZeekError> {
    // A UTF-8 byte order mark (Windows editors add one) is not part of the first line.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let conns = match format {
        ZeekFormat::Tsv => parse_tsv(body)?,
        ZeekFormat::Json => parse_json(body)?,
    };
    if conns.is_empty() {
        return Err(ZeekError::NoConnections);
    }
    Ok(conns)
}

/// Lines with their 1-based numbers, without the line break (`\n` or `\r\n`).
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
}

fn utf8(no: usize, line: &[u8]) -> Result<&str, ZeekError> {
    std::str::from_utf8(line).map_err(|e| {
        ZeekError::line_error(
            no,
            format!(
                "not valid UTF-8 (at byte {}); Zeek escapes other bytes as \\xHH",
                e.valid_up_to()
            ),
        )
    })
}

/// Where the fields aggregation needs sit in a TSV line, from the latest `#fields` header.
struct Columns {
    count: usize,
    ts: usize,
    orig_h: usize,
    resp_h: usize,
    resp_p: usize,
    orig_bytes: Option<usize>,
    resp_bytes: Option<usize>,
}

impl Columns {
    fn from_header<'a>(no: usize, names: impl Iterator<Item = &'a str>) -> Result<Self, ZeekError> {
        let names: Vec<&str> = names.collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let need = |name: &str| {
            find(name).ok_or_else(|| ZeekError::MissingField {
                line: no,
                field: name.to_string(),
            })
        };
        Ok(Self {
            count: names.len(),
            ts: need("ts")?,
            orig_h: need("id.orig_h")?,
            resp_h: need("id.resp_h")?,
            resp_p: need("id.resp_p")?,
            orig_bytes: find("orig_bytes"),
            resp_bytes: find("resp_bytes"),
        })
    }
}

/// Decodes the `\xHH` escapes Zeek writes in `#separator` (and nothing else there).
fn unescape(no: usize, text: &str) -> Result<String, ZeekError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ZeekError::line_error(no, format!("bad \\x escape in #separator {text:?}"))
                })?;
            out.push(hex);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ZeekError::line_error(no, "the #separator is not valid UTF-8"))
}

fn parse_tsv(body: &[u8]) -> Result<Vec<Conn>, ZeekError> {
    // Zeek's defaults, used until the header says otherwise.
    let mut sep = String::from("\t");
    let mut unset = String::from("-");
    let mut empty = String::from("(empty)");
    let mut columns: Option<Columns> = None;
    let mut conns = Vec::new();
    for (no, raw) in lines(body) {
        if raw.is_empty() {
            continue;
        }
        let line = utf8(no, raw)?;
        if let Some(directive) = line.strip_prefix('#') {
            // `#separator` is written with a space, since the separator is not known yet.
            if let Some(value) = directive.strip_prefix("separator") {
                let value = unescape(no, value.trim_start_matches([' ', '\t']))?;
                if value.is_empty() {
                    return Err(ZeekError::line_error(no, "the #separator is empty"));
                }
                sep = value;
                continue;
            }
            let mut parts = directive.split(sep.as_str());
            let name = parts.next().unwrap_or("");
            match name {
                "fields" => columns = Some(Columns::from_header(no, parts)?),
                "unset_field" => unset = parts.next().unwrap_or("").to_string(),
                "empty_field" => empty = parts.next().unwrap_or("").to_string(),
                "path" => {
                    let path = parts.next().unwrap_or("");
                    // A dns.log also has ts and id.*: counting its queries as connections would
                    // silently give wrong records.
                    if !path.starts_with("conn") {
                        return Err(ZeekError::line_error(
                            no,
                            format!("this is a {path:?} log; send a conn log"),
                        ));
                    }
                }
                // #open, #close, #types, #set_separator and comments carry nothing we need.
                _ => {}
            }
            continue;
        }
        let Some(cols) = &columns else {
            return Err(ZeekError::line_error(
                no,
                "a data line before the #fields header; send the log with its # header lines (zeek-cut -c keeps them)",
            ));
        };
        let values: Vec<&str> = line.split(sep.as_str()).collect();
        if values.len() != cols.count {
            return Err(ZeekError::line_error(
                no,
                format!("{} fields, but #fields names {}", values.len(), cols.count),
            ));
        }
        let set =
            |i: usize| Some(values[i]).filter(|v| *v != unset && *v != empty && !v.is_empty());
        let ts_text =
            set(cols.ts).ok_or_else(|| ZeekError::field_error(no, "ts", "ts is unset"))?;
        let count = |col: Option<usize>, name: &str| match col.and_then(set) {
            None => Ok(0),
            Some(v) => parse_count_text(no, name, v),
        };
        conns.push(Conn {
            ts: parse_ts_text(no, ts_text)?,
            orig_h: host(no, "id.orig_h", set(cols.orig_h))?,
            resp_h: host(no, "id.resp_h", set(cols.resp_h))?,
            resp_p: port_text(no, set(cols.resp_p))?,
            orig_bytes: count(cols.orig_bytes, "orig_bytes")?,
            resp_bytes: count(cols.resp_bytes, "resp_bytes")?,
        });
    }
    Ok(conns)
}

fn host(no: usize, name: &str, value: Option<&str>) -> Result<String, ZeekError> {
    value
        .map(str::to_string)
        .ok_or_else(|| ZeekError::field_error(no, name, format!("{name} is unset")))
}

fn port_text(no: usize, value: Option<&str>) -> Result<u16, ZeekError> {
    let value =
        value.ok_or_else(|| ZeekError::field_error(no, "id.resp_p", "id.resp_p is unset"))?;
    value.parse().map_err(|_| {
        ZeekError::field_error(
            no,
            "id.resp_p",
            format!("id.resp_p {value:?} is not a port (0 to 65535)"),
        )
    })
}

fn parse_count_text(no: usize, name: &str, value: &str) -> Result<u64, ZeekError> {
    value.parse().map_err(|_| {
        let why = if value.starts_with('-') {
            "is negative"
        } else {
            "is not a whole number of bytes"
        };
        ZeekError::field_error(no, name, format!("{name} {value:?} {why}"))
    })
}

/// Zeek's `time`: epoch seconds with a fraction, or (from `json.timestamps`) ISO 8601 text.
fn parse_ts_text(no: usize, text: &str) -> Result<DateTime<Utc>, ZeekError> {
    if let Ok(secs) = text.parse::<f64>() {
        return ts_from_epoch(no, secs);
    }
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|_| {
        ZeekError::field_error(
            no,
            "ts",
            format!("ts {text:?} is neither epoch seconds nor an ISO 8601 time"),
        )
    })?;
    ts_in_range(no, parsed.with_timezone(&Utc))
}

fn ts_from_epoch(no: usize, secs: f64) -> Result<DateTime<Utc>, ZeekError> {
    let out_of_range = || {
        ZeekError::field_error(
            no,
            "ts",
            format!("ts {secs} is not a time between 1970 and 9999"),
        )
    };
    if !secs.is_finite() || secs < 0.0 || secs >= MAX_TS_SECS as f64 {
        return Err(out_of_range());
    }
    let whole = secs.floor();
    // Zeek writes microseconds; rounding to them undoes the binary fraction's error.
    let mut micros = ((secs - whole) * 1e6).round() as i64;
    let mut whole = whole as i64;
    if micros >= 1_000_000 {
        whole += 1;
        micros -= 1_000_000;
    }
    let ts = DateTime::from_timestamp(whole, (micros * 1_000) as u32).ok_or_else(out_of_range)?;
    ts_in_range(no, ts)
}

fn ts_in_range(no: usize, ts: DateTime<Utc>) -> Result<DateTime<Utc>, ZeekError> {
    if ts.timestamp() < 0 || ts.timestamp() >= MAX_TS_SECS {
        return Err(ZeekError::field_error(
            no,
            "ts",
            format!("ts {} is not a time between 1970 and 9999", ts.to_rfc3339()),
        ));
    }
    Ok(ts)
}

fn parse_json(body: &[u8]) -> Result<Vec<Conn>, ZeekError> {
    let mut conns = Vec::new();
    for (no, line) in lines(body) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = super::json::from_slice(line).map_err(|e| {
            let e = super::json::message(&e);
            ZeekError::line_error(no, format!("invalid JSON: {e}"))
        })?;
        let Value::Object(map) = value else {
            return Err(ZeekError::line_error(no, "not a JSON object"));
        };
        conns.push(json_conn(no, &map)?);
    }
    Ok(conns)
}

/// A field by Zeek's flat name (`id.orig_h`), or nested (`{"id": {"orig_h": ..}}`) as some
/// shippers rewrite it.
fn json_field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    let (outer, inner) = name.split_once('.')?;
    map.get(outer)?.as_object()?.get(inner)
}

fn json_conn(no: usize, map: &Map<String, Value>) -> Result<Conn, ZeekError> {
    let ts = match json_field(map, "ts") {
        Some(Value::Number(n)) => ts_from_epoch(no, n.as_f64().unwrap_or(f64::NAN))?,
        Some(Value::String(s)) => parse_ts_text(no, s)?,
        Some(Value::Null) | None => return Err(ZeekError::field_error(no, "ts", "ts is missing")),
        Some(_) => {
            return Err(ZeekError::field_error(
                no,
                "ts",
                "ts must be epoch seconds or an ISO 8601 string",
            ));
        }
    };
    let text = |name: &str| match json_field(map, name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Null) | None => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} is missing"),
        )),
        Some(_) => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} must be a non-empty string"),
        )),
    };
    // In the order Zeek writes them, so the first missing field is the one reported.
    let orig_h = text("id.orig_h")?;
    let resp_h = text("id.resp_h")?;
    let resp_p = match json_field(map, "id.resp_p") {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::Null) | None => {
            return Err(ZeekError::field_error(
                no,
                "id.resp_p",
                "id.resp_p is missing",
            ));
        }
        Some(_) => None,
    }
    .ok_or_else(|| {
        ZeekError::field_error(no, "id.resp_p", "id.resp_p is not a port (0 to 65535)")
    })?;
    Ok(Conn {
        ts,
        orig_h,
        resp_h,
        resp_p,
        orig_bytes: json_count(no, map, "orig_bytes")?,
        resp_bytes: json_count(no, map, "resp_bytes")?,
    })
}

/// A byte count: absent or null (Zeek's JSON writer omits unset fields) is 0.
fn json_count(no: usize, map: &Map<String, Value>, name: &str) -> Result<u64, ZeekError> {
    let n = match json_field(map, name) {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => n,
        Some(_) => {
            return Err(ZeekError::field_error(
                no,
                name,
                format!("{name} must be a number"),
            ));
        }
    };
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    // Shippers that pass logs through floats write 601.0; a whole float is still a count.
    match n.as_f64() {
        Some(v) if v < 0.0 => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} {n} is negative"),
        )),
        Some(v) if v.is_finite() && v.fract() == 0.0 && v <= u64::MAX as f64 => Ok(v as u64),
        _ => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} {n} is not a whole number of bytes"),
        )),
    }
}

#[derive(Default)]
struct Accumulator<'a> {
    // u128: a window may sum many u64-sized counts without overflowing.
    sent: u128,
    received: u128,
    connections: u64,
    sessions: HashSet<(&'a str, &'a str, u16)>,
}

/// Buckets connections into windows (and entities); see the module doc for what each field means.
pub fn aggregate(conns: &[Conn], opts: &ZeekOptions) -> Vec<WindowRecord> {
    let window = opts.window.secs();
    let mut buckets: BTreeMap<(i64, Option<&str>), Accumulator<'_>> = BTreeMap::new();
    for c in conns {
        let start = c.ts.timestamp().div_euclid(window) * window;
        let entity = match opts.group_by {
            GroupBy::None => None,
            GroupBy::OrigHost => Some(c.orig_h.as_str()),
            GroupBy::RespHost => Some(c.resp_h.as_str()),
        };
        let acc = buckets.entry((start, entity)).or_default();
        acc.sent += u128::from(c.orig_bytes);
        acc.received += u128::from(c.resp_bytes);
        acc.connections += 1;
        acc.sessions
            .insert((c.orig_h.as_str(), c.resp_h.as_str(), c.resp_p));
    }
    buckets
        .into_iter()
        .filter_map(|((start, entity), acc)| {
            // Starts come from valid timestamps floored toward 1970, so they are valid too.
            Some(WindowRecord {
                timestamp: DateTime::from_timestamp(start, 0)?,
                entity: entity.map(str::to_string),
                bytes_sent: acc.sent as f64,
                bytes_received: acc.received as f64,
                connections: acc.connections as f64,
                active_sessions: acc.sessions.len() as f64,
            })
        })
        .collect()
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

/// Parses and aggregates a conn log, then reads its window records into `b` as records with
/// fields `timestamp` (RFC 3339 window start), `entity` (only when grouped) and the
/// [`WINDOW_FEATURES`]. `b`'s record limit bounds the window records, not the connections: the
/// body size limit bounds those.
pub fn read_zeek(
    body: &[u8],
    format: ZeekFormat,
    opts: &ZeekOptions,
    b: &mut BatchBuilder,
) -> Result<(), RecordError> {
    let conns = parse_conn_log(body, format)?;
    let records = aggregate(&conns, opts);
    drop(conns);
    check_count(records.len(), b.max_records())?;
    let grouped = opts.group_by != GroupBy::None;
    let mut names = vec!["timestamp".to_string()];
    if grouped {
        names.push("entity".to_string());
    }
    names.extend(WINDOW_FEATURES.map(String::from));
    let roles = b.header_roles(&names);
    for r in &records {
        b.start_record();
        let start = r.start_text();
        b.field(roles[0], CellRef::Text(&start));
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
mod tests {
    use super::*;

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
        };
        let grouped = window_batch(&body, &opts);
        assert_eq!(grouped.len(), 2);
        // Sorted by entity within the window.
        assert_eq!(grouped.echo.fields(0).get("entity"), Some(&"10.0.0.1"));
        assert_eq!(grouped.matrix.row(0)[0], 3.0);
    }
}
