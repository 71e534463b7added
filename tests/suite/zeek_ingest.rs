//! Zeek conn logs end to end: real samples and a generated exfiltration log become window records,
//! checked against independent counts; arbitrary bytes never panic; the API hook and its errors.

use std::collections::HashMap;
use std::path::PathBuf;

use netsentinel::error::ApiError;
use netsentinel::records::zeek::{
    GroupBy, WindowRecord, ZeekError, ZeekFormat, ZeekOptions, aggregate, parse_conn_log,
};
use netsentinel::records::{Batch, BodyFormat, ReadSpec, read_slice};
use proptest::prelude::*;

/// A body read as the service reads a fit's (the default features), Zeek windows per `zeek`.
fn read(
    format: BodyFormat,
    body: &[u8],
    max_records: usize,
    zeek: ZeekOptions,
) -> Result<Batch, ApiError> {
    let spec = ReadSpec {
        zeek,
        ..ReadSpec::new(format, None, max_records)
    };
    read_slice(body, &spec, None)
        .map(|p| p.batch)
        .map_err(ApiError::from)
}

/// A conn log's window records as a batch (no record limit).
fn windows(body: &[u8], format: ZeekFormat, zeek: ZeekOptions) -> Result<Batch, ApiError> {
    let format = match format {
        ZeekFormat::Tsv => BodyFormat::ZeekTsv,
        ZeekFormat::Json => BodyFormat::ZeekJson,
    };
    read(format, body, usize::MAX, zeek)
}

/// A real sample from `shared/data/zeek`.
fn shared(name: &str) -> Vec<u8> {
    crate::support::data::shared_zeek(name)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/zeek")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn opts(window: &str, group_by: GroupBy) -> ZeekOptions {
    ZeekOptions {
        window: window.parse().unwrap(),
        group_by,
        ..ZeekOptions::default()
    }
}

fn records(body: &[u8], format: ZeekFormat, window: &str, group_by: GroupBy) -> Vec<WindowRecord> {
    let conns = parse_conn_log(body, format).unwrap();
    aggregate(&conns, &opts(window, group_by))
}

fn rfc3339(r: &WindowRecord) -> String {
    r.timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Totals of a set of records: (bytes_sent, bytes_received, connections).
fn totals(recs: &[WindowRecord]) -> (f64, f64, f64) {
    recs.iter().fold((0.0, 0.0, 0.0), |t, r| {
        (
            t.0 + r.bytes_sent,
            t.1 + r.bytes_received,
            t.2 + r.connections,
        )
    })
}

/// A deliberately naive TSV reader (tab-split, `#fields` lookup) to check the parser against:
/// per originating host, (connections, Σ orig_bytes, Σ resp_bytes).
fn naive_tsv_by_orig(body: &[u8]) -> HashMap<String, (f64, f64, f64)> {
    let text = std::str::from_utf8(body).unwrap();
    let mut fields: Vec<&str> = Vec::new();
    let mut out: HashMap<String, (f64, f64, f64)> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#fields\t") {
            fields = rest.split('\t').collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let values: Vec<&str> = line.split('\t').collect();
        let get = |name: &str| values[fields.iter().position(|f| *f == name).unwrap()];
        let num = |name: &str| get(name).parse::<f64>().unwrap_or(0.0);
        let e = out.entry(get("id.orig_h").to_string()).or_default();
        e.0 += 1.0;
        e.1 += num("orig_bytes");
        e.2 += num("resp_bytes");
    }
    out
}

#[test]
fn tsv_sample_windows_match_hand_counts() {
    let body = shared("conn.log");
    let hourly = records(&body, ZeekFormat::Tsv, "1h", GroupBy::None);
    // 360 connections between 23:44:10 and 23:48:22 UTC on 2013-09-15 (checked with awk).
    assert_eq!(hourly.len(), 1);
    assert_eq!(rfc3339(&hourly[0]), "2013-09-15T23:00:00Z");
    assert_eq!(hourly[0].entity, None);
    assert_eq!(totals(&hourly), (105_343.0, 5_342_835.0, 360.0));
    assert_eq!(hourly[0].active_sessions, 267.0);

    let five = records(&body, ZeekFormat::Tsv, "5m", GroupBy::None);
    let starts: Vec<String> = five.iter().map(rfc3339).collect();
    assert_eq!(starts, ["2013-09-15T23:40:00Z", "2013-09-15T23:45:00Z"]);
    assert_eq!(
        five.iter().map(|r| r.connections).collect::<Vec<_>>(),
        [127.0, 233.0]
    );
    assert_eq!(totals(&five), totals(&hourly));
    for r in &five {
        assert!(r.active_sessions >= 1.0 && r.active_sessions <= r.connections);
    }

    // The number of connections is the number of data lines.
    let lines = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .count();
    assert_eq!(lines, 360);
}

