//! Alert rows written before the stored body had a version still read, field by field, and are rewritten only when they change.
//!
//! The SQLite database in `tests/fixtures/alerts-v1.sqlite` was written by the code before
//! the change; the PostgreSQL side of the same checks is in `pg_store.rs`.

use netsentinel::store::alerts::SqliteAlertStore;

/// A copy of the fixture database (opening it writes WAL files and may migrate, and the
/// fixture must stay as the old code left it).
fn fixture_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.db");
    std::fs::copy(crate::alerts_v1::SQLITE, &path).unwrap();
    (dir, path)
}

#[test]
fn a_database_written_before_the_body_format_version_reads_field_by_field() {
    let (_dir, path) = fixture_copy();
    let store = SqliteAlertStore::open(&path).unwrap();
    crate::alerts_v1::assert_reads_every_alert(&store);
    crate::alerts_v1::assert_the_owed_delivery_decodes(&store);
}

#[test]
fn old_rows_stay_as_written_until_an_acknowledgement_rewrites_one_in_the_current_format() {
    let (_dir, path) = fixture_copy();
    let store = SqliteAlertStore::open(&path).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    crate::alerts_v1::assert_only_an_acknowledged_row_is_rewritten(&store, |id| {
        raw.query_row("SELECT body FROM alerts WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    });
}
