//! Most integration tests, as one binary: one compile of `support` and one link instead of one
//! per file (CI's build time). Tests that read process-wide state (the global /metrics recorder,
//! the process's RSS) stay in their own binaries beside this folder: tests/*.rs, and so does
//! `scale_out` (three replicas with webhook receivers under kill -9: exactly-once assertions
//! that want the machine to themselves, as they had it before).
//!
//! Run one file's tests with `cargo test --test suite <file>::`, e.g. `cargo test --test suite
//! crash_restart::`.

#[path = "../support/mod.rs"]
mod support;

#[path = "../fixtures/alerts_v1.rs"]
mod alerts_v1;

mod api_detectors;
mod api_encoding;
mod api_exports;
mod api_idempotency;
mod api_load;
mod api_persistence;
mod api_security;
mod api_streaming;
mod api_walkthrough;
mod baseline_accuracy;
mod baseline_model_files;
mod cancellation;
mod crash_restart;
mod detector_accuracy;
mod durable_fits;
mod entity_baselines;
mod memory_budget;
mod pg_detectors;
mod pg_idempotency;
mod pg_incidents;
mod pg_store;
mod pipeline_syslog_ng;
mod properties;
mod records_ingest;
mod siem_formats;
mod stored_alerts;
mod streamed_bodies;
mod suppressions;
mod syslog_sink;
mod zeek_ingest;
