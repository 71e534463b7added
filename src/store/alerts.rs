//! Alerts: the `AlertStore` trait and its embedded SQLite backend (what a raised alert holds is
//! in `alert.rs`, re-exported here).
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: an alert is committed before the score
//! response that reports it returns, so a crash right after the response must not lose it.
//! Each row keeps the whole alert as JSON (`body`, the source of truth for reads, in the
//! versioned format of `stored_alert`, not the serde form of [`Alert`]) next to the columns
//! the list filters and sorts on. `created_at` is stored as integer nanoseconds since
//! the Unix epoch, so filters and ordering agree exactly with the `DateTime` in the body.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::StoreError;
pub use super::alert::*;
use super::idempotency::KeyRecord;
pub use super::incidents::{AlertEvent, Cover, Raised};
use super::tx::{Transact, committed};

/// Where alerts live: embedded SQLite here, PostgreSQL (`super::postgres`) for several replicas.
///
/// Calls block; async callers run them on `spawn_blocking`.
///
/// What runs inside a transaction is written once here, over the backend's [`Transact`].
pub trait AlertStore: Transact + Send + Sync + 'static {
    /// Stores a new alert together with a pending webhook delivery to each of `sinks`, in one
    /// transaction: either the alert and all its deliveries are committed durably before this
    /// returns, or none of them is.
    fn insert_with_outbox(&self, alert: &Alert, sinks: &[String]) -> Result<(), StoreError> {
        self.insert_keyed(NewAlert {
            alert: Cow::Borrowed(alert),
            sinks,
            key: None,
        })
    }
    /// [`insert_with_outbox`](Self::insert_with_outbox), and keeps the idempotency `key` of the
    /// request that raised the alert in the same transaction: if the key is kept already
    /// ([`StoreError::KeyTaken`]), neither the alert nor its deliveries are.
    fn insert_keyed(&self, new: NewAlert<'_>) -> Result<(), StoreError> {
        let NewAlert { alert, sinks, key } = new;
        self.transact(&mut |tx| {
            super::tx::insert_alert(tx, &alert, sinks)?;
            if let Some(key) = key {
                tx.insert_key(key)?;
            }
            Ok(true)
        })
    }
    /// Stores a new alert that no webhook sink is owed; committed durably before this returns.
    fn insert(&self, alert: &Alert) -> Result<(), StoreError> {
        self.insert_with_outbox(alert, &[])
    }
    /// The alert with this id, if any.
    fn get(&self, id: &str) -> Result<Option<Alert>, StoreError>;
    /// Alerts matching the query, newest first (`created_at` desc, then `id` desc).
    fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError>;
    /// Reads the alert under a write lock, lets `change` edit it, and writes it back when
    /// `change` says it changed it; the alert as it now is, or `None` if there is no such alert.
    fn modify(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Alert) -> bool,
    ) -> Result<Option<Alert>, StoreError> {
        let mut found = None;
        self.transact(&mut |tx| {
            let Some(mut alert) = tx.alert_for_update(id)? else {
                return Ok(false);
            };
            let changed = change(&mut alert);
            if changed {
                let row = AlertRow::from_alert(&alert)?;
                tx.set_status_body(id, column_status(&alert), &row.body)?;
            }
            found = Some(alert);
            Ok(changed)
        })?;
        Ok(found)
    }
    /// Marks the alert acknowledged at `at` and returns it; `None` if there is no such alert.
    /// Idempotent: acknowledging again keeps the first `acknowledged_at`.
    fn acknowledge(&self, id: &str, at: DateTime<Utc>) -> Result<Option<Alert>, StoreError> {
        self.modify(id, &mut |alert| {
            let open = alert.status == AlertStatus::Open;
            if open {
                alert.status = AlertStatus::Acknowledged;
                alert.acknowledged_at = Some(at);
            }
            open
        })
    }
    /// The unresolved incident of (`detector`, `entity`), if any.
    fn open_incident(&self, detector: &str, entity: &str) -> Result<Option<Alert>, StoreError>;
    /// Adds an analyst's verdict to the alert and returns it; `None` if there is no such alert.
    fn add_feedback(&self, id: &str, feedback: Feedback) -> Result<Option<Alert>, StoreError> {
        let mut feedback = Some(feedback);
        self.modify(id, &mut |alert| {
            feedback.take().is_some_and(|f| {
                with_feedback(alert, f);
                true
            })
        })
    }
    /// Resolves up to `max` incidents whose entity has been quiet past their `close_after` at
    /// `now`, each with a `resolved` delivery owed to `sinks`; returns them.
    fn resolve_quiet(
        &self,
        now: DateTime<Utc>,
        sinks: &[String],
        max: usize,
    ) -> Result<Vec<Alert>, StoreError> {
        committed(self, |tx| {
            let due = tx.quiet_incidents(nanos_clamped(now), max)?;
            due.into_iter()
                .map(|(alert, at)| super::incidents::close(tx, alert, at, sinks))
                .collect()
        })
    }
    /// Resolves at `now` every unresolved incident in `scope` that `covers` (a new suppression
    /// rule's), each with a `resolved` delivery owed to `sinks`, in one transaction; returns
    /// them. Each incident is resolved once, also when replicas race.
    fn resolve_covered(
        &self,
        scope: Cover<'_>,
        covers: &dyn Fn(&Alert) -> bool,
        now: DateTime<Utc>,
        sinks: &[String],
    ) -> Result<Vec<Alert>, StoreError> {
        committed(self, |tx| {
            super::incidents::resolve_covered(tx, scope, covers, now, sinks)
        })
    }
    /// How many alerts are stored.
    fn count(&self) -> Result<u64, StoreError>;
    /// Deletes up to `max` of the oldest alerts created before `before`, with their outbox rows,
    /// skipping any that still owe a webhook delivery; returns how many went.
    fn prune(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError>;
    /// Checks that the store can be reached now (a network database may be down); the
    /// embedded store always can.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many have run.
/// Append new steps (the webhook outbox table, say); never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: the alerts table. Indexes serve the default listing (and cursor seeks), the status
    // filter in list order, and the severity filter.
    "CREATE TABLE alerts (
         id            TEXT PRIMARY KEY NOT NULL,
         created_at_ns INTEGER NOT NULL,
         severity      INTEGER NOT NULL CHECK (severity BETWEEN 0 AND 100),
         status        TEXT NOT NULL CHECK (status IN ('open', 'acknowledged')),
         model_version INTEGER NOT NULL,
         body          TEXT NOT NULL
     );
     CREATE INDEX alerts_by_created ON alerts (created_at_ns DESC, id DESC);
     CREATE INDEX alerts_by_status ON alerts (status, created_at_ns DESC, id DESC);
     CREATE INDEX alerts_by_severity ON alerts (severity, created_at_ns DESC, id DESC);",
    // 2: the webhook outbox, one row per (alert, sink) still owed or already delivered.
    super::outbox::MIGRATION,
    // 3: named detectors' settings, and the detector of each alert (old rows: `default`).
    super::detectors::MIGRATION,
    // 4: idempotency keys and the answers they replay.
    super::idempotency::MIGRATION,
    // 5: continuous ingest's stream state and closed windows.
    super::streams::MIGRATION,
    // 6: incidents: an alert's entity, when it resolves, when it did; at most one unresolved
    // incident per detector and entity.
    INCIDENTS_MIGRATION,
    // 7: deliveries keyed by event, with the claim count.
    super::outbox::EVENTS_MIGRATION,
    // 8: suppression rules.
    super::suppressions::MIGRATION,
    // 9: a window's `seq` in its key (records ingest: a window per record).
    super::streams::SEQ_MIGRATION,
    // 10: windows kept pending while a detector has no model.
    super::streams::PENDING_MIGRATION,
];

