//! Seeded, reproducible sample traffic: the tutorial's data (`seed` profile), a realistic
//! profile with labeled attacks, and a network of many hosts (`network`, in [`network`]).
//!
//! The same [`GeneratorConfig`] always yields the same records (one `StdRng` seeded from
//! `seed`, drawn in a fixed order). Records carry `label = 1` and an [`AttackKind`] when an
//! anomaly was injected, so the output doubles as labeled evaluation data.

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Timelike, Utc, Weekday};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson, StandardNormal};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

pub mod network;

/// The four features of the seed tutorial, in the order [`SampleRecord::features`] returns them.
pub const SEED_FEATURES: [&str; 4] = [
    "bytes_sent",
    "bytes_received",
    "connections",
    "active_sessions",
];

/// Most records one request may generate: 1M records are about 64 MB in memory.
pub const MAX_RECORDS: usize = 1_000_000;

/// Which traffic model generates the records.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// The tutorial's data: independent normal/Poisson features, every `anomaly_every`-th row a burst.
    Seed,
    /// Daily and weekly rhythm, correlated features, labeled attacks at `anomaly_rate`.
    Realistic,
    /// Many hosts (`hosts`) of several kinds and volumes, each record one host's window, named
    /// in `src_ip`; labeled attacks per host and window at `anomaly_rate` (see [`network`]).
    Network,
}

/// The kind of anomaly injected into a record.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// The tutorial's injected burst: bytes_sent ~ N(5e6, 5e5) and bytes_received ~ N(6e6, 6e5)
    /// replace the normal values; connections and sessions stay normal.
    Burst,
    /// Data exfiltration: several megabytes extra outbound (bytes_sent + LogNormal, median 8 MB),
    /// a couple of extra connections; bytes_received and sessions stay normal.
    Exfiltration,
    /// Connection flood (DoS): about 1000 extra connections, sessions roughly tripled,
    /// but only a few hundred bytes per extra connection, so bytes rise modestly.
    Flood,
    /// Port scan: about 1500 extra connections carrying ~60 bytes out and ~40 bytes back each
    /// (probe and reset), so bytes per connection collapse; sessions stay normal.
    PortScan,
    /// Command-and-control beaconing, low and slow: one small check-in (~1.5 kB out, ~3 kB in)
    /// every 10 minutes of the interval plus one session, placed only in off-hours (nights and
    /// weekends). The increase hides inside normal variation; it is meant to be hard to detect.
    Beaconing,
    /// Network profile only: a workstation at night or on a weekend active as on a weekday
    /// afternoon.
    OffHours,
}

/// The attack kinds the realistic profile draws from by default (all but the tutorial's burst).
pub const DEFAULT_ATTACK_KINDS: [AttackKind; 4] = [
    AttackKind::Exfiltration,
    AttackKind::Flood,
    AttackKind::PortScan,
    AttackKind::Beaconing,
];

/// How to generate sample traffic. Every field has a default; unknown fields are rejected.
/// Fields that do not apply to the chosen profile are ignored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Traffic model (default `seed`).
    pub profile: Profile,
    /// Number of records, 1 to 1,000,000 (default 720: 30 days of hourly records).
    pub n_records: usize,
    /// Seed of every random draw: same configuration and seed, same records (default 42).
    pub seed: u64,
    /// Timestamp of the first record, RFC 3339 (default 2024-01-01T00:00:00Z).
    pub start: DateTime<Utc>,
    /// Seconds between consecutive records, at least 1 (default 3600).
    pub interval_seconds: u64,
    /// Seed profile: rows 0, N, 2N, ... are bursts (default 100); 0 injects none.
    pub anomaly_every: usize,
    /// Realistic and network profiles: share of attack records, in [0, 0.5] (default 0.02).
    /// The count is `round(anomaly_rate * n_records)`, spread evenly over `attack_kinds`.
    pub anomaly_rate: f64,
    /// Realistic and network profiles: attack kinds to inject, each at most once in the list
    /// (default: realistic exfiltration, flood, port_scan, beaconing; network exfiltration,
    /// off_hours, port_scan, beaconing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_kinds: Option<Vec<AttackKind>>,
    /// Network profile: number of hosts, 1 to 100,000 (default 100); record `i` is host
    /// `i % hosts` in window `i / hosts`.
    pub hosts: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Seed,
            n_records: 720,
            seed: 42,
            start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            interval_seconds: 3600,
            anomaly_every: 100,
            anomaly_rate: 0.02,
            attack_kinds: None,
            hosts: 100,
        }
    }
}

