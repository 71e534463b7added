//! Idempotency keys on PostgreSQL, as on SQLite (`tests/suite/api_idempotency.rs`): a schema from
//! before keys migrates in place, an alert commits with its key or not at all, expired keys are
//! pruned, and a retry sent to another replica gets the first replica's answer and changes
//! nothing.
//!
//! Needs `NETSENTINEL_TEST_DATABASE_URL`; see `tests/support/postgres.rs`.

use std::time::Duration;

use crate::support::postgres::{Replica, TestDb, connect};
use crate::support::traffic::{bursty_batch, client, get_json};
use chrono::{TimeZone, Utc};
use netsentinel::store::StoreError;
use netsentinel::store::alerts::{Alert, AlertStore, NewAlert};
use netsentinel::store::idempotency::{IdempotencyStore, KeyRecord, KeyScope, StoredAnswer};
use netsentinel::store::outbox::Outbox;
use serde_json::{Value, json};

const V1_SQL: &str = include_str!("../../migrations/postgres/V1__alerts_outbox_models.sql");
const V2_SQL: &str = include_str!("../../migrations/postgres/V2__detectors.sql");

fn record(key: &str, at: chrono::DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        scope: KeyScope {
            client: "c0ffee".into(),
            detector: "default".into(),
            operation: "score".into(),
        },
        key: key.into(),
        request_hash: "ab".repeat(32),
        created_at: at,
        answer: StoredAnswer {
            status: 200,
            content_type: "text/csv; charset=utf-8".into(),
            headers: vec![("location".into(), "/v1/model".into())],
            body: Some(b"index,score\n0,0.5\n\x00\xff".to_vec()),
            body_len: 21,
            body_sha256: "cd".repeat(32),
        },
    }
}

fn alert(at: chrono::DateTime<Utc>) -> Alert {
    Alert::new(
        at,
        1,
        90,
        "test".into(),
        netsentinel::detector::model::BatchSummary {
            n_records: 1,
            n_anomalies: 1,
            anomaly_rate: 1.0,
            threshold: 0.5,
            max_severity: 90,
        },
        Vec::new(),
    )
}

#[test]
fn a_schema_from_before_keys_migrates_in_place_and_keeps_keys_with_alerts() {
    let Some(db) = TestDb::create("a_schema_from_before_keys_migrates_in_place") else {
        return;
    };
    let mut raw = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let v1 = refinery::Migration::unapplied("V1__alerts_outbox_models", V1_SQL).unwrap();
    let v2 = refinery::Migration::unapplied("V2__detectors", V2_SQL).unwrap();
    refinery::Runner::new(&[v1, v2]).run(&mut raw).unwrap();
    let old = alert(Utc.timestamp_opt(1_704_067_200, 0).unwrap());
    let body = serde_json::to_string(&old).unwrap();
    raw.execute(
        "INSERT INTO alerts (id, created_at_ns, severity, status, model_version, body)
         VALUES ($1, $2, 90, 'open', 1, $3)",
        &[
            &old.id,
            &old.created_at.timestamp_nanos_opt().unwrap(),
            &body,
        ],
    )
    .unwrap();
    drop(raw);

    let store = connect(&db.url);
    assert_eq!(store.count().unwrap(), 1, "the old alert is kept");
    let now = Utc::now();
    let kept = record("k-1", now);
    let first = alert(now);
    let sinks = ["siem".to_owned()];
    store
        .insert_keyed(NewAlert {
            alert: std::borrow::Cow::Borrowed(&first),
            sinks: &sinks,
            key: Some(&kept),
        })
        .unwrap();
    assert_eq!(
        store.key_record(&kept.scope, "k-1").unwrap(),
        Some(kept.clone())
    );
    // A second alert under the same key is refused whole, deliveries and all.
    let second = alert(now);
    assert!(matches!(
        store.insert_keyed(NewAlert {
            alert: std::borrow::Cow::Borrowed(&second),
            sinks: &sinks,
            key: Some(&kept),
        }),
        Err(StoreError::KeyTaken(_))
    ));
    assert!(store.get(&second.id).unwrap().is_none());
    assert!(store.deliveries(&second.id).unwrap().is_empty());
    assert_eq!(store.count().unwrap(), 2);
    // Keys of another client do not meet; a key on its own is refused twice too.
    let other = KeyRecord {
        scope: KeyScope {
            client: String::new(),
            ..kept.scope.clone()
        },
        ..record("k-1", now)
    };
    assert_eq!(store.key_record(&other.scope, "k-1").unwrap(), None);
    store.record_key(&other).unwrap();
    assert!(matches!(
        store.record_key(&other),
        Err(StoreError::KeyTaken(_))
    ));
    // Pruning: only the keys made before the cut.
    let old_key = record("old", now - chrono::Duration::hours(30));
    store.record_key(&old_key).unwrap();
    let cut = now - chrono::Duration::hours(24);
    assert_eq!(store.prune_keys(cut, 10).unwrap(), 1);
    assert_eq!(store.key_record(&old_key.scope, "old").unwrap(), None);
    assert!(store.key_record(&kept.scope, "k-1").unwrap().is_some());
}

async fn post(url: &str, key: &str, body: &Value) -> (u16, Option<String>, Vec<u8>) {
    let response = client()
        .post(url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("the replica answers");
    let replayed = response
        .headers()
        .get("idempotency-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = response.status().as_u16();
    (status, replayed, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_retry_sent_to_another_replica_gets_the_first_answer() {
    let Some(db) = TestDb::create("a_retry_sent_to_another_replica_gets_the_first_answer") else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Replica::start("a", &db.url, dirs[0].path(), &[]);
    let b = Replica::start("b", &db.url, dirs[1].path(), &[]);
    let fit = json!({"generate": {}, "params": {"n_estimators": 10, "seed": 1}});
    let fitted = post(&a.url("/v1/model/fit"), "fit-1", &fit).await;
    assert_eq!(fitted.0, 201, "{}", String::from_utf8_lossy(&fitted.2));
    let again = post(&b.url("/v1/model/fit"), "fit-1", &fit).await;
    assert_eq!((again.0, again.1.as_deref()), (201, Some("true")));
    assert_eq!(again.2, fitted.2);
    let (_, versions) = get_json(&client(), &b.url("/v1/model/versions")).await;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );

    // B follows A's model before it scores.
    crate::support::eventually(
        "replica b has the model",
        Duration::from_secs(15),
        || async {
            let (status, _) = get_json(&client(), &b.url("/v1/model")).await;
            (status == 200).then_some(())
        },
    )
    .await;
    let batch = bursty_batch(4);
    let scored = post(&a.url("/v1/score"), "score-1", &batch).await;
    assert_eq!(scored.0, 200);
    let retried = post(&b.url("/v1/score"), "score-1", &batch).await;
    assert_eq!((retried.0, retried.1.as_deref()), (200, Some("true")));
    assert_eq!(retried.2, scored.2);
    let other = post(&b.url("/v1/score"), "score-1", &bursty_batch(5)).await;
    assert_eq!(other.0, 422);
    let (_, alerts) = get_json(&client(), &a.url("/v1/alerts")).await;
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
}
