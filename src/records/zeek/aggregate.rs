//! Connections into window records as they are read: hosts interned to `u32` ids, one running
//! sum per (window start, entity), and the `(window, orig_h, resp_h, resp_p)` of every
//! connection packed in one `u128`, sorted and deduplicated whenever the list doubles (and at the
//! end) to count distinct sessions per window. Memory is the aggregation state, not the body.
//! [`ZeekReader`] runs one [`Aggregator`] per rayon worker on batches of whole lines and merges
//! them at the end.

use std::collections::HashMap;

use chrono::DateTime;
use foldhash::fast::RandomState;

use super::line::ConnLine;
use super::tsv_fast::ConnFields;
use super::{GroupBy, WindowRecord, ZeekOptions};

/// Host names to dense ids and back. Lookups hash the text (foldhash, seeded per process, so a
/// crafted log cannot aim at collisions) and compare it in full, so two hosts never share an id.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<Box<str>, u32, RandomState>,
    names: Vec<Box<str>>,
    /// The heap blocks of the names' two copies, in bytes ([`heap_block`]).
    text_bytes: usize,
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
        self.text_bytes += 2 * heap_block(name.len());
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
        self.add_fields(&c.fields());
    }

    pub fn add_fields(&mut self, c: &ConnFields<'_>) {
        let orig = self.hosts.id(c.orig_h);
        let resp = self.hosts.id(c.resp_h);
        let start = window_start(c.ts_secs, self.window);
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
    pub fn into_records(self) -> Vec<WindowRecord> {
        records_of(vec![self])
    }
}

/// Whether work on `len` items is worth spreading over the rayon pool: large, and not already on
/// one of its threads (a reader on the pool keeps to its thread).
fn in_parallel(len: usize) -> bool {
    len > 1 << 16 && rayon::current_thread_index().is_none()
}

fn sort_keys(keys: &mut [u128]) {
    use rayon::slice::ParallelSliceMut;
    if in_parallel(keys.len()) {
        keys.par_sort_unstable();
    } else {
        keys.sort_unstable();
    }
}

/// One window of the merged log: its key, its sums over every aggregator, its distinct sessions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Merged {
    start: i64,
    /// 0 for no entity, else 1 + the rank of the entity's name among all hosts.
    rank: u32,
    sums: Sums,
    distinct: u64,
}

