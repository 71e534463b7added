//! The seed profile's facts (its features and burst positions), records as CSV or NDJSON
//! bodies, and the scores read back from an answer.

use serde_json::Value;

/// The four features the seed profile generates, in the order a default fit uses them.
pub const SEED_FEATURES: [&str; 4] = [
    "bytes_sent",
    "bytes_received",
    "connections",
    "active_sessions",
];

/// Burst positions in the seed profile's 720 records (every 100th).
pub const BURSTS: [usize; 8] = [0, 100, 200, 300, 400, 500, 600, 700];

/// The `score` of every result, in order.
pub fn scores(response: &Value) -> Vec<f64> {
    response["results"]
        .as_array()
        .expect("a results array")
        .iter()
        .map(|r| r["score"].as_f64().expect("a numeric score"))
        .collect()
}

/// Records as NDJSON lines.
pub fn to_ndjson(records: &[Value]) -> String {
    records
        .iter()
        .map(|r| format!("{r}\n"))
        .collect::<Vec<_>>()
        .concat()
}

/// Records as CSV with a header row (timestamp, the seed features, and any extra string columns).
pub fn to_csv(records: &[Value], extra: &[&str]) -> String {
    let mut columns = vec!["timestamp"];
    columns.extend(SEED_FEATURES);
    columns.extend(extra);
    let mut out = columns.join(",");
    out.push('\n');
    for r in records {
        let row: Vec<String> = columns
            .iter()
            .map(|c| match &r[*c] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            })
            .collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// The lines of the shared Zeek JSON conn log (`conn.json.log`), sorted by `ts`.
pub fn zeek_json_lines_in_order() -> Vec<String> {
    let text = String::from_utf8(shared_zeek("conn.json.log")).unwrap();
    let mut lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
    let ts = |l: &String| {
        serde_json::from_str::<Value>(l).unwrap()["ts"]
            .as_f64()
            .unwrap()
    };
    lines.sort_by(|a, b| ts(a).total_cmp(&ts(b)));
    lines
}

/// A real Zeek sample from `shared/data/zeek`, found beside the checkout (`/work/main` and the
/// worktrees sit at different depths, so walk up rather than fix `../`).
pub fn shared_zeek(name: &str) -> Vec<u8> {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = manifest
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("shared/data/zeek").join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "shared/data/zeek/{name} not found above {}",
                manifest.display()
            )
        });
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
