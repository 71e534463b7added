//! Connections into window records as they are read: hosts interned to `u32` ids, one running
//! sum per (window start, entity), and the `(window, orig_h, resp_h, resp_p)` of every
//! connection packed in one `u128`, sorted and deduplicated whenever the list doubles (and at the
//! end) to count distinct sessions per window. Memory is the aggregation state, not the body.

use std::collections::HashMap;

use chrono::DateTime;
use foldhash::fast::RandomState;

use super::line::{ConnLine, LineError, LineParser, LineSplitter};
use super::{GroupBy, OnInvalid, Rejects, WindowRecord, ZeekError, ZeekFormat, ZeekOptions};

/// Host names to dense ids and back. Lookups hash the text (foldhash, seeded per process, so a
/// crafted log cannot aim at collisions) and compare it in full, so two hosts never share an id.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<Box<str>, u32, RandomState>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `name`, given a new one the first time.
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 hosts");
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The id of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The entity id of an ungrouped record (the whole network).
pub const NO_ENTITY: u32 = u32::MAX;

/// The window a connection at `ts_secs` falls into: `floor(ts / window) * window`.
pub fn window_start(ts_secs: i64, window_secs: i64) -> i64 {
    ts_secs.div_euclid(window_secs) * window_secs
}

/// Which host a connection counts for, as an interned id ([`NO_ENTITY`] when not grouped).
pub fn entity_of(group_by: GroupBy, orig: u32, resp: u32) -> u32 {
    match group_by {
        GroupBy::None => NO_ENTITY,
        GroupBy::OrigHost => orig,
        GroupBy::RespHost => resp,
    }
}

/// The running sums of one window.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    // u128: a window may sum many u64-sized counts without overflowing.
    sent: u128,
    received: u128,
    connections: u64,
}

/// Sessions listed since the last compaction before the list is sorted and deduplicated again.
const MIN_SESSIONS_BEFORE_COMPACTING: usize = 1 << 20;

/// Windows of one body, built a connection at a time.
#[derive(Debug)]
pub struct Aggregator {
    window: i64,
    group_by: GroupBy,
    hosts: Interner,
    /// (window start, entity) -> index into `sums`.
    index: HashMap<(i64, u32), u32, RandomState>,
    sums: Vec<((i64, u32), Sums)>,
    /// Per entity id (the first slot: no entity), its latest window and that window's index:
    /// connections come roughly in time order, so most lines skip the `index` lookup.
    recent: Vec<(i64, u32)>,
    /// window index << 80 | orig_h << 48 | resp_h << 16 | resp_p, for every connection; sorted
    /// and deduplicated up to `compacted`.
    sessions: Vec<u128>,
    compacted: usize,
    /// Sessions listed since the last compaction before the next.
    compact_every: usize,
}

impl Aggregator {
    pub fn new(opts: &ZeekOptions) -> Self {
        Self {
            window: opts.window.secs(),
            group_by: opts.group_by,
            hosts: Interner::new(),
            index: HashMap::default(),
            sums: Vec::new(),
            recent: Vec::new(),
            sessions: Vec::new(),
            compacted: 0,
            compact_every: MIN_SESSIONS_BEFORE_COMPACTING,
        }
    }

    pub fn add(&mut self, c: &ConnLine<'_>) {
        let orig = self.hosts.id(&c.orig_h);
        let resp = self.hosts.id(&c.resp_h);
        let start = window_start(c.ts.timestamp(), self.window);
        let entity = entity_of(self.group_by, orig, resp);
        let slot = if entity == NO_ENTITY {
            0
        } else {
            entity as usize + 1
        };
        if slot >= self.recent.len() {
            self.recent.resize(slot + 1, (i64::MIN, 0));
        }
        let at = match self.recent[slot] {
            (s, at) if s == start => at,
            _ => {
                let next = self.sums.len() as u32;
                let at = *self.index.entry((start, entity)).or_insert(next);
                if at == next {
                    self.sums.push(((start, entity), Sums::default()));
                }
                self.recent[slot] = (start, at);
                at
            }
        };
        let s = &mut self.sums[at as usize].1;
        s.sent += u128::from(c.orig_bytes);
        s.received += u128::from(c.resp_bytes);
        s.connections += 1;
        self.sessions.push(
            u128::from(at) << 80
                | u128::from(orig) << 48
                | u128::from(resp) << 16
                | u128::from(c.resp_p),
        );
        if self.sessions.len() >= 2 * self.compacted + self.compact_every {
            self.compact();
        }
    }

