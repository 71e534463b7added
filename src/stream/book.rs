//! [`WindowBook`]: the open windows of one detector's stream, per (window start, entity).
//!
//! # Event time, watermark, lateness
//!
//! A connection falls into the window `floor(ts / window) * window` of its entity, as in a
//! `score` request. The book keeps the latest event time it has seen; the **watermark** is that
//! time minus `allowed_lateness`. After each [`ingest`](WindowBook::ingest) call the windows whose
//! end is at or before the watermark close and are handed back as window records. The lines of
//! one call are all judged against the watermark as it stood when the call began (so a batch's
//! own disorder never makes its lines late); a line whose window has already closed is **late**:
//! counted, never merged. [`flush`](WindowBook::flush) closes every open window and moves the
//! watermark to the end of the last one, so a later line for a flushed window is late too, and no
//! window is ever closed twice.
//!
//! Any split of a log into calls, fed in any order in which no line arrives after its window
//! closed, then flushed, gives exactly the window records (bit for bit) of one `score` request
//! with the whole log: sums are exact integers (`u128`) until they are turned into `f64` once, at
//! closing, and the distinct sessions are a set.
//!
//! # Retries: dedupe by `uid`
//!
//! A pipeline that times out sends the same lines again. With [`Dedupe::Uid`], each window keeps
//! the Zeek `uid` of every connection it counted (Zeek makes it unique per connection) with that
//! connection's byte counts, and a line whose `uid` the window already holds is counted as a
//! duplicate and changes nothing. Then a line without a `uid` is rejected: it could not be told
//! apart from its retry. A retry that arrives after its window closed is late, as any line. The
//! cost is one entry per connection of an open window (about 60 bytes with its `uid`).
//!
//! # Partial state
//!
//! An open window's state is a [`PartialWindow`]: integer sums, the distinct sessions and (with
//! dedupe) the `uid`s with their counts. Two partials of the same window, made by two replicas
//! from any lines, [`merge`](PartialWindow::merge) exactly (a `uid` both hold counts once), so a
//! store can keep one per window and replicas can combine theirs. A whole book serialises to a
//! versioned [`BookSnapshot`] (postcard, [`WindowBook::to_bytes`]) to survive a restart.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

use crate::records::zeek::aggregate::{Interner, NO_ENTITY, entity_of, heap_block, window_start};
use crate::records::zeek::line::{BOM, LineError, LineParser, LineSplitter, TsvHeader};
use crate::records::zeek::{
    GroupBy, OnInvalid, Reject, Rejects, Window, WindowRecord, ZeekError, ZeekFormat,
};

mod partial;

pub use partial::{BookSnapshot, PartialWindow};

/// Whether a connection seen twice counts twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedupe {
    /// Every line counts (lines without a `uid` are fine).
    None,
    /// A `uid` counts once per window; lines without one are rejected.
    #[default]
    Uid,
}

/// How a book windows its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookConfig {
    pub window: Window,
    pub group_by: GroupBy,
    /// Seconds a window stays open after the latest event time passed its end.
    pub allowed_lateness_secs: u64,
    pub dedupe: Dedupe,
    pub on_invalid: OnInvalid,
}

impl Default for BookConfig {
    fn default() -> Self {
        Self {
            window: Window::default(),
            group_by: GroupBy::None,
            allowed_lateness_secs: 0,
            dedupe: Dedupe::Uid,
            on_invalid: OnInvalid::Skip,
        }
    }
}

/// The config as it is kept: plain values.
#[derive(Serialize, Deserialize)]
struct ConfigText {
    window_secs: u64,
    group_by: String,
    allowed_lateness_secs: u64,
    dedupe: Dedupe,
    on_invalid: OnInvalid,
}

impl From<&BookConfig> for ConfigText {
    fn from(c: &BookConfig) -> Self {
        Self {
            window_secs: c.window.secs() as u64,
            group_by: c.group_by.to_string(),
            allowed_lateness_secs: c.allowed_lateness_secs,
            dedupe: c.dedupe,
            on_invalid: c.on_invalid,
        }
    }
}