impl GeneratorConfig {
    /// The network profile over `hosts` hosts for `days` days of 5-minute windows from Monday
    /// 2024-01-01, attacks at `anomaly_rate`: the data the entity-baseline measurements use.
    pub fn network(hosts: usize, days: usize, anomaly_rate: f64, seed: u64) -> Self {
        Self {
            profile: Profile::Network,
            n_records: hosts * days * 288,
            seed,
            interval_seconds: 300,
            anomaly_rate,
            hosts,
            ..Self::default()
        }
    }

    /// The attack kinds asked for, or `default` (the profile's) when none were named.
    pub fn attack_kinds_or<'a>(&'a self, default: &'a [AttackKind]) -> &'a [AttackKind] {
        self.attack_kinds.as_deref().unwrap_or(default)
    }
}

/// One generated traffic record.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SampleRecord {
    /// When the interval starts.
    pub timestamp: DateTime<Utc>,
    /// The host the record describes (network profile only).
    #[serde(default)]
    pub src_ip: Option<String>,
    /// Bytes sent in the interval (never negative).
    pub bytes_sent: f64,
    /// Bytes received in the interval (never negative).
    pub bytes_received: f64,
    /// Connections opened in the interval.
    pub connections: u64,
    /// Sessions active in the interval.
    pub active_sessions: u64,
    /// 1 if an anomaly was injected into this record, else 0.
    pub label: u8,
    /// The injected anomaly, absent for normal records.
    #[serde(default)]
    pub attack_kind: Option<AttackKind>,
}

impl SampleRecord {
    /// The feature values in [`SEED_FEATURES`] order.
    pub fn features(&self) -> [f64; 4] {
        [
            self.bytes_sent,
            self.bytes_received,
            self.connections as f64,
            self.active_sessions as f64,
        ]
    }
}

/// A generator setting that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeneratorError {
    #[error("n_records must be between 1 and {MAX_RECORDS}, got {0}")]
    NRecords(usize),
    #[error("interval_seconds must be at least 1, got {0}")]
    IntervalSeconds(u64),
    #[error(
        "the last timestamp (start + (n_records - 1) * interval_seconds) is beyond the representable date range; use a smaller interval_seconds or an earlier start"
    )]
    TimeRange,
    #[error("anomaly_rate must be a number in [0, 0.5], got {0}")]
    AnomalyRate(f64),
    #[error("attack_kinds must name at least one kind when anomaly_rate > 0")]
    NoAttackKinds,
    #[error("attack_kinds lists {0:?} more than once")]
    DuplicateAttackKind(AttackKind),
    #[error("attack kind {0:?} is only injected by the network profile")]
    NetworkOnlyAttackKind(AttackKind),
    #[error("hosts must be between 1 and {max}, got {0}", max = network::MAX_HOSTS)]
    Hosts(usize),
}

impl GeneratorError {
    /// The configuration field at fault, as a client spells it.
    pub fn field(&self) -> &'static str {
        match self {
            GeneratorError::NRecords(_) => "n_records",
            GeneratorError::IntervalSeconds(_) | GeneratorError::TimeRange => "interval_seconds",
            GeneratorError::AnomalyRate(_) => "anomaly_rate",
            GeneratorError::NoAttackKinds
            | GeneratorError::DuplicateAttackKind(_)
            | GeneratorError::NetworkOnlyAttackKind(_) => "attack_kinds",
            GeneratorError::Hosts(_) => "hosts",
        }
    }
}

impl GeneratorConfig {
    /// Checks every field that applies to the chosen profile.
    pub fn check(&self) -> Result<(), GeneratorError> {
        if self.n_records == 0 || self.n_records > MAX_RECORDS {
            return Err(GeneratorError::NRecords(self.n_records));
        }
        if self.interval_seconds == 0 {
            return Err(GeneratorError::IntervalSeconds(0));
        }
        if self.profile == Profile::Network {
            if !(1..=network::MAX_HOSTS).contains(&self.hosts) {
                return Err(GeneratorError::Hosts(self.hosts));
            }
            let windows = self.n_records.div_ceil(self.hosts);
            timestamp_at(self.start, self.interval_seconds, windows - 1)?;
        } else {
            timestamp_at(self.start, self.interval_seconds, self.n_records - 1)?;
        }
        if matches!(self.profile, Profile::Realistic | Profile::Network) {
            if !(0.0..=0.5).contains(&self.anomaly_rate) {
                return Err(GeneratorError::AnomalyRate(self.anomaly_rate));
            }
            let kinds = self.attack_kinds_or(match self.profile {
                Profile::Network => &network::NETWORK_ATTACK_KINDS,
                _ => &DEFAULT_ATTACK_KINDS,
            });
            if self.anomaly_rate > 0.0 && kinds.is_empty() {
                return Err(GeneratorError::NoAttackKinds);
            }
            for (i, kind) in kinds.iter().enumerate() {
                if kinds[..i].contains(kind) {
                    return Err(GeneratorError::DuplicateAttackKind(*kind));
                }
                if *kind == AttackKind::OffHours && self.profile != Profile::Network {
                    return Err(GeneratorError::NetworkOnlyAttackKind(*kind));
                }
            }
        }
        Ok(())
    }
}

