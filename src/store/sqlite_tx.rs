//! The SQLite side of [`super::tx`]: the alert database's write transaction.

use chrono::DateTime;
use rusqlite::{OptionalExtension, Params, Transaction, TransactionBehavior, params};

use super::alerts::{Alert, SqliteAlertStore, decode, open_incident_row_on};
use super::idempotency::KeyRecord;
use super::incidents::{IncidentRow, IncidentTx};
use super::streams::{StoredWindow, entity_key};
use super::tx::{Due, PendingRow, StoreTx, StreamRow, Transact, TxWork};
use super::{StoreError, idempotency, outbox, sql, unless_taken};

impl Transact for SqliteAlertStore {
    fn transact(&self, work: TxWork<'_>) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        // IMMEDIATE takes the write lock before reading: two changes (say two acks) cannot
        // both start from the same state, and another process on the same file waits here.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if work(&mut SqliteTx(&tx))? {
            tx.commit()?;
        }
        Ok(())
    }
}

/// A SQLite transaction as the logic written once over both backends uses it (see
/// [`super::tx`]); the write lock it holds is what keeps other writers out.
pub(super) struct SqliteTx<'a, 'c>(pub(super) &'a Transaction<'c>);

impl SqliteTx<'_, '_> {
    /// Runs one statement.
    fn exec(&mut self, statement: &str, params: impl Params) -> Result<(), StoreError> {
        self.0.execute(statement, params)?;
        Ok(())
    }
}

impl IncidentTx for SqliteTx<'_, '_> {
    fn open_incident_row(
        &mut self,
        detector: &str,
        entity: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        open_incident_row_on(self.0, detector, entity)
    }

    fn unresolved(
        &mut self,
        detector: Option<&str>,
        entity: Option<&str>,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql::UNRESOLVED_INCIDENTS)?;
        let rows = stmt.query_map(params![detector, entity], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (id, body) = row?;
            decode(&id, &body)
        })
        .collect()
    }

    fn insert(&mut self, row: &IncidentRow<'_>) -> Result<(), StoreError> {
        let inserted = self
            .0
            .prepare_cached(sql::INSERT_INCIDENT)?
            .execute(params![
                row.id,
                row.created_at_ns,
                row.severity,
                row.status,
                row.model_version,
                row.body,
                row.detector,
                row.entity,
                row.resolve_at_ns
            ]);
        unless_taken(inserted, || StoreError::DuplicateAlert(row.id.to_owned()))
    }

    fn update(&mut self, row: &IncidentRow<'_>) -> Result<(), StoreError> {
        self.0.prepare_cached(sql::UPDATE_ALERT)?.execute(params![
            row.severity,
            row.status,
            row.body,
            row.resolve_at_ns,
            row.resolved_at_ns,
            row.id
        ])?;
        Ok(())
    }

    fn next_seq(&mut self, alert_id: &str) -> Result<i64, StoreError> {
        Ok(self
            .0
            .prepare_cached(sql::NEXT_SEQ)?
            .query_row([alert_id], |r| r.get(0))?)
    }

    fn insert_deliveries(
        &mut self,
        e: &outbox::NewEvent<'_>,
        sinks: &[String],
    ) -> Result<(), StoreError> {
        outbox::insert_tx(self.0, e, sinks)
    }
}

impl StoreTx for SqliteTx<'_, '_> {
    fn alert_for_update(&mut self, id: &str) -> Result<Option<Alert>, StoreError> {
        let body: Option<String> = self
            .0
            .query_row(sql::ALERT_BODY, [id], |r| r.get(0))
            .optional()?;
        body.map(|body| decode(id, &body)).transpose()
    }

    fn set_status_body(&mut self, id: &str, status: &str, body: &str) -> Result<(), StoreError> {
        self.exec(sql::SET_STATUS_BODY, params![status, body, id])
    }

    fn quiet_incidents(&mut self, now_ns: i64, max: usize) -> Result<Vec<Due>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql::QUIET_INCIDENTS)?;
        let rows = stmt.query_map(params![now_ns, max as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        rows.map(|row| {
            let (id, body, at_ns) = row?;
            Ok((decode(&id, &body)?, DateTime::from_timestamp_nanos(at_ns)))
        })
        .collect()
    }

    fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        idempotency::insert_tx(self.0, key)
    }

    fn lock_stream(&mut self, _detector: &str) -> Result<(), StoreError> {
        // The transaction's IMMEDIATE write lock already holds every other writer off.
        Ok(())
    }

    fn stream_version(&mut self, detector: &str) -> Result<u64, StoreError> {
        let version: Option<i64> = self
            .0
            .query_row(sql::STREAM_VERSION, [detector], |r| r.get(0))
            .optional()?;
        Ok(version.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    fn stream_book(&mut self, detector: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .0
            .query_row(sql::STREAM_BOOK, [detector], |r| r.get(0))?)
    }

    fn put_stream(&mut self, s: &StreamRow<'_>) -> Result<(), StoreError> {
        self.exec(
            sql::PUT_STREAM,
            params![s.detector, s.version, s.book, s.updated_at_ms],
        )
    }

    fn insert_windows(&mut self, detector: &str, ws: &[StoredWindow]) -> Result<(), StoreError> {
        // Whole groups of rows a statement, the rest one by one: the same rows, the same
        // constraint (a window stored twice fails the statement, and so the transaction).
        let mut groups = ws.chunks_exact(sql::WINDOWS_PER_INSERT);
        if groups.len() > 0 {
            let mut insert = self.0.prepare_cached(sql::insert_windows())?;
            for group in &mut groups {
                insert.raw_bind_parameter(1, detector)?;
                for (row, w) in group.iter().enumerate() {
                    let p = 2 + 6 * row;
                    insert.raw_bind_parameter(p, w.start)?;
                    insert.raw_bind_parameter(p + 1, entity_key(w.entity.as_deref()))?;
                    insert.raw_bind_parameter(p + 2, w.seq)?;
                    insert.raw_bind_parameter(p + 3, w.closed_at.timestamp_millis())?;
                    insert.raw_bind_parameter(p + 4, w.is_anomaly)?;
                    insert.raw_bind_parameter(p + 5, w.body.as_str())?;
                }
                insert.raw_execute()?;
            }
        }
        let mut insert = self.0.prepare_cached(sql::INSERT_WINDOW)?;
        for w in groups.remainder() {
            insert.execute(params![
                detector,
                w.start,
                entity_key(w.entity.as_deref()),
                w.seq,
                w.closed_at.timestamp_millis(),
                w.is_anomaly,
                w.body
            ])?;
        }
        Ok(())
    }

    fn pending_count(&mut self, detector: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .0
            .query_row(sql::PENDING_COUNT, [detector], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn pending_chunks(&mut self, detector: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql::PENDING_CHUNKS)?;
        let rows = stmt.query_map([detector], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn insert_pending(&mut self, c: &PendingRow<'_>) -> Result<(), StoreError> {
        self.exec(
            sql::INSERT_PENDING,
            params![c.detector, c.seq, c.windows, c.body],
        )
    }

    fn delete_pending(&mut self, detector: &str) -> Result<(), StoreError> {
        self.exec(sql::DELETE_PENDING, [detector])
    }
}