#[test]
fn tsv_sample_grouped_by_host_matches_a_naive_count() {
    let body = shared("conn.log");
    let expected = naive_tsv_by_orig(&body);
    let grouped = records(&body, ZeekFormat::Tsv, "1h", GroupBy::OrigHost);
    assert_eq!(grouped.len(), expected.len());
    assert_eq!(grouped.len(), 22);
    let mut seen = std::collections::HashSet::new();
    for r in &grouped {
        let host = r.entity.clone().unwrap();
        assert!(
            seen.insert((r.timestamp, host.clone())),
            "one record per (window, host)"
        );
        let (n, sent, received) = expected[&host];
        assert_eq!(
            (r.connections, r.bytes_sent, r.bytes_received),
            (n, sent, received),
            "{host}"
        );
    }
    // Sorted by entity within the single window.
    let hosts: Vec<&str> = grouped.iter().filter_map(|r| r.entity.as_deref()).collect();
    let mut sorted = hosts.clone();
    sorted.sort();
    assert_eq!(hosts, sorted);

    let by_resp = records(&body, ZeekFormat::Tsv, "1h", GroupBy::RespHost);
    assert_eq!(
        totals(&by_resp),
        totals(&records(&body, ZeekFormat::Tsv, "1h", GroupBy::None))
    );
}

#[test]
fn unset_byte_counts_count_as_zero() {
    let body = shared("conn.log");
    // Keep the header and only the lines whose orig_bytes (column 10) is unset.
    let text = std::str::from_utf8(&body).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| l.starts_with('#') || l.split('\t').nth(9) == Some("-"))
        .map(|l| format!("{l}\n"))
        .collect();
    let recs = records(kept.as_bytes(), ZeekFormat::Tsv, "1h", GroupBy::None);
    assert_eq!(totals(&recs), (0.0, 0.0, 149.0));
}

#[test]
fn json_sample_windows_match_hand_counts() {
    let body = shared("conn.json.log");
    let hourly = records(&body, ZeekFormat::Json, "1h", GroupBy::None);
    assert_eq!(hourly.len(), 1);
    assert_eq!(rfc3339(&hourly[0]), "2019-12-03T22:00:00Z");
    assert_eq!(totals(&hourly), (32_330.0, 100_331.0, 50.0));
    assert_eq!(hourly[0].active_sessions, 9.0);
    let five = records(&body, ZeekFormat::Json, "5m", GroupBy::None);
    assert_eq!(
        five.iter()
            .map(|r| (rfc3339(r), r.connections))
            .collect::<Vec<_>>(),
        [
            ("2019-12-03T22:40:00Z".to_string(), 5.0),
            ("2019-12-03T22:45:00Z".to_string(), 45.0)
        ]
    );
    assert_eq!(totals(&five), totals(&hourly));
    let grouped = records(&body, ZeekFormat::Json, "1h", GroupBy::OrigHost);
    assert_eq!(grouped.len(), 1);
    assert_eq!(grouped[0].entity.as_deref(), Some("10.18.20.97"));
}

#[test]
fn json_with_iso_timestamps_agrees_with_epoch() {
    // Zeek's json.timestamps option writes ts as ISO 8601; the records must not change.
    let body = shared("conn.json.log");
    let text = std::str::from_utf8(&body).unwrap();
    let iso: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ts = v["ts"].as_f64().unwrap();
            let micros = (ts * 1e6).round() as i64;
            let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
            v["ts"] = t
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into();
            format!("{v}\n")
        })
        .collect();
    let a = parse_conn_log(&body, ZeekFormat::Json).unwrap();
    let b = parse_conn_log(iso.as_bytes(), ZeekFormat::Json).unwrap();
    assert_eq!(a, b);
}

