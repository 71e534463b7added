//! Why a body could not become a batch: one typed error for every reader, with the record and field at fault.

/// What kind of problem a body has; `error.rs` gives each its HTTP status and problem code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// Not parseable as its format (syntax, encoding, CSV shape, the envelope's shape).
    Malformed,
    /// A top-level JSON field the endpoint does not take.
    UnknownField,
    /// An option that shapes reading (Zeek `window`, `group_by`) that cannot be used.
    InvalidOption,
    /// A `Content-Type` no reader takes.
    UnsupportedFormat,
    /// A `Content-Encoding` no reader decodes (answered with the ones it does).
    UnsupportedEncoding,
    /// More bytes than the service accepts.
    BodyTooLarge,
    /// More records than a batch may hold.
    TooManyRecords,
    /// One record (at `index`, often `field`) is not valid.
    InvalidRecord,
    /// The records as a whole cannot form a matrix.
    InvalidRecords,
    /// No records at all.
    EmptyBatch,
    /// No feature could be chosen.
    NoFeatures,
    /// A Zeek line that cannot be read (`index` is its 1-based line).
    InvalidZeekLine,
    /// The Zeek `#fields` header lacks a required field.
    MissingZeekField,
    /// Not the body's fault: a reader thread failed (logged).
    Internal,
    /// Reading it would take more working memory than one request may use (413).
    MemoryBudget,
    /// The service's memory budget is in use by other requests for now (503, Retry-After).
    MemoryBusy,
    /// The request was cancelled (client gone, timed out) while its body was read.
    Cancelled,
}

/// A body that cannot become a batch. `detail` is a sentence for the client; `index` is the
/// record (0-based) at fault, `field` the field or option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct RecordError {
    pub kind: RecordErrorKind,
    pub detail: String,
    pub index: Option<usize>,
    pub field: Option<String>,
}

impl RecordError {
    pub fn new(kind: RecordErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            index: None,
            field: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(RecordErrorKind::Malformed, detail)
    }

    /// A bad field of record `index`.
    pub fn record(index: usize, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            field: Some(field.into()),
            ..Self::new(RecordErrorKind::InvalidRecord, detail)
        }
    }

    /// Record `index` as a whole (not one field).
    pub fn record_at(index: usize, detail: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            ..Self::new(RecordErrorKind::InvalidRecord, detail)
        }
    }

    pub fn empty_batch() -> Self {
        Self::new(RecordErrorKind::EmptyBatch, "the batch holds no records")
    }

    /// A body over the byte limit (`NETSENTINEL_MAX_BODY_BYTES`).
    /// Cancelled while reading.
    pub fn cancelled() -> Self {
        Self::new(RecordErrorKind::Cancelled, "the request was cancelled")
    }

    /// A memory reservation for the body that was refused.
    pub fn over_budget(e: crate::work::OverBudget) -> Self {
        let kind = match e {
            crate::work::OverBudget::Request { .. } => RecordErrorKind::MemoryBudget,
            crate::work::OverBudget::Busy { .. } => RecordErrorKind::MemoryBusy,
        };
        Self::new(kind, e.to_string())
    }

    pub fn body_too_large() -> Self {
        Self::new(
            RecordErrorKind::BodyTooLarge,
            "the body is larger than this service accepts (NETSENTINEL_MAX_BODY_BYTES)",
        )
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// More than `max_records` records.
pub(crate) fn check_count(n: usize, max_records: usize) -> Result<(), RecordError> {
    if n > max_records {
        return Err(RecordError::new(
            RecordErrorKind::TooManyRecords,
            format!("a batch may hold at most {max_records} records; split it"),
        ));
    }
    Ok(())
}

/// A timestamp that is not RFC 3339.
pub(crate) fn bad_timestamp(i: usize) -> RecordError {
    RecordError::record(
        i,
        "timestamp",
        format!("record {i}: timestamp must be an RFC 3339 string such as 2024-01-01T00:00:00Z"),
    )
}
