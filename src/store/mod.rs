//! Storage: model versions, the alert database and the webhook outbox, embedded or in PostgreSQL.
//!
//! `models` is the [`models::ModelStore`] trait; `model_files` implements it with one file per
//! model version on disk, written atomically, with an `ACTIVE` pointer; `alerts` is the
//! [`alerts::AlertStore`] trait and its embedded SQLite implementation; `outbox` is the webhook
//! delivery queue written in the same transaction as each alert; `postgres` implements all
//! three traits on one PostgreSQL database for several replicas; `sql` holds the statements both
//! database backends run, written once. All report failures as one
//! [`StoreError`], whose messages name the path or id involved and say what an operator can do
//! about it.

mod alert;
pub mod alerts;
mod checkpoint;
pub mod detectors;
pub mod idempotency;
pub mod incidents;
pub mod model_files;
pub mod models;
pub mod outbox;
pub mod postgres;
mod sql;
mod sqlite_tx;
mod stored_alert;
pub mod streams;
pub mod suppressions;
pub mod tx;

use std::io;
use std::path::PathBuf;

/// Why a storage operation failed.
///
/// `Display` names paths and ids because operators need them in logs; the API layer should log
/// the message and send clients only what [`StoreError::is_client_error`] says is theirs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem call failed; `op` says what we were doing.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The model directory cannot be created or written to.
    #[error(
        "model directory {path} is not writable: {source}; create it, give this process write \
         access, or point the data directory elsewhere"
    )]
    DirNotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// No file for this model version (never saved, pruned or quarantined).
    #[error("model version {0} has no file in the model directory; pick one of the kept versions")]
    ModelNotFound(u64),

    /// Saving would overwrite a version that exists or was quarantined.
    #[error(
        "model version {0} already exists or was quarantined; versions are never reused, \
         take a fresh number from next_version"
    )]
    VersionExists(u64),

    /// The `ACTIVE` pointer file does not hold a version number.
    #[error(
        "active-model pointer {path} is garbled (holds {content:?}); activate a version again \
         or delete the file"
    )]
    ActiveCorrupt { path: PathBuf, content: String },

    /// Every `u64` version number has been used.
    #[error("model version numbers are exhausted")]
    VersionOverflow,

    /// The alert database could not be opened, configured or migrated.
    #[error(
        "cannot open alert database {path}: {source}; check that the file is a netsentinel \
         database and that this process may write to it and its directory"
    )]
    DatabaseOpen {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The database was written by a newer netsentinel.
    #[error(
        "alert database {path} has schema version {found}, newer than this build understands \
         ({supported}); run a newer netsentinel or use another database file"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: usize,
    },

    /// A query on the alert database failed.
    #[error("alert database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// A stored alert row does not decode.
    #[error(
        "alert {id} in the database cannot be decoded: {source}; the row was written by an \
         incompatible version or edited by hand"
    )]
    Decode {
        id: String,
        #[source]
        source: serde_json::Error,
    },

    /// The alert handed to `insert` cannot be stored faithfully; a bug in the caller.
    #[error("alert {id} cannot be stored: {reason}")]
    InvalidAlert { id: String, reason: String },

    /// An alert with this id is already stored.
    #[error("alert {0} already exists")]
    DuplicateAlert(String),

    /// An idempotency key is kept already (another request with it committed first); the
    /// transaction that tried to keep it again was rolled back whole.
    #[error("idempotency key {0:?} is kept already")]
    KeyTaken(String),

    /// A pagination cursor that this store did not produce.
    #[error("malformed pagination cursor; pass next_cursor from the previous page unchanged")]
    BadCursor,

    /// A thread panicked while holding the database connection.
    #[error("the alert store is unusable after a panic while it was locked; restart the service")]
    Poisoned,

    /// `--database-url` does not parse as a PostgreSQL connection string (the URL itself is
    /// not quoted: it may hold a password).
    #[error(
        "NETSENTINEL_DATABASE_URL is not a PostgreSQL connection string ({0}); use \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    DatabaseUrl(String),

    /// The PostgreSQL server cannot be reached (down, restarting, network, pool exhausted).
    /// Transient: requests get 503 and the pool reconnects once the server is back.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),

    /// A PostgreSQL statement failed for a reason other than reachability.
    #[error("PostgreSQL error: {0}")]
    Postgres(String),

    /// The PostgreSQL schema could not be brought up to date at start.
    #[error(
        "cannot migrate the PostgreSQL schema: {0}; check that the role may create tables in \
         the database, and that no newer netsentinel migrated it"
    )]
    Migration(String),
}

