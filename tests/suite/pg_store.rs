//! The PostgreSQL store against a real server: the same answers as SQLite, and no races between replicas.
//!
//! Several `PgStore`s on one database stand in for replicas (each has its own pool, as a
//! process would). Needs `NETSENTINEL_TEST_DATABASE_URL`; see `tests/support/postgres.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::postgres::TestDb;
use chrono::{DateTime, TimeZone, Utc};
use netsentinel::detector::model::BatchSummary;
use netsentinel::store::StoreError;
use netsentinel::store::alerts::{
    Alert, AlertQuery, AlertRecord, AlertStatus, AlertStore, SqliteAlertStore,
};
use netsentinel::store::models::ModelStore;
use netsentinel::store::outbox::{AttemptOutcome, Outbox};
use netsentinel::store::postgres::{PgOptions, PgStore};

fn options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        timeout: Duration::from_secs(5),
        keep_models: 3,
    }
}

fn connect(url: &str) -> PgStore {
    PgStore::connect(&options(url)).expect("the store connects and migrates")
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_704_067_200 + secs, 0).unwrap()
}

fn alert(at: DateTime<Utc>, severity: u8) -> Alert {
    Alert::new(
        at,
        1,
        severity,
        format!("severity {severity}"),
        BatchSummary {
            n_records: 8,
            n_anomalies: 1,
            anomaly_rate: 0.125,
            threshold: 0.5,
            max_severity: severity,
        },
        vec![AlertRecord {
            index: 3,
            timestamp: None,
            score: 0.712_345_678_9,
            severity,
            values: BTreeMap::from([("bytes_sent".into(), 5_247_031.96)]),
            fields: BTreeMap::from([("src_ip".into(), "10.0.0.7".into())]),
            explanation: Vec::new(),
            entity: None,
        }],
    )
}

fn ids(page: &netsentinel::store::alerts::AlertPage) -> Vec<String> {
    page.alerts.iter().map(|a| a.id.clone()).collect()
}

/// Every page of `q`, as id lists, following cursors.
fn all_pages(store: &dyn AlertStore, q: &AlertQuery) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&AlertQuery {
                cursor: cursor.clone(),
                ..q.clone()
            })
            .unwrap();
        pages.push(ids(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
        assert!(pages.len() < 200, "pagination does not terminate");
    }
}