impl TryFrom<ConfigText> for BookConfig {
    type Error = ZeekError;

    fn try_from(c: ConfigText) -> Result<Self, ZeekError> {
        Ok(Self {
            window: Window::from_secs(c.window_secs)?,
            group_by: c.group_by.parse()?,
            allowed_lateness_secs: c.allowed_lateness_secs,
            dedupe: c.dedupe,
            on_invalid: c.on_invalid,
        })
    }
}

/// What one [`WindowBook::ingest`] call did, as the ingest answer reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Conn lines folded into open windows.
    pub accepted: usize,
    /// Conn lines whose window had already closed.
    pub late: usize,
    /// Conn lines whose `uid` their window already held (retries), with [`Dedupe::Uid`].
    pub duplicates: usize,
    /// Lines skipped as unreadable (with [`OnInvalid::Skip`]).
    pub rejected: usize,
    /// The first skipped lines (up to 100), by line number in the body.
    pub rejects: Vec<Reject>,
    pub windows_opened: usize,
    pub windows_closed: usize,
    /// The watermark after the call: windows ending at or before it are closed.
    pub watermark: Option<DateTime<Utc>>,
}

/// A call's report and the windows it closed, sorted by window start, then entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    pub report: IngestReport,
    pub closed: Vec<WindowRecord>,
}

/// Two partial states that cannot be combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("partials of different windows: {0}")]
    DifferentWindows(String),
    #[error("one partial dedupes by uid and the other does not")]
    DedupeMismatch,
    #[error("the window starting at {0} is already closed")]
    Closed(i64),
    #[error("a partial names a host it does not list")]
    BadHostIndex,
    #[error("a snapshot that cannot be read: {0}")]
    Snapshot(String),
}

/// One open window in memory; hosts are ids of the book's interner.
#[derive(Debug, Default, Clone)]
struct Open {
    sent: u128,
    received: u128,
    connections: u64,
    sessions: HashSet<(u32, u32, u16), RandomState>,
    /// uid -> (orig_bytes, resp_bytes), with [`Dedupe::Uid`] only.
    uids: HashMap<Box<str>, (u64, u64), RandomState>,
}

/// What the open windows hold, kept as they change, so [`WindowBook::state_bytes`] is O(1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    windows: usize,
    sessions: usize,
    uids: usize,
    /// The heap blocks of the `uid`s' text.
    uid_text: usize,
}

impl Tally {
    fn of(w: &Open) -> Self {
        Self {
            windows: 1,
            sessions: w.sessions.len(),
            uids: w.uids.len(),
            uid_text: w.uids.keys().map(|u| heap_block(u.len())).sum(),
        }
    }

    fn add(&mut self, t: Tally) {
        self.windows += t.windows;
        self.sessions += t.sessions;
        self.uids += t.uids;
        self.uid_text += t.uid_text;
    }

    fn remove(&mut self, t: Tally) {
        self.windows = self.windows.saturating_sub(t.windows);
        self.sessions = self.sessions.saturating_sub(t.sessions);
        self.uids = self.uids.saturating_sub(t.uids);
        self.uid_text = self.uid_text.saturating_sub(t.uid_text);
    }
}

/// Bytes of a hash table's smallest allocation (4 buckets of `entry` bytes, their control bytes
/// and a group's more).
const fn min_table(entry: usize) -> usize {
    4 * (entry + 1) + 16
}

/// An open window beside its sessions and `uid`s: its entry in its start's table, twice for the
/// table's spare room, the smallest allocations of its session and `uid` tables, and a share of
/// its start's entry in the book; and its part of the snapshot every call writes
/// ([`WindowBook::to_bytes`]: its partial state, its two hosts by name, its lists, its bytes).
const WINDOW_BYTES: usize = 2 * (std::mem::size_of::<(u32, Open)>() + 1)
    + min_table(std::mem::size_of::<(u32, u32, u16)>())
    + min_table(std::mem::size_of::<(Box<str>, (u64, u64))>())
    + 64
    + std::mem::size_of::<PartialWindow>()
    + 5 * 32
    + 48;
