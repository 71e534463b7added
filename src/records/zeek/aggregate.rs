//! Connections into window records as they are read: hosts interned to `u32` ids, one running
//! sum per (window start, entity), and the `(window, orig_h, resp_h, resp_p)` of every
//! connection packed in one `u128`, sorted and deduplicated whenever the list doubles (and at the
//! end) to count distinct sessions per window. Memory is the aggregation state, not the body.
//! [`ZeekReader`] runs one [`Aggregator`] per rayon worker on batches of whole lines and merges
//! them at the end.

use std::collections::HashMap;

use chrono::DateTime;
use foldhash::fast::RandomState;

use super::line::{ConnLine, LineError, LineParser, LineSplitter};
use super::tsv_fast::ConnFields;
use super::{
    GroupBy, OnInvalid, REJECTS_KEPT, Rejects, WindowRecord, ZeekError, ZeekFormat, ZeekOptions,
};

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
        self.add_fields(&ConnFields {
            ts_secs: c.ts.timestamp(),
            orig_h: &c.orig_h,
            resp_h: &c.resp_h,
            resp_p: c.resp_p,
            orig_bytes: c.orig_bytes,
            resp_bytes: c.resp_bytes,
        });
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
struct Merged {
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
fn records_of(mut parts: Vec<Aggregator>) -> Vec<WindowRecord> {
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

/// Bytes of whole lines handed to a worker at a time.
const BATCH_BYTES: usize = 1 << 20;

/// A conn log read as its chunks arrive into window records, on every core: the body is cut at
/// line breaks into batches of about a MiB, each batch is read by a rayon worker into that
/// worker's own [`Aggregator`], and the workers' windows are merged at the end (exactly: sums
/// are integers, sessions a set, so the records are bit for bit those of one thread reading the
/// whole log). Line numbers are counted per batch and made absolute as the batches complete in
/// order, so errors and skipped lines name the same lines as a sequential read. A TSV header
/// line is read twice: here, for the state the next batch starts with, and by the worker that
/// reads its batch, where its errors are reported in order. Small bodies (one batch) are read
/// on the calling thread.
pub struct ZeekReader {
    opts: ZeekOptions,
    /// The header state at the start of `pending` (TSV).
    parser: LineParser,
    /// Bytes not yet handed out: the start of the next batch.
    pending: Vec<u8>,
    batch_bytes: usize,
    /// Work handed to rayon; `None` until the first batch goes (and on a rayon thread).
    pool: Option<Pool>,
    /// Batches in order as they complete: absolute line numbers, skipped lines, the first error.
    progress: Progress,
    /// A header line that cannot be read: nothing after it is handed out.
    ended: bool,
    /// Batch buffers the workers gave back, reused for the next batches (a fresh MiB-sized
    /// buffer per batch is a fresh mapping whose pages fault in one by one).
    spare: Vec<Vec<u8>>,
}

/// Batch buffers kept for reuse.
const SPARE_BUFFERS: usize = 4;

impl std::fmt::Debug for ZeekReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeekReader")
            .field("pending", &self.pending.len())
            .field("next_seq", &self.progress.next_seq)
            .finish_non_exhaustive()
    }
}

/// The workers of one reader: an aggregator per rayon thread, and where finished batches report.
struct Pool {
    slots: std::sync::Arc<Vec<std::sync::Mutex<Option<Aggregator>>>>,
    done_tx: std::sync::mpsc::Sender<Outcome>,
    done_rx: std::sync::mpsc::Receiver<Outcome>,
    /// Batches handed out whose outcome has not come back.
    in_flight: usize,
    /// The first batch (by order) that failed: later ones need not be read.
    failed_at: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next_seq: u64,
    /// Each worker's state as of its last batch ([`StateSizes`]).
    sizes: std::sync::Arc<StateSizes>,
}

/// What reading one batch gave, with line numbers counted from the batch's start.
#[derive(Debug, Default)]
struct Outcome {
    seq: u64,
    lines: usize,
    /// The first skipped lines ([`REJECTS_KEPT`] at most) and how many in all.
    skipped: Vec<ZeekError>,
    skipped_total: usize,
    error: Option<ZeekError>,
    /// The batch's buffer, given back for reuse.
    buffer: Vec<u8>,
}

/// Batch outcomes folded in order.
#[derive(Debug, Default)]
struct Progress {
    next_seq: u64,
    /// Lines of the batches folded so far.
    lines: usize,
    waiting: std::collections::BTreeMap<u64, Outcome>,
    rejects: Rejects,
    error: Option<ZeekError>,
}

