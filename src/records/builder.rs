//! The batch builder every reader feeds: records arrive field by field and are checked as they
//! come, so a body is never held as a table of cells.
//!
//! Every record is checked as the cell table (`table.rs`, the test oracle) checks one, and when a
//! body has several problems the one reported is the one that path reports (malformed syntax and
//! the record limit first, then missing or bad features, then timestamps, then labels), so a
//! client sees the same problem whichever reader its body takes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::batch::{
    Batch, EchoFields, Features, MAX_COLUMNS, RESERVED, TextColumn, parse_timestamp,
};
use super::error::{RecordError, RecordErrorKind, bad_timestamp};
use crate::detector::Matrix;
use crate::detector::generator::SEED_FEATURES;

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
    feature_error: Option<RecordError>,
    timestamp_error: Option<RecordError>,
    label_error: Option<RecordError>,
    /// Gets each full chunk of valid records (row-major features) while parsing goes on.
    chunk_sink: Option<ChunkSink>,
    /// Records handed to `chunk_sink` so far.
    sunk: usize,
    /// Present while the features are chosen from the first record ([`Features::Default`]).
    discovery: Option<Discovery>,
}

/// Choosing the default features from the first record: the four seed features when the
/// first record names them all, else every field that is a number in it (but `timestamp` and
/// `label`), in the order the record names them, as the cell table chooses them.
#[derive(Debug, Default)]
struct Discovery {
    /// Field names met before the choice, by their [`Role::Undecided`] number.
    names: Vec<String>,
    /// Their roles once the features are chosen.
    resolved: Vec<Role>,
    /// The first record's undecided fields, in the order they came.
    first: Vec<(u32, OwnedCell)>,
    decided: bool,
    /// Whether each seed feature is a field of some record.
    seed_seen: [bool; SEED_FEATURES.len()],
    /// Why no features could be chosen, or the first record's problem when the seed features
    /// all occur in the batch but not all in the first record (the table chooses them then).
    problem: Option<RecordError>,
}

/// A value of a record, owned: the first record's, kept until the features are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedCell {
    Missing,
    Null,
    Num(f64),
    /// A number written as text (a CSV cell): its value, and its text for echoed fields.
    NumText(f64, String),
    Text(String),
    Bool(bool),
    Nested,
}

impl OwnedCell {
    pub fn new(cell: CellRef<'_>) -> Self {
        match cell {
            CellRef::Missing => Self::Missing,
            CellRef::Null => Self::Null,
            CellRef::Num(v) => Self::Num(v),
            CellRef::NumText(v, s) => Self::NumText(v, s.to_string()),
            CellRef::Text(s) => Self::Text(s.to_string()),
            CellRef::Bool(b) => Self::Bool(b),
            CellRef::Nested => Self::Nested,
        }
    }

    pub fn as_ref(&self) -> CellRef<'_> {
        match self {
            Self::Missing => CellRef::Missing,
            Self::Null => CellRef::Null,
            Self::Num(v) => CellRef::Num(*v),
            Self::NumText(v, s) => CellRef::NumText(*v, s),
            Self::Text(s) => CellRef::Text(s),
            Self::Bool(b) => CellRef::Bool(*b),
            Self::Nested => CellRef::Nested,
        }
    }

    /// The value, when the cell holds a number (written as one or as text).
    pub fn num(&self) -> Option<f64> {
        self.as_ref().num()
    }
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
    /// A field met before the default features were chosen (see [`Discovery`]).
    Undecided(u32),
}

/// A value of a record as a parser saw it.
#[derive(Debug, Clone, Copy)]
pub enum CellRef<'a> {
    Missing,
    Null,
    Num(f64),
    /// A number written as text (a CSV cell): a number to features and labels, and its text as
    /// written to echoed fields (a `host` column may hold `123` or `nan`).
    NumText(f64, &'a str),
    Text(&'a str),
    Bool(bool),
    Nested,
}

impl CellRef<'_> {
    /// The value, when the cell holds a number (written as one or as text).
    pub fn num(self) -> Option<f64> {
        match self {
            CellRef::Num(v) | CellRef::NumText(v, _) => Some(v),
            _ => None,
        }
    }
}