/// A distinct session of an open window, twice for its table's spare room, and in the snapshot.
const SESSION_BYTES: usize =
    2 * (std::mem::size_of::<(u32, u32, u16)>() + 1) + std::mem::size_of::<(u32, u32, u16)>() + 8;
/// A `uid` of an open window (with [`Dedupe::Uid`]), twice for its table's spare room, and in
/// the snapshot, beside its text (counted twice: the table's and the snapshot's).
const UID_BYTES: usize = 2 * (std::mem::size_of::<(Box<str>, (u64, u64))>() + 1)
    + std::mem::size_of::<(String, u64, u64)>()
    + 24;

/// A connection read from a line, waiting for its call's lines all to be read.
struct Staged {
    ts_micros: i64,
    start: i64,
    entity: u32,
    orig: u32,
    resp: u32,
    resp_p: u16,
    orig_bytes: u64,
    resp_bytes: u64,
    uid: Option<Box<str>>,
}

/// The open windows of one stream; see the module doc.
#[derive(Debug, Clone)]
pub struct WindowBook {
    config: BookConfig,
    hosts: Interner,
    /// Window start -> entity -> state.
    open: BTreeMap<i64, HashMap<u32, Open, RandomState>>,
    /// The latest event time seen, in microseconds.
    max_event: Option<i64>,
    /// In microseconds; only ever moves forward.
    watermark: Option<i64>,
    tsv: TsvHeader,
    tally: Tally,
}

const MICROS: i64 = 1_000_000;

/// Lines folded in between two looks at what the book holds ([`WindowBook::ingest_within`]):
/// the book grows by at most this many windows, sessions and `uid`s past a charge refused.
pub const CHARGE_LINES: usize = 16_384;

impl WindowBook {
    pub fn new(config: BookConfig) -> Self {
        Self {
            config,
            hosts: Interner::new(),
            open: BTreeMap::new(),
            max_event: None,
            watermark: None,
            tsv: TsvHeader::default(),
            tally: Tally::default(),
        }
    }

    /// An estimate of the bytes the book holds, in O(1): its hosts (every host its open windows
    /// name, and those of windows closed since it was last compacted), its open windows, their
    /// distinct sessions and their `uid`s (see the constants above; each hash table counted at
    /// twice its entries for its spare room), and the snapshot of them each call writes.
    /// Measured: 100,000 open windows of new hosts, one connection each, took 119 MiB of RSS
    /// after their call (peak 148 MiB) for an estimate of 108 MiB (BENCHMARKS.md).
    pub fn state_bytes(&self) -> u64 {
        let t = &self.tally;
        (self.hosts.state_bytes()
            + t.windows * WINDOW_BYTES
            + t.sessions * SESSION_BYTES
            + t.uids * UID_BYTES
            + 2 * t.uid_text) as u64
    }

    /// Whether the O(1) tally agrees with a count of the open windows, and the hosts it keeps.
    #[cfg(test)]
    pub(super) fn tally_is_exact(&self) -> bool {
        let mut t = Tally::default();
        for w in self.open.values().flat_map(HashMap::values) {
            t.add(Tally::of(w));
        }
        t == self.tally
    }

    #[cfg(test)]
    pub(super) fn hosts_kept(&self) -> usize {
        self.hosts.len()
    }

    /// Drops the hosts no open window names any more once they are most of the interner (it
    /// only grows while windows open): the book rebuilt from its own snapshot, as a restart
    /// would load it.
    fn compact(&mut self) {
        let live = self.tally.windows + 2 * self.tally.sessions;
        if self.tally.windows == 0 {
            self.hosts = Interner::new();
        } else if self.hosts.len() > 2 * live + 1024
            && let Ok(book) = Self::restore(self.snapshot())
        {
            *self = book;
        }
    }

    pub fn config(&self) -> &BookConfig {
        &self.config
    }

