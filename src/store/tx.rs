//! The write transaction of a database backend, as the logic written once over SQLite and
//! PostgreSQL uses it.
//!
//! Each backend implements [`StoreTx`] on its open transaction (`alerts.rs`'s `SqliteTx`,
//! `postgres.rs`'s `PgTx`) with its own statements (most shared, from `sql.rs`) and row
//! mapping, and [`Transact`] with its own way of opening one (SQLite: `IMMEDIATE` under the
//! connection's lock; PostgreSQL: a pooled connection's transaction, rows locked with
//! `FOR UPDATE`). What runs inside the transaction is written once: the incident rules
//! ([`super::incidents::raise`]), `AlertStore::modify`, `resolve_quiet` and `insert_keyed`,
//! and `StreamStore::commit_locked`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::StoreError;
use super::alerts::{Alert, Raised};
use super::idempotency::KeyRecord;
use super::incidents::IncidentTx;
use super::streams::StoredWindow;

/// An open write transaction of a backend: the incident primitives and the rest.
pub trait StoreTx: IncidentTx {
    /// The alert `id`, locked against other writers until this transaction ends.
    fn alert_for_update(&mut self, id: &str) -> Result<Option<Alert>, StoreError>;
    /// Writes alert `id`'s `status` column and body (acknowledgement, feedback).
    fn set_status_body(&mut self, id: &str, status: &str, body: &str) -> Result<(), StoreError>;
    /// Up to `max` unresolved incidents due to resolve at `now` (nanoseconds), the earliest
    /// first; incidents another writer holds are left for later.
    fn quiet_incidents(&mut self, now_ns: i64, max: usize) -> Result<Vec<Due>, StoreError>;
    /// Keeps a request's idempotency key with its answer ([`StoreError::KeyTaken`] when kept).
    fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError>;
    /// Makes other writers to `detector`'s stream wait until this transaction ends.
    fn lock_stream(&mut self, detector: &str) -> Result<(), StoreError>;
    /// The stored version of `detector`'s stream (0: none).
    fn stream_version(&mut self, detector: &str) -> Result<u64, StoreError>;
    /// The stored snapshot of `detector`'s stream (which exists).
    fn stream_book(&mut self, detector: &str) -> Result<Vec<u8>, StoreError>;
    /// Stores a stream's new state.
    fn put_stream(&mut self, stream: &StreamRow<'_>) -> Result<(), StoreError>;
    /// Stores closed windows of `detector`.
    fn insert_windows(&mut self, detector: &str, ws: &[StoredWindow]) -> Result<(), StoreError>;
    /// How many windows `detector` keeps pending.
    fn pending_count(&mut self, detector: &str) -> Result<u64, StoreError>;
    /// `detector`'s pending chunks, in the order they were kept.
    fn pending_chunks(&mut self, detector: &str) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Keeps a chunk of pending windows.
    fn insert_pending(&mut self, chunk: &PendingRow<'_>) -> Result<(), StoreError>;
    /// Deletes every pending chunk of `detector`.
    fn delete_pending(&mut self, detector: &str) -> Result<(), StoreError>;
}

/// An incident due to resolve, and when it resolves.
pub type Due = (Alert, DateTime<Utc>);

/// A detector's stream as [`StoreTx::put_stream`] writes it.
pub struct StreamRow<'a> {
    pub detector: &'a str,
    pub version: i64,
    /// The window engine's snapshot.
    pub book: &'a [u8],
    pub updated_at_ms: i64,
}

/// A chunk of pending windows as [`StoreTx::insert_pending`] writes it.
pub struct PendingRow<'a> {
    pub detector: &'a str,
    /// The stream version of the commit that kept it.
    pub seq: i64,
    /// How many windows it holds.
    pub windows: i64,
    /// Their encoding (the service layer's).
    pub body: &'a [u8],
}

/// What the work inside a transaction answers: `Ok(true)` commits, `Ok(false)` or an error
/// rolls back.
pub type TxWork<'a> = &'a mut dyn FnMut(&mut dyn StoreTx) -> Result<bool, StoreError>;

/// A backend that runs work in one write transaction.
pub trait Transact {
    /// Opens a write transaction, runs `work` in it once, and commits when it answers
    /// `Ok(true)` (durably before returning); otherwise nothing of it is kept.
    fn transact(&self, work: TxWork<'_>) -> Result<(), StoreError>;
}

/// Runs `work` in one write transaction that commits when it succeeds, and answers what it
/// found (the work's value, kept out of the transaction's `Ok(true)`).
pub(super) fn committed<T>(
    store: &(impl Transact + ?Sized),
    mut work: impl FnMut(&mut dyn StoreTx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut found = None;
    store.transact(&mut |tx| {
        found = Some(work(tx)?);
        Ok(true)
    })?;
    Ok(found.expect("a committed transaction ran its work"))
}

/// Stores a raised alert and its outbox rows inside `tx`: a batch alert as a new alert, each
/// entity's update into its incident. What a score commits, and an ingest with its windows.
pub(super) fn insert_alert(
    tx: &mut dyn StoreTx,
    alert: &Alert,
    sinks: &[String],
) -> Result<Raised, StoreError> {
    // Each part is checked as its row is made (`incidents::Change::of`), so a part that cannot be
    // stored fails the transaction before it commits.
    super::incidents::raise(tx, super::incidents::split(Cow::Borrowed(alert)), sinks)
}