/// The window records of several aggregators of one log (or of one), sorted by (window start,
/// entity as text), exactly as one aggregator reading the whole log gives them: hosts are
/// matched by name, sums of a window add up (integers), and sessions are a set.
///
/// Hosts are numbered by the rank of their name, so a window's key `(start, rank)` sorts as the
/// records do; the workers' windows are sorted by it and equal keys merged, which numbers the
/// merged windows in record order; sessions are re-keyed to those numbers and ranks in place
/// (each aggregator's on its own thread), sorted and deduplicated once, and the records are
/// built on every core.
pub(super) fn records_of(mut parts: Vec<Aggregator>) -> Vec<WindowRecord> {
    use rayon::prelude::*;
    for p in &mut parts {
        // Only the hosts, sums and sessions are read from here on.
        p.index = HashMap::default();
        p.recent = Vec::new();
    }
    // Every host once, by name; each aggregator's ids to ranks.
    let mut names: Vec<&str> = parts
        .iter()
        .flat_map(|p| p.hosts.names.iter().map(|n| &**n))
        .collect();
    names.sort_unstable();
    names.dedup();
    let rank: Vec<Vec<u32>> = parts
        .iter()
        .map(|p| {
            p.hosts
                .names
                .iter()
                .map(|n| names.binary_search(&&**n).expect("every name is listed") as u32)
                .collect()
        })
        .collect();
    let names: Vec<Box<str>> = names.into_iter().map(Box::from).collect();
    // (start, entity rank, position among every aggregator's windows), sorted.
    let mut base = Vec::with_capacity(parts.len());
    let mut total = 0usize;
    for p in &parts {
        base.push(total);
        total += p.sums.len();
    }
    let mut keys: Vec<u128> = Vec::with_capacity(total);
    for (p, (rank, &first)) in parts.iter().zip(rank.iter().zip(&base)) {
        keys.extend(p.sums.iter().enumerate().map(|(i, ((start, entity), _))| {
            let r = if *entity == NO_ENTITY {
                0
            } else {
                rank[*entity as usize] + 1
            };
            u128::from((*start as u64) ^ (1 << 63)) << 64
                | u128::from(r) << 32
                | (first + i) as u128
        }));
    }
    sort_keys(&mut keys);
    // Equal keys are one window; `window_of` numbers each aggregator's windows in record order.
    let mut window_of = vec![0u32; total];
    let mut merged: Vec<Merged> = Vec::new();
    let mut last = None;
    for k in &keys {
        // (start, rank): what tells windows apart.
        let key = k >> 32;
        let at = (*k as u32) as usize;
        let part = base.partition_point(|&b| b <= at) - 1;
        let s = parts[part].sums[at - base[part]].1;
        if last != Some(key) {
            last = Some(key);
            merged.push(Merged {
                start: (((k >> 64) as u64) ^ (1 << 63)) as i64,
                rank: (k >> 32) as u32,
                sums: Sums::default(),
                distinct: 0,
            });
        }
        let w = merged.len() - 1;
        let m = &mut merged[w].sums;
        m.sent += s.sent;
        m.received += s.received;
        m.connections += s.connections;
        window_of[at] = w as u32;
    }
    drop(keys);
    // Sessions under the merged windows and ranked hosts, then counted once each.
    parts.par_iter_mut().enumerate().for_each(|(i, p)| {
        p.sums = Vec::new();
        let (first, rank) = (base[i], &rank[i]);
        for k in p.sessions.iter_mut() {
            let w = u128::from(window_of[first + (*k >> 80) as usize]);
            let orig = u128::from(rank[(*k >> 48) as u32 as usize]);
            let resp = u128::from(rank[(*k >> 16) as u32 as usize]);
            *k = w << 80 | orig << 48 | resp << 16 | (*k & 0xFFFF);
        }
    });
    drop(window_of);
    parts.sort_by_key(|p| std::cmp::Reverse(p.sessions.len()));
    let mut sessions = std::mem::take(&mut parts[0].sessions);
    sessions.reserve(parts.iter().map(|p| p.sessions.len()).sum());
    for p in &mut parts {
        sessions.append(&mut p.sessions);
    }
    drop(parts);
    sort_keys(&mut sessions);
    sessions.dedup();
    for key in &sessions {
        merged[(key >> 80) as usize].distinct += 1;
    }
    drop(sessions);
    // Starts come from valid timestamps floored toward 1970; one that is not a time has no record.
    merged.retain(|m| DateTime::from_timestamp(m.start, 0).is_some());
    let record = |m: &Merged| WindowRecord {
        timestamp: DateTime::from_timestamp(m.start, 0).expect("kept above"),
        entity: (m.rank > 0).then(|| names[m.rank as usize - 1].to_string()),
        bytes_sent: m.sums.sent as f64,
        bytes_received: m.sums.received as f64,
        connections: m.sums.connections as f64,
        active_sessions: m.distinct as f64,
    };
    if in_parallel(merged.len()) {
        merged.par_iter().map(record).collect()
    } else {
        merged.iter().map(record).collect()
    }
}

// What the state costs: estimates the memory budget charges as the state grows (see
// `records::read`). Each is O(1) (O(workers) for a reader): lengths and capacities, not a walk.

/// Bytes the allocator takes for a block of `len` bytes (glibc: an 8-byte header, 16-byte
/// steps, at least 32).
pub(crate) fn heap_block(len: usize) -> usize {
    (len + 8).next_multiple_of(16).max(32)
}

