//! The webhook outbox: one row per (alert, sink) that must be pushed, written in the alert's own transaction.
//!
//! The rows are the delivery queue and its record at once: `pending` rows are due at
//! `next_attempt_at`, and end `delivered` (a 2xx) or `failed` (the sink's `max_attempts` ran
//! out). Because [`AlertStore::insert_with_outbox`](super::alerts::AlertStore::insert_with_outbox)
//! writes the alert and its rows in one transaction, an alert is never stored without the
//! deliveries it owes, and a crash at any point leaves either both or neither.
//!
//! Claiming a row pushes its `next_attempt_at` forward by a lease, so a row being delivered is
//! not handed out again; if the process dies mid-request the lease runs out and the row is due
//! again (at least once). Times are integer milliseconds since the Unix epoch.
//!
//! An alert owes a delivery per event (`opened`, and for incidents `escalated`, `renotified`,
//! `resolved`): rows are keyed (alert, sink, `seq`), `seq` numbering the alert's events from 0,
//! and an incident's row carries the alert as it was at its event (`body`; a batch alert's is
//! null and its row's alert is read). Each claim bumps the row's `claims`: an attempt is
//! recorded against the claim it was made under, so an attempt whose lease ran out (and whose
//! row was claimed again) cannot overwrite the newer claim's lease, and is still counted (two
//! sends are never one recorded attempt).
//!
//! Rows are keyed by sink *name*: a sink removed from the configuration leaves its rows
//! pending (they resume if it comes back under the same name), and a sink added later only
//! gets alerts raised after it was configured.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::StoreError;
use super::alerts::{Alert, SqliteAlertStore, decode};
use super::incidents::AlertEvent;
use super::sql;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not delivered yet; retried at `next_attempt_at`.
    Pending,
    /// The sink answered 2xx.
    Delivered,
    /// Given up after the sink's `max_attempts`.
    Failed,
}

impl DeliveryStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// How the delivery of one alert to one webhook sink is going.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryState {
    /// The sink's configured name.
    pub sink: String,
    /// `pending`, `delivered` or `failed`.
    pub state: DeliveryStatus,
    /// Attempts made so far (an attempt cut short by a shutdown does not count).
    pub attempts: u32,
    /// Why the last attempt failed; null once delivered.
    pub last_error: Option<String>,
    /// HTTP status of the last answer, if the sink answered at all.
    pub last_status: Option<u16>,
    /// When the next attempt is due (while one is in flight: when it counts as abandoned and is
    /// retried); null once delivered or failed.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the sink accepted the alert.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Which of the alert's events this delivers (0: its opening).
    pub seq: u32,
    /// The event: `opened`, `escalated`, `renotified` or `resolved`.
    pub event: AlertEvent,
}

/// A claimed delivery: the alert to send (as it was at its event) and how many attempts came before.
#[derive(Clone, Debug, PartialEq)]
pub struct DueDelivery {
    pub alert: Alert,
    pub sink: String,
    /// Completed attempts before this one.
    pub attempts: u32,
    /// The alert's event number this delivers.
    pub seq: u32,
    pub event: AlertEvent,
    /// The claim this attempt runs under (the row's claim count once claimed).
    pub claim: i64,
}

impl DueDelivery {
    /// The key receivers de-duplicate on: the alert id for its opening (as before incidents),
    /// `<alert id>/<seq>` for each later event.
    pub fn idempotency_key(&self) -> String {
        match self.seq {
            0 => self.alert.id.clone(),
            n => format!("{}/{n}", self.alert.id),
        }
    }
}

/// What one delivery attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    /// Delivered: a webhook answered 2xx with this status; a syslog collector has no status.
    Delivered { status: Option<u16> },
    /// It failed; try again at `next_at`.
    Retry {
        next_at: DateTime<Utc>,
        error: String,
        status: Option<u16>,
    },
    /// It failed and the sink's attempts are used up.
    Failed { error: String, status: Option<u16> },
}

/// The columns an attempt's outcome writes to its outbox row, the same for every backend.
pub struct AttemptRow<'a> {
    pub state: DeliveryStatus,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<&'a str>,
    pub last_status: Option<u16>,
    pub delivered_at_ms: Option<i64>,
}

