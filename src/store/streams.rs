//! Continuous ingest's durable state: per detector, its stream (the open windows, as the window
//! engine's snapshot bytes, with a version that every commit bumps) and its closed, scored
//! windows; beside the alerts, in SQLite or PostgreSQL (`postgres/streams.rs`).
//!
//! One transaction ([`StreamStore::commit_locked`]) holds a detector's stream for the whole
//! call: it locks the stream (SQLite: `BEGIN IMMEDIATE` on the one connection; PostgreSQL: a
//! transaction-scoped advisory lock on the detector), reads the stored version (and the
//! snapshot, when the caller's copy is not that version), lets the caller fold and score, and
//! writes everything the call did: the new stream state, the windows it closed, the alert they
//! raised with its outbox rows, and the request's idempotency key. Replicas therefore take
//! turns instead of racing: none folds over a state another is about to replace, and nothing
//! has to be retried. A window is closed by exactly one commit.
//!
//! Windows closed while the detector has no active model are kept **pending**
//! (`pending_windows`, one chunk per commit, opaque bytes the service layer encodes) by the
//! same commit; the first commit that has a model reads them under the lock, scores them and
//! deletes them, so each is scored and stored once, on whichever replica.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::StoreError;
use super::alerts::{Alert, Raised, SqliteAlertStore};
use super::idempotency::KeyRecord;
use super::tx::Transact;

/// A detector's stream as stored: the engine's snapshot and the version of this state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStream {
    pub version: u64,
    pub book: Vec<u8>,
}

/// A closed window as stored: the key and what listings filter on, and its result as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    /// Window start, Unix seconds.
    pub start: i64,
    /// The entity, when the stream is grouped.
    pub entity: Option<String>,
    /// Tells apart windows of one start and entity: 0 for a Zeek window (one per start and
    /// entity); for a `records` detector, where each record is its own window and an entity
    /// may send several records in one second, a number unique in the detector's stream.
    pub seq: i64,
    pub closed_at: DateTime<Utc>,
    pub is_anomaly: bool,
    /// The window's result (score, severity, explanation, values, `closed_at`), written and
    /// read by the service layer: its JSON as the API shows it, or (since the compact form)
    /// an encoding that leaves out what the columns hold (`~`…, never `{`).
    pub body: String,
}

/// A detector's stream as the locked transaction found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockedStream {
    /// The stored version (0: none is stored).
    pub version: u64,
    /// The stored snapshot; read only when the caller's copy is not at `version` (and `None`
    /// when nothing is stored).
    pub book: Option<Vec<u8>>,
    /// How many windows are pending (closed while the detector had no model).
    pub pending: u64,
    /// The pending chunks, oldest first; read only when the caller asked for them.
    pub chunks: Vec<Vec<u8>>,
}

/// Windows kept pending by one commit: how many, and their encoding (the service layer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChunk {
    pub windows: u64,
    pub body: Vec<u8>,
}

/// Everything one ingest or flush call commits, together.
#[derive(Default)]
pub struct StreamCommit {
    pub book: Vec<u8>,
    pub windows: Vec<StoredWindow>,
    /// The alerts the closed windows raised (one per batch scored), with the sinks owed a
    /// delivery.
    pub alerts: Vec<(Alert, Vec<String>)>,
    /// The request's idempotency key with its answer: kept with the effect or not at all.
    pub key: Option<KeyAfter>,
    /// Windows this call closed without a model, kept pending.
    pub pending: Option<PendingChunk>,
    /// The pending chunks the lock handed over were scored (they are among `windows`):
    /// delete them.
    pub scored_pending: bool,
}

/// The request's idempotency key with its answer, written from what the alert did to the
/// store (the incidents it opened or updated), inside the same transaction.
pub type KeyAfter = Box<dyn FnOnce(&Raised) -> KeyRecord + Send>;

/// What a locked commit wrote: the stream's new version, and what the alert did to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub version: u64,
    pub raised: Raised,
    /// Windows pending after the commit.
    pub pending: u64,
}