#[test]
fn exfiltrating_host_stands_out() {
    let body = fixture("exfil_conn.log");
    let expected = naive_tsv_by_orig(&body);
    let conns = parse_conn_log(&body, ZeekFormat::Tsv).unwrap();
    let n: f64 = expected.values().map(|v| v.0).sum();
    assert_eq!(conns.len() as f64, n);
    assert!(conns.len() > 3_000);

    let grouped = aggregate(&conns, &opts("1h", GroupBy::OrigHost));
    // 8 hosts, 6 hours, every host busy every hour.
    assert_eq!(grouped.len(), 48);
    let mut by_sent = grouped.clone();
    by_sent.sort_by(|a, b| b.bytes_sent.total_cmp(&a.bytes_sent));
    let top = &by_sent[0];
    assert_eq!(top.entity.as_deref(), Some("10.0.0.6"));
    assert_eq!(rfc3339(top), "2024-03-04T03:00:00Z");
    assert!(
        top.bytes_sent > 100.0 * by_sent[1].bytes_sent,
        "{} vs {}",
        top.bytes_sent,
        by_sent[1].bytes_sent
    );
    // Per-host totals over all windows match the naive reader.
    for (host, (n, sent, received)) in &expected {
        let mine: Vec<WindowRecord> = grouped
            .iter()
            .filter(|r| r.entity.as_deref() == Some(host))
            .cloned()
            .collect();
        assert_eq!(totals(&mine), (*sent, *received, *n), "{host}");
    }

    // Whole network: the exfiltration hour is the largest, and finer windows keep the totals.
    let hourly = aggregate(&conns, &opts("1h", GroupBy::None));
    assert_eq!(hourly.len(), 6);
    let max = hourly
        .iter()
        .max_by(|a, b| a.bytes_sent.total_cmp(&b.bytes_sent))
        .unwrap();
    assert_eq!(rfc3339(max), "2024-03-04T03:00:00Z");
    for w in ["30s", "5m", "90m", "1d"] {
        let recs = aggregate(&conns, &opts(w, GroupBy::None));
        assert_eq!(totals(&recs), totals(&hourly), "{w}");
        assert!(recs.windows(2).all(|p| p[0].timestamp < p[1].timestamp));
    }
    assert_eq!(aggregate(&conns, &opts("1d", GroupBy::None)).len(), 1);
}

#[test]
fn the_api_reads_zeek_media_types() {
    for (ct, format) in [
        ("text/zeek-tsv", BodyFormat::ZeekTsv),
        ("text/zeek-tsv; charset=utf-8", BodyFormat::ZeekTsv),
        ("application/x-zeek-json", BodyFormat::ZeekJson),
    ] {
        assert_eq!(
            BodyFormat::from_media_type(Some(ct.as_bytes())).unwrap(),
            format
        );
        assert!(format.is_zeek());
    }
    assert!(!BodyFormat::Csv.is_zeek());

    // Default options: hourly, whole network; the batch has the seed features and timestamps.
    let body = fixture("exfil_conn.log");
    let batch = read(BodyFormat::ZeekTsv, &body, 1000, ZeekOptions::default()).unwrap();
    assert_eq!(
        batch.features,
        [
            "bytes_sent",
            "bytes_received",
            "connections",
            "active_sessions"
        ]
    );
    assert_eq!(batch.len(), 6);
    assert_eq!(batch.parsed_times.as_ref().unwrap().len(), 6);

    // Grouped: the host is echoed beside each record.
    let batch = read(
        BodyFormat::ZeekTsv,
        &body,
        1000,
        opts("1h", GroupBy::OrigHost),
    )
    .unwrap();
    assert_eq!(batch.len(), 48);
    assert_eq!(batch.echo.get(0)["entity"], "10.0.0.1");

    let batch = read(
        BodyFormat::ZeekJson,
        &shared("conn.json.log"),
        10,
        ZeekOptions::default(),
    )
    .unwrap();
    assert_eq!(batch.timestamps.get(0), Some("2019-12-03T22:00:00Z"));

    // max_records bounds the window records.
    let err = read(
        BodyFormat::ZeekTsv,
        &body,
        47,
        opts("1h", GroupBy::OrigHost),
    )
    .unwrap_err();
    assert_eq!(err.status.as_u16(), 413);
}

