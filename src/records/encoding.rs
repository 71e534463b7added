//! Content codings of request bodies (`Content-Encoding`): `identity`, `gzip` and `zstd`. Every
//! reader of records takes its body through [`decoded`], which decodes it as it arrives on a
//! blocking thread and applies the body limit to the decoded bytes, so a decompression bomb stops
//! at the limit instead of filling memory.

use std::fmt::Display;
use std::io::{self, BufReader, Read};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::error::{RecordError, RecordErrorKind};
use super::read::{BodyChunk, BodyReader};

/// A body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentEncoding {
    #[default]
    Identity,
    Gzip,
    Zstd,
}

/// The codings [`ContentEncoding::from_header`] takes, as an `Accept-Encoding` value (RFC 9110
/// 15.5.16: a 415 for a coding the server does not take names the ones it does).
pub const ACCEPTED_ENCODINGS: &str = "gzip, zstd";

/// Decoded bytes handed on at once; also the most a body may pass the limit by before it is refused.
const OUT_CHUNK: usize = 64 * 1024;

/// Chunks in flight on each side of the decoding thread.
const CHANNEL_CHUNKS: usize = 16;

/// The largest zstd window a body may ask for: 8 MiB, as RFC 9659 sets for the `zstd` coding in
/// HTTP (the library's default would let a body make the decoder allocate 128 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

impl ContentEncoding {
    /// The coding of a body from its `Content-Encoding` value; none, empty or `identity` is no
    /// coding, `x-gzip` is gzip (RFC 9110 8.4.1.3). Any other coding, or two stacked (`gzip,
    /// zstd`), is an [`RecordErrorKind::UnsupportedEncoding`] error.
    pub fn from_header(value: Option<&[u8]>) -> Result<Self, RecordError> {
        let Some(value) = value else {
            return Ok(Self::Identity);
        };
        let text = std::str::from_utf8(value)
            .ok()
            .filter(|v| v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
            .ok_or_else(|| unsupported("Content-Encoding is not a visible ASCII value".into()))?
            .to_ascii_lowercase();
        let codings: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && *c != "identity")
            .collect();
        match codings.as_slice() {
            [] => Ok(Self::Identity),
            ["gzip" | "x-gzip"] => Ok(Self::Gzip),
            ["zstd"] => Ok(Self::Zstd),
            [one] => Err(unsupported(format!(
                "Content-Encoding {one:?} is not supported; send the body as gzip, zstd or uncompressed"
            ))),
            many => Err(unsupported(format!(
                "stacked content codings ({}) are not supported; compress the body once, with gzip or zstd",
                many.join(", ")
            ))),
        }
    }

