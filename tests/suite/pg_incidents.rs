//! Incidents on PostgreSQL: replicas raising alerts for the same entity at once update one
//! incident (never two open for one host), each delivery event is queued once, and a quiet
//! incident is resolved by one replica's round.
//!
//! Needs `NETSENTINEL_TEST_DATABASE_URL`; see `tests/support/postgres.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use netsentinel::detector::model::BatchSummary;
use netsentinel::store::alerts::{
    Alert, AlertEvent, AlertQuery, AlertRecord, AlertStatus, AlertStore, Cover, IncidentPolicy,
};
use netsentinel::store::outbox::Outbox;
use netsentinel::store::postgres::PgStore;

use crate::support::postgres::{TestDb, connect};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

/// An alert raised for one anomalous record of `entity` at `at`.
fn raised(at: DateTime<Utc>, entity: &str, severity: u8) -> Alert {
    let record = AlertRecord {
        index: 0,
        timestamp: None,
        score: 0.5 + f64::from(severity) / 1000.0,
        severity,
        values: BTreeMap::from([("bytes_sent".into(), 1e9)]),
        fields: BTreeMap::from([("entity".into(), entity.into())]),
        explanation: Vec::new(),
        entity: Some(entity.into()),
    };
    let summary = BatchSummary {
        n_records: 10,
        n_anomalies: 1,
        anomaly_rate: 0.1,
        threshold: 0.6,
        max_severity: severity,
    };
    let mut a = Alert::new(at, 1, severity, "test".into(), summary, vec![record]);
    a.policy = Some(IncidentPolicy::default());
    a
}

fn of_entity(store: &PgStore, entity: &str) -> Vec<Alert> {
    let q = AlertQuery {
        entity: Some(entity.into()),
        limit: 100,
        ..AlertQuery::default()
    };
    store.list(&q).unwrap().alerts
}

