//! The PostgreSQL side of [`crate::store::tx`]: a pooled connection's transaction, with rows
//! locked `FOR UPDATE` and advisory locks where replicas must take turns.

use chrono::DateTime;
use postgres::types::ToSql;

use super::super::alerts::{Alert, decode};
use super::super::idempotency::KeyRecord;
use super::super::incidents::{IncidentRow, IncidentTx};
use super::super::outbox::{NewEvent, listed_twice};
use super::super::streams::{StoredWindow, entity_key};
use super::super::tx::{Due, PendingRow, StoreTx, StreamRow, Transact, TxWork};
use super::{PgStore, StoreError, pg, sql, to_u64, unless_taken};

/// The first key of the advisory locks on streams (the second is the detector's name hashed):
/// "nstr".
const STREAM_LOCK_CLASS: i32 = 0x6e73_7472;

impl Transact for PgStore {
    fn transact(&self, work: TxWork<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        if work(&mut PgTx(&mut tx))? {
            // synchronous_commit (on by default) makes the commit durable before it returns.
            tx.commit().map_err(pg)?;
        }
        Ok(())
    }
}

/// A PostgreSQL transaction as the logic written once over both backends uses it.
struct PgTx<'a, 'c>(&'a mut postgres::Transaction<'c>);

impl PgTx<'_, '_> {
    /// Runs one of the shared statements (`sql.rs`, its placeholders made PostgreSQL's).
    fn exec(&mut self, statement: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(), StoreError> {
        self.0
            .execute(&sql::postgres(statement), params)
            .map_err(pg)?;
        Ok(())
    }
}

impl IncidentTx for PgTx<'_, '_> {
    fn open_incident_row(
        &mut self,
        detector: &str,
        entity: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
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
        Ok(row.map(|r| (r.get(0), r.get(1))))
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

    fn insert(&mut self, row: &IncidentRow<'_>) -> Result<(), StoreError> {
        let inserted = self.0.execute(
            &sql::postgres(sql::INSERT_INCIDENT),
            &[
                &row.id,
                &row.created_at_ns,
                &row.severity,
                &row.status,
                &row.model_version,
                &row.body,
                &row.detector,
                &row.entity,
                &row.resolve_at_ns,
            ],
        );
        unless_taken(inserted, || StoreError::DuplicateAlert(row.id.to_owned()))
    }

    fn update(&mut self, row: &IncidentRow<'_>) -> Result<(), StoreError> {
        self.exec(
            sql::UPDATE_ALERT,
            &[
                &row.severity,
                &row.status,
                &row.body,
                &row.resolve_at_ns,
                &row.resolved_at_ns,
                &row.id,
            ],
        )
    }

    fn next_seq(&mut self, alert_id: &str) -> Result<i64, StoreError> {
        let seq: i32 = self
            .0
            .query_one(&sql::postgres(sql::NEXT_SEQ), &[&alert_id])
            .map_err(pg)?
            .get(0);
        Ok(seq.into())
    }

    fn insert_deliveries(&mut self, e: &NewEvent<'_>, sinks: &[String]) -> Result<(), StoreError> {
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

impl StoreTx for PgTx<'_, '_> {
    fn alert_for_update(&mut self, id: &str) -> Result<Option<Alert>, StoreError> {
        // FOR UPDATE: two replicas changing the alert at once (say two acks) cannot both start
        // from the same state.
        let row = self
            .0
            .query_opt(
                &format!("{} FOR UPDATE", sql::postgres(sql::ALERT_BODY)),
                &[&id],
            )
            .map_err(pg)?;
        row.map(|r| decode(id, r.get(0))).transpose()
    }

    fn set_status_body(&mut self, id: &str, status: &str, body: &str) -> Result<(), StoreError> {
        self.exec(sql::SET_STATUS_BODY, &[&status, &body, &id])
    }

    fn quiet_incidents(&mut self, now_ns: i64, max: usize) -> Result<Vec<Due>, StoreError> {
        // SKIP LOCKED: a replica resolving at the same time takes other incidents, and one
        // being updated by a raise is left for the next round.
        let rows = self
            .0
            .query(
                &format!(
                    "{} FOR UPDATE SKIP LOCKED",
                    sql::postgres(sql::QUIET_INCIDENTS)
                ),
                &[&now_ns, &(max as i64)],
            )
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let alert = decode(r.get(0), r.get(1))?;
                Ok((alert, DateTime::from_timestamp_nanos(r.get(2))))
            })
            .collect()
    }

    fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        super::idempotency::insert_pg(self.0, key)
    }