#[test]
fn zeek_errors_become_problems_naming_the_line() {
    let mut body = shared("conn.log");
    // Corrupt the ts of the first data line (line 9, after 8 header lines).
    let at = body
        .windows(17)
        .position(|w| w == b"1379288667.706265")
        .unwrap();
    body[at] = b'x';
    let err: ApiError = read(BodyFormat::ZeekTsv, &body, 100, ZeekOptions::default()).unwrap_err();
    assert_eq!(err.status.as_u16(), 422);
    assert_eq!(err.code.as_str(), "invalid-zeek-line");
    assert_eq!(err.field.as_deref(), Some("ts"));
    assert!(err.detail.starts_with("line 9: "), "{}", err.detail);

    let err = read(
        BodyFormat::ZeekJson,
        b"{\"ts\":1}\n",
        100,
        ZeekOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        (err.status.as_u16(), err.code.as_str()),
        (422, "invalid-zeek-line")
    );
    assert_eq!(err.field.as_deref(), Some("id.orig_h"));

    let err = read(
        BodyFormat::ZeekTsv,
        b"#fields\tts\n",
        100,
        ZeekOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        (err.status.as_u16(), err.code.as_str()),
        (422, "missing-zeek-field")
    );
    assert_eq!(err.field.as_deref(), Some("id.orig_h"));

    let err = read(BodyFormat::ZeekTsv, b"", 100, ZeekOptions::default()).unwrap_err();
    assert_eq!(
        (err.status.as_u16(), err.code.as_str()),
        (422, "empty-batch")
    );

    let err: ApiError = ZeekOptions::from_params(Some("2w"), None)
        .unwrap_err()
        .into();
    assert_eq!(
        (err.status.as_u16(), err.code.as_str()),
        (400, "invalid-parameter")
    );
    assert_eq!(err.field.as_deref(), Some("window"));
    assert!(err.detail.contains("\"2w\""));
    let err: ApiError = ZeekOptions::from_params(None, Some("src"))
        .unwrap_err()
        .into();
    assert_eq!(err.field.as_deref(), Some("group_by"));
}

#[test]
fn invalid_utf8_names_the_line() {
    let mut body = shared("conn.json.log");
    // Inside the second line's uid.
    let second = body.iter().position(|&b| b == b'\n').unwrap() + 20;
    body[second] = 0xFF;
    let err = parse_conn_log(&body, ZeekFormat::Json).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    let mut body = shared("conn.log");
    let last = body.len() - 5;
    body[last] = 0xC3;
    let err = parse_conn_log(&body, ZeekFormat::Tsv).unwrap_err();
    assert!(matches!(err, ZeekError::Line { line: 369, .. }), "{err}");
}

fn any_format() -> impl Strategy<Value = ZeekFormat> {
    prop_oneof![Just(ZeekFormat::Tsv), Just(ZeekFormat::Json)]
}