/// Bytes of a hash table: its buckets (about 8/7 of its capacity), a control byte each.
fn table_bytes<K, V, S>(m: &HashMap<K, V, S>) -> usize {
    m.capacity() * 8 / 7 * (std::mem::size_of::<(K, V)>() + 1)
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

impl Interner {
    /// An estimate of the bytes the interner holds: its table, its list and both copies of
    /// every name.
    pub fn state_bytes(&self) -> usize {
        table_bytes(&self.ids) + vec_bytes(&self.names) + self.text_bytes
    }
}

impl Aggregator {
    /// An estimate of the bytes this aggregator holds: hosts, windows, the per-host latest
    /// window and the session list, with their tables' spare capacity.
    pub fn state_bytes(&self) -> usize {
        self.hosts.state_bytes()
            + table_bytes(&self.index)
            + vec_bytes(&self.sums)
            + vec_bytes(&self.recent)
            + vec_bytes(&self.sessions)
    }

    /// Windows (per entity) opened so far.
    pub fn windows(&self) -> usize {
        self.sums.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::zeek::reader::ZeekReader;
    use crate::records::zeek::{OnInvalid, REJECTS_KEPT, Rejects, ZeekError, ZeekFormat};
    use crate::records::zeek::{Window, parse_conn_log};

    /// A log of `n` lines from 60 hosts over a few hours, every 37th line bad (a negative count,
    /// a short line, a bad time), with a second `#fields` header halfway (another field order).
    fn long_log(n: usize) -> Vec<u8> {
        let mut s = String::from(
            "#separator \\x09\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n",
        );
        for i in 0..n {
            if i == n / 2 {
                s.push_str("#fields\tid.resp_p\tid.resp_h\tid.orig_h\tts\n");
            }
            let ts = format!("{}.{:06}", 1_700_000_000 + i * 7, (i * 7919) % 1_000_000);
            let (o, r, p) = (
                format!("10.0.{}.{}", i % 3, i % 60),
                format!("8.8.{}.8", i % 5),
                80 + i % 4,
            );
            let line = match (i % 37 == 36, i >= n / 2) {
                (true, _) if i % 3 == 0 => format!("{ts}\tC{i}\t{o}"),
                (true, false) => format!("{ts}\tC{i}\t{o}\t{r}\t{p}\t-5\t1"),
                (true, true) => format!("{p}\t{r}\t{o}\tsoon"),
                (false, false) => format!("{ts}\tC{i}\t{o}\t{r}\t{p}\t{}\t-", i * 13),
                (false, true) => format!("{p}\t{r}\t{o}\t{ts}"),
            };
            s.push_str(&line);
            s.push('\n');
        }
        s.into_bytes()
    }

    fn read(
        body: &[u8],
        opts: &ZeekOptions,
        batch: usize,
    ) -> Result<(Vec<WindowRecord>, Rejects), ZeekError> {
        let mut reader = ZeekReader::new(ZeekFormat::Tsv, opts).with_batch_bytes(batch);
        for piece in body.chunks(4096) {
            reader.push(piece)?;
        }
        reader.finish()
    }

    /// Read by several workers in small batches, a long log gives the windows, the skipped lines
    /// (more than are kept one by one) and the first error that one thread reading it gives.
    #[test]
    fn batches_on_several_workers_read_as_one_thread_reads() {
        let body = long_log(20_000);
        for on_invalid in [OnInvalid::Skip, OnInvalid::Reject] {
            for group_by in [GroupBy::None, GroupBy::OrigHost, GroupBy::RespHost] {
                let opts = ZeekOptions {
                    window: Window::from_secs(300).unwrap(),
                    group_by,
                    on_invalid,
                };
                let one = read(&body, &opts, usize::MAX);
                for batch in [1, 5_000, 64 << 10] {
                    assert_eq!(
                        read(&body, &opts, batch),
                        one,
                        "{on_invalid:?} {group_by} {batch}"
                    );
                }
                match (on_invalid, &one) {
                    (OnInvalid::Skip, Ok((recs, rejects))) => {
                        assert!(rejects.total > REJECTS_KEPT, "{}", rejects.total);
                        assert_eq!(rejects.first.len(), REJECTS_KEPT);
                        assert!(recs.len() > 10);
                    }
                    (OnInvalid::Reject, Err(e)) => assert_eq!(e.line(), Some(3 + 37), "{e}"),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

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