/// Step 6. Old rows have no entity: batch alerts, as they were. The `status` column keeps
/// `open` / `acknowledged` (its CHECK is a released step); a resolved incident is the row with
/// `resolved_at_ns` set.
const INCIDENTS_MIGRATION: &str = "ALTER TABLE alerts ADD COLUMN entity TEXT;
     ALTER TABLE alerts ADD COLUMN resolve_at_ns INTEGER;
     ALTER TABLE alerts ADD COLUMN resolved_at_ns INTEGER;
     CREATE UNIQUE INDEX alerts_open_incident ON alerts (detector, entity)
         WHERE entity IS NOT NULL AND resolved_at_ns IS NULL;
     CREATE INDEX alerts_by_entity ON alerts (entity, created_at_ns DESC, id DESC)
         WHERE entity IS NOT NULL;
     CREATE INDEX alerts_resolve_due ON alerts (resolve_at_ns)
         WHERE resolved_at_ns IS NULL AND resolve_at_ns IS NOT NULL;";

/// How long a writer waits for another connection's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest alert id accepted, in bytes; ids are UUIDs (36), the slack is for other backends.
pub const MAX_ID_LEN: usize = 128;
/// Longest cursor this store produces: hex of an i64, a colon and an id. Longer ones are not
/// ours; refusing them early bounds the work on hostile input.
const MAX_CURSOR_LEN: usize = 2 * (20 + 1 + MAX_ID_LEN);

/// The SQLite alert store: one connection behind a mutex.
///
/// Inserts use group commit: alerts that arrive while a commit is under way wait, and the next
/// committer writes them all in one transaction, so concurrent score requests share one fsync
/// instead of queueing for one each. Every insert still returns only after the transaction
/// holding its alert is durably committed (`synchronous=FULL`).
#[derive(Debug)]
pub struct SqliteAlertStore {
    conn: Mutex<Connection>,
    group: GroupCommit,
}

/// Alerts waiting for a commit, and the outcomes of committed ones.
#[derive(Debug, Default)]
struct GroupCommit {
    state: Mutex<GroupState>,
    committed: Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    next_ticket: u64,
    waiting: Vec<PendingAlert>,
    /// A thread is committing a group now.
    committing: bool,
    done: HashMap<u64, Result<(), StoreError>>,
}

/// An alert waiting for a commit, already checked and serialised by its caller (in parallel,
/// outside the connection's lock).
#[derive(Debug)]
struct PendingAlert {
    ticket: u64,
    id: String,
    detector: String,
    severity: u8,
    status: &'static str,
    created_at_ms: i64,
    payload: Payload,
    sinks: Vec<String>,
    key: Option<KeyRecord>,
}

/// What a pending alert commits.
#[derive(Debug)]
enum Payload {
    /// A batch alert's checked row.
    Batch(AlertRow),
    /// An alert whose records name entities, as its entities' updates ([`split`]): folded into
    /// incidents when committed.
    ///
    /// [`split`]: super::incidents::split
    Incident(Vec<Alert>),
}

/// Whether a commit may move an incident's updates out of its pending alert.
#[derive(Clone, Copy)]
enum Parts {
    Take,
    Copy,
}

/// Hands the committer role back (also if the committer unwinds), waking the waiters.
struct CommitterRole<'a>(&'a GroupCommit);

