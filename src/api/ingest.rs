//! Score bodies parsed straight into a columnar [`Batch`]: CSV and NDJSON while the body is still
//! arriving, JSON with a typed visitor (no `serde_json::Value` tree, no table of cells).
//!
//! Every record is checked as [`Table::into_batch`](super::extract::Table::into_batch) checks a
//! table, and when a body has several problems the one reported is the one that path reports
//! (malformed syntax and the record limit first, then missing or bad features, then timestamps,
//! then labels), so a client sees the same problem whichever path its body takes.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Buf, Bytes};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use tokio::sync::mpsc;

use super::extract::{
    Batch, BodyFormat, EchoFields, Features, MAX_COLUMNS, RESERVED, TextColumn, bad_timestamp,
    check_count, csv_error, parse_timestamp,
};
use crate::detector::Matrix;
use crate::detector::generator::{SEED_FEATURES, SampleRecord};
use crate::detector::model::Model;
use crate::error::ApiError;
use crate::zeek::ZeekOptions;

/// Records buffered by the parser before they are known to be valid: bounded by `max_records`.
pub struct BatchBuilder {
    features: Vec<String>,
    require_labels: bool,
    max_records: usize,
    n: usize,
    data: Vec<f64>,
    /// What the current record holds for each feature.
    slots: Vec<Slot>,
    feature_seen: Vec<bool>,
    timestamps: TextColumn,
    parsed: Vec<DateTime<Utc>>,
    all_timestamps: bool,
    current_ts: Timestamp,
    labels: Vec<bool>,
    label_seen: bool,
    current_label: Option<bool>,
    echo: EchoFields,
    /// JSON keys seen so far (distinct field names) and what each is.
    roles: HashMap<String, Role>,
    /// The previous record's keys by position: records usually repeat them in order.
    key_cache: Vec<(String, Role)>,
    feature_error: Option<ApiError>,
    timestamp_error: Option<ApiError>,
    label_error: Option<ApiError>,
    /// Gets each full chunk of valid records (row-major features) while parsing goes on.
    chunk_sink: Option<ChunkSink>,
    /// Records handed to `chunk_sink` so far.
    sunk: usize,
}

/// Receives `(index of the first record, row-major features)` of each chunk of records.
pub type ChunkSink = Box<dyn FnMut(usize, &[f64]) + Send>;

/// Records per chunk handed to a [`ChunkSink`].
pub const CHUNK_RECORDS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Missing,
    Num(f64),
    NotNumber,
}

#[derive(Debug, Clone)]
enum Timestamp {
    Missing,
    Valid(DateTime<Utc>),
    Invalid,
}

/// What a field of a record is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    Feature(usize),
    Timestamp,
    Label,
    Echo(u32),
    Skip,
}

/// A value of a record as a parser saw it.
#[derive(Debug, Clone, Copy)]
pub enum CellRef<'a> {
    Missing,
    Null,
    Num(f64),
    Text(&'a str),
    Bool(bool),
    Nested,
}

impl BatchBuilder {
    pub fn new(features: &[String], require_labels: bool, max_records: usize) -> Self {
        Self {
            features: features.to_vec(),
            require_labels,
            max_records,
            n: 0,
            data: Vec::new(),
            slots: vec![Slot::Missing; features.len()],
            feature_seen: vec![false; features.len()],
            timestamps: TextColumn::default(),
            parsed: Vec::new(),
            all_timestamps: true,
            current_ts: Timestamp::Missing,
            labels: Vec::new(),
            label_seen: false,
            current_label: None,
            echo: EchoFields::default(),
            roles: HashMap::new(),
            key_cache: Vec::new(),
            feature_error: None,
            timestamp_error: None,
            label_error: None,
            chunk_sink: None,
            sunk: 0,
        }
    }

    /// Hands every full chunk of [`CHUNK_RECORDS`] valid records to `sink` as soon as it is
    /// parsed (records after a bad one are not handed on: the batch will be refused).
    pub fn with_chunk_sink(mut self, sink: ChunkSink) -> Self {
        self.chunk_sink = Some(sink);
        self
    }

