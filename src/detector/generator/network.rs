//! The `network` profile: many hosts of several kinds, each with its own volume and rhythm, and
//! labeled attacks per host and window, for judging entity baselines.
//!
//! Record `i` is host `i % hosts` in window `i / hosts` (windows of `interval_seconds` from
//! `start`), so a day of 5-minute windows over 100 hosts is 28,800 records. Each record names its
//! host in `src_ip` (`10.<kind>.<i / 250>.<i % 250 + 1>`, kind 1 workstation, 2 server, 3 backup,
//! 4 device). Volumes are given per 5 minutes and scaled to the window.
//!
//! Hosts, in a repeating pattern of 20 (10 workstations, 3 servers, 2 backup hosts, 5 devices),
//! each with its own volume (log-normal around its kind's median):
//! - **workstation**: about 40 connections of 20 kB out per 5 minutes in office hours
//!   (08:00–18:00 UTC, shifted per host by up to an hour), 2 % of that at night, 10 % on
//!   weekends;
//! - **server**: about 400 connections of 50 kB, always on (60 % at night, 100 % on weekdays);
//! - **backup**: about 30 connections of 10 kB by day, and every night from 01:00 to 03:00
//!   a job sending about 300 MB per 5 minutes;
//! - **device** (printers, sensors): about 2 connections of 1.5 kB, the same at every hour.
//!
//! In a window, with `a` the host's activity at that time times mean-one log-normal noise
//! (σ 0.25): `connections` ~ Poisson(conns · a + 0.5), `active_sessions` ~ Poisson(0.4 ·
//! conns · a + 0.5), and each direction's bytes = connections · the host's bytes per
//! connection · LogNormal(σ 0.3) plus one connection's worth of background.
//!
//! Attacks (from a second random stream, so the normal traffic does not depend on them),
//! `round(anomaly_rate · n)` records split evenly over the kinds (default exfiltration,
//! off_hours, port_scan, beaconing):
//! - **exfiltration**: bytes_sent + about 8× the host's own office-hours volume (LogNormal σ
//!   0.3), two more connections;
//! - **off_hours**: a workstation at night or on a weekend behaves as on a weekday afternoon;
//! - **port_scan** (fan-out): 20× the host's connections plus 200 more, 60 bytes out and 40
//!   back each;
//! - **beaconing**: off-hours only, one check-in a minute (1.5 kB out, 3 kB back) and a session;
//! - **flood**: about 1000 more connections of a few hundred bytes and tripled sessions.
//!
//! Off-hours attacks go only to workstations in windows where their activity is under 0.2,
//! beaconing only to windows where the host's activity is under half its peak; when there
//! are fewer such windows than wanted, fewer are injected.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};

use super::{
    ATTACK_STREAM, AttackKind, GeneratorConfig, Made, SampleRecord, Watch, log_normal, poisson,
    timestamp_at,
};

/// The attack kinds the network profile injects when the configuration names none.
pub const NETWORK_ATTACK_KINDS: [AttackKind; 4] = [
    AttackKind::Exfiltration,
    AttackKind::OffHours,
    AttackKind::PortScan,
    AttackKind::Beaconing,
];

/// Most hosts the network profile simulates.
pub const MAX_HOSTS: usize = 100_000;

/// What a host does, which decides its volume and rhythm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    Workstation,
    Server,
    Backup,
    Device,
}

impl HostKind {
    /// The kind of host `i`: a repeating pattern of 10 workstations, 3 servers, 2 backup hosts
    /// and 5 devices.
    pub fn of(i: usize) -> HostKind {
        match i % 20 {
            0..=9 => HostKind::Workstation,
            10..=12 => HostKind::Server,
            13..=14 => HostKind::Backup,
            _ => HostKind::Device,
        }
    }

    fn octet(self) -> usize {
        match self {
            HostKind::Workstation => 1,
            HostKind::Server => 2,
            HostKind::Backup => 3,
            HostKind::Device => 4,
        }
    }
}

/// One simulated host: its address, kind and volume.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub ip: String,
    pub kind: HostKind,
    /// Connections per 5 minutes at full activity.
    pub conns: f64,
    /// Bytes sent per connection.
    pub sent_per_conn: f64,
    /// Bytes received per connection.
    pub received_per_conn: f64,
    /// Hours the host's office day is shifted by (workstations).
    pub shift_hours: f64,
}