impl AttemptOutcome {
    /// The row this outcome leaves when the attempt finished at `at_ms`.
    pub(super) fn row(&self, at_ms: i64) -> AttemptRow<'_> {
        match self {
            AttemptOutcome::Delivered { status } => AttemptRow {
                state: DeliveryStatus::Delivered,
                next_attempt_at_ms: at_ms,
                last_error: None,
                last_status: *status,
                delivered_at_ms: Some(at_ms),
            },
            AttemptOutcome::Retry {
                next_at,
                error,
                status,
            } => AttemptRow {
                state: DeliveryStatus::Pending,
                next_attempt_at_ms: next_at.timestamp_millis(),
                last_error: Some(error),
                last_status: *status,
                delivered_at_ms: None,
            },
            AttemptOutcome::Failed { error, status } => AttemptRow {
                state: DeliveryStatus::Failed,
                next_attempt_at_ms: at_ms,
                last_error: Some(error),
                last_status: *status,
                delivered_at_ms: None,
            },
        }
    }
}

/// An outbox row as [`sql::DELIVERIES`] lists it, for every backend: sink, state, attempts,
/// last error, last status, next attempt and delivery time (milliseconds), event number, event.
pub(super) type DeliveryRow = (
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    i64,
    String,
);

impl From<DeliveryRow> for DeliveryState {
    fn from(row: DeliveryRow) -> Self {
        let (sink, state, n_attempts, last_error, last_status, next_ms, delivered_ms, seq, event) =
            row;
        // The CHECK constraint admits only the three spellings parse knows.
        let state = DeliveryStatus::parse(&state).unwrap_or(DeliveryStatus::Pending);
        DeliveryState {
            sink,
            state,
            attempts: attempts(n_attempts),
            last_error,
            last_status: last_status.and_then(|s| u16::try_from(s).ok()),
            next_attempt_at: (state == DeliveryStatus::Pending)
                .then(|| time(next_ms))
                .flatten(),
            delivered_at: delivered_ms.and_then(time),
            seq: u32::try_from(seq).unwrap_or(0),
            event: AlertEvent::parse(&event),
        }
    }
}

/// What [`Outbox::claim_due`] asks a backend for: up to `limit` deliveries to `sink` due at
/// `now_ms`, leased until `until_ms`.
pub struct Claim<'a> {
    pub sink: &'a str,
    pub now_ms: i64,
    pub until_ms: i64,
    pub limit: i64,
}

/// What [`Outbox::record_attempt`] asks a backend to store: the attempt's outcome as the
/// delivery's columns, and when it finished.
pub struct Attempt<'a> {
    pub alert_id: &'a str,
    pub sink: &'a str,
    pub seq: i64,
    pub claim: i64,
    pub at_ms: i64,
    pub row: AttemptRow<'a>,
}

