//! One conn log line at a time: a body cut into lines as its chunks arrive ([`LineSplitter`]),
//! and each line read into a [`ConnLine`] that borrows its text ([`LineParser`]), so the hot path
//! allocates nothing per line.
//!
//! The TSV header (`#separator`, `#fields`, ...) is state the parser carries from line to line,
//! and across bodies when a pipeline ships one log in several requests ([`TsvHeader`] is
//! serialisable for that). A Zeek JSON line is read by `json_line.rs`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize as DeriveDeserialize, Serialize};

use super::json_line::{Shape, json_line};
use super::{MAX_TS_SECS, ZeekError, ZeekFormat};

/// A UTF-8 byte order mark (Windows editors add one): not part of the first line.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One connection, borrowing the text of its line where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnLine<'a> {
    pub ts: DateTime<Utc>,
    /// Zeek's connection id, when the line has one.
    pub uid: Option<Cow<'a, str>>,
    pub orig_h: Cow<'a, str>,
    pub resp_h: Cow<'a, str>,
    pub resp_p: u16,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
}

impl ConnLine<'_> {
    /// The fields of this connection a window uses.
    pub fn fields(&self) -> super::ConnFields<'_> {
        super::ConnFields {
            ts_secs: self.ts.timestamp(),
            orig_h: &self.orig_h,
            resp_h: &self.resp_h,
            resp_p: self.resp_p,
            orig_bytes: self.orig_bytes,
            resp_bytes: self.resp_bytes,
        }
    }
}

/// A line that could not be read. A header problem ends the body whatever `on_invalid` says (the
/// lines after it cannot be read as meant); a data line's problem may be skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum LineError {
    Header(ZeekError),
    Data(ZeekError),
}

impl LineError {
    pub fn into_inner(self) -> ZeekError {
        match self {
            Self::Header(e) | Self::Data(e) => e,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lines out of chunks

/// Cuts a body into numbered lines as its chunks arrive, carrying a partial last line over to
/// the next chunk. Lines are given without their break (`\n` or `\r\n`) and numbered from 1, as
/// `body.split(b'\n')` would number them: the text after the last break is a line too.
#[derive(Debug, Default)]
pub struct LineSplitter {
    carry: Vec<u8>,
    /// Lines handed out so far.
    line: usize,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of the last line handed out.
    pub fn lines(&self) -> usize {
        self.line
    }

    /// Hands every line `chunk` completes to `f` with its number; stops at `f`'s first error.
    pub fn push<E>(
        &mut self,
        mut chunk: &[u8],
        f: &mut impl FnMut(usize, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                None => {
                    self.carry.extend_from_slice(chunk);
                    return Ok(());
                }
                Some(end) => {
                    self.carry.extend_from_slice(&chunk[..end]);
                    chunk = &chunk[end + 1..];
                    let carried = std::mem::take(&mut self.carry);
                    self.line += 1;
                    let done = f(self.line, strip_cr(&carried));
                    // Keep the buffer's capacity for the next partial line.
                    self.carry = carried;
                    self.carry.clear();
                    done?;
                }
            }
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            self.line += 1;
            f(self.line, strip_cr(&chunk[start..end]))?;
            start = end + 1;
        }
        self.carry.extend_from_slice(&chunk[start..]);
        Ok(())
    }

    /// Hands the text after the last line break (possibly empty) to `f` as the last line.
    pub fn finish<E>(
        &mut self,
        f: &mut impl FnMut(usize, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let last = std::mem::take(&mut self.carry);
        self.line += 1;
        f(self.line, strip_cr(&last))
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

// ---------------------------------------------------------------------------------------------
// Lines into connections

/// Reads conn log lines of one format, keeping the TSV header from line to line.
#[derive(Debug, Clone)]
pub struct LineParser {
    format: ZeekFormat,
    tsv: TsvHeader,
    /// Where each value of the current TSV line starts and ends (reused from line to line).
    spans: Vec<(usize, usize)>,
    /// The keys of the last JSON line, which the next one likely repeats.
    pub(super) json_shape: Shape,
}

impl LineParser {
    pub fn new(format: ZeekFormat) -> Self {
        Self::with_header(format, TsvHeader::default())
    }

    /// A parser that goes on from a header read before (in an earlier body of the same log).
    pub fn with_header(format: ZeekFormat, tsv: TsvHeader) -> Self {
        Self {
            format,
            tsv,
            spans: Vec::new(),
            json_shape: Shape::default(),
        }
    }

    pub fn format(&self) -> ZeekFormat {
        self.format
    }

    /// The TSV header as read so far.
    pub fn header(&self) -> &TsvHeader {
        &self.tsv
    }

    pub fn into_header(self) -> TsvHeader {
        self.tsv
    }

    /// The connection on line `no`, or `None` for a blank or header line.
    pub fn line<'a>(
        &mut self,
        no: usize,
        raw: &'a [u8],
    ) -> Result<Option<ConnLine<'a>>, LineError> {
        match self.format {
            ZeekFormat::Tsv => self.tsv_line(no, raw),
            ZeekFormat::Json => json_line(no, raw, &mut self.json_shape).map_err(LineError::Data),
        }
    }

    fn tsv_line<'a>(
        &mut self,
        no: usize,
        raw: &'a [u8],
    ) -> Result<Option<ConnLine<'a>>, LineError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw[0] == b'#' {
            let line = utf8(no, raw).map_err(LineError::Header)?;
            self.tsv
                .directive(no, &line[1..])
                .map_err(LineError::Header)?;
            return Ok(None);
        }
        let line = utf8(no, raw).map_err(LineError::Data)?;
        self.tsv_conn(no, line).map(Some).map_err(LineError::Data)
    }