/// What the caller of [`StreamStore::commit_locked`] does under the lock: from the stream as
/// stored, the commit, or `None` to write nothing (the caller keeps its own error).
pub type UnderLock<'a> = &'a mut dyn FnMut(LockedStream) -> Option<StreamCommit>;

/// Which closed windows to list: starts in `[since, until)`, one entity, anomalies only.
#[derive(Debug, Clone, Default)]
pub struct WindowQuery {
    pub detector: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub entity: Option<String>,
    pub only_anomalies: bool,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// A page of windows (bodies as [`StoredWindow::body`], by start then entity) and the cursor
/// of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPage {
    pub windows: Vec<String>,
    pub next_cursor: Option<String>,
}

/// A stored window as listed: its body, and the columns a compact body leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedWindow {
    /// Window start, Unix seconds.
    pub start: i64,
    /// The entity column (`''` for none).
    pub entity: String,
    pub closed_at_ms: i64,
    pub body: String,
}

/// A page of [`ListedWindow`]s and the cursor of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPage {
    pub windows: Vec<ListedWindow>,
    pub next_cursor: Option<String>,
}

/// Where streams and closed windows live; the same database as the alerts. Calls block.
pub trait StreamStore: Transact + Send + Sync + 'static {
    /// The stored stream of `detector`, if any.
    fn stream(&self, detector: &str) -> Result<Option<StoredStream>, StoreError>;
    /// Locks `detector`'s stream for one transaction, hands `work` the stored version (and the
    /// snapshot, unless `known` is that version), how many windows are pending (and their
    /// chunks, with `load_pending`), and commits what `work` returns; returns the
    /// new version and what its alert did, or `None` when `work` returned `None` (nothing
    /// written). Other calls on
    /// the same stream, in this process or another replica, wait for the lock.
    fn commit_locked(
        &self,
        detector: &str,
        known: Option<u64>,
        load_pending: bool,
        work: UnderLock<'_>,
    ) -> Result<Option<Committed>, StoreError> {
        let mut committed = None;
        self.transact(&mut |tx| {
            // The row may not exist yet: the lock is on the detector's name.
            tx.lock_stream(detector)?;
            let version = tx.stream_version(detector)?;
            let book = match version {
                0 => None,
                v if known == Some(v) => None,
                _ => Some(tx.stream_book(detector)?),
            };
            let pending = tx.pending_count(detector)?;
            let chunks = if load_pending && pending > 0 {
                tx.pending_chunks(detector)?
            } else {
                Vec::new()
            };
            let handed = !chunks.is_empty();
            let Some(c) = work(LockedStream {
                version,
                book,
                pending,
                chunks,
            }) else {
                return Ok(false);
            };
            let next = version + 1;
            let seq = i64::try_from(next).unwrap_or(i64::MAX);
            tx.put_stream(&super::tx::StreamRow {
                detector,
                version: seq,
                book: &c.book,
                updated_at_ms: Utc::now().timestamp_millis(),
            })?;
            tx.insert_windows(detector, &c.windows)?;
            let mut left = pending;
            if c.scored_pending && handed {
                tx.delete_pending(detector)?;
                left = 0;
            }
            if let Some(chunk) = c.pending.as_ref().filter(|p| p.windows > 0) {
                tx.insert_pending(&super::tx::PendingRow {
                    detector,
                    seq,
                    windows: i64::try_from(chunk.windows).unwrap_or(i64::MAX),
                    body: &chunk.body,
                })?;
                left += chunk.windows;
            }
            let mut raised = Raised::new();
            for (alert, sinks) in &c.alerts {
                raised.extend(super::tx::insert_alert(tx, alert, sinks)?);
            }
            if let Some(key) = c.key {
                tx.insert_key(&key(&raised))?;
            }
            committed = Some(Committed {
                version: next,
                raised,
                pending: left,
            });
            Ok(true)
        })?;
        Ok(committed)
    }
    /// Closed windows matching the query, by start then entity, with the columns their bodies
    /// are read with.
    fn listed_windows(&self, q: &WindowQuery) -> Result<ListedPage, StoreError>;
    /// Closed windows matching the query, by start then entity: their bodies as stored.
    fn windows(&self, q: &WindowQuery) -> Result<WindowPage, StoreError> {
        let page = self.listed_windows(q)?;
        Ok(WindowPage {
            windows: page.windows.into_iter().map(|w| w.body).collect(),
            next_cursor: page.next_cursor,
        })
    }
    /// Deletes up to `max` of the windows closed before `before`; returns how many went.
    fn prune_windows(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError>;
    /// Deletes a detector's stream, windows and pending windows (with the detector).
    fn delete_stream(&self, detector: &str) -> Result<(), StoreError>;
    /// How many windows `detector` keeps pending (closed while it had no model).
    fn pending(&self, detector: &str) -> Result<u64, StoreError>;
}

