//! SQLite's WAL checkpoint off the request path.
//!
//! By default SQLite checkpoints inside a commit: the commit that takes the WAL past 1,000
//! pages also copies the WAL into the database file and syncs it, on the caller's thread (7 %
//! of the server's CPU on durable ingest, all of it inside an ingest call). Here the store's
//! connection does no automatic checkpoint (`wal_autocheckpoint = 0`); each commit nudges a
//! background thread instead (a commit hook, one `try_send`), which lets a burst of commits
//! pass ([`PAUSE`]), waits for the commit in progress to end (it takes the write lock and
//! gives it back at once) and then checkpoints on its own connection: `PASSIVE`, so it never
//! waits for a writer or a reader and a request never waits for it. Once a checkpoint has copied
//! the whole WAL, the next commit writes the WAL from its start again, so it stays as large as
//! what is committed between two checkpoints; while frames are left (a reader holding old
//! ones) it tries again, a little later each time. When readers or writers keep it from
//! finishing and the WAL passes [`MAX_WAL_PAGES`], the thread runs a `RESTART` checkpoint,
//! which waits (up to the busy timeout) for writers: the bound then holds at the cost of one
//! wait.
//!
//! Durability does not change: a commit is durable when its WAL frames are synced
//! (`synchronous = FULL` on the store's connection); the checkpoint connection syncs the
//! database file as a checkpoint always does. The thread ends when the store's connection is
//! dropped (the hook, and the sender it holds, go with it); closing the last connection
//! checkpoints what is left, as SQLite always does.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long the thread lets commits pass after a nudge before it checkpoints.
pub(super) const PAUSE: Duration = Duration::from_millis(20);
/// WAL pages (4 KiB by default) past which a checkpoint that could not finish is followed by
/// a `RESTART` one (waits for writers): 64 Ki pages, 256 MiB.
pub(super) const MAX_WAL_PAGES: i64 = 1 << 16;
/// How long a checkpoint waits for a lock (only `RESTART` waits).
const BUSY: Duration = Duration::from_secs(5);

/// Moves the checkpoint of the database at `path` (open in WAL mode on `conn`, the store's
/// connection) to a background thread. Nothing changes for a database that is not on disk in
/// WAL mode (`on_disk` false: in memory).
pub(super) fn take_over(conn: &Connection, path: &Path, on_disk: bool) -> rusqlite::Result<()> {
    if !on_disk {
        return Ok(());
    }
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let own = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    own.busy_timeout(BUSY)?;
    own.pragma_update(None, "synchronous", "FULL")?;
    own.pragma_update(None, "wal_autocheckpoint", 0)?;
    let (nudge, nudges) = sync_channel::<()>(1);
    let name = path.display().to_string();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || run(&own, &nudges, &name))
        .map_err(|e| {
            rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(format!(
                "the checkpoint thread: {e}"
            ))))
        })?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.commit_hook(Some(nudger(nudge)));
    Ok(())
}

/// The commit hook: a nudge for the thread (one pending is enough), never a rollback.
fn nudger(nudge: SyncSender<()>) -> impl FnMut() -> bool + Send + 'static {
    move || {
        // Full: a nudge is pending already; disconnected: the thread is gone (it only ends
        // when this hook is dropped).
        let _ = nudge.try_send(());
        false
    }
}

/// What a checkpoint reported: whether it was kept from finishing (busy), the WAL's pages,
/// and how many of them are in the database now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Checkpointed {
    pub(super) busy: bool,
    pub(super) log: i64,
    pub(super) copied: i64,
}

pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpointed {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

/// The thread: after each burst of commits, a `PASSIVE` checkpoint (a `RESTART` one when the
/// WAL is past its bound and could not be copied whole), tried again later while frames are
/// left (a reader holding old ones); ends when the store is dropped.
fn run(conn: &Connection, nudges: &Receiver<()>, name: &str) {
    while nudges.recv().is_ok() {
        let mut pause = PAUSE;
        loop {
            // Let the commit that nudged finish, and the commits right behind it pass.
            match nudges.recv_timeout(pause) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // The hook runs as a commit starts to write: wait for it to end (the write lock,
            // taken and given back at once; a request waits for that at most), so its frames
            // are in the WAL to copy.
            let _ = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK");
            match checkpoint(conn, "PASSIVE") {
                Ok(c) if c.copied >= c.log => break,
                Ok(c) if c.log > MAX_WAL_PAGES => {
                    if let Err(e) = checkpoint(conn, "RESTART") {
                        tracing::warn!(database = name, error = %e, wal_pages = c.log, "WAL checkpoint (RESTART) failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(database = name, error = %e, "WAL checkpoint failed");
                }
            }
            // Frames left: again, a little later each time (up to a second).
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_bytes(path: &Path) -> u64 {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// Commits checkpoint on the thread, not in the commit: the WAL is copied into the
    /// database and written from its start again, so it stays about one burst of commits
    /// large however much is committed; and every commit is kept.
    #[test]
    fn the_wal_is_checkpointed_off_the_commit_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        take_over(&conn, &path, true).unwrap();
        let auto: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "no checkpoint inside a commit");
        conn.execute("CREATE TABLE t (x BLOB)", []).unwrap();
        let blob = vec![7u8; 64 * 1024];
        // Six bursts of eight commits of 1 MB each; after each burst the thread copies the
        // WAL into the database file (waited for here: the file grows by the burst), and the
        // next commit writes the WAL from its start again.
        let mut most = 0;
        for burst in 1..=6u64 {
            for _ in 0..8 {
                let tx = conn.unchecked_transaction().unwrap();
                for _ in 0..16 {
                    tx.execute("INSERT INTO t (x) VALUES (?1)", [&blob])
                        .unwrap();
                }
                tx.commit().unwrap();
                most = most.max(wal_bytes(&path));
            }
            let want = burst * (8 << 20);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::fs::metadata(&path).unwrap().len() < want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "burst {burst} not checkpointed"
                );
                std::thread::sleep(PAUSE);
            }
            // The file is as large as the burst once the thread's checkpoint has written its
            // last page; wait for that checkpoint to end too (a PASSIVE one here is busy while
            // it runs, and finds nothing left to copy after it), or the next burst would
            // append to this WAL instead of writing it from its start.
            loop {
                let c = checkpoint(&conn, "PASSIVE").unwrap();
                if !c.busy && c.copied >= c.log {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "burst {burst}: the checkpoint did not end"
                );
                std::thread::sleep(PAUSE);
            }
        }
        // Without the thread the WAL of these commits (no automatic checkpoint) would reach
        // 48 MB; with it, about one burst.
        assert!(most < 20 << 20, "the WAL grew to {most} bytes");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 6 * 8 * 16);
    }

    #[test]
    fn an_in_memory_database_keeps_its_own_ways() {
        let conn = Connection::open_in_memory().unwrap();
        take_over(&conn, Path::new(":memory:"), false).unwrap();
        let auto: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 1000);
    }
}
