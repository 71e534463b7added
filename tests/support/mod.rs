//! Helpers shared by every integration test binary (each declares `mod support;`).
//!
//! - [`app`]: the service in-process on a socket over a temp data dir, and request helpers.
//! - [`responses`]: assertions on answers (status, JSON, RFC 9457 problems).
//! - [`data`]: the seed profile's facts and records as CSV or NDJSON bodies.
//! - [`process`]: the real binary as a child process.
//! - [`traffic`]: requests to a child process: bursty batches, alert pages, JSON calls.
//! - [`postgres`]: a database per test and replicas sharing it.

#![allow(dead_code)] // each test binary uses a different subset of the helpers

pub mod app;
pub mod data;
pub mod postgres;
pub mod process;
pub mod responses;
pub mod traffic;