/// The delivery queue behind webhook sinks. Calls block; async callers use `spawn_blocking`.
///
/// One method records every outcome (rather than one per outcome) to keep the surface a
/// PostgreSQL backend must implement small.
pub trait Outbox: Send + Sync + 'static {
    /// Claims up to `limit` pending deliveries to `sink` due at `now`, oldest due first, and
    /// leases them until `now + lease` so they are not handed out twice.
    fn claim_due(
        &self,
        sink: &str,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let now_ms = now.timestamp_millis();
        self.claim(&Claim {
            sink,
            now_ms,
            until_ms: now_ms.saturating_add(millis(lease)),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
        })
    }
    /// [`claim_due`](Self::claim_due) as a backend implements it.
    fn claim(&self, claim: &Claim<'_>) -> Result<Vec<DueDelivery>, StoreError>;
    /// When the earliest pending delivery to `sink` (claimed or not) falls due.
    fn next_due(&self, sink: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Records a finished attempt of a claimed delivery. Only a pending row still held by this
    /// claim takes the outcome, so a late record never undoes a delivery nor another claim's
    /// lease; a late record is still counted as an attempt (and a late 2xx on a row still
    /// pending marks it delivered).
    fn record_attempt(
        &self,
        due: &DueDelivery,
        outcome: &AttemptOutcome,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at_ms = at.timestamp_millis();
        self.record(&Attempt {
            alert_id: &due.alert.id,
            sink: &due.sink,
            seq: i64::from(due.seq),
            claim: due.claim,
            at_ms,
            row: outcome.row(at_ms),
        })
    }
    /// [`record_attempt`](Self::record_attempt) as a backend implements it.
    fn record(&self, attempt: &Attempt<'_>) -> Result<(), StoreError>;
    /// Gives back a claim whose attempt was abandoned (shutdown): due again at `now`, unless
    /// another claim holds the row by now.
    fn release(&self, due: &DueDelivery, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Every delivery of this alert, by sink name.
    fn deliveries(&self, alert_id: &str) -> Result<Vec<DeliveryState>, StoreError>;
    /// Pending deliveries, all sinks together (including sinks no longer configured).
    fn depth(&self) -> Result<u64, StoreError>;
}

/// The outbox table (schema step 2 in `alerts.rs`; step 7, [`EVENTS_MIGRATION`], keys it by
/// event). The partial index serves both the due query and `depth`, and stays small because
/// finished rows leave it.
pub(super) const MIGRATION: &str = "CREATE TABLE webhook_outbox (
         alert_id           TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
         sink               TEXT NOT NULL,
         state              TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
         attempts           INTEGER NOT NULL DEFAULT 0,
         next_attempt_at_ms INTEGER NOT NULL,
         last_error         TEXT,
         last_status        INTEGER,
         delivered_at_ms    INTEGER,
         updated_at_ms      INTEGER NOT NULL,
         PRIMARY KEY (alert_id, sink)
     );
     CREATE INDEX webhook_outbox_due ON webhook_outbox (sink, next_attempt_at_ms)
         WHERE state = 'pending';";

/// Step 7 of the SQLite schema: rows keyed by (alert, sink, event number), with the event, the
/// alert as it was at the event, and the claim count. Existing rows are each alert's opening.
pub(super) const EVENTS_MIGRATION: &str = "CREATE TABLE webhook_outbox_v2 (
         alert_id           TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
         sink               TEXT NOT NULL,
         seq                INTEGER NOT NULL DEFAULT 0,
         event              TEXT NOT NULL DEFAULT 'opened',
         state              TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
         attempts           INTEGER NOT NULL DEFAULT 0,
         claims             INTEGER NOT NULL DEFAULT 0,
         next_attempt_at_ms INTEGER NOT NULL,
         last_error         TEXT,
         last_status        INTEGER,
         delivered_at_ms    INTEGER,
         updated_at_ms      INTEGER NOT NULL,
         body               TEXT,
         PRIMARY KEY (alert_id, sink, seq)
     );
     INSERT INTO webhook_outbox_v2 (alert_id, sink, state, attempts, next_attempt_at_ms,
                                    last_error, last_status, delivered_at_ms, updated_at_ms)
         SELECT alert_id, sink, state, attempts, next_attempt_at_ms, last_error, last_status,
                delivered_at_ms, updated_at_ms FROM webhook_outbox;
     DROP TABLE webhook_outbox;
     ALTER TABLE webhook_outbox_v2 RENAME TO webhook_outbox;
     CREATE INDEX webhook_outbox_due ON webhook_outbox (sink, next_attempt_at_ms)
         WHERE state = 'pending';";

/// A new delivery of one event of an alert: its number, its kind, when it is due, and the
/// alert as the event left it (`None`: read the alert's row when sending).
pub struct NewEvent<'a> {
    pub alert_id: &'a str,
    pub seq: i64,
    pub event: AlertEvent,
    pub due_ms: i64,
    pub body: Option<&'a str>,
}

/// Writes one pending row per sink for an event of an alert, inside the caller's transaction.
pub(super) fn insert_tx(
    tx: &Transaction<'_>,
    e: &NewEvent<'_>,
    sinks: &[String],
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(sql::INSERT_DELIVERY)?;
    for sink in sinks {
        let inserted = stmt.execute(params![
            e.alert_id,
            sink,
            e.seq,
            e.event.as_str(),
            e.due_ms,
            e.body
        ]);
        super::unless_taken(inserted, || listed_twice(e.alert_id, sink))?;
    }
    Ok(())
}

/// The answer to an alert that names a webhook sink twice.
pub(super) fn listed_twice(alert_id: &str, sink: &str) -> StoreError {
    StoreError::InvalidAlert {
        id: alert_id.to_string(),
        reason: format!("webhook sink {sink:?} is listed twice"),
    }
}