#[test]
fn replicas_raising_for_one_entity_at_once_update_one_incident() {
    let Some(db) = TestDb::create("replicas_raising_for_one_entity_at_once_update_one_incident")
    else {
        return;
    };
    let replicas: Vec<Arc<PgStore>> = (0..4).map(|_| Arc::new(connect(&db.url))).collect();
    let per_thread = 10;
    let threads = replicas.len() * 2;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|n| {
            let store = Arc::clone(&replicas[n % replicas.len()]);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for i in 0..per_thread {
                    let at = t(i64::try_from(n * per_thread + i).unwrap());
                    store
                        .insert_with_outbox(&raised(at, "10.0.0.66", 60), &["siem".into()])
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let incidents = of_entity(&replicas[1], "10.0.0.66");
    assert_eq!(incidents.len(), 1, "one incident, whichever replica raised");
    let incident = &incidents[0];
    assert_eq!(incident.count, (threads * per_thread) as u64);
    assert_eq!(incident.status, AlertStatus::Open);
    let deliveries = replicas[2].deliveries(&incident.id).unwrap();
    let events: Vec<_> = deliveries.iter().map(|d| (d.seq, d.event)).collect();
    assert_eq!(
        events,
        [(0, AlertEvent::Opened)],
        "opened once, never escalated"
    );

    // A quiet incident is resolved by one replica's round, with one `resolved` delivery.
    let quiet_at = incident.last_seen + chrono::TimeDelta::seconds(1800);
    let rounds: Vec<_> = replicas
        .iter()
        .map(|r| {
            r.resolve_quiet(quiet_at, &["siem".into()], 10)
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(rounds.iter().sum::<usize>(), 1, "{rounds:?}");
    let resolved = replicas[3].get(&incident.id).unwrap().unwrap();
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.resolved_at, Some(quiet_at));
    let events: Vec<_> = replicas[0]
        .deliveries(&incident.id)
        .unwrap()
        .iter()
        .map(|d| d.event)
        .collect();
    assert_eq!(events, [AlertEvent::Opened, AlertEvent::Resolved]);
    let listed = replicas[0]
        .list(&AlertQuery {
            status: Some(AlertStatus::Resolved),
            limit: 10,
            ..AlertQuery::default()
        })
        .unwrap();
    assert_eq!(listed.alerts.len(), 1);

    // The next anomaly opens a new incident; an escalation by the step is delivered.
    let reopened = raised(quiet_at + chrono::TimeDelta::seconds(60), "10.0.0.66", 60);
    replicas[1]
        .insert_with_outbox(&reopened, &["siem".into()])
        .unwrap();
    let higher = raised(quiet_at + chrono::TimeDelta::seconds(120), "10.0.0.66", 75);
    replicas[2]
        .insert_with_outbox(&higher, &["siem".into()])
        .unwrap();
    let now = of_entity(&replicas[0], "10.0.0.66");
    assert_eq!(now.len(), 2);
    let open = now.iter().find(|a| a.status == AlertStatus::Open).unwrap();
    assert_eq!(open.id, reopened.id);
    assert_eq!((open.count, open.max_severity), (2, 75));
    let due = replicas[3]
        .claim_due(
            "siem",
            quiet_at + chrono::TimeDelta::hours(1),
            100,
            Duration::from_secs(60),
        )
        .unwrap();
    let of_open: Vec<_> = due.iter().filter(|d| d.alert.id == open.id).collect();
    assert_eq!(of_open.len(), 2);
    assert_eq!(of_open[1].event, AlertEvent::Escalated);
    assert_eq!(of_open[1].alert.max_severity, 75);
}

#[test]
fn replicas_resolving_what_a_new_rule_covers_resolve_each_incident_once() {
    let Some(db) = TestDb::create("replicas_resolving_what_a_new_rule_covers") else {
        return;
    };
    let replicas: Vec<Arc<PgStore>> = (0..4).map(|_| Arc::new(connect(&db.url))).collect();
    let sinks = vec!["siem".to_string()];
    let hosts = ["10.0.0.1", "10.0.0.2", "10.0.9.1"];
    for host in hosts {
        replicas[0]
            .insert_with_outbox(&raised(t(0), host, 60), &sinks)
            .unwrap();
    }
    // Another detector's incident of a covered host is not the rule's.
    let mut elsewhere = raised(t(0), "10.0.0.1", 60);
    elsewhere.detector = "other".into();
    replicas[0].insert_with_outbox(&elsewhere, &sinks).unwrap();
    // Eight threads on four replicas resolve what one rule (10.0.0.0/24 of `default`) covers.
    let threads = 8;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|n| {
            let (store, start, sinks) = (
                Arc::clone(&replicas[n % replicas.len()]),
                Arc::clone(&start),
                sinks.clone(),
            );
            std::thread::spawn(move || {
                let covers = |a: &Alert| {
                    a.entity
                        .as_deref()
                        .is_some_and(|e| e.starts_with("10.0.0."))
                };
                let scope = Cover {
                    detector: Some("default"),
                    entity: None,
                };
                start.wait();
                store
                    .resolve_covered(scope, &covers, t(100), &sinks)
                    .unwrap()
                    .into_iter()
                    .map(|a| a.entity.unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut resolved: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    resolved.sort();
    assert_eq!(resolved, ["10.0.0.1", "10.0.0.2"], "each once");
    for host in hosts {
        let incidents = of_entity(&replicas[1], host);
        let mine: Vec<_> = incidents
            .iter()
            .filter(|a| a.detector == "default")
            .collect();
        assert_eq!(mine.len(), 1);
        let events: Vec<_> = replicas[2]
            .deliveries(&mine[0].id)
            .unwrap()
            .iter()
            .map(|d| d.event)
            .collect();
        if host.starts_with("10.0.0.") {
            assert_eq!(mine[0].status, AlertStatus::Resolved);
            assert_eq!(mine[0].resolved_at, Some(t(100)));
            assert_eq!(events, [AlertEvent::Opened, AlertEvent::Resolved]);
        } else {
            assert_eq!(mine[0].status, AlertStatus::Open);
            assert_eq!(events, [AlertEvent::Opened]);
        }
    }
    let other = replicas[3].get(&elsewhere.id).unwrap().unwrap();
    assert_eq!(other.status, AlertStatus::Open, "another detector's");
    // The entity scope narrows the read; the next anomaly of a resolved host opens anew.
    let one = Cover {
        detector: None,
        entity: Some("10.0.9.1"),
    };
    let none = replicas[0]
        .resolve_covered(one, &|_| false, t(200), &sinks)
        .unwrap();
    assert!(none.is_empty());
    let again = replicas[1]
        .resolve_covered(one, &|_| true, t(200), &sinks)
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entity.as_deref(), Some("10.0.9.1"));
    let next = raised(t(300), "10.0.0.1", 60);
    replicas[2].insert_with_outbox(&next, &sinks).unwrap();
    let of_host: Vec<_> = of_entity(&replicas[0], "10.0.0.1")
        .into_iter()
        .filter(|a| a.detector == "default")
        .collect();
    assert_eq!(of_host.len(), 2);
}
