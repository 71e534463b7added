//! The window engine of continuous ingest: Zeek connections folded into event-time windows that
//! stay open across requests, closed by a watermark, and kept as mergeable, serialisable partial
//! state. Pure and deterministic: no HTTP, no store, no clock (event time only). The detector
//! layer feeds it bodies, persists its [`BookSnapshot`] or [`PartialWindow`]s, and scores the
//! closed windows it hands back (they are the [`WindowRecord`](crate::records::zeek::WindowRecord)s
//! a `score` request makes, read into a batch with
//! [`read_windows`](crate::records::zeek::read_windows)).
//!
//! # How ingest treats `records` bodies
//!
//! A detector whose `source.format` is `records` gets one observation per record: there is
//! nothing to aggregate, so its records do not go through a [`WindowBook`]; ingest scores them as
//! they come (as `score` does), each record is a window closed on arrival, and lateness does not
//! apply (no record is late: no open window waits for it). Its stream keeps only the latest
//! event time ([`RecordStream`]). Only Zeek conn logs are windowed.

pub mod book;
pub mod records;

pub use book::{
    BookConfig, BookSnapshot, Dedupe, IngestReport, Ingested, MergeError, PartialWindow, WindowBook,
};
pub use records::RecordStream;

#[cfg(test)]
mod tests;