impl Host {
    /// The host's activity at `t`, 0 to 1 of its full volume (without the backup job).
    pub fn activity(&self, t: DateTime<Utc>) -> f64 {
        let hour =
            f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + f64::from(t.second()) / 3600.0;
        let weekend = matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
        let logistic = |x: f64| 1.0 / (1.0 + (-x).exp());
        let office = |shift: f64| {
            let h = hour - shift;
            logistic((h - 8.0) * 2.0) * logistic((18.0 - h) * 2.0)
        };
        match self.kind {
            HostKind::Workstation => {
                let day = if weekend { 0.1 } else { 1.0 };
                0.02 + 0.98 * office(self.shift_hours) * day
            }
            HostKind::Server => 0.6 + 0.4 * office(0.0) * if weekend { 0.5 } else { 1.0 },
            HostKind::Backup => 0.3 + 0.7 * office(0.0) * if weekend { 0.2 } else { 1.0 },
            HostKind::Device => 1.0,
        }
    }

    /// Bytes the nightly backup job sends per 5 minutes at `t` (0 outside 01:00–03:00 or for
    /// other kinds).
    fn backup_bytes(&self, t: DateTime<Utc>) -> f64 {
        if self.kind == HostKind::Backup && (1..3).contains(&t.hour()) {
            3e8
        } else {
            0.0
        }
    }
}