/// Generates the records `cfg` describes, or says which field is unusable.
pub fn generate(cfg: &GeneratorConfig) -> Result<Vec<SampleRecord>, GeneratorError> {
    let never = || false;
    Ok(generate_watched(cfg, &never)?.expect("generation stops only when asked"))
}

/// Records made between two calls of a generation's `stop`.
pub const GENERATE_BLOCK: usize = 65_536;

/// [`generate`], asking `stop` before each block of [`GENERATE_BLOCK`] records (and before
/// each pass over all of them): `None` once it says stop. Not stopped, the records are
/// [`generate`]'s.
pub fn generate_watched(
    cfg: &GeneratorConfig,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Vec<SampleRecord>>, GeneratorError> {
    cfg.check()?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let watch = Watch(stop);
    let made = match cfg.profile {
        Profile::Seed => generate_seed(cfg, &mut rng, &watch),
        Profile::Realistic => generate_realistic(cfg, &mut rng, &watch),
        Profile::Network => network::generate_network(cfg, &mut rng, &watch),
    };
    match made {
        Ok(records) => Ok(Some(records)),
        Err(Made::Stopped) => Ok(None),
        Err(Made::Invalid(e)) => Err(e),
    }
}

/// Why a generation made no records.
enum Made {
    Stopped,
    Invalid(GeneratorError),
}

impl From<GeneratorError> for Made {
    fn from(e: GeneratorError) -> Self {
        Made::Invalid(e)
    }
}

/// A generation's stop check.
struct Watch<'a>(&'a dyn Fn() -> bool);

impl Watch<'_> {
    /// Before record `i` of a pass: stop there when asked, at each block's start.
    fn at(&self, i: usize) -> Result<(), Made> {
        match i % GENERATE_BLOCK == 0 && (self.0)() {
            true => Err(Made::Stopped),
            false => Ok(()),
        }
    }
}

/// `start + i * interval`, or [`GeneratorError::TimeRange`] if that date cannot be represented.
fn timestamp_at(
    start: DateTime<Utc>,
    interval_seconds: u64,
    i: usize,
) -> Result<DateTime<Utc>, GeneratorError> {
    (i as u64)
        .checked_mul(interval_seconds)
        .and_then(|s| i64::try_from(s).ok())
        .and_then(TimeDelta::try_seconds)
        .and_then(|d| start.checked_add_signed(d))
        .ok_or(GeneratorError::TimeRange)
}

fn normal<R: Rng + ?Sized>(rng: &mut R, mean: f64, std_dev: f64) -> f64 {
    // rand_distr's Normal samples exactly this way; going through StandardNormal avoids a
    // constructor that returns Result for parameters that are constants here.
    let z: f64 = StandardNormal.sample(rng);
    mean + std_dev * z
}

/// exp(N(ln median, sigma)): a positive, right-skewed amount with the given median.
fn log_normal<R: Rng + ?Sized>(rng: &mut R, median: f64, sigma: f64) -> f64 {
    let z: f64 = StandardNormal.sample(rng);
    median * (sigma * z).exp()
}

fn poisson<R: Rng + ?Sized>(rng: &mut R, lambda: f64) -> u64 {
    // Every lambda here is positive and finite; 0 is the natural count if one ever is not.
    Poisson::new(lambda).map_or(0, |d| {
        let x: f64 = d.sample(rng);
        x as u64
    })
}

