//! PostgreSQL backend for several replicas: alerts, the webhook outbox and model versions in one database.
//!
//! One [`PgStore`] implements [`AlertStore`], [`Outbox`] and [`ModelStore`] over an r2d2 pool of
//! blocking `postgres` connections (the traits are blocking; async callers use
//! `spawn_blocking`). The schema is in `migrations/postgres/` and applied by refinery at start
//! while holding a PostgreSQL advisory lock, so replicas starting together migrate once.
//!
//! What makes several replicas agree:
//!
//! - alerts and their outbox rows commit in one transaction, with the same columns, ordering
//!   (`created_at_ns DESC, id DESC`, ids compared byte-wise) and cursor format as SQLite, so
//!   every replica lists the same pages;
//! - outbox claims lock due rows with `FOR UPDATE SKIP LOCKED` and push their due time forward
//!   by the lease in the same statement, so a row is handed to one replica at a time; a
//!   replica that dies leaves its lease to run out and another replica picks the row up;
//! - model versions come from a sequence (never shared, never reused), and moving the active
//!   pointer sends `NOTIFY netsentinel_model` in the same transaction, which
//!   [`ModelStore::watch_active`] turns into a prompt reload on every replica.
//!
//! Failures to reach the server (refused, reset, shut down, pool timeout) become
//! [`StoreError::Unavailable`], which the API answers with 503; the pool drops broken
//! connections and reconnects by itself when the server is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use postgres::Row;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::postgres::NoTls;

use super::StoreError;
use super::alerts::{
    Alert, AlertPage, AlertQuery, AlertRow, AlertStore, Cursor, NewAlert, decode, page,
};
use super::models::{ChangeHook, ModelStore};
use super::outbox::{
    Attempt, Claim, DeliveryRow, DeliveryState, DeliveryStatus, DueDelivery, Outbox, attempts,
    listed_twice, time,
};
use super::sql;

mod detectors;
mod idempotency;
mod streams;
mod suppressions;
use detectors::V1_DETECTOR;
pub use detectors::{DETECTOR_CHANNEL, PgDetectorModels, PgModels};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Channel on which a move of the active model pointer is announced.
pub const MODEL_CHANNEL: &str = "netsentinel_model";
/// Advisory-lock key held while migrating ("netsenti" in ASCII), so concurrent starts queue.
const MIGRATION_LOCK: i64 = 0x6e65_7473_656e_7469;
/// How long start-up keeps retrying an unreachable server before giving up.
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// How often the LISTEN thread wakes to check for a stop, and waits before reconnecting.
const LISTEN_TICK: Duration = Duration::from_secs(1);

type Manager = PostgresConnectionManager<NoTls>;
type Pool = r2d2::Pool<Manager>;
type Conn = r2d2::PooledConnection<Manager>;

/// How to reach PostgreSQL and how much of it to use.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db`.
    pub url: String,
    /// Most connections this process keeps open.
    pub pool_size: u32,
    /// Longest wait to connect, to get a pooled connection, and for one statement.
    pub timeout: Duration,
    /// Model versions kept besides the active one.
    pub keep_models: usize,
}

/// The shared store: a connection pool plus what the LISTEN thread needs to open its own.
pub struct PgStore {
    /// Always `Some` until drop, which hands it to a plain thread (see `Drop`).
    pool: Option<Pool>,
    config: postgres::Config,
    keep: usize,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password.
        f.debug_struct("PgStore")
            .field("pool_size", &self.pool.as_ref().map(|p| p.max_size()))
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    /// The blocking client closes its connections with its own small runtime, which panics on
    /// a thread that drives an async runtime; the last owner of the store is often such a
    /// thread (the app state at shutdown), so the pool is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let closed = std::thread::Builder::new()
                .name("pg-pool-close".into())
                .spawn(move || drop(pool));
            if let Ok(handle) = closed {
                let _ = handle.join();
            }
        }
    }
}

