//! Suppression rules on PostgreSQL: the `suppressions` table (`V6__suppressions.sql`), with
//! the statements the SQLite store runs (`store::suppressions`).

use chrono::{DateTime, Utc};

use super::super::sql;
use super::super::suppressions::{
    ACTIVE, ALL, DELETE, INSERT, StoredSuppression, SuppressionStore, from_columns,
};
use super::{PgStore, StoreError};

fn stored(r: &postgres::Row) -> StoredSuppression {
    from_columns(r.get(0), r.get(1), r.get(2), r.get(3))
}

impl SuppressionStore for PgStore {
    fn suppressions(&self) -> Result<Vec<StoredSuppression>, StoreError> {
        Ok(self.rows(ALL, &[])?.iter().map(stored).collect())
    }

    fn active_suppressions(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredSuppression>, StoreError> {
        let ms = now.timestamp_millis();
        Ok(self
            .rows(&sql::postgres(ACTIVE), &[&ms])?
            .iter()
            .map(stored)
            .collect())
    }

    fn insert_suppression(&self, rule: &StoredSuppression) -> Result<(), StoreError> {
        let created = rule.created_at.timestamp_millis();
        let expires = rule.expires_at.map(|t| t.timestamp_millis());
        self.exec(
            &sql::postgres(INSERT),
            &[&rule.id, &created, &expires, &rule.body],
        )?;
        Ok(())
    }

    fn delete_suppression(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec(&sql::postgres(DELETE), &[&id])? > 0)
    }
}
