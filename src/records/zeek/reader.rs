//! [`ZeekReader`]: a conn log read as its chunks arrive, on every core, into window records
//! (each worker's [`Aggregator`], merged at the end by `aggregate.rs`), with progress, rejects
//! and the memory its state holds as the budget counts it.

use super::aggregate::{Aggregator, Merged, heap_block, records_of};
use super::json_line::fast_json;
use super::line::{LineError, LineParser, LineSplitter};
use super::tsv_fast::ConnFields;
use super::{OnInvalid, REJECTS_KEPT, Rejects, WindowRecord, ZeekError, ZeekFormat, ZeekOptions};

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
    // A TSV batch that is UTF-8 as a whole, a JSON one that is ASCII (the flat JSON scanner
    // reads only ASCII lines), takes the fast path line by line.
    let text = std::str::from_utf8(batch)
        .ok()
        .filter(|t| parser.format() == ZeekFormat::Tsv || t.is_ascii());
    if let Some(text) = text {
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

/// A data line in the common form by the fast path of its format, or `None` (then the full
/// path reads it, and reports on it).
fn fast_line<'a>(parser: &mut LineParser, json: bool, line: &'a str) -> Option<ConnFields<'a>> {
    if json {
        fast_json(line, &mut parser.json_shape)
    } else {
        parser.fast_tsv(line)
    }
}

/// [`read_batch`] for a TSV batch that is valid UTF-8 as a whole (so each of its lines is), or
/// a JSON batch that is ASCII: a data line in the common form is read by the fast path, every
/// other line as always. Lines are cut and numbered as [`LineSplitter`] cuts them.
fn read_text_batch(
    parser: &mut LineParser,
    agg: &mut Aggregator,
    text: &str,
    last: bool,
    on_invalid: OnInvalid,
) -> Outcome {
    let mut out = Outcome::default();
    let json = parser.format() == ZeekFormat::Json;
    let mut take = |no: usize, line: &str| match fast_line(parser, json, line) {
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