    fn lock_stream(&mut self, detector: &str) -> Result<(), StoreError> {
        // Held until this transaction ends: the other replicas' calls on this stream wait here.
        self.0
            .execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&STREAM_LOCK_CLASS, &detector],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn stream_version(&mut self, detector: &str) -> Result<u64, StoreError> {
        let row = self
            .0
            .query_opt(&sql::postgres(sql::STREAM_VERSION), &[&detector])
            .map_err(pg)?;
        Ok(row.map_or(0, |r| to_u64(r.get(0))))
    }

    fn stream_book(&mut self, detector: &str) -> Result<Vec<u8>, StoreError> {
        let row = self
            .0
            .query_one(&sql::postgres(sql::STREAM_BOOK), &[&detector])
            .map_err(pg)?;
        Ok(row.get(0))
    }

    fn put_stream(&mut self, s: &StreamRow<'_>) -> Result<(), StoreError> {
        self.exec(
            sql::PUT_STREAM,
            &[&s.detector, &s.version, &s.book, &s.updated_at_ms],
        )
    }

    fn insert_windows(&mut self, detector: &str, ws: &[StoredWindow]) -> Result<(), StoreError> {
        // A few thousand rows a statement, as arrays (one round trip each, not one per row):
        // the same rows, the same constraint (a window stored twice fails the statement, and
        // so the transaction).
        const ROWS: usize = 4096;
        if ws.is_empty() {
            return Ok(());
        }
        let insert = self.0.prepare(sql::INSERT_WINDOWS_PG).map_err(pg)?;
        for group in ws.chunks(ROWS) {
            let starts: Vec<i64> = group.iter().map(|w| w.start).collect();
            let entities: Vec<&str> = group
                .iter()
                .map(|w| entity_key(w.entity.as_deref()))
                .collect();
            let seqs: Vec<i64> = group.iter().map(|w| w.seq).collect();
            let closed: Vec<i64> = group
                .iter()
                .map(|w| w.closed_at.timestamp_millis())
                .collect();
            let anomalous: Vec<bool> = group.iter().map(|w| w.is_anomaly).collect();
            let bodies: Vec<&str> = group.iter().map(|w| w.body.as_str()).collect();
            self.0
                .execute(
                    &insert,
                    &[
                        &detector, &starts, &entities, &seqs, &closed, &anomalous, &bodies,
                    ],
                )
                .map_err(pg)?;
        }
        Ok(())
    }

    fn pending_count(&mut self, detector: &str) -> Result<u64, StoreError> {
        // SUM of BIGINT is NUMERIC on PostgreSQL: cast back.
        let row = self
            .0
            .query_one(
                "SELECT COALESCE(SUM(windows), 0)::BIGINT FROM pending_windows WHERE detector = $1",
                &[&detector],
            )
            .map_err(pg)?;
        Ok(to_u64(row.get(0)))
    }

    fn pending_chunks(&mut self, detector: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = self
            .0
            .query(&sql::postgres(sql::PENDING_CHUNKS), &[&detector])
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn insert_pending(&mut self, c: &PendingRow<'_>) -> Result<(), StoreError> {
        self.exec(
            sql::INSERT_PENDING,
            &[&c.detector, &c.seq, &c.windows, &c.body],
        )
    }

    fn delete_pending(&mut self, detector: &str) -> Result<(), StoreError> {
        self.exec(sql::DELETE_PENDING, &[&detector])
    }
}
