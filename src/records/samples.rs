//! Generated sample records read into a batch without writing or parsing any text.

use super::batch::Batch;
use super::builder::{BatchBuilder, CellRef};
use super::error::{RecordError, check_count};
use crate::detector::generator::{SEED_FEATURES, SampleRecord};

/// Generated sample records as a checked batch, as if they had been posted as JSON (same
/// fields, same checks), without writing or parsing any JSON. `features: None` is the default
/// choice, which for generated records is always the four seed features.
pub fn sample_batch(
    records: &[SampleRecord],
    features: Option<&[String]>,
    max_records: usize,
) -> Result<Batch, RecordError> {
    check_count(records.len(), max_records)?;
    let seed: Vec<String> = SEED_FEATURES.iter().map(|s| s.to_string()).collect();
    let mut b = BatchBuilder::new(features.unwrap_or(&seed), false, max_records);
    let names = [
        "timestamp",
        "bytes_sent",
        "bytes_received",
        "connections",
        "active_sessions",
        "label",
        "attack_kind",
        "src_ip",
    ]
    .map(String::from);
    let roles = b.header_roles(&names);
    let mut text = String::new();
    for r in records {
        b.start_record();
        text.clear();
        use std::fmt::Write;
        let _ = write!(text, "{}", r.timestamp.format("%Y-%m-%dT%H:%M:%S%.fZ"));
        b.field(roles[0], CellRef::Text(&text));
        b.field(roles[1], CellRef::Num(r.bytes_sent));
        b.field(roles[2], CellRef::Num(r.bytes_received));
        b.field(roles[3], CellRef::Num(r.connections as f64));
        b.field(roles[4], CellRef::Num(r.active_sessions as f64));
        b.field(roles[5], CellRef::Num(f64::from(r.label)));
        if let Some(kind) = r.attack_kind {
            // Only injected anomalies carry a kind: few records, so its serde name is cheap.
            let name = serde_json::to_value(kind).expect("attack kinds always serialise");
            b.field(roles[6], CellRef::Text(name.as_str().unwrap_or_default()));
        }
        if let Some(ip) = &r.src_ip {
            b.field(roles[7], CellRef::Text(ip));
        }
        b.end_record();
    }
    b.finish()
}