impl Drop for CommitterRole<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.committing = false;
        self.0.committed.notify_all();
    }
}

impl SqliteAlertStore {
    /// Opens (creating, with its parent directory) the database at `path`, switches it to WAL
    /// and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                op: "create directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::DatabaseOpen {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path, true)
    }

    /// A private in-memory database, for tests and for running without a data directory.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::DatabaseOpen {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path, false)
    }

    fn init(mut conn: Connection, path: &Path, expect_wal: bool) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::DatabaseOpen {
            path: path.to_path_buf(),
            source,
        };
        configure(&conn, path, expect_wal).map_err(open_err)?;
        migrate(&mut conn, path)?;
        super::checkpoint::take_over(&conn, path, expect_wal).map_err(open_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            group: GroupCommit::default(),
        })
    }

    /// The alerts of `group` and their outbox rows, in one transaction. An incident's updates
    /// are moved into the transaction when `parts` is [`Parts::Take`] (nothing retries them),
    /// copied when a failure would retry each alert alone.
    fn commit_together(&self, group: &mut [PendingAlert], parts: Parts) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for p in group {
            if let Payload::Incident(updates) = &mut p.payload {
                let updates = match parts {
                    Parts::Take => std::mem::take(updates),
                    Parts::Copy => updates.clone(),
                };
                super::incidents::raise(&mut super::sqlite_tx::SqliteTx(&tx), updates, &p.sinks)?;
            } else if let Payload::Batch(row) = &p.payload {
                Self::insert_tx(&tx, p, row)?;
                super::outbox::insert_tx(&tx, &opening(&p.id, p.created_at_ms), &p.sinks)?;
            }
            if let Some(key) = &p.key {
                super::idempotency::insert_tx(&tx, key)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Commits `group` in one transaction; if any of it fails, nothing of that transaction is
    /// kept and each alert is tried alone, so each gets its own outcome.
    fn commit_group(&self, group: &mut [PendingAlert]) -> Vec<Result<(), StoreError>> {
        if let [one] = group {
            return vec![self.commit_together(std::slice::from_mut(one), Parts::Take)];
        }
        match self.commit_together(group, Parts::Copy) {
            Ok(()) => group.iter().map(|_| Ok(())).collect(),
            Err(_) => group
                .iter_mut()
                .map(|p| self.commit_together(std::slice::from_mut(p), Parts::Take))
                .collect(),
        }
    }

    pub(super) fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Inserts a checked alert's row inside the group's transaction.
    fn insert_tx(tx: &Transaction<'_>, p: &PendingAlert, row: &AlertRow) -> Result<(), StoreError> {
        let mut stmt = tx.prepare_cached(super::sql::INSERT_ALERT)?;
        let inserted = stmt.execute(params![
            p.id,
            row.created_at_ns,
            p.severity,
            p.status,
            row.model_version,
            row.body,
            p.detector
        ]);
        super::unless_taken(inserted, || StoreError::DuplicateAlert(p.id.clone()))
    }
}

impl AlertStore for SqliteAlertStore {
    fn insert_keyed(&self, new: NewAlert<'_>) -> Result<(), StoreError> {
        let NewAlert { alert, sinks, key } = new;
        let (id, detector, severity, status, created_at_ms) = (
            alert.id.clone(),
            alert.detector.clone(),
            alert.severity,
            alert.status.as_str(),
            alert.created_at.timestamp_millis(),
        );
        // Checked and serialised (a batch alert), or split into its entities' updates (an
        // incident's), here before queueing: concurrent callers do it in parallel, and the
        // committer only writes rows and folds updates.
        let payload = match alert.records.iter().any(|r| r.entity.is_some()) {
            true => Payload::Incident(super::incidents::split(alert)),
            false => Payload::Batch(AlertRow::from_alert(&alert)?),
        };
        let pending = |ticket| PendingAlert {
            ticket,
            id,
            detector,
            severity,
            status,
            created_at_ms,
            payload,
            sinks: sinks.to_vec(),
            key: key.cloned(),
        };
        let group = &self.group;
        let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push(pending(ticket));
        loop {
            if let Some(outcome) = state.done.remove(&ticket) {
                return outcome;
            }
            if state.committing {
                state = group
                    .committed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if !state.waiting.iter().any(|p| p.ticket == ticket) {
                // Taken by a committer that unwound before reporting: the outcome is unknown.
                return Err(StoreError::Poisoned);
            }
            // Commit everything waiting (this alert included) while later arrivals queue up.
            state.committing = true;
            let mut batch = std::mem::take(&mut state.waiting);
            drop(state);
            let role = CommitterRole(group);
            let outcomes = self.commit_group(&mut batch);
            state = group.state.lock().unwrap_or_else(|e| e.into_inner());
            for (p, outcome) in batch.iter().zip(outcomes) {
                state.done.insert(p.ticket, outcome);
            }
            drop(state);
            drop(role);
            state = group.state.lock().unwrap_or_else(|e| e.into_inner());
        }
    }

    fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let conn = self.lock()?;
        let body: Option<String> = conn
            .query_row(super::sql::ALERT_BODY, [id], |r| r.get(0))
            .optional()?;
        body.map(|body| decode(id, &body)).transpose()
    }

    fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError> {
        let cursor = q.cursor.as_deref().map(Cursor::decode).transpose()?;
        let limit = q.limit.max(1);
        let (sql, args) = list_sql(q, cursor.as_ref(), limit);

        let conn = self.lock()?;
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?))
        })?;
        page(rows.map(|row| row.map_err(StoreError::from)), limit)
    }

    fn open_incident(&self, detector: &str, entity: &str) -> Result<Option<Alert>, StoreError> {
        let conn = self.lock()?;
        let row = open_incident_row_on(&conn, detector, entity)?;
        row.map(|(id, body)| decode(&id, &body)).transpose()
    }

    fn count(&self) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?;
        // COUNT(*) is never negative.
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn prune(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let sql = prune_sql("?1", "?2");
        let n = conn.execute(&sql, rusqlite::params![nanos_clamped(before), max as i64])?;
        Ok(n as u64)
    }
}

