//! The one input layer: traffic bodies (CSV, NDJSON, JSON, Zeek conn logs, generated samples)
//! read into a checked, columnar [`Batch`], with a typed [`RecordError`] naming the record and
//! field at fault. No HTTP here: `api/` hands bodies in as bytes or a stream of chunks.
//!
//! Every reader feeds one [`BatchBuilder`], which checks each record as it arrives; fit,
//! evaluate and score all read through [`read_slice`], [`read_stream`] or [`read_stream_settings`]. Bodies arrive through
//! [`decoded`], which undoes their `Content-Encoding` and holds them to the body limit.

pub mod batch;
pub mod builder;
pub mod csv;
pub mod encoding;
pub mod error;
pub mod json;
pub mod json_stream;
pub mod observations;
pub mod read;
pub mod samples;
#[cfg(test)]
pub(crate) mod table;
pub mod zeek;

pub use batch::{Batch, EchoFields, Features, MAX_ECHO_BYTES, TextColumn};
pub use builder::{BatchBuilder, CHUNK_RECORDS, ChunkSink};
pub use encoding::{ACCEPTED_ENCODINGS, ContentEncoding, decoded, read_whole};
pub use error::{RecordError, RecordErrorKind};
pub use json::{Settings, TopLevel, read_settings};
pub use read::{
    Parsed, ReadSpec, WithSettings, budgeted, read_slice, read_stream, read_stream_settings,
};
pub use samples::sample_batch;
pub use zeek::{GroupBy, Window, ZeekError, ZeekFormat, ZeekOptions};

use error::RecordErrorKind as Kind;

/// The media types a traffic body may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
    Csv,
    /// A Zeek conn log from the ASCII writer (`text/zeek-tsv`).
    ZeekTsv,
    /// A Zeek conn log from the JSON writer (`application/x-zeek-json`).
    ZeekJson,
}

impl BodyFormat {
    /// Bytes of working memory one body byte of this format is estimated to cost while it is
    /// read and its batch is used (held against the memory budget): CSV, NDJSON and JSON bodies
    /// are parsed a record at a time as they arrive (only a JSON fit whose records come before
    /// its `features` holds its body once, and its batch); a Zeek log becomes window state,
    /// which grows with its windows, sessions and hosts, not its bytes: what it holds beyond
    /// this is charged as it grows (`read::read_zeek_stream`).
    pub fn memory_factor(self) -> u64 {
        2
    }

    /// The format of a body of media type `content_type`; none is taken as JSON (what most
    /// clients send), and so is one that is not text.
    pub fn from_media_type(content_type: Option<&[u8]>) -> Result<Self, RecordError> {
        let Some(value) = content_type else {
            return Ok(Self::Json);
        };
        // As `http`'s `HeaderValue::to_str` reads it: anything but visible ASCII is no type.
        let visible = value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
        let value = std::str::from_utf8(value)
            .ok()
            .filter(|_| visible)
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = value.split(';').next().unwrap_or("").trim();
        match essence {
            "application/json" | "" => Ok(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Self::Ndjson),
            "text/csv" => Ok(Self::Csv),
            "text/zeek-tsv" => Ok(Self::ZeekTsv),
            "application/x-zeek-json" => Ok(Self::ZeekJson),
            other => Err(RecordError::new(
                Kind::UnsupportedFormat,
                format!(
                    "Content-Type {other:?} is not accepted here; send application/json, application/x-ndjson, text/csv, text/zeek-tsv or application/x-zeek-json"
                ),
            )),
        }
    }

    /// Zeek conn logs: connections that become window records (`window`, `group_by` apply).
    pub fn is_zeek(self) -> bool {
        matches!(self, Self::ZeekTsv | Self::ZeekJson)
    }
}