    /// Records handed to the chunk sink; the rest of the batch starts here.
    pub fn sunk(&self) -> usize {
        self.sunk
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// What field `name` is for; marks a feature as present in the batch.
    fn role(&mut self, name: &str) -> Role {
        if let Some(j) = self.features.iter().position(|f| f == name) {
            self.feature_seen[j] = true;
            Role::Feature(j)
        } else if name == "timestamp" {
            Role::Timestamp
        } else if name == "label" {
            self.label_seen = true;
            Role::Label
        } else if RESERVED.contains(&name) {
            Role::Skip
        } else {
            Role::Echo(self.echo.column(name))
        }
    }

    /// Roles of CSV columns, in header order.
    pub fn header_roles(&mut self, names: &[String]) -> Vec<Role> {
        names.iter().map(|n| self.role(n)).collect()
    }

    /// The role of JSON key `key` at position `pos` of record `i`; a problem when the batch
    /// would carry more than [`MAX_COLUMNS`] distinct fields.
    fn key_role(&mut self, key: &str, pos: usize) -> Result<Role, ApiError> {
        if let Some((k, role)) = self.key_cache.get(pos)
            && k == key
        {
            return Ok(*role);
        }
        let role = match self.roles.get(key) {
            Some(&r) => r,
            None => {
                if self.roles.len() >= MAX_COLUMNS {
                    let i = self.n.saturating_sub(1);
                    return Err(ApiError::record(
                        i,
                        key,
                        format!("records carry more than {MAX_COLUMNS} distinct fields"),
                    ));
                }
                let r = self.role(key);
                self.roles.insert(key.to_string(), r);
                r
            }
        };
        if pos < self.key_cache.len() {
            self.key_cache[pos] = (key.to_string(), role);
        } else if pos == self.key_cache.len() {
            self.key_cache.push((key.to_string(), role));
        }
        Ok(role)
    }

    pub fn start_record(&mut self) {
        self.n += 1;
        self.slots.fill(Slot::Missing);
        self.current_ts = Timestamp::Missing;
        self.current_label = None;
    }

    /// Sets field `role` of the current record (a later value of the same field wins).
    pub fn field(&mut self, role: Role, cell: CellRef<'_>) {
        match role {
            Role::Feature(j) => {
                self.slots[j] = match cell {
                    CellRef::Missing | CellRef::Null => Slot::Missing,
                    CellRef::Num(v) => Slot::Num(v),
                    _ => Slot::NotNumber,
                }
            }
            Role::Timestamp => {
                self.current_ts = match cell {
                    CellRef::Missing | CellRef::Null => Timestamp::Missing,
                    CellRef::Text(s) => match parse_timestamp(s) {
                        Some(t) => {
                            // Kept at the end of the column's text until the record closes.
                            self.timestamps.set_pending(s);
                            Timestamp::Valid(t)
                        }
                        None => Timestamp::Invalid,
                    },
                    _ => Timestamp::Invalid,
                }
            }
            Role::Label => {
                if self.require_labels {
                    self.current_label = match cell {
                        CellRef::Num(0.0) => Some(false),
                        CellRef::Num(1.0) => Some(true),
                        CellRef::Bool(b) => Some(b),
                        _ => None,
                    }
                }
            }
            Role::Echo(c) => {
                if let CellRef::Text(s) = cell {
                    self.echo.push(c, s);
                }
            }
            Role::Skip => {}
        }
    }

    pub fn end_record(&mut self) {
        let i = self.n - 1;
        if self.feature_error.is_none() {
            for (j, slot) in self.slots.iter().enumerate() {
                let name = &self.features[j];
                let problem = match *slot {
                    Slot::Num(v) if v.is_finite() => continue,
                    Slot::Num(_) => "is not a finite number",
                    Slot::Missing => "is missing",
                    Slot::NotNumber => "must be a number",
                };
                self.feature_error = Some(ApiError::record(
                    i,
                    name.clone(),
                    format!("record {i}: feature {name:?} {problem}"),
                ));
                break;
            }
        }
        if self.feature_error.is_none() {
            self.data.extend(self.slots.iter().map(|s| match s {
                Slot::Num(v) => *v,
                _ => f64::NAN,
            }));
            if self.n - self.sunk == CHUNK_RECORDS
                && let Some(sink) = &mut self.chunk_sink
            {
                let d = self.features.len();
                sink(self.sunk, &self.data[self.sunk * d..]);
                self.sunk = self.n;
            }
        }
        match std::mem::replace(&mut self.current_ts, Timestamp::Missing) {
            Timestamp::Valid(t) => {
                self.timestamps.commit(true);
                self.parsed.push(t);
            }
            Timestamp::Missing => {
                self.timestamps.commit(false);
                self.all_timestamps = false;
            }
            Timestamp::Invalid => {
                self.timestamps.commit(false);
                self.all_timestamps = false;
                if self.timestamp_error.is_none() {
                    self.timestamp_error = Some(bad_timestamp(i));
                }
            }
        }
        if self.require_labels {
            match self.current_label {
                Some(l) => self.labels.push(l),
                None => {
                    if self.label_error.is_none() {
                        self.label_error = Some(ApiError::record(
                            i,
                            "label",
                            format!("record {i}: label must be 0 or 1"),
                        ));
                    }
                }
            }
        }
        self.echo.end_record();
    }

    /// The checked batch, or the first problem [`Table::into_batch`] would report.
    ///
    /// [`Table::into_batch`]: super::extract::Table::into_batch
    pub fn finish(self) -> Result<Batch, ApiError> {
        if self.n == 0 {
            return Err(ApiError::unprocessable(
                "empty-batch",
                "the batch holds no records",
            ));
        }
        if let Some(j) = self.feature_seen.iter().position(|seen| !seen) {
            let f = &self.features[j];
            return Err(ApiError::record(
                0,
                f.clone(),
                format!("record 0: feature {f:?} is missing"),
            ));
        }
        if let Some(e) = self.feature_error {
            return Err(e);
        }
        let matrix = Matrix::new(self.n, self.features.len(), self.data)
            .map_err(|e| ApiError::unprocessable("invalid-records", e.to_string()))?;
        if let Some(e) = self.timestamp_error {
            return Err(e);
        }
        let labels = if self.require_labels {
            if !self.label_seen {
                return Err(ApiError::record(
                    0,
                    "label",
                    "record 0: label is missing; evaluation needs label 0 or 1 on every record",
                ));
            }
            if let Some(e) = self.label_error {
                return Err(e);
            }
            Some(self.labels)
        } else {
            None
        };
        Ok(Batch {
            features: self.features,
            matrix: std::sync::Arc::new(matrix),
            timestamps: self.timestamps,
            parsed_times: self.all_timestamps.then_some(self.parsed),
            echo: self.echo,
            labels,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The body as it arrives

/// A body chunk, or why the body could not be read (too large, connection lost).
pub type BodyChunk = Result<Bytes, ApiError>;

/// Reads body chunks sent by the request task; a blocking reader for a parser thread.
pub struct BodyReader {
    rx: mpsc::Receiver<BodyChunk>,
    current: Bytes,
    /// Why the body stopped early: this wins over any parse problem it caused.
    failed: Option<ApiError>,
    done: bool,
}

impl BodyReader {
    pub fn new(rx: mpsc::Receiver<BodyChunk>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
            failed: None,
            done: false,
        }
    }

    fn next_chunk(&mut self) -> bool {
        if self.done {
            return false;
        }
        match self.rx.blocking_recv() {
            Some(Ok(b)) => {
                self.current = b;
                true
            }
            Some(Err(e)) => {
                self.failed = Some(e);
                self.done = true;
                false
            }
            None => {
                self.done = true;
                false
            }
        }
    }

    /// Drops `prefix` (a byte order mark) if the body starts with it, however it is chunked.
    pub fn skip_prefix(&mut self, prefix: &[u8]) {
        let mut head = Vec::new();
        while head.len() < prefix.len() {
            if self.current.is_empty() && !self.next_chunk() {
                break;
            }
            let take = (prefix.len() - head.len()).min(self.current.len());
            head.extend_from_slice(&self.current[..take]);
            self.current.advance(take);
        }
        if head != prefix {
            // Not the prefix: put the bytes back in front of the rest.
            let mut joined = head;
            joined.extend_from_slice(&self.current);
            self.current = Bytes::from(joined);
        }
    }

    /// The result of parsing: a body that failed to arrive wins over what the parser made of
    /// it, and after a parse problem the rest is still read, so an oversized body is a 413
    /// whatever it holds (as when the body was read whole first).
    pub fn settle<T>(mut self, parsed: Result<T, ApiError>) -> Result<T, ApiError> {
        if parsed.is_err() {
            while self.next_chunk() {}
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => parsed,
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if !self.next_chunk() {
                return if self.failed.is_some() {
                    Err(io::Error::other("the body could not be read"))
                } else {
                    Ok(0)
                };
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Reads a CSV body with a header row into `b` (same rules as [`Table::from_csv`]).
///
/// [`Table::from_csv`]: super::extract::Table::from_csv
pub fn read_csv<R: Read>(body: R, b: &mut BatchBuilder) -> Result<(), ApiError> {
    let (mut reader, headers) = super::extract::csv_reader(body)?;
    let ts_col = headers.iter().position(|h| h == "timestamp");
    let roles = b.header_roles(&headers);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(&e)),
        }
        check_count(b.len() + 1, b.max_records)?;
        b.start_record();
        for (j, text) in record.iter().enumerate() {
            let role = roles[j];
            if role == Role::Skip || (role == Role::Label && !b.require_labels) {
                continue;
            }
            let text = text.trim();
            let cell = if text.is_empty() {
                CellRef::Missing
            } else if Some(j) == ts_col {
                CellRef::Text(text)
            } else if let Ok(v) = text.parse::<f64>() {
                CellRef::Num(v)
            } else {
                CellRef::Text(text)
            };
            b.field(role, cell);
        }
        b.end_record();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// NDJSON

/// Reads NDJSON (one object per line, blank lines skipped) into `b` (as [`Table::from_ndjson`]).
///
/// [`Table::from_ndjson`]: super::extract::Table::from_ndjson
pub fn read_ndjson<R: BufRead>(mut body: R, b: &mut BatchBuilder) -> Result<(), ApiError> {
    let mut line = Vec::with_capacity(1024);
    let mut line_no = 0usize;
    loop {
        line.clear();
        let read = body
            .read_until(b'\n', &mut line)
            .map_err(|e| ApiError::bad_request("malformed-body", e.to_string()))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let mut text = line.strip_suffix(b"\n").unwrap_or(&line);
        text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let i = b.len();
        check_count(i + 1, b.max_records)?;
        let mut problem = None;
        let mut de = super::json::deserializer(text);
        let is_object = RecordSeed {
            builder: b,
            problem: &mut problem,
        }
        .deserialize(&mut de)
        .and_then(|o| de.end().map(|()| o))
        .map_err(|e| {
            let e = super::json::message(&e);
            ApiError::bad_request("malformed-body", format!("NDJSON line {line_no}: {e}"))
        })?;
        if let Some(p) = problem {
            return Err(p);
        }
        if !is_object {
            return Err(ApiError::record_at(
                i,
                format!("NDJSON line {line_no} is not a JSON object"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Reads a JSON body (an array of records or `{"records": [...]}`) into `b`, with the problems
/// [`parse_json_envelope`] and [`Table::from_json_records`] report, in their order.
///
/// [`parse_json_envelope`]: super::extract::parse_json_envelope
/// [`Table::from_json_records`]: super::extract::Table::from_json_records
pub fn read_json(body: &[u8], b: &mut BatchBuilder) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("malformed-body", "the body is empty"));
    }
    let mut state = Envelope::default();
    let mut de = super::json::deserializer(body);
    EnvelopeSeed {
        builder: b,
        state: &mut state,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| super::json::invalid(&e))?;
    if state.not_envelope {
        return Err(ApiError::bad_request(
            "malformed-body",
            "the body must be a JSON array of records or an object with \"records\"",
        ));
    }
    if state.records_not_array {
        return Err(ApiError::bad_request(
            "malformed-body",
            "\"records\" must be an array of objects",
        )
        .with_field("records"));
    }
    if let Some(k) = state.unknown.into_iter().next() {
        return Err(ApiError::bad_request(
            "unknown-field",
            format!("unknown top-level field {k:?}"),
        )
        .with_field(k));
    }
    if !state.has_records {
        return Err(
            ApiError::bad_request("malformed-body", "the body has no \"records\" array")
                .with_field("records"),
        );
    }
    check_count(state.n_records, b.max_records)?;
    match state.problem {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// The scalar `visit_*` methods (bool, integers, floats, strings, null) of a visitor that
/// treats every scalar alike: `|v| value` names the visitor and gives the result.
macro_rules! visit_scalars {
    ($value:ty, |$v:ident| $result:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            let $v = self;
            Ok($result)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            let $v = self;
            Ok($result)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            let $v = self;
            Ok($result)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            let $v = self;
            Ok($result)
        }
        fn visit_str<E>(self, _: &str) -> Result<$value, E> {
            let $v = self;
            Ok($result)
        }
        fn visit_unit<E>(self) -> Result<$value, E> {
            let $v = self;
            Ok($result)
        }
    };
}

#[derive(Default)]
struct Envelope {
    not_envelope: bool,
    records_not_array: bool,
    has_records: bool,
    /// Sorted, as a `serde_json::Map` would list them.
    unknown: BTreeSet<String>,
    n_records: usize,
    /// The first record problem (not an object, too many fields).
    problem: Option<ApiError>,
}

struct EnvelopeSeed<'a> {
    builder: &'a mut BatchBuilder,
    state: &'a mut Envelope,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records or an object with \"records\"")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.state.has_records = true;
        read_records(seq, self.builder, self.state)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if key.as_ref() == "records" {
                map.next_value_seed(RecordsSeed {
                    builder: &mut *self.builder,
                    state: &mut *self.state,
                })?;
            } else {
                map.next_value::<Skip>()?;
                self.state.unknown.insert(key.into_owned());
            }
        }
        Ok(())
    }

    visit_scalars!((), |v| v.state.not_envelope = true);
}

struct RecordsSeed<'a> {
    builder: &'a mut BatchBuilder,
    state: &'a mut Envelope,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.state.has_records = true;
        self.state.records_not_array = false;
        read_records(seq, self.builder, self.state)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        self.state.records_not_array = true;
        Ok(())
    }

    visit_scalars!((), |v| v.state.records_not_array = true);
}

/// Records of an array into the builder; after the first problem or past the record limit the
/// rest are only checked for syntax and counted.
fn read_records<'de, A: SeqAccess<'de>>(
    mut seq: A,
    b: &mut BatchBuilder,
    state: &mut Envelope,
) -> Result<(), A::Error> {
    loop {
        let i = state.n_records;
        if state.problem.is_some() || i >= b.max_records {
            if seq.next_element::<Skip>()?.is_none() {
                return Ok(());
            }
        } else {
            let mut problem = None;
            let seed = RecordSeed {
                builder: &mut *b,
                problem: &mut problem,
            };
            match seq.next_element_seed(seed)? {
                None => return Ok(()),
                Some(true) => {}
                Some(false) => {
                    problem = Some(ApiError::record_at(
                        i,
                        format!("record {i} is not a JSON object"),
                    ));
                }
            }
            if problem.is_some() {
                state.problem = problem;
            }
        }
        state.n_records += 1;
    }
}

/// One record: `true` when it was an object (and went into the builder).
struct RecordSeed<'a> {
    builder: &'a mut BatchBuilder,
    problem: &'a mut Option<ApiError>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let b = self.builder;
        b.start_record();
        let mut pos = 0;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if self.problem.is_some() {
                map.next_value::<Skip>()?;
                continue;
            }
            let role = match b.key_role(&key, pos) {
                Ok(r) => r,
                Err(e) => {
                    *self.problem = Some(e);
                    map.next_value::<Skip>()?;
                    continue;
                }
            };
            pos += 1;
            if role == Role::Skip || (role == Role::Label && !b.require_labels) {
                map.next_value::<Skip>()?;
                continue;
            }
            let cell = map.next_value_seed(CellSeed)?;
            let cell_ref = match &cell {
                Cell::Null => CellRef::Null,
                Cell::Num(v) => CellRef::Num(*v),
                Cell::Text(s) => CellRef::Text(s),
                Cell::Bool(v) => CellRef::Bool(*v),
                Cell::Nested => CellRef::Nested,
            };
            b.field(role, cell_ref);
        }
        if self.problem.is_none() {
            b.end_record();
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(false)
    }
    visit_scalars!(bool, |_v| false);
}

/// A string borrowed from the body when it has no escapes.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

/// A field value; numbers as `f64` (as `serde_json::Value::as_f64` gives them).
enum Cell<'de> {
    Null,
    Num(f64),
    Text(std::borrow::Cow<'de, str>),
    Bool(bool),
    Nested,
}

struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cell<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Cell<'de>, E> {
        Ok(Cell::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(std::borrow::Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(std::borrow::Cow::Owned(v.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cell<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Cell::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cell<'de>, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Cell::Nested)
    }
}

// ---------------------------------------------------------------------------------------------
// Generated records

/// Generated sample records as a checked batch, as if they had been posted as JSON (same
/// fields, same checks), without writing or parsing any JSON. `features: None` is the default
/// choice, which for generated records is always the four seed features.
pub fn sample_batch(
    records: &[SampleRecord],
    features: Option<&[String]>,
    max_records: usize,
) -> Result<Batch, ApiError> {
    check_count(records.len(), max_records)?;
    let seed: Vec<String> = SEED_FEATURES.iter().map(|s| s.to_string()).collect();
    let mut b = BatchBuilder::new(features.unwrap_or(&seed), false, max_records);
    let names = [
        "timestamp",
        "bytes_sent",
        "bytes_received",
        "connections",
        "active_sessions",
        "label",
        "attack_kind",
    ]
    .map(String::from);
    let roles = b.header_roles(&names);
    let mut text = String::new();
    for r in records {
        b.start_record();
        text.clear();
        use std::fmt::Write;
        let _ = write!(text, "{}", r.timestamp.format("%Y-%m-%dT%H:%M:%S%.fZ"));
        b.field(roles[0], CellRef::Text(&text));
        b.field(roles[1], CellRef::Num(r.bytes_sent));
        b.field(roles[2], CellRef::Num(r.bytes_received));
        b.field(roles[3], CellRef::Num(r.connections as f64));
        b.field(roles[4], CellRef::Num(r.active_sessions as f64));
        b.field(roles[5], CellRef::Num(f64::from(r.label)));
        if let Some(kind) = r.attack_kind {
            // Only injected anomalies carry a kind: few records, so its serde name is cheap.
            let name = serde_json::to_value(kind).expect("attack kinds always serialise");
            b.field(roles[6], CellRef::Text(name.as_str().unwrap_or_default()));
        }
        b.end_record();
    }
    b.finish()
}

// ---------------------------------------------------------------------------------------------
// From a request body to a checked batch

/// Body chunks in flight between the request task and the parser thread.
const CHANNEL_CHUNKS: usize = 16;

/// A checked batch, with its scores when a model was given to score it while it was parsed.
pub struct ParsedBatch {
    pub batch: Batch,
    pub scores: Option<Vec<f64>>,
}

/// Reads a scoring body into a checked batch with the model's `features`: CSV and NDJSON are
/// parsed on a blocking thread while the body streams in; JSON and Zeek bodies are read whole
/// first (Zeek aggregates across the whole log), then parsed on a blocking thread. Bodies over
/// `max_body` bytes are a 413 whatever they hold.
///
/// With `scorer`, chunks of [`CHUNK_RECORDS`] records are scored on the rayon pool as soon as
/// they are parsed, so scoring overlaps parsing (and receiving) the rest of the body.
///
/// `then` runs on the same blocking thread right after the batch is checked, so a request
/// makes one trip off the async runtime, not two.
#[allow(clippy::too_many_arguments)]
pub async fn read_batch<T, F>(
    format: BodyFormat,
    body: Body,
    max_body: usize,
    features: Vec<String>,
    require_labels: bool,
    max_records: usize,
    zeek: ZeekOptions,
    scorer: Option<Arc<Model>>,
    then: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(ParsedBatch) -> T + Send + 'static,
{
    match format {
        BodyFormat::Csv | BodyFormat::Ndjson => {
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let parser = tokio::task::spawn_blocking(move || {
                let mut reader = BodyReader::new(rx);
                let (mut b, chunks) =
                    ChunkScores::builder(&features, require_labels, max_records, scorer);
                let parsed = if format == BodyFormat::Csv {
                    reader.skip_prefix(b"\xEF\xBB\xBF");
                    read_csv(&mut reader, &mut b)
                } else {
                    read_ndjson(io::BufReader::with_capacity(1 << 16, &mut reader), &mut b)
                };
                let sunk = b.sunk();
                let batch = reader.settle(parsed.and_then(|()| b.finish()))?;
                Ok(then(chunks.finish(batch, sunk)))
            });
            let mut stream = body.into_data_stream();
            let mut total = 0usize;
            while let Some(frame) = stream.next().await {
                let chunk = match frame {
                    Ok(c) => Ok(c),
                    Err(e) => Err(ApiError::bad_request(
                        "malformed-body",
                        format!("the body could not be read: {e}"),
                    )),
                };
                let stop = match &chunk {
                    Ok(c) => {
                        total += c.len();
                        total > max_body
                    }
                    Err(_) => true,
                };
                let chunk = if stop && chunk.is_ok() {
                    Err(body_too_large())
                } else {
                    chunk
                };
                if tx.send(chunk).await.is_err() || stop {
                    break;
                }
            }
            drop(tx);
            parser.await?
        }
        BodyFormat::Json | BodyFormat::ZeekTsv | BodyFormat::ZeekJson => {
            // Sized from Content-Length when it is declared (already checked against the
            // limit), so the body is not copied again each time the buffer grows.
            let declared = axum::body::HttpBody::size_hint(&body).lower();
            let mut bytes =
                Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(max_body));
            let mut stream = body.into_data_stream();
            while let Some(frame) = stream.next().await {
                let chunk = frame.map_err(|e| {
                    ApiError::bad_request(
                        "malformed-body",
                        format!("the body could not be read: {e}"),
                    )
                })?;
                if bytes.len() + chunk.len() > max_body {
                    return Err(body_too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            tokio::task::spawn_blocking(move || {
                if format == BodyFormat::Json {
                    let (mut b, chunks) =
                        ChunkScores::builder(&features, require_labels, max_records, scorer);
                    read_json(&bytes, &mut b)?;
                    drop(bytes);
                    let sunk = b.sunk();
                    let batch = b.finish()?;
                    Ok(then(chunks.finish(batch, sunk)))
                } else {
                    let batch =
                        super::extract::parse_table_with(format, &bytes, max_records, &zeek)?
                            .into_batch(Features::Given(&features), require_labels)?;
                    let scores = scorer.map(|m| m.score(&batch.matrix));
                    Ok(then(ParsedBatch { batch, scores }))
                }
            })
            .await?
        }
    }
}

/// Scores of chunks scored while the body was parsed, as they come back from the rayon pool.
struct ChunkScores {
    model: Option<Arc<Model>>,
    rx: std::sync::mpsc::Receiver<(usize, Vec<f64>)>,
}

impl ChunkScores {
    fn builder(
        features: &[String],
        require_labels: bool,
        max_records: usize,
        model: Option<Arc<Model>>,
    ) -> (BatchBuilder, ChunkScores) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut b = BatchBuilder::new(features, require_labels, max_records);
        if let Some(m) = &model {
            let m = m.clone();
            let d = features.len();
            b = b.with_chunk_sink(Box::new(move |first, rows| {
                let (m, tx, rows) = (m.clone(), tx.clone(), rows.to_vec());
                rayon::spawn(move || {
                    let mut out = vec![0.0; rows.len() / d];
                    m.score_into(&rows, &mut out);
                    let _ = tx.send((first, out));
                });
            }));
        }
        (b, ChunkScores { model, rx })
    }

    /// Scores the records after `sunk` and gathers the chunks' scores.
    fn finish(self, batch: Batch, sunk: usize) -> ParsedBatch {
        let Some(model) = self.model else {
            return ParsedBatch {
                batch,
                scores: None,
            };
        };
        let d = batch.matrix.n_cols();
        let mut scores = vec![0.0; batch.len()];
        model.score_into(&batch.matrix.as_slice()[sunk * d..], &mut scores[sunk..]);
        // Every sender is gone once the builder is and the spawned chunks are done.
        for (first, chunk) in self.rx.iter() {
            scores[first..first + chunk.len()].copy_from_slice(&chunk);
        }
        ParsedBatch {
            batch,
            scores: Some(scores),
        }
    }
}

/// The 413 for a body over `NETSENTINEL_MAX_BODY_BYTES` (as [`super::body`] words it).
pub fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "the body is larger than this service accepts (NETSENTINEL_MAX_BODY_BYTES)",
    )
}

/// A declared `Content-Length` over the limit: refused before anything is read.
pub fn check_content_length(headers: &HeaderMap, max_body: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body as u64 => Err(body_too_large()),
        _ => Ok(()),
    }
}

/// A value read and dropped. Unlike `serde::de::IgnoredAny` (which a parser may skip without
/// counting depth) it goes through `deserialize_any`, so nesting past the parser's recursion
/// limit is the same 400 as when the body is parsed into a `Value`.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    visit_scalars!(Skip, |_v| Skip);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::parse_table;
    use proptest::prelude::*;

    fn features() -> Vec<String> {
        ["bytes_sent", "connections"].map(String::from).to_vec()
    }

    /// The body through the streaming reader, cut into `chunk`-byte pieces.
    fn streamed(
        format: BodyFormat,
        body: &[u8],
        chunk: usize,
        labels: bool,
    ) -> Result<Batch, ApiError> {
        let (tx, rx) = mpsc::channel(body.len() / chunk + 2);
        for piece in body.chunks(chunk) {
            tx.try_send(Ok(Bytes::copy_from_slice(piece))).unwrap();
        }
        drop(tx);
        let mut reader = BodyReader::new(rx);
        let mut b = BatchBuilder::new(&features(), labels, 5);
        let parsed = match format {
            BodyFormat::Csv => {
                reader.skip_prefix(b"\xEF\xBB\xBF");
                read_csv(&mut reader, &mut b)
            }
            BodyFormat::Ndjson => read_ndjson(io::BufReader::with_capacity(7, &mut reader), &mut b),
            _ => unreachable!(),
        };
        reader.settle(parsed.and_then(|()| b.finish()))
    }

    fn whole(format: BodyFormat, body: &[u8], labels: bool) -> Result<Batch, ApiError> {
        if format == BodyFormat::Json {
            let mut b = BatchBuilder::new(&features(), labels, 5);
            read_json(body, &mut b)?;
            return b.finish();
        }
        streamed(format, body, body.len().max(1), labels)
    }

    /// What the table path (parse everything into cells, then check) answers.
    fn table(format: BodyFormat, body: &[u8], labels: bool) -> Result<Batch, ApiError> {
        parse_table(format, body, 5)?.into_batch(Features::Given(&features()), labels)
    }

    fn same(a: &Result<Batch, ApiError>, b: &Result<Batch, ApiError>) -> Result<(), String> {
        match (a, b) {
            (Ok(x), Ok(y)) if x == y => Ok(()),
            (Err(x), Err(y))
                if (x.status, x.code, &x.detail, x.index, &x.field)
                    == (y.status, y.code, &y.detail, y.index, &y.field) =>
            {
                Ok(())
            }
            _ => Err(format!("{a:?}\n  vs\n{b:?}")),
        }
    }

    /// Every way of cutting the body into pieces gives what the table path gives.
    fn check(format: BodyFormat, body: &[u8], labels: bool) {
        let expected = table(format, body, labels);
        same(&whole(format, body, labels), &expected).unwrap();
        if format != BodyFormat::Json {
            for chunk in [1, 2, 3, 5, 8, 13] {
                same(&streamed(format, body, chunk, labels), &expected)
                    .unwrap_or_else(|e| panic!("chunks of {chunk}: {e}"));
            }
        }
    }

    #[test]
    fn csv_edge_cases_match_the_table_path() {
        let cases: &[&[u8]] = &[
            b"\xEF\xBB\xBFtimestamp,bytes_sent,connections,host\r\n2024-01-01T00:00:00Z,1,2,\"a,b\"\r\n2024-01-01T01:00:00+02:00,3.5, 4 ,\"multi\nline\"\r\n",
            b"bytes_sent,connections\n1,2\n3,x\n5,NaN\n",
            b"bytes_sent,connections,timestamp\n1,2,yesterday\n3,,2024-01-01T00:00:00Z\n",
            b"bytes_sent,connections\n1,2\n3,4,5\n",
            b"bytes_sent,connections\n1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n",
            b"bytes_sent,connections\n1,2\n\"3\",\"4\"\n",
            b"bytes_sent\n1\n",
            b"bytes_sent,connections,label\n1,2,0\n3,4,1\n",
            b"bytes_sent,connections,label\n1,2,0\n3,4,2\n",
            b"bytes_sent,connections\n",
            b"",
            b"a,a\n1,2\n",
            b"bytes_sent,connections\n1,\xff\n",
            b"\xEF\xBBbytes_sent,connections\n1,2\n",
        ];
        for body in cases {
            check(BodyFormat::Csv, body, false);
            check(BodyFormat::Csv, body, true);
        }
    }

    #[test]
    fn ndjson_and_json_edge_cases_match_the_table_path() {
        let nd: &[&[u8]] = &[
            b"{\"bytes_sent\":1,\"connections\":2,\"src_ip\":\"10.0.0.1\",\"timestamp\":\"2024-01-01T00:00:00Z\"}\r\n\r\n{\"connections\":4,\"bytes_sent\":3e2}\n",
            b"{\"bytes_sent\":1,\"connections\":2}\n{\"bytes_sent\":\"x\",\"connections\":2}\n{oops\n",
            b"{\"bytes_sent\":1,\"connections\":2}\n[1,2]\n",
            b"{\"bytes_sent\":1,\"connections\":2,\"timestamp\":5}\n{\"bytes_sent\":null,\"connections\":2}\n",
            b"{\"bytes_sent\":1,\"connections\":2,\"label\":true}\n{\"bytes_sent\":1,\"connections\":{\"a\":1},\"label\":0}\n",
            b"{\"bytes_sent\":1,\"connections\":2,\"bytes_sent\":\"dup\"}\n",
            b"{\"bytes_sent\":1,\"connections\":2}\n{\"bytes_sent\":1,\"connections\":2} x\n",
            b"{}\n{}\n{}\n{}\n{}\n{}\n",
            b"\n\n",
        ];
        for body in nd {
            check(BodyFormat::Ndjson, body, false);
            check(BodyFormat::Ndjson, body, true);
        }
        let json: &[&[u8]] = &[
            br#"{"records":[{"bytes_sent":1,"connections":2,"host":"a\"b"},{"bytes_sent":3,"connections":4}]}"#,
            br#"[{"bytes_sent":1,"connections":2},5,{"bytes_sent":"x"}]"#,
            br#"[{"bytes_sent":1,"connections":2},{},{},{},{},{}]"#,
            br#"{"records":[],"zzz":1,"aaa":2}"#,
            br#"{"records":{"a":1}}"#,
            br#"{"other":[]}"#,
            br#"{"records":[{"bytes_sent":1,"connections":2}]"#,
            br#"[{"bytes_sent":1,"connections":2}] trailing"#,
            br#"42"#,
            b"  ",
            br#"[{"bytes_sent":1e400,"connections":2}]"#,
            br#"[{"bytes_sent":1,"connections":2,"timestamp":"2024-13-01T00:00:00Z"}]"#,
            br#"[{"bytes_sent":1,"connections":2,"label":1},{"bytes_sent":1,"connections":2}]"#,
        ];
        for body in json {
            check(BodyFormat::Json, body, false);
            check(BodyFormat::Json, body, true);
        }
        let deep = format!("[{}{}]", "[".repeat(200), "]".repeat(200));
        check(BodyFormat::Json, deep.as_bytes(), false);
    }

    #[test]
    fn generated_records_make_the_batch_their_json_makes() {
        use crate::detector::generator::{GeneratorConfig, generate};
        let records = generate(&GeneratorConfig::default()).unwrap();
        assert!(records.iter().any(|r| r.attack_kind.is_some()));
        let json: Vec<serde_json::Value> = records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
        let subset = vec!["connections".to_string(), "label".to_string()];
        let unknown = vec!["bytes_sent".to_string(), "nope".to_string()];
        for features in [None, Some(&subset), Some(&unknown)] {
            let choice = features.map_or(Features::Default, |f| Features::Given(f));
            let expected = crate::api::extract::Table::from_json_records(json.clone(), 1000)
                .and_then(|t| t.into_batch(choice, false));
            let got = sample_batch(&records, features.map(Vec::as_slice), 1000);
            same(&got, &expected).unwrap();
        }
        let err = sample_batch(&records, None, 10).unwrap_err();
        assert_eq!(err.status.as_u16(), 413);
    }

    #[test]
    fn a_failed_body_wins_over_what_the_parser_made_of_it() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"bytes_sent,connections\n1,x\n")))
            .unwrap();
        tx.try_send(Err(body_too_large())).unwrap();
        drop(tx);
        let mut reader = BodyReader::new(rx);
        let mut b = BatchBuilder::new(&features(), false, 5);
        let parsed = read_csv(&mut reader, &mut b).and_then(|()| b.finish());
        let err = reader.settle(parsed).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (413, "body-too-large"));
    }

    fn csv_cell() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
            Just(String::new()),
            Just("NaN".to_string()),
            Just("2024-01-01T00:00:00Z".to_string()),
            Just("\"1,5\"".to_string()),
            Just(" 7 ".to_string()),
            "[a-z]{1,3}",
        ]
    }

    proptest! {
        /// Random CSV bodies, cut anywhere: the streaming parser agrees with the table path.
        #[test]
        fn streamed_csv_agrees_with_the_table_path(
            header in prop::sample::subsequence(
                vec!["bytes_sent", "connections", "timestamp", "label", "host"], 1..=5),
            rows in prop::collection::vec(prop::collection::vec(csv_cell(), 5), 0..7),
            crlf in any::<bool>(),
            chunk in 1usize..20,
            labels in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut body = header.join(",") + nl;
            for r in &rows {
                body += &r[..header.len()].join(",");
                body += nl;
            }
            let expected = table(BodyFormat::Csv, body.as_bytes(), labels);
            let got = streamed(BodyFormat::Csv, body.as_bytes(), chunk, labels);
            let verdict = same(&got, &expected);
            prop_assert!(verdict.is_ok(), "{body:?}: {}", verdict.unwrap_err());
        }

        /// Random NDJSON bodies, cut anywhere, and the same records as JSON.
        #[test]
        fn streamed_ndjson_and_json_agree_with_the_table_path(
            records in prop::collection::vec(prop::collection::btree_map(
                prop::sample::select(vec!["bytes_sent", "connections", "timestamp", "label", "src_ip"]),
                prop_oneof![
                    (-1e6f64..1e6).prop_map(|v| serde_json::json!(v)),
                    Just(serde_json::json!(null)),
                    Just(serde_json::json!("2024-01-01T00:00:00Z")),
                    Just(serde_json::json!("x")),
                    Just(serde_json::json!(1)),
                    Just(serde_json::json!([1])),
                ],
                0..5), 0..7),
            chunk in 1usize..20,
            labels in any::<bool>(),
        ) {
            let lines: Vec<String> = records.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
            let nd = lines.join("\n");
            let expected = table(BodyFormat::Ndjson, nd.as_bytes(), labels);
            let verdict = same(&streamed(BodyFormat::Ndjson, nd.as_bytes(), chunk, labels), &expected);
            prop_assert!(verdict.is_ok(), "{nd}: {}", verdict.unwrap_err());
            let json = format!("[{}]", lines.join(","));
            let expected = table(BodyFormat::Json, json.as_bytes(), labels);
            let verdict = same(&whole(BodyFormat::Json, json.as_bytes(), labels), &expected);
            prop_assert!(verdict.is_ok(), "{json}: {}", verdict.unwrap_err());
        }
    }
}