/// SQLite step: the stream state and the closed windows.
pub(super) const MIGRATION: &str = "
    CREATE TABLE streams (
        detector      TEXT PRIMARY KEY NOT NULL,
        version       INTEGER NOT NULL,
        book          BLOB NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE windows (
        detector     TEXT NOT NULL,
        start_s      INTEGER NOT NULL,
        entity       TEXT NOT NULL,
        closed_at_ms INTEGER NOT NULL,
        is_anomaly   INTEGER NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (detector, start_s, entity)
    );
    CREATE INDEX windows_by_closed ON windows (closed_at_ms);";

/// SQLite step: a window's `seq` joins its key (records ingest stores one window per record,
/// several per second and entity). SQLite cannot change a key in place: the table is rebuilt,
/// every row kept (a Zeek window's `seq` is 0).
pub(super) const SEQ_MIGRATION: &str = "
    CREATE TABLE windows_seq (
        detector     TEXT NOT NULL,
        start_s      INTEGER NOT NULL,
        entity       TEXT NOT NULL,
        seq          INTEGER NOT NULL DEFAULT 0,
        closed_at_ms INTEGER NOT NULL,
        is_anomaly   INTEGER NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (detector, start_s, entity, seq)
    );
    INSERT INTO windows_seq (detector, start_s, entity, seq, closed_at_ms, is_anomaly, body)
        SELECT detector, start_s, entity, 0, closed_at_ms, is_anomaly, body FROM windows;
    DROP TABLE windows;
    ALTER TABLE windows_seq RENAME TO windows;
    CREATE INDEX windows_by_closed ON windows (closed_at_ms);";

/// SQLite step: windows kept pending while a detector has no model (one row per commit that
/// kept some; `windows` counts them, `body` is the service layer's encoding).
pub(super) const PENDING_MIGRATION: &str = "
    CREATE TABLE pending_windows (
        detector TEXT NOT NULL,
        seq      INTEGER NOT NULL,
        windows  INTEGER NOT NULL,
        body     BLOB NOT NULL,
        PRIMARY KEY (detector, seq)
    );";

/// The entity column: `''` for an ungrouped stream (a key column cannot be NULL).
pub(super) fn entity_key(entity: Option<&str>) -> &str {
    entity.unwrap_or("")
}

/// Where a page ended: the last (start, entity, seq) shown.
pub(super) type Cursor = (i64, String, i64);

/// A page cursor: the last (start, entity, seq) shown, as `start:hex(entity)`, with `:seq`
/// when `seq` is not 0 (so a Zeek stream's cursors read as before).
pub(super) fn encode_cursor((start, entity, seq): &Cursor) -> String {
    let mut out = format!("{start}:");
    for b in entity.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    if *seq != 0 {
        out.push_str(&format!(":{seq}"));
    }
    out
}

pub(super) fn decode_cursor(s: &str) -> Result<Cursor, StoreError> {
    if s.len() > 2 * 256 + 48 {
        return Err(StoreError::BadCursor);
    }
    let (start, rest) = s.split_once(':').ok_or(StoreError::BadCursor)?;
    let start: i64 = start.parse().map_err(|_| StoreError::BadCursor)?;
    let (hex, seq) = match rest.split_once(':') {
        Some((hex, seq)) => (hex, seq.parse().map_err(|_| StoreError::BadCursor)?),
        None => (rest, 0),
    };
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(StoreError::BadCursor);
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| StoreError::BadCursor))
        .collect::<Result<Vec<u8>, _>>()?;
    let entity = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    Ok((start, entity, seq))
}