/// The listing's clause for a status (with `?` for the `status` column's value, if it takes one):
/// the column says open or acknowledged, `resolved_at_ns` whether an incident is over.
pub(super) fn status_filter(status: AlertStatus) -> (&'static str, Option<&'static str>) {
    match status {
        AlertStatus::Resolved => (" AND resolved_at_ns IS NOT NULL", None),
        s => (
            " AND status = ? AND resolved_at_ns IS NULL",
            Some(s.as_str()),
        ),
    }
}

/// The opening delivery of a batch alert: event 0, due at its creation, its row read when sent.
fn opening(id: &str, created_at_ms: i64) -> super::outbox::NewEvent<'_> {
    super::outbox::NewEvent {
        alert_id: id,
        seq: 0,
        event: super::incidents::AlertEvent::Opened,
        due_ms: created_at_ms,
        body: None,
    }
}

/// The unresolved incident of (`detector`, `entity`) on `conn` (or a transaction), as stored:
/// its id and body.
pub(super) fn open_incident_row_on(
    conn: &Connection,
    detector: &str,
    entity: &str,
) -> Result<Option<(String, String)>, StoreError> {
    // Cached: a commit of many entities' updates looks each one up (parsed once, not each time).
    Ok(conn
        .prepare_cached(super::sql::OPEN_INCIDENT)?
        .query_row(params![detector, entity], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Deletes the oldest alerts created before `$before` (nanoseconds), at most `$max` of them,
/// that owe no pending webhook delivery; their outbox rows go with them (`ON DELETE CASCADE`).
/// Both backends run it; they differ only in how parameters are written.
pub(super) fn prune_sql(before: &str, max: &str) -> String {
    format!(
        "DELETE FROM alerts WHERE id IN (
             SELECT a.id FROM alerts a
             WHERE a.created_at_ns < {before}
               AND NOT EXISTS (SELECT 1 FROM webhook_outbox o
                               WHERE o.alert_id = a.id AND o.state = 'pending')
             ORDER BY a.created_at_ns, a.id
             LIMIT {max})"
    )
}

/// The listing query for `q`, built from only the filters given so SQLite can pick an index
/// (a `?1 IS NULL OR ...` form would defeat that).
/// A page of `limit` alerts from the listing query's rows (`created_at_ns, id, body`, in list
/// order, one more than `limit` when another page follows), the same for every backend.
pub(super) fn page<B: AsRef<str>>(
    rows: impl IntoIterator<Item = Result<(i64, String, B), StoreError>>,
    limit: usize,
) -> Result<AlertPage, StoreError> {
    let mut alerts = Vec::with_capacity(limit.min(1024));
    let mut next_cursor = None;
    let mut last: Option<Cursor> = None;
    for row in rows {
        let (created_at_ns, id, body) = row?;
        if alerts.len() == limit {
            next_cursor = last.take().map(|c| c.encode());
            break;
        }
        alerts.push(decode(&id, body.as_ref())?);
        last = Some(Cursor { created_at_ns, id });
    }
    Ok(AlertPage {
        alerts,
        next_cursor,
    })
}

fn list_sql(q: &AlertQuery, cursor: Option<&Cursor>, limit: usize) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT created_at_ns, id, body FROM alerts WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(since) = q.since {
        sql.push_str(" AND created_at_ns >= ?");
        args.push(Value::Integer(nanos_clamped(since)));
    }
    if let Some(until) = q.until {
        sql.push_str(" AND created_at_ns < ?");
        args.push(Value::Integer(nanos_clamped(until)));
    }
    if let Some(min) = q.min_severity {
        sql.push_str(" AND severity >= ?");
        args.push(Value::Integer(i64::from(min)));
    }
    if let Some(status) = q.status {
        let (clause, column) = status_filter(status);
        sql.push_str(clause);
        if let Some(c) = column {
            args.push(Value::Text(c.to_owned()));
        }
    }
    if let Some(detector) = &q.detector {
        sql.push_str(" AND detector = ?");
        args.push(Value::Text(detector.clone()));
    }
    if let Some(entity) = &q.entity {
        sql.push_str(" AND entity = ?");
        args.push(Value::Text(entity.clone()));
    }
    if let Some(c) = cursor {
        // Strictly after the last row shown, in list order: ties on created_at are broken by
        // id, so equal timestamps are neither repeated nor skipped.
        sql.push_str(" AND (created_at_ns, id) < (?, ?)");
        args.push(Value::Integer(c.created_at_ns));
        args.push(Value::Text(c.id.clone()));
    }
    // One row more than asked tells whether another page exists.
    sql.push_str(" ORDER BY created_at_ns DESC, id DESC LIMIT ?");
    args.push(Value::Integer(
        i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    (sql, args)
}

fn configure(conn: &Connection, path: &Path, expect_wal: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if expect_wal && !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), %mode, "alert database is not in WAL mode");
    }
    // FULL: in WAL mode, each commit fsyncs the log, so a returned insert survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // For tables added later (the outbox) that reference alerts.
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Applies pending migrations, one transaction each. The version is re-read under the write
/// lock, so two processes opening a fresh database at once do not both apply a step.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::DatabaseOpen {
        path: path.to_path_buf(),
        source,
    };
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(open_err)?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        let step = match usize::try_from(found) {
            Ok(step) if step == MIGRATIONS.len() => return Ok(()),
            Ok(step) if step < MIGRATIONS.len() => step,
            _ => {
                return Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found,
                    supported: MIGRATIONS.len(),
                });
            }
        };
        tx.execute_batch(MIGRATIONS[step]).map_err(open_err)?;
        tx.pragma_update(None, "user_version", found + 1)
            .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
        tracing::info!(path = %path.display(), schema_version = found + 1, "migrated alert database");
    }
}