/// Logs connection failures the pool meets (it retries them itself) through `tracing`, at
/// most one line per [`POOL_LOG_EVERY`] while the server is down, with a count of the rest.
#[derive(Debug)]
struct LogPoolErrors {
    started: Instant,
    /// Milliseconds after `started` of the last line logged (0: never).
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

const POOL_LOG_EVERY: Duration = Duration::from_secs(10);

impl r2d2::HandleError<postgres::Error> for LogPoolErrors {
    fn handle_error(&self, error: postgres::Error) {
        let now_ms = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= POOL_LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(%error, suppressed, "cannot open a PostgreSQL connection; the pool keeps trying");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl PgStore {
    /// Connects, waiting up to 30 s for the server, and applies pending migrations.
    pub fn connect(opts: &PgOptions) -> Result<Self, StoreError> {
        let mut config: postgres::Config = opts
            .url
            .parse()
            .map_err(|e: postgres::Error| StoreError::DatabaseUrl(e.to_string()))?;
        let statement_ms = opts.timeout.as_millis().max(1);
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c statement_timeout={statement_ms}"),
            _ => format!("-c statement_timeout={statement_ms}"),
        };
        config
            .options(&options)
            .connect_timeout(opts.timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("netsentinel");
        }
        let pool = r2d2::Pool::builder()
            .max_size(opts.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(opts.timeout)
            .error_handler(Box::new(LogPoolErrors {
                started: Instant::now(),
                last_ms: Default::default(),
                suppressed: Default::default(),
            }))
            // Checked out connections are tested (an empty query), so one the server dropped
            // while idle is replaced rather than failing the request.
            .test_on_check_out(true)
            .build_unchecked(Manager::new(config.clone(), NoTls));
        let store = Self {
            pool: Some(pool),
            config,
            keep: opts.keep_models.max(1),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Applies pending migrations under an advisory lock, retrying while the server is down.
    fn migrate(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            match self.try_migrate() {
                Err(StoreError::Unavailable(why)) if Instant::now() < deadline => {
                    tracing::warn!(error = %why, "PostgreSQL is not reachable yet; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    fn try_migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg)?;
        let report = embedded::migrations::runner()
            .set_abort_divergent(true)
            .run(&mut *conn);
        // Unlock on the same session whatever happened; a dropped session unlocks too.
        let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        let report = report.map_err(|e| StoreError::Migration(e.to_string()))?;
        unlocked.map_err(pg)?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "migrated the PostgreSQL schema");
        }
        Ok(())
    }

    /// The one non-negative BIGINT a statement without parameters answers (a count, a
    /// sequence's next value).
    fn count_of(&self, sql: &str) -> Result<u64, StoreError> {
        let row = self.conn()?.query_one(sql, &[]).map_err(pg)?;
        Ok(to_u64(row.get(0)))
    }

    /// One statement on a pooled connection: the rows it answers.
    fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.conn()?.query(sql, params).map_err(pg)
    }

    /// One statement on a pooled connection: the row it answers, if any.
    fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        self.conn()?.query_opt(sql, params).map_err(pg)
    }

    /// One statement on a pooled connection: the rows it changed.
    fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.conn()?.execute(sql, params).map_err(pg)
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the connection pool is closed".into()))?
            .get()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// An INSERT's outcome, with a unique-key clash answered by `taken`'s error.
fn unless_taken(
    inserted: Result<u64, postgres::Error>,
    taken: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(taken()),
        Err(e) => Err(pg(e)),
    }
}

/// Sorts a PostgreSQL error into "cannot reach the server" (transient: 503) and the rest.
fn pg(e: postgres::Error) -> StoreError {
    let unreachable = match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::QUERY_CANCELED // statement_timeout
        }
    };
    if unreachable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Postgres(e.to_string())
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn version_arg(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::ModelNotFound(version))
}

/// Stores a raised alert and its outbox rows inside `tx`: a batch alert as a new alert, the
/// updates of entities into their incidents.
fn insert_alert(
    tx: &mut postgres::Transaction<'_>,
    alert: &Alert,
    sinks: &[String],
) -> Result<super::incidents::Raised, StoreError> {
    AlertRow::from_alert(alert)?;
    super::incidents::raise(&mut PgTx(tx), alert, sinks)
}

/// A PostgreSQL transaction as [`super::incidents::raise`] uses it.
struct PgTx<'a, 'c>(&'a mut postgres::Transaction<'c>);

impl super::incidents::IncidentTx for PgTx<'_, '_> {
    fn open_incident(&mut self, detector: &str, entity: &str) -> Result<Option<Alert>, StoreError> {
        // Replicas raising for the same entity take turns from here to their commit, so one
        // sees the other's incident instead of opening a second (the unique partial index
        // alerts_open_incident would refuse that one anyway).
        self.0
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('incident:' || $1), hashtext($2))",
                &[&detector, &entity],
            )
            .map_err(pg)?;
        let row = self
            .0
            .query_opt(
                &format!("{} FOR UPDATE", sql::postgres(sql::OPEN_INCIDENT)),
                &[&detector, &entity],
            )
            .map_err(pg)?;
        row.map(|r| decode(r.get(0), r.get(1))).transpose()
    }