/// One mutation of a body: overwrite, insert or delete a few bytes at some position.
#[derive(Debug, Clone)]
enum Mutation {
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the parsers are likelier than uniform noise would make them.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"\t\n\r#-.,:\"{}[]0123456789eE\\x".to_vec()),
    ];
    let bytes = prop::collection::vec(byte, 1..8);
    prop_oneof![
        (any::<usize>(), bytes.clone()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (any::<usize>(), bytes).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(body: &mut Vec<u8>, m: &Mutation) {
    let len = body.len().max(1);
    match m {
        Mutation::Overwrite(i, b) => {
            let at = i % len;
            for (k, &x) in b.iter().enumerate() {
                if let Some(slot) = body.get_mut(at + k) {
                    *slot = x;
                }
            }
        }
        Mutation::Insert(i, b) => {
            let at = (i % len).min(body.len());
            body.splice(at..at, b.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = (i % len).min(body.len());
            let end = (at + n).min(body.len());
            body.drain(at..end);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        format in any_format(),
    ) {
        let _ = windows(&body, format, ZeekOptions::default());
        // After a valid header too, so the bytes reach the data-line code.
        let mut with_header = b"#fields\tts\tid.orig_h\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n".to_vec();
        with_header.extend_from_slice(&body);
        let _ = windows(&with_header, ZeekFormat::Tsv, ZeekOptions::default());
    }

    #[test]
    fn mutated_samples_never_panic(
        mutations in prop::collection::vec(mutation(), 1..6),
        json in any::<bool>(),
        group_by in prop_oneof![Just(GroupBy::None), Just(GroupBy::OrigHost), Just(GroupBy::RespHost)],
    ) {
        let (name, format) = if json {
            ("conn.json.log", ZeekFormat::Json)
        } else {
            ("conn.log", ZeekFormat::Tsv)
        };
        let mut body = shared(name);
        for m in &mutations {
            apply(&mut body, m);
        }
        let options = ZeekOptions { window: "5m".parse().unwrap(), group_by, ..ZeekOptions::default() };
        match parse_conn_log(&body, format) {
            Ok(_) => {
                // Whatever survives still makes records the batch builder accepts.
                let batch = windows(&body, format, options);
                prop_assert!(batch.is_ok(), "{:?}", batch.err());
                prop_assert!(!batch.unwrap().is_empty());
            }
            Err(e) => {
                if let Some(line) = e.line() {
                    let lines = body.split(|&b| b == b'\n').count();
                    prop_assert!(line >= 1 && line <= lines, "line {} of {}", line, lines);
                }
            }
        }
    }

    #[test]
    fn any_window_keeps_the_totals(
        conns in prop::collection::vec(
            (0u64..2_000_000_000, 0u8..5, 0u8..5, 0u16..4, prop::option::of(any::<u64>()), prop::option::of(0u64..1_000_000)),
            1..200,
        ),
        window_secs in 1u64..=604_800,
    ) {
        let mut tsv = String::from("#fields\tts\tid.orig_h\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n");
        let mut json = String::new();
        let (mut sent, mut received) = (0u128, 0u128);
        for (ts, o, r, p, ob, rb) in &conns {
            let show = |v: &Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            tsv.push_str(&format!("{ts}.5\t10.0.0.{o}\t10.0.1.{r}\t{p}\t{}\t{}\n", show(ob), show(rb)));
            let mut obj = serde_json::json!({"ts": *ts as f64 + 0.5, "id.orig_h": format!("10.0.0.{o}"), "id.resp_h": format!("10.0.1.{r}"), "id.resp_p": p});
            if let Some(v) = ob { obj["orig_bytes"] = (*v).into(); }
            if let Some(v) = rb { obj["resp_bytes"] = (*v).into(); }
            json.push_str(&format!("{obj}\n"));
            sent += u128::from(ob.unwrap_or(0));
            received += u128::from(rb.unwrap_or(0));
        }
        let a = parse_conn_log(tsv.as_bytes(), ZeekFormat::Tsv).unwrap();
        let b = parse_conn_log(json.as_bytes(), ZeekFormat::Json).unwrap();
        prop_assert_eq!(&a, &b);
        let options = ZeekOptions {
            window: netsentinel::records::Window::from_secs(window_secs).unwrap(),
            group_by: GroupBy::OrigHost,
            ..ZeekOptions::default()
        };
        let recs = aggregate(&a, &options);
        let (s, r, n) = totals(&recs);
        prop_assert_eq!(n, conns.len() as f64);
        prop_assert_eq!(r, received as f64);
        // Sums of huge u64 counts round differently when split across records; compare loosely.
        prop_assert!((s - sent as f64).abs() <= sent as f64 * 1e-12);
        for pair in recs.windows(2) {
            prop_assert!((pair[0].timestamp, &pair[0].entity) < (pair[1].timestamp, &pair[1].entity));
        }
        for rec in &recs {
            prop_assert_eq!(rec.timestamp.timestamp() % window_secs as i64, 0);
            prop_assert!(rec.active_sessions >= 1.0 && rec.active_sessions <= rec.connections);
        }
    }
}
