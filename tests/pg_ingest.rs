//! Continuous ingest on PostgreSQL: two replicas (two `AppState`s on one database) ingesting
//! interleaved pieces of one log into one detector, at the same time, store exactly the windows
//! and scores of one `score` request with the whole log; each window once.
//!
//! Needs `NETSENTINEL_TEST_DATABASE_URL`; see `tests/support/postgres.rs`.

mod support;

use std::collections::BTreeMap;

use netsentinel::config::DatabaseUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};

use support::app::{TestApp, spawn_app_with};
use support::data::{shared_zeek, zeek_json_lines_in_order};
use support::postgres::TestDb;
use support::responses::{json_ok, json_with_status, without_closed_at};

fn conn_log() -> String {
    String::from_utf8(shared_zeek("conn.log")).unwrap()
}

async fn replica(url: &str) -> TestApp {
    let url = DatabaseUrl::parse(url).unwrap();
    spawn_app_with(move |s| s.database_url = Some(url)).await
}

const TSV: &str = "text/zeek-tsv";

/// Sends each piece twice (the second a retry): returns the lines accepted.
async fn send_all(app: &TestApp, pieces: Vec<(usize, String)>) -> u64 {
    let mut accepted = 0;
    for (_, p) in pieces {
        accepted += ingest(app, p.clone()).await["accepted"].as_u64().unwrap();
        let again = ingest(app, p).await;
        assert_eq!(again["accepted"], 0, "{again}");
    }
    accepted
}
const BASE: &str = "/v1/detectors/shared";

/// Posts one batch; anything but a 202 fails the test (replicas take turns on the stream, so
/// concurrency is never a 503).
async fn ingest(app: &TestApp, body: String) -> Value {
    let answer = app
        .post_raw(&format!("{BASE}/ingest"), Some(TSV), body)
        .await;
    json_with_status(answer, StatusCode::ACCEPTED).await
}

/// Score results or stored windows: (start, entity) -> score.
fn scores(rows: &[Value]) -> BTreeMap<(String, String), f64> {
    rows.iter()
        .map(|r| (key(r), r["score"].as_f64().unwrap()))
        .collect()
}