    /// The coding's name in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

fn unsupported(detail: String) -> RecordError {
    RecordError::new(RecordErrorKind::UnsupportedEncoding, detail).with_field("Content-Encoding")
}

/// A body that could not be read off the connection.
fn unreadable(e: impl Display) -> RecordError {
    RecordError::malformed(format!("the body could not be read: {e}"))
}

/// The body as it arrives, decoded: chunks of at most `max_body` bytes in all (past that, one
/// `BodyTooLarge` error ends the stream), the body as sent held to the same limit. An error ends
/// the stream: a body that could not be read, or one that is not valid in its coding (a
/// `Malformed` error naming the coding). Nothing runs until the stream is first polled; a
/// coded body is decoded on a blocking thread, pulling from the connection only as fast as its
/// reader takes decoded bytes.
pub fn decoded<S, E>(
    body: S,
    encoding: ContentEncoding,
    max_body: usize,
) -> BoxStream<'static, BodyChunk>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Display + 'static,
{
    let sent = limited(body, max_body);
    match encoding {
        ContentEncoding::Identity => sent.fuse().boxed(),
        coding => stream::once(async move { decode(sent, coding, max_body) })
            .flatten()
            .fuse()
            .boxed(),
    }
}

/// The whole body from [`decoded`] in memory, for readers that need all of it at once;
/// `declared` (the announced length, 0 when unknown) sizes the buffer.
pub async fn read_whole<S>(
    mut body: S,
    declared: usize,
    max_body: usize,
) -> Result<Bytes, RecordError>
where
    S: Stream<Item = BodyChunk> + Unpin,
{
    let mut bytes = Vec::with_capacity(declared.min(max_body));
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if bytes.len() + chunk.len() > max_body {
            return Err(RecordError::body_too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// The body as sent, at most `max_body` bytes; the first error ends it.
fn limited<S, E>(body: S, max_body: usize) -> impl Stream<Item = BodyChunk> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Display + 'static,
{
    stream::unfold(
        (Box::pin(body), 0usize, false),
        move |(mut body, mut total, ended)| async move {
            if ended {
                return None;
            }
            let chunk = match body.next().await? {
                Ok(c) => {
                    total += c.len();
                    if total > max_body {
                        Err(RecordError::body_too_large())
                    } else {
                        Ok(c)
                    }
                }
                Err(e) => Err(unreadable(e)),
            };
            let ended = chunk.is_err();
            Some((chunk, (body, total, ended)))
        },
    )
}

/// Decodes `sent` on a blocking thread. The returned stream also drives the copying of `sent`
/// to that thread, so everything stops when the reader drops it.
fn decode(
    sent: impl Stream<Item = BodyChunk> + Send + 'static,
    coding: ContentEncoding,
    max_body: usize,
) -> BoxStream<'static, BodyChunk> {
    let (raw_tx, raw_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_CHUNKS);
    crate::work::spawn_blocking(move || {
        decode_blocking(BodyReader::new(raw_rx), coding, max_body, &out_tx)
    });
    // Ends when the body ends, or when the decoder stopped taking it.
    let copy = async move {
        let mut sent = Box::pin(sent);
        while let Some(chunk) = sent.next().await {
            if raw_tx.send(chunk).await.is_err() {
                break;
            }
        }
    };
    let copy = stream::once(copy).filter_map(|()| std::future::ready(None));
    let out = stream::unfold(
        out_rx,
        |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
    );
    stream::select(copy, out).boxed()
}

/// Reads `reader` through the decoder of `coding` and sends the decoded bytes in chunks; the
/// first error (too large, unreadable, not valid in the coding) is sent last.
fn decode_blocking(
    reader: BodyReader,
    coding: ContentEncoding,
    max_body: usize,
    out: &mpsc::Sender<BodyChunk>,
) {
    let mut decoder = match Decoder::new(coding, reader) {
        Ok(d) => d,
        Err(e) => {
            let _ = out.blocking_send(Err(RecordError::new(
                RecordErrorKind::Internal,
                format!("the {} decoder could not start: {e}", coding.as_str()),
            )));
            return;
        }
    };
    let mut total = 0usize;
    loop {
        let mut buf = vec![0u8; OUT_CHUNK];
        let n = match fill(&mut decoder, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                // A body that stopped arriving (too large as sent, connection lost) says why
                // itself; otherwise the coding is at fault.
                let why = decoder
                    .into_inner()
                    .settle(Err::<(), _>(corrupt(coding, &e)))
                    .expect_err("settling a failed read keeps it failed");
                let _ = out.blocking_send(Err(why));
                return;
            }
        };
        if n == 0 {
            return;
        }
        total += n;
        if total > max_body {
            let _ = out.blocking_send(Err(RecordError::body_too_large()));
            return;
        }
        buf.truncate(n);
        if out.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return;
        }
    }
}

/// Reads until `buf` is full or the body ends; the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn corrupt(coding: ContentEncoding, e: &io::Error) -> RecordError {
    RecordError::malformed(format!(
        "the body is not valid {name} (Content-Encoding: {name}): {e}",
        name = coding.as_str()
    ))
    .with_field("Content-Encoding")
}

/// A decoder of one coding over a reader of the body as sent.
enum Decoder<R: Read> {
    Gzip(flate2::bufread::MultiGzDecoder<BufReader<R>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    fn new(coding: ContentEncoding, r: R) -> io::Result<Self> {
        let r = BufReader::with_capacity(OUT_CHUNK, r);
        Ok(match coding {
            ContentEncoding::Gzip => Self::Gzip(flate2::bufread::MultiGzDecoder::new(r)),
            ContentEncoding::Identity => unreachable!("identity bodies are not decoded"),
            ContentEncoding::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Self::Zstd(d)
            }
        })
    }

