//! From a body, whole or as it arrives, to a checked batch: the one path every endpoint reads records through.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::BodyFormat;
use super::batch::{Batch, Features};
use super::builder::{BatchBuilder, ChunkSink};
use super::csv::read_csv;
use super::error::RecordError;
use super::json::{Settings, TopLevel, read_json, read_ndjson};
use super::json_stream::{read_json_stream, read_json_stream_settings};
use super::zeek::{Rejects, ZeekFormat, ZeekOptions, ZeekReader, read_windows, read_zeek};

/// How to read a body.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub format: BodyFormat,
    /// The features every record must carry; `None` chooses them from the first record
    /// ([`Features::Default`]).
    pub features: Option<Vec<String>>,
    /// `label` (0 or 1) on every record.
    pub require_labels: bool,
    pub max_records: usize,
    /// How Zeek connections become window records (other formats ignore it).
    pub zeek: ZeekOptions,
    /// What a JSON object body may hold besides `records`.
    pub top_level: TopLevel,
    /// The settings a JSON object body may carry beside `records` that the reader keeps
    /// ([`read_stream_settings`]); others are kept by name only.
    pub settings: &'static [&'static str],
    /// A JSON object body's `features` setting chooses the features (a fit's).
    pub features_setting: bool,
}

impl ReadSpec {
    /// Records with the given features (or the default choice), no labels, Zeek defaults, and
    /// nothing but `records` in a JSON object.
    pub fn new(format: BodyFormat, features: Option<Vec<String>>, max_records: usize) -> Self {
        Self {
            format,
            features,
            require_labels: false,
            max_records,
            zeek: ZeekOptions::default(),
            top_level: TopLevel::RecordsOnly,
            settings: &[],
            features_setting: false,
        }
    }

    fn builder(&self, sink: Option<ChunkSink>) -> BatchBuilder {
        let b = self.builder_for(self.features.clone());
        match sink {
            Some(sink) => b.with_chunk_sink(sink),
            None => b,
        }
    }

    /// A builder as the spec makes one, for `features` (`None`: the default choice).
    pub(super) fn builder_for(&self, features: Option<Vec<String>>) -> BatchBuilder {
        let features = match &features {
            Some(f) => Features::Given(f),
            None => Features::Default,
        };
        BatchBuilder::with_features(features, self.require_labels, self.max_records)
    }
}

/// A checked batch; its first `sunk` records went to the chunk sink as they were read.
pub struct Parsed {
    pub batch: Batch,
    pub sunk: usize,
    /// The Zeek lines skipped (`on_invalid: skip`); empty for other bodies.
    pub rejects: Rejects,
}

fn finish(b: BatchBuilder, rejects: Rejects) -> Result<Parsed, RecordError> {
    let sunk = b.sunk();
    Ok(Parsed {
        batch: b.finish()?,
        sunk,
        rejects,
    })
}

/// Feeds a whole body to `b`.
fn fill(body: &[u8], spec: &ReadSpec, b: &mut BatchBuilder) -> Result<Rejects, RecordError> {
    let none = |r: Result<(), RecordError>| r.map(|()| Rejects::default());
    match spec.format {
        BodyFormat::Csv => none(read_csv(body.strip_prefix(BOM).unwrap_or(body), b)),
        BodyFormat::Ndjson => none(read_ndjson(body, b)),
        BodyFormat::Json => none(read_json(body, b, spec.top_level)),
        BodyFormat::ZeekTsv => read_zeek(body, ZeekFormat::Tsv, &spec.zeek, b),
        BodyFormat::ZeekJson => read_zeek(body, ZeekFormat::Json, &spec.zeek, b),
    }
}

/// Reads a Zeek body chunk by chunk as it arrives into `b`: only the window state is kept.
///
/// The state grows with windows, sessions and hosts, not with bytes (a log whose every line
/// opens a window of a new host costs several times its size), so it is charged to the
/// request's memory budget as it is observed: after each chunk, the reader's state beyond what
/// the request reserved already (its body's cost); once every batch is read, before the windows
/// are merged into records, the most that step and the batch built from them hold. A charge
/// refused ends the read with 413 `memory-budget` or 503 `overloaded`, having grown by at most
/// the batches in flight.
fn read_zeek_stream(
    reader: &mut BodyReader,
    format: ZeekFormat,
    opts: &ZeekOptions,
    b: &mut BatchBuilder,
) -> Result<Rejects, RecordError> {
    reader.skip_prefix(BOM);
    let mut zeek = ZeekReader::new(format, opts);
    let mut charge = Charge::new();
    while let Some(chunk) = reader.next_bytes() {
        zeek.push(&chunk)?;
        charge.hold(zeek.state_bytes())?;
    }
    zeek.settle()?;
    let read_at = std::time::Instant::now();
    charge.hold(zeek_finish_bytes(&zeek))?;
    let (records, rejects) = zeek.finish()?;
    let merged_at = std::time::Instant::now();
    read_windows(&records, opts.group_by, b)?;
    tracing::debug!(
        windows = records.len(),
        merge_ms = (merged_at - read_at).as_millis() as u64,
        batch_ms = merged_at.elapsed().as_millis() as u64,
        "Zeek windows read"
    );
    Ok(rejects)
}