/// Seed profile: the tutorial's draws in the tutorial's order.
///
/// numpy's `np.random.seed(42)` stream is not reproduced bit for bit (different generator),
/// only its distributions and schedule: all `bytes_sent`, then all `bytes_received`, all
/// `connections`, all `active_sessions`, then for each burst row `bytes_sent` and `bytes_received`.
/// N(1e6, 2e5) goes below zero only 5 standard deviations out; the tutorial keeps such a value,
/// we clamp it to 0 because a byte count cannot be negative.
fn generate_seed(
    cfg: &GeneratorConfig,
    rng: &mut StdRng,
    watch: &Watch,
) -> Result<Vec<SampleRecord>, Made> {
    let n = cfg.n_records;
    let mut column = |draw: &mut dyn FnMut(&mut StdRng) -> f64| {
        (0..n)
            .map(|i| watch.at(i).map(|()| draw(rng)))
            .collect::<Result<Vec<f64>, Made>>()
    };
    let sent = column(&mut |rng| normal(rng, 1e6, 2e5))?;
    let received = column(&mut |rng| normal(rng, 1.2e6, 2.5e5))?;
    let connections = column(&mut |rng| poisson(rng, 50.0) as f64)?;
    let sessions = column(&mut |rng| poisson(rng, 25.0) as f64)?;
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        watch.at(i)?;
        records.push(SampleRecord {
            timestamp: timestamp_at(cfg.start, cfg.interval_seconds, i)?,
            src_ip: None,
            bytes_sent: sent[i].max(0.0),
            bytes_received: received[i].max(0.0),
            connections: connections[i] as u64,
            active_sessions: sessions[i] as u64,
            label: 0,
            attack_kind: None,
        });
    }
    if cfg.anomaly_every > 0 {
        for r in records.iter_mut().step_by(cfg.anomaly_every) {
            inject_burst(rng, r);
        }
    }
    Ok(records)
}

fn inject_burst<R: Rng + ?Sized>(rng: &mut R, r: &mut SampleRecord) {
    r.bytes_sent = normal(rng, 5e6, 5e5).max(0.0);
    r.bytes_received = normal(rng, 6e6, 6e5).max(0.0);
    r.label = 1;
    r.attack_kind = Some(AttackKind::Burst);
}

/// Expected activity (0.15 to 1.0) at a moment, before noise: the rhythm of an office network.
///
/// A plateau over business hours 08:00–18:00 UTC with smooth ramps (logistic, about an hour
/// wide) over a night floor of 0.15; on Saturdays and Sundays the daytime part is cut to 30 %.
/// It uses the exact time of day, so 5-minute data follows the same curve as hourly data.
fn base_activity(t: DateTime<Utc>) -> f64 {
    let hour = f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + f64::from(t.second()) / 3600.0;
    let logistic = |x: f64| 1.0 / (1.0 + (-x).exp());
    let business = logistic((hour - 8.0) * 1.5) * logistic((18.0 - hour) * 1.5);
    let weekly = match t.weekday() {
        Weekday::Sat | Weekday::Sun => 0.3,
        _ => 1.0,
    };
    0.15 + 0.85 * business * weekly
}

/// Mixed into the seed for the attack stream of the realistic profile (any fixed odd constant).
const ATTACK_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;

/// Nights and weekends: where beaconing is placed.
fn is_off_hours(t: DateTime<Utc>) -> bool {
    base_activity(t) < 0.5
}

/// Realistic profile.
///
/// For each record, with `a` = [`base_activity`] times mean-one log-normal noise (σ = 0.2):
/// - `active_sessions` ~ Poisson(60 a): about 60 on a weekday afternoon, 9 at night;
/// - `connections` ~ Poisson(3 + sessions · r), r ~ LogNormal(median 2.5, σ 0.2) connections per session;
/// - `bytes_sent` = connections · LogNormal(median 8 kB, σ 0.4) + background LogNormal(median 20 kB, σ 0.3);
/// - `bytes_received` = connections · LogNormal(median 12 kB, σ 0.4) + background LogNormal(median 30 kB, σ 0.3).
///
/// Then, from a second random stream (so the background above does not change with the
/// attack settings), `round(anomaly_rate · n)` distinct records become attacks, the count split evenly over
/// `attack_kinds` (earlier kinds take the remainder); beaconing goes to off-hours records while
/// there are any. Each attack modifies the normal draw as its [`AttackKind`] documents.
fn generate_realistic(
    cfg: &GeneratorConfig,
    rng: &mut StdRng,
    watch: &Watch,
) -> Result<Vec<SampleRecord>, Made> {
    let n = cfg.n_records;
    let timestamps = (0..n)
        .map(|i| timestamp_at(cfg.start, cfg.interval_seconds, i))
        .collect::<Result<Vec<_>, _>>()?;
    // Attacks draw from their own stream, so the background traffic is the same whatever
    // anomaly_rate and attack_kinds say: an attack record is its normal twin plus the attack.
    let mut attack_rng = StdRng::seed_from_u64(cfg.seed ^ ATTACK_STREAM);
    let kinds = assign_attacks(cfg, &timestamps, &mut attack_rng);
    // Each beacon is a 10-minute check-in; an interval holds interval/600 of them (at least one).
    let beacons = (cfg.interval_seconds as f64 / 600.0)
        .round()
        .clamp(1.0, 1000.0) as u64;

    let mut records = Vec::with_capacity(n);
    for (i, (t, kind)) in timestamps.into_iter().zip(kinds).enumerate() {
        watch.at(i)?;
        let activity = base_activity(t) * log_normal(rng, (-0.02f64).exp(), 0.2);
        let sessions = poisson(rng, 60.0 * activity);
        let per_session = log_normal(rng, 2.5, 0.2);
        let connections = poisson(rng, 3.0 + sessions as f64 * per_session);
        let bytes_sent = connections as f64 * log_normal(rng, 8e3, 0.4) + log_normal(rng, 2e4, 0.3);
        let bytes_received =
            connections as f64 * log_normal(rng, 1.2e4, 0.4) + log_normal(rng, 3e4, 0.3);
        let mut r = SampleRecord {
            timestamp: t,
            src_ip: None,
            bytes_sent,
            bytes_received,
            connections,
            active_sessions: sessions,
            label: 0,
            attack_kind: None,
        };
        if let Some(kind) = kind {
            inject_attack(&mut attack_rng, &mut r, kind, beacons);
        }
        records.push(r);
    }
    Ok(records)
}

