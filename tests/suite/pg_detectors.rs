//! Detectors on PostgreSQL: a schema written before detectors migrates in place (its models,
//! active pointer and alerts become the detector `default`'s), and a detector created, fitted,
//! changed or deleted on one replica is seen by the others.
//!
//! Needs `NETSENTINEL_TEST_DATABASE_URL`; see `tests/support/postgres.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::support::eventually;
use crate::support::postgres::{Replica, TestDb, off_runtime};
use crate::support::traffic::{bursty_batch, client, get_json, post_json};
use chrono::{TimeZone, Utc};
use netsentinel::store::alerts::{Alert, AlertQuery, AlertStore};
use netsentinel::store::detectors::{DetectorModels, DetectorStore};
use netsentinel::store::models::ModelStore;
use netsentinel::store::postgres::{PgDetectorModels, PgOptions, PgStore};
use serde_json::{Value, json};

/// The schema as the code before detectors created it.
const V1_SQL: &str = include_str!("../../migrations/postgres/V1__alerts_outbox_models.sql");

/// A change on one replica must show on every replica within this (NOTIFY, else a 2 s poll).
const CONVERGE: Duration = Duration::from_secs(15);

fn connect(url: &str) -> PgStore {
    PgStore::connect(&PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        timeout: Duration::from_secs(5),
        keep_models: 3,
    })
    .expect("the store connects and migrates")
}

