//! Suppression rules as stored: the `suppressions` table beside the alerts (SQLite step 6,
//! `migrations/postgres/V6__suppressions.sql`).
//!
//! The store keeps a rule's JSON as `service::suppression` wrote it (the service owns its
//! shape and checks it), with its id, creation and expiry times as columns so the scoring path
//! reads the active rules in one indexed statement. Every replica reads the same rows, so a
//! rule takes effect on all of them from its commit on.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::StoreError;
use super::alerts::SqliteAlertStore;
use super::detectors::time_ms;

/// A rule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSuppression {
    pub id: String,
    /// The rule, JSON as `service::suppression` wrote it.
    pub body: String,
    pub created_at: DateTime<Utc>,
    /// `None`: the rule never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// SQLite step: the suppressions table, indexed on expiry for the active rules' read.
pub(super) const MIGRATION: &str = "
    CREATE TABLE suppressions (
        id            TEXT PRIMARY KEY NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,
        body          TEXT NOT NULL
    );
    CREATE INDEX suppressions_by_expiry ON suppressions (expires_at_ms);";

/// Every rule, oldest first.
pub(super) const ALL: &str =
    "SELECT id, body, created_at_ms, expires_at_ms FROM suppressions ORDER BY created_at_ms, id";
/// The rules in force at `?1` (ms): those that never expire or expire later.
pub(super) const ACTIVE: &str = "SELECT id, body, created_at_ms, expires_at_ms FROM suppressions
     WHERE expires_at_ms IS NULL OR expires_at_ms > ?1 ORDER BY created_at_ms, id";
pub(super) const INSERT: &str =
    "INSERT INTO suppressions (id, created_at_ms, expires_at_ms, body) VALUES (?1, ?2, ?3, ?4)";
pub(super) const DELETE: &str = "DELETE FROM suppressions WHERE id = ?1";

/// Where suppression rules live; the same database as the alerts. Calls block.
pub trait SuppressionStore: Send + Sync + 'static {
    /// Every stored rule, expired ones too, oldest first.
    fn suppressions(&self) -> Result<Vec<StoredSuppression>, StoreError>;
    /// The rules in force at `now` (not expired), oldest first: one indexed read.
    fn active_suppressions(&self, now: DateTime<Utc>)
    -> Result<Vec<StoredSuppression>, StoreError>;
    /// Stores a new rule.
    fn insert_suppression(&self, rule: &StoredSuppression) -> Result<(), StoreError>;
    /// Deletes a rule; false when there was none.
    fn delete_suppression(&self, id: &str) -> Result<bool, StoreError>;
}

pub(super) fn from_columns(
    id: String,
    body: String,
    created_ms: i64,
    expires_ms: Option<i64>,
) -> StoredSuppression {
    StoredSuppression {
        id,
        body,
        created_at: time_ms(created_ms),
        expires_at: expires_ms.map(time_ms),
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSuppression> {
    Ok(from_columns(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

impl SuppressionStore for SqliteAlertStore {
    fn suppressions(&self) -> Result<Vec<StoredSuppression>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(ALL)?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn active_suppressions(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredSuppression>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(ACTIVE)?;
        let rows = stmt.query_map([now.timestamp_millis()], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_suppression(&self, rule: &StoredSuppression) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            INSERT,
            params![
                rule.id,
                rule.created_at.timestamp_millis(),
                rule.expires_at.map(|t| t.timestamp_millis()),
                rule.body
            ],
        )?;
        Ok(())
    }

    fn delete_suppression(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        Ok(conn.execute(DELETE, [id])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_rules_leave_out_the_expired_and_deleted_ones() {
        let dir = std::env::temp_dir().join(format!("ns-supp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteAlertStore::open(&dir.join("alerts.db")).unwrap();
        let now = Utc::now();
        let rule = |id: &str, expires: Option<i64>| StoredSuppression {
            id: id.into(),
            body: format!("{{\"id\":\"{id}\"}}"),
            created_at: time_ms(now.timestamp_millis()),
            expires_at: expires.map(|s| time_ms(now.timestamp_millis() + s * 1000)),
        };
        for r in [rule("a", None), rule("b", Some(-1)), rule("c", Some(60))] {
            store.insert_suppression(&r).unwrap();
        }
        let ids = |v: Vec<StoredSuppression>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.suppressions().unwrap()), ["a", "b", "c"]);
        assert_eq!(ids(store.active_suppressions(now).unwrap()), ["a", "c"]);
        assert_eq!(store.suppressions().unwrap()[2], rule("c", Some(60)));
        assert!(store.delete_suppression("a").unwrap());
        assert!(!store.delete_suppression("a").unwrap());
        assert_eq!(ids(store.active_suppressions(now).unwrap()), ["c"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