impl Progress {
    /// Folds every batch that is next in order; the first error (by line) ends the read.
    fn absorb(&mut self, o: Outcome) -> Result<(), ZeekError> {
        self.waiting.insert(o.seq, o);
        while self.error.is_none() {
            let Some(o) = self.waiting.remove(&self.next_seq) else {
                break;
            };
            let kept = o.skipped.len();
            for e in o.skipped {
                self.rejects.add(shifted(e, self.lines));
            }
            self.rejects.total += o.skipped_total - kept;
            if let Some(e) = o.error {
                self.error = Some(shifted(e, self.lines));
                break;
            }
            self.lines += o.lines;
            self.next_seq += 1;
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// `o` without its batch buffer, which goes to `spare` (emptied) while fewer than
/// [`SPARE_BUFFERS`] are kept.
fn keep_buffer(spare: &mut Vec<Vec<u8>>, mut o: Outcome) -> Outcome {
    let mut buffer = std::mem::take(&mut o.buffer);
    if spare.len() < SPARE_BUFFERS && buffer.capacity() > 0 {
        buffer.clear();
        spare.push(buffer);
    }
    o
}

/// `e` with its line number counted `offset` lines further.
fn shifted(mut e: ZeekError, offset: usize) -> ZeekError {
    if let ZeekError::Line { line, .. } | ZeekError::MissingField { line, .. } = &mut e {
        *line += offset;
    }
    e
}

/// Reads the lines of one batch (whole lines; `last`: the body's end, whose text after the last
/// break is a line too) into `agg`, numbering them from 1.
fn read_batch(
    parser: &mut LineParser,
    agg: &mut Aggregator,
    batch: &[u8],
    last: bool,
    on_invalid: OnInvalid,
) -> Outcome {
    if let Some(text) = (parser.format() == ZeekFormat::Tsv)
        .then(|| std::str::from_utf8(batch).ok())
        .flatten()
    {
        return read_text_batch(parser, agg, text, last, on_invalid);
    }
    let mut out = Outcome::default();
    let mut take = |no: usize, line: &[u8]| read_line(parser, agg, &mut out, on_invalid, no, line);
    let mut lines = LineSplitter::new();
    let read = lines.push(batch, &mut take).and_then(|()| {
        if last {
            lines.finish(&mut take)
        } else {
            Ok(())
        }
    });
    out.lines = lines.lines();
    out.error = read.err();
    out
}

fn str_strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// Reads line `no` into `agg`; a data line's error is skipped (and counted in `out`) or returned,
/// as `on_invalid` says.
fn read_line(
    parser: &mut LineParser,
    agg: &mut Aggregator,
    out: &mut Outcome,
    on_invalid: OnInvalid,
    no: usize,
    line: &[u8],
) -> Result<(), ZeekError> {
    match parser.line(no, line) {
        Ok(Some(conn)) => agg.add(&conn),
        Ok(None) => {}
        Err(LineError::Data(e)) if on_invalid == OnInvalid::Skip => {
            out.skipped_total += 1;
            if out.skipped.len() < REJECTS_KEPT {
                out.skipped.push(e);
            }
        }
        Err(e) => return Err(e.into_inner()),
    }
    Ok(())
}

/// [`read_batch`] for a TSV batch that is valid UTF-8 as a whole (so each of its lines is): a
/// data line in the common form is read by the fast path, every other line as always. Lines are
/// cut and numbered as [`LineSplitter`] cuts them.
fn read_text_batch(
    parser: &mut LineParser,
    agg: &mut Aggregator,
    text: &str,
    last: bool,
    on_invalid: OnInvalid,
) -> Outcome {
    let mut out = Outcome::default();
    let mut take = |no: usize, line: &str| match parser.fast_tsv(line) {
        Some(conn) => {
            agg.add_fields(&conn);
            Ok(())
        }
        None => read_line(parser, agg, &mut out, on_invalid, no, line.as_bytes()),
    };
    let (mut no, mut start) = (0, 0);
    let mut read = Ok(());
    for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
        no += 1;
        read = take(no, str_strip_cr(&text[start..end]));
        start = end + 1;
        if read.is_err() {
            break;
        }
    }
    if read.is_ok() && last {
        no += 1;
        read = take(no, str_strip_cr(&text[start..]));
    }
    out.lines = no;
    out.error = read.err();
    out
}

impl ZeekReader {
    pub fn new(format: ZeekFormat, opts: &ZeekOptions) -> Self {
        Self {
            opts: *opts,
            parser: LineParser::new(format),
            pending: Vec::new(),
            batch_bytes: BATCH_BYTES,
            pool: None,
            progress: Progress::default(),
            ended: false,
            spare: Vec::new(),
        }
    }

    /// Batches of about `bytes` (tests cut small ones to check the merge).
    #[cfg(test)]
    pub(crate) fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Reads the lines `chunk` completes (on the workers); an error found so far in the lines
    /// before is returned (the first bad line, unless skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ZeekError> {
        if self.ended {
            return self.collect_done();
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= self.batch_bytes && rayon::current_thread_index().is_none() {
            if let Some(nl) = memchr::memrchr(b'\n', &self.pending) {
                let mut rest = self.spare.pop().unwrap_or_default();
                rest.extend_from_slice(&self.pending[nl + 1..]);
                self.pending.truncate(nl + 1);
                let batch = std::mem::replace(&mut self.pending, rest);
                self.hand_out(batch);
            }
        }
        self.collect_done()
    }

    /// Gives a batch of whole lines to a worker, with the header state it starts with; reads
    /// its header lines for the state the next batch starts with.
    fn hand_out(&mut self, batch: Vec<u8>) {
        let parser = self.parser.clone();
        if self.parser.format() == ZeekFormat::Tsv {
            let mut at = (batch.first() == Some(&b'#')).then_some(0);
            let mut from = 0;
            loop {
                let start = match at.take() {
                    Some(s) => s,
                    None => match memchr::memmem::find(&batch[from..], b"\n#") {
                        Some(i) => from + i + 1,
                        None => break,
                    },
                };
                let end = memchr::memchr(b'\n', &batch[start..]).map_or(batch.len(), |e| start + e);
                let line = &batch[start..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if self.parser.line(0, line).is_err() {
                    // The worker reports it with its line number; nothing after it counts.
                    self.ended = true;
                }
                from = end;
            }
        }
        let pool = self.pool.get_or_insert_with(Pool::new);
        // Backpressure: a few batches per worker in flight, so memory stays a few MiB.
        while pool.in_flight > 2 * pool.slots.len() {
            let Ok(o) = pool.done_rx.recv() else { break };
            pool.in_flight -= 1;
            // An error is kept in `progress` and returned by the next `push`.
            let _ = self.progress.absorb(keep_buffer(&mut self.spare, o));
        }
        pool.spawn(parser, batch, self.opts);
    }

    /// Folds the batches that have completed; the first error among them (in line order, all
    /// earlier batches done) is returned.
    fn collect_done(&mut self) -> Result<(), ZeekError> {
        if let Some(e) = &self.progress.error {
            return Err(e.clone());
        }
        let Some(pool) = &mut self.pool else {
            return Ok(());
        };
        while let Ok(o) = pool.done_rx.try_recv() {
            pool.in_flight -= 1;
            self.progress.absorb(keep_buffer(&mut self.spare, o))?;
        }
        Ok(())
    }

    /// Reads the last line and hands back the window records (sorted by window start, then
    /// entity) and the lines skipped. No connection at all is an error.
    pub fn finish(mut self) -> Result<(Vec<WindowRecord>, Rejects), ZeekError> {
        let mut aggs = Vec::new();
        let last = std::mem::take(&mut self.pending);
        let mut seq = 0;
        if let Some(pool) = &mut self.pool {
            seq = pool.next_seq;
            // Wait for every batch handed out.
            while pool.in_flight > 0 {
                let o = pool
                    .done_rx
                    .recv()
                    .expect("the reader keeps a sender, so the channel stays open");
                pool.in_flight -= 1;
                self.progress.absorb(o)?;
            }
            for slot in pool.slots.iter() {
                let mut slot = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                aggs.extend(slot.take());
            }
        }
        if !self.ended {
            // The rest of the body, read here: the workers are done.
            let mut agg = Aggregator::new(&self.opts);
            let mut o = read_batch(
                &mut self.parser,
                &mut agg,
                &last,
                true,
                self.opts.on_invalid,
            );
            o.seq = seq;
            self.progress.absorb(o)?;
            aggs.push(agg);
        }
        if let Some(e) = self.progress.error {
            return Err(e);
        }
        aggs.retain(|a| !a.is_empty());
        if aggs.is_empty() {
            return Err(ZeekError::NoConnections);
        }
        Ok((records_of(aggs), self.progress.rejects))
    }
}

impl Pool {
    fn new() -> Self {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let slots = (0..rayon::current_num_threads().max(1))
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        Self {
            slots: std::sync::Arc::new(slots),
            done_tx,
            done_rx,
            in_flight: 0,
            failed_at: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            next_seq: 0,
            sizes: std::sync::Arc::new(StateSizes::new(rayon::current_num_threads().max(1))),
        }
    }

    fn spawn(&mut self, mut parser: LineParser, batch: Vec<u8>, opts: ZeekOptions) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight += 1;
        let (slots, tx, failed_at, sizes) = (
            self.slots.clone(),
            self.done_tx.clone(),
            self.failed_at.clone(),
            self.sizes.clone(),
        );
        rayon::spawn(move || {
            let outcome = if seq > failed_at.load(std::sync::atomic::Ordering::Relaxed) {
                // An earlier batch failed: this one is never looked at.
                Outcome::default()
            } else {
                let i = rayon::current_thread_index().unwrap_or(0) % slots.len();
                let mut slot = slots[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let agg = slot.get_or_insert_with(|| Aggregator::new(&opts));
                let o = read_batch(&mut parser, agg, &batch, false, opts.on_invalid);
                sizes.note(i, agg);
                if o.error.is_some() {
                    failed_at.fetch_min(seq, std::sync::atomic::Ordering::Relaxed);
                }
                o
            };
            let _ = tx.send(Outcome {
                seq,
                buffer: batch,
                ..outcome
            });
        });
    }
}

impl Drop for Pool {
    /// A reader dropped before its end (its request refused or cancelled): the batches handed
    /// out and not yet started are skipped, so their state is never built.
    fn drop(&mut self) {
        self.failed_at
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
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

/// Each worker's aggregator as of its last batch: its [`Aggregator::state_bytes`] and windows.
#[derive(Debug)]
struct StateSizes {
    bytes: Vec<std::sync::atomic::AtomicUsize>,
    windows: Vec<std::sync::atomic::AtomicUsize>,
}

impl StateSizes {
    fn new(workers: usize) -> Self {
        let zeros = || {
            (0..workers)
                .map(|_| std::sync::atomic::AtomicUsize::new(0))
                .collect()
        };
        Self {
            bytes: zeros(),
            windows: zeros(),
        }
    }

    fn note(&self, worker: usize, agg: &Aggregator) {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes[worker].store(agg.state_bytes(), Relaxed);
        self.windows[worker].store(agg.windows(), Relaxed);
    }

    /// The workers' bytes in all, the largest worker's, and their windows in all.
    fn totals(&self) -> (usize, usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let bytes = self.bytes.iter().map(|b| b.load(Relaxed));
        let windows: usize = self.windows.iter().map(|w| w.load(Relaxed)).sum();
        (bytes.clone().sum(), bytes.max().unwrap_or(0), windows)
    }
}

/// What the end of a read ([`records_of`]) builds per window beside the workers' state: the
/// sorted window keys with each window's number, then the merged window, then its record (with
/// its entity's name, counted by the caller).
const RECORDS_BYTES_PER_WINDOW: usize = std::mem::size_of::<Merged>()
    + std::mem::size_of::<WindowRecord>()
    + std::mem::size_of::<u128>()
    + std::mem::size_of::<u32>();

impl ZeekReader {
    /// Waits until the batches handed out are read (their state noted, so the estimates count
    /// it); an error found in them is returned.
    pub fn settle(&mut self) -> Result<(), ZeekError> {
        if let Some(pool) = &mut self.pool {
            while pool.in_flight > 0 {
                let Ok(o) = pool.done_rx.recv() else { break };
                pool.in_flight -= 1;
                self.progress.absorb(o)?;
            }
        }
        Ok(())
    }

    /// An estimate of the bytes the reader holds now: the workers' window state (as of their
    /// last batch), the batches handed out and not yet read back, and the bytes waiting for the
    /// rest of their line.
    pub fn state_bytes(&self) -> u64 {
        let (workers, in_flight) = match &self.pool {
            Some(pool) => (pool.sizes.totals().0, pool.in_flight * self.batch_bytes),
            None => (0, 0),
        };
        (workers + in_flight + self.pending.capacity()) as u64
    }

    /// Windows (per entity) opened so far, counted once per worker that holds one (an upper
    /// bound of the windows [`finish`](Self::finish) gives).
    pub fn windows(&self) -> u64 {
        self.pool
            .as_ref()
            .map_or(0, |pool| pool.sizes.totals().2 as u64)
    }

    /// An estimate of the most [`finish`](Self::finish) holds at once, from the state now: the
    /// merge (the workers' states, the largest growing by the others'), then the window
    /// records built beside the merged state (each with its entity's name, taken as an address's).
    pub fn finish_bytes(&self) -> u64 {
        let Some(pool) = &self.pool else {
            return self.state_bytes();
        };
        let (all, largest, windows) = pool.sizes.totals();
        let merge = 2 * all - largest;
        let records = all + windows * (RECORDS_BYTES_PER_WINDOW + heap_block(16));
        (merge.max(records) + self.pending.capacity()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
