//! Idempotency keys: the first answer to a request sent with an `Idempotency-Key`, kept so that
//! a retry gets that answer again instead of running twice.
//!
//! A key is scoped by client (API-key identity, `""` without keys), detector and operation. Its
//! record holds a hash of what determined the answer (the request hash), the answer (status,
//! content type, extra headers, body bytes, or only the body's length and SHA-256 when it was
//! too large to keep) and when it was made. Records live in the alert database (SQLite or
//! PostgreSQL) so that they commit in the same transaction as the request's effect
//! ([`insert_tx`], and `postgres::idempotency::insert_pg`), survive restarts and are shared by replicas; the retention
//! task deletes them once past their time-to-live. HTTP types stay out: a status is a `u16`,
//! headers are plain strings.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::alerts::SqliteAlertStore;

/// Who sent a keyed request, to what, for which operation: keys of different scopes never meet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyScope {
    /// The API-key identity (a digest, never the key), or `""` when the service is open.
    pub client: String,
    pub detector: String,
    /// `score`, `fit`, ...
    pub operation: String,
}

/// The answer a keyed request got, as it is replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: String,
    /// Other headers of the answer (`Location`, ...), in order.
    pub headers: Vec<(String, String)>,
    /// The body, or `None` when it was larger than the store keeps (or streamed).
    pub body: Option<Vec<u8>>,
    /// The body's length in bytes (0 when streamed: not known before it was sent).
    pub body_len: u64,
    /// Hex SHA-256 of the body (`""` when streamed).
    pub body_sha256: String,
}

/// One kept key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub scope: KeyScope,
    pub key: String,
    /// Hex SHA-256 of what determined the answer (body, query, media types).
    pub request_hash: String,
    pub created_at: DateTime<Utc>,
    pub answer: StoredAnswer,
}

/// Where keys are kept: the alert database. Calls block.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// The record of `key` in `scope`, if kept.
    fn key_record(&self, scope: &KeyScope, key: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// Keeps a record on its own (for a request whose effect is not in this database, or that
    /// had none); [`StoreError::KeyTaken`] when the key is kept already.
    fn record_key(&self, record: &KeyRecord) -> Result<(), StoreError>;
    /// Deletes up to `max` records made before `before`; returns how many went.
    fn prune_keys(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError>;
}

/// SQLite step 4 (PostgreSQL: `V3__idempotency.sql`).
pub(super) const MIGRATION: &str = "
    CREATE TABLE idempotency_keys (
        client        TEXT NOT NULL,
        detector      TEXT NOT NULL,
        operation     TEXT NOT NULL,
        key           TEXT NOT NULL,
        request_hash  TEXT NOT NULL,
        created_at_ns INTEGER NOT NULL,
        status        INTEGER NOT NULL,
        content_type  TEXT NOT NULL,
        headers       TEXT NOT NULL,
        body          BLOB,
        body_len      INTEGER NOT NULL,
        body_sha256   TEXT NOT NULL,
        PRIMARY KEY (client, detector, operation, key)
    );
    CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at_ns);";

pub(super) const INSERT: &str = "INSERT INTO idempotency_keys (client, detector, operation, key,
         request_hash, created_at_ns, status, content_type, headers, body, body_len, body_sha256)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

pub(super) const SELECT: &str =
    "SELECT request_hash, created_at_ns, status, content_type, headers, body,
         body_len, body_sha256
     FROM idempotency_keys WHERE client = ?1 AND detector = ?2 AND operation = ?3 AND key = ?4";

pub(super) const PRUNE: &str =
    "DELETE FROM idempotency_keys WHERE (client, detector, operation, key) IN (
         SELECT client, detector, operation, key FROM idempotency_keys
         WHERE created_at_ns < ?1 ORDER BY created_at_ns LIMIT ?2)";

/// The columns of a record as both backends bind them.
pub(super) struct Row {
    pub(super) created_at_ns: i64,
    pub(super) status: i32,
    pub(super) headers: String,
    pub(super) body_len: i64,
}

impl Row {
    pub(super) fn of(r: &KeyRecord) -> Self {
        Self {
            created_at_ns: super::alerts::nanos_clamped(r.created_at),
            status: i32::from(r.answer.status),
            headers: serde_json::to_string(&r.answer.headers).unwrap_or_else(|_| "[]".into()),
            body_len: i64::try_from(r.answer.body_len).unwrap_or(i64::MAX),
        }
    }
}

/// The record read back from its columns (`headers` as JSON).
#[allow(clippy::too_many_arguments)]
pub(super) fn record(
    scope: &KeyScope,
    key: &str,
    request_hash: String,
    created_at_ns: i64,
    status: i64,
    content_type: String,
    headers: &str,
    body: Option<Vec<u8>>,
    body_len: i64,
    body_sha256: String,
) -> KeyRecord {
    KeyRecord {
        scope: scope.clone(),
        key: key.to_owned(),
        request_hash,
        created_at: DateTime::from_timestamp_nanos(created_at_ns),
        answer: StoredAnswer {
            status: u16::try_from(status).unwrap_or(500),
            content_type,
            headers: serde_json::from_str(headers).unwrap_or_default(),
            body,
            body_len: u64::try_from(body_len).unwrap_or(0),
            body_sha256,
        },
    }
}

