//! Other ways of combining the entity baselines' relative signals, measured on the `network`
//! profile (issue #16's beaconing gap). The baselines are fitted without an activity feature, so
//! `z` is the same as the service's; the service scores seasonal fits by the "activity class"
//! row (`EntityBaselines` with `connections`), before that by the root sum of squares.
//!
//! `cargo run --release --example baselines_combine [hosts] [seed] [noise|smooth|noise,smooth]`
//! (default 100 hosts, seed 42): fits entity + daily baselines on days 1-3 as
//! `examples/baselines.rs` does (with `noise`, hour medians shrunk by `MedianShrink::Noise`
//! instead; with `smooth`, medians interpolated between hours by the minute), takes each record's
//! relative signals `z` (`EntityBaselines::score_into`) and scores them by each combination,
//! each calibrated as the service's is (0.5 at the training records' 99.5th percentile).
//! Beaconing is also split by where the beacon fell: a workstation at night (activity under
//! 0.1), a workstation's ramp hours (0.1-0.5), another kind of host (backup hosts at night).
//! "Activity class" rows judge a record by the correlation of the signals among training records
//! whose entity-hour usually holds about as many connections (six classes of two doublings).
//! Tied to the profile's four features (bytes_sent, bytes_received, connections,
//! active_sessions); the rows marked "knowing the attack" keep only the signals a beacon moves,
//! a choice shown for what it would take, not a design.

use std::collections::HashMap;

use chrono::TimeDelta;
use netsentinel::detector::Matrix;
use netsentinel::detector::baseline::{EntityBaselines, MedianShrink, Seasonality, Tuning};
use netsentinel::detector::generator::network::{HostKind, hosts as network_hosts};
use netsentinel::detector::generator::{AttackKind, GeneratorConfig, SampleRecord, generate};
use netsentinel::detector::metrics::roc_auc;
use netsentinel::detector::threshold::percentiles_linear;

/// The inverse of a small square matrix (Gauss-Jordan with partial pivoting).
fn inverse(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))
            .unwrap();
        a.swap(c, p);
        inv.swap(c, p);
        let d = a[c][c];
        for j in 0..n {
            a[c][j] /= d;
            inv[c][j] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = a[r][c];
                for j in 0..n {
                    a[r][j] -= f * a[c][j];
                    inv[r][j] -= f * inv[c][j];
                }
            }
        }
    }
    inv
}

/// The second moments of the signals `idx` of `zs` (each clipped to ±`clip`, as attacks in
/// training would inflate them), plus `ridge` on the diagonal.
fn cov(zs: &[Vec<f64>], idx: &[usize], clip: f64, ridge: f64) -> Vec<Vec<f64>> {
    let m = idx.len();
    let mut c = vec![vec![0.0; m]; m];
    for z in zs {
        for a in 0..m {
            for b in 0..m {
                c[a][b] += z[idx[a]].clamp(-clip, clip) * z[idx[b]].clamp(-clip, clip);
            }
        }
    }
    let n = zs.len() as f64;
    for (a, row) in c.iter_mut().enumerate() {
        for v in row.iter_mut() {
            *v /= n;
        }
        row[a] += ridge;
    }
    c
}

/// `sqrt(zᵀ inv z)` over the signals `idx`.
fn quad(inv: &[Vec<f64>], z: &[f64], idx: &[usize]) -> f64 {
    let mut s = 0.0;
    for a in 0..idx.len() {
        for b in 0..idx.len() {
            s += z[idx[a]] * inv[a][b] * z[idx[b]];
        }
    }
    s.max(0.0).sqrt()
}

/// The standard normal quantile of `p` (Acklam's rational approximation, relative error
/// below 1.2e-9).
fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549671664908324,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The normal quantile of `x`'s upper tail share in sorted `v` (`x` as unusual among the
/// training values as a standard normal this far out is), at least 0.
fn gaussianized(v: &[f64], x: f64) -> f64 {
    let at_or_above = v.len() - v.partition_point(|&a| a < x);
    probit(1.0 - (at_or_above as f64 + 1.0) / (v.len() as f64 + 1.0)).max(0.0)
}