fn key(r: &Value) -> (String, String) {
    (
        r["timestamp"].as_str().unwrap().to_owned(),
        r["entity"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_ingesting_interleaved_pieces_store_the_windows_of_one_request() {
    let Some(db) = TestDb::create("two_replicas_ingesting_interleaved_pieces") else {
        return;
    };
    let log = conn_log();
    let (header, lines): (Vec<&str>, Vec<&str>) = log
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("#close"))
        .partition(|l| l.starts_with('#'));
    let header = format!("{}\n", header.join("\n"));
    let lines: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();

    let a = replica(&db.url).await;
    let source = json!({
        "format": "zeek", "window": "30s", "group_by": "id.resp_h", "allowed_lateness": "10m"
    });
    put_detector(&a, BASE, source).await;
    fit_on_tsv(&a, BASE, log.clone()).await;
    // B starts after: it loads the detector and its model from the database.
    let b = replica(&db.url).await;
    ingest(&a, header.clone()).await;
    let pieces: Vec<String> = lines.chunks(9).map(|c| c.concat()).collect();
    let (mine, theirs): (Vec<_>, Vec<_>) = pieces
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    // Both at once, each its own pieces, each sent twice: every line counts once.
    let half = mine.len() / 2;
    let (na, nb) = tokio::join!(
        send_all(&a, mine[..half].to_vec()),
        send_all(&b, theirs[..half].to_vec())
    );
    // Then taking turns: each call finds the other replica's commit and reloads the stream.
    let mut rest = na + nb;
    for (m, t) in mine[half..].iter().zip(theirs[half..].iter()) {
        rest += send_all(&a, vec![m.clone()]).await;
        rest += send_all(&b, vec![t.clone()]).await;
    }
    for extra in mine.iter().skip(theirs.len()) {
        rest += send_all(&a, vec![extra.clone()]).await;
    }
    assert_eq!(rest as usize, lines.len());
    let metrics = a.get("/metrics").await.text().await.unwrap();
    let reloads: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("netsentinel_ingest_reloads_total{detector=\"shared\"} "))
        .unwrap_or_else(|| panic!("no reload counted: {metrics}"))
        .parse()
        .unwrap();
    assert!(reloads >= 2.0, "{reloads}");
    let flushed = json_ok(b.post_empty(&format!("{BASE}/flush")).await).await;
    let one = json_ok(
        a.post_raw(&format!("{BASE}/score"), Some(TSV), log.clone())
            .await,
    )
    .await;
    let expected = scores(one["results"].as_array().unwrap());
    assert_eq!(flushed["windows_closed"], expected.len());
    let page = json_ok(a.get(&format!("{BASE}/windows?limit=1000")).await).await;
    let stored = page["windows"].as_array().unwrap();
    let got = scores(stored);
    assert_eq!(got.len(), stored.len());
    assert_eq!(got, expected);
    // A flush on the other replica finds nothing left open.
    let again = json_ok(a.post_empty(&format!("{BASE}/flush")).await).await;
    assert_eq!(again["windows_closed"], 0, "{again}");
}

/// Ingests each piece into `flows` twice under its own key; returns the records accepted.
async fn send_records(app: &TestApp, pieces: Vec<(usize, String)>) -> u64 {
    let mut total = 0;
    for (i, p) in pieces {
        let mut answers = Vec::new();
        for _ in 0..2 {
            let request = app
                .request(reqwest::Method::POST, "/v1/detectors/flows/ingest")
                .header("content-type", "application/x-ndjson")
                .header("idempotency-key", format!("piece-{i}"))
                .body(p.clone());
            answers.push(json_with_status(app.send(request).await, StatusCode::ACCEPTED).await);
        }
        // The retry replays the first answer and stores nothing again.
        assert_eq!(answers[0], answers[1]);
        total += answers[0]["accepted"].as_u64().unwrap();
    }
    total
}

/// (timestamp, entity, score bits) of score results or stored windows, sorted.
fn record_keys(rows: &[Value], entity: &str) -> Vec<(String, String, u64)> {
    let mut out: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["timestamp"].as_str().unwrap().to_owned(),
                r[entity].as_str().unwrap().to_owned(),
                r["score"].as_f64().unwrap().to_bits(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A records detector on two replicas: pieces of one body ingested by both at once (each
/// piece under its own `Idempotency-Key`, sent twice) are stored once each, with the scores of
/// one `score` request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_ingesting_records_store_each_record_once_with_the_scores_of_one_request() {
    let Some(db) = TestDb::create("two_replicas_ingesting_records") else {
        return;
    };
    const RECORDS: &str = "/v1/detectors/flows";
    let a = replica(&db.url).await;
    put_detector(
        &a,
        RECORDS,
        json!({"format": "records", "group_by": "src_ip"}),
    )
    .await;
    let fit = a
        .post_json(
            &format!("{RECORDS}/model/fit"),
            &json!({"generate": {}, "params": {"n_estimators": 30, "seed": 4}}),
        )
        .await;
    json_with_status(fit, StatusCode::CREATED).await;
    let b = replica(&db.url).await;
    let mut records = a.seed_records().await;
    for (i, r) in records.iter_mut().enumerate() {
        r["src_ip"] = json!(format!("10.0.0.{}", i % 7));
    }
    let pieces: Vec<String> = records
        .chunks(37)
        .map(|c| c.iter().map(|r| format!("{r}\n")).collect())
        .collect();
    let (mine, theirs): (Vec<_>, Vec<_>) = pieces
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let (na, nb) = tokio::join!(send_records(&a, mine), send_records(&b, theirs));
    assert_eq!((na + nb) as usize, records.len());
    let one = json_ok(
        a.post_json(&format!("{RECORDS}/score"), &json!(records))
            .await,
    )
    .await;
    let expected = record_keys(one["results"].as_array().unwrap(), "src_ip");
    let page = json_ok(b.get(&format!("{RECORDS}/windows?limit=1000")).await).await;
    let got = record_keys(page["windows"].as_array().unwrap(), "entity");
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pending_before_the_fit_are_scored_once_by_two_replicas_flushing_at_once() {
    let Some(db) = TestDb::create("windows_pending_before_the_fit") else {
        return;
    };
    const JSON_LINES: &str = "application/x-zeek-json";
    let lines = zeek_json_lines_in_order();
    let base = "/v1/detectors/early";
    let a = replica(&db.url).await;
    let source = json!({
        "format": "zeek", "window": "1s", "group_by": "id.orig_h", "allowed_lateness": "0s"
    });
    put_detector(&a, base, source).await;
    let b = replica(&db.url).await;
    // No model anywhere: the replicas take turns, and what closes is kept pending.
    let mut pending = 0;
    for (i, chunk) in lines.chunks(4).enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = app
            .post_raw(&format!("{base}/ingest"), Some(JSON_LINES), chunk.concat())
            .await;
        let answer = json_with_status(r, StatusCode::ACCEPTED).await;
        assert_eq!(answer["late"], 0, "{answer}");
        pending = answer["windows_pending"].as_u64().unwrap();
    }
    assert!(pending > 5, "{pending}");
    let fit = a
        .post_raw(
            &format!("{base}/model/fit?n_estimators=30&seed=1&max_samples=8"),
            Some(JSON_LINES),
            lines.concat(),
        )
        .await;
    let fitted = json_with_status(fit, StatusCode::CREATED).await;
    support::eventually(
        "b to serve the fitted model",
        std::time::Duration::from_secs(15),
        || async {
            let r = b.get(&format!("{base}/model")).await;
            let m: Value = r.json().await.ok()?;
            (m == fitted).then_some(())
        },
    )
    .await;
    let one = json_ok(
        a.post_raw(&format!("{base}/score"), Some(JSON_LINES), lines.concat())
            .await,
    )
    .await;
    let expected = scores(one["results"].as_array().unwrap());
    // Both flush at once: the pending windows are scored by exactly one of them.
    let flush = format!("{base}/flush");
    let (fa, fb) = tokio::join!(a.post_empty(&flush), b.post_empty(&flush));
    let (fa, fb) = (json_ok(fa).await, json_ok(fb).await);
    assert_eq!(
        fa["pending_scored"].as_u64().unwrap() + fb["pending_scored"].as_u64().unwrap(),
        pending,
        "{fa} {fb}"
    );
    let page = json_ok(b.get(&format!("{base}/windows?limit=1000")).await).await;
    assert_eq!(page["windows_pending"], 0, "{page}");
    let stored = page["windows"].as_array().unwrap();
    let got = scores(stored);
    assert_eq!(got.len(), stored.len());
    // Bit for bit, as one `score` request with the model.
    assert_eq!(got, expected);
}

/// The windows of a listing's text, each as written.
fn objects(listing: &str) -> Vec<&str> {
    let (head, tail) = (
        "{\"windows\":[",
        listing.rfind("],\"next_cursor\":").unwrap(),
    );
    assert!(listing.starts_with(head), "{listing}");
    let array = &listing[head.len()..tail];
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    let (mut in_string, mut escaped) = (false, false);
    for (i, c) in array.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    out.push(&array[start..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Windows stored as JSON on PostgreSQL before the compact form (rows as main at 11c8802
/// wrote them: `tests/fixtures/windows-v1/z-before.json`'s windows, inserted as they were)
/// list byte for byte as then, beside windows stored compactly after them, which list as the
/// old code listed the same windows (`z-after.json`, all but `closed_at`).
#[tokio::test]
async fn windows_stored_as_json_before_the_compact_form_list_as_they_did() {
    let Some(db) = TestDb::create("windows_stored_as_json_on_pg") else {
        return;
    };
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/windows-v1");
    let read = |name: &str| std::fs::read_to_string(fixture.join(name)).unwrap();
    let (before, after) = (read("z-before.json"), read("z-after.json"));
    let a = replica(&db.url).await;
    let base = "/v1/detectors/z";
    let source = json!({
        "format": "zeek", "window": "30s", "group_by": "id.resp_h", "allowed_lateness": "1m"
    });
    put_detector(&a, base, source).await;
    fit_on_tsv(&a, base, conn_log()).await;
    // The old rows, as the old code inserted them.
    let old: Vec<String> = objects(&before).into_iter().map(str::to_owned).collect();
    assert_eq!(old.len(), 114);
    let time = |w: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(w[field].as_str().unwrap()).unwrap()
    };
    let mut cut = 0;
    let rows: Vec<(i64, String, i64, bool, String)> = old
        .iter()
        .map(|text| {
            let w: Value = serde_json::from_str(text).unwrap();
            let start = time(&w, "timestamp").timestamp();
            cut = cut.max(start + 30);
            (
                start,
                w["entity"].as_str().unwrap_or("").to_owned(),
                time(&w, "closed_at").timestamp_millis(),
                w["is_anomaly"].as_bool().unwrap(),
                text.clone(),
            )
        })
        .collect();
    let url = db.url.clone();
    support::postgres::off_runtime(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        for (start, entity, closed, anomalous, body) in &rows {
            client
                .execute(
                    "INSERT INTO windows (detector, start_s, entity, seq, closed_at_ms, is_anomaly, body)
                     VALUES ('z', $1, $2, 0, $3, $4, $5)",
                    &[start, entity, closed, anomalous, body],
                )
                .unwrap();
        }
    });
    let listing = || async {
        a.get(&format!("{base}/windows?limit=1000"))
            .await
            .text()
            .await
            .unwrap()
    };
    assert_eq!(listing().await, before);
    // The lines of the rest of the log in windows after the old ones (the old stream is not
    // here: the lines of the windows it had closed would be late there).
    let log = read("zeek-rest.log");
    let header: String = conn_log()
        .lines()
        .filter(|l| l.starts_with('#') && !l.starts_with("#close"))
        .map(|l| format!("{l}\n"))
        .collect();
    let later: String = log
        .lines()
        .filter(|l| {
            let ts: f64 = l.split('\t').next().unwrap().parse().unwrap();
            (ts as i64).div_euclid(30) * 30 >= cut
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!later.is_empty());
    ingest_to(&a, base, format!("{header}{later}")).await;
    json_ok(a.post_empty(&format!("{base}/flush")).await).await;
    let now = listing().await;
    let listed = objects(&now);
    assert_eq!(&listed[..114], &old[..], "the old rows list as they did");
    let new: Vec<String> = listed[114..].iter().map(|w| without_closed_at(w)).collect();
    assert!(!new.is_empty());
    let want: Vec<String> = objects(&after)
        .into_iter()
        .filter(|w| {
            let w: Value = serde_json::from_str(w).unwrap();
            time(&w, "timestamp").timestamp() >= cut
        })
        .map(without_closed_at)
        .collect();
    assert_eq!(new, want);
    let url = db.url.clone();
    let compact: i64 = support::postgres::off_runtime(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client
            .query_one("SELECT COUNT(*) FROM windows WHERE body LIKE '~%'", &[])
            .unwrap()
            .get(0)
    });
    assert_eq!(
        compact as usize,
        new.len(),
        "the new windows are stored compactly"
    );
}

/// Posts one TSV batch to the detector at `base` (202).
/// Creates (or replaces) the detector at `base` with `source`.
async fn put_detector(app: &TestApp, base: &str, source: Value) {
    let put = app
        .send(
            app.request(reqwest::Method::PUT, base)
                .json(&json!({ "source": source })),
        )
        .await;
    assert!(put.status().is_success());
}

/// Fits the model of the detector at `base` on the Zeek TSV `log` (50 trees, seed 3).
async fn fit_on_tsv(app: &TestApp, base: &str, log: String) {
    let fit = app
        .post_raw(
            &format!("{base}/model/fit?n_estimators=50&seed=3"),
            Some(TSV),
            log,
        )
        .await;
    json_with_status(fit, StatusCode::CREATED).await;
}

async fn ingest_to(app: &TestApp, base: &str, body: String) -> Value {
    let answer = app
        .post_raw(&format!("{base}/ingest"), Some(TSV), body)
        .await;
    json_with_status(answer, StatusCode::ACCEPTED).await
}