/// What a Zeek read holds at most from the end of its body until its batch is scored: the
/// merge of the workers' windows into records, then the batch built from them and its scores.
pub fn zeek_finish_bytes(zeek: &ZeekReader) -> u64 {
    zeek.finish_bytes() + zeek.windows() * BATCH_BYTES_PER_WINDOW
}

/// What a window costs once it is a record of the batch and scored: its features, its start
/// and entity as text, and its score with the marks beside it.
const BATCH_BYTES_PER_WINDOW: u64 = 4 * 8 + 32 + 32 + 32;

/// Memory observed as it grows, held against the current request's budget: charged once it
/// passes what the request holds, in steps of at least [`RESERVE_STEP`].
struct Charge {
    work: Option<crate::work::Work>,
    /// What the request held when last looked at.
    held: u64,
}

impl Charge {
    fn new() -> Self {
        let work = crate::work::current();
        let held = work.as_ref().map_or(0, |w| w.reserved());
        Self { work, held }
    }

    /// Holds `bytes` in all: reserves what is missing (413 or 503 when refused).
    fn hold(&mut self, bytes: u64) -> Result<(), RecordError> {
        let Some(work) = &self.work else {
            return Ok(());
        };
        if bytes <= self.held {
            return Ok(());
        }
        work.reserve_total(bytes, RESERVE_STEP)
            .map_err(RecordError::over_budget)?;
        self.held = work.reserved();
        Ok(())
    }
}

/// A UTF-8 byte order mark (Windows editors add one): not part of the first line.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads a body already in memory into a checked batch. Blocking: call it off the async runtime.
pub fn read_slice(
    body: &[u8],
    spec: &ReadSpec,
    sink: Option<ChunkSink>,
) -> Result<Parsed, RecordError> {
    let mut b = spec.builder(sink);
    let rejects = fill(body, spec, &mut b)?;
    finish(b, rejects)
}

/// Body chunks in flight between the request task and the parser thread.
const CHANNEL_CHUNKS: usize = 16;

/// Reads a body as it arrives (decoded: see [`super::decoded`]) into a checked batch, parsed on
/// a blocking thread while the body streams in, so it is never held whole: CSV, NDJSON and JSON
/// a record at a time, a Zeek log into its window state. Bodies over `max_body` bytes are a
/// `BodyTooLarge` problem whatever they hold.
///
/// `sink` gets each chunk of records as soon as it is parsed (to score it while the rest of
/// the body is read), and `then` runs on the same blocking thread right after the batch is
/// checked, so a request makes one trip off the async runtime, not two.
pub async fn read_stream<S, T, F>(
    body: S,
    max_body: usize,
    spec: ReadSpec,
    sink: Option<ChunkSink>,
    then: F,
) -> Result<T, RecordError>
where
    S: Stream<Item = BodyChunk> + Unpin,
    T: Send + 'static,
    F: FnOnce(Parsed) -> T + Send + 'static,
{
    pump(body, max_body, move |reader| {
        let mut b = spec.builder(sink);
        let parsed = parse(reader, &spec, &mut b);
        let parsed = reader.settle(parsed.and_then(|rejects| finish(b, rejects)))?;
        Ok(then(parsed))
    })
    .await
}

/// A body read with the settings it carries: a JSON object's members besides `records` (see
/// [`read_json_stream_settings`]); other bodies carry none.
pub struct WithSettings {
    pub settings: Settings,
    /// The records, checked, or their problem: answered after the settings' own.
    pub records: Result<Parsed, RecordError>,
}

/// Reads a body as it arrives, as [`read_stream`] does, with the settings a JSON object body
/// carries beside its records (`spec.settings`; `spec.features_setting`: its `features` choose
/// the records' features). The body's syntax and shape are the error; the records' own
/// problems are in [`WithSettings::records`], so a caller can answer the settings' first.
pub async fn read_stream_settings<S>(
    body: S,
    max_body: usize,
    spec: ReadSpec,
) -> Result<WithSettings, RecordError>
where
    S: Stream<Item = BodyChunk> + Unpin,
{
    pump(body, max_body, move |reader| {
        let mut b = spec.builder(None);
        if spec.format != BodyFormat::Json {
            let parsed = parse(reader, &spec, &mut b);
            let records = Ok(reader.settle(parsed.and_then(|rejects| finish(b, rejects)))?);
            let settings = Settings {
                fields: Default::default(),
                has_records: true,
            };
            return Ok(WithSettings { settings, records });
        }
        let read = read_json_stream_settings(|| reader.next_bytes(), &spec, &mut b);
        let (settings, records) = reader.settle(read)?;
        let records = records.and_then(|()| finish(b, Rejects::default()));
        Ok(WithSettings { settings, records })
    })
    .await
}

