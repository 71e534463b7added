//! Continuous ingest's stream state and closed windows on PostgreSQL: the same tables, commit
//! and listing as SQLite (`store/streams.rs`), so replicas sharing the database agree. A call
//! holds a transaction-scoped advisory lock on its detector's stream from reading the version
//! to committing, so replicas take turns on one stream.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use rusqlite::types::Value;

use super::super::alerts::Raised;
use super::super::streams::{
    Committed, LockedStream, StoredStream, StreamStore, UnderLock, WindowPage, WindowQuery,
    decode_cursor, entity_key, list_sql, page,
};
use super::{PgStore, StoreError, insert_alert, pg, to_u64};

/// The first key of the advisory locks on streams (the second is the detector's name hashed):
/// "nstr".
const STREAM_LOCK_CLASS: i32 = 0x6e73_7472;

impl StreamStore for PgStore {
    fn stream(&self, detector: &str) -> Result<Option<StoredStream>, StoreError> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT version, book FROM streams WHERE detector = $1",
                &[&detector],
            )
            .map_err(pg)?;
        Ok(row.map(|r| StoredStream {
            version: to_u64(r.get(0)),
            book: r.get(1),
        }))
    }

    fn commit_locked(
        &self,
        detector: &str,
        known: Option<u64>,
        work: UnderLock<'_>,
    ) -> Result<Option<Committed>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // Held until this transaction ends: the other replicas' calls on this stream wait here
        // (the row may not exist yet, so the lock is on the detector's name, not the row).
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&STREAM_LOCK_CLASS, &detector],
        )
        .map_err(pg)?;
        let version = tx
            .query_opt(
                "SELECT version FROM streams WHERE detector = $1",
                &[&detector],
            )
            .map_err(pg)?
            .map_or(0, |r| to_u64(r.get(0)));
        let book = match version {
            0 => None,
            v if known == Some(v) => None,
            _ => Some(
                tx.query_one("SELECT book FROM streams WHERE detector = $1", &[&detector])
                    .map_err(pg)?
                    .get(0),
            ),
        };
        let Some(c) = work(LockedStream { version, book }) else {
            return Ok(None);
        };
        let now = Utc::now().timestamp_millis();
        let next = version + 1;
        tx.execute(
            "INSERT INTO streams (detector, version, book, updated_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (detector) DO UPDATE SET version = excluded.version,
               book = excluded.book, updated_at_ms = excluded.updated_at_ms",
            &[
                &detector,
                &i64::try_from(next).unwrap_or(i64::MAX),
                &c.book,
                &now,
            ],
        )
        .map_err(pg)?;
        let insert = tx
            .prepare(
                "INSERT INTO windows (detector, start_s, entity, closed_at_ms, is_anomaly, body)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .map_err(pg)?;
        for w in &c.windows {
            tx.execute(
                &insert,
                &[
                    &detector,
                    &w.start,
                    &entity_key(w.entity.as_deref()),
                    &w.closed_at.timestamp_millis(),
                    &w.is_anomaly,
                    &w.body,
                ],
            )
            .map_err(pg)?;
        }
        let raised = match &c.alert {
            Some((alert, sinks)) => insert_alert(&mut tx, alert, sinks)?,
            None => Raised::new(),
        };
        if let Some(key) = c.key {
            super::idempotency::insert_pg(&mut tx, &key(&raised))?;
        }
        tx.commit().map_err(pg)?;
        Ok(Some(Committed {
            version: next,
            raised,
        }))
    }

    fn windows(&self, q: &WindowQuery) -> Result<WindowPage, StoreError> {
        let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
        let (sql, args) = list_sql(q, cursor.as_ref(), |i| format!("${i}"));
        let args: Vec<Box<dyn ToSql + Sync>> = args
            .into_iter()
            .map(|v| -> Box<dyn ToSql + Sync> {
                match v {
                    Value::Integer(i) => Box::new(i),
                    Value::Text(s) => Box::new(s),
                    other => Box::new(format!("{other:?}")),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        let rows = self.conn()?.query(&sql, &refs).map_err(pg)?;
        let rows = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        Ok(page(rows, q.limit))
    }

    fn prune_windows(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError> {
        self.conn()?
            .execute(
                "DELETE FROM windows WHERE (detector, start_s, entity) IN
                   (SELECT detector, start_s, entity FROM windows WHERE closed_at_ms < $1
                    ORDER BY closed_at_ms LIMIT $2)",
                &[&before.timestamp_millis(), &(max as i64)],
            )
            .map_err(pg)
    }

    fn delete_stream(&self, detector: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        tx.execute("DELETE FROM streams WHERE detector = $1", &[&detector])
            .map_err(pg)?;
        tx.execute("DELETE FROM windows WHERE detector = $1", &[&detector])
            .map_err(pg)?;
        tx.commit().map_err(pg)
    }
}
