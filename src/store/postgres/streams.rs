//! Continuous ingest's stream state and closed windows on PostgreSQL: the same tables, commit
//! and listing as SQLite (`store/streams.rs`), so replicas sharing the database agree. A call
//! holds a transaction-scoped advisory lock on its detector's stream from reading the version
//! to committing, so replicas take turns on one stream.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use rusqlite::types::Value;

use super::super::streams::{
    ListedPage, StoredStream, StreamStore, WindowQuery, decode_cursor, list_sql, page,
};
use super::{PgStore, StoreError, pg, to_u64};

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

    fn listed_windows(&self, q: &WindowQuery) -> Result<ListedPage, StoreError> {
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
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        Ok(page(rows, q.limit))
    }

    fn prune_windows(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError> {
        self.conn()?
            .execute(
                "DELETE FROM windows WHERE (detector, start_s, entity, seq) IN
                   (SELECT detector, start_s, entity, seq FROM windows WHERE closed_at_ms < $1
                    ORDER BY closed_at_ms LIMIT $2)",
                &[&before.timestamp_millis(), &(max as i64)],
            )
            .map_err(pg)
    }

    fn delete_stream(&self, detector: &str) -> Result<(), StoreError> {
        self.delete_detector_rows(detector, &["streams", "windows", "pending_windows"])
    }

    fn pending(&self, detector: &str) -> Result<u64, StoreError> {
        let row = self
            .conn()?
            .query_one(
                "SELECT COALESCE(SUM(windows), 0)::BIGINT FROM pending_windows WHERE detector = $1",
                &[&detector],
            )
            .map_err(pg)?;
        Ok(to_u64(row.get(0)))
    }
}
