//! Named detectors: their settings (the `detectors` table beside the alerts, in SQLite or
//! PostgreSQL) and where each one's model versions live.
//!
//! The store keeps a detector's settings as an opaque JSON text; `service::detectors` owns
//! their shape and checks them. The detector `default` needs no row: without one it has v1's
//! settings, and its models are the ones v1 always kept (`<data_dir>/models`, or the
//! PostgreSQL rows whose `detector` is `'default'`). Every other detector's models live in
//! `<data_dir>/detectors/<name>/models` (file store) or in rows tagged with its name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::StoreError;
use super::alerts::SqliteAlertStore;
use super::model_files::ModelFiles;
use super::models::ModelStore;

/// The detector the v1 paths serve; it always exists.
pub const DEFAULT_DETECTOR: &str = "default";

/// Where the file store keeps the models of detectors other than `default`.
pub const DETECTORS_DIR: &str = "detectors";

/// A detector's settings as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDetector {
    pub name: String,
    /// The settings, JSON as `service::detectors` wrote them.
    pub spec: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// SQLite step: the detectors table, and the detector of each alert (old rows: `default`).
pub(super) const MIGRATION: &str = "
    CREATE TABLE detectors (
        name          TEXT PRIMARY KEY NOT NULL,
        spec          TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    ALTER TABLE alerts ADD COLUMN detector TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX alerts_by_detector ON alerts (detector, created_at_ns DESC, id DESC);";

/// Where detector settings live; the same database as the alerts. Calls block.
pub trait DetectorStore: Send + Sync + 'static {
    /// Every stored detector, by name.
    fn detectors(&self) -> Result<Vec<StoredDetector>, StoreError>;
    /// The detector called `name`, if stored.
    fn detector(&self, name: &str) -> Result<Option<StoredDetector>, StoreError>;
    /// Creates or replaces `name`'s settings; true when it was created.
    fn put_detector(&self, name: &str, spec: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Deletes `name`'s settings; false when there were none.
    fn delete_detector(&self, name: &str) -> Result<bool, StoreError>;
}

/// Opens each detector's model store, and deletes one's models with the detector.
pub trait DetectorModels: Send + Sync + 'static {
    /// The model store of `detector`.
    fn open(&self, detector: &str) -> Result<Arc<dyn ModelStore>, StoreError>;
    /// Deletes every model version of `detector` (never called for `default`).
    fn remove(&self, detector: &str) -> Result<(), StoreError>;
}

pub(super) fn time_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl DetectorStore for SqliteAlertStore {
    fn detectors(&self) -> Result<Vec<StoredDetector>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT name, spec, created_at_ms, updated_at_ms FROM detectors ORDER BY name",
        )?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn detector(&self, name: &str) -> Result<Option<StoredDetector>, StoreError> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT name, spec, created_at_ms, updated_at_ms FROM detectors WHERE name = ?1",
                [name],
                row,
            )
            .optional()?)
    }

    fn put_detector(&self, name: &str, spec: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let ms = at.timestamp_millis();
        let updated = tx.execute(
            "UPDATE detectors SET spec = ?2, updated_at_ms = ?3 WHERE name = ?1",
            params![name, spec, ms],
        )?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO detectors (name, spec, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?3)",
                params![name, spec, ms],
            )?;
        }
        tx.commit()?;
        Ok(updated == 0)
    }

    fn delete_detector(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        Ok(conn.execute("DELETE FROM detectors WHERE name = ?1", [name])? > 0)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredDetector> {
    Ok(StoredDetector {
        name: r.get(0)?,
        spec: r.get(1)?,
        created_at: time_ms(r.get(2)?),
        updated_at: time_ms(r.get(3)?),
    })
}

/// Model files per detector: `default` in `<data_dir>/models` (where v1 kept them, so an
/// existing data directory works unchanged), the others in `<data_dir>/detectors/<name>/models`.
#[derive(Debug, Clone)]
pub struct DetectorModelFiles {
    data_dir: PathBuf,
    keep: usize,
}

impl DetectorModelFiles {
    pub fn new(data_dir: &Path, keep: usize) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            keep,
        }
    }

    /// The directory whose `models/` holds `detector`'s versions.
    pub fn home(&self, detector: &str) -> PathBuf {
        if detector == DEFAULT_DETECTOR {
            self.data_dir.clone()
        } else {
            self.data_dir.join(DETECTORS_DIR).join(detector)
        }
    }
}

impl DetectorModels for DetectorModelFiles {
    fn open(&self, detector: &str) -> Result<Arc<dyn ModelStore>, StoreError> {
        Ok(Arc::new(ModelFiles::open(&self.home(detector), self.keep)?))
    }

    /// Renames the detector's directory aside in one step (so a crash leaves either all of
    /// it or none under its name), then deletes it.
    fn remove(&self, detector: &str) -> Result<(), StoreError> {
        debug_assert_ne!(detector, DEFAULT_DETECTOR);
        let home = self.home(detector);
        let parent = self.data_dir.join(DETECTORS_DIR);
        let trash = parent.join(format!(".{detector}.{}.deleted", Uuid::new_v4().simple()));
        match fs::rename(&home, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "set aside",
                    path: home,
                    source,
                });
            }
        }
        fs::remove_dir_all(&trash).map_err(|source| StoreError::Io {
            op: "remove",
            path: trash,
            source,
        })
    }
}