/// The parts of an alert row that need checking or converting before SQLite sees them.
#[derive(Debug)]
pub(super) struct AlertRow {
    pub(super) created_at_ns: i64,
    pub(super) model_version: i64,
    pub(super) body: String,
}

impl AlertRow {
    /// Checks that `alert` can be stored and read back unchanged, so no row is ever written that
    /// a later read would fail on.
    pub(super) fn from_alert(alert: &Alert) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidAlert {
            id: alert.id.clone(),
            reason,
        };
        if alert.id.is_empty() || alert.id.len() > MAX_ID_LEN {
            return Err(invalid(format!(
                "the id must be 1 to {MAX_ID_LEN} bytes long"
            )));
        }
        if alert.severity > MAX_SEVERITY {
            return Err(invalid(format!(
                "severity {} exceeds {MAX_SEVERITY}",
                alert.severity
            )));
        }
        let created_at_ns = alert.created_at.timestamp_nanos_opt().ok_or_else(|| {
            invalid(format!(
                "created_at {} is outside 1677..2262",
                alert.created_at
            ))
        })?;
        let model_version = i64::try_from(alert.model_version).map_err(|_| {
            invalid(format!(
                "model_version {} does not fit the database",
                alert.model_version
            ))
        })?;
        let body = super::stored_alert::encode(alert)
            .map_err(|e| invalid(format!("it cannot be stored as JSON: {e}")))?;
        Ok(Self {
            created_at_ns,
            model_version,
            body,
        })
    }
}

/// The alert a row's body holds (see [`super::stored_alert`] for the formats).
pub(super) fn decode(id: &str, body: &str) -> Result<Alert, StoreError> {
    super::stored_alert::decode(body).map_err(|source| StoreError::Decode {
        id: id.to_owned(),
        source,
    })
}