/// Parses a body as it arrives into `b`, in its format.
fn parse(
    reader: &mut BodyReader,
    spec: &ReadSpec,
    b: &mut BatchBuilder,
) -> Result<Rejects, RecordError> {
    let none = |r: Result<(), RecordError>| r.map(|()| Rejects::default());
    match spec.format {
        BodyFormat::Csv => {
            reader.skip_prefix(BOM);
            none(read_csv(&mut *reader, b))
        }
        BodyFormat::Ndjson => none(read_ndjson(
            io::BufReader::with_capacity(1 << 16, &mut *reader),
            b,
        )),
        BodyFormat::Json => none(read_json_stream(|| reader.next_bytes(), b, spec.top_level)),
        BodyFormat::ZeekTsv => read_zeek_stream(reader, ZeekFormat::Tsv, &spec.zeek, b),
        _ => read_zeek_stream(reader, ZeekFormat::Json, &spec.zeek, b),
    }
}

/// Runs `parse` on a blocking thread over the body's chunks as the request task receives them
/// (at most `max_body` bytes: past that, a `BodyTooLarge` problem); a request cancelled
/// meanwhile is an error whatever was parsed.
async fn pump<S, T, P>(mut body: S, max_body: usize, parse: P) -> Result<T, RecordError>
where
    S: Stream<Item = BodyChunk> + Unpin,
    T: Send + 'static,
    P: FnOnce(&mut BodyReader) -> Result<T, RecordError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let parser = crate::work::spawn_blocking(move || {
        let mut reader = BodyReader::new(rx);
        let parsed = parse(&mut reader)?;
        stop_if_cancelled()?;
        Ok(parsed)
    });
    let mut total = 0usize;
    while let Some(frame) = body.next().await {
        let (chunk, stop) = match frame {
            Ok(c) => {
                total += c.len();
                if total > max_body {
                    (Err(RecordError::body_too_large()), true)
                } else {
                    (Ok(c), false)
                }
            }
            Err(e) => (Err(e), true),
        };
        if tx.send(chunk).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    parser.await.map_err(lost)?
}

/// An error once the request reading this body was cancelled: its work stops here.
fn stop_if_cancelled() -> Result<(), RecordError> {
    match crate::work::cancelled() {
        true => Err(RecordError::cancelled()),
        false => Ok(()),
    }
}

/// A parser thread that panicked or was cancelled: the service's fault, not the body's.
fn lost(e: tokio::task::JoinError) -> RecordError {
    tracing::error!(error = %e, "a body parser thread failed");
    RecordError::new(
        super::error::RecordErrorKind::Internal,
        "reading the body failed; the error is in the service log",
    )
}

// ---------------------------------------------------------------------------------------------
// The body as it arrives

/// A body chunk, or why the body could not be read (too large, connection lost).
pub type BodyChunk = Result<Bytes, RecordError>;

use crate::work::RESERVE_STEP;

/// `body` with its bytes, times `cost`, held against `work`'s memory budget as they arrive,
/// beyond the first `covered` bytes of cost (reserved already from the declared length). A
/// reservation refused ends the body with that problem (413, or 503 when the process budget
/// is busy).
pub fn budgeted<S>(
    body: S,
    work: crate::work::Work,
    cost: u64,
    covered: u64,
) -> impl Stream<Item = BodyChunk> + Send + 'static
where
    S: Stream<Item = BodyChunk> + Send + Unpin + 'static,
{
    let state = (body, work, 0u64, covered, false);
    futures_util::stream::unfold(
        state,
        move |(mut body, work, mut seen, mut covered, over)| async move {
            if over {
                return None;
            }
            let chunk = body.next().await?;
            let Ok(bytes) = &chunk else {
                return Some((chunk, (body, work, seen, covered, true)));
            };
            seen = seen.saturating_add(bytes.len() as u64 * cost);
            if seen > covered {
                let more = (seen - covered).max(RESERVE_STEP);
                if let Err(e) = work.reserve(more) {
                    return Some((
                        Err(RecordError::over_budget(e)),
                        (body, work, seen, covered, true),
                    ));
                }
                covered += more;
            }
            Some((chunk, (body, work, seen, covered, false)))
        },
    )
}

/// Reads body chunks sent by the request task; a blocking reader for a parser thread.
pub struct BodyReader {
    rx: mpsc::Receiver<BodyChunk>,
    current: Bytes,
    /// Why the body stopped early: this wins over any parse problem it caused.
    failed: Option<RecordError>,
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
            // The request was cancelled: its body ends here and is not what the client sent.
            _ if crate::work::cancelled() => {
                self.failed = Some(RecordError::cancelled());
                self.done = true;
                false
            }
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