/// Chooses which records are attacks and of which kind.
fn assign_attacks(
    cfg: &GeneratorConfig,
    timestamps: &[DateTime<Utc>],
    rng: &mut StdRng,
) -> Vec<Option<AttackKind>> {
    let n = timestamps.len();
    let mut out = vec![None; n];
    let kinds = cfg.attack_kinds_or(&DEFAULT_ATTACK_KINDS);
    let total = ((cfg.anomaly_rate * n as f64).round() as usize).min(n);
    if total == 0 || kinds.is_empty() {
        return out;
    }
    let count_of = |k: usize| total / kinds.len() + usize::from(k < total % kinds.len());

    // Beaconing first, on off-hours records, so the other kinds cannot take all of those.
    if let Some(b) = kinds.iter().position(|k| *k == AttackKind::Beaconing) {
        let mut off: Vec<usize> = (0..n).filter(|&i| is_off_hours(timestamps[i])).collect();
        let take = count_of(b).min(off.len());
        let (chosen, _) = off.partial_shuffle(rng, take);
        for &i in chosen.iter() {
            out[i] = Some(AttackKind::Beaconing);
        }
    }
    let already = out.iter().filter(|k| k.is_some()).count();
    let mut free: Vec<usize> = (0..n).filter(|&i| out[i].is_none()).collect();
    let (chosen, _) = free.partial_shuffle(rng, total - already);
    // Beaconing that found too few off-hours records takes the leftover from anywhere.
    let mut slots = chosen.iter();
    for (k, kind) in kinds.iter().enumerate() {
        let want = if *kind == AttackKind::Beaconing {
            count_of(k) - already
        } else {
            count_of(k)
        };
        for &i in slots.by_ref().take(want) {
            out[i] = Some(*kind);
        }
    }
    out
}