/// The listing query (SQLite placeholders `?`, numbered in order) and its arguments; one row
/// more than `limit` tells whether another page follows.
pub(super) fn list_sql(
    q: &WindowQuery,
    cursor: Option<&Cursor>,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<Value>) {
    let mut args: Vec<Value> = vec![Value::Text(q.detector.clone())];
    let mut sql = format!(
        "SELECT start_s, entity, seq, closed_at_ms, body FROM windows WHERE detector = {}",
        placeholder(1)
    );
    let arg = |sql: &mut String, clause: &str, v: Value, args: &mut Vec<Value>| {
        args.push(v);
        sql.push_str(&clause.replace('#', &placeholder(args.len())));
    };
    for (bound, clause) in [
        (q.since, " AND start_s >= #"),
        (q.until, " AND start_s < #"),
    ] {
        if let Some(t) = bound {
            arg(&mut sql, clause, Value::Integer(t.timestamp()), &mut args);
        }
    }
    if let Some(e) = &q.entity {
        arg(
            &mut sql,
            " AND entity = #",
            Value::Text(e.clone()),
            &mut args,
        );
    }
    if q.only_anomalies {
        sql.push_str(" AND is_anomaly");
    }
    if let Some((start, entity, seq)) = cursor {
        args.push(Value::Integer(*start));
        args.push(Value::Text(entity.clone()));
        args.push(Value::Integer(*seq));
        sql.push_str(&format!(
            " AND (start_s, entity, seq) > ({}, {}, {})",
            placeholder(args.len() - 2),
            placeholder(args.len() - 1),
            placeholder(args.len())
        ));
    }
    let limit = i64::try_from(q.limit.max(1).saturating_add(1)).unwrap_or(i64::MAX);
    arg(
        &mut sql,
        " ORDER BY start_s, entity, seq LIMIT #",
        Value::Integer(limit),
        &mut args,
    );
    (sql, args)
}

/// A listing's row: `start_s, entity, seq, closed_at_ms, body`.
pub(super) type ListedRow = (i64, String, i64, i64, String);

/// A page from the listing's rows (one more than `limit` when another page follows).
pub(super) fn page(rows: Vec<ListedRow>, limit: usize) -> ListedPage {
    let limit = limit.max(1);
    let more = rows.len() > limit;
    let mut windows = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for (start, entity, seq, closed_at_ms, body) in rows.into_iter().take(limit) {
        last = Some((start, entity.clone(), seq));
        windows.push(ListedWindow {
            start,
            entity,
            closed_at_ms,
            body,
        });
    }
    ListedPage {
        windows,
        next_cursor: more.then(|| last.as_ref().map(encode_cursor)).flatten(),
    }
}

