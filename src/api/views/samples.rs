//! Mirrors of the sample generator's settings (read straight from the body) and of the records it streams out.

use chrono::{DateTime, Utc};
#[cfg(test)]
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::detector::generator::{AttackKind, GeneratorConfig, Profile};

/// Which traffic model generates the records.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = Profile)]
#[serde(rename_all = "snake_case")]
pub enum ProfileView {
    Seed,
    Realistic,
    Network,
}

/// The kind of anomaly injected into a record.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = AttackKind)]
#[serde(rename_all = "snake_case")]
pub enum AttackKindView {
    Burst,
    Exfiltration,
    Flood,
    PortScan,
    Beaconing,
    OffHours,
}

/// How to generate sample traffic. Every field has a default; unknown fields are rejected.
/// Fields that do not apply to the chosen profile are ignored.
// Enum fields hold the domain types: the schema's `default`s are the domain's defaults, serialised.
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = GeneratorConfig)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfigView {
    /// Traffic model (default `seed`).
    #[schema(value_type = ProfileView)]
    pub profile: Profile,
    /// Number of records, 1 to 1,000,000 (default 720: 30 days of hourly records).
    #[schema(example = 720, minimum = 1, maximum = 1_000_000)]
    pub n_records: usize,
    /// Seed of every random draw: same configuration and seed, same records (default 42).
    #[schema(example = 42)]
    pub seed: u64,
    /// Timestamp of the first record, RFC 3339 (default 2024-01-01T00:00:00Z).
    #[schema(example = "2024-01-01T00:00:00Z")]
    pub start: DateTime<Utc>,
    /// Seconds between consecutive records, at least 1 (default 3600).
    #[schema(example = 3600, minimum = 1)]
    pub interval_seconds: u64,
    /// Seed profile: rows 0, N, 2N, ... are bursts (default 100); 0 injects none.
    #[schema(example = 100)]
    pub anomaly_every: usize,
    /// Realistic and network profiles: share of attack records, in [0, 0.5] (default 0.02).
    /// The count is `round(anomaly_rate * n_records)`, spread evenly over `attack_kinds`.
    #[schema(example = 0.02, minimum = 0.0, maximum = 0.5)]
    pub anomaly_rate: f64,
    /// Realistic and network profiles: attack kinds to inject, each at most once in the list
    /// (default: realistic exfiltration, flood, port_scan, beaconing; network exfiltration,
    /// off_hours, port_scan, beaconing). `off_hours` is the network profile's only.
    #[schema(value_type = Option<Vec<AttackKindView>>, example = json!(["exfiltration", "flood", "port_scan", "beaconing"]))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_kinds: Option<Vec<AttackKind>>,
    /// Network profile: number of hosts, 1 to 100,000 (default 100); record `i` is host
    /// `i % hosts` in window `i / hosts` (windows of `interval_seconds`).
    #[schema(example = 100, minimum = 1, maximum = 100_000)]
    pub hosts: usize,
}

default_from_domain!(GeneratorConfigView: GeneratorConfig {
    profile,
    n_records,
    seed,
    start,
    interval_seconds,
    anomaly_every,
    anomaly_rate,
    attack_kinds,
    hosts,
});

/// One generated traffic record.
#[cfg_attr(test, serde_with::skip_serializing_none)]
#[derive(ToSchema)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
#[schema(as = SampleRecord)]
pub struct SampleRecordView {
    /// When the interval starts.
    #[schema(example = "2024-01-01T00:00:00Z")]
    pub timestamp: DateTime<Utc>,
    /// The host the record describes (network profile only).
    #[schema(example = "10.1.0.1")]
    #[serde(default)]
    pub src_ip: Option<String>,
    /// Bytes sent in the interval (never negative).
    #[schema(example = 1012345.0)]
    pub bytes_sent: f64,
    /// Bytes received in the interval (never negative).
    #[schema(example = 1200000.0)]
    pub bytes_received: f64,
    /// Connections opened in the interval.
    #[schema(example = 50)]
    pub connections: u64,
    /// Sessions active in the interval.
    #[schema(example = 25)]
    pub active_sessions: u64,
    /// 1 if an anomaly was injected into this record, else 0.
    #[schema(example = 0, minimum = 0, maximum = 1)]
    pub label: u8,
    /// The injected anomaly, absent for normal records.
    #[serde(default)]
    pub attack_kind: Option<AttackKindView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::views::check::mirrors;
    use crate::detector::generator::generate;

    fn configs() -> [GeneratorConfig; 3] {
        [
            GeneratorConfig::default(),
            GeneratorConfig {
                profile: Profile::Realistic,
                n_records: 500,
                anomaly_rate: 0.1,
                attack_kinds: Some(vec![AttackKind::Burst, AttackKind::PortScan]),
                ..GeneratorConfig::default()
            },
            GeneratorConfig {
                anomaly_rate: 0.1,
                ..GeneratorConfig::network(20, 1, 0.1, 3)
            },
        ]
    }

    #[test]
    fn generator_settings_mirror_the_domain_type() {
        for config in configs() {
            mirrors::<GeneratorConfigView>(&config);
        }
        for profile in [Profile::Seed, Profile::Realistic, Profile::Network] {
            mirrors::<ProfileView>(&profile);
        }
    }

    #[test]
    fn sample_records_mirror_the_domain_type_with_every_attack_kind() {
        let mut kinds = std::collections::HashSet::new();
        for config in configs() {
            for record in generate(&config).unwrap() {
                if kinds.insert(record.attack_kind) {
                    mirrors::<SampleRecordView>(&record);
                }
            }
        }
        for kind in [
            AttackKind::Burst,
            AttackKind::Exfiltration,
            AttackKind::Flood,
            AttackKind::PortScan,
            AttackKind::Beaconing,
            AttackKind::OffHours,
        ] {
            mirrors::<AttackKindView>(&kind);
        }
        assert!(kinds.contains(&None) && kinds.len() >= 6, "{kinds:?}");
    }
}
