//! The cell table: the first reader of this service, kept only as the oracle the streaming readers are tested against.
//!
//! Every format first becomes a [`Table`] of cells; choosing the features then checks each
//! record. The readers in this module's siblings must answer every body as this does (same
//! batch, same first problem); the parity tests in `builder.rs` hold them to it.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::BodyFormat;
use super::batch::{
    Batch, EchoFields, Features, MAX_COLUMNS, RESERVED, TextColumn, parse_timestamp,
};
use super::csv::{cell, csv_reader, next_row};
use super::error::{RecordError, RecordErrorKind, bad_timestamp, check_count};
use super::zeek::{GroupBy, ZeekFormat, ZeekOptions};
use crate::detector::Matrix;
use crate::detector::generator::SEED_FEATURES;

/// One value of a record before it is known to be a feature, a label or an echoed field (an
/// array or object is `Nested`: never a valid value for any field).
pub(crate) use super::builder::OwnedCell as Cell;

/// Records as rows of cells under column names (rows may be shorter than `names`: missing cells).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Table {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

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
    pub fn from_json_records(records: Vec<Value>, max_records: usize) -> Result<Self, RecordError> {
        check_count(records.len(), max_records)?;
        let mut table = Table::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        table.rows.reserve(records.len());
        for (i, record) in records.into_iter().enumerate() {
            let Value::Object(map) = record else {
                return Err(RecordError::record_at(
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
    ) -> Result<(), RecordError> {
        let mut row = vec![Cell::Missing; self.names.len()];
        for (key, value) in map {
            let col = match index.get(&key) {
                Some(&c) => c,
                None => {
                    if self.names.len() >= MAX_COLUMNS {
                        return Err(RecordError::record(
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
    pub fn from_ndjson(body: &[u8], max_records: usize) -> Result<Self, RecordError> {
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
                RecordError::malformed(format!(
                    "NDJSON line {}: {}",
                    line_no + 1,
                    super::json::message(&e)
                ))
            })?;
            let Value::Object(map) = value else {
                return Err(RecordError::record_at(
                    i,
                    format!("NDJSON line {} is not a JSON object", line_no + 1),
                ));
            };
            table.push_object(map, &mut index, i)?;
        }
        Ok(table)
    }

    /// Parses CSV with a header row. Numbers become numbers; `timestamp` stays text.
    pub fn from_csv(body: &[u8], max_records: usize) -> Result<Self, RecordError> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let (mut reader, headers) = csv_reader(body)?;
        let ts_col = headers.iter().position(|h| h == "timestamp");
        let mut table = Table {
            names: headers,
            rows: Vec::new(),
        };
        let mut record = csv::StringRecord::new();
        while next_row(&mut reader, &mut record)? {
            check_count(table.rows.len() + 1, max_records)?;
            let row = record
                .iter()
                .enumerate()
                .map(|(j, text)| Cell::new(cell(text, Some(j) == ts_col)))
                .collect();
            table.rows.push(row);
        }
        Ok(table)
    }
}

/// A JSON body's records plus the other top-level fields (settings the caller reads).
pub struct JsonEnvelope {
    pub records: Option<Vec<Value>>,
    pub rest: Map<String, Value>,
}

/// Accepts a bare array of records or an object with a `records` array and other settings.
pub fn parse_json_envelope(body: &[u8]) -> Result<JsonEnvelope, RecordError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RecordError::malformed("the body is empty"));
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
                    return Err(
                        RecordError::malformed("\"records\" must be an array of objects")
                            .with_field("records"),
                    );
                }
            };
            Ok(JsonEnvelope { records, rest: map })
        }
        _ => Err(RecordError::malformed(
            "the body must be a JSON array of records or an object with \"records\"",
        )),
    }
}