    fn unresolved(
        &mut self,
        detector: Option<&str>,
        entity: Option<&str>,
    ) -> Result<Vec<Alert>, StoreError> {
        // FOR UPDATE: a replica resolving or updating one of them at the same time finishes
        // first, and a row it resolved no longer matches when the lock is granted.
        let rows = self
            .0
            .query(
                &format!("{} FOR UPDATE", sql::postgres(sql::UNRESOLVED_INCIDENTS)),
                &[&detector, &entity],
            )
            .map_err(pg)?;
        rows.iter().map(|r| decode(r.get(0), r.get(1))).collect()
    }

    fn insert(
        &mut self,
        alert: &Alert,
        resolve_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let row = AlertRow::from_alert(alert)?;
        let severity = i16::from(alert.severity);
        let resolve_at = resolve_at.map(super::alerts::nanos_clamped);
        let inserted = self.0.execute(
            &sql::postgres(sql::INSERT_INCIDENT),
            &[
                &alert.id,
                &row.created_at_ns,
                &severity,
                &super::alerts::column_status(alert),
                &row.model_version,
                &row.body,
                &alert.detector,
                &alert.entity,
                &resolve_at,
            ],
        );
        unless_taken(inserted, || StoreError::DuplicateAlert(alert.id.clone()))
    }

