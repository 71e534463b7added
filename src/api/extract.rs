//! Request bodies: traffic records as JSON, NDJSON or CSV (or Zeek conn logs, aggregated into
//! window records by [`crate::zeek`]), turned into a columnar [`Batch`].
//!
//! Every format first becomes a [`Table`] of cells; choosing the features then checks each
//! record, so every format reports a bad record the same way (its index and the field).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::detector::Matrix;
use crate::detector::generator::SEED_FEATURES;
use crate::error::ApiError;
use crate::zeek::{ZeekFormat, ZeekOptions};

/// The media types a traffic body may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
    Csv,
    /// A Zeek conn log from the ASCII writer (`text/zeek-tsv`).
    ZeekTsv,
    /// A Zeek conn log from the JSON writer (`application/x-zeek-json`).
    ZeekJson,
}

impl BodyFormat {
    /// Reads `Content-Type`; a missing one is taken as JSON (what most clients send).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Ok(Self::Json);
        };
        let value = value.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = value.split(';').next().unwrap_or("").trim();
        match essence {
            "application/json" | "" => Ok(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Self::Ndjson),
            "text/csv" => Ok(Self::Csv),
            "text/zeek-tsv" => Ok(Self::ZeekTsv),
            "application/x-zeek-json" => Ok(Self::ZeekJson),
            other => Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!(
                    "Content-Type {other:?} is not accepted here; send application/json, application/x-ndjson, text/csv, text/zeek-tsv or application/x-zeek-json"
                ),
            )),
        }
    }

    /// Zeek conn logs: connections that become window records (`window`, `group_by` apply).
    pub fn is_zeek(self) -> bool {
        matches!(self, Self::ZeekTsv | Self::ZeekJson)
    }
}

/// One value of a record before it is known to be a feature, a label or an echoed field.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Missing,
    Null,
    Num(f64),
    Text(String),
    Bool(bool),
    /// An array or object: never a valid value for any field.
    Nested,
}

/// Records as rows of cells under column names (rows may be shorter than `names`: missing cells).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Table {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Most distinct field names a batch may carry.
pub(crate) const MAX_COLUMNS: usize = 1024;
/// Field names that results already use; such record fields are not echoed.
pub(crate) const RESERVED: [&str; 8] = [
    "index",
    "timestamp",
    "score",
    "is_anomaly",
    "severity",
    "explanation",
    "label",
    "fields",
];

impl Table {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn cell(&self, row: usize, col: usize) -> &Cell {
        self.rows[row].get(col).unwrap_or(&Cell::Missing)
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Builds a table from JSON objects; `base` is the index of the first record (for messages).
    pub fn from_json_records(records: Vec<Value>, max_records: usize) -> Result<Self, ApiError> {
        check_count(records.len(), max_records)?;
        let mut table = Table::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        table.rows.reserve(records.len());
        for (i, record) in records.into_iter().enumerate() {
            let Value::Object(map) = record else {
                return Err(ApiError::record_at(
                    i,
                    format!("record {i} is not a JSON object"),
                ));
            };
            table.push_object(map, &mut index, i)?;
        }
        Ok(table)
    }

    fn push_object(
        &mut self,
        map: Map<String, Value>,
        index: &mut HashMap<String, usize>,
        i: usize,
    ) -> Result<(), ApiError> {
        let mut row = vec![Cell::Missing; self.names.len()];
        for (key, value) in map {
            let col = match index.get(&key) {
                Some(&c) => c,
                None => {
                    if self.names.len() >= MAX_COLUMNS {
                        return Err(ApiError::record(
                            i,
                            key,
                            format!("records carry more than {MAX_COLUMNS} distinct fields"),
                        ));
                    }
                    self.names.push(key.clone());
                    index.insert(key, self.names.len() - 1);
                    self.names.len() - 1
                }
            };
            if row.len() <= col {
                row.resize(col + 1, Cell::Missing);
            }
            row[col] = match value {
                Value::Null => Cell::Null,
                Value::Bool(b) => Cell::Bool(b),
                Value::Number(n) => Cell::Num(n.as_f64().unwrap_or(f64::NAN)),
                Value::String(s) => Cell::Text(s),
                Value::Array(_) | Value::Object(_) => Cell::Nested,
            };
        }
        self.rows.push(row);
        Ok(())
    }