/// An attempt count as stored (never negative) as the API counts it.
pub(super) fn attempts(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

impl Outbox for SqliteAlertStore {
    fn claim(&self, claim: &Claim<'_>) -> Result<Vec<DueDelivery>, StoreError> {
        let (sink, now_ms, until_ms, limit) =
            (claim.sink, claim.now_ms, claim.until_ms, claim.limit);
        let mut conn = self.lock()?;
        // Immediate: read and lease under one write lock, so two claimers cannot share a row.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        type Row = (String, i64, String, String, i64, i64);
        let rows: Vec<Row> = {
            let mut stmt = tx.prepare_cached(
                "SELECT o.alert_id, o.seq, o.event, COALESCE(o.body, a.body), o.attempts, o.claims
                 FROM webhook_outbox o JOIN alerts a ON a.id = o.alert_id
                 WHERE o.sink = ?1 AND o.state = 'pending' AND o.next_attempt_at_ms <= ?2
                 ORDER BY o.next_attempt_at_ms, o.alert_id, o.seq
                 LIMIT ?3",
            )?;
            stmt.query_map(params![sink, now_ms, limit], |r| Row::try_from(r))?
                .collect::<Result<_, _>>()?
        };
        let mut due = Vec::with_capacity(rows.len());
        for (alert_id, seq, event, body, n_attempts, claims) in rows {
            match decode(&alert_id, &body) {
                Ok(alert) => {
                    tx.execute(
                        "UPDATE webhook_outbox SET next_attempt_at_ms = ?1, claims = claims + 1
                         WHERE alert_id = ?2 AND sink = ?3 AND seq = ?4",
                        params![until_ms, alert_id, sink, seq],
                    )?;
                    due.push(DueDelivery {
                        alert,
                        sink: sink.to_owned(),
                        attempts: attempts(n_attempts),
                        seq: u32::try_from(seq).unwrap_or(0),
                        event: AlertEvent::parse(&event),
                        claim: claims + 1,
                    });
                }
                Err(e) => {
                    // Retrying cannot fix a row that does not decode, and leaving it pending
                    // would put it at the head of every claim; fail it where operators see it.
                    tracing::error!(alert = %alert_id, sink, error = %e, "webhook delivery abandoned");
                    tx.execute(
                        sql::FAIL_DELIVERY,
                        params![e.to_string(), now_ms, alert_id, sink, seq],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(due)
    }

    fn next_due(&self, sink: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let conn = self.lock()?;
        let ms: Option<i64> = conn.query_row(sql::NEXT_DUE, [sink], |r| r.get(0))?;
        Ok(ms.and_then(time))
    }

    fn record(&self, attempt: &Attempt<'_>) -> Result<(), StoreError> {
        let (alert_id, sink, row, at_ms) =
            (attempt.alert_id, attempt.sink, &attempt.row, attempt.at_ms);
        let conn = self.lock()?;
        let changed = conn.execute(
            sql::RECORD_ATTEMPT,
            params![
                row.state.as_str(),
                row.next_attempt_at_ms,
                row.last_error,
                row.last_status,
                row.delivered_at_ms,
                at_ms,
                alert_id,
                sink,
                attempt.seq,
                attempt.claim
            ],
        )?;
        if changed == 0 {
            let delivered = i32::from(row.state == DeliveryStatus::Delivered);
            conn.execute(
                sql::RECORD_LATE_ATTEMPT,
                params![
                    at_ms,
                    alert_id,
                    sink,
                    attempt.seq,
                    delivered,
                    row.last_status
                ],
            )?;
        }
        Ok(())
    }

    fn release(&self, due: &DueDelivery, now: DateTime<Utc>) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            sql::RELEASE,
            params![
                now.timestamp_millis(),
                due.alert.id,
                due.sink,
                i64::from(due.seq),
                due.claim
            ],
        )?;
        Ok(())
    }

    fn deliveries(&self, alert_id: &str) -> Result<Vec<DeliveryState>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(sql::DELIVERIES)?;
        let rows = stmt.query_map([alert_id], |r| DeliveryRow::try_from(r))?;
        rows.map(|row| Ok(row?.into())).collect()
    }

    fn depth(&self) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n: Option<i64> = conn.query_row(sql::DEPTH, [], |r| r.get(0)).optional()?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::alerts::AlertStore;
    use crate::store::alerts::tests::alert;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    /// A store holding one alert with a pending delivery to sink `s`.
    fn one_pending() -> (SqliteAlertStore, Alert) {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 80);
        store.insert_with_outbox(&a, &sinks(&["s"])).unwrap();
        (store, a)
    }

    /// Records a delivery of `due` answered with `status` at `at`.
    fn delivered(store: &SqliteAlertStore, due: &DueDelivery, status: u16, at: DateTime<Utc>) {
        let outcome = AttemptOutcome::Delivered {
            status: Some(status),
        };
        store.record_attempt(due, &outcome, at).unwrap();
    }

    fn sinks(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const LEASE: Duration = Duration::from_secs(30);

    #[test]
    fn an_alert_and_its_outbox_rows_commit_together() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 80);
        store
            .insert_with_outbox(&a, &sinks(&["siem", "splunk"]))
            .unwrap();
        let states = store.deliveries(&a.id).unwrap();
        assert_eq!(
            states.iter().map(|s| s.sink.as_str()).collect::<Vec<_>>(),
            ["siem", "splunk"]
        );
        assert!(states.iter().all(|s| s.state == DeliveryStatus::Pending
            && s.attempts == 0
            && s.next_attempt_at == Some(t(0))));
        assert_eq!(store.depth().unwrap(), 2);
    }

    #[test]
    fn a_failing_outbox_insert_rolls_back_the_alert() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 80);
        // The second row violates the (alert_id, sink) key after the alert row was written.
        let err = store
            .insert_with_outbox(&a, &sinks(&["siem", "siem"]))
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidAlert { .. }), "{err:?}");
        assert_eq!(
            store.get(&a.id).unwrap(),
            None,
            "no alert without its outbox"
        );
        assert_eq!(store.count().unwrap(), 0);
        assert_eq!(store.depth().unwrap(), 0);
        // And the same alert stores fine once the sink list is sound.
        store.insert_with_outbox(&a, &sinks(&["siem"])).unwrap();
        assert_eq!(store.depth().unwrap(), 1);
    }

    #[test]
    fn plain_insert_writes_no_outbox_rows() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 80);
        store.insert(&a).unwrap();
        assert!(store.deliveries(&a.id).unwrap().is_empty());
        assert_eq!(store.depth().unwrap(), 0);
    }

    #[test]
    fn a_claimed_row_is_not_claimed_again_until_its_lease_runs_out() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 80);
        let b = alert(t(1), 80);
        store
            .insert_with_outbox(&a, &sinks(&["s", "other"]))
            .unwrap();
        store.insert_with_outbox(&b, &sinks(&["s"])).unwrap();

        assert!(store.claim_due("s", t(-1), 10, LEASE).unwrap().is_empty());
        let first = store.claim_due("s", t(0), 1, LEASE).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].alert, a, "oldest due first, whole alert decoded");
        let second = store.claim_due("s", t(5), 10, LEASE).unwrap();
        assert_eq!(second.len(), 1, "a is leased, b is due");
        assert_eq!(second[0].alert.id, b.id);
        assert!(store.claim_due("s", t(10), 10, LEASE).unwrap().is_empty());
        // A claim for one sink leaves the other sink's row alone.
        assert_eq!(store.claim_due("other", t(10), 10, LEASE).unwrap().len(), 1);
        // The lease runs out (the process died mid-request): due again.
        let again = store.claim_due("s", t(31), 10, LEASE).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].alert.id, a.id);
        assert_eq!(again[0].attempts, 0, "an abandoned attempt is not counted");
    }

    #[test]
    fn attempts_are_recorded_and_finished_rows_stay_finished() {
        let (store, a) = one_pending();
        let first = store.claim_due("s", t(0), 10, LEASE).unwrap().remove(0);
        store
            .record_attempt(
                &first,
                &AttemptOutcome::Retry {
                    next_at: t(4),
                    error: "HTTP 500".into(),
                    status: Some(500),
                },
                t(1),
            )
            .unwrap();
        let s = &store.deliveries(&a.id).unwrap()[0];
        assert_eq!((s.state, s.attempts), (DeliveryStatus::Pending, 1));
        assert_eq!(s.last_status, Some(500));
        assert_eq!(s.next_attempt_at, Some(t(4)));
        assert_eq!(store.next_due("s").unwrap(), Some(t(4)));
        assert!(store.claim_due("s", t(3), 10, LEASE).unwrap().is_empty());
        let second = store.claim_due("s", t(4), 10, LEASE).unwrap().remove(0);
        assert_eq!(second.attempts, 1);

        delivered(&store, &second, 204, t(5));
        // A stale second record (a duplicate worker, a late retry) is counted, and undoes nothing.
        store
            .record_attempt(
                &second,
                &AttemptOutcome::Failed {
                    error: "late".into(),
                    status: None,
                },
                t(6),
            )
            .unwrap();
        let s = &store.deliveries(&a.id).unwrap()[0];
        assert_eq!((s.state, s.attempts), (DeliveryStatus::Delivered, 3));
        assert_eq!(s.last_status, Some(204));
        assert_eq!(s.last_error, None);
        assert_eq!(s.delivered_at, Some(t(5)));
        assert_eq!(s.next_attempt_at, None);
        assert_eq!(store.depth().unwrap(), 0);
        assert_eq!(store.next_due("s").unwrap(), None);
    }

    #[test]
    fn a_released_claim_is_due_at_once() {
        let (store, _) = one_pending();
        let claimed = store.claim_due("s", t(1), 10, LEASE).unwrap().remove(0);
        store.release(&claimed, t(2)).unwrap();
        assert_eq!(store.claim_due("s", t(2), 10, LEASE).unwrap().len(), 1);
    }

    #[test]
    fn an_attempt_whose_lease_ran_out_is_counted_and_cannot_undo_the_next_claim() {
        let (store, a) = one_pending();
        let slow = store.claim_due("s", t(0), 10, LEASE).unwrap().remove(0);
        // The slow attempt outlives its lease: another worker claims the row and sends it too.
        let next = store.claim_due("s", t(31), 10, LEASE).unwrap().remove(0);
        assert_ne!(slow.claim, next.claim);
        // The slow one fails late: its retry time must not replace the new claim's lease.
        let retry = AttemptOutcome::Retry {
            next_at: t(32),
            error: "HTTP 500".into(),
            status: Some(500),
        };
        store.record_attempt(&slow, &retry, t(32)).unwrap();
        assert!(
            store.claim_due("s", t(40), 10, LEASE).unwrap().is_empty(),
            "still leased by the second claim"
        );
        // A stale release changes nothing either.
        store.release(&slow, t(41)).unwrap();
        assert!(store.claim_due("s", t(41), 10, LEASE).unwrap().is_empty());
        delivered(&store, &next, 200, t(42));
        let s = &store.deliveries(&a.id).unwrap()[0];
        assert_eq!(s.state, DeliveryStatus::Delivered);
        assert_eq!(s.attempts, 2, "two sends, two recorded attempts");

        // A late 2xx from a taken-over claim still marks a pending row delivered.
        let b = alert(t(1), 80);
        store.insert_with_outbox(&b, &sinks(&["s"])).unwrap();
        let late = store.claim_due("s", t(100), 10, LEASE).unwrap().remove(0);
        let _current = store.claim_due("s", t(131), 10, LEASE).unwrap().remove(0);
        delivered(&store, &late, 201, t(132));
        let s = &store.deliveries(&b.id).unwrap()[0];
        assert_eq!(
            (s.state, s.attempts, s.last_status),
            (DeliveryStatus::Delivered, 1, Some(201))
        );
    }

    #[test]
    fn a_row_whose_alert_does_not_decode_fails_instead_of_blocking_the_queue() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let a = alert(t(0), 80);
        let b = alert(t(1), 80);
        store.insert_with_outbox(&a, &sinks(&["s"])).unwrap();
        store.insert_with_outbox(&b, &sinks(&["s"])).unwrap();
        store
            .lock()
            .unwrap()
            .execute("UPDATE alerts SET body = '{}' WHERE id = ?1", [&a.id])
            .unwrap();
        let due = store.claim_due("s", t(5), 10, LEASE).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].alert.id, b.id);
        let s = &store.deliveries(&a.id).unwrap()[0];
        assert_eq!(s.state, DeliveryStatus::Failed);
        assert!(s.last_error.as_deref().unwrap_or("").contains(&a.id));
    }

    #[test]
    fn outbox_rows_survive_reopening_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("alerts.db");
        let a = alert(t(0), 80);
        {
            let store = SqliteAlertStore::open(&path).unwrap();
            store.insert_with_outbox(&a, &sinks(&["s"])).unwrap();
        }
        let store = SqliteAlertStore::open(&path).unwrap();
        assert_eq!(store.depth().unwrap(), 1);
        assert_eq!(store.claim_due("s", t(0), 10, LEASE).unwrap()[0].alert, a);
    }
}