#[test]
fn alerts_list_filter_page_and_acknowledge_exactly_as_sqlite_does() {
    let Some(db) = TestDb::create("alerts_list_filter_page_and_acknowledge_exactly_as_sqlite_does")
    else {
        return;
    };
    let pg = connect(&db.url);
    let lite = SqliteAlertStore::open_in_memory().unwrap();
    // Groups of three share a created_at, so pages split inside a group; ids are UUID v7s
    // whose byte order the C collation must keep.
    let alerts: Vec<Alert> = (0..40).map(|i| alert(t(i / 3), 30 + i as u8)).collect();
    for a in &alerts {
        pg.insert(a).unwrap();
        lite.insert(a).unwrap();
    }
    for a in alerts.iter().step_by(4) {
        assert_eq!(
            pg.acknowledge(&a.id, t(100)).unwrap(),
            lite.acknowledge(&a.id, t(100)).unwrap()
        );
    }
    // A second acknowledgement keeps the first time, on both.
    let again = pg.acknowledge(&alerts[0].id, t(200)).unwrap().unwrap();
    assert_eq!(again.acknowledged_at, Some(t(100)));
    assert_eq!(pg.acknowledge("no-such-id", t(1)).unwrap(), None);

    let queries = [
        AlertQuery {
            limit: 7,
            ..Default::default()
        },
        AlertQuery {
            limit: 5,
            min_severity: Some(50),
            ..Default::default()
        },
        AlertQuery {
            limit: 4,
            status: Some(AlertStatus::Open),
            since: Some(t(2)),
            until: Some(t(10)),
            ..Default::default()
        },
        AlertQuery {
            limit: 1,
            status: Some(AlertStatus::Acknowledged),
            ..Default::default()
        },
        AlertQuery {
            limit: 100,
            ..Default::default()
        },
    ];
    for q in &queries {
        let on_pg = all_pages(&pg, q);
        assert_eq!(on_pg, all_pages(&lite, q), "{q:?}");
        let flat: Vec<&String> = on_pg.iter().flatten().collect();
        assert_eq!(
            flat.len(),
            flat.iter().collect::<HashSet<_>>().len(),
            "repeats"
        );
    }
    // Cursors are interchangeable: one from SQLite continues the same listing on PostgreSQL.
    let first = lite
        .list(&AlertQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    let next = AlertQuery {
        limit: 10,
        cursor: first.next_cursor.clone(),
        ..Default::default()
    };
    assert_eq!(
        ids(&pg.list(&next).unwrap()),
        ids(&lite.list(&next).unwrap())
    );
    assert!(matches!(
        pg.list(&AlertQuery {
            limit: 1,
            cursor: Some("zz".into()),
            ..Default::default()
        }),
        Err(StoreError::BadCursor)
    ));
    assert_eq!(pg.count().unwrap(), 40);
    assert_eq!(
        pg.get(&alerts[5].id).unwrap(),
        lite.get(&alerts[5].id).unwrap()
    );
    assert!(matches!(
        pg.insert(&alerts[5]),
        Err(StoreError::DuplicateAlert(_))
    ));
}

#[test]
fn an_alert_and_its_outbox_rows_commit_together_or_not_at_all() {
    let Some(db) = TestDb::create("an_alert_and_its_outbox_rows_commit_together_or_not_at_all")
    else {
        return;
    };
    let pg = connect(&db.url);
    let a = alert(t(0), 80);
    pg.insert_with_outbox(&a, &["x".into(), "y".into()])
        .unwrap();
    let sinks: Vec<String> = pg
        .deliveries(&a.id)
        .unwrap()
        .into_iter()
        .map(|d| d.sink)
        .collect();
    assert_eq!(sinks, ["x", "y"]);
    assert_eq!(pg.depth().unwrap(), 2);

    let b = alert(t(1), 80);
    let twice = pg.insert_with_outbox(&b, &["x".into(), "x".into()]);
    assert!(
        matches!(twice, Err(StoreError::InvalidAlert { .. })),
        "{twice:?}"
    );
    assert_eq!(
        pg.get(&b.id).unwrap(),
        None,
        "the alert rolled back with its rows"
    );
    assert_eq!(pg.depth().unwrap(), 2);
}

#[test]
fn pruning_deletes_old_alerts_as_sqlite_does_keeping_those_owed_a_delivery() {
    let Some(db) = TestDb::create("pruning_deletes_old_alerts_as_sqlite_does") else {
        return;
    };
    let pg = connect(&db.url);
    let lite = SqliteAlertStore::open_in_memory().unwrap();
    let alerts: Vec<Alert> = (0..12).map(|i| alert(t(i), 50)).collect();
    for (i, a) in alerts.iter().enumerate() {
        let sinks: Vec<String> = if i % 5 == 0 { vec!["x".into()] } else { vec![] };
        pg.insert_with_outbox(a, &sinks).unwrap();
        lite.insert_with_outbox(a, &sinks).unwrap();
    }
    for max in [3, 1000] {
        assert_eq!(pg.prune(t(9), max).unwrap(), lite.prune(t(9), max).unwrap());
        assert_eq!(pg.count().unwrap(), lite.count().unwrap());
    }
    // 9 older than the cut, of which 0 and 5 still owe a delivery.
    assert_eq!(pg.count().unwrap(), 12 - 7);
    assert!(pg.get(&alerts[5].id).unwrap().is_some());
    assert!(pg.get(&alerts[6].id).unwrap().is_none());
}

#[test]
fn replicas_claiming_at_once_never_share_a_delivery_and_a_dead_claim_is_taken_over() {
    let Some(db) = TestDb::create(
        "replicas_claiming_at_once_never_share_a_delivery_and_a_dead_claim_is_taken_over",
    ) else {
        return;
    };
    let replicas: Vec<Arc<PgStore>> = (0..4).map(|_| Arc::new(connect(&db.url))).collect();
    let n = 200;
    let mut expected = HashSet::new();
    for i in 0..n {
        let a = alert(t(i), 70);
        replicas[0]
            .insert_with_outbox(&a, &["siem".into()])
            .unwrap();
        expected.insert(a.id);
    }
    let now = t(10_000);
    let lease = Duration::from_secs(60);
    let start = Arc::new(Barrier::new(replicas.len() * 2));
    let handles: Vec<_> = replicas
        .iter()
        .cycle()
        .take(replicas.len() * 2)
        .map(|store| {
            let (store, start) = (Arc::clone(store), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut mine = Vec::new();
                loop {
                    let due = store.claim_due("siem", now, 7, lease).unwrap();
                    if due.is_empty() {
                        return mine;
                    }
                    mine.extend(due);
                }
            })
        })
        .collect();
    let mut claims: HashMap<String, usize> = HashMap::new();
    let mut dues = HashMap::new();
    for h in handles {
        for d in h.join().unwrap() {
            *claims.entry(d.alert.id.clone()).or_default() += 1;
            dues.insert(d.alert.id.clone(), d);
        }
    }
    assert_eq!(claims.len(), n as usize, "every row was claimed");
    let shared: Vec<_> = claims.iter().filter(|(_, c)| **c > 1).collect();
    assert!(shared.is_empty(), "rows claimed twice: {shared:?}");
    assert_eq!(claims.keys().cloned().collect::<HashSet<_>>(), expected);

    // Deliver all but one; the one left is a replica that died holding its lease.
    let dead = claims.keys().next().unwrap().clone();
    for id in claims.keys().filter(|id| **id != dead) {
        replicas[1]
            .record_attempt(
                &dues[id],
                &AttemptOutcome::Delivered { status: Some(200) },
                now,
            )
            .unwrap();
    }
    assert!(
        replicas[2]
            .claim_due("siem", now + chrono::TimeDelta::seconds(59), 10, lease)
            .unwrap()
            .is_empty(),
        "still leased"
    );
    let taken = replicas[2]
        .claim_due("siem", now + chrono::TimeDelta::seconds(61), 10, lease)
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].alert.id, dead);
    // A late record from the dead claim cannot undo a delivery made by the taker.
    replicas[2]
        .record_attempt(
            &taken[0],
            &AttemptOutcome::Delivered { status: Some(200) },
            now,
        )
        .unwrap();
    replicas[3]
        .record_attempt(
            &dues[&dead],
            &AttemptOutcome::Retry {
                next_at: now,
                error: "late".into(),
                status: Some(500),
            },
            now,
        )
        .unwrap();
    assert_eq!(replicas[0].depth().unwrap(), 0);
    let dead_row = &replicas[0].deliveries(&dead).unwrap()[0];
    assert_eq!(
        dead_row.state,
        netsentinel::store::outbox::DeliveryStatus::Delivered
    );
    assert_eq!(dead_row.attempts, 2, "both sends are counted");
}

