//! PostgreSQL restarted under traffic: replicas report unready and answer 503, then recover by themselves, losing no 2xx alert.
//!
//! A test binary of its own because it stops the shared test server: cargo runs test binaries
//! one after another, so no other test's database disappears under it. Needs
//! `NETSENTINEL_TEST_DATABASE_URL` and `NETSENTINEL_TEST_PG_CTL` (a `pg_ctl` for that server;
//! `scripts/test-postgres.sh` sets both).

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::eventually;
use support::postgres::{PG_CTL_VAR, Replica, TestDb};
use support::traffic::{alert_pages, bursty_batch, client, get_json};

fn pg_ctl(pg_ctl: &str, args: &[&str]) {
    let out = Command::new(pg_ctl)
        .args(args)
        .output()
        .expect("pg_ctl runs");
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the server again if the test fails while it is down, so later test binaries find it.
struct StartOnDrop(String);

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        // Fails harmlessly when the server is already running.
        let _ = Command::new(&self.0).arg("start").output();
    }
}

/// What the traffic saw: alert ids answered 2xx, and 503 `store-unavailable` answers.
#[derive(Default)]
struct Traffic {
    acknowledged: Vec<String>,
    unavailable: usize,
    other_failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarts_mid_traffic_and_no_acknowledged_alert_is_lost() {
    let test = "the_database_restarts_mid_traffic_and_no_acknowledged_alert_is_lost";
    let Some(db) = TestDb::create(test) else {
        return;
    };
    let Some(ctl) = support::postgres::required_env(PG_CTL_VAR, test) else {
        return;
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Arc<Vec<Replica>> = Arc::new(
        (0..3)
            .map(|i| Replica::start(&format!("r{i}"), &db.url, dirs[i].path(), &[]))
            .collect(),
    );
    let client = client();
    let (status, fitted) = support::traffic::post_json(
        &client,
        &replicas[0].url("/v1/model/fit"),
        &json!({"generate": {}, "params": {"n_estimators": 20, "seed": 1}}),
    )
    .await;
    assert_eq!(status, 201, "{fitted}");
    let version = fitted["version"].as_u64().unwrap();
    for r in replicas.iter() {
        eventually("every replica ready", Duration::from_secs(15), || async {
            let (s, ready) = get_json(&client, &r.url("/readyz")).await;
            (s == 200 && ready["model_version"] == version).then_some(())
        })
        .await;
    }

    // Clients score round robin until told to stop, recording what each answer promised.
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let (replicas, traffic, stop, client) = (
                Arc::clone(&replicas),
                Arc::clone(&traffic),
                Arc::clone(&stop),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = &replicas[((w + i) % 3) as usize];
                    let sent = client
                        .post(r.url("/v1/score"))
                        .json(&bursty_batch(w * 100_000 + i))
                        .send()
                        .await;
                    let Ok(response) = sent else {
                        continue;
                    };
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    {
                        let mut t = traffic.lock().unwrap();
                        match (status, body["alert"]["id"].as_str(), body["code"].as_str()) {
                            (200, Some(id), _) => t.acknowledged.push(id.to_string()),
                            (503, _, Some("store-unavailable")) => t.unavailable += 1,
                            _ => t.other_failures.push(format!("{status}: {body}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();

    let acknowledged = || traffic.lock().unwrap().acknowledged.len();
    eventually(
        "alerts before the restart",
        Duration::from_secs(30),
        || async { (acknowledged() >= 10).then_some(()) },
    )
    .await;

    // Stop the server (fast: active connections are cut) and keep it down a moment.
    let _restart = StartOnDrop(ctl.clone());
    let ctl_stop = ctl.clone();
    tokio::task::spawn_blocking(move || pg_ctl(&ctl_stop, &["stop", "-m", "fast"]))
        .await
        .unwrap();
    for r in replicas.iter() {
        eventually(
            &format!("{} to report unready", r.name),
            Duration::from_secs(15),
            || async {
                let (s, body) = get_json(&client, &r.url("/readyz")).await;
                (s == 503 && body["code"] == "store-unavailable").then_some(())
            },
        )
        .await;
    }
    eventually(
        "503 answers while it is down",
        Duration::from_secs(20),
        || async { (traffic.lock().unwrap().unavailable > 0).then_some(()) },
    )
    .await;
    let ctl_start = ctl.clone();
    tokio::task::spawn_blocking(move || pg_ctl(&ctl_start, &["start"]))
        .await
        .unwrap();

    // Every replica recovers by itself, and traffic raises alerts again.
    for r in replicas.iter() {
        eventually(
            &format!("{} to report ready again", r.name),
            Duration::from_secs(30),
            || async {
                let (s, _) = get_json(&client, &r.url("/readyz")).await;
                (s == 200).then_some(())
            },
        )
        .await;
    }
    let before = acknowledged();
    eventually(
        "alerts after the restart",
        Duration::from_secs(30),
        || async { (acknowledged() >= before + 10).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let t = std::mem::take(&mut *traffic.lock().unwrap());
    assert!(
        t.other_failures.is_empty(),
        "answers other than 200 or 503 store-unavailable: {:?}",
        t.other_failures
    );
    // No alert a client was told about is missing, on any replica.
    for r in replicas.iter() {
        let listed: HashSet<String> = alert_pages(&client, &r.base_url, "limit=500")
            .await
            .concat()
            .into_iter()
            .collect();
        let lost: Vec<&String> = t
            .acknowledged
            .iter()
            .filter(|id| !listed.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} does not list 2xx alerts {lost:?}",
            r.name
        );
    }
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!(
            "{} alerts acknowledged, {} answered 503 store-unavailable during the restart\n",
            t.acknowledged.len(),
            t.unavailable
        ),
    );
}
