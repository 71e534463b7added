//! STUB
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
pub const SEED_FEATURES: [&str; 4] = [
    "bytes_sent",
    "bytes_received",
    "connections",
    "active_sessions",
];
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Seed,
    Realistic,
}
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    Burst,
    Exfiltration,
    Flood,
    PortScan,
    Beaconing,
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    pub profile: Profile,
    pub n_records: usize,
    pub seed: u64,
    pub start: DateTime<Utc>,
    pub interval_seconds: u64,
    pub anomaly_every: usize,
    pub anomaly_rate: f64,
    pub attack_kinds: Vec<AttackKind>,
}
impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Seed,
            n_records: 720,
            seed: 42,
            start: "2024-01-01T00:00:00Z".parse().unwrap(),
            interval_seconds: 3600,
            anomaly_every: 100,
            anomaly_rate: 0.02,
            attack_kinds: vec![],
        }
    }
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SampleRecord {
    pub timestamp: DateTime<Utc>,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub connections: u64,
    pub active_sessions: u64,
    pub label: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_kind: Option<AttackKind>,
}
impl SampleRecord {
    pub fn features(&self) -> [f64; 4] {
        [
            self.bytes_sent,
            self.bytes_received,
            self.connections as f64,
            self.active_sessions as f64,
        ]
    }
}
#[derive(Debug, thiserror::Error)]
#[error("gen")]
pub struct GeneratorError;
pub fn generate(c: &GeneratorConfig) -> Result<Vec<SampleRecord>, GeneratorError> {
    Ok((0..c.n_records)
        .map(|i| SampleRecord {
            timestamp: c.start + chrono::Duration::seconds((i as u64 * c.interval_seconds) as i64),
            bytes_sent: 1e6 + (i % 7) as f64 * 1e4 + if i % 100 == 0 { 4e6 } else { 0.0 },
            bytes_received: 1.2e6 + (i % 5) as f64 * 1e4,
            connections: 50 + (i % 3) as u64,
            active_sessions: 25,
            label: (i % 100 == 0) as u8,
            attack_kind: None,
        })
        .collect())
}