    fn tsv_conn<'a>(&mut self, no: usize, line: &'a str) -> Result<ConnLine<'a>, ZeekError> {
        let h = &self.tsv;
        let Some(cols) = &h.columns else {
            return Err(ZeekError::line_error(
                no,
                "a data line before the #fields header; send the log with its # header lines (zeek-cut -c keeps them)",
            ));
        };
        self.spans.clear();
        let sep = h.sep.as_bytes();
        let fields = if let [byte] = sep {
            // Only the fields up to the last one needed are cut out; the rest are only counted.
            let bytes = line.as_bytes();
            let mut start = 0;
            loop {
                match memchr::memchr(*byte, &bytes[start..]) {
                    Some(at) => {
                        self.spans.push((start, start + at));
                        start += at + 1;
                        if self.spans.len() > cols.last {
                            break self.spans.len() + 1 + count_byte(&bytes[start..], *byte);
                        }
                    }
                    None => {
                        self.spans.push((start, bytes.len()));
                        break self.spans.len();
                    }
                }
            }
        } else {
            let mut start = 0;
            for (at, _) in line.match_indices(h.sep.as_str()) {
                self.spans.push((start, at));
                start = at + sep.len();
            }
            self.spans.push((start, line.len()));
            self.spans.len()
        };
        if fields != cols.count {
            return Err(ZeekError::line_error(
                no,
                format!("{fields} fields, but #fields names {}", cols.count),
            ));
        }
        let spans = &self.spans;
        let set = |i: usize| {
            let (a, b) = spans[i];
            let v = &line[a..b];
            Some(v).filter(|v| *v != h.unset && *v != h.empty && !v.is_empty())
        };
        tsv_fields(no, cols, set)
    }
}

/// The connection of TSV data line `no` from its values, `set(i)` the `i`th one unless it is
/// unset or empty. (The old reader, [`super::oracle`], cuts its lines on its own and shares this.)
pub(crate) fn tsv_fields<'a>(
    no: usize,
    cols: &Columns,
    set: impl Fn(usize) -> Option<&'a str>,
) -> Result<ConnLine<'a>, ZeekError> {
    let ts_text = set(cols.ts).ok_or_else(|| ZeekError::field_error(no, "ts", "ts is unset"))?;
    let count = |col: Option<usize>, name: &str| match col.and_then(&set) {
        None => Ok(0),
        Some(v) => parse_count_text(no, name, v),
    };
    Ok(ConnLine {
        ts: parse_ts_text(no, ts_text)?,
        orig_h: host(no, "id.orig_h", set(cols.orig_h))?,
        resp_h: host(no, "id.resp_h", set(cols.resp_h))?,
        resp_p: port_text(no, set(cols.resp_p))?,
        orig_bytes: count(cols.orig_bytes, "orig_bytes")?,
        resp_bytes: count(cols.resp_bytes, "resp_bytes")?,
        uid: cols.uid.and_then(&set).map(Cow::Borrowed),
    })
}

/// What the TSV header lines said so far: separator, unset and empty markers, and the fields.
#[derive(Debug, Clone, PartialEq, Serialize, DeriveDeserialize)]
#[serde(from = "HeaderText", into = "HeaderText")]
pub struct TsvHeader {
    sep: String,
    unset: String,
    empty: String,
    /// The names of the latest `#fields` line, and where the needed ones sit.
    fields: Option<Vec<String>>,
    columns: Option<Columns>,
}

impl Default for TsvHeader {
    /// Zeek's defaults, used until the header says otherwise.
    fn default() -> Self {
        Self {
            sep: "\t".into(),
            unset: "-".into(),
            empty: "(empty)".into(),
            fields: None,
            columns: None,
        }
    }
}