    fn into_inner(self) -> R {
        match self {
            Self::Gzip(d) => d.into_inner().into_inner(),
            Self::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Gzip(d) => d.read(buf),
            Self::Zstd(d) => d.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    /// `body` as a stream of `piece`-byte chunks, counting the bytes pulled from it.
    fn pieces(
        body: Vec<u8>,
        piece: usize,
        pulled: Arc<AtomicUsize>,
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
        let chunks: Vec<Bytes> = body.chunks(piece).map(Bytes::copy_from_slice).collect();
        stream::iter(chunks).map(move |c| {
            pulled.fetch_add(c.len(), Ordering::SeqCst);
            Ok(c)
        })
    }

    async fn decode_all(
        body: Vec<u8>,
        coding: ContentEncoding,
        piece: usize,
        max: usize,
    ) -> Result<Bytes, RecordError> {
        let chunks = decoded(pieces(body, piece, Arc::default()), coding, max);
        read_whole(chunks, 0, max).await
    }

    #[test]
    fn codings_are_read_from_the_header() {
        use ContentEncoding::*;
        for (value, coding) in [
            (None, Identity),
            (Some(""), Identity),
            (Some("identity"), Identity),
            (Some("gzip"), Gzip),
            (Some(" GZip "), Gzip),
            (Some("x-gzip"), Gzip),
            (Some("zstd"), Zstd),
            (Some("identity, zstd"), Zstd),
        ] {
            assert_eq!(
                ContentEncoding::from_header(value.map(str::as_bytes)),
                Ok(coding),
                "{value:?}"
            );
        }
        for value in [
            "br",
            "deflate",
            "compress",
            "gzip, zstd",
            "gzip, gzip",
            "snappy",
            "gzip\u{1}",
        ] {
            let e = ContentEncoding::from_header(Some(value.as_bytes())).unwrap_err();
            assert_eq!(e.kind, RecordErrorKind::UnsupportedEncoding, "{value:?}");
            assert_eq!(e.field.as_deref(), Some("Content-Encoding"));
        }
    }

    #[tokio::test]
    async fn coded_bodies_decode_to_what_was_coded_however_they_are_cut() {
        let body: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i},{}\n", i % 97).into_bytes())
            .collect();
        for (coding, coded) in [
            (ContentEncoding::Gzip, gzip(&body)),
            (ContentEncoding::Zstd, zstd(&body)),
            (ContentEncoding::Identity, body.clone()),
        ] {
            for piece in [1, 7, 4096, coded.len()] {
                if piece == 1 && coded.len() > 100_000 {
                    continue; // identity: a million one-byte chunks adds nothing over seven
                }
                let got = decode_all(coded.clone(), coding, piece, body.len()).await;
                assert_eq!(
                    got.as_deref(),
                    Ok(&body[..]),
                    "{coding:?} in pieces of {piece}"
                );
            }
            // One byte over the limit, decoded: refused.
            let e = decode_all(coded.clone(), coding, 4096, body.len() - 1)
                .await
                .unwrap_err();
            assert_eq!(e.kind, RecordErrorKind::BodyTooLarge, "{coding:?}");
        }
        // Two gzip members one after the other are one body (RFC 1952), as for zstd frames.
        let twice = [gzip(b"a,b\n"), gzip(b"1,2\n")].concat();
        let got = decode_all(twice, ContentEncoding::Gzip, 3, 100).await;
        assert_eq!(got.as_deref(), Ok(&b"a,b\n1,2\n"[..]));
        let twice = [zstd(b"a,b\n"), zstd(b"1,2\n")].concat();
        let got = decode_all(twice, ContentEncoding::Zstd, 3, 100).await;
        assert_eq!(got.as_deref(), Ok(&b"a,b\n1,2\n"[..]));
    }

    #[tokio::test]
    async fn a_bomb_stops_at_the_limit_having_pulled_little_of_the_body() {
        // 64 MiB of zeros: about 64 KiB as gzip, 2 KiB as zstd; the limit is 1 MiB, which 1/64
        // of the coded body decodes to.
        let zeros = vec![0u8; 64 << 20];
        let max = 1 << 20;
        for (coding, coded) in [
            (ContentEncoding::Gzip, gzip(&zeros)),
            (ContentEncoding::Zstd, zstd(&zeros)),
        ] {
            let sent = coded.len();
            // 512 pieces: the channels and the reader's buffer hold 17 of them.
            let piece = (sent / 512).max(4);
            let pulled = Arc::new(AtomicUsize::new(0));
            let chunks = decoded(pieces(coded, piece, pulled.clone()), coding, max);
            let e = read_whole(chunks, 0, usize::MAX).await.unwrap_err();
            assert_eq!(e.kind, RecordErrorKind::BodyTooLarge, "{coding:?}");
            let pulled = pulled.load(Ordering::SeqCst);
            assert!(
                pulled < sent / 8,
                "{coding:?}: pulled {pulled} of {sent} bytes"
            );
        }
    }

    #[tokio::test]
    async fn corrupt_and_cut_bodies_are_malformed_in_their_coding() {
        let body = b"bytes_sent,connections\n1,2\n".repeat(1000);
        let mut bad_gzip = gzip(&body);
        let n = bad_gzip.len();
        bad_gzip[n / 2] ^= 0xff;
        bad_gzip[n - 6] ^= 0xff; // the CRC too, in case the flipped byte still inflates
        let gz = gzip(&body);
        let zs = zstd(&body);
        for (coding, coded) in [
            (ContentEncoding::Gzip, bad_gzip),
            (ContentEncoding::Gzip, gz[..gz.len() - 10].to_vec()),
            (ContentEncoding::Gzip, b"plain,csv\n1,2\n".to_vec()),
            (
                ContentEncoding::Gzip,
                [gz.clone(), b"trailing".to_vec()].concat(),
            ),
            (ContentEncoding::Zstd, zs[..zs.len() - 3].to_vec()),
            (ContentEncoding::Zstd, b"plain,csv\n1,2\n".to_vec()),
        ] {
            let e = decode_all(coded, coding, 100, 1 << 20).await.unwrap_err();
            assert_eq!(e.kind, RecordErrorKind::Malformed, "{coding:?}: {e:?}");
            assert!(
                e.detail.contains(&format!("not valid {}", coding.as_str())),
                "{e:?}"
            );
            assert_eq!(e.field.as_deref(), Some("Content-Encoding"));
        }
    }

    #[tokio::test]
    async fn a_body_too_large_as_sent_is_too_large_whatever_it_decodes_to() {
        // Random bytes do not compress: the coded body is larger than the limit it decodes under.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let coded = gzip(&noise);
        assert!(coded.len() > noise.len());
        let e = decode_all(coded, ContentEncoding::Gzip, 4096, noise.len())
            .await
            .unwrap_err();
        assert_eq!(e.kind, RecordErrorKind::BodyTooLarge);
    }
}