fn inject_attack<R: Rng + ?Sized>(
    rng: &mut R,
    r: &mut SampleRecord,
    kind: AttackKind,
    beacons: u64,
) {
    match kind {
        AttackKind::Burst => inject_burst(rng, r),
        AttackKind::Exfiltration => {
            r.bytes_sent += log_normal(rng, 8e6, 0.5);
            r.connections += poisson(rng, 2.0);
        }
        AttackKind::Flood => {
            let scale = log_normal(rng, 1.0, 0.3);
            let extra = poisson(rng, 1000.0 * scale);
            r.connections += extra;
            r.active_sessions += poisson(rng, 2.0 * r.active_sessions as f64 + 30.0);
            r.bytes_sent += extra as f64 * log_normal(rng, 300.0, 0.2);
            r.bytes_received += extra as f64 * log_normal(rng, 150.0, 0.2);
        }
        AttackKind::PortScan => {
            let scale = log_normal(rng, 1.0, 0.3);
            let extra = poisson(rng, 1500.0 * scale);
            r.connections += extra;
            r.bytes_sent += extra as f64 * log_normal(rng, 60.0, 0.1);
            r.bytes_received += extra as f64 * log_normal(rng, 40.0, 0.1);
        }
        AttackKind::Beaconing => {
            // Regular: the same small payload every time, hence the tiny spread.
            r.connections += beacons;
            r.active_sessions += 1;
            r.bytes_sent += beacons as f64 * log_normal(rng, 1.5e3, 0.05);
            r.bytes_received += beacons as f64 * log_normal(rng, 3e3, 0.05);
        }
        // The network profile injects its own (`check` refuses it in the others).
        AttackKind::OffHours => {}
    }
    r.label = 1;
    r.attack_kind = Some(kind);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(xs: impl Iterator<Item = f64>) -> f64 {
        let v: Vec<f64> = xs.collect();
        v.iter().sum::<f64>() / v.len() as f64
    }

    fn std_dev(xs: impl Iterator<Item = f64>) -> f64 {
        let v: Vec<f64> = xs.collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    }

    fn correlation(xs: &[f64], ys: &[f64]) -> f64 {
        let mx = mean(xs.iter().copied());
        let my = mean(ys.iter().copied());
        let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let vx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
        let vy: f64 = ys.iter().map(|y| (y - my) * (y - my)).sum();
        cov / (vx * vy).sqrt()
    }

    fn realistic(n: usize, rate: f64, seed: u64) -> Vec<SampleRecord> {
        generate(&GeneratorConfig {
            profile: Profile::Realistic,
            n_records: n,
            anomaly_rate: rate,
            seed,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_watched_generation_asks_before_every_block_and_stops_when_told() {
        use std::cell::Cell;
        let n = 2 * GENERATE_BLOCK + 1;
        for profile in [Profile::Seed, Profile::Realistic, Profile::Network] {
            let cfg = GeneratorConfig {
                profile,
                n_records: n,
                hosts: 50,
                anomaly_rate: 0.05,
                ..Default::default()
            };
            let asked = Cell::new(0usize);
            let never = || {
                asked.set(asked.get() + 1);
                false
            };
            let all = generate_watched(&cfg, &never).unwrap().unwrap();
            assert!(
                all == generate(&cfg).unwrap(),
                "{profile:?}: not generate's records"
            );
            // At least once per block of the pass that makes the records.
            let per_pass = n.div_ceil(GENERATE_BLOCK);
            assert!(
                asked.get() >= per_pass,
                "{profile:?}: asked {}",
                asked.get()
            );
            // Told to stop at the second question, it asks no more and makes nothing.
            let asked = Cell::new(0usize);
            let second = || {
                asked.set(asked.get() + 1);
                asked.get() == 2
            };
            assert_eq!(generate_watched(&cfg, &second), Ok(None), "{profile:?}");
            assert_eq!(asked.get(), 2, "{profile:?}");
        }
    }

    #[test]
    fn same_config_same_records_other_seed_other_records() {
        for profile in [Profile::Seed, Profile::Realistic] {
            let cfg = GeneratorConfig {
                profile,
                ..Default::default()
            };
            let a = generate(&cfg).unwrap();
            assert_eq!(a, generate(&cfg).unwrap());
            let b = generate(&GeneratorConfig { seed: 43, ..cfg }).unwrap();
            assert_ne!(a[1].bytes_sent, b[1].bytes_sent);
            assert_eq!(a.len(), 720);
        }
    }

    #[test]
    fn seed_profile_follows_the_tutorial() {
        let recs = generate(&GeneratorConfig::default()).unwrap();
        let labeled: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].label == 1).collect();
        assert_eq!(labeled, vec![0, 100, 200, 300, 400, 500, 600, 700]);
        assert!(
            labeled
                .iter()
                .all(|&i| recs[i].attack_kind == Some(AttackKind::Burst))
        );
        assert!(
            recs.iter()
                .all(|r| (r.label == 0) == r.attack_kind.is_none())
        );
        assert_eq!(recs[0].timestamp.to_rfc3339(), "2024-01-01T00:00:00+00:00");
        assert_eq!(
            recs[719].timestamp.to_rfc3339(),
            "2024-01-30T23:00:00+00:00"
        );

        let normal: Vec<&SampleRecord> = recs.iter().filter(|r| r.label == 0).collect();
        let col = |f: fn(&SampleRecord) -> f64| normal.iter().map(move |r| f(r));
        let within = |got: f64, want: f64, rel: f64| (got - want).abs() <= rel * want;
        assert!(within(mean(col(|r| r.bytes_sent)), 1e6, 0.03));
        assert!(within(std_dev(col(|r| r.bytes_sent)), 2e5, 0.10));
        assert!(within(mean(col(|r| r.bytes_received)), 1.2e6, 0.03));
        assert!(within(std_dev(col(|r| r.bytes_received)), 2.5e5, 0.10));
        assert!(within(mean(col(|r| r.connections as f64)), 50.0, 0.03));
        assert!(within(
            std_dev(col(|r| r.connections as f64)),
            50f64.sqrt(),
            0.10
        ));
        assert!(within(mean(col(|r| r.active_sessions as f64)), 25.0, 0.03));
        assert!(within(
            std_dev(col(|r| r.active_sessions as f64)),
            5.0,
            0.10
        ));
        // Bursts: N(5e6, 5e5) and N(6e6, 6e5); 8 draws, so only a loose band.
        for &i in &labeled {
            assert!((3e6..7e6).contains(&recs[i].bytes_sent), "{:?}", recs[i]);
            assert!(
                (3.6e6..8.4e6).contains(&recs[i].bytes_received),
                "{:?}",
                recs[i]
            );
        }
    }

    #[test]
    fn seed_profile_schedule_follows_anomaly_every_and_interval() {
        let recs = generate(&GeneratorConfig {
            n_records: 10,
            anomaly_every: 3,
            interval_seconds: 300,
            ..Default::default()
        })
        .unwrap();
        let labeled: Vec<usize> = (0..10).filter(|&i| recs[i].label == 1).collect();
        assert_eq!(labeled, vec![0, 3, 6, 9]);
        assert_eq!(recs[1].timestamp.to_rfc3339(), "2024-01-01T00:05:00+00:00");
        let none = generate(&GeneratorConfig {
            anomaly_every: 0,
            ..Default::default()
        })
        .unwrap();
        assert!(none.iter().all(|r| r.label == 0));
    }

    #[test]
    fn realistic_profile_has_rhythm_and_correlated_features() {
        let recs = realistic(2000, 0.0, 42);
        let sessions: Vec<f64> = recs.iter().map(|r| r.active_sessions as f64).collect();
        let connections: Vec<f64> = recs.iter().map(|r| r.connections as f64).collect();
        let sent: Vec<f64> = recs.iter().map(|r| r.bytes_sent).collect();
        assert!(correlation(&sessions, &connections) > 0.5);
        assert!(correlation(&connections, &sent) > 0.5);

        let weekday =
            |r: &&SampleRecord| !matches!(r.timestamp.weekday(), Weekday::Sat | Weekday::Sun);
        let day = recs
            .iter()
            .filter(weekday)
            .filter(|r| (10..16).contains(&r.timestamp.hour()));
        let night = recs
            .iter()
            .filter(weekday)
            .filter(|r| r.timestamp.hour() < 5);
        let day_mean = mean(day.map(|r| r.connections as f64));
        let night_mean = mean(night.map(|r| r.connections as f64));
        assert!(
            night_mean * 3.0 < day_mean,
            "night {night_mean} day {day_mean}"
        );

        let weekend_noon = recs
            .iter()
            .filter(|r| !weekday(r) && (10..16).contains(&r.timestamp.hour()));
        assert!(mean(weekend_noon.map(|r| r.connections as f64)) * 2.0 < day_mean);
    }

    #[test]
    fn realistic_rhythm_follows_the_clock_not_the_row_index() {
        // 5-minute data: 12 rows per hour, so row 150 is 12:30 on Monday 2024-01-01.
        let recs = generate(&GeneratorConfig {
            profile: Profile::Realistic,
            n_records: 288,
            interval_seconds: 300,
            anomaly_rate: 0.0,
            ..Default::default()
        })
        .unwrap();
        let small_hours = mean(recs[..60].iter().map(|r| r.active_sessions as f64));
        let midday = mean(recs[132..168].iter().map(|r| r.active_sessions as f64));
        assert!(small_hours * 3.0 < midday, "{small_hours} vs {midday}");
    }

    #[test]
    fn realistic_attacks_appear_at_the_rate_and_move_features_as_documented() {
        let baseline = realistic(2000, 0.0, 7);
        let recs = realistic(2000, 0.05, 7);
        assert_eq!(recs.iter().filter(|r| r.label == 1).count(), 100);
        for kind in DEFAULT_ATTACK_KINDS {
            assert_eq!(
                recs.iter().filter(|r| r.attack_kind == Some(kind)).count(),
                25,
                "{kind:?}"
            );
        }
        // The attack stream is separate: normal records are identical to the attack-free run.
        for (r, b) in recs.iter().zip(&baseline) {
            if r.label == 0 {
                assert_eq!(r, b);
                continue;
            }
            let per_conn = |x: &SampleRecord| x.bytes_sent / x.connections.max(1) as f64;
            match r.attack_kind {
                Some(AttackKind::Exfiltration) => {
                    assert!(r.bytes_sent > b.bytes_sent + 1e6, "{r:?}");
                    assert_eq!(r.bytes_received, b.bytes_received);
                    assert_eq!(r.active_sessions, b.active_sessions);
                }
                Some(AttackKind::Flood) => {
                    assert!(r.connections > b.connections + 400, "{r:?}");
                    assert!(r.active_sessions > b.active_sessions + 10, "{r:?}");
                    let extra = (r.connections - b.connections) as f64;
                    assert!((r.bytes_sent - b.bytes_sent) / extra < 1000.0, "{r:?}");
                }
                Some(AttackKind::PortScan) => {
                    assert!(r.connections > b.connections + 500, "{r:?}");
                    assert_eq!(r.active_sessions, b.active_sessions);
                    assert!(per_conn(r) < 0.25 * per_conn(b), "{r:?} vs {b:?}");
                }
                Some(AttackKind::Beaconing) => {
                    assert!(is_off_hours(r.timestamp), "{r:?}");
                    assert_eq!(r.connections, b.connections + 6);
                    assert_eq!(r.active_sessions, b.active_sessions + 1);
                    let extra = r.bytes_sent - b.bytes_sent;
                    assert!((8e3..11e3).contains(&extra), "{extra}");
                }
                other => panic!("unexpected kind {other:?}"),
            }
        }
    }

    #[test]
    fn realistic_attack_kinds_are_configurable() {
        let recs = generate(&GeneratorConfig {
            profile: Profile::Realistic,
            n_records: 1000,
            anomaly_rate: 0.1,
            attack_kinds: Some(vec![AttackKind::Burst, AttackKind::PortScan]),
            ..Default::default()
        })
        .unwrap();
        let count = |k| recs.iter().filter(|r| r.attack_kind == Some(k)).count();
        assert_eq!(count(AttackKind::Burst), 50);
        assert_eq!(count(AttackKind::PortScan), 50);
        assert_eq!(count(AttackKind::Flood), 0);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases = [
            (r#"{"n_records": 0}"#, "n_records"),
            (r#"{"n_records": 1000001}"#, "n_records"),
            (r#"{"interval_seconds": 0}"#, "interval_seconds"),
            (
                r#"{"interval_seconds": 18446744073709551615}"#,
                "interval_seconds",
            ),
            (
                r#"{"profile": "realistic", "anomaly_rate": 0.9}"#,
                "anomaly_rate",
            ),
            (
                r#"{"profile": "realistic", "anomaly_rate": -0.1}"#,
                "anomaly_rate",
            ),
            (
                r#"{"profile": "realistic", "attack_kinds": []}"#,
                "attack_kinds",
            ),
            (
                r#"{"profile": "realistic", "attack_kinds": ["flood", "flood"]}"#,
                "attack_kinds",
            ),
        ];
        for (json, field) in cases {
            let cfg: GeneratorConfig = serde_json::from_str(json).unwrap();
            let err = generate(&cfg).unwrap_err();
            assert_eq!(err.field(), field, "{json}: {err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        let nan = GeneratorConfig {
            profile: Profile::Realistic,
            anomaly_rate: f64::NAN,
            ..Default::default()
        };
        assert_eq!(generate(&nan).unwrap_err().field(), "anomaly_rate");
        let err = serde_json::from_str::<GeneratorConfig>(r#"{"n_rows": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `n_rows`"), "{err}");
        let err = serde_json::from_str::<GeneratorConfig>(r#"{"profile": "busy"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `busy`"), "{err}");
    }

    #[test]
    fn json_round_trip_uses_documented_names() {
        let cfg: GeneratorConfig = serde_json::from_str(
            r#"{"profile": "realistic", "start": "2024-06-01T12:00:00Z", "attack_kinds": ["port_scan"]}"#,
        )
        .unwrap();
        assert_eq!(cfg.attack_kinds, Some(vec![AttackKind::PortScan]));
        assert_eq!(cfg.n_records, 720);
        let recs = generate(&GeneratorConfig {
            n_records: 2,
            ..Default::default()
        })
        .unwrap();
        let json = serde_json::to_value(&recs).unwrap();
        assert_eq!(json[0]["attack_kind"], "burst");
        assert_eq!(json[0]["timestamp"], "2024-01-01T00:00:00Z");
        assert!(json[1].get("attack_kind").is_none());
        let back: Vec<SampleRecord> = serde_json::from_value(json).unwrap();
        assert_eq!(back, recs);
        assert_eq!(
            recs[1].features(),
            [
                recs[1].bytes_sent,
                recs[1].bytes_received,
                recs[1].connections as f64,
                recs[1].active_sessions as f64
            ]
        );
    }
}