/// Nanoseconds since the epoch, saturating: a filter bound outside what i64 nanoseconds cover
/// (1677..2262) lies beyond every stored alert anyway.
pub(super) fn nanos_clamped(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Where a page ended: the list position of its last alert. Travels as hex of
/// `"<created_at_ns>:<id>"`; clients must treat it as opaque.
#[derive(Debug, PartialEq)]
pub(super) struct Cursor {
    pub(super) created_at_ns: i64,
    pub(super) id: String,
}

impl Cursor {
    pub(super) fn encode(&self) -> String {
        let plain = format!("{}:{}", self.created_at_ns, self.id);
        let mut out = String::with_capacity(plain.len() * 2);
        for b in plain.bytes() {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    pub(super) fn decode(s: &str) -> Result<Self, StoreError> {
        if s.is_empty() || s.len() > MAX_CURSOR_LEN || s.len() % 2 != 0 {
            return Err(StoreError::BadCursor);
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or(StoreError::BadCursor)?;
        let plain = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
        let (nanos, id) = plain.split_once(':').ok_or(StoreError::BadCursor)?;
        let created_at_ns = nanos.parse::<i64>().map_err(|_| StoreError::BadCursor)?;
        if id.is_empty() {
            return Err(StoreError::BadCursor);
        }
        Ok(Self {
            created_at_ns,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::detector::explain::{Direction, FeatureContribution};
    use crate::detector::model::BatchSummary;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_704_067_200 + secs, 0).unwrap()
    }

    fn summary() -> BatchSummary {
        BatchSummary {
            n_records: 8,
            n_anomalies: 1,
            anomaly_rate: 0.125,
            threshold: 0.5,
            max_severity: 87,
        }
    }

    fn record() -> AlertRecord {
        AlertRecord {
            index: 3,
            timestamp: Some("2024-01-05T04:00:00Z".into()),
            score: 0.712_345_678_9,
            severity: 87,
            values: BTreeMap::from([
                ("bytes_sent".into(), 5_247_031.96),
                ("connections".into(), 412.0),
            ]),
            fields: BTreeMap::from([("src_ip".into(), "10.0.0.7".into())]),
            explanation: vec![FeatureContribution {
                feature: "bytes_sent".into(),
                value: 5_247_031.96,
                direction: Direction::Above,
                contribution: 0.82,
                normal_range: [671_000.0, 1_330_000.0],
                expected: None,
                band: None,
                summary: None,
            }],
            entity: None,
        }
    }

    pub(crate) fn alert(created_at: DateTime<Utc>, severity: u8) -> Alert {
        Alert::new(
            created_at,
            3,
            severity,
            "anomaly rate 12.5% exceeds 10.0%".into(),
            summary(),
            vec![record()],
        )
    }

    fn ids(page: &AlertPage) -> Vec<String> {
        page.alerts.iter().map(|a| a.id.clone()).collect()
    }

    fn query(limit: usize) -> AlertQuery {
        AlertQuery {
            limit,
            ..AlertQuery::default()
        }
    }

    #[test]
    fn insert_then_get_returns_the_whole_alert() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let mut a = alert(Utc::now(), 87);
        a.records.push(AlertRecord {
            index: 5,
            timestamp: None,
            fields: BTreeMap::new(),
            ..record()
        });
        store.insert(&a).unwrap();
        assert_eq!(store.get(&a.id).unwrap(), Some(a));
        assert_eq!(store.get("no-such-id").unwrap(), None);
        assert_eq!(store.count().unwrap(), 1);
    }

    #[test]
    fn alert_json_uses_snake_case_status_and_rfc3339_times() {
        let a = alert(t(0), 10);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["status"], "open");
        assert_eq!(json["created_at"], "2024-01-01T00:00:00Z");
        assert_eq!(
            serde_json::to_value(AlertStatus::Acknowledged).unwrap(),
            "acknowledged"
        );
        assert!(uuid::Uuid::parse_str(&a.id).is_ok_and(|u| u.get_version_num() == 7));
    }

    #[test]
    fn duplicate_and_unstorable_alerts_are_refused_and_leave_nothing_behind() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 50);
        store.insert(&a).unwrap();
        assert!(matches!(
            store.insert(&a),
            Err(StoreError::DuplicateAlert(id)) if id == a.id
        ));

        let mut nan = alert(t(1), 50);
        nan.records[0].score = f64::NAN;
        let mut too_severe = alert(t(2), 50);
        too_severe.severity = 101;
        let mut huge_version = alert(t(3), 50);
        huge_version.model_version = u64::MAX;
        let mut no_id = alert(t(4), 50);
        no_id.id.clear();
        let mut long_id = alert(t(5), 50);
        long_id.id = "x".repeat(MAX_ID_LEN + 1);
        for bad in [nan, too_severe, huge_version, no_id, long_id] {
            assert!(
                matches!(store.insert(&bad), Err(StoreError::InvalidAlert { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(store.count().unwrap(), 1);
    }

    #[test]
    fn list_is_newest_first() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let alerts: Vec<Alert> = [5, 1, 9, 3].into_iter().map(|s| alert(t(s), 50)).collect();
        for a in &alerts {
            store.insert(a).unwrap();
        }
        let page = store.list(&query(10)).unwrap();
        let times: Vec<_> = page.alerts.iter().map(|a| a.created_at).collect();
        assert_eq!(times, vec![t(9), t(5), t(3), t(1)]);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn each_filter_narrows_the_list() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a0 = alert(t(0), 20);
        let a1 = alert(t(10), 60);
        let a2 = alert(t(20), 90);
        for a in [&a0, &a1, &a2] {
            store.insert(a).unwrap();
        }
        store.acknowledge(&a1.id, t(30)).unwrap();
        let list = |q: AlertQuery| ids(&store.list(&AlertQuery { limit: 10, ..q }).unwrap());

        // since is inclusive, until exclusive.
        let since = AlertQuery {
            since: Some(t(10)),
            ..query(10)
        };
        assert_eq!(list(since), vec![a2.id.clone(), a1.id.clone()]);
        let until = AlertQuery {
            until: Some(t(10)),
            ..query(10)
        };
        assert_eq!(list(until), vec![a0.id.clone()]);
        let window = AlertQuery {
            since: Some(t(5)),
            until: Some(t(15)),
            ..query(10)
        };
        assert_eq!(list(window), vec![a1.id.clone()]);
        let severe = AlertQuery {
            min_severity: Some(60),
            ..query(10)
        };
        assert_eq!(list(severe), vec![a2.id.clone(), a1.id.clone()]);
        let open = AlertQuery {
            status: Some(AlertStatus::Open),
            ..query(10)
        };
        assert_eq!(list(open), vec![a2.id.clone(), a0.id.clone()]);
        let acked = AlertQuery {
            status: Some(AlertStatus::Acknowledged),
            ..query(10)
        };
        assert_eq!(list(acked), vec![a1.id.clone()]);
        let combined = AlertQuery {
            since: Some(t(0)),
            min_severity: Some(50),
            status: Some(AlertStatus::Open),
            ..query(10)
        };
        assert_eq!(list(combined), vec![a2.id.clone()]);
        // Bounds beyond what nanoseconds cover still filter sensibly.
        let far = AlertQuery {
            since: Some(Utc.with_ymd_and_hms(1000, 1, 1, 0, 0, 0).unwrap()),
            until: Some(Utc.with_ymd_and_hms(9000, 1, 1, 0, 0, 0).unwrap()),
            ..query(10)
        };
        assert_eq!(list(far).len(), 3);
    }

    /// Pages through everything matching `q`, returning each page's ids.
    fn all_pages(store: &SqliteAlertStore, q: AlertQuery) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list(&AlertQuery {
                    cursor: cursor.clone(),
                    ..q.clone()
                })
                .unwrap();
            pages.push(ids(&page));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return pages,
            }
            assert!(pages.len() < 100, "pagination does not terminate");
        }
    }

    #[test]
    fn pagination_has_no_repeats_or_gaps_even_with_equal_timestamps() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        // Groups of three alerts share a created_at, so pages split inside a group.
        let alerts: Vec<Alert> = (0..25).map(|i| alert(t(i / 3), 40 + i as u8)).collect();
        for a in &alerts {
            store.insert(a).unwrap();
        }
        let pages = all_pages(&store, query(10));
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 5]);

        let paged: Vec<String> = pages.concat();
        let unique: HashSet<&String> = paged.iter().collect();
        assert_eq!(unique.len(), 25, "repeats across pages");
        let everything = ids(&store.list(&query(100)).unwrap());
        assert_eq!(paged, everything, "paging differs from one big page");

        // Order: created_at desc, then id desc.
        let by_id: BTreeMap<&str, &Alert> = alerts.iter().map(|a| (a.id.as_str(), a)).collect();
        let keys: Vec<_> = paged
            .iter()
            .map(|id| (by_id[id.as_str()].created_at, id.clone()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(keys, sorted);

        // With a filter: 12 alerts have severity >= 53.
        let filtered = all_pages(
            &store,
            AlertQuery {
                min_severity: Some(53),
                ..query(5)
            },
        );
        assert_eq!(
            filtered.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![5, 5, 2]
        );
    }

    /// The first page of `limit` over `stored` alerts created a second apart.
    fn first_page(stored: i64, limit: usize) -> AlertPage {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        for i in 0..stored {
            store.insert(&alert(t(i), 50)).unwrap();
        }
        store.list(&query(limit)).unwrap()
    }

    #[test]
    fn an_exactly_full_last_page_has_no_cursor() {
        let page = first_page(10, 10);
        assert_eq!(page.alerts.len(), 10);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn limit_zero_is_treated_as_one() {
        let page = first_page(3, 0);
        assert_eq!(page.alerts.len(), 1);
        assert!(page.next_cursor.is_some());
    }

    #[test]
    fn malformed_cursors_are_a_typed_client_error() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        store.insert(&alert(t(0), 50)).unwrap();
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        let long = "a".repeat(MAX_CURSOR_LEN + 2);
        for bad in [
            String::new(),
            "zz".into(),
            "abc".into(),
            "é1".into(),
            hex("no colon"),
            hex("12:"),
            hex("x1:abc"),
            hex("99999999999999999999:abc"),
            "ff3a61".into(),
            long,
        ] {
            let err = store
                .list(&AlertQuery {
                    cursor: Some(bad.clone()),
                    ..query(10)
                })
                .unwrap_err();
            assert!(matches!(err, StoreError::BadCursor), "{bad:?}: {err:?}");
            assert!(err.is_client_error());
        }
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            created_at_ns: -42,
            id: "01928f6e-7c3a-7d41-9b2e-5f0c8a1d2e3f".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_string_decodes_or_is_bad_cursor_without_panicking(s in "\\PC{0,80}") {
            if let Err(e) = Cursor::decode(&s) {
                proptest::prop_assert!(matches!(e, StoreError::BadCursor));
            }
        }

        #[test]
        fn cursors_round_trip(created_at_ns in proptest::num::i64::ANY, id in "\\PC{1,32}|[ -~]{128}") {
            let c = Cursor { created_at_ns, id };
            proptest::prop_assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
    }

    #[test]
    fn acknowledge_is_idempotent_and_keeps_the_first_time() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 70);
        store.insert(&a).unwrap();

        let acked = store.acknowledge(&a.id, t(100)).unwrap().unwrap();
        assert_eq!(acked.status, AlertStatus::Acknowledged);
        assert_eq!(acked.acknowledged_at, Some(t(100)));
        let again = store.acknowledge(&a.id, t(200)).unwrap().unwrap();
        assert_eq!(again.acknowledged_at, Some(t(100)));
        assert_eq!(store.get(&a.id).unwrap(), Some(acked));
        assert_eq!(store.acknowledge("no-such-id", t(300)).unwrap(), None);
    }

    #[test]
    fn alerts_survive_reopening_the_file_in_wal_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nested").join("alerts.db");
        let a = alert(t(0), 70);
        let b = alert(t(1), 30);
        {
            let store = SqliteAlertStore::open(&path).unwrap();
            store.insert(&a).unwrap();
            store.insert(&b).unwrap();
            store.acknowledge(&b.id, t(5)).unwrap();
        }
        let store = SqliteAlertStore::open(&path).unwrap();
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(store.get(&a.id).unwrap(), Some(a));
        assert_eq!(
            store.get(&b.id).unwrap().unwrap().acknowledged_at,
            Some(t(5))
        );

        let raw = Connection::open(&path).unwrap();
        let mode: String = raw
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = raw
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn windows_stored_before_seq_existed_migrate_in_place() {
        use crate::store::streams::{StreamStore, WindowQuery};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("alerts.db");
        {
            // A data dir of the build before step 9, with a closed Zeek window.
            let mut raw = Connection::open(&path).unwrap();
            let tx = raw.transaction().unwrap();
            for step in &MIGRATIONS[..8] {
                tx.execute_batch(step).unwrap();
            }
            tx.pragma_update(None, "user_version", 8).unwrap();
            tx.execute(
                "INSERT INTO windows (detector, start_s, entity, closed_at_ms, is_anomaly, body)
                 VALUES ('d', 60, '10.0.0.1', 5, 1, '{\"w\":1}')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteAlertStore::open(&path).unwrap();
        let page = store
            .windows(&WindowQuery {
                detector: "d".into(),
                limit: 10,
                only_anomalies: true,
                ..WindowQuery::default()
            })
            .unwrap();
        assert_eq!(page.windows, vec!["{\"w\":1}".to_owned()]);
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("alerts.db");
        drop(SqliteAlertStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        match SqliteAlertStore::open(&path) {
            Err(e @ StoreError::SchemaTooNew { found: 99, .. }) => {
                assert!(e.to_string().contains("alerts.db"), "{e}");
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_clear_open_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("alerts.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        match SqliteAlertStore::open(&path) {
            Err(e @ StoreError::DatabaseOpen { .. }) => {
                assert!(e.to_string().contains("alerts.db"), "{e}");
            }
            other => panic!("expected DatabaseOpen, got {other:?}"),
        }
    }

    #[test]
    fn a_row_that_does_not_decode_is_a_decode_error_naming_the_alert() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 50);
        store.insert(&a).unwrap();
        store
            .lock()
            .unwrap()
            .execute("UPDATE alerts SET body = '{}'", [])
            .unwrap();
        match store.get(&a.id) {
            Err(e @ StoreError::Decode { .. }) => assert!(e.to_string().contains(&a.id)),
            other => panic!("expected Decode, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_inserts_from_several_threads_all_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("alerts.db");
        let store = Arc::new(SqliteAlertStore::open(&path).unwrap());
        // A second connection on the same file contends for SQLite's own write lock too.
        let other = Arc::new(SqliteAlertStore::open(&path).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let store = if n % 2 == 0 {
                    Arc::clone(&store)
                } else {
                    Arc::clone(&other)
                };
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            let a = alert(t(i), 50);
                            store.insert(&a).unwrap();
                            a.id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut inserted = HashSet::new();
        for h in handles {
            inserted.extend(h.join().unwrap());
        }
        assert_eq!(inserted.len(), 100);
        assert_eq!(store.count().unwrap(), 100);
        let listed: HashSet<String> = ids(&store.list(&query(1000)).unwrap())
            .into_iter()
            .collect();
        assert_eq!(listed, inserted);
    }

    #[test]
    fn a_bad_alert_in_a_commit_group_fails_alone() {
        let store = Arc::new(SqliteAlertStore::open_in_memory().unwrap());
        let existing = alert(t(0), 10);
        store.insert(&existing).unwrap();
        // Hold the connection so the inserts below queue up and commit as groups.
        let held = store.conn.lock().unwrap();
        let spawn = |a: Alert| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.insert(&a).map(|()| a.id))
        };
        let first = spawn(alert(t(1), 20));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let queued = [
            spawn(alert(t(2), 30)),
            spawn(existing.clone()),
            spawn(alert(t(3), 40)),
        ];
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
        assert!(first.join().unwrap().is_ok());
        let outcomes: Vec<_> = queued.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(
            matches!(&outcomes[1], Err(StoreError::DuplicateAlert(id)) if *id == existing.id),
            "{outcomes:?}"
        );
        assert_eq!(store.count().unwrap(), 4);
    }

    #[test]
    fn a_poisoned_lock_is_an_error_not_a_panic() {
        let store = Arc::new(SqliteAlertStore::open_in_memory().unwrap());
        let poisoner = Arc::clone(&store);
        let joined = std::thread::spawn(move || {
            let _guard = poisoner.conn.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(joined.is_err());
        assert!(matches!(store.count(), Err(StoreError::Poisoned)));
        assert!(matches!(
            store.insert(&alert(t(0), 1)),
            Err(StoreError::Poisoned)
        ));
    }

    #[test]
    fn listing_pages_are_read_in_index_order_without_a_sort() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let cursor = Cursor {
            created_at_ns: 5,
            id: "x".into(),
        };
        let queries = [
            query(10),
            AlertQuery {
                status: Some(AlertStatus::Open),
                ..query(10)
            },
            AlertQuery {
                since: Some(t(0)),
                until: Some(t(10)),
                ..query(10)
            },
        ];
        for q in queries {
            let (sql, args) = list_sql(&q, Some(&cursor), 10);
            let conn = store.lock().unwrap();
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains("USING INDEX"), "{q:?}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{q:?}: {plan}");
        }
    }

    #[test]
    fn pruning_deletes_the_oldest_alerts_but_never_one_still_owed_to_a_sink() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let owed = alert(t(1), 50);
        store
            .insert_with_outbox(&owed, &["siem".to_string()])
            .unwrap();
        let old: Vec<Alert> = (2..6).map(|i| alert(t(i), 50)).collect();
        for a in &old {
            store.insert(a).unwrap();
        }
        let young = alert(t(100), 50);
        store.insert(&young).unwrap();
        // Two per call, oldest first; the owed one is skipped.
        assert_eq!(store.prune(t(50), 2).unwrap(), 2);
        assert!(store.get(&old[0].id).unwrap().is_none());
        assert!(store.get(&old[2].id).unwrap().is_some());
        assert_eq!(store.prune(t(50), 1000).unwrap(), 2);
        assert_eq!(store.prune(t(50), 1000).unwrap(), 0);
        assert!(
            store.get(&owed.id).unwrap().is_some(),
            "still owed to a sink"
        );
        assert!(
            store.get(&young.id).unwrap().is_some(),
            "younger than the cut"
        );
        assert_eq!(store.count().unwrap(), 2);
    }

    #[test]
    fn a_page_cut_short_continues_after_its_last_alert() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        for i in 0..5 {
            store.insert(&alert(t(i), 50)).unwrap();
        }
        let whole = store.list(&query(10)).unwrap();
        let mut cut = store.list(&query(10)).unwrap();
        cut.keep_first(2);
        assert_eq!(cut.alerts, whole.alerts[..2]);
        let rest = store
            .list(&AlertQuery {
                cursor: cut.next_cursor.clone(),
                ..query(10)
            })
            .unwrap();
        assert_eq!(rest.alerts, whole.alerts[2..]);
        assert_eq!(rest.next_cursor, None);
        // Keeping all of them (or more) changes nothing.
        let mut all = store.list(&query(10)).unwrap();
        all.keep_first(5);
        assert_eq!(all.next_cursor, None);
        assert_eq!(all.alerts.len(), 5);
    }
}