/// Keeps `record` inside a SQLite transaction that also holds the request's effect.
pub(super) fn insert_tx(tx: &rusqlite::Transaction<'_>, r: &KeyRecord) -> Result<(), StoreError> {
    let row = Row::of(r);
    let inserted = tx.prepare_cached(INSERT)?.execute(params![
        r.scope.client,
        r.scope.detector,
        r.scope.operation,
        r.key,
        r.request_hash,
        row.created_at_ns,
        row.status,
        r.answer.content_type,
        row.headers,
        r.answer.body,
        row.body_len,
        r.answer.body_sha256,
    ]);
    super::unless_taken(inserted, || StoreError::KeyTaken(r.key.clone()))
}

impl IdempotencyStore for SqliteAlertStore {
    fn key_record(&self, scope: &KeyScope, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.lock()?;
        let found = conn
            .query_row(
                SELECT,
                params![scope.client, scope.detector, scope.operation, key],
                |r| {
                    Ok(record(
                        scope,
                        key,
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        &r.get::<_, String>(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .optional()?;
        Ok(found)
    }

    fn record_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_tx(&tx, record)?;
        tx.commit()?;
        Ok(())
    }

    fn prune_keys(&self, before: DateTime<Utc>, max: usize) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let before = super::alerts::nanos_clamped(before);
        Ok(conn.execute(PRUNE, params![before, max as i64])? as u64)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn sample(key: &str, at: DateTime<Utc>, body: Option<&[u8]>) -> KeyRecord {
        KeyRecord {
            scope: KeyScope {
                client: String::new(),
                detector: "default".into(),
                operation: "score".into(),
            },
            key: key.into(),
            request_hash: "ab".repeat(32),
            created_at: at,
            answer: StoredAnswer {
                status: 201,
                content_type: "application/json".into(),
                headers: vec![("location".into(), "/v1/model".into())],
                body: body.map(<[u8]>::to_vec),
                body_len: body.map_or(7, |b| b.len() as u64),
                body_sha256: "cd".repeat(32),
            },
        }
    }

    #[test]
    fn a_record_reads_back_whole_and_a_key_is_kept_once() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let rec = sample("k-1", at, Some(b"{\"a\":1}\x00\xff"));
        store.record_key(&rec).unwrap();
        assert_eq!(
            store.key_record(&rec.scope, "k-1").unwrap(),
            Some(rec.clone())
        );
        assert!(matches!(
            store.record_key(&rec),
            Err(StoreError::KeyTaken(k)) if k == "k-1"
        ));
        // Another scope does not see it; a record without a body keeps its length and hash.
        let other = KeyScope {
            operation: "fit".into(),
            ..rec.scope.clone()
        };
        assert_eq!(store.key_record(&other, "k-1").unwrap(), None);
        let large = KeyRecord {
            scope: other.clone(),
            ..sample("k-1", at, None)
        };
        store.record_key(&large).unwrap();
        assert_eq!(store.key_record(&other, "k-1").unwrap(), Some(large));
    }

    #[test]
    fn an_alert_commits_with_its_key_or_not_at_all() {
        use crate::store::alerts::{AlertStore, NewAlert};
        use crate::store::outbox::Outbox;
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let sinks = ["siem".to_owned()];
        let first = crate::store::alerts::tests::alert(at, 90);
        let rec = sample("k", at, Some(b"{}"));
        store
            .insert_keyed(NewAlert {
                alert: std::borrow::Cow::Borrowed(&first),
                sinks: &sinks,
                key: Some(&rec),
            })
            .unwrap();
        assert_eq!(
            store.key_record(&rec.scope, "k").unwrap(),
            Some(rec.clone())
        );
        // A second alert under the kept key: refused whole, its deliveries with it.
        let second = crate::store::alerts::tests::alert(at, 95);
        assert!(matches!(
            store.insert_keyed(NewAlert {
                alert: std::borrow::Cow::Borrowed(&second),
                sinks: &sinks,
                key: Some(&rec),
            }),
            Err(StoreError::KeyTaken(_))
        ));
        assert_eq!(store.count().unwrap(), 1);
        assert!(store.get(&second.id).unwrap().is_none());
        assert!(store.deliveries(&second.id).unwrap().is_empty());
        assert_eq!(store.depth().unwrap(), 1);
    }

    #[test]
    fn pruning_deletes_only_records_older_than_the_cut() {
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let t = |s| DateTime::from_timestamp(s, 0).unwrap();
        for (i, s) in [100, 200, 300, 400].into_iter().enumerate() {
            store
                .record_key(&sample(&format!("k{i}"), t(s), Some(b"x")))
                .unwrap();
        }
        assert_eq!(store.prune_keys(t(300), 1).unwrap(), 1);
        assert_eq!(store.prune_keys(t(300), 10).unwrap(), 1);
        assert_eq!(store.prune_keys(t(300), 10).unwrap(), 0);
        let scope = sample("x", t(0), None).scope;
        assert!(store.key_record(&scope, "k1").unwrap().is_none());
        assert!(store.key_record(&scope, "k2").unwrap().is_some());
        assert!(store.key_record(&scope, "k3").unwrap().is_some());
    }
}