/// The hosts of a network profile of `n` hosts, drawn from `seed` (the same hosts whatever
/// the number of records or the attacks).
pub fn hosts(n: usize, seed: u64) -> Vec<Host> {
    let mut rng = StdRng::seed_from_u64(seed ^ HOST_STREAM);
    (0..n)
        .map(|i| {
            let kind = HostKind::of(i);
            let (conns, sent, received) = match kind {
                HostKind::Workstation => (40.0, 2e4, 6e4),
                HostKind::Server => (400.0, 5e4, 2e4),
                HostKind::Backup => (30.0, 1e4, 1e4),
                HostKind::Device => (2.0, 1.5e3, 1e3),
            };
            Host {
                ip: format!("10.{}.{}.{}", kind.octet(), i / 250, i % 250 + 1),
                kind,
                conns: log_normal(&mut rng, conns, 0.6),
                sent_per_conn: log_normal(&mut rng, sent, 0.4),
                received_per_conn: log_normal(&mut rng, received, 0.4),
                shift_hours: if kind == HostKind::Workstation {
                    rng.random_range(-1.0..1.0)
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// Mixed into the seed for the host population (any fixed odd constant).
const HOST_STREAM: u64 = 0xD1B5_4A32_D192_ED03;

/// Generates the network profile (`cfg` checked already).
pub(super) fn generate_network(
    cfg: &GeneratorConfig,
    rng: &mut StdRng,
    watch: &Watch,
) -> Result<Vec<SampleRecord>, Made> {
    let n = cfg.n_records;
    let population = hosts(cfg.hosts, cfg.seed);
    let windows = n.div_ceil(cfg.hosts);
    let times = (0..windows)
        .map(|w| timestamp_at(cfg.start, cfg.interval_seconds, w))
        .collect::<Result<Vec<_>, _>>()?;
    let host_of = |i: usize| &population[i % cfg.hosts];
    let time_of = |i: usize| times[i / cfg.hosts];
    let per_window = cfg.interval_seconds as f64 / 300.0;

    let mut attack_rng = StdRng::seed_from_u64(cfg.seed ^ ATTACK_STREAM);
    let kinds = cfg.attack_kinds_or(&NETWORK_ATTACK_KINDS);
    let eligible = |kind: AttackKind, i: usize| match kind {
        AttackKind::OffHours => {
            host_of(i).kind == HostKind::Workstation && host_of(i).activity(time_of(i)) < 0.2
        }
        AttackKind::Beaconing => host_of(i).activity(time_of(i)) < 0.5,
        _ => true,
    };
    let assigned = assign(n, cfg.anomaly_rate, kinds, eligible, &mut attack_rng);
    let beacons = (cfg.interval_seconds as f64 / 60.0).round().max(1.0) as u64;

    let mut records = Vec::with_capacity(n);
    for (i, kind) in assigned.into_iter().enumerate() {
        watch.at(i)?;
        let host = host_of(i);
        let t = time_of(i);
        let activity = host.activity(t);
        let mut r = draw(rng, host, t, activity, per_window);
        if let Some(kind) = kind {
            match kind {
                AttackKind::OffHours => {
                    // A weekday afternoon's draw, at this hour.
                    let day = draw(&mut attack_rng, host, t, 1.0, per_window);
                    r.bytes_sent = day.bytes_sent;
                    r.bytes_received = day.bytes_received;
                    r.connections = day.connections;
                    r.active_sessions = day.active_sessions;
                }
                AttackKind::Exfiltration => {
                    let own = host.conns * host.sent_per_conn * per_window;
                    r.bytes_sent += 8.0 * own * log_normal(&mut attack_rng, 1.0, 0.3);
                    r.connections += 2;
                }
                AttackKind::PortScan => {
                    let extra = poisson(&mut attack_rng, (20.0 * host.conns + 200.0) * per_window);
                    r.connections += extra;
                    r.bytes_sent += extra as f64 * log_normal(&mut attack_rng, 60.0, 0.1);
                    r.bytes_received += extra as f64 * log_normal(&mut attack_rng, 40.0, 0.1);
                }
                AttackKind::Beaconing => {
                    r.connections += beacons;
                    r.active_sessions += 1;
                    r.bytes_sent += beacons as f64 * log_normal(&mut attack_rng, 1.5e3, 0.05);
                    r.bytes_received += beacons as f64 * log_normal(&mut attack_rng, 3e3, 0.05);
                }
                other => super::inject_attack(&mut attack_rng, &mut r, other, beacons),
            }
            r.label = 1;
            r.attack_kind = Some(kind);
        }
        records.push(r);
    }
    Ok(records)
}

/// One normal window of `host` at `t` with the given activity (before noise).
fn draw<R: Rng + ?Sized>(
    rng: &mut R,
    host: &Host,
    t: DateTime<Utc>,
    activity: f64,
    per_window: f64,
) -> SampleRecord {
    let a = activity * log_normal(rng, (-0.03125f64).exp(), 0.25) * per_window;
    let connections = poisson(rng, host.conns * a + 0.5);
    let active_sessions = poisson(rng, 0.4 * host.conns * a + 0.5);
    let bytes_sent = connections as f64 * host.sent_per_conn * log_normal(rng, 1.0, 0.3)
        + host.sent_per_conn * log_normal(rng, 1.0, 0.3)
        + host.backup_bytes(t) * per_window * log_normal(rng, 1.0, 0.2);
    let bytes_received = connections as f64 * host.received_per_conn * log_normal(rng, 1.0, 0.3)
        + host.received_per_conn * log_normal(rng, 1.0, 0.3);
    SampleRecord {
        timestamp: t,
        src_ip: Some(host.ip.clone()),
        bytes_sent,
        bytes_received,
        connections,
        active_sessions,
        label: 0,
        attack_kind: None,
    }
}

/// Chooses which of `n` records are attacks and of which kind: `round(rate · n)` in all,
/// split evenly over `kinds` (earlier kinds take the remainder), each kind only on records
/// `eligible` for it; the kinds restricted to quiet hours choose first.
fn assign(
    n: usize,
    rate: f64,
    kinds: &[AttackKind],
    eligible: impl Fn(AttackKind, usize) -> bool,
    rng: &mut StdRng,
) -> Vec<Option<AttackKind>> {
    let mut out = vec![None; n];
    let total = ((rate * n as f64).round() as usize).min(n);
    if total == 0 || kinds.is_empty() {
        return out;
    }
    let count_of = |k: usize| total / kinds.len() + usize::from(k < total % kinds.len());
    let mut order: Vec<usize> = (0..kinds.len()).collect();
    // Restricted kinds first (off-hours before beaconing: it has fewer records to choose from).
    order.sort_by_key(|&k| match kinds[k] {
        AttackKind::OffHours => 0,
        AttackKind::Beaconing => 1,
        _ => 2,
    });
    for k in order {
        let kind = kinds[k];
        let mut free: Vec<usize> = (0..n)
            .filter(|&i| out[i].is_none() && eligible(kind, i))
            .collect();
        let take = count_of(k).min(free.len());
        let (chosen, _) = free.partial_shuffle(rng, take);
        for &i in chosen.iter() {
            out[i] = Some(kind);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{GeneratorError, Profile, generate};
    use super::*;

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    #[test]
    fn hosts_differ_in_kind_volume_and_rhythm() {
        let cfg = GeneratorConfig::network(40, 7, 0.0, 5);
        let recs = generate(&cfg).unwrap();
        assert_eq!(recs.len(), 40 * 7 * 288);
        assert_eq!(recs, generate(&cfg).unwrap(), "seeded");
        let population = hosts(40, 5);
        // Record i is host i % hosts in window i / hosts.
        assert_eq!(recs[41].src_ip.as_deref(), Some(population[1].ip.as_str()));
        assert_eq!(recs[41].timestamp.to_rfc3339(), "2024-01-01T00:05:00+00:00");
        let of_host = |h: usize| recs.iter().skip(h).step_by(40);
        let medians: Vec<f64> = (0..40)
            .map(|h| median(of_host(h).map(|r| r.bytes_sent).collect()))
            .collect();
        let (lo, hi) = medians
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &m| (lo.min(m), hi.max(m)));
        assert!(hi / lo > 1000.0, "volumes span {lo}..{hi}");

        let weekday_hour = |r: &SampleRecord, hours: std::ops::Range<u32>| {
            !matches!(r.timestamp.weekday(), Weekday::Sat | Weekday::Sun)
                && hours.contains(&r.timestamp.hour())
        };
        let mean_conns = |h: usize, hours: std::ops::Range<u32>| {
            let v: Vec<f64> = of_host(h)
                .filter(|r| weekday_hour(r, hours.clone()))
                .map(|r| r.connections as f64)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        for (h, host) in population.iter().enumerate() {
            let (day, night) = (mean_conns(h, 11..15), mean_conns(h, 22..24));
            match host.kind {
                HostKind::Workstation => assert!(day > 10.0 * night, "{h}: {day} vs {night}"),
                HostKind::Server => assert!(day > 1.2 * night && day < 3.0 * night, "{h}"),
                HostKind::Device => {
                    assert!(day < 1.5 * night + 1.0 && night < 1.5 * day + 1.0, "{h}")
                }
                HostKind::Backup => {
                    let sent = |hours: std::ops::Range<u32>| {
                        median(
                            of_host(h)
                                .filter(|r| hours.contains(&r.timestamp.hour()))
                                .map(|r| r.bytes_sent)
                                .collect(),
                        )
                    };
                    assert!(sent(1..3) > 50.0 * sent(11..15), "{h}: the nightly job");
                }
            }
        }
        // Weekends are quiet for workstations.
        let weekend: Vec<f64> = of_host(0)
            .filter(|r| {
                r.timestamp.weekday() == Weekday::Sat && (11..15).contains(&r.timestamp.hour())
            })
            .map(|r| r.connections as f64)
            .collect();
        let weekend = weekend.iter().sum::<f64>() / weekend.len() as f64;
        assert!(weekend * 4.0 < mean_conns(0, 11..15));
    }

    #[test]
    fn attacks_are_labeled_per_host_and_window_as_documented() {
        let normal = generate(&GeneratorConfig::network(40, 2, 0.0, 9)).unwrap();
        let recs = generate(&GeneratorConfig::network(40, 2, 0.02, 9)).unwrap();
        let population = hosts(40, 9);
        let n_attacks = (0.02 * recs.len() as f64).round() as usize;
        assert_eq!(recs.iter().filter(|r| r.label == 1).count(), n_attacks);
        let count = |k: AttackKind| recs.iter().filter(|r| r.attack_kind == Some(k)).count();
        for kind in NETWORK_ATTACK_KINDS {
            assert!(count(kind).abs_diff(n_attacks / 4) <= 1, "{kind:?}");
        }
        // Connections of the off-hours attacks, of their normal twins, and their hosts' usual
        // office-hours connections.
        let mut off_hours = (0.0, 0.0, 0.0);
        for (i, (r, twin)) in recs.iter().zip(&normal).enumerate() {
            let host = &population[i % 40];
            assert_eq!(r.src_ip.as_deref(), Some(host.ip.as_str()));
            match r.attack_kind {
                None => assert_eq!(r, twin, "normal records do not depend on the attacks"),
                Some(AttackKind::Exfiltration) => {
                    let own = host.conns * host.sent_per_conn;
                    let extra = r.bytes_sent - twin.bytes_sent;
                    assert!((2.0 * own..30.0 * own).contains(&extra), "{extra} vs {own}");
                }
                Some(AttackKind::OffHours) => {
                    assert_eq!(host.kind, HostKind::Workstation);
                    assert!(host.activity(r.timestamp) < 0.2);
                    off_hours.0 += r.connections as f64;
                    off_hours.1 += twin.connections as f64;
                    off_hours.2 += host.conns;
                }
                Some(AttackKind::PortScan) => {
                    assert!(r.connections >= twin.connections + 100);
                }
                Some(AttackKind::Beaconing) => {
                    assert!(host.activity(r.timestamp) < 0.5);
                    assert_eq!(r.connections, twin.connections + 5);
                }
                Some(other) => panic!("{other:?} was not asked for"),
            }
        }
        let (attacks, twins, usual) = off_hours;
        assert!(
            (0.7..1.3).contains(&(attacks / usual)),
            "{attacks} vs {usual}"
        );
        assert!(twins < 0.15 * usual, "{twins} vs {usual}");
    }

    #[test]
    fn off_hours_is_the_network_profiles_own_and_hosts_are_checked() {
        let realistic = GeneratorConfig {
            profile: Profile::Realistic,
            attack_kinds: Some(vec![AttackKind::OffHours]),
            ..GeneratorConfig::default()
        };
        assert_eq!(
            generate(&realistic).unwrap_err(),
            GeneratorError::NetworkOnlyAttackKind(AttackKind::OffHours)
        );
        let none = GeneratorConfig {
            hosts: 0,
            ..GeneratorConfig::network(1, 1, 0.0, 1)
        };
        assert_eq!(generate(&none).unwrap_err().field(), "hosts");
        // Other profiles ignore `hosts` and name no host.
        let seed = generate(&GeneratorConfig {
            hosts: 0,
            ..GeneratorConfig::default()
        })
        .unwrap();
        assert!(seed.iter().all(|r| r.src_ip.is_none()));
    }
}