    /// Parses NDJSON: one JSON object per line; blank lines are skipped.
    pub fn from_ndjson(body: &[u8], max_records: usize) -> Result<Self, ApiError> {
        let mut table = Table::default();
        let mut index = HashMap::new();
        for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let i = table.rows.len();
            check_count(i + 1, max_records)?;
            let value: Value = super::json::from_slice(line).map_err(|e| {
                ApiError::bad_request(
                    "malformed-body",
                    format!("NDJSON line {}: {}", line_no + 1, super::json::message(&e)),
                )
            })?;
            let Value::Object(map) = value else {
                return Err(ApiError::record_at(
                    i,
                    format!("NDJSON line {} is not a JSON object", line_no + 1),
                ));
            };
            table.push_object(map, &mut index, i)?;
        }
        Ok(table)
    }

    /// Parses CSV with a header row. Numbers become numbers; `timestamp` stays text.
    pub fn from_csv(body: &[u8], max_records: usize) -> Result<Self, ApiError> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let (mut reader, headers) = csv_reader(body)?;
        let ts_col = headers.iter().position(|h| h == "timestamp");
        let mut table = Table {
            names: headers,
            rows: Vec::new(),
        };
        let mut record = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(csv_error(&e)),
            }
            check_count(table.rows.len() + 1, max_records)?;
            let row = record
                .iter()
                .enumerate()
                .map(|(j, text)| {
                    let text = text.trim();
                    if text.is_empty() {
                        Cell::Missing
                    } else if Some(j) == ts_col {
                        Cell::Text(text.to_string())
                    } else if let Ok(v) = text.parse::<f64>() {
                        Cell::Num(v)
                    } else {
                        Cell::Text(text.to_string())
                    }
                })
                .collect();
            table.rows.push(row);
        }
        Ok(table)
    }
}

/// A CSV reader over `body` (strict: every record as wide as the header), with its header row
/// read, trimmed and checked.
pub(crate) fn csv_reader<R: std::io::Read>(
    body: R,
) -> Result<(csv::Reader<R>, Vec<String>), ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .buffer_capacity(1 << 16)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| csv_error(&e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect::<Vec<_>>();
    check_csv_headers(&headers)?;
    Ok((reader, headers))
}

