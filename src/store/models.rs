//! The `ModelStore` trait: where model versions and the active-version pointer live.
//!
//! Two backends implement it: [`ModelFiles`](super::model_files::ModelFiles) (one file per
//! version in the data directory, one process) and
//! [`PgStore`](super::postgres::PgStore) (rows in PostgreSQL, shared by several replicas).
//! The store never looks inside the bytes; the detector's own format version and checksum
//! catch corruption.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::StoreError;
use super::model_files::ModelFiles;

/// Called from a background thread when the active version may have changed elsewhere.
pub type ChangeHook = Box<dyn Fn() + Send + Sync>;

/// Versioned model bytes plus the active pointer. Calls block; async callers use `spawn_blocking`.
pub trait ModelStore: Send + Sync + 'static {
    /// A version number never handed out before, by this process or any other sharing the store.
    fn next_version(&self) -> Result<u64, StoreError>;
    /// Stores `bytes` as `version` durably, then prunes old versions (a failed prune is logged,
    /// not returned). Refuses a version that exists or was quarantined.
    fn save(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError>;
    /// Makes `version` the active one; it must exist.
    fn set_active(&self, version: u64) -> Result<(), StoreError>;
    /// The active version; `None` when none was ever set.
    fn active(&self) -> Result<Option<u64>, StoreError>;
    /// Versions kept (not quarantined), ascending.
    fn versions(&self) -> Result<Vec<u64>, StoreError>;
    /// The bytes of `version`, or [`StoreError::ModelNotFound`].
    fn read(&self, version: u64) -> Result<Vec<u8>, StoreError>;
    /// Sets a version that does not decode aside: never listed or loaded again, number never reused.
    fn quarantine(&self, version: u64) -> Result<(), StoreError>;
    /// How many of the newest versions pruning keeps (besides the active one).
    fn keep(&self) -> usize;
    /// True when other processes may change the active version, so each replica must follow
    /// the store rather than only its own fits and rollbacks.
    fn shared(&self) -> bool {
        false
    }
    /// Starts a background signal that calls `on_change` whenever another process may have
    /// changed the active version, until `stop` is set; false when the store has none (then
    /// polling alone keeps replicas in step).
    fn watch_active(&self, on_change: ChangeHook, stop: Arc<AtomicBool>) -> bool {
        let _ = (on_change, stop);
        false
    }
}

impl ModelStore for ModelFiles {
    fn next_version(&self) -> Result<u64, StoreError> {
        ModelFiles::next_version(self)
    }
    fn save(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        ModelFiles::save(self, version, bytes)
    }
    fn set_active(&self, version: u64) -> Result<(), StoreError> {
        ModelFiles::set_active(self, version)
    }
    fn active(&self) -> Result<Option<u64>, StoreError> {
        ModelFiles::active(self)
    }
    fn versions(&self) -> Result<Vec<u64>, StoreError> {
        ModelFiles::versions(self)
    }
    fn read(&self, version: u64) -> Result<Vec<u8>, StoreError> {
        ModelFiles::read(self, version)
    }
    fn quarantine(&self, version: u64) -> Result<(), StoreError> {
        ModelFiles::quarantine(self, version)
    }
    fn keep(&self) -> usize {
        ModelFiles::keep(self)
    }
}