#[test]
fn version_numbers_are_unique_across_replicas_and_the_pointer_is_shared() {
    let Some(db) =
        TestDb::create("version_numbers_are_unique_across_replicas_and_the_pointer_is_shared")
    else {
        return;
    };
    // Replicas starting together all migrate (under the advisory lock) without failing.
    let start = Arc::new(Barrier::new(4));
    let replicas: Vec<Arc<PgStore>> = (0..4)
        .map(|_| {
            let (url, start) = (db.url.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                Arc::new(connect(&url))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("every replica starts"))
        .collect();

    let handles: Vec<_> = replicas
        .iter()
        .map(|store| {
            let store = Arc::clone(store);
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        let v = store.next_version().unwrap();
                        store.save(v, format!("model {v}").as_bytes()).unwrap();
                        v
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=20).collect::<Vec<_>>(),
        "each number handed out once"
    );

    // Pruning keeps the newest 3.
    assert_eq!(replicas[1].versions().unwrap(), vec![18, 19, 20]);
    assert_eq!(replicas[0].active().unwrap(), None);
    replicas[0].set_active(19).unwrap();
    assert_eq!(replicas[3].active().unwrap(), Some(19));
    assert_eq!(replicas[2].read(19).unwrap(), b"model 19");
    assert!(matches!(
        replicas[2].set_active(5),
        Err(StoreError::ModelNotFound(5))
    ));
    assert!(matches!(
        replicas[2].save(20, b"again"),
        Err(StoreError::VersionExists(20))
    ));

    // The active version survives pruning; a quarantined one is hidden and its number unused.
    for _ in 0..3 {
        let v = replicas[2].next_version().unwrap();
        replicas[2].save(v, b"newer").unwrap();
    }
    assert_eq!(replicas[0].versions().unwrap(), vec![19, 21, 22, 23]);
    replicas[0].quarantine(23).unwrap();
    assert_eq!(replicas[1].versions().unwrap(), vec![19, 21, 22]);
    assert!(matches!(
        replicas[1].read(23),
        Err(StoreError::ModelNotFound(23))
    ));
    assert_eq!(replicas[3].next_version().unwrap(), 24);
}

#[test]
fn a_notification_reaches_every_watcher_when_the_pointer_moves() {
    let Some(db) = TestDb::create("a_notification_reaches_every_watcher_when_the_pointer_moves")
    else {
        return;
    };
    let writer = connect(&db.url);
    let watcher = connect(&db.url);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let tx = std::sync::Mutex::new(tx);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    assert!(watcher.watch_active(
        Box::new(move || {
            let _ = tx.lock().unwrap().send(());
        }),
        Arc::clone(&stop),
    ));
    // One call right after connecting (notifications sent before are lost).
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a call once listening");
    let v = writer.next_version().unwrap();
    writer.save(v, b"m").unwrap();
    writer.set_active(v).unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a call when the pointer moves");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn a_bad_url_is_a_clear_error_that_does_not_quote_the_password() {
    let bad = PgStore::connect(&options("postgres://x:y@127.0.0.1:notaport/db"));
    assert!(matches!(bad, Err(StoreError::DatabaseUrl(_))), "{bad:?}");
    let msg = bad.unwrap_err().to_string();
    assert!(
        !msg.contains("x:y"),
        "the URL (and its password) is not quoted: {msg}"
    );
}

/// A small real model with version `version`, as the registry stores it.
fn model_bytes(version: u64) -> Vec<u8> {
    use netsentinel::detector::Matrix;
    use netsentinel::detector::model::Model;
    use netsentinel::detector::params::ForestParams;
    let rows: Vec<[f64; 2]> = (0..64).map(|i| [f64::from(i), f64::from(i % 7)]).collect();
    let x = Matrix::from_rows(&rows).unwrap();
    let params = ForestParams {
        n_estimators: 5,
        ..ForestParams::default()
    };
    let mut model = Model::fit(&x, vec!["a".into(), "b".into()], &params, t(0)).unwrap();
    model.set_version(version);
    model.to_bytes()
}

#[test]
fn a_replica_that_cannot_load_the_active_model_leaves_the_shared_store_alone() {
    let Some(db) =
        TestDb::create("a_replica_that_cannot_load_the_active_model_leaves_the_shared_store_alone")
    else {
        return;
    };
    let store = connect(&db.url);
    let good = store.next_version().unwrap();
    store.save(good, &model_bytes(good)).unwrap();
    // Bytes this build cannot decode: a newer format, or damage.
    let unreadable = store.next_version().unwrap();
    store
        .save(unreadable, b"not a model this build reads")
        .unwrap();
    store.set_active(unreadable).unwrap();

    let loaded = netsentinel::service::models::load_at_start(&store);
    let model = loaded.model.expect("the newest loadable version is served");
    assert_eq!(model.version(), good);
    // The pointer and the rows belong to every replica: nothing is moved or set aside.
    assert_eq!(store.active().unwrap(), Some(unreadable));
    assert_eq!(store.versions().unwrap(), vec![good, unreadable]);
}

#[test]
fn alert_bodies_written_before_the_format_version_read_field_by_field() {
    let Some(db) =
        TestDb::create("alert_bodies_written_before_the_format_version_read_field_by_field")
    else {
        return;
    };
    let pg = connect(&db.url);
    let expected = crate::alerts_v1::expected();
    // The old bodies, byte for byte, in rows as the old code inserted them.
    let mut raw = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    for (alert, body) in expected.iter().zip(crate::alerts_v1::BODIES.lines()) {
        let (id, created_at_ns, severity, status, model_version) = crate::alerts_v1::columns(alert);
        raw.execute(
            "INSERT INTO alerts (id, created_at_ns, severity, status, model_version, body)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &created_at_ns,
                &i16::from(severity),
                &status,
                &model_version,
                &body,
            ],
        )
        .unwrap();
    }
    let owed = &expected[3];
    let due_ms = owed.created_at.timestamp_millis();
    raw.execute(
        "INSERT INTO webhook_outbox (alert_id, sink, state, next_attempt_at_ms, updated_at_ms)
         VALUES ($1, $2, 'pending', $3, $3)",
        &[&owed.id, &crate::alerts_v1::SINK, &due_ms],
    )
    .unwrap();

    crate::alerts_v1::assert_reads_every_alert(&pg);
    crate::alerts_v1::assert_the_owed_delivery_decodes(&pg);
    crate::alerts_v1::assert_only_an_acknowledged_row_is_rewritten(&pg, |id| {
        raw.query_one("SELECT body FROM alerts WHERE id = $1", &[&id])
            .unwrap()
            .get(0)
    });
}