impl StreamStore for SqliteAlertStore {
    fn stream(&self, detector: &str) -> Result<Option<StoredStream>, StoreError> {
        let conn = self.lock()?;
        let row: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT version, book FROM streams WHERE detector = ?1",
                [detector],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(version, book)| StoredStream {
            version: u64::try_from(version).unwrap_or(0),
            book,
        }))
    }

    fn listed_windows(&self, q: &WindowQuery) -> Result<ListedPage, StoreError> {
        let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
        let (sql, args) = list_sql(q, cursor.as_ref(), |i| format!("?{i}"));
        let conn = self.lock()?;
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(rows, q.limit))
    }

    fn prune_windows(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n = conn.execute(
            "DELETE FROM windows WHERE rowid IN
               (SELECT rowid FROM windows WHERE closed_at_ms < ?1 ORDER BY closed_at_ms LIMIT ?2)",
            params![
                before.timestamp_millis(),
                i64::try_from(max).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(n as u64)
    }

    fn delete_stream(&self, detector: &str) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM streams WHERE detector = ?1", [detector])?;
        tx.execute("DELETE FROM windows WHERE detector = ?1", [detector])?;
        tx.execute(super::sql::DELETE_PENDING, [detector])?;
        tx.commit()?;
        Ok(())
    }

    fn pending(&self, detector: &str) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n: i64 = conn.query_row(super::sql::PENDING_COUNT, [detector], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: i64, entity: &str, anomalous: bool) -> StoredWindow {
        StoredWindow {
            start,
            entity: Some(entity.to_owned()),
            seq: 0,
            closed_at: Utc::now(),
            is_anomaly: anomalous,
            body: format!("{{\"start\":{start},\"entity\":\"{entity}\"}}"),
        }
    }

    /// Every stored window of the detector `d` (up to 100).
    fn stored_windows(store: &SqliteAlertStore) -> Vec<String> {
        let query = WindowQuery {
            detector: "d".into(),
            limit: 100,
            ..WindowQuery::default()
        };
        store.windows(&query).unwrap().windows
    }

    /// Every window of the detector `d`, `limit` a page, following the cursors.
    fn every_page(store: &SqliteAlertStore, limit: usize, only_anomalies: bool) -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .windows(&WindowQuery {
                    detector: "d".into(),
                    only_anomalies,
                    limit,
                    cursor: cursor.take(),
                    ..WindowQuery::default()
                })
                .unwrap();
            seen.extend(page.windows);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return seen,
            }
        }
    }

    /// Commits `book` and windows `w` under the lock; returns the new version and what the
    /// lock found.
    fn commit(
        store: &SqliteAlertStore,
        known: Option<u64>,
        book: &[u8],
        w: &[StoredWindow],
    ) -> (Option<u64>, LockedStream) {
        let mut found = None;
        let version = store
            .commit_locked("d", known, false, &mut |locked| {
                found = Some(locked);
                Some(StreamCommit {
                    book: book.to_vec(),
                    windows: w.to_vec(),
                    ..StreamCommit::default()
                })
            })
            .unwrap();
        (version.map(|c| c.version), found.unwrap())
    }

    #[test]
    fn a_locked_commit_reads_the_snapshot_only_when_the_caller_lacks_that_version() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        assert_eq!(store.stream("d").unwrap(), None);
        // What a caller is sent: the snapshot's version, and its book only when it lacks it.
        let locked = |version: u64, book: Option<&[u8]>| LockedStream {
            version,
            book: book.map(<[u8]>::to_vec),
            ..LockedStream::default()
        };
        let first = commit(&store, None, b"a", &[window(0, "x", false)]);
        assert_eq!(first, (Some(1), locked(0, None)));
        // A caller holding version 1 is not sent the snapshot; one holding another is.
        let second = commit(&store, Some(1), b"b", &[window(60, "x", false)]);
        assert_eq!(second, (Some(2), locked(1, None)));
        let third = commit(&store, Some(1), b"c", &[window(60, "y", true)]);
        assert_eq!(third, (Some(3), locked(2, Some(b"b"))));
        let (_, found) = commit(&store, None, b"d", &[]);
        assert_eq!(found.book.as_deref(), Some(&b"c"[..]));
        let s = store.stream("d").unwrap().unwrap();
        assert_eq!((s.version, s.book.as_slice()), (4, &b"d"[..]));
        let all = stored_windows(&store);
        assert_eq!(all.len(), 3, "{all:?}");
        // Work that gives up writes nothing.
        assert_eq!(
            store
                .commit_locked("d", None, false, &mut |_| None)
                .unwrap(),
            None
        );
        assert_eq!(store.stream("d").unwrap().unwrap().version, 4);
        // A window closed twice is refused, and the commit leaves nothing behind.
        let twice = store.commit_locked("d", Some(4), false, &mut |_| {
            Some(StreamCommit {
                book: b"e".to_vec(),
                windows: vec![window(0, "x", false)],
                ..StreamCommit::default()
            })
        });
        assert!(twice.is_err());
        let s = store.stream("d").unwrap().unwrap();
        assert_eq!((s.version, s.book.as_slice()), (4, &b"d"[..]));
    }

    #[test]
    fn a_kept_key_commits_with_the_stream_or_not_at_all() {
        use super::super::idempotency::IdempotencyStore;
        use super::super::idempotency::tests::sample;
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let keyed = |key: &str, book: &[u8], w: Vec<StoredWindow>| {
            let (key, book) = (sample(key, Utc::now(), Some(b"{}")), book.to_vec());
            store.commit_locked("d", None, false, &mut |_| {
                Some(StreamCommit {
                    book: book.clone(),
                    windows: w.clone(),
                    key: Some(Box::new({
                        let key = key.clone();
                        move |_: &Raised| key
                    })),
                    ..StreamCommit::default()
                })
            })
        };
        let first = keyed("k1", b"a", vec![window(0, "x", false)]).unwrap();
        assert_eq!(first.map(|c| c.version), Some(1));
        let kept = store.key_record(&sample("k1", Utc::now(), None).scope, "k1");
        assert!(kept.unwrap().is_some());
        // The same key again (another replica's repeat that ran meanwhile): refused, and
        // neither its stream state nor its windows are kept.
        let again = keyed("k1", b"b", vec![window(60, "x", false)]);
        assert!(matches!(again, Err(StoreError::KeyTaken(_))), "{again:?}");
        let s = store.stream("d").unwrap().unwrap();
        assert_eq!((s.version, s.book.as_slice()), (1, &b"a"[..]));
        let all = stored_windows(&store);
        assert_eq!(all.len(), 1, "{all:?}");
    }

    #[test]
    fn pages_cover_every_window_once_with_filters() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let ws: Vec<StoredWindow> = (0..25)
            .map(|i| window(60 * (i / 5), &format!("h{}", i % 5), i % 3 == 0))
            .collect();
        commit(&store, None, b"", &ws);
        for (only_anomalies, expected) in [(false, 25), (true, 9)] {
            let seen = every_page(&store, 4, only_anomalies);
            let mut unique = seen.clone();
            unique.dedup();
            assert_eq!((seen.len(), unique.len()), (expected, expected));
        }
        let one = store
            .windows(&WindowQuery {
                detector: "d".into(),
                entity: Some("h2".into()),
                since: DateTime::from_timestamp(60, 0),
                until: DateTime::from_timestamp(180, 0),
                limit: 100,
                ..WindowQuery::default()
            })
            .unwrap();
        assert_eq!(one.windows.len(), 2);
        assert!(matches!(
            store.windows(&WindowQuery {
                detector: "d".into(),
                cursor: Some("zz".into()),
                limit: 1,
                ..WindowQuery::default()
            }),
            Err(StoreError::BadCursor)
        ));
    }

    #[test]
    fn many_windows_are_stored_each_once_in_groups_and_the_rest() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        // Two whole groups of a statement and some left over, ungrouped and grouped windows.
        let n = 2 * super::super::sql::WINDOWS_PER_INSERT + 5;
        let ws: Vec<StoredWindow> = (0..n as i64)
            .map(|i| StoredWindow {
                entity: (i % 2 == 0).then(|| format!("h{i}")),
                ..window(60 * i, "", i % 7 == 0)
            })
            .collect();
        commit(&store, None, b"a", &ws);
        let want: Vec<String> = ws.iter().map(|w| w.body.clone()).collect();
        assert_eq!(every_page(&store, 50, false), want);
        let anomalous: Vec<String> = ws
            .iter()
            .filter(|w| w.is_anomaly)
            .map(|w| w.body.clone())
            .collect();
        assert_eq!(every_page(&store, 50, true), anomalous);
        // One window stored again, inside a whole group: the commit is refused, nothing of it
        // is kept.
        let mut again: Vec<StoredWindow> = (0..n as i64)
            .map(|i| window(60 * (n as i64 + i), "new", false))
            .collect();
        again[10] = ws[3].clone();
        let twice = store.commit_locked("d", Some(1), false, &mut |_| {
            Some(StreamCommit {
                book: b"b".to_vec(),
                windows: again.clone(),
                ..StreamCommit::default()
            })
        });
        assert!(twice.is_err());
        assert_eq!(every_page(&store, 50, false), want);
        assert_eq!(store.stream("d").unwrap().unwrap().version, 1);
    }

    #[test]
    fn pruning_deletes_only_windows_closed_before_the_cut() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let now = Utc::now();
        let ws: Vec<StoredWindow> = (0..10)
            .map(|i| StoredWindow {
                closed_at: now - chrono::Duration::days(i),
                ..window(60 * i, "x", false)
            })
            .collect();
        commit(&store, None, b"", &ws);
        let cut = now - chrono::Duration::hours(36);
        assert_eq!(store.prune_windows(cut, 3).unwrap(), 3);
        assert_eq!(store.prune_windows(cut, 100).unwrap(), 5);
        assert_eq!(store.prune_windows(cut, 100).unwrap(), 0);
        let left = store
            .windows(&WindowQuery {
                detector: "d".into(),
                limit: 100,
                ..WindowQuery::default()
            })
            .unwrap();
        assert_eq!(left.windows.len(), 2);
    }

    #[test]
    fn cursors_round_trip() {
        for (s, e, q) in [(0, "", 0), (-5, "10.0.0.1", 7), (i64::MAX, "é:x", i64::MIN)] {
            let c = (s, e.to_owned(), q);
            assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        }
        // A cursor written before `seq` existed reads as seq 0.
        assert_eq!(decode_cursor("5:61").unwrap(), (5, "a".to_owned(), 0));
        assert!(decode_cursor("5:61:x").is_err());
    }

    #[test]
    fn windows_of_one_start_and_entity_differ_by_seq_and_page_apart() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let w: Vec<StoredWindow> = (0..5)
            .map(|seq| StoredWindow {
                seq,
                body: format!("{{\"seq\":{seq}}}"),
                ..window(7, "x", false)
            })
            .collect();
        commit(&store, None, b"a", &w);
        // The same key again is refused: nothing is stored twice.
        let again = store.commit_locked("d", Some(1), false, &mut |_| {
            Some(StreamCommit {
                book: b"b".to_vec(),
                windows: w[..1].to_vec(),
                ..StreamCommit::default()
            })
        });
        assert!(again.is_err());
        let seen = every_page(&store, 2, false);
        let want: Vec<String> = w.iter().map(|w| w.body.clone()).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn pending_chunks_are_counted_handed_over_only_when_asked_and_deleted_once_scored() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let keep = |windows: u64, body: &[u8]| {
            let body = body.to_vec();
            store
                .commit_locked("d", None, false, &mut |found| {
                    assert!(found.chunks.is_empty(), "handed over unasked");
                    Some(StreamCommit {
                        pending: Some(PendingChunk {
                            windows,
                            body: body.clone(),
                        }),
                        ..StreamCommit::default()
                    })
                })
                .unwrap()
                .unwrap()
        };
        assert_eq!(keep(3, b"a").pending, 3);
        assert_eq!(keep(4, b"b").pending, 7);
        assert_eq!(store.pending("d").unwrap(), 7);
        assert_eq!(store.pending("other").unwrap(), 0);
        // A call that gives up keeps nothing of its own, and the chunks stay.
        let mut seen = None;
        let none = store.commit_locked("d", None, true, &mut |found| {
            seen = Some((found.pending, found.chunks.clone()));
            None
        });
        assert_eq!(none.unwrap(), None);
        assert_eq!(seen, Some((7, vec![b"a".to_vec(), b"b".to_vec()])));
        assert_eq!(store.pending("d").unwrap(), 7);
        // Scored: the chunks go with the commit that stores their windows.
        let done = store
            .commit_locked("d", None, true, &mut |found| {
                assert_eq!(found.chunks.len(), 2);
                Some(StreamCommit {
                    windows: vec![window(0, "x", false)],
                    scored_pending: true,
                    ..StreamCommit::default()
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(done.pending, 0);
        assert_eq!(store.pending("d").unwrap(), 0);
        assert_eq!(stored_windows(&store).len(), 1);
        keep(2, b"c");
        store.delete_stream("d").unwrap();
        assert_eq!(store.pending("d").unwrap(), 0);
    }
}