    /// What later calls do with a line that cannot be read (it changes no window state).
    pub fn set_on_invalid(&mut self, on_invalid: OnInvalid) {
        self.config.on_invalid = on_invalid;
    }

    /// The watermark: windows ending at or before it are closed.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark.and_then(DateTime::from_timestamp_micros)
    }

    /// How many windows are open.
    pub fn open_windows(&self) -> usize {
        self.open.values().map(HashMap::len).sum()
    }

    fn window_secs(&self) -> i64 {
        self.config.window.secs()
    }

    /// Whether the window starting at `start` has closed.
    fn closed(&self, start: i64) -> bool {
        self.watermark
            .is_some_and(|w| (start + self.window_secs()) * MICROS <= w)
    }

    /// Folds a body (a Zeek conn log, or the next lines of one: a TSV header read in an earlier
    /// call still applies) into the open windows, then closes those the new watermark passed.
    /// With [`OnInvalid::Reject`] the first bad line is an error and the book is left as it was.
    pub fn ingest(&mut self, body: &[u8], format: ZeekFormat) -> Result<Ingested, ZeekError> {
        self.ingest_within(body, format, |_| Ok(()))
    }

    /// [`ingest`](Self::ingest), telling `charge` what the book holds ([`state_bytes`]) as it
    /// grows: once the body's lines are read (their hosts interned), and after every
    /// [`CHARGE_LINES`] lines folded in, before the next ones; an error from `charge` stops the
    /// call there (the book is then part-way: drop it).
    ///
    /// [`state_bytes`]: Self::state_bytes
    pub fn ingest_within<E: From<ZeekError>>(
        &mut self,
        body: &[u8],
        format: ZeekFormat,
        mut charge: impl FnMut(u64) -> Result<(), E>,
    ) -> Result<Ingested, E> {
        let body = body.strip_prefix(BOM).unwrap_or(body);
        let (staged, rejects, tsv) = self.read(body, format)?;
        charge(self.state_bytes())?;
        if format == ZeekFormat::Tsv {
            self.tsv = tsv;
        }
        let mut report = IngestReport {
            rejected: rejects.total,
            rejects: rejects.first,
            ..IngestReport::default()
        };
        let mut latest = self.max_event;
        for (n, c) in staged.into_iter().enumerate() {
            if n > 0 && n % CHARGE_LINES == 0 {
                charge(self.state_bytes())?;
            }
            latest = latest.max(Some(c.ts_micros));
            if self.closed(c.start) {
                report.late += 1;
                continue;
            }
            let by_entity = self.open.entry(c.start).or_default();
            let tally = &mut self.tally;
            let w = by_entity.entry(c.entity).or_insert_with(|| {
                report.windows_opened += 1;
                tally.windows += 1;
                Open::default()
            });
            if let Some(uid) = c.uid {
                if w.uids.contains_key(&uid) {
                    report.duplicates += 1;
                    continue;
                }
                tally.uids += 1;
                tally.uid_text += heap_block(uid.len());
                w.uids.insert(uid, (c.orig_bytes, c.resp_bytes));
            }
            w.sent += u128::from(c.orig_bytes);
            w.received += u128::from(c.resp_bytes);
            w.connections += 1;
            tally.sessions += usize::from(w.sessions.insert((c.orig, c.resp, c.resp_p)));
            report.accepted += 1;
        }
        self.max_event = latest;
        if let Some(max) = latest {
            let lateness = i64::try_from(self.config.allowed_lateness_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(MICROS);
            self.advance(max.saturating_sub(lateness));
        }
        charge(self.state_bytes())?;
        let closed = self.close_passed();
        if !closed.is_empty() {
            self.compact();
        }
        report.windows_closed = closed.len();
        report.watermark = self.watermark();
        Ok(Ingested { report, closed })
    }

    /// Reads every line of a body; nothing in the book changes here.
    fn read(
        &mut self,
        body: &[u8],
        format: ZeekFormat,
    ) -> Result<(Vec<Staged>, Rejects, TsvHeader), ZeekError> {
        let mut parser = LineParser::with_header(format, self.tsv.clone());
        let mut staged = Vec::new();
        let mut rejects = Rejects::default();
        let (window, group_by, on_invalid, dedupe) = (
            self.window_secs(),
            self.config.group_by,
            self.config.on_invalid,
            self.config.dedupe,
        );
        let hosts = &mut self.hosts;
        let mut take = |no: usize, line: &[u8]| -> Result<(), ZeekError> {
            let conn = match parser.line(no, line) {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(LineError::Data(e)) if on_invalid == OnInvalid::Skip => {
                    rejects.add(e);
                    return Ok(());
                }
                Err(e) => return Err(e.into_inner()),
            };
            let uid = match (dedupe, &conn.uid) {
                (Dedupe::None, _) => None,
                (Dedupe::Uid, Some(uid)) => Some(Box::from(uid.as_ref())),
                (Dedupe::Uid, None) => {
                    let e = ZeekError::field_error(
                        no,
                        "uid",
                        "uid is unset; a stream that dedupes retries by uid needs one on every line",
                    );
                    if on_invalid == OnInvalid::Skip {
                        rejects.add(e);
                        return Ok(());
                    }
                    return Err(e);
                }
            };
            let orig = hosts.id(&conn.orig_h);
            let resp = hosts.id(&conn.resp_h);
            staged.push(Staged {
                ts_micros: conn.ts.timestamp_micros(),
                start: window_start(conn.ts.timestamp(), window),
                entity: entity_of(group_by, orig, resp),
                orig,
                resp,
                resp_p: conn.resp_p,
                orig_bytes: conn.orig_bytes,
                resp_bytes: conn.resp_bytes,
                uid,
            });
            Ok(())
        };
        let mut lines = LineSplitter::new();
        lines.push(body, &mut take)?;
        lines.finish(&mut take)?;
        Ok((staged, rejects, parser.into_header()))
    }

    fn advance(&mut self, to: i64) {
        self.watermark = self.watermark.max(Some(to));
    }

    /// Closes the windows the watermark has passed.
    fn close_passed(&mut self) -> Vec<WindowRecord> {
        let Some(w) = self.watermark else {
            return Vec::new();
        };
        // The first start whose window ends after the watermark: (s + span) * 1e6 > w.
        let span = self.window_secs();
        let first_open = w.saturating_sub(span * MICROS).div_euclid(MICROS) + 1;
        let keep = self.open.split_off(&first_open);
        let done = std::mem::replace(&mut self.open, keep);
        self.records(done)
    }

    /// Closes every open window (the end of a stream, or `POST …/flush`) and moves the watermark
    /// past them, so none of them can open again.
    pub fn flush(&mut self) -> Vec<WindowRecord> {
        if let Some(&last) = self.open.keys().next_back() {
            self.advance((last + self.window_secs()) * MICROS);
        }
        let done = std::mem::take(&mut self.open);
        let closed = self.records(done);
        self.compact();
        closed
    }

    /// The window records of windows closed now (no longer in the book).
    fn records(
        &mut self,
        done: BTreeMap<i64, HashMap<u32, Open, RandomState>>,
    ) -> Vec<WindowRecord> {
        for w in done.values().flat_map(HashMap::values) {
            self.tally.remove(Tally::of(w));
        }
        let mut out = Vec::new();
        for (start, by_entity) in done {
            let Some(timestamp) = DateTime::from_timestamp(start, 0) else {
                continue;
            };
            let mut windows: Vec<(Option<&str>, Open)> = by_entity
                .into_iter()
                .map(|(e, w)| ((e != NO_ENTITY).then(|| self.hosts.name(e)), w))
                .collect();
            windows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            out.extend(windows.into_iter().map(|(entity, w)| WindowRecord {
                timestamp,
                entity: entity.map(str::to_string),
                bytes_sent: w.sent as f64,
                bytes_received: w.received as f64,
                connections: w.connections as f64,
                active_sessions: w.sessions.len() as f64,
            }));
        }
        out
    }
}