    fn update(
        &mut self,
        alert: &Alert,
        resolve_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let row = AlertRow::from_alert(alert)?;
        let severity = i16::from(alert.severity);
        let resolve_at = resolve_at.map(super::alerts::nanos_clamped);
        let resolved_at = alert.resolved_at.map(super::alerts::nanos_clamped);
        self.0
            .execute(
                &sql::postgres(sql::UPDATE_ALERT),
                &[
                    &severity,
                    &super::alerts::column_status(alert),
                    &row.body,
                    &resolve_at,
                    &resolved_at,
                    &alert.id,
                ],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn next_seq(&mut self, alert_id: &str) -> Result<i64, StoreError> {
        let seq: i32 = self
            .0
            .query_one(&sql::postgres(sql::NEXT_SEQ), &[&alert_id])
            .map_err(pg)?
            .get(0);
        Ok(seq.into())
    }

    fn insert_deliveries(
        &mut self,
        e: &super::outbox::NewEvent<'_>,
        sinks: &[String],
    ) -> Result<(), StoreError> {
        // The column is INTEGER; an alert with 2^31 events is not a thing.
        let seq = i32::try_from(e.seq).unwrap_or(i32::MAX);
        let insert = sql::postgres(sql::INSERT_DELIVERY);
        for sink in sinks {
            let inserted = self.0.execute(
                &insert,
                &[
                    &e.alert_id,
                    sink,
                    &seq,
                    &e.event.as_str(),
                    &e.due_ms,
                    &e.body,
                ],
            );
            unless_taken(inserted, || listed_twice(e.alert_id, sink))?;
        }
        Ok(())
    }
}

impl AlertStore for PgStore {
    fn insert_keyed(&self, new: NewAlert<'_>) -> Result<(), StoreError> {
        let NewAlert { alert, sinks, key } = new;
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        insert_alert(&mut tx, alert, sinks)?;
        if let Some(key) = key {
            idempotency::insert_pg(&mut tx, key)?;
        }
        // synchronous_commit (on by default) makes the commit durable before it returns.
        tx.commit().map_err(pg)
    }

    fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let row = self.row("SELECT body FROM alerts WHERE id = $1", &[&id])?;
        row.map(|r| decode(id, r.get(0))).transpose()
    }

    fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError> {
        let cursor = q.cursor.as_deref().map(Cursor::decode).transpose()?;
        let limit = q.limit.max(1);
        let (sql, args) = list_sql(q, cursor.as_ref(), limit);
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        let rows = self.rows(&sql, &refs)?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.get(0), r.get(1), r.get::<_, &str>(2))));
        page(rows, limit)
    }

    fn modify(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Alert) -> bool,
    ) -> Result<Option<Alert>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // FOR UPDATE: two replicas changing the alert at once (say two acks) cannot both start
        // from the same state.
        let Some(row) = tx
            .query_opt("SELECT body FROM alerts WHERE id = $1 FOR UPDATE", &[&id])
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let mut alert = decode(id, row.get(0))?;
        if change(&mut alert) {
            let row = AlertRow::from_alert(&alert)?;
            tx.execute(
                "UPDATE alerts SET status = $1, body = $2 WHERE id = $3",
                &[&super::alerts::column_status(&alert), &row.body, &id],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        Ok(Some(alert))
    }

    fn open_incident(&self, detector: &str, entity: &str) -> Result<Option<Alert>, StoreError> {
        let row = self.row(&sql::postgres(sql::OPEN_INCIDENT), &[&detector, &entity])?;
        row.map(|r| decode(r.get(0), r.get(1))).transpose()
    }

    fn resolve_quiet(
        &self,
        now: DateTime<Utc>,
        sinks: &[String],
        max: usize,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // SKIP LOCKED: a replica resolving at the same time takes other incidents, and one
        // being updated by a raise is left for the next round.
        let rows = tx
            .query(
                &format!(
                    "{} FOR UPDATE SKIP LOCKED",
                    sql::postgres(sql::QUIET_INCIDENTS)
                ),
                &[&super::alerts::nanos_clamped(now), &(max as i64)],
            )
            .map_err(pg)?;
        let mut resolved = Vec::with_capacity(rows.len());
        let mut itx = PgTx(&mut tx);
        for r in rows {
            let mut alert = decode(r.get(0), r.get(1))?;
            let at = DateTime::from_timestamp_nanos(r.get(2));
            super::incidents::close(&mut itx, &mut alert, at, sinks)?;
            resolved.push(alert);
        }
        tx.commit().map_err(pg)?;
        Ok(resolved)
    }

    fn resolve_covered(
        &self,
        scope: super::incidents::Cover<'_>,
        covers: &dyn Fn(&Alert) -> bool,
        now: DateTime<Utc>,
        sinks: &[String],
    ) -> Result<Vec<Alert>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        let resolved =
            super::incidents::resolve_covered(&mut PgTx(&mut tx), scope, covers, now, sinks)?;
        tx.commit().map_err(pg)?;
        Ok(resolved)
    }

    fn count(&self) -> Result<u64, StoreError> {
        self.count_of("SELECT COUNT(*) FROM alerts")
    }

    fn prune(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError> {
        let before = super::alerts::nanos_clamped(before);
        self.exec(
            &super::alerts::prune_sql("$1", "$2"),
            &[&before, &(max as i64)],
        )
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.simple_query("SELECT 1").map_err(pg)?;
        Ok(())
    }
}