    /// Sorts and deduplicates the session list, so it holds each session once.
    fn compact(&mut self) {
        self.sessions.sort_unstable();
        self.sessions.dedup();
        self.compacted = self.sessions.len();
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The window records, sorted by (window start, entity as text).
    pub fn into_records(mut self) -> Vec<WindowRecord> {
        self.compact();
        let mut distinct = vec![0u64; self.sums.len()];
        for key in &self.sessions {
            distinct[(key >> 80) as usize] += 1;
        }
        let Self { hosts, sums, .. } = self;
        let mut sums: Vec<_> = sums.into_iter().zip(distinct).collect();
        let name = |e: u32| (e != NO_ENTITY).then(|| hosts.name(e));
        sums.sort_unstable_by(|(((s1, e1), _), _), (((s2, e2), _), _)| {
            (s1, name(*e1)).cmp(&(s2, name(*e2)))
        });
        sums.into_iter()
            .filter_map(|(((start, entity), s), sessions)| {
                // Starts come from valid timestamps floored toward 1970, so they are valid too.
                Some(WindowRecord {
                    timestamp: DateTime::from_timestamp(start, 0)?,
                    entity: name(entity).map(str::to_string),
                    bytes_sent: s.sent as f64,
                    bytes_received: s.received as f64,
                    connections: s.connections as f64,
                    active_sessions: sessions as f64,
                })
            })
            .collect()
    }
}

/// A conn log read as its chunks arrive into window records.
#[derive(Debug)]
pub struct ZeekReader {
    splitter: LineSplitter,
    lines: Lines,
}

/// What reads the lines the splitter cuts.
#[derive(Debug)]
struct Lines {
    parser: LineParser,
    agg: Aggregator,
    on_invalid: OnInvalid,
    rejects: Rejects,
}

impl Lines {
    fn take(&mut self, no: usize, line: &[u8]) -> Result<(), ZeekError> {
        match self.parser.line(no, line) {
            Ok(Some(conn)) => self.agg.add(&conn),
            Ok(None) => {}
            Err(LineError::Data(e)) if self.on_invalid == OnInvalid::Skip => self.rejects.add(e),
            Err(e) => return Err(e.into_inner()),
        }
        Ok(())
    }
}

impl ZeekReader {
    pub fn new(format: ZeekFormat, opts: &ZeekOptions) -> Self {
        Self {
            splitter: LineSplitter::new(),
            lines: Lines {
                parser: LineParser::new(format),
                agg: Aggregator::new(opts),
                on_invalid: opts.on_invalid,
                rejects: Rejects::default(),
            },
        }
    }

    /// Reads the lines `chunk` completes; the first bad line is an error unless skipped.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ZeekError> {
        let lines = &mut self.lines;
        self.splitter
            .push(chunk, &mut |no, line| lines.take(no, line))
    }

    /// Reads the last line and hands back the window records (sorted by window start, then
    /// entity) and the lines skipped. No connection at all is an error.
    pub fn finish(mut self) -> Result<(Vec<WindowRecord>, Rejects), ZeekError> {
        let lines = &mut self.lines;
        self.splitter.finish(&mut |no, line| lines.take(no, line))?;
        if self.lines.agg.is_empty() {
            return Err(ZeekError::NoConnections);
        }
        Ok((self.lines.agg.into_records(), self.lines.rejects))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::zeek::{Window, parse_conn_log};

    /// Compacting the session list often (here every few connections) changes no count.
    #[test]
    fn compacting_the_sessions_midway_changes_no_window() {
        let body = crate::records::zeek::tests::shared_sample("conn.log");
        let conns = parse_conn_log(&body, ZeekFormat::Tsv).unwrap();
        for group_by in [GroupBy::None, GroupBy::OrigHost] {
            let opts = ZeekOptions {
                window: Window::from_secs(60).unwrap(),
                group_by,
                ..ZeekOptions::default()
            };
            let expected = crate::records::zeek::aggregate(&conns, &opts);
            let mut agg = Aggregator::new(&opts);
            agg.compact_every = 3;
            for c in &conns {
                agg.add(&ConnLine {
                    ts: c.ts,
                    uid: None,
                    orig_h: c.orig_h.as_str().into(),
                    resp_h: c.resp_h.as_str().into(),
                    resp_p: c.resp_p,
                    orig_bytes: c.orig_bytes,
                    resp_bytes: c.resp_bytes,
                });
            }
            assert!(agg.compacted > 0);
            assert_eq!(agg.into_records(), expected);
            assert!(expected.iter().any(|r| r.active_sessions < r.connections));
        }
    }
}
