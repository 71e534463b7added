//! Continuous ingest's stream state and closed windows on PostgreSQL: the same tables, commit
//! and listing as SQLite (`store/streams.rs`), so replicas sharing the database agree.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use rusqlite::types::Value;

use super::super::streams::{
    StoredStream, StreamCommit, StreamStore, WindowPage, WindowQuery, decode_cursor, entity_key,
    list_sql, page,
};
use super::{PgStore, StoreError, insert_alert, pg, to_u64};

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

    fn commit_stream(&self, c: &StreamCommit<'_>) -> Result<Option<u64>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let expected = i64::try_from(c.expected).unwrap_or(i64::MAX);
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // The row lock this takes holds every other replica's commit until this one ends; the
        // version check then makes theirs miss.
        let moved = if c.expected == 0 {
            tx.execute(
                "INSERT INTO streams (detector, version, book, updated_at_ms) VALUES ($1, 1, $2, $3)
                 ON CONFLICT (detector) DO NOTHING",
                &[&c.detector, &c.book, &now],
            )
        } else {
            tx.execute(
                "UPDATE streams SET version = version + 1, book = $2, updated_at_ms = $3
                 WHERE detector = $1 AND version = $4",
                &[&c.detector, &c.book, &now, &expected],
            )
        }
        .map_err(pg)?;
        if moved == 0 {
            return Ok(None);
        }
        let insert = tx
            .prepare(
                "INSERT INTO windows (detector, start_s, entity, closed_at_ms, is_anomaly, body)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .map_err(pg)?;
        for w in c.windows {
            tx.execute(
                &insert,
                &[
                    &c.detector,
                    &w.start,
                    &entity_key(w.entity.as_deref()),
                    &w.closed_at.timestamp_millis(),
                    &w.is_anomaly,
                    &w.body,
                ],
            )
            .map_err(pg)?;
        }
        if let Some((alert, sinks)) = c.alert {
            insert_alert(&mut tx, alert, sinks)?;
        }
        tx.commit().map_err(pg)?;
        Ok(Some(c.expected + 1))
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
