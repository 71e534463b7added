//! Idempotency keys on PostgreSQL: the `idempotency_keys` table (`V3__idempotency.sql`), with
//! the statements the SQLite store runs (`store::idempotency`).

use chrono::{DateTime, Utc};

use super::super::alerts::nanos_clamped;
use super::super::idempotency::{
    INSERT, IdempotencyStore, KeyRecord, KeyScope, PRUNE, Row, SELECT, record,
};
use super::super::sql;
use super::{PgStore, StoreError, pg};

/// Keeps `record` inside a PostgreSQL transaction that also holds the request's effect.
pub(in crate::store) fn insert_pg(
    tx: &mut postgres::Transaction<'_>,
    r: &KeyRecord,
) -> Result<(), StoreError> {
    let row = Row::of(r);
    let inserted = tx.execute(
        &sql::postgres(INSERT),
        &[
            &r.scope.client,
            &r.scope.detector,
            &r.scope.operation,
            &r.key,
            &r.request_hash,
            &row.created_at_ns,
            &row.status,
            &r.answer.content_type,
            &row.headers,
            &r.answer.body,
            &row.body_len,
            &r.answer.body_sha256,
        ],
    );
    super::unless_taken(inserted, || StoreError::KeyTaken(r.key.clone()))
}

impl IdempotencyStore for PgStore {
    fn key_record(&self, scope: &KeyScope, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = self.row(
            &sql::postgres(SELECT),
            &[&scope.client, &scope.detector, &scope.operation, &key],
        )?;
        Ok(row.map(|r| {
            record(
                scope,
                key,
                r.get(0),
                r.get(1),
                i64::from(r.get::<_, i32>(2)),
                r.get(3),
                r.get::<_, &str>(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        }))
    }

    fn record_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        insert_pg(&mut tx, record)?;
        tx.commit().map_err(pg)
    }

    fn prune_keys(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError> {
        let before = nanos_clamped(before);
        self.exec(&sql::postgres(PRUNE), &[&before, &(max as i64)])
    }
}