#[test]
fn a_schema_from_before_detectors_migrates_in_place() {
    let Some(db) = TestDb::create("a_schema_from_before_detectors_migrates_in_place") else {
        return;
    };
    // The old schema, applied by refinery as the old build did, and rows as it wrote them.
    let mut raw = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let v1 = refinery::Migration::unapplied("V1__alerts_outbox_models", V1_SQL).unwrap();
    refinery::Runner::new(&[v1]).run(&mut raw).unwrap();
    let old = Alert::new(
        Utc.timestamp_opt(1_704_067_200, 0).unwrap(),
        2,
        90,
        "old".into(),
        netsentinel::detector::model::BatchSummary {
            n_records: 1,
            n_anomalies: 1,
            anomaly_rate: 1.0,
            threshold: 0.5,
            max_severity: 90,
        },
        Vec::new(),
    );
    for version in [1_i64, 2] {
        raw.execute(
            "INSERT INTO models (version, bytes) VALUES ($1, $2)",
            &[&version, &vec![version as u8; 8]],
        )
        .unwrap();
    }
    raw.execute("SELECT setval('model_version_seq', 2)", &[])
        .unwrap();
    raw.execute(
        "INSERT INTO model_active (singleton, version) VALUES (true, 2)",
        &[],
    )
    .unwrap();
    // The row body as the old build stored it (format 1, no detector key).
    let body = serde_json::to_string(&old).unwrap();
    let body = body.replace(",\"detector\":\"default\"", "");
    raw.execute(
        "INSERT INTO alerts (id, created_at_ns, severity, status, model_version, body)
         VALUES ($1, $2, 90, 'open', 2, $3)",
        &[
            &old.id,
            &(old.created_at.timestamp_nanos_opt().unwrap()),
            &body,
        ],
    )
    .unwrap();

    let store = Arc::new(connect(&db.url));
    // Default's models: the old rows, the old pointer, and fresh numbers after them.
    assert_eq!(store.versions().unwrap(), [1, 2]);
    assert_eq!(store.active().unwrap(), Some(2));
    assert_eq!(store.read(1).unwrap(), vec![1u8; 8]);
    assert_eq!(store.next_version().unwrap(), 3);
    // Another detector has its own versions and pointer, beside default's.
    let models = PgDetectorModels(store.clone());
    let other = models.open("zeek-hosts").unwrap();
    assert!(other.versions().unwrap().is_empty());
    assert_eq!(other.active().unwrap(), None);
    other.save(4, b"zeek").unwrap();
    other.set_active(4).unwrap();
    assert_eq!(other.active().unwrap(), Some(4));
    assert_eq!(
        store.active().unwrap(),
        Some(2),
        "default's pointer is its own"
    );
    assert_eq!(store.versions().unwrap(), [1, 2]);
    assert!(
        matches!(
            store.set_active(4),
            Err(netsentinel::store::StoreError::ModelNotFound(4))
        ),
        "a version of another detector is not default's"
    );
    // The old alert is default's.
    let q = |detector: &str| AlertQuery {
        detector: Some(detector.into()),
        limit: 10,
        ..AlertQuery::default()
    };
    let page = store.list(&q("default")).unwrap();
    assert_eq!(page.alerts.len(), 1);
    assert_eq!(page.alerts[0].detector, "default");
    assert!(store.list(&q("zeek-hosts")).unwrap().alerts.is_empty());
    // Detector settings, and deleting one's models leaves default's alone.
    assert!(store.put_detector("zeek-hosts", "{}", Utc::now()).unwrap());
    assert!(
        !store
            .put_detector("zeek-hosts", "{\"features\":null}", Utc::now())
            .unwrap()
    );
    assert_eq!(store.detectors().unwrap().len(), 1);
    models.remove("zeek-hosts").unwrap();
    assert!(store.delete_detector("zeek-hosts").unwrap());
    assert!(other.versions().unwrap().is_empty());
    assert_eq!(store.versions().unwrap(), [1, 2]);
    // A second start finds nothing to migrate.
    off_runtime(move || drop(store));
    let again = connect(&db.url);
    assert_eq!(again.active().unwrap(), Some(2));
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request.send().await.expect("the request is sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detectors_and_their_models_show_on_every_replica() {
    let Some(db) = TestDb::create("detectors_and_their_models_show_on_every_replica") else {
        return;
    };
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Replica::start("a", &db.url, dirs[0].path(), &[]);
    let b = Replica::start("b", &db.url, dirs[1].path(), &[]);
    let http = client();

    // Created on a: b serves it.
    let settings = json!({"params": {"n_estimators": 20}, "alerting": {"min_severity": 70}});
    let (status, created) = send(http.put(a.url("/v1/detectors/flows")).json(&settings)).await;
    assert_eq!(status, 201, "{created}");
    eventually("b to see the new detector", CONVERGE, || async {
        let (status, d) = get_json(&http, &b.url("/v1/detectors/flows")).await;
        (status == 200 && d["alerting"]["min_severity"] == 70).then_some(())
    })
    .await;

    // Fitted on a: b serves the same version, for that detector only.
    let (status, fitted) = post_json(
        &http,
        &a.url("/v1/detectors/flows/model/fit"),
        &json!({"generate": {}}),
    )
    .await;
    assert_eq!(status, 201, "{fitted}");
    eventually("b to serve the detector's model", CONVERGE, || async {
        let (_, m) = get_json(&http, &b.url("/v1/detectors/flows/model")).await;
        (m == fitted).then_some(())
    })
    .await;
    let (status, _) = get_json(&http, &b.url("/v1/model")).await;
    assert_eq!(status, 404, "default has no model");

    // Changed on b: a sees it; b's alerts are listed on a by detector.
    let (status, _) = send(
        http.put(b.url("/v1/detectors/flows"))
            .json(&json!({"params": {"n_estimators": 20}, "alerting": {"min_severity": 40}})),
    )
    .await;
    assert_eq!(status, 200);
    eventually("a to see the changed settings", CONVERGE, || async {
        let (_, d) = get_json(&http, &a.url("/v1/detectors/flows")).await;
        (d["alerting"]["min_severity"] == 40).then_some(())
    })
    .await;
    let (status, scored) =
        post_json(&http, &b.url("/v1/detectors/flows/score"), &bursty_batch(3)).await;
    assert_eq!(status, 200, "{scored}");
    assert_eq!(scored["alert"]["detector"], "flows");
    let (_, listed) = get_json(&http, &a.url("/v1/alerts?detector=flows")).await;
    assert_eq!(listed["alerts"][0]["id"], scored["alert"]["id"]);
    let (_, none) = get_json(&http, &a.url("/v1/alerts?detector=default")).await;
    assert_eq!(none["alerts"], json!([]));

    // Deleted on a: gone on b, its alerts kept.
    let (status, deleted) = send(http.delete(a.url("/v1/detectors/flows?force=true"))).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["models_deleted"], 1);
    eventually("b to drop the deleted detector", CONVERGE, || async {
        let (status, _) = get_json(&http, &b.url("/v1/detectors/flows/model")).await;
        (status == 404).then_some(())
    })
    .await;
    let (_, kept) = get_json(&http, &b.url("/v1/alerts?detector=flows")).await;
    assert_eq!(kept["alerts"].as_array().unwrap().len(), 1);
}