/// A CSV header row names every column once, and not too many.
fn check_csv_headers(headers: &[String]) -> Result<(), ApiError> {
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err(ApiError::bad_request(
            "malformed-body",
            "the CSV body has no header row",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for h in headers {
        if h.is_empty() {
            return Err(ApiError::bad_request(
                "malformed-body",
                "a CSV header is empty; every column needs a name",
            ));
        }
        if !seen.insert(h.as_str()) {
            return Err(ApiError::bad_request(
                "malformed-body",
                format!("CSV header {h:?} appears twice"),
            ));
        }
    }
    if headers.len() > MAX_COLUMNS {
        return Err(ApiError::bad_request(
            "malformed-body",
            format!("more than {MAX_COLUMNS} CSV columns"),
        ));
    }
    Ok(())
}

/// An RFC 3339 timestamp in UTC, or `None` when `s` is not one.
pub(crate) fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

pub(crate) fn bad_timestamp(i: usize) -> ApiError {
    ApiError::record(
        i,
        "timestamp",
        format!("record {i}: timestamp must be an RFC 3339 string such as 2024-01-01T00:00:00Z"),
    )
}

pub(crate) fn csv_error(e: &csv::Error) -> ApiError {
    let at = e
        .position()
        .map(|p| format!(" (line {})", p.line()))
        .unwrap_or_default();
    let what = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("a row has {len} fields but the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "the CSV body is not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    ApiError::bad_request("malformed-body", format!("CSV{at}: {what}"))
}

pub(crate) fn check_count(n: usize, max_records: usize) -> Result<(), ApiError> {
    if n > max_records {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-records",
            format!("a batch may hold at most {max_records} records; split it"),
        ));
    }
    Ok(())
}

/// A JSON body's records plus the other top-level fields (settings the caller reads).
pub struct JsonEnvelope {
    pub records: Option<Vec<Value>>,
    pub rest: Map<String, Value>,
}

/// Accepts a bare array of records or an object with a `records` array and other settings.
pub fn parse_json_envelope(body: &[u8]) -> Result<JsonEnvelope, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("malformed-body", "the body is empty"));
    }
    let value: Value = super::json::from_slice(body).map_err(|e| super::json::invalid(&e))?;
    match value {
        Value::Array(records) => Ok(JsonEnvelope {
            records: Some(records),
            rest: Map::new(),
        }),
        Value::Object(mut map) => {
            let records = match map.remove("records") {
                None => None,
                Some(Value::Array(r)) => Some(r),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "malformed-body",
                        "\"records\" must be an array of objects",
                    )
                    .with_field("records"));
                }
            };
            Ok(JsonEnvelope { records, rest: map })
        }
        _ => Err(ApiError::bad_request(
            "malformed-body",
            "the body must be a JSON array of records or an object with \"records\"",
        )),
    }
}

/// Which features a batch must provide.
#[derive(Debug, Clone, Copy)]
pub enum Features<'a> {
    /// Exactly these, in this order (a model's, or the ones a fit asked for).
    Given(&'a [String]),
    /// The four seed features when all are present, else every numeric field but `label`.
    Default,
}

/// Records checked and split into a feature matrix and what travels beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub features: Vec<String>,
    /// The records' feature values; shared (not copied) with the chart data kept for
    /// `GET /v1/chart.png` when there are at most four features.
    pub matrix: Arc<Matrix>,
    /// Each record's timestamp as sent (RFC 3339, already checked).
    pub timestamps: TextColumn,
    /// The timestamps parsed, when every record has one (for the chart).
    pub(crate) parsed_times: Option<Vec<DateTime<Utc>>>,
    /// String fields echoed back per record (`src_ip`, `host`, ...).
    pub echo: EchoFields,
    /// Present when labels were required.
    pub labels: Option<Vec<bool>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.matrix.n_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.matrix.n_rows() == 0
    }

    /// Parsed timestamps, when every record has one (parsed once, while the records were checked).
    pub fn parsed_timestamps(&self) -> Option<&[DateTime<Utc>]> {
        self.parsed_times.as_deref()
    }
}

/// One optional string per record, kept in one buffer (a million records cost two allocations,
/// not a million). Until the first value arrives only the count is kept, so a batch without
/// the column costs nothing per record.
#[derive(Debug, Clone, Default)]
pub struct TextColumn {
    text: String,
    /// End of record i's text in `text`; its start is the previous end. Records from
    /// `ends.len()` to `len` (all of them, before the first value) have no value.
    ends: Vec<usize>,
    present: Vec<bool>,
    len: usize,
}

/// Equal when every record has the same value, however they are laid out.
impl PartialEq for TextColumn {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && (0..self.len).all(|i| self.get(i) == other.get(i))
    }
}

impl TextColumn {
    pub fn push(&mut self, value: Option<&str>) {
        match value {
            Some(v) => {
                self.text.push_str(v);
                self.commit(true);
            }
            None => self.commit(false),
        }
    }

    /// Sets the value of the record being read (replacing one set before) without closing it.
    pub(crate) fn set_pending(&mut self, value: &str) {
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
        self.text.push_str(value);
    }