/// The listing query: the same filters, order and cursor seek as the SQLite store.
fn list_sql(
    q: &AlertQuery,
    cursor: Option<&Cursor>,
    limit: usize,
) -> (String, Vec<Box<dyn ToSql + Sync>>) {
    let mut sql = String::from("SELECT created_at_ns, id, body FROM alerts WHERE true");
    let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut push = |sql: &mut String, clause: &str, arg: Box<dyn ToSql + Sync>| {
        args.push(arg);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(since) = q.since {
        push(
            &mut sql,
            " AND created_at_ns >= ?",
            Box::new(super::alerts::nanos_clamped(since)),
        );
    }
    if let Some(until) = q.until {
        push(
            &mut sql,
            " AND created_at_ns < ?",
            Box::new(super::alerts::nanos_clamped(until)),
        );
    }
    if let Some(min) = q.min_severity {
        push(&mut sql, " AND severity >= ?", Box::new(i16::from(min)));
    }
    if let Some(status) = q.status {
        match super::alerts::status_filter(status) {
            (clause, Some(column)) => push(&mut sql, clause, Box::new(column)),
            (clause, None) => sql.push_str(clause),
        }
    }
    if let Some(detector) = &q.detector {
        push(&mut sql, " AND detector = ?", Box::new(detector.clone()));
    }
    if let Some(entity) = &q.entity {
        push(&mut sql, " AND entity = ?", Box::new(entity.clone()));
    }
    if let Some(c) = cursor {
        push(
            &mut sql,
            " AND (created_at_ns, id) < (?",
            Box::new(c.created_at_ns),
        );
        push(&mut sql, ", ?)", Box::new(c.id.clone()));
    }
    // One row more than asked tells whether another page exists.
    let n = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    push(
        &mut sql,
        " ORDER BY created_at_ns DESC, id DESC LIMIT ?",
        Box::new(n),
    );
    (sql, args)
}

impl Outbox for PgStore {
    fn claim(&self, claim: &Claim<'_>) -> Result<Vec<DueDelivery>, StoreError> {
        let (sink, now_ms, until_ms, limit) =
            (claim.sink, claim.now_ms, claim.until_ms, claim.limit);
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // SKIP LOCKED: replicas claiming at once take disjoint rows instead of waiting; the
        // lease moves next_attempt_at forward in the same statement, so once committed the row
        // is not due for anyone until the lease runs out.
        let rows = tx
            .query(
                "WITH due AS (
                     SELECT alert_id, seq FROM webhook_outbox
                     WHERE sink = $1 AND state = 'pending' AND next_attempt_at_ms <= $2
                     ORDER BY next_attempt_at_ms, alert_id, seq
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED)
                 UPDATE webhook_outbox o SET next_attempt_at_ms = $4, claims = o.claims + 1
                 FROM due, alerts a
                 WHERE o.sink = $1 AND o.alert_id = due.alert_id AND o.seq = due.seq
                   AND a.id = o.alert_id
                 RETURNING o.alert_id, o.attempts, COALESCE(o.body, a.body), o.seq, o.event,
                           o.claims",
                &[&sink, &now_ms, &limit, &until_ms],
            )
            .map_err(pg)?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let alert_id: String = row.get(0);
            let n_attempts: i32 = row.get(1);
            let seq: i32 = row.get(3);
            match decode(&alert_id, row.get(2)) {
                Ok(alert) => due.push(DueDelivery {
                    alert,
                    sink: sink.to_owned(),
                    attempts: attempts(n_attempts.into()),
                    seq: u32::try_from(seq).unwrap_or(0),
                    event: super::incidents::AlertEvent::parse(row.get(4)),
                    claim: row.get(5),
                }),
                Err(e) => {
                    // Retrying cannot fix a row that does not decode; fail it where operators see it.
                    tracing::error!(alert = %alert_id, sink, error = %e, "webhook delivery abandoned");
                    tx.execute(
                        &sql::postgres(sql::FAIL_DELIVERY),
                        &[&e.to_string(), &now_ms, &alert_id, &sink, &seq],
                    )
                    .map_err(pg)?;
                }
            }
        }
        tx.commit().map_err(pg)?;
        due.sort_by(|a, b| (&a.alert.id, a.seq).cmp(&(&b.alert.id, b.seq)));
        Ok(due)
    }

    fn next_due(&self, sink: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = self
            .conn()?
            .query_one(&sql::postgres(sql::NEXT_DUE), &[&sink])
            .map_err(pg)?;
        Ok(row.get::<_, Option<i64>>(0).and_then(time))
    }

    fn record(&self, attempt: &Attempt<'_>) -> Result<(), StoreError> {
        let (alert_id, sink, row, at_ms) =
            (attempt.alert_id, attempt.sink, &attempt.row, attempt.at_ms);
        let status = row.last_status.map(i32::from);
        let seq = i32::try_from(attempt.seq).unwrap_or(i32::MAX);
        let changed = self.exec(
            &sql::postgres(sql::RECORD_ATTEMPT),
            &[
                &row.state.as_str(),
                &row.next_attempt_at_ms,
                &row.last_error,
                &status,
                &row.delivered_at_ms,
                &at_ms,
                &alert_id,
                &sink,
                &seq,
                &attempt.claim,
            ],
        )?;
        if changed == 0 {
            let delivered = i32::from(row.state == DeliveryStatus::Delivered);
            self.exec(
                &sql::postgres(sql::RECORD_LATE_ATTEMPT),
                &[&at_ms, &alert_id, &sink, &seq, &delivered, &status],
            )?;
        }
        Ok(())
    }

    fn release(&self, due: &DueDelivery, now: DateTime<Utc>) -> Result<(), StoreError> {
        let seq = i32::try_from(due.seq).unwrap_or(i32::MAX);
        self.exec(
            &sql::postgres(sql::RELEASE),
            &[
                &now.timestamp_millis(),
                &due.alert.id,
                &due.sink,
                &seq,
                &due.claim,
            ],
        )?;
        Ok(())
    }

    fn deliveries(&self, alert_id: &str) -> Result<Vec<DeliveryState>, StoreError> {
        let rows = self.rows(&sql::postgres(sql::DELIVERIES), &[&alert_id])?;
        Ok(rows
            .into_iter()
            .map(|r| {
                // INTEGER columns: attempts and last_status are i32 here.
                let row: DeliveryRow = (
                    r.get(0),
                    r.get(1),
                    r.get::<_, i32>(2).into(),
                    r.get(3),
                    r.get::<_, Option<i32>>(4).map(i64::from),
                    r.get(5),
                    r.get(6),
                    r.get::<_, i32>(7).into(),
                    r.get(8),
                );
                row.into()
            })
            .collect())
    }

    fn depth(&self) -> Result<u64, StoreError> {
        self.count_of(sql::DEPTH)
    }
}

