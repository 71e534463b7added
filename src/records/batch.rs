//! The checked, columnar batch every reader produces: a feature matrix plus timestamps, echoed string fields and labels.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::detector::Matrix;

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

/// An RFC 3339 timestamp in UTC, or `None` when `s` is not one.
pub(crate) fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
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
    pub parsed_times: Option<Vec<DateTime<Utc>>>,
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
    /// Room for `records` more values (their positions; the text grows as it comes).
    pub fn reserve(&mut self, records: usize) {
        self.ends.reserve(records);
        self.present.reserve(records);
    }

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

/// Longest echoed string value kept, in bytes: longer values (a 20 MB `host`, say) are cut to
/// this size, ending with a marker such as `…[truncated from 20971520 bytes]`, so that results,
/// stored alerts and SIEM exports stay bounded whatever a client sends.
pub const MAX_ECHO_BYTES: usize = 1024;

/// Appends `value` to `out`, or, when it is longer than `max` bytes, as much of it as fits
/// (cut at a character boundary) followed by a truncation marker, `max` bytes in all at most.
pub(crate) fn push_capped(out: &mut String, value: &str, max: usize) {
    if value.len() <= max {
        out.push_str(value);
        return;
    }
    let marker = format!("…[truncated from {} bytes]", value.len());
    let mut cut = max.saturating_sub(marker.len());
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&value[..cut]);
    out.push_str(&marker);
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

    /// Room for `records` more records of one field each (their positions; the text grows as it
    /// comes).
    pub fn reserve(&mut self, records: usize) {
        self.entries.reserve(records);
        self.record_ends.reserve(records);
    }

    /// Adds a field to the record being built (closed by [`EchoFields::end_record`]); a value
    /// longer than [`MAX_ECHO_BYTES`] is kept cut short, with a marker saying how long it was.
    pub fn push(&mut self, column: u32, value: &str) {
        push_capped(&mut self.text, value, MAX_ECHO_BYTES);
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

    /// Field `name` of record `i` (its last value, as [`fields`](Self::fields) keeps it),
    /// without building the record's map.
    pub fn field(&self, i: usize, name: &str) -> Option<&str> {
        assert!(i < self.len, "record {i} of {}", self.len);
        if i >= self.record_ends.len() {
            return None;
        }
        let column = self.names.iter().position(|n| n == name)? as u32;
        let first = if i == 0 { 0 } else { self.record_ends[i - 1] };
        let entries = &self.entries[first..self.record_ends[i]];
        let k = entries.iter().rposition(|&(c, _)| c == column)?;
        let start = match (first + k).checked_sub(1) {
            Some(prev) => self.entries[prev].1,
            None => 0,
        };
        Some(&self.text[start..entries[k].1])
    }

    /// Record `i`'s fields by name (a later field of the same name wins).
    pub fn get(&self, i: usize) -> BTreeMap<String, String> {
        self.fields(i)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
        // One field read alone is what the record's map holds, the last of a repeated name too.
        let port = e.column("port");
        e.push(port, "80");
        e.push(host, "h4");
        e.push(port, "443");
        e.end_record();
        e.end_record();
        for i in 0..e.len() {
            for name in ["host", "port", "nope"] {
                assert_eq!(
                    e.field(i, name),
                    e.fields(i).get(name).copied(),
                    "{i} {name}"
                );
            }
        }
        assert_eq!(e.field(4, "port"), Some("443"));
    }

    #[test]
    fn long_echoed_values_are_cut_with_a_marker_and_short_ones_kept_whole() {
        let mut e = EchoFields::default();
        let host = e.column("host");
        let exact = "h".repeat(MAX_ECHO_BYTES);
        // Multi-byte characters straddle the cut: it must land on a character boundary.
        let long = "é".repeat(3 * MAX_ECHO_BYTES);
        e.push(host, &exact);
        e.end_record();
        e.push(host, &long);
        e.end_record();
        assert_eq!(e.fields(0)["host"], exact);
        let cut = e.fields(1)["host"];
        assert!(cut.len() <= MAX_ECHO_BYTES, "{} bytes", cut.len());
        assert!(
            cut.len() > MAX_ECHO_BYTES - 40,
            "kept as much as fits: {}",
            cut.len()
        );
        let marker = format!("…[truncated from {} bytes]", long.len());
        assert!(cut.ends_with(&marker), "{cut}");
        assert!(long.starts_with(cut.strip_suffix(&marker).unwrap()));
    }
}
