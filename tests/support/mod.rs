//! Helpers shared by every integration test binary (each declares `mod support;`).
//!
//! - [`app`]: the service in-process over a temp data dir, on a socket or through `oneshot`.
//! - [`responses`]: assertions on answers (status, JSON, RFC 9457 problems).
//! - [`data`]: the seed profile's facts and records as CSV or NDJSON bodies.
//! - [`process`]: the real binary as a child process.
//! - [`traffic`]: requests to a child process: bursty batches, alert pages, JSON calls.
//! - [`postgres`]: a database per test and replicas sharing it.
//! - [`syslog_ng`]: Debian's syslog-ng as a pipeline or a collector.
//! - [`eventually`]: a bounded wait.
//! - [`in_ci`]: whether a missing outside program or server fails (CI) or skips.

#![allow(dead_code)] // each test binary uses a different subset of the helpers

pub mod app;
pub mod data;
pub mod postgres;
pub mod process;
pub mod responses;
pub mod syslog_ng;
pub mod traffic;

use std::future::Future;
use std::time::{Duration, Instant};

/// Whether this is a CI run (`CI` set, and not to `false` or `0`): tests that need an outside
/// program or server fail there instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Polls `check` every 50 ms until it returns `Some`, panicking after `deadline`; `what` names
/// the awaited condition in that panic. A bound, not a timing assertion.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < deadline,
            "gave up after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
