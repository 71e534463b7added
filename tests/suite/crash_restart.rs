//! The real binary under kill -9, damaged model files, an unusable data directory and SIGTERM:
//! what the README's "Guarantees" promise survives each, checked from outside the process.
//!
//! Each test runs `netsentinel serve` on a port the OS picks (read back from its JSON log line
//! `netsentinel listening`) over its own temp directory. Loops are bounded and every wait has a
//! deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netsentinel::detector::model::Model;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::process::{Process, START_DEADLINE, binary};
use crate::support::traffic::{alert_pages, bursty_batch};

const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// A running `netsentinel` child process and what it has logged so far.
struct Server(Process);

impl std::ops::Deref for Server {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl Server {
    /// Starts the service on `data_dir` and waits until it listens.
    fn start(data_dir: &Path, log_filter: &str) -> Server {
        let mut cmd = binary();
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log", log_filter]);
        Server(Process::spawn(cmd, "the service"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no handler runs, nothing is flushed: a power cut as far as the process knows.
    fn kill_9(self) {
        self.0.kill_9();
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit on its own, up to a deadline.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the service did not exit within {EXIT_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the log, up to a deadline; returns whether it did.
    fn wait_for_log(&self, deadline: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if pred(&self.log.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// SIGTERM and wait, for tests that only need the process gone cleanly.
    fn stop(mut self) {
        self.sigterm();
        let status = self.wait_exit();
        assert!(status.success(), "graceful stop exits 0, got {status}");
    }
}

/// A client that never reuses a connection, so a killed server cannot hand it a stale one.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a client")
}

fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

fn model_path(data_dir: &Path, version: u64) -> PathBuf {
    models_dir(data_dir).join(format!("model-{version:010}.bin"))
}

/// The version the ACTIVE pointer names on disk.
fn active_on_disk(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(models_dir(data_dir).join("ACTIVE"))
        .ok()
        .map(|s| s.trim().parse().expect("ACTIVE holds a version number"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = client.get(url).send().await.expect("the request is sent");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn fit(client: &reqwest::Client, server: &Server, n_records: usize, seed: u64) -> Value {
    let response = client
        .post(server.url("/v1/model/fit"))
        .json(&fit_request(n_records, seed, 20))
        .send()
        .await
        .expect("the fit is sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("fit answers JSON")
}

fn fit_request(n_records: usize, seed: u64, n_estimators: u64) -> Value {
    json!({
        "generate": {"n_records": n_records, "seed": seed},
        "params": {"n_estimators": n_estimators, "seed": seed},
    })
}

/// What a client had acknowledged to it before a crash: fits answered 201, alerts answered 2xx.
#[derive(Default)]
struct Acknowledged {
    max_fit_version: u64,
    alert_ids: Vec<String>,
}

/// Checks a freshly restarted service against what was acknowledged before the crash; returns
/// the active version (0 for none).
async fn check_after_restart(
    client: &reqwest::Client,
    server: &Server,
    data_dir: &Path,
    acked: &Acknowledged,
    round: usize,
) -> u64 {
    let (ready, ready_body) = get_json(client, &server.url("/readyz")).await;
    let on_disk = active_on_disk(data_dir);
    let (model_status, model) = get_json(client, &server.url("/v1/model")).await;
    match ready {
        StatusCode::OK => {
            assert_eq!(model_status, StatusCode::OK, "round {round}: {model}");
            let served = model["version"].as_u64().expect("a version");
            assert_eq!(
                ready_body["model_version"], served,
                "round {round}: readiness and /v1/model agree"
            );
            assert_eq!(
                Some(served),
                on_disk,
                "round {round}: the served version is the one ACTIVE names on disk"
            );
            let bytes = std::fs::read(model_path(data_dir, served)).expect("the active file");
            let decoded = Model::from_bytes(&bytes).unwrap_or_else(|e| {
                panic!("round {round}: the active model file {served} is torn: {e}")
            });
            assert_eq!(decoded.version(), served);
            assert_eq!(
                serde_json::to_value(decoded.meta()).unwrap(),
                model,
                "round {round}: the service serves exactly the model on disk"
            );
            assert!(
                served >= acked.max_fit_version,
                "round {round}: version {} was acknowledged with 201 but {served} is active",
                acked.max_fit_version
            );
            served
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(
                acked.max_fit_version, 0,
                "round {round}: a fit was acknowledged, yet no model is ready: {ready_body}"
            );
            assert_eq!(ready_body["code"], "not-ready", "{ready_body}");
            assert!(ready_body["detail"].as_str().is_some_and(|d| !d.is_empty()));
            assert_eq!(model_status, StatusCode::NOT_FOUND, "{model}");
            0
        }
        other => panic!("round {round}: /readyz answered {other}: {ready_body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_fits_and_scores_never_loses_an_acknowledged_model_or_alert() {
    const ROUNDS: usize = 8;
    let dir = tempfile::tempdir().expect("a temp dir");
    let data_dir = dir.path().to_path_buf();
    let client = client();
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let mut last_version = 0;
    let mut fits_in_flight_at_kill = 0usize;

    for round in 0..ROUNDS {
        let server = Server::start(&data_dir, "info");
        let version = {
            let snapshot = std::mem::take(&mut *acked.lock().unwrap());
            let v = check_after_restart(&client, &server, &data_dir, &snapshot, round).await;
            let listed = alert_pages(&client, &server.0.base_url, "limit=1000")
                .await
                .concat();
            for id in &snapshot.alert_ids {
                assert!(
                    listed.contains(id),
                    "round {round}: alert {id} was acknowledged before the kill but is gone"
                );
            }
            *acked.lock().unwrap() = snapshot;
            v
        };
        assert!(
            version >= last_version,
            "round {round}: the active version went back from {last_version} to {version}"
        );
        last_version = version;

        // Load: two clients fitting back to back, one scoring bursts (alerts once a model exists).
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(Mutex::new(0usize));
        let mut tasks = Vec::new();
        for worker in 0..2u64 {
            let (client, url, stop, acked, in_flight) = (
                client.clone(),
                server.url("/v1/model/fit"),
                stop.clone(),
                acked.clone(),
                in_flight.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let seed = (round as u64) * 1000 + worker * 100 + i;
                    *in_flight.lock().unwrap() += 1;
                    let sent = client
                        .post(&url)
                        .json(&fit_request(3000, seed, 60))
                        .send()
                        .await;
                    *in_flight.lock().unwrap() -= 1;
                    let Ok(response) = sent else { break };
                    if response.status() != StatusCode::CREATED {
                        break;
                    }
                    let Ok(body) = response.json::<Value>().await else {
                        break;
                    };
                    let v = body["version"].as_u64().expect("a fit names its version");
                    let mut a = acked.lock().unwrap();
                    a.max_fit_version = a.max_fit_version.max(v);
                }
            }));
        }
        {
            let (client, url, stop, acked) = (
                client.clone(),
                server.url("/v1/score"),
                stop.clone(),
                acked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for i in 0..500u64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let sent = client.post(&url).json(&bursty_batch(i)).send().await;
                    let Ok(response) = sent else { break };
                    let status = response.status();
                    let Ok(body) = response.json::<Value>().await else {
                        break;
                    };
                    if status == StatusCode::CONFLICT {
                        // No model yet: wait for the first fit.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    if !status.is_success() {
                        break;
                    }
                    if let Some(id) = body["alert"]["id"].as_str() {
                        acked.lock().unwrap().alert_ids.push(id.to_string());
                    }
                }
            }));
        }

        // Kill at a different moment each round, while the load is running.
        let delay = 400 + (round as u64 * 173) % 700;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        fits_in_flight_at_kill += *in_flight.lock().unwrap();
        server.kill_9();
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.expect("a load task did not panic");
        }
    }

    let server = Server::start(&data_dir, "info");
    let snapshot = std::mem::take(&mut *acked.lock().unwrap());
    let version = check_after_restart(&client, &server, &data_dir, &snapshot, ROUNDS).await;
    assert!(version >= last_version);
    let listed = alert_pages(&client, &server.0.base_url, "limit=1000")
        .await
        .concat();
    for id in &snapshot.alert_ids {
        assert!(listed.contains(id), "alert {id} was lost");
    }
    assert!(
        snapshot.max_fit_version > 0 && !snapshot.alert_ids.is_empty(),
        "the load must have fitted and alerted for the test to prove anything \
         (fits acknowledged up to version {}, {} alerts)",
        snapshot.max_fit_version,
        snapshot.alert_ids.len()
    );
    eprintln!(
        "{ROUNDS} kills: {fits_in_flight_at_kill} fits were in flight at a kill; active version {version}; {} alerts kept",
        snapshot.alert_ids.len()
    );
    // Leftover temp files from interrupted writes are cleaned at start.
    let temps: Vec<_> = std::fs::read_dir(models_dir(&data_dir))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temp files left after start: {temps:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_model_files_are_set_aside_and_the_newest_valid_one_is_served() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data_dir = dir.path().to_path_buf();
    let client = client();

    let server = Server::start(&data_dir, "info");
    for seed in 1..=3 {
        fit(&client, &server, 300, seed).await;
    }
    server.stop();
    assert_eq!(active_on_disk(&data_dir), Some(3));

    // One flipped byte in the middle of the active model.
    let path = model_path(&data_dir, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let server = Server::start(&data_dir, "info");
    let (status, ready) = get_json(&client, &server.url("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["model_version"], 2,
        "the newest valid version is served"
    );
    assert_eq!(active_on_disk(&data_dir), Some(2), "ACTIVE is repointed");
    assert!(
        path.with_extension("bin.corrupt").is_file(),
        "the damaged file is set aside"
    );
    assert!(!path.exists());
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("model version 3 is corrupt")),
        "the corruption is reported in the log: {:?}",
        server.log_lines()
    );
    server.stop();

    // Truncated: half of version 2 is gone.
    let path = model_path(&data_dir, 2);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let server = Server::start(&data_dir, "info");
    let (status, ready) = get_json(&client, &server.url("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["model_version"], 1);
    assert!(path.with_extension("bin.corrupt").is_file());
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("model version 2 is corrupt"))
    );
    server.stop();

    // None valid: not ready, and the reason says what happened and what to do.
    let path = model_path(&data_dir, 1);
    std::fs::write(
        &path,
        b"NSMODEL\0 but not really a model file at all, just words",
    )
    .unwrap();
    let server = Server::start(&data_dir, "info");
    let (status, ready) = get_json(&client, &server.url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["code"], "not-ready");
    let detail = ready["detail"].as_str().expect("a detail");
    assert!(
        detail.contains("model version 1 is corrupt") && detail.contains("POST /v1/model/fit"),
        "{detail}"
    );
    // A new fit takes a fresh number: set-aside versions are never reused.
    let meta = fit(&client, &server, 300, 9).await;
    assert_eq!(meta["version"], 4);
    let (status, _) = get_json(&client, &server.url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    server.stop();
}

#[test]
fn an_unusable_data_dir_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let blocker = dir.path().join("a-regular-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let data_dir = blocker.join("data");
    let mut child = binary()
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the service did not give up");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(
        stderr.contains("netsentinel:") && stderr.contains(&*data_dir.to_string_lossy()),
        "stderr names the directory: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Debug for tower_http: its "started processing request" lines show what is in flight.
    let server = Server::start(dir.path(), "info,tower_http=debug");
    let client = client();
    fit(&client, &server, 300, 1).await;
    let started_before = count_started(&server.log_lines());

    const FITS: usize = 2;
    const SCORES: usize = 6;
    let mut burst = Vec::new();
    for i in 0..FITS {
        let request =
            client
                .post(server.url("/v1/model/fit"))
                .json(&fit_request(60_000, 10 + i as u64, 200));
        burst.push(tokio::spawn(request.send()));
    }
    for i in 0..SCORES {
        let request = client
            .post(server.url("/v1/score"))
            .json(&bursty_batch(i as u64));
        burst.push(tokio::spawn(request.send()));
    }
    // SIGTERM once the server has taken every request of the burst.
    let all_started = server.wait_for_log(START_DEADLINE, |log| {
        count_started(log) >= started_before + FITS + SCORES
    });
    assert!(all_started, "the burst never reached the server");
    let finished_at_signal = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("finished processing request"))
        .count();
    server.sigterm();
    assert!(
        server.wait_for_log(EXIT_DEADLINE, |log| log
            .iter()
            .any(|l| l.contains("shutdown signal received"))),
        "the signal is logged"
    );

    // A new connection after the signal is refused (or finds the process already gone).
    let late = client.get(server.url("/healthz")).send().await;
    match late {
        Err(e) => assert!(e.is_connect(), "a late request fails to connect: {e}"),
        Ok(r) => panic!("a connection after SIGTERM was served: {}", r.status()),
    }

    for (i, task) in burst.into_iter().enumerate() {
        let response = task
            .await
            .expect("the request task did not panic")
            .unwrap_or_else(|e| panic!("in-flight request {i} was cut off: {e}"));
        assert!(
            response.status().is_success(),
            "in-flight request {i}: {}",
            response.status()
        );
    }
    let mut server = server;
    let status = server.wait_exit();
    let finished = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("finished processing request"))
        .count();
    eprintln!(
        "{} of {} burst requests were still in flight at SIGTERM",
        finished.saturating_sub(finished_at_signal),
        FITS + SCORES
    );
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let stderr = server.stderr.lock().unwrap().clone();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn count_started(log: &[String]) -> usize {
    log.iter()
        .filter(|l| l.contains("started processing request"))
        .count()
}