    /// The next piece of the body as it came (what is left of the current chunk, else the
    /// next chunk), or `None` at its end or when it failed.
    pub fn next_bytes(&mut self) -> Option<Bytes> {
        if self.current.is_empty() && !self.next_chunk() {
            return None;
        }
        Some(std::mem::take(&mut self.current))
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
    pub fn settle<T>(&mut self, parsed: Result<T, RecordError>) -> Result<T, RecordError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::json_stream::MAX_SETTING_BYTES;
    use crate::records::samples::sample_batch;
    use crate::records::table::parse_table;
    use proptest::prelude::*;

    fn features() -> Vec<String> {
        ["bytes_sent", "connections"].map(String::from).to_vec()
    }

    /// Given features, or (None) the default choice.
    type Choice = Option<Vec<String>>;

    fn spec(format: BodyFormat, choice: &Choice, labels: bool) -> ReadSpec {
        ReadSpec {
            require_labels: labels,
            ..ReadSpec::new(format, choice.clone(), 5)
        }
    }

    /// A reader of `body` as it arrives in `chunk`-byte pieces.
    fn in_pieces(body: &[u8], chunk: usize) -> BodyReader {
        let (tx, rx) = mpsc::channel(body.len() / chunk + 2);
        for piece in body.chunks(chunk) {
            tx.try_send(Ok(Bytes::copy_from_slice(piece))).unwrap();
        }
        BodyReader::new(rx)
    }

    /// The body through the streaming reader, cut into `chunk`-byte pieces.
    fn streamed(
        format: BodyFormat,
        body: &[u8],
        chunk: usize,
        choice: &Choice,
        labels: bool,
    ) -> Result<Batch, RecordError> {
        let mut reader = in_pieces(body, chunk);
        let mut b = spec(format, choice, labels).builder(None);
        let parsed = match format {
            BodyFormat::Csv => {
                reader.skip_prefix(BOM);
                read_csv(&mut reader, &mut b)
            }
            BodyFormat::Ndjson => read_ndjson(io::BufReader::with_capacity(7, &mut reader), &mut b),
            BodyFormat::Json => {
                read_json_stream(|| reader.next_bytes(), &mut b, TopLevel::RecordsOnly)
            }
            _ => unreachable!(),
        };
        reader.settle(parsed.and_then(|()| b.finish()))
    }

    /// A Zeek body through the streaming reader in `chunk`-byte pieces, as `read_stream` reads it.
    fn streamed_zeek(
        format: BodyFormat,
        body: &[u8],
        chunk: usize,
        zeek: ZeekOptions,
    ) -> Result<Parsed, RecordError> {
        let mut reader = in_pieces(body, chunk);
        let spec = ReadSpec {
            zeek,
            ..ReadSpec::new(format, None, 100_000)
        };
        let mut b = spec.builder(None);
        let zf = if format == BodyFormat::ZeekTsv {
            ZeekFormat::Tsv
        } else {
            ZeekFormat::Json
        };
        let parsed = read_zeek_stream(&mut reader, zf, &spec.zeek, &mut b);
        reader.settle(parsed.and_then(|rejects| finish(b, rejects)))
    }

    /// A JSON body with settings through [`read_json_stream_settings`] in `chunk`-byte pieces:
    /// its settings, and its batch or the records' problem.
    fn streamed_settings(
        body: &[u8],
        chunk: usize,
        spec: &ReadSpec,
    ) -> Result<(Settings, Result<Batch, RecordError>), RecordError> {
        let (tx, rx) = mpsc::channel(body.len() / chunk + 2);
        for piece in body.chunks(chunk) {
            tx.try_send(Ok(Bytes::copy_from_slice(piece))).unwrap();
        }
        drop(tx);
        let mut reader = BodyReader::new(rx);
        let mut b = spec.builder(None);
        let read = read_json_stream_settings(|| reader.next_bytes(), spec, &mut b);
        let (settings, records) = reader.settle(read)?;
        Ok((settings, records.and_then(|()| b.finish())))
    }

    /// What the whole body gives: [`read_settings`] (the settings `spec` does not take kept
    /// by name only), then [`read_json`] with the features a `features` setting names.
    fn whole_settings(
        body: &[u8],
        spec: &ReadSpec,
    ) -> Result<(Settings, Result<Batch, RecordError>), RecordError> {
        let mut settings = crate::records::read_settings(body)?;
        let given = settings.fields.get("features").and_then(|v| {
            v.as_array()?
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        });
        let features = match spec.features_setting {
            true => given.or_else(|| spec.features.clone()),
            false => spec.features.clone(),
        };
        let mut b = spec.builder_for(features);
        let records = read_json(body, &mut b, spec.top_level).and_then(|()| b.finish());
        for (k, v) in settings.fields.iter_mut() {
            if !spec.settings.contains(&k.as_str()) {
                *v = serde_json::Value::Null;
            }
        }
        Ok((settings, records))
    }

    #[test]
    fn settings_stream_as_they_read_whole() {
        let bodies: &[&str] = &[
            r#"{"features":["connections"],"params":{"seed":3},"records":[{"bytes_sent":1,"connections":2},{"bytes_sent":3,"connections":4}]}"#,
            r#"{"records":[{"bytes_sent":1,"connections":2}],"features":["connections"],"threshold":0.6}"#,
            r#"{"params":{"seed":3},"records":[{"bytes_sent":1,"connections":2,"x":5}],"threshold":0.6}"#,
            r#"[{"bytes_sent":1,"connections":2},{"bytes_sent":"x","connections":4}]"#,
            r#"{"features":null,"records":[{"bytes_sent":1,"connections":2}]}"#,
            r#"{"features":5,"records":[{"bytes_sent":1,"connections":2}]}"#,
            r#"{"generate":{"n_records":5},"params":{"seed":1}}"#,
            r#"{"zzz":[1,2,{"a":[]}],"records":[{"bytes_sent":1,"connections":2}]}"#,
            r#"{"features":["nope"],"records":[{"bytes_sent":1,"connections":2}]}"#,
            r#"{"features":["connections"],"records":[{"connections":2}],"params":{"seed":3"#,
            r#"{"features":["connections"],"records":[{"connections":2},5]}"#,
            r#"{"features":["connections"],"records":5}"#,
            r#"{"threshold":0.6}"#,
            r#"  42 "#,
            "",
            r#"{"params":{"seed":}, "records":[]}"#,
        ];
        for fit in [true, false] {
            let spec = ReadSpec {
                top_level: TopLevel::WithSettings,
                settings: &["features", "params", "threshold", "generate"],
                features_setting: fit,
                ..ReadSpec::new(BodyFormat::Json, (!fit).then(features), 5)
            };
            for body in bodies {
                let expected = whole_settings(body.as_bytes(), &spec);
                for chunk in [1, 2, 5, 13, 1 << 16] {
                    let got = streamed_settings(body.as_bytes(), chunk, &spec);
                    match (&expected, &got) {
                        (Ok((s1, r1)), Ok((s2, r2))) => {
                            assert_eq!(s1, s2, "{body} in {chunk}");
                            same(r2, r1).unwrap_or_else(|e| panic!("{body} in {chunk}: {e}"));
                        }
                        (Err(a), Err(b)) => assert_eq!(
                            (a.kind, &a.detail),
                            (b.kind, &b.detail),
                            "{body} in {chunk}"
                        ),
                        _ => panic!("{body} in {chunk}: {expected:?} vs {got:?}"),
                    }
                }
            }
        }
        // A `features` given again after the records with other names cannot choose them now.
        let spec = ReadSpec {
            top_level: TopLevel::WithSettings,
            settings: &["features", "params"],
            features_setting: true,
            ..ReadSpec::new(BodyFormat::Json, None, 5)
        };
        let body = br#"{"features":["connections"],"records":[{"connections":2}],"features":["bytes_sent"]}"#;
        let err = streamed_settings(body, 4, &spec).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("features"));
        // A setting over its size is refused as it is read.
        let big = format!(
            r#"{{"params":{{"x":"{}"}},"records":[]}}"#,
            "a".repeat(MAX_SETTING_BYTES)
        );
        let err = streamed_settings(big.as_bytes(), 1 << 16, &spec).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("params"));
    }

    #[test]
    fn zeek_bodies_stream_as_they_read_whole() {
        use crate::records::zeek::{GroupBy, OnInvalid};
        let sample = |name: &str| crate::records::zeek::tests::shared_sample(name);
        let mut tsv = b"\xEF\xBB\xBF".to_vec();
        tsv.extend(sample("conn.log"));
        let mut json = sample("conn.json.log");
        // A bad line in the middle: an error in reject mode, skipped in skip mode.
        let cut = json.iter().position(|&b| b == b'\n').unwrap() + 1;
        json.splice(cut..cut, b"{oops\n".iter().copied());
        for (format, body) in [(BodyFormat::ZeekTsv, &tsv), (BodyFormat::ZeekJson, &json)] {
            for on_invalid in [OnInvalid::Reject, OnInvalid::Skip] {
                let zeek = ZeekOptions {
                    window: "5m".parse().unwrap(),
                    group_by: GroupBy::OrigHost,
                    on_invalid,
                };
                let spec = ReadSpec {
                    zeek,
                    ..ReadSpec::new(format, None, 100_000)
                };
                let whole = read_slice(body, &spec, None);
                for chunk in [1, 3, 100, 1 << 16] {
                    let got = streamed_zeek(format, body, chunk, zeek);
                    match (&whole, &got) {
                        (Ok(a), Ok(b)) => {
                            assert_eq!(a.batch, b.batch, "{format:?} {chunk}");
                            assert_eq!(a.rejects, b.rejects);
                        }
                        (Err(a), Err(b)) => assert_eq!(a, b),
                        _ => panic!("{format:?} {on_invalid:?} {chunk}: differ"),
                    }
                }
                let skipped = whole.as_ref().map(|p| p.rejects.total).unwrap_or(0);
                match (format, on_invalid) {
                    (BodyFormat::ZeekJson, OnInvalid::Reject) => {
                        assert!(
                            whole
                                .as_ref()
                                .err()
                                .unwrap()
                                .detail
                                .starts_with("line 2: invalid JSON")
                        );
                    }
                    (BodyFormat::ZeekJson, OnInvalid::Skip) => {
                        assert_eq!(skipped, 1);
                        assert_eq!(whole.as_ref().unwrap().rejects.first[0].line, 2);
                    }
                    _ => assert_eq!(skipped, 0),
                }
            }
        }
        // A body that fails to arrive wins over the bad line the parser stopped at.
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"{oops\n"))).unwrap();
        tx.try_send(Err(RecordError::body_too_large())).unwrap();
        drop(tx);
        let mut reader = BodyReader::new(rx);
        let mut b = ReadSpec::new(BodyFormat::ZeekJson, None, 5).builder(None);
        let parsed = read_zeek_stream(
            &mut reader,
            ZeekFormat::Json,
            &ZeekOptions::default(),
            &mut b,
        );
        let err = reader.settle(parsed).unwrap_err();
        assert_eq!(err.kind, super::super::RecordErrorKind::BodyTooLarge);
    }

    /// The body read whole, as fit and evaluate read it.
    fn whole(
        format: BodyFormat,
        body: &[u8],
        choice: &Choice,
        labels: bool,
    ) -> Result<Batch, RecordError> {
        read_slice(body, &spec(format, choice, labels), None).map(|p| p.batch)
    }

    /// What the table path (parse everything into cells, then check) answers.
    fn table(
        format: BodyFormat,
        body: &[u8],
        choice: &Choice,
        labels: bool,
    ) -> Result<Batch, RecordError> {
        let features = match choice {
            Some(f) => Features::Given(f),
            None => Features::Default,
        };
        parse_table(format, body, 5)?.into_batch(features, labels)
    }

    fn same(a: &Result<Batch, RecordError>, b: &Result<Batch, RecordError>) -> Result<(), String> {
        match (a, b) {
            (Ok(x), Ok(y)) if x == y => Ok(()),
            (Err(x), Err(y)) if x == y => Ok(()),
            _ => Err(format!("{a:?}\n  vs\n{b:?}")),
        }
    }

    /// For each body, every way of cutting it into pieces gives what the table path gives,
    /// with the model's features and with the default choice a fit makes.
    fn check(format: BodyFormat, bodies: &[&[u8]]) {
        for body in bodies {
            let text = String::from_utf8_lossy(body);
            for (choice, labels) in [
                (Some(features()), false),
                (Some(features()), true),
                (None, false),
                (None, true),
            ] {
                let expected = table(format, body, &choice, labels);
                same(&whole(format, body, &choice, labels), &expected)
                    .unwrap_or_else(|e| panic!("{text:?}, {choice:?}, whole: {e}"));
                for chunk in [1, 2, 3, 5, 8, 13, 1 << 16] {
                    same(&streamed(format, body, chunk, &choice, labels), &expected)
                        .unwrap_or_else(|e| panic!("{text:?}, {choice:?}, chunks of {chunk}: {e}"));
                }
            }
        }
    }

    /// A JSON body read as it arrives, cut anywhere, answers what it answers read whole.
    fn streams_as_whole(body: &[u8]) {
        for (choice, labels) in [(Some(features()), false), (None, true)] {
            let expected = whole(BodyFormat::Json, body, &choice, labels);
            for chunk in [1, 2, 3, 5, 8, 13, 1 << 16] {
                same(
                    &streamed(BodyFormat::Json, body, chunk, &choice, labels),
                    &expected,
                )
                .unwrap_or_else(|e| {
                    let text = String::from_utf8_lossy(body);
                    panic!("{text:?}, {choice:?}, chunks of {chunk}: {e}")
                });
            }
        }
    }

    #[test]
    fn csv_edge_cases_match_the_table_path() {
        check(BodyFormat::Csv, &[
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
        ]);
    }

    #[test]
    fn ndjson_and_json_edge_cases_match_the_table_path() {
        check(BodyFormat::Ndjson, &[
            b"{\"bytes_sent\":1,\"connections\":2,\"src_ip\":\"10.0.0.1\",\"timestamp\":\"2024-01-01T00:00:00Z\"}\r\n\r\n{\"connections\":4,\"bytes_sent\":3e2}\n",
            b"{\"bytes_sent\":1,\"connections\":2}\n{\"bytes_sent\":\"x\",\"connections\":2}\n{oops\n",
            b"{\"bytes_sent\":1,\"connections\":2}\n[1,2]\n",
            b"{\"bytes_sent\":1,\"connections\":2,\"timestamp\":5}\n{\"bytes_sent\":null,\"connections\":2}\n",
            b"{\"bytes_sent\":1,\"connections\":2,\"label\":true}\n{\"bytes_sent\":1,\"connections\":{\"a\":1},\"label\":0}\n",
            b"{\"bytes_sent\":1,\"connections\":2,\"bytes_sent\":\"dup\"}\n",
            b"{\"bytes_sent\":1,\"connections\":2}\n{\"bytes_sent\":1,\"connections\":2} x\n",
            b"{}\n{}\n{}\n{}\n{}\n{}\n",
            b"\n\n",
        ]);
        check(BodyFormat::Json, &[
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
        ]);
        let deep = format!("[{}{}]", "[".repeat(200), "]".repeat(200));
        check(BodyFormat::Json, &[deep.as_bytes()]);
        // Nesting at sonic-rs's limit and one past it, in both envelopes and in settings.
        for n in [252, 253, 254] {
            let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
            for body in [
                format!("[{}]", nest(n)),
                format!("{{\"records\":[{}]}}", nest(n)),
                format!("{{\"x\":{},\"records\":[]}}", nest(n)),
                format!("\n [{{\"bytes_sent\":1,\"connections\":{}}}]", nest(n)),
            ] {
                streams_as_whole(body.as_bytes());
            }
        }
        let more: &[&[u8]] = &[
            b"",
            b"\xEF\xBB\xBF[]",
            b" \r\n\t[ ]\n ",
            b"[",
            b"[{\"bytes_sent\":1,\"connections\":2},]",
            b"[{\"bytes_sent\":1,\"connections\":2}\n\n  x]",
            b"[{\"bytes_sent\":1,\"connections\":2} , {\"bytes_sent\":3,\"connections\":4}]  \n",
            b"[{\"bytes_sent\":1,\"connections\":2}]\n\n  ]",
            b"{\"records\":[{\"bytes_sent\":1,\"connections\":2}] x}",
            b"{\"records\":[{\"bytes_sent\":1,\"connections\":2}],}",
            b"{\"rec\\u006frds\":[{\"bytes_sent\":1,\"connections\":2}]}",
            b"{\"records\":[{\"bytes_sent\":1,\"connections\":2}],\"records\":[{\"bytes_sent\":3,\"connections\":4}]}",
            b"{\"records\":[],\"records\":5}",
            b"{\"records\":5,\"records\":[]}",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{,}",
            b"{\"a\":1\n,\n\"b\":tru}",
            b"[1 2]",
            b"[12\"a\"]",
            b"[\"x\",{\"bytes_sent\":\"\\q\"}]",
            b"[{\"bytes_sent\":1,\"connections\":2,\"host\":\"\xff\"}]",
            b"[{\"bytes_sent\":1,\n\"connections\":2,\n\"host\":\"a\x01b\"}]",
            b"[{\"bytes_sent\":-,\"connections\":2}]",
            b"[{\"bytes_sent\":1,\"connections\":2}",
            b"{\"records\":[{\"bytes_sent\":1,\"connections\":2}]",
            b"{\"records\"",
            b"nul",
            b"null",
            b"\"records\"",
        ];
        for body in more {
            streams_as_whole(body);
        }
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
            let expected = crate::records::table::Table::from_json_records(json.clone(), 1000)
                .and_then(|t| t.into_batch(choice, false));
            let got = sample_batch(&records, features.map(Vec::as_slice), 1000);
            same(&got, &expected).unwrap();
        }
        let err = sample_batch(&records, None, 10).unwrap_err();
        assert_eq!(err.kind, super::super::RecordErrorKind::TooManyRecords);
    }

    #[test]
    fn a_failed_body_wins_over_what_the_parser_made_of_it() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"bytes_sent,connections\n1,x\n")))
            .unwrap();
        tx.try_send(Err(RecordError::body_too_large())).unwrap();
        drop(tx);
        let mut reader = BodyReader::new(rx);
        let mut b = BatchBuilder::new(&features(), false, 5);
        let parsed = read_csv(&mut reader, &mut b).and_then(|()| b.finish());
        let err = reader.settle(parsed).unwrap_err();
        assert_eq!(err.kind, super::super::RecordErrorKind::BodyTooLarge);
    }

    #[tokio::test]
    async fn a_cancelled_request_stops_reading_its_body_at_the_next_chunk() {
        use crate::work::{Limits, scope, spawn_blocking};
        let limits = Limits::new(1, 1 << 20, 1 << 20);
        let work = limits.admit().unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(Bytes::from_static(b"bytes_sent,connections\n1,2\n")))
            .await
            .unwrap();
        // The parser reads the first chunk, then waits for the next one.
        #[allow(clippy::async_yields_async)] // the handle is the point: awaited out of scope
        let parser = scope(work.clone(), async {
            spawn_blocking(move || {
                let mut reader = BodyReader::new(rx);
                let mut b = BatchBuilder::new(&features(), false, 100);
                let parsed = read_csv(&mut reader, &mut b).and_then(|()| b.finish());
                reader.settle(parsed)
            })
        })
        .await;
        work.cancel();
        // What arrives after the cancellation is not read as the client's body.
        tx.send(Ok(Bytes::from_static(b"3,4\n5,6\n")))
            .await
            .unwrap();
        drop(tx);
        let err = parser.await.unwrap().unwrap_err();
        assert_eq!(err.kind, super::super::RecordErrorKind::Cancelled);
        assert_eq!((limits.cancelled(), limits.stopped()), (1, 1));
        drop(work);
        assert_eq!(limits.slots_in_use(), 0);
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
            discover in any::<bool>(),
        ) {
            let choice = (!discover).then(features);
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut body = header.join(",") + nl;
            for r in &rows {
                body += &r[..header.len()].join(",");
                body += nl;
            }
            let expected = table(BodyFormat::Csv, body.as_bytes(), &choice, labels);
            let got = streamed(BodyFormat::Csv, body.as_bytes(), chunk, &choice, labels);
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
            discover in any::<bool>(),
        ) {
            let choice = (!discover).then(features);
            let lines: Vec<String> = records.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
            let nd = lines.join("\n");
            let expected = table(BodyFormat::Ndjson, nd.as_bytes(), &choice, labels);
            let verdict = same(&streamed(BodyFormat::Ndjson, nd.as_bytes(), chunk, &choice, labels), &expected);
            prop_assert!(verdict.is_ok(), "{nd}: {}", verdict.unwrap_err());
            let json = format!("[{}]", lines.join(","));
            let expected = table(BodyFormat::Json, json.as_bytes(), &choice, labels);
            let verdict = same(&whole(BodyFormat::Json, json.as_bytes(), &choice, labels), &expected);
            prop_assert!(verdict.is_ok(), "{json}: {}", verdict.unwrap_err());
            let verdict = same(&streamed(BodyFormat::Json, json.as_bytes(), chunk, &choice, labels), &expected);
            prop_assert!(verdict.is_ok(), "{json}: {}", verdict.unwrap_err());
        }

        /// JSON bodies cut short, with bytes changed, dropped or put in, over lines, cut into
        /// chunks anywhere: read as they arrive, they answer what they answer read whole.
        #[test]
        fn streamed_json_answers_what_the_whole_body_answers(
            records in prop::collection::vec(prop::collection::btree_map(
                prop::sample::select(vec!["bytes_sent", "connections", "host", "label"]),
                prop_oneof![
                    (-1e6f64..1e6).prop_map(|v| serde_json::json!(v)),
                    Just(serde_json::json!("a\"b\\c\u{e9}")),
                    Just(serde_json::json!([1, {"k": [2]}])),
                    Just(serde_json::json!(null)),
                ],
                0..4), 0..5),
            envelope in 0..3usize,
            pretty in any::<bool>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0..4usize, prop::sample::select(
                b"[]{},:\"\\ \n0-e.tx\x01\xc3".to_vec())), 0..3),
            chunk in 1usize..24,
            labels in any::<bool>(),
        ) {
            let records = serde_json::json!(records);
            let value = match envelope {
                0 => records,
                1 => serde_json::json!({"records": records}),
                _ => serde_json::json!({"zz": {"a": [1]}, "records": records, "aa": "x"}),
            };
            let mut body = match pretty {
                true => serde_json::to_vec_pretty(&value).unwrap(),
                false => serde_json::to_vec(&value).unwrap(),
            };
            for (at, op, byte) in edits {
                let i = at.index(body.len() + 1);
                match op {
                    0 => body.truncate(i),
                    1 if i < body.len() => body[i] = byte,
                    2 if i < body.len() => { body.remove(i); }
                    _ => body.insert(i, byte),
                }
            }
            let choice = Some(features());
            let expected = whole(BodyFormat::Json, &body, &choice, labels);
            let got = streamed(BodyFormat::Json, &body, chunk, &choice, labels);
            let verdict = same(&got, &expected);
            prop_assert!(verdict.is_ok(), "{:?}: {}", String::from_utf8_lossy(&body), verdict.unwrap_err());
        }
    }
}