impl StoreError {
    /// A stable, short code for metrics, logs and problem-details `code` fields.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::DirNotWritable { .. } => "dir_not_writable",
            Self::ModelNotFound(_) => "model_not_found",
            Self::VersionExists(_) => "version_exists",
            Self::ActiveCorrupt { .. } => "active_corrupt",
            Self::VersionOverflow => "version_overflow",
            Self::DatabaseOpen { .. } => "database_open",
            Self::SchemaTooNew { .. } => "schema_too_new",
            Self::Sqlite(_) => "database",
            Self::Decode { .. } => "decode",
            Self::InvalidAlert { .. } => "invalid_alert",
            Self::DuplicateAlert(_) => "duplicate_alert",
            Self::KeyTaken(_) => "key_taken",
            Self::BadCursor => "bad_cursor",
            Self::Poisoned => "poisoned",
            Self::DatabaseUrl(_) => "database_url",
            Self::Unavailable(_) => "unavailable",
            Self::Postgres(_) => "postgres",
            Self::Migration(_) => "migration",
        }
    }

    /// True when the error follows from what a client asked for (a malformed cursor, an unknown
    /// model version to activate or read), so the API can answer 4xx and show the message;
    /// everything else is a server fault whose message belongs in logs only.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::BadCursor | Self::ModelNotFound(_))
    }

    /// The message without filesystem paths, for answers an unauthenticated client may read
    /// (`/readyz`, the version list). The full `Display` belongs in the service log.
    pub fn without_paths(&self) -> String {
        match self {
            Self::Io { op, source, .. } => {
                format!(
                    "cannot {op} a file in the data directory: {}",
                    source.kind()
                )
            }
            Self::DirNotWritable { source, .. } => {
                format!("the model directory is not writable: {}", source.kind())
            }
            Self::ActiveCorrupt { .. } => {
                "the active-model pointer models/ACTIVE does not hold a version number".into()
            }
            Self::DatabaseOpen { .. } | Self::SchemaTooNew { .. } => {
                format!("the alert database cannot be used ({})", self.kind())
            }
            other => other.to_string(),
        }
    }
}

/// An SQLite INSERT's outcome, with a primary-key clash answered by `taken`'s error.
pub(crate) fn unless_taken(
    inserted: rusqlite::Result<usize>,
    taken: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(taken())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_only_the_ones_a_request_can_cause() {
        assert!(StoreError::BadCursor.is_client_error());
        assert!(StoreError::ModelNotFound(3).is_client_error());
        assert!(!StoreError::Poisoned.is_client_error());
        assert_eq!(StoreError::BadCursor.kind(), "bad_cursor");
    }

    #[test]
    fn messages_without_paths_name_none() {
        let path = PathBuf::from("/data/secret-place/models/ACTIVE");
        for e in [
            StoreError::Io {
                op: "read",
                path: path.clone(),
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            },
            StoreError::DirNotWritable {
                path: path.clone(),
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            },
            StoreError::ActiveCorrupt {
                path: path.clone(),
                content: "x".into(),
            },
        ] {
            assert!(e.to_string().contains("secret-place"));
            assert!(!e.without_paths().contains("secret-place"), "{e}");
        }
    }

    #[test]
    fn io_errors_name_the_path_and_the_operation() {
        let e = StoreError::Io {
            op: "read",
            path: PathBuf::from("/data/models/model-0000000001.bin"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let msg = e.to_string();
        assert!(msg.contains("read"), "{msg}");
        assert!(msg.contains("/data/models/model-0000000001.bin"), "{msg}");
    }
}