type Test<'a> = Box<dyn Fn(&[f64], usize) -> f64 + 'a>;
/// A combination: a record's relative signals, entity and activity class to its statistic.
type Combine<'a> = Box<dyn Fn(&[f64], &str, usize) -> f64 + 'a>;

/// The larger of the omnibus statistic over `q_omni` and the test `t` over its own training
/// 99.5th percentile (over the training records `zt` of classes `ct`).
fn with_omni<'a>(
    t: Test<'a>,
    omni: &'a dyn Fn(&[f64], usize) -> f64,
    q_omni: f64,
    zt: &[Vec<f64>],
    ct: &[usize],
) -> Combine<'a> {
    let q = percentiles_linear((0..zt.len()).map(|i| t(&zt[i], ct[i])).collect(), &[99.5])[0]
        .max(1e-12);
    Box::new(move |z: &[f64], _: &str, c: usize| (omni(z, c) / q_omni).max(t(z, c) / q))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(42);
    let opts = args.next().unwrap_or_default();
    let noise = opts.split(',').any(|o| o == "noise");
    let smooth = opts.split(',').any(|o| o == "smooth");
    let weekly = opts.split(',').any(|o| o == "weekly");
    let (days, fit_days, seasonality) = if weekly {
        (14, 7, Seasonality::Weekly)
    } else {
        (4, 3, Seasonality::Daily)
    };
    let cfg = GeneratorConfig::network(hosts, days, 0.01, seed);
    let population = network_hosts(hosts, seed);
    let host_of: HashMap<&str, usize> = population
        .iter()
        .enumerate()
        .map(|(i, h)| (h.ip.as_str(), i))
        .collect();
    let records = generate(&cfg).expect("valid generator settings");
    let split = cfg.start + TimeDelta::days(fit_days);
    let (train, test): (Vec<&SampleRecord>, Vec<&SampleRecord>) =
        records.iter().partition(|r| r.timestamp < split);
    let mat = |rs: &[&SampleRecord]| {
        Matrix::from_rows(&rs.iter().map(|r| r.features()).collect::<Vec<_>>())
            .expect("four features a record")
    };
    let ents = |rs: &[&SampleRecord]| -> Vec<String> {
        rs.iter()
            .map(|r| r.src_ip.clone().unwrap_or_default())
            .collect()
    };
    let times = |rs: &[&SampleRecord]| rs.iter().map(|r| r.timestamp).collect::<Vec<_>>();
    let (xt, xs) = (mat(&train), mat(&test));
    let (et, es) = (ents(&train), ents(&test));
    let (tt, ts) = (times(&train), times(&test));
    let kt: Vec<&str> = et.iter().map(String::as_str).collect();
    let ks: Vec<&str> = es.iter().map(String::as_str).collect();
    let tuning = Tuning {
        median: if noise {
            MedianShrink::Noise
        } else {
            MedianShrink::Records
        },
        smooth,
        ..Tuning::default()
    };
    let b = EntityBaselines::fit(&xt, &kt, &tt, seasonality, None, &tuning);
    let m = b.n_signals();
    let d = b.n_features();
    let z_of = |x: &Matrix, k: &[&str], t: &[chrono::DateTime<chrono::Utc>]| {
        (0..x.n_rows())
            .map(|i| {
                let mut z = vec![0.0; m];
                b.score_into(x.row(i), k[i], t[i], &mut z);
                z
            })
            .collect::<Vec<_>>()
    };
    let zt = z_of(&xt, &kt, &tt);
    let zs = z_of(&xs, &ks, &ts);
    // Signals by what they are: features 0 bytes_sent, 1 bytes_received, 2 connections,
    // 3 active_sessions; then each pair's log ratio.
    let pair = |a: usize, c: usize| (d..m).find(|&s| b.pair(s) == Some((a, c))).unwrap();
    let per_conn = [pair(0, 2), pair(1, 2)];
    let per_session = [pair(0, 3), pair(1, 3)];
    let all: Vec<usize> = (0..m).collect();
    let pooled_inv = inverse(cov(&zt, &all, 4.0, 0.2));
    let mut rows_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, k) in kt.iter().enumerate() {
        rows_of.entry(k).or_default().push(i);
    }
    let entity_inv: HashMap<&str, Vec<Vec<f64>>> = rows_of
        .iter()
        .map(|(k, rows)| {
            let z: Vec<Vec<f64>> = rows.iter().map(|&i| zt[i].clone()).collect();
            (*k, inverse(cov(&z, &all, 4.0, 0.1)))
        })
        .collect();
    // Volumes count only upward, as the service's score does.
    let up = move |z: &[f64]| -> Vec<f64> {
        z.iter()
            .enumerate()
            .map(|(s, &v)| if s < d { v.max(0.0) } else { v })
            .collect()
    };
    let sum_sq = move |z: &[f64], keep: &dyn Fn(usize) -> bool| {
        up(z)
            .iter()
            .enumerate()
            .filter(|(s, _)| keep(*s))
            .map(|(_, v)| v * v)
            .sum::<f64>()
    };
    let mean = |z: &[f64], s: [usize; 2]| (z[s[0]] + z[s[1]]) / 2f64.sqrt();
    // Each signal's training evidence (volumes upward only), sorted, for gaussianizing.
    let pooled: Vec<Vec<f64>> = (0..m)
        .map(|s| {
            let mut v: Vec<f64> = zt.iter().map(|z| up(z)[s].abs()).collect();
            v.sort_by(f64::total_cmp);
            v
        })
        .collect();
    // A shift of one feature alone, tested per feature: its own signal (upward only) and each
    // ratio it is in, signed as its rise moves them, summed and divided by the root of their
    // number; the largest over the features.
    let shift_signs: Vec<Vec<(usize, f64)>> = (0..d)
        .map(|j| {
            let mut g = vec![(j, 1.0)];
            for s in d..m {
                match b.pair(s) {
                    Some((a, _)) if a == j => g.push((s, 1.0)),
                    Some((_, c)) if c == j => g.push((s, -1.0)),
                    _ => {}
                }
            }
            g
        })
        .collect();
    let shift = |z: &[f64]| {
        let e = up(z);
        shift_signs
            .iter()
            .map(|g| {
                let t: f64 = g.iter().map(|&(s, sign)| sign * e[s]).sum();
                t.abs() / (g.len() as f64).sqrt()
            })
            .fold(0.0, f64::max)
    };
    // The same shifts weighted by the pooled correlation (generalised least squares): per
    // feature, (aᵀ P e)² / (aᵀ P a) with `a` its signs and `P` the inverse pooled second moments.
    let directions: Vec<(Vec<f64>, f64)> = shift_signs
        .iter()
        .map(|g| {
            let mut a = vec![0.0; m];
            for &(s, sign) in g {
                a[s] = sign;
            }
            let pa: Vec<f64> = (0..m)
                .map(|r| (0..m).map(|c| pooled_inv[r][c] * a[c]).sum())
                .collect();
            let norm: f64 = pa.iter().zip(&a).map(|(x, y)| x * y).sum();
            (pa, norm.max(1e-12))
        })
        .collect();
    let gls_shift = |z: &[f64]| {
        let e = up(z);
        directions
            .iter()
            .map(|(pa, norm)| {
                let t: f64 = pa.iter().zip(&e).map(|(x, y)| x * y).sum();
                t.abs() / norm.sqrt()
            })
            .fold(0.0, f64::max)
    };
    let q995 = |f: &dyn Fn(&[f64]) -> f64| {
        percentiles_linear(zt.iter().map(|z| f(z)).collect(), &[99.5])[0]
    };
    let q_rss = q995(&|z| sum_sq(z, &|_| true).sqrt());
    let q_shift = q995(&shift);
    let q_gls = q995(&gls_shift);
    // Each entity's median training deviation (the root sum of squares).
    let typical: HashMap<&str, f64> = rows_of
        .iter()
        .map(|(k, rows)| {
            let d: Vec<f64> = rows
                .iter()
                .map(|&i| sum_sq(&zt[i], &|_| true).sqrt())
                .collect();
            (*k, percentiles_linear(d, &[50.0])[0].max(1e-3))
        })
        .collect();
    // Activity classes: the entity-hour's usual connections, in doublings (bin `k` holds
    // `log2(1 + connections)` in [2k, 2k + 2), the last bin the rest), and the inverse second
    // moments of the (upward-only) relative signals within each, from the training records.
    const CLASSES: usize = 6;
    let class = |e: &str, t| {
        let (c, _) = b.expected(e, t, 2);
        ((c + 1.0).log2() as usize / 2).min(CLASSES - 1)
    };
    let ct: Vec<usize> = (0..zt.len()).map(|i| class(kt[i], tt[i])).collect();
    let cs: Vec<usize> = (0..zs.len()).map(|i| class(ks[i], ts[i])).collect();
    let zt_up: Vec<Vec<f64>> = zt.iter().map(|z| up(z)).collect();
    let class_inv: Vec<Vec<Vec<f64>>> = (0..CLASSES)
        .map(|c| {
            let members: Vec<Vec<f64>> = (0..zt.len())
                .filter(|&i| ct[i] == c)
                .map(|i| zt_up[i].clone())
                .collect();
            // A class with too few records takes every record's.
            let source = if members.len() < 200 {
                &zt_up
            } else {
                &members
            };
            inverse(cov(source, &all, 4.0, 0.2))
        })
        .collect();
    let pooled_up_inv = inverse(cov(&zt_up, &all, 4.0, 0.2));
    // Matched tests of one signature beside the omnibus: a direction `a` in signal space, its
    // one-sided statistic `max(aᵀe, 0) / |a|` (unweighted) or `max(aᵀ P e, 0) / sqrt(aᵀ P a)`
    // with `P` the record's activity class's inverse second moments (weighted), each divided
    // by its own training 99.5th percentile; the record's statistic is the larger of that and
    // the omnibus's (the class Mahalanobis) likewise divided.
    let omni = |z: &[f64], c: usize| quad(&class_inv[c], &up(z), &all);
    let ct_ref = &ct;
    let q_omni = percentiles_linear(
        (0..zt.len()).map(|i| omni(&zt[i], ct_ref[i])).collect(),
        &[99.5],
    )[0];
    // "The activity alone rose": connections' own signal up, every ratio it is in moving as its
    // rise moves it (the other features' per-connection volumes down).
    let activity = 2usize;
    let mut alone = vec![0.0; m];
    alone[activity] = 1.0;
    for (s, v) in alone.iter_mut().enumerate().skip(d) {
        match b.pair(s) {
            Some((a, _)) if a == activity => *v = 1.0,
            Some((_, c)) if c == activity => *v = -1.0,
            _ => {}
        }
    }
    // Connections up, bytes per connection down (the two byte features only).
    let mut fewer_bytes = vec![0.0; m];
    fewer_bytes[activity] = 1.0;
    fewer_bytes[per_conn[0]] = -1.0;
    fewer_bytes[per_conn[1]] = -1.0;
    let unweighted = |a: Vec<f64>| {
        let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
        move |z: &[f64], _c: usize| {
            let e = up(z);
            (a.iter().zip(&e).map(|(x, y)| x * y).sum::<f64>() / norm).max(0.0)
        }
    };
    let weighted = |a: Vec<f64>| {
        let per_class: Vec<(Vec<f64>, f64)> = class_inv
            .iter()
            .map(|p| {
                let pa: Vec<f64> = (0..m)
                    .map(|r| (0..m).map(|c| p[r][c] * a[c]).sum())
                    .collect();
                let n: f64 = pa.iter().zip(&a).map(|(x, y)| x * y).sum();
                (pa, n.max(1e-12).sqrt())
            })
            .collect();
        move |z: &[f64], c: usize| {
            let e = up(z);
            let (pa, n) = &per_class[c];
            (pa.iter().zip(&e).map(|(x, y)| x * y).sum::<f64>() / n).max(0.0)
        }
    };
    let omni_ref: &dyn Fn(&[f64], usize) -> f64 = &omni;
    let variants: Vec<(&str, Combine)> = vec![
        (
            "root sum of squares (the service's before activity classes)",
            Box::new(move |z, _, _| sum_sq(z, &|_| true).sqrt()),
        ),
        (
            "sum of the top 2",
            Box::new(move |z, _, _| {
                let mut c: Vec<f64> = up(z).iter().map(|v| v.abs()).collect();
                c.sort_by(|a, b| b.total_cmp(a));
                c[0] + c[1]
            }),
        ),
        (
            "Mahalanobis, pooled correlation",
            Box::new(|z, _, _| quad(&pooled_inv, z, &all)),
        ),
        (
            "Mahalanobis, each entity's correlation",
            Box::new(|z, k, _| quad(entity_inv.get(k).unwrap_or(&pooled_inv), z, &all)),
        ),
        (
            "Mahalanobis, volumes upward only, pooled correlation",
            Box::new(|z, _, _| quad(&pooled_up_inv, &up(z), &all)),
        ),
        (
            "Mahalanobis, volumes upward only, correlation per activity class (the service's)",
            Box::new(|z, _, c| quad(&class_inv[c], &up(z), &all)),
        ),
        (
            "activity classes + matched: the activity alone rose, unweighted",
            with_omni(
                Box::new(unweighted(alone.clone())),
                omni_ref,
                q_omni,
                &zt,
                ct_ref,
            ),
        ),
        (
            "activity classes + matched: the activity alone rose, weighted by the class",
            with_omni(
                Box::new(weighted(alone.clone())),
                omni_ref,
                q_omni,
                &zt,
                ct_ref,
            ),
        ),
        (
            "activity classes + matched: connections up, bytes per connection down, unweighted",
            with_omni(
                Box::new(unweighted(fewer_bytes.clone())),
                omni_ref,
                q_omni,
                &zt,
                ct_ref,
            ),
        ),
        (
            "activity classes + matched: connections up, bytes per connection down, weighted by the class",
            with_omni(
                Box::new(weighted(fewer_bytes.clone())),
                omni_ref,
                q_omni,
                &zt,
                ct_ref,
            ),
        ),
        (
            "matched alone: the activity alone rose, weighted by the class",
            {
                let t = weighted(alone.clone());
                Box::new(move |z: &[f64], _: &str, c: usize| t(z, c))
            },
        ),
        (
            "bytes per connection and per session pooled",
            Box::new(move |z, _, _| {
                let rest = sum_sq(z, &|s| !per_conn.contains(&s) && !per_session.contains(&s));
                (rest + mean(z, per_conn).powi(2) + mean(z, per_session).powi(2)).sqrt()
            }),
        ),
        (
            "root sum of squares over the entity's median one",
            Box::new(|z, k, _| {
                sum_sq(z, &|_| true).sqrt() / typical.get(k).copied().unwrap_or(1.0)
            }),
        ),
        (
            "student-t, nu 3: sum of ln(1 + z²/3)",
            Box::new(move |z, _, _| up(z).iter().map(|v| (v * v / 3.0).ln_1p()).sum()),
        ),
        (
            "student-t, nu 8",
            Box::new(move |z, _, _| up(z).iter().map(|v| (v * v / 8.0).ln_1p()).sum()),
        ),
        (
            "each signal gaussianized on the training records' (pooled)",
            Box::new(|z, _, _| {
                let e = up(z);
                (0..m)
                    .map(|s| gaussianized(&pooled[s], e[s].abs()).powi(2))
                    .sum::<f64>()
                    .sqrt()
            }),
        ),
        ("largest single-feature shift", Box::new(|z, _, _| shift(z))),
        (
            "largest single-feature shift, weighted by the pooled correlation",
            Box::new(|z, _, _| gls_shift(z)),
        ),
        (
            "larger of root sum of squares and weighted single-feature shift",
            Box::new(|z, _, _| (sum_sq(z, &|_| true).sqrt() / q_rss).max(gls_shift(z) / q_gls)),
        ),
        (
            "larger of root sum of squares and single-feature shift",
            Box::new(|z, _, _| (sum_sq(z, &|_| true).sqrt() / q_rss).max(shift(z) / q_shift)),
        ),
        (
            "pooled bytes per connection + bytes_sent, connections, sent/received only (knowing the attack)",
            Box::new(move |z, _, _| {
                let keep = [0, 2, pair(0, 1)];
                (sum_sq(z, &|s| keep.contains(&s)) + mean(z, per_conn).powi(2)).sqrt()
            }),
        ),
        (
            "connections up, bytes per connection down (knowing the attack)",
            Box::new(move |z, _, _| z[2] - z[per_conn[0]] - z[per_conn[1]]),
        ),
    ];
    let kinds = [
        AttackKind::Beaconing,
        AttackKind::Exfiltration,
        AttackKind::OffHours,
        AttackKind::PortScan,
    ];
    let median = if noise {
        "by noise"
    } else {
        "6 pseudo-records"
    };
    println!(
        "{hosts} hosts, seed {seed}, {days} days, entity + {seasonality:?} baselines (hour medians shrunk {median}); ROC AUC on days {}-{days}\n",
        fit_days + 1
    );
    // Where each beacon fell.
    let place = |r: &SampleRecord| {
        let host = &population[host_of[r.src_ip.as_deref().unwrap_or_default()]];
        match host.kind {
            HostKind::Workstation if host.activity(r.timestamp) < 0.1 => 0,
            HostKind::Workstation => 1,
            _ => 2,
        }
    };
    let beacons = |p: usize| {
        test.iter()
            .filter(|r| r.attack_kind == Some(AttackKind::Beaconing) && place(r) == p)
            .count()
    };
    println!(
        "| combination | overall | beaconing | (workstation night, {}) | (workstation ramp, {}) | (other hosts, {}) | exfiltration | off-hours | port scan | normal flagged |",
        beacons(0),
        beacons(1),
        beacons(2)
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, f) in &variants {
        let st: Vec<f64> = (0..zt.len()).map(|i| f(&zt[i], kt[i], ct[i])).collect();
        let k = percentiles_linear(st, &[99.5])[0];
        let ss: Vec<f64> = (0..zs.len())
            .map(|i| {
                let v = f(&zs[i], ks[i], cs[i]);
                v / (v + k)
            })
            .collect();
        let auc = |pos: &dyn Fn(&SampleRecord) -> bool| {
            let idx: Vec<usize> = (0..test.len())
                .filter(|&i| test[i].label == 0 || pos(test[i]))
                .collect();
            let y: Vec<bool> = idx.iter().map(|&i| test[i].label == 1).collect();
            let s: Vec<f64> = idx.iter().map(|&i| ss[i]).collect();
            roc_auc(&y, &s).unwrap_or(f64::NAN)
        };
        let mut per: Vec<String> = kinds
            .iter()
            .map(|kd| format!("{:.3}", auc(&|r| r.attack_kind == Some(*kd))))
            .collect();
        for p in (0..3).rev() {
            let a = auc(&|r| r.attack_kind == Some(AttackKind::Beaconing) && place(r) == p);
            per.insert(1, format!("{a:.3}"));
        }
        let normal: Vec<usize> = (0..test.len()).filter(|&i| test[i].label == 0).collect();
        let nf = normal.iter().filter(|&&i| ss[i] > 0.5).count() as f64 / normal.len() as f64;
        println!(
            "| {name} | {:.3} | {} | {:.2} % |",
            auc(&|r| r.label == 1),
            per.join(" | "),
            100.0 * nf
        );
    }
}