impl ModelStore for PgStore {
    // The bare store is the `default` detector's model store (what v1 served); other
    // detectors' stores come from `PgDetectorModels`.
    fn next_version(&self) -> Result<u64, StoreError> {
        self.models_of(V1_DETECTOR).next_version()
    }

    fn save(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.models_of(V1_DETECTOR).save(version, bytes)
    }

    fn set_active(&self, version: u64) -> Result<(), StoreError> {
        self.models_of(V1_DETECTOR).set_active(version)
    }

    fn active(&self) -> Result<Option<u64>, StoreError> {
        self.models_of(V1_DETECTOR).active()
    }

    fn versions(&self) -> Result<Vec<u64>, StoreError> {
        self.models_of(V1_DETECTOR).versions()
    }

    fn read(&self, version: u64) -> Result<Vec<u8>, StoreError> {
        self.models_of(V1_DETECTOR).read(version)
    }

    fn quarantine(&self, version: u64) -> Result<(), StoreError> {
        self.models_of(V1_DETECTOR).quarantine(version)
    }

    fn keep(&self) -> usize {
        self.keep
    }

    fn shared(&self) -> bool {
        true
    }

    /// A thread with its own connection (not from the pool) that `LISTEN`s on
    /// [`MODEL_CHANNEL`] and [`DETECTOR_CHANNEL`] and calls `on_change` for each notification, and once after every
    /// (re)connect, since notifications sent while disconnected are lost.
    fn watch_active(&self, on_change: ChangeHook, stop: Arc<AtomicBool>) -> bool {
        let config = self.config.clone();
        let spawned = std::thread::Builder::new()
            .name("model-listen".into())
            .spawn(move || listen(&config, &on_change, &stop));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the model LISTEN thread; polling only");
            return false;
        }
        true
    }
}

fn listen(config: &postgres::Config, on_change: &ChangeHook, stop: &AtomicBool) {
    let mut connected = true;
    while !stop.load(Ordering::Relaxed) {
        let mut client = match config.connect(NoTls) {
            Ok(c) => c,
            Err(e) => {
                if connected {
                    tracing::warn!(error = %e, "model change listener disconnected; reconnecting");
                    connected = false;
                }
                std::thread::sleep(LISTEN_TICK);
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!(
            "LISTEN {MODEL_CHANNEL}; LISTEN {DETECTOR_CHANNEL}"
        )) {
            tracing::warn!(error = %e, "cannot LISTEN for model changes; reconnecting");
            std::thread::sleep(LISTEN_TICK);
            continue;
        }
        if !connected {
            tracing::info!("model change listener reconnected");
        }
        connected = true;
        on_change();
        while !stop.load(Ordering::Relaxed) {
            let next = {
                let mut notifications = client.notifications();
                let mut it = notifications.timeout_iter(LISTEN_TICK);
                it.next()
            };
            match next {
                Ok(Some(_)) => on_change(),
                Ok(None) => {
                    // A quiet tick; a closed connection shows up here as an error next time,
                    // or now if the socket already reported it.
                    if client.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "model change listener lost its connection");
                    connected = false;
                    break;
                }
            }
        }
    }
}