impl Table {
    /// Checks every record and builds the batch. `require_labels` makes `label` (0/1) mandatory.
    pub fn into_batch(
        self,
        features: Features<'_>,
        require_labels: bool,
    ) -> Result<Batch, RecordError> {
        if self.is_empty() {
            return Err(RecordError::empty_batch());
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
                    return Err(RecordError::record(
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
                let cell = self.cell(i, c);
                let v = match (cell.num(), cell) {
                    (Some(v), _) if v.is_finite() => v,
                    (Some(_), _) => {
                        return Err(RecordError::record(
                            i,
                            name.clone(),
                            format!("record {i}: feature {name:?} is not a finite number"),
                        ));
                    }
                    (None, Cell::Missing | Cell::Null) => {
                        return Err(RecordError::record(
                            i,
                            name.clone(),
                            format!("record {i}: feature {name:?} is missing"),
                        ));
                    }
                    _ => {
                        return Err(RecordError::record(
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
            .map_err(|e| RecordError::new(RecordErrorKind::InvalidRecords, e.to_string()))?;

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
                return Err(RecordError::record(
                    0,
                    "label",
                    "record 0: label is missing; evaluation needs label 0 or 1 on every record",
                ));
            };
            Some(
                (0..n)
                    .map(|i| match self.cell(i, c) {
                        Cell::Bool(b) => Ok(*b),
                        c if c.num() == Some(0.0) => Ok(false),
                        c if c.num() == Some(1.0) => Ok(true),
                        _ => Err(RecordError::record(
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
                if let Cell::Text(s) | Cell::NumText(_, s) = self.cell(i, c) {
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

    fn default_features(&self) -> Result<Vec<String>, RecordError> {
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
                    && self.cell(0, *c).num().is_some()
            })
            .map(|(_, n)| n.clone())
            .collect();
        if numeric.is_empty() {
            return Err(RecordError::new(
                RecordErrorKind::NoFeatures,
                "no numeric fields to use as features; send numbers or name the features",
            )
            .with_field("features"));
        }
        Ok(numeric)
    }
}

/// Parses any traffic body into a table (JSON bodies: the records of the envelope only); Zeek
/// logs are aggregated with the default options (1h windows, whole network).
pub fn parse_table(
    format: BodyFormat,
    body: &[u8],
    max_records: usize,
) -> Result<Table, RecordError> {
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
) -> Result<Table, RecordError> {
    match format {
        BodyFormat::ZeekTsv | BodyFormat::ZeekJson => {
            let zeek_format = if format == BodyFormat::ZeekTsv {
                ZeekFormat::Tsv
            } else {
                ZeekFormat::Json
            };
            let table = zeek_table(body, zeek_format, zeek)?;
            check_count(table.len(), max_records)?;
            Ok(table)
        }
        BodyFormat::Csv => Table::from_csv(body, max_records),
        BodyFormat::Ndjson => Table::from_ndjson(body, max_records),
        BodyFormat::Json => {
            let env = parse_json_envelope(body)?;
            if let Some(k) = env.rest.keys().next() {
                return Err(RecordError::new(
                    RecordErrorKind::UnknownField,
                    format!("unknown top-level field {k:?}"),
                )
                .with_field(k.clone()));
            }
            let records = env.records.ok_or_else(|| {
                RecordError::malformed("the body has no \"records\" array").with_field("records")
            })?;
            Table::from_json_records(records, max_records)
        }
    }
}

/// A conn log as the table of its window records: columns `timestamp` (RFC 3339 window start),
/// `entity` (only when grouped), `bytes_sent`, `bytes_received`, `connections`, `active_sessions`.
fn zeek_table(body: &[u8], format: ZeekFormat, opts: &ZeekOptions) -> Result<Table, RecordError> {
    let conns = super::zeek::parse_conn_log(body, format)?;
    let records = super::zeek::aggregate(&conns, opts);
    let grouped = opts.group_by != GroupBy::None;
    let mut names = vec!["timestamp".to_string()];
    if grouped {
        names.push("entity".to_string());
    }
    names.extend(super::zeek::WINDOW_FEATURES.map(String::from));
    let rows = records
        .into_iter()
        .map(|r| {
            let mut row = vec![Cell::Text(r.start_text())];
            let features = r.features();
            if grouped {
                row.push(r.entity.map_or(Cell::Missing, Cell::Text));
            }
            row.extend(features.map(Cell::Num));
            row
        })
        .collect();
    Ok(Table { names, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            // The kinds answered 400.
            let err = parse_table(fmt, body, 10).unwrap_err();
            assert!(
                matches!(
                    err.kind,
                    RecordErrorKind::Malformed | RecordErrorKind::UnknownField
                ),
                "{body:?}: {err}"
            );
        }
        let err = parse_table(BodyFormat::Json, b"[{},{},{}]", 2).unwrap_err();
        assert_eq!(err.kind, RecordErrorKind::TooManyRecords);
        let err = parse_table(BodyFormat::Json, b"[]", 2)
            .unwrap()
            .into_batch(Features::Default, false)
            .unwrap_err();
        assert_eq!(err.kind, RecordErrorKind::EmptyBatch);
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