/// The header as it is kept: its text only (the columns are found again when read back).
#[derive(Serialize, DeriveDeserialize)]
struct HeaderText {
    sep: String,
    unset: String,
    empty: String,
    fields: Option<Vec<String>>,
}

impl From<TsvHeader> for HeaderText {
    fn from(h: TsvHeader) -> Self {
        Self {
            sep: h.sep,
            unset: h.unset,
            empty: h.empty,
            fields: h.fields,
        }
    }
}

impl From<HeaderText> for TsvHeader {
    fn from(h: HeaderText) -> Self {
        // Fields kept were checked when read; a kept list that lacks one reads as no header.
        let columns = h
            .fields
            .as_ref()
            .and_then(|names| Columns::from_header(0, names.iter().map(String::as_str)).ok());
        Self {
            sep: h.sep,
            unset: h.unset,
            empty: h.empty,
            fields: h.fields.filter(|_| columns.is_some()),
            columns,
        }
    }
}

impl TsvHeader {
    pub(crate) fn sep(&self) -> &str {
        &self.sep
    }

    pub(crate) fn unset(&self) -> &str {
        &self.unset
    }

    pub(crate) fn empty(&self) -> &str {
        &self.empty
    }

    /// Where the needed fields sit, once a `#fields` line has been read.
    pub(crate) fn columns(&self) -> Option<&Columns> {
        self.columns.as_ref()
    }

    /// Reads one `#` line (without its `#`).
    fn directive(&mut self, no: usize, directive: &str) -> Result<(), ZeekError> {
        // `#separator` is written with a space, since the separator is not known yet.
        if let Some(value) = directive.strip_prefix("separator") {
            let value = unescape(no, value.trim_start_matches([' ', '\t']))?;
            if value.is_empty() {
                return Err(ZeekError::line_error(no, "the #separator is empty"));
            }
            self.sep = value;
            return Ok(());
        }
        let mut parts = directive.split(self.sep.as_str());
        let name = parts.next().unwrap_or("");
        match name {
            "fields" => {
                let names: Vec<&str> = parts.collect();
                self.columns = Some(Columns::from_header(no, names.iter().copied())?);
                self.fields = Some(names.into_iter().map(String::from).collect());
            }
            "unset_field" => self.unset = parts.next().unwrap_or("").to_string(),
            "empty_field" => self.empty = parts.next().unwrap_or("").to_string(),
            "path" => conn_path(no, parts.next().unwrap_or(""))?,
            // #open, #close, #types, #set_separator and comments carry nothing we need.
            _ => {}
        }
        Ok(())
    }
}

/// A `#path` header names a conn log: a dns.log also has ts and id.*, and counting its queries
/// as connections would silently give wrong records.
pub(super) fn conn_path(no: usize, path: &str) -> Result<(), ZeekError> {
    if path.starts_with("conn") {
        Ok(())
    } else {
        Err(ZeekError::line_error(
            no,
            format!("this is a {path:?} log; send a conn log"),
        ))
    }
}

/// Where the fields aggregation needs sit in a TSV line, from the latest `#fields` header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Columns {
    pub count: usize,
    /// The highest of the columns below: a line is cut into fields up to it.
    pub last: usize,
    pub ts: usize,
    pub orig_h: usize,
    pub resp_h: usize,
    pub resp_p: usize,
    pub orig_bytes: Option<usize>,
    pub resp_bytes: Option<usize>,
    pub uid: Option<usize>,
}

impl Columns {
    pub fn from_header<'a>(
        no: usize,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<Self, ZeekError> {
        let names: Vec<&str> = names.collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let need = |name: &str| {
            find(name).ok_or_else(|| ZeekError::MissingField {
                line: no,
                field: name.to_string(),
            })
        };
        let mut cols = Self {
            count: names.len(),
            last: 0,
            ts: need("ts")?,
            orig_h: need("id.orig_h")?,
            resp_h: need("id.resp_h")?,
            resp_p: need("id.resp_p")?,
            orig_bytes: find("orig_bytes"),
            resp_bytes: find("resp_bytes"),
            uid: find("uid"),
        };
        cols.last = [cols.ts, cols.orig_h, cols.resp_h, cols.resp_p]
            .into_iter()
            .chain(cols.orig_bytes)
            .chain(cols.resp_bytes)
            .chain(cols.uid)
            .max()
            .unwrap_or(0);
        Ok(cols)
    }
}

