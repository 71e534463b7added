//! Detectors on PostgreSQL: their settings (`detectors`), and each one's model versions (rows
//! of `models` and `model_active` tagged with its name; `default` owns the rows of earlier builds).
//!
//! A change of settings sends `NOTIFY netsentinel_detectors` in its transaction, as a move of
//! a model pointer sends `netsentinel_model` (with the detector's name as payload); the one
//! LISTEN thread of [`ModelStore::watch_active`] wakes the follower for both.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Utc};

use super::super::detectors::{
    DEFAULT_DETECTOR, DetectorModels, DetectorStore, StoredDetector, time_ms,
};
use super::super::models::{ChangeHook, ModelStore};
use super::{MODEL_CHANNEL, PgStore, StoreError, pg, to_u64, version_arg};

/// Channel on which a change of detector settings is announced.
pub const DETECTOR_CHANNEL: &str = "netsentinel_detectors";

impl DetectorStore for PgStore {
    fn detectors(&self) -> Result<Vec<StoredDetector>, StoreError> {
        let rows = self.rows(
            "SELECT name, spec, created_at_ms, updated_at_ms FROM detectors ORDER BY name",
            &[],
        )?;
        Ok(rows.iter().map(stored).collect())
    }

    fn detector(&self, name: &str) -> Result<Option<StoredDetector>, StoreError> {
        let row = self.row(
            "SELECT name, spec, created_at_ms, updated_at_ms FROM detectors WHERE name = $1",
            &[&name],
        )?;
        Ok(row.as_ref().map(stored))
    }

    fn put_detector(&self, name: &str, spec: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let ms = at.timestamp_millis();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // xmax = 0 only on a freshly inserted row: tells create from replace in one statement.
        let row = tx
            .query_one(
                "INSERT INTO detectors (name, spec, created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec,
                                                  updated_at_ms = EXCLUDED.updated_at_ms
                 RETURNING (xmax = 0)",
                &[&name, &spec, &ms],
            )
            .map_err(pg)?;
        tx.execute("SELECT pg_notify($1, $2)", &[&DETECTOR_CHANNEL, &name])
            .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(row.get(0))
    }

    fn delete_detector(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        let n = tx
            .execute("DELETE FROM detectors WHERE name = $1", &[&name])
            .map_err(pg)?;
        tx.execute("SELECT pg_notify($1, $2)", &[&DETECTOR_CHANNEL, &name])
            .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(n > 0)
    }
}

fn stored(r: &postgres::Row) -> StoredDetector {
    StoredDetector {
        name: r.get(0),
        spec: r.get(1),
        created_at: time_ms(r.get(2)),
        updated_at: time_ms(r.get(3)),
    }
}

/// Opens the model store of each detector on one shared [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgDetectorModels(pub Arc<PgStore>);

impl DetectorModels for PgDetectorModels {
    fn open(&self, detector: &str) -> Result<Arc<dyn ModelStore>, StoreError> {
        Ok(Arc::new(PgModels {
            store: Arc::clone(&self.0),
            detector: detector.to_owned(),
        }))
    }

    fn remove(&self, detector: &str) -> Result<(), StoreError> {
        self.0
            .delete_detector_rows(detector, &["model_active", "models"])
    }
}

/// One detector's model versions in the shared store.
#[derive(Debug)]
pub struct PgModels {
    store: Arc<PgStore>,
    detector: String,
}

impl PgStore {
    /// The default detector's model store (v1's), on this store.
    pub(super) fn models_of<'a>(&'a self, detector: &'a str) -> Models<'a> {
        Models {
            store: self,
            detector,
        }
    }
}

/// The model queries, scoped to one detector.
pub(super) struct Models<'a> {
    store: &'a PgStore,
    detector: &'a str,
}