    /// Closes the record being read: with the pending value, or with none.
    pub(crate) fn commit(&mut self, present: bool) {
        if !present {
            self.text.truncate(self.ends.last().copied().unwrap_or(0));
            if self.ends.is_empty() {
                self.len += 1;
                return;
            }
        }
        // The first value: the records before it get their (empty, absent) entries now.
        self.ends.resize(self.len, 0);
        self.present.resize(self.len, false);
        self.ends.push(self.text.len());
        self.present.push(present);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        assert!(i < self.len, "record {i} of {}", self.len);
        if i >= self.ends.len() || !self.present[i] {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.text[start..self.ends[i]])
    }

    /// Record `i`'s value as an owned string.
    pub fn owned(&self, i: usize) -> Option<String> {
        self.get(i).map(str::to_string)
    }
}

/// The string fields each record carries besides its features, stored sparsely: a record costs
/// one offset plus its own fields, whatever fields other records have, and nothing while no
/// record has had any.
#[derive(Debug, Clone, Default)]
pub struct EchoFields {
    names: Vec<String>,
    text: String,
    /// (column, end of the value in `text`), record by record.
    entries: Vec<(u32, usize)>,
    /// End of record i's entries in `entries`; records from `record_ends.len()` to `len` (all
    /// of them, before the first field) have none.
    record_ends: Vec<usize>,
    len: usize,
}

/// Equal when every record has the same fields, however they are laid out.
impl PartialEq for EchoFields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| self.get(i) == other.get(i))
    }
}

impl EchoFields {
    /// The column number of `name`, added when new.
    pub fn column(&mut self, name: &str) -> u32 {
        match self.names.iter().position(|n| n == name) {
            Some(c) => c as u32,
            None => {
                self.names.push(name.to_string());
                (self.names.len() - 1) as u32
            }
        }
    }

    /// Adds a field to the record being built (closed by [`EchoFields::end_record`]).
    pub fn push(&mut self, column: u32, value: &str) {
        self.text.push_str(value);
        self.entries.push((column, self.text.len()));
    }