impl BatchBuilder {
    /// A builder for records with exactly these `features` (see [`BatchBuilder::with_features`]).
    pub fn new(features: &[String], require_labels: bool, max_records: usize) -> Self {
        Self::with_features(Features::Given(features), require_labels, max_records)
    }

    /// A builder for records with the `features` chosen (given, or the default choice made
    /// from the first record). `require_labels` makes `label` (0 or 1) mandatory.
    pub fn with_features(features: Features<'_>, require_labels: bool, max_records: usize) -> Self {
        let (features, discovery) = match features {
            Features::Given(f) => (f.to_vec(), None),
            Features::Default => (Vec::new(), Some(Discovery::default())),
        };
        Self {
            slots: vec![Slot::Missing; features.len()],
            feature_seen: vec![false; features.len()],
            features,
            require_labels,
            max_records,
            n: 0,
            data: Vec::new(),
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
            discovery,
        }
    }

    /// Most records the batch may hold.
    pub fn max_records(&self) -> usize {
        self.max_records
    }

    /// Whether fields named `label` are read at all.
    pub fn reads_labels(&self) -> bool {
        self.require_labels
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
        if let Some(d) = &mut self.discovery {
            if let Some(j) = SEED_FEATURES.iter().position(|f| *f == name) {
                d.seed_seen[j] = true;
            }
            if !d.decided && name != "timestamp" && name != "label" {
                d.names.push(name.to_string());
                return Role::Undecided((d.names.len() - 1) as u32);
            }
        }
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

    /// Room for `records` more records of one value per feature, time and echoed field (a
    /// reader that knows how many are coming: the columns then grow once, not by doubling).
    pub fn reserve(&mut self, records: usize) {
        self.data.reserve(records * self.features.len());
        self.parsed.reserve(records);
        self.timestamps.reserve(records);
        self.echo.reserve(records);
    }

    /// Roles of CSV columns, in header order.
    pub fn header_roles(&mut self, names: &[String]) -> Vec<Role> {
        names.iter().map(|n| self.role(n)).collect()
    }

    /// The role of JSON key `key` at position `pos` of record `i`; a problem when the batch
    /// would carry more than [`MAX_COLUMNS`] distinct fields.
    pub(crate) fn key_role(&mut self, key: &str, pos: usize) -> Result<Role, RecordError> {
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
                    return Err(RecordError::record(
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
                    CellRef::Num(v) | CellRef::NumText(v, _) => Slot::Num(v),
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
                        CellRef::Bool(b) => Some(b),
                        c => match c.num() {
                            Some(0.0) => Some(false),
                            Some(1.0) => Some(true),
                            _ => None,
                        },
                    }
                }
            }
            Role::Echo(c) => {
                if let CellRef::Text(s) | CellRef::NumText(_, s) = cell {
                    self.echo.push(c, s);
                }
            }
            Role::Skip => {}
            Role::Undecided(k) => match &mut self.discovery {
                Some(d) if d.decided => {
                    let role = d.resolved[k as usize];
                    self.field(role, cell);
                }
                Some(d) => d.first.push((k, OwnedCell::new(cell))),
                None => unreachable!("undecided roles exist only while features are chosen"),
            },
        }
    }

    /// Sets field `role` of the current record to a time already parsed, `text` being its
    /// RFC 3339 text (as [`BatchBuilder::field`] with `CellRef::Text(text)`, without parsing
    /// the text again).
    pub fn time_field(&mut self, role: Role, text: &str, t: DateTime<Utc>) {
        debug_assert_eq!(parse_timestamp(text), Some(t));
        if role == Role::Timestamp {
            self.timestamps.set_pending(text);
            self.current_ts = Timestamp::Valid(t);
        } else {
            self.field(role, CellRef::Text(text));
        }
    }

    /// Chooses the default features once the first record is read, then reads its fields again
    /// with their roles (see [`Discovery`]).
    fn choose_features(&mut self) {
        let Some(d) = self.discovery.as_mut().filter(|d| !d.decided) else {
            return;
        };
        // The last value of a field counts, as in a JSON object with a repeated key.
        let mut last: Vec<Option<&OwnedCell>> = vec![None; d.names.len()];
        for (k, cell) in &d.first {
            last[*k as usize] = Some(cell);
        }
        let named = |f: &str| d.names.iter().any(|n| n == f);
        let features: Vec<String> = if SEED_FEATURES.iter().all(|f| named(f)) {
            SEED_FEATURES.iter().map(|f| f.to_string()).collect()
        } else {
            d.names
                .iter()
                .zip(&last)
                .filter(|(_, cell)| cell.and_then(OwnedCell::num).is_some())
                .map(|(n, _)| n.clone())
                .collect()
        };
        if features.is_empty() {
            d.problem = Some(
                RecordError::new(
                    RecordErrorKind::NoFeatures,
                    "no numeric fields to use as features; send numbers or name the features",
                )
                .with_field("features"),
            );
        }
        d.decided = true;
        let names = std::mem::take(&mut d.names);
        let first = std::mem::take(&mut d.first);
        self.slots = vec![Slot::Missing; features.len()];
        self.feature_seen = vec![false; features.len()];
        self.features = features;
        let resolved: Vec<Role> = names.iter().map(|n| self.role(n)).collect();
        for (k, cell) in &first {
            self.field(resolved[*k as usize], cell.as_ref());
        }
        let d = self.discovery.as_mut().expect("still choosing");
        d.resolved = resolved;
        d.names = names;
        d.first = first;
    }

    /// When the seed features all occur in the batch but not all in its first record, the
    /// table chose them and refused the first record: the same problem here.
    fn seed_problem(&self) -> Option<RecordError> {
        let d = self.discovery.as_ref()?;
        if let Some(p) = &d.problem {
            return Some(p.clone());
        }
        let seed_chosen = self.features.iter().map(String::as_str).eq(SEED_FEATURES);
        if seed_chosen || !d.seed_seen.iter().all(|&s| s) {
            return None;
        }
        SEED_FEATURES.iter().find_map(|&f| {
            let cell = d
                .first
                .iter()
                .rev()
                .find(|(k, _)| d.names[*k as usize] == f)
                .map(|(_, c)| c);
            let problem = match cell {
                Some(c) if c.num().is_some_and(f64::is_finite) => return None,
                Some(c) if c.num().is_some() => "is not a finite number",
                None | Some(OwnedCell::Missing | OwnedCell::Null) => "is missing",
                Some(_) => "must be a number",
            };
            Some(RecordError::record(
                0,
                f,
                format!("record 0: feature {f:?} {problem}"),
            ))
        })
    }

    pub fn end_record(&mut self) {
        let i = self.n - 1;
        if i == 0 {
            self.choose_features();
        }
        if self.feature_error.is_none() {
            for (j, slot) in self.slots.iter().enumerate() {
                let name = &self.features[j];
                let problem = match *slot {
                    Slot::Num(v) if v.is_finite() => continue,
                    Slot::Num(_) => "is not a finite number",
                    Slot::Missing => "is missing",
                    Slot::NotNumber => "must be a number",
                };
                self.feature_error = Some(RecordError::record(
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
                        self.label_error = Some(RecordError::record(
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
    pub fn finish(self) -> Result<Batch, RecordError> {
        if self.n == 0 {
            return Err(RecordError::empty_batch());
        }
        if let Some(e) = self.seed_problem() {
            return Err(e);
        }
        if let Some(j) = self.feature_seen.iter().position(|seen| !seen) {
            let f = &self.features[j];
            return Err(RecordError::record(
                0,
                f.clone(),
                format!("record 0: feature {f:?} is missing"),
            ));
        }
        if let Some(e) = self.feature_error {
            return Err(e);
        }
        let matrix = Matrix::new(self.n, self.features.len(), self.data)
            .map_err(|e| RecordError::new(RecordErrorKind::InvalidRecords, e.to_string()))?;
        if let Some(e) = self.timestamp_error {
            return Err(e);
        }
        let labels = if self.require_labels {
            if !self.label_seen {
                return Err(RecordError::record(
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