pub(crate) fn utf8(no: usize, line: &[u8]) -> Result<&str, ZeekError> {
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

/// Decodes the `\xHH` escapes Zeek writes in `#separator` (and nothing else there).
pub(crate) fn unescape(no: usize, text: &str) -> Result<String, ZeekError> {
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

fn host<'a>(no: usize, name: &str, value: Option<&'a str>) -> Result<Cow<'a, str>, ZeekError> {
    value
        .map(Cow::Borrowed)
        .ok_or_else(|| ZeekError::field_error(no, name, format!("{name} is unset")))
}

pub(crate) fn port_text(no: usize, value: Option<&str>) -> Result<u16, ZeekError> {
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

pub(crate) fn parse_count_text(no: usize, name: &str, value: &str) -> Result<u64, ZeekError> {
    value.parse().map_err(|_| {
        let why = if value.starts_with('-') {
            "is negative"
        } else {
            "is not a whole number of bytes"
        };
        ZeekError::field_error(no, name, format!("{name} {value:?} {why}"))
    })
}

/// How many times `byte` occurs in `text` (a loop the compiler vectorises).
fn count_byte(text: &[u8], byte: u8) -> usize {
    text.chunks(255)
        .map(|c| c.iter().map(|&b| u8::from(b == byte)).sum::<u8>() as usize)
        .sum()
}

/// Epoch seconds as Zeek writes them (`1700000000.123456`: up to ten digits below 4e9, a point
/// and up to six more) read exactly into a time, or `None` for any other text. For these, the
/// nearest `f64` is within 2.4e-7 s of the text, so [`ts_from_epoch`] (which rounds to the
/// microsecond) gives the same time: this is only the short way there.
/// `text` as a whole number of 1 to `max` decimal digits (no sign; `max` at most 19).
pub(crate) fn digits(text: &[u8], max: usize) -> Option<u64> {
    if text.is_empty() || text.len() > max {
        return None;
    }
    let mut n: u64 = 0;
    for &b in text {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

pub(crate) fn epoch_text(text: &[u8]) -> Option<DateTime<Utc>> {
    let (secs, micros) = epoch_parts(text)?;
    DateTime::from_timestamp(secs, micros * 1_000)
}

/// Epoch seconds as Zeek writes them (`1699999996.606582`): the whole seconds and the
/// microseconds, for at most 10 digits before the point (below 4e9) and 1 to 6 after it.
pub(crate) fn epoch_parts(text: &[u8]) -> Option<(i64, u32)> {
    let (whole, frac) = match memchr::memchr(b'.', text) {
        Some(dot) => (&text[..dot], Some(&text[dot + 1..])),
        None => (text, None),
    };
    let secs = i64::try_from(digits(whole, 10)?).ok()?;
    if secs >= 4_000_000_000 {
        return None;
    }
    let mut micros: u32 = 0;
    if let Some(frac) = frac {
        micros = u32::try_from(digits(frac, 6)?).ok()? * 10u32.pow(6 - frac.len() as u32);
    }
    Some((secs, micros))
}

/// Zeek's `time`: epoch seconds with a fraction, or (from `json.timestamps`) ISO 8601 text.
pub(crate) fn parse_ts_text(no: usize, text: &str) -> Result<DateTime<Utc>, ZeekError> {
    if let Some(ts) = epoch_text(text.as_bytes()) {
        return Ok(ts);
    }
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

pub(crate) fn ts_from_epoch(no: usize, secs: f64) -> Result<DateTime<Utc>, ZeekError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The short way reads epoch text to the time the `f64` way gives, or leaves it.
        #[test]
        fn epoch_text_is_the_f64_reading(
            secs in prop_oneof![0i64..4_000_000_000, 3_999_999_990i64..4_100_000_000],
            frac in 0u32..1_000_000,
            digits in 0usize..8,
        ) {
            let text = match digits {
                0 => secs.to_string(),
                7 => format!("{secs}.{frac:06}9"),
                n => format!("{secs}.{}", &format!("{frac:06}")[..n]),
            };
            let slow = ts_from_epoch(1, text.parse::<f64>().unwrap());
            match epoch_text(text.as_bytes()) {
                Some(fast) => prop_assert_eq!(Ok(fast), slow, "{}", text),
                None => prop_assert!(digits == 7 || secs >= 4_000_000_000, "{}", text),
            }
        }
    }

    #[test]
    fn epoch_text_leaves_what_it_does_not_read() {
        for text in [
            "",
            ".5",
            "1.",
            "-1",
            "+1",
            "1e3",
            "1.5.5",
            "12345678901",
            "4000000000",
            "a",
        ] {
            assert_eq!(epoch_text(text.as_bytes()), None, "{text}");
        }
        assert_eq!(
            epoch_text(b"3999999999.999999").map(|t| t.timestamp_micros()),
            Some(3_999_999_999_999_999)
        );
    }
}