impl Models<'_> {
    pub(super) fn next_version(&self) -> Result<u64, StoreError> {
        let row = self
            .store
            .conn()?
            .query_one("SELECT nextval('model_version_seq')", &[])
            .map_err(pg)?;
        Ok(to_u64(row.get(0)))
    }

    pub(super) fn save(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let v = version_arg(version)?;
        let inserted = self.store.conn()?.execute(
            "INSERT INTO models (version, bytes, detector) VALUES ($1, $2, $3)",
            &[&v, &bytes, &self.detector],
        );
        super::unless_taken(inserted, || StoreError::VersionExists(version))?;
        tracing::info!(
            version,
            detector = self.detector,
            size = bytes.len(),
            "saved model in PostgreSQL"
        );
        match self.prune() {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, keep = self.store.keep, "pruned old model versions")
            }
            Err(error) => tracing::warn!(%error, "could not prune old model versions"),
        }
        Ok(())
    }

    /// Deletes this detector's versions beyond the newest `keep` (never the active one, never
    /// quarantined rows).
    fn prune(&self) -> Result<u64, StoreError> {
        let keep = i64::try_from(self.store.keep).unwrap_or(i64::MAX);
        self.store.exec(
            "DELETE FROM models
                 WHERE detector = $2 AND NOT corrupt
                   AND version NOT IN (SELECT version FROM model_active WHERE detector = $2)
                   AND version NOT IN (SELECT version FROM models
                                       WHERE detector = $2 AND NOT corrupt
                                       ORDER BY version DESC LIMIT $1)",
            &[&keep, &self.detector],
        )
    }

    pub(super) fn set_active(&self, version: u64) -> Result<(), StoreError> {
        let v = version_arg(version)?;
        let mut conn = self.store.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM models WHERE version = $1 AND detector = $2 AND NOT corrupt
                 FOR SHARE",
                &[&v, &self.detector],
            )
            .map_err(pg)?;
        if exists.is_none() {
            return Err(StoreError::ModelNotFound(version));
        }
        tx.execute(
            "INSERT INTO model_active (detector, version) VALUES ($1, $2)
             ON CONFLICT (detector) DO UPDATE SET version = EXCLUDED.version",
            &[&self.detector, &v],
        )
        .map_err(pg)?;
        // Delivered to listeners only when (and if) the transaction commits.
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&MODEL_CHANNEL, &self.detector],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)
    }

    pub(super) fn active(&self) -> Result<Option<u64>, StoreError> {
        let row = self.store.row(
            "SELECT version FROM model_active WHERE detector = $1",
            &[&self.detector],
        )?;
        Ok(row.map(|r| to_u64(r.get(0))))
    }

    pub(super) fn versions(&self) -> Result<Vec<u64>, StoreError> {
        let rows = self.store.rows(
            "SELECT version FROM models WHERE detector = $1 AND NOT corrupt ORDER BY version",
            &[&self.detector],
        )?;
        Ok(rows.into_iter().map(|r| to_u64(r.get(0))).collect())
    }

    pub(super) fn read(&self, version: u64) -> Result<Vec<u8>, StoreError> {
        let v = version_arg(version)?;
        self.store
            .row(
                "SELECT bytes FROM models WHERE version = $1 AND detector = $2 AND NOT corrupt",
                &[&v, &self.detector],
            )?
            .map(|r| r.get(0))
            .ok_or(StoreError::ModelNotFound(version))
    }

    pub(super) fn quarantine(&self, version: u64) -> Result<(), StoreError> {
        let v = version_arg(version)?;
        let n = self.store.exec(
            "UPDATE models SET corrupt = true
                 WHERE version = $1 AND detector = $2 AND NOT corrupt",
            &[&v, &self.detector],
        )?;
        if n == 0 {
            return Err(StoreError::ModelNotFound(version));
        }
        tracing::warn!(
            version,
            detector = self.detector,
            "quarantined model version in PostgreSQL"
        );
        Ok(())
    }
}

impl ModelStore for PgModels {
    fn next_version(&self) -> Result<u64, StoreError> {
        self.store.models_of(&self.detector).next_version()
    }
    fn save(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.store.models_of(&self.detector).save(version, bytes)
    }
    fn set_active(&self, version: u64) -> Result<(), StoreError> {
        self.store.models_of(&self.detector).set_active(version)
    }
    fn active(&self) -> Result<Option<u64>, StoreError> {
        self.store.models_of(&self.detector).active()
    }
    fn versions(&self) -> Result<Vec<u64>, StoreError> {
        self.store.models_of(&self.detector).versions()
    }
    fn read(&self, version: u64) -> Result<Vec<u8>, StoreError> {
        self.store.models_of(&self.detector).read(version)
    }
    fn quarantine(&self, version: u64) -> Result<(), StoreError> {
        self.store.models_of(&self.detector).quarantine(version)
    }
    fn keep(&self) -> usize {
        self.store.keep
    }
    fn shared(&self) -> bool {
        true
    }
    fn watch_active(&self, on_change: ChangeHook, stop: Arc<AtomicBool>) -> bool {
        self.store.watch_active(on_change, stop)
    }
}

/// The detector whose rows the v1 [`ModelStore`] of a bare [`PgStore`] reads and writes.
pub(super) const V1_DETECTOR: &str = DEFAULT_DETECTOR;