    pub fn end_record(&mut self) {
        if !self.entries.is_empty() {
            // The records before the first field get their (empty) entries now.
            self.record_ends.resize(self.len, 0);
            self.record_ends.push(self.entries.len());
        }
        self.len += 1;
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Record `i`'s fields by name, borrowed (a later field of the same name wins).
    pub fn fields(&self, i: usize) -> BTreeMap<&str, &str> {
        assert!(i < self.len, "record {i} of {}", self.len);
        if i >= self.record_ends.len() {
            return BTreeMap::new();
        }
        let first = if i == 0 { 0 } else { self.record_ends[i - 1] };
        let mut start = if first == 0 {
            0
        } else {
            self.entries[first - 1].1
        };
        let mut out = BTreeMap::new();
        for &(c, end) in &self.entries[first..self.record_ends[i]] {
            out.insert(self.names[c as usize].as_str(), &self.text[start..end]);
            start = end;
        }
        out
    }

    /// Record `i`'s fields by name (a later field of the same name wins).
    pub fn get(&self, i: usize) -> BTreeMap<String, String> {
        self.fields(i)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Table {
    /// Checks every record and builds the batch. `require_labels` makes `label` (0/1) mandatory.
    pub fn into_batch(
        self,
        features: Features<'_>,
        require_labels: bool,
    ) -> Result<Batch, ApiError> {
        if self.is_empty() {
            return Err(ApiError::unprocessable(
                "empty-batch",
                "the batch holds no records",
            ));
        }
        let features: Vec<String> = match features {
            Features::Given(f) => f.to_vec(),
            Features::Default => self.default_features()?,
        };
        let mut cols = Vec::with_capacity(features.len());
        for f in &features {
            match self.column(f) {
                Some(c) => cols.push(c),
                None => {
                    return Err(ApiError::record(
                        0,
                        f.clone(),
                        format!("record 0: feature {f:?} is missing"),
                    ));
                }
            }
        }
        let n = self.len();
        let d = features.len();
        let mut data = Vec::with_capacity(n * d);
        for i in 0..n {
            for (&c, name) in cols.iter().zip(&features) {
                let v = match self.cell(i, c) {
                    Cell::Num(v) if v.is_finite() => *v,
                    Cell::Num(_) => {
                        return Err(ApiError::record(
                            i,
                            name.clone(),
                            format!("record {i}: feature {name:?} is not a finite number"),
                        ));
                    }
                    Cell::Missing | Cell::Null => {
                        return Err(ApiError::record(
                            i,
                            name.clone(),
                            format!("record {i}: feature {name:?} is missing"),
                        ));
                    }
                    _ => {
                        return Err(ApiError::record(
                            i,
                            name.clone(),
                            format!("record {i}: feature {name:?} must be a number"),
                        ));
                    }
                };
                data.push(v);
            }
        }
        let matrix = Matrix::new(n, d, data)
            .map_err(|e| ApiError::unprocessable("invalid-records", e.to_string()))?;

        let mut timestamps = TextColumn::default();
        let mut parsed = Vec::new();
        let mut all_parsed = true;
        match self.column("timestamp") {
            None => {
                for _ in 0..n {
                    timestamps.push(None);
                }
                all_parsed = false;
            }
            Some(c) => {
                for i in 0..n {
                    match self.cell(i, c) {
                        Cell::Missing | Cell::Null => {
                            timestamps.push(None);
                            all_parsed = false;
                        }
                        Cell::Text(s) => match parse_timestamp(s) {
                            Some(t) => {
                                timestamps.push(Some(s));
                                parsed.push(t);
                            }
                            None => return Err(bad_timestamp(i)),
                        },
                        _ => return Err(bad_timestamp(i)),
                    }
                }
            }
        }

        let labels = if require_labels {
            let Some(c) = self.column("label") else {
                return Err(ApiError::record(
                    0,
                    "label",
                    "record 0: label is missing; evaluation needs label 0 or 1 on every record",
                ));
            };
            Some(
                (0..n)
                    .map(|i| match self.cell(i, c) {
                        Cell::Num(v) if *v == 0.0 => Ok(false),
                        Cell::Num(v) if *v == 1.0 => Ok(true),
                        Cell::Bool(b) => Ok(*b),
                        _ => Err(ApiError::record(
                            i,
                            "label",
                            format!("record {i}: label must be 0 or 1"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
        } else {
            None
        };

        let echo_cols: Vec<usize> = (0..self.names.len())
            .filter(|&c| !cols.contains(&c) && !RESERVED.contains(&self.names[c].as_str()))
            .collect();
        let mut echo = EchoFields::default();
        let echo_ids: Vec<u32> = echo_cols
            .iter()
            .map(|&c| echo.column(&self.names[c]))
            .collect();
        for i in 0..n {
            for (&c, &id) in echo_cols.iter().zip(&echo_ids) {
                if let Cell::Text(s) = self.cell(i, c) {
                    echo.push(id, s);
                }
            }
            echo.end_record();
        }

        Ok(Batch {
            features,
            matrix: Arc::new(matrix),
            timestamps,
            parsed_times: all_parsed.then_some(parsed),
            echo,
            labels,
        })
    }

    fn default_features(&self) -> Result<Vec<String>, ApiError> {
        if SEED_FEATURES.iter().all(|f| self.column(f).is_some()) {
            return Ok(SEED_FEATURES.iter().map(|s| s.to_string()).collect());
        }
        let numeric: Vec<String> = self
            .names
            .iter()
            .enumerate()
            .filter(|(c, name)| {
                name.as_str() != "label"
                    && name.as_str() != "timestamp"
                    && matches!(self.cell(0, *c), Cell::Num(_))
            })
            .map(|(_, n)| n.clone())
            .collect();
        if numeric.is_empty() {
            return Err(ApiError::unprocessable(
                "no-features",
                "no numeric fields to use as features; send numbers or name the features",
            )
            .with_field("features"));
        }
        Ok(numeric)
    }
}

/// Parses any traffic body into a table (JSON bodies: the records of the envelope only); Zeek
/// logs are aggregated with the default options (1h windows, whole network).
pub fn parse_table(format: BodyFormat, body: &[u8], max_records: usize) -> Result<Table, ApiError> {
    parse_table_with(format, body, max_records, &ZeekOptions::default())
}

/// [`parse_table`] with the options that turn Zeek connections into window records (ignored for
/// the other formats). `max_records` bounds the window records, not the connections: the body
/// size limit bounds those.
pub fn parse_table_with(
    format: BodyFormat,
    body: &[u8],
    max_records: usize,
    zeek: &ZeekOptions,
) -> Result<Table, ApiError> {
    match format {
        BodyFormat::ZeekTsv | BodyFormat::ZeekJson => {
            let zeek_format = if format == BodyFormat::ZeekTsv {
                ZeekFormat::Tsv
            } else {
                ZeekFormat::Json
            };
            let table = crate::zeek::to_table(body, zeek_format, zeek)?;
            check_count(table.len(), max_records)?;
            Ok(table)
        }
        BodyFormat::Csv => Table::from_csv(body, max_records),
        BodyFormat::Ndjson => Table::from_ndjson(body, max_records),
        BodyFormat::Json => {
            let env = parse_json_envelope(body)?;
            if let Some(k) = env.rest.keys().next() {
                return Err(ApiError::bad_request(
                    "unknown-field",
                    format!("unknown top-level field {k:?}"),
                )
                .with_field(k.clone()));
            }
            let records = env.records.ok_or_else(|| {
                ApiError::bad_request("malformed-body", "the body has no \"records\" array")
                    .with_field("records")
            })?;
            Table::from_json_records(records, max_records)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_cost_nothing_per_record_until_their_first_value() {
        let mut t = TextColumn::default();
        for _ in 0..3 {
            t.push(None);
        }
        assert!(t.ends.is_empty() && t.present.is_empty());
        t.set_pending("x");
        t.commit(false);
        assert!(t.ends.is_empty(), "a value set then dropped is no value");
        t.push(Some("a"));
        t.push(None);
        t.set_pending("zz");
        t.set_pending("bc");
        t.commit(true);
        let got: Vec<_> = (0..t.len()).map(|i| t.get(i)).collect();
        assert_eq!(got, [None, None, None, None, Some("a"), None, Some("bc")]);
        let mut dense = TextColumn::default();
        for v in &got {
            dense.push(*v);
        }
        assert_eq!(t, dense);
        assert_ne!(t, TextColumn::default());

        let mut e = EchoFields::default();
        e.end_record();
        e.end_record();
        assert!(e.record_ends.is_empty());
        let host = e.column("host");
        e.push(host, "h2");
        e.end_record();
        e.end_record();
        assert_eq!(e.len(), 4);
        assert!(e.fields(0).is_empty() && e.fields(1).is_empty() && e.fields(3).is_empty());
        assert_eq!(e.fields(2).get("host"), Some(&"h2"));
    }

    fn seed_json() -> &'static [u8] {
        br#"[{"timestamp":"2024-01-01T00:00:00Z","bytes_sent":1.0,"bytes_received":2,"connections":3,"active_sessions":4,"src_ip":"10.0.0.1"},
             {"bytes_sent":5,"bytes_received":6,"connections":7,"active_sessions":8,"label":1}]"#
    }

    #[test]
    fn json_records_become_a_batch_with_echo() {
        let t = parse_table(BodyFormat::Json, seed_json(), 10).unwrap();
        let b = t.into_batch(Features::Default, false).unwrap();
        assert_eq!(b.features, SEED_FEATURES);
        assert_eq!(b.matrix.row(1), &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(
            b.echo.get(0).get("src_ip").map(String::as_str),
            Some("10.0.0.1")
        );
        assert_eq!(b.timestamps.get(1), None);
    }

    #[test]
    fn csv_and_ndjson_agree_with_json() {
        let csv = b"\xEF\xBB\xBFtimestamp,bytes_sent,bytes_received,connections,active_sessions,src_ip\n2024-01-01T00:00:00Z,1,2,3,4,10.0.0.1\n";
        let b = parse_table(BodyFormat::Csv, csv, 10)
            .unwrap()
            .into_batch(Features::Default, false)
            .unwrap();
        assert_eq!(b.matrix.row(0), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(b.echo.get(0)["src_ip"], "10.0.0.1");
        let nd = b"{\"a\":1,\"b\":2}\n\n{\"a\":3,\"b\":4}\n";
        let b = parse_table(BodyFormat::Ndjson, nd, 10)
            .unwrap()
            .into_batch(Features::Default, false)
            .unwrap();
        assert_eq!(b.features, ["a", "b"]);
        assert_eq!(b.matrix.row(1), &[3.0, 4.0]);
    }

    #[test]
    fn bad_records_name_index_and_field() {
        let body = br#"[{"x":1},{"x":"abc"}]"#;
        let err = parse_table(BodyFormat::Json, body, 10)
            .unwrap()
            .into_batch(Features::Given(&["x".into()]), false)
            .unwrap_err();
        assert_eq!((err.index, err.field.as_deref()), (Some(1), Some("x")));
        let body = br#"[{"x":1},{"y":2}]"#;
        let err = parse_table(BodyFormat::Json, body, 10)
            .unwrap()
            .into_batch(Features::Given(&["x".into()]), false)
            .unwrap_err();
        assert_eq!(err.index, Some(1));
        let csv = b"x\n1\nNaN\n";
        let err = parse_table(BodyFormat::Csv, csv, 10)
            .unwrap()
            .into_batch(Features::Given(&["x".into()]), false)
            .unwrap_err();
        assert_eq!(err.index, Some(1));
        assert!(err.detail.contains("finite"));
    }

    #[test]
    fn malformed_bodies_are_400() {
        for (fmt, body) in [
            (BodyFormat::Json, &b"{"[..]),
            (BodyFormat::Json, b""),
            (BodyFormat::Json, b"42"),
            (BodyFormat::Csv, b"a,b\n1,2,3\n"),
            (BodyFormat::Csv, b"a,a\n1,2\n"),
            (BodyFormat::Ndjson, b"{\"a\":1}\n{oops\n"),
            (BodyFormat::Json, b"{\"records\":[],\"extra\":1}"),
        ] {
            let err = parse_table(fmt, body, 10).unwrap_err();
            assert_eq!(err.status.as_u16(), 400, "{body:?}: {err}");
        }
        let err = parse_table(BodyFormat::Json, b"[{},{},{}]", 2).unwrap_err();
        assert_eq!(err.status.as_u16(), 413);
        let err = parse_table(BodyFormat::Json, b"[]", 2)
            .unwrap()
            .into_batch(Features::Default, false)
            .unwrap_err();
        assert_eq!(err.code, "empty-batch");
    }

    #[test]
    fn labels_are_checked_when_required() {
        let body = br#"[{"x":1,"label":0},{"x":2,"label":1}]"#;
        let b = parse_table(BodyFormat::Json, body, 10)
            .unwrap()
            .into_batch(Features::Default, true)
            .unwrap();
        assert_eq!(b.labels, Some(vec![false, true]));
        assert_eq!(b.features, ["x"]);
        let body = br#"[{"x":1,"label":2}]"#;
        let err = parse_table(BodyFormat::Json, body, 10)
            .unwrap()
            .into_batch(Features::Default, true)
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("label"));
    }
}
