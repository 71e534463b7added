//! The window engine against one-shot aggregation (`window_records`, what `score` does): any
//! split of a log, fed in any order within the lateness, with restarts, retries and replicas,
//! then flushed, gives the same window records bit for bit.

use proptest::prelude::*;

use super::book::{BookConfig, Dedupe, PartialWindow, WindowBook};
use crate::records::zeek::{
    GroupBy, OnInvalid, Window, WindowRecord, ZeekError, ZeekFormat, ZeekOptions, parse_conn_log,
    window_records,
};

const TSV_HEADER: &str = "#separator \\x09\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\torig_bytes\tresp_bytes\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tcount\tcount\n";

/// A generated connection: (ts micros, orig, resp, port, orig_bytes, resp_bytes).
type Gen = (i64, u8, u8, u16, Option<u64>, Option<u64>);

fn line(i: usize, c: &Gen, format: ZeekFormat) -> String {
    let (ts, o, r, p, ob, rb) = *c;
    let ts = format!("{}.{:06}", ts / 1_000_000, ts % 1_000_000);
    match format {
        ZeekFormat::Tsv => {
            let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            format!(
                "{ts}\tC{i}\t10.0.0.{o}\t{}\t10.0.1.{r}\t{p}\ttcp\t{}\t{}",
                40_000 + i,
                show(ob),
                show(rb)
            )
        }
        ZeekFormat::Json => {
            let mut s = format!(
                "{{\"ts\":{ts},\"uid\":\"C{i}\",\"id.orig_h\":\"10.0.0.{o}\",\"id.resp_h\":\"10.0.1.{r}\",\"id.resp_p\":{p}"
            );
            if let Some(v) = ob {
                s += &format!(",\"orig_bytes\":{v}");
            }
            if let Some(v) = rb {
                s += &format!(",\"resp_bytes\":{v}");
            }
            s + "}"
        }
    }
}

fn opts(window: u64, group_by: GroupBy) -> ZeekOptions {
    ZeekOptions {
        window: Window::from_secs(window).unwrap(),
        group_by,
        ..ZeekOptions::default()
    }
}

fn bits(recs: &[WindowRecord]) -> Vec<(i64, Option<String>, [u64; 4])> {
    recs.iter()
        .map(|r| {
            (
                r.timestamp.timestamp(),
                r.entity.clone(),
                r.features().map(f64::to_bits),
            )
        })
        .collect()
}

/// The event time (micros) of each data line, with the header read first for TSV.
fn line_times(lines: &[String], format: ZeekFormat) -> Vec<Option<i64>> {
    lines
        .iter()
        .map(|l| {
            let body = match format {
                ZeekFormat::Tsv if !l.starts_with('#') => format!("{TSV_HEADER}{l}"),
                _ => l.clone(),
            };
            parse_conn_log(body.as_bytes(), format)
                .ok()
                .map(|c| c[0].ts.timestamp_micros())
        })
        .collect()
}

/// The smallest lateness (whole seconds) under which no line of `chunks`, fed in this order, is
/// late: before each chunk, the latest time seen minus the lateness must stay before the end of
/// every window the chunk's lines fall in.
fn needed_lateness(chunks: &[Vec<Option<i64>>], window: i64) -> u64 {
    let mut latest: Option<i64> = None;
    let mut need = 0i64;
    for chunk in chunks {
        if let Some(max) = latest {
            for t in chunk.iter().flatten() {
                let end = (t.div_euclid(1_000_000).div_euclid(window) + 1) * window * 1_000_000;
                // Not late: end > max - lateness.
                need = need.max(max - end + 1);
            }
        }
        for t in chunk.iter().flatten() {
            latest = latest.max(Some(*t));
        }
    }
    (need.max(0) as u64).div_ceil(1_000_000)
}

/// What to do between chunks.
#[derive(Debug, Clone, Copy)]
enum Step {
    Feed,
    /// Feed, then serialise the book and read it back (a restart).
    FeedAndRestart,
    /// Feed the chunk twice (a retry after a timeout).
    FeedTwice,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Feed),
        1 => Just(Step::FeedAndRestart),
        1 => Just(Step::FeedTwice),
    ]
}

struct Fed {
    closed: Vec<WindowRecord>,
    accepted: usize,
    duplicates: usize,
    late: usize,
}

/// Feeds `chunks` in order into a fresh book, following `steps`, then flushes.
fn feed(config: BookConfig, chunks: &[String], steps: &[Step], format: ZeekFormat) -> Fed {
    let mut book = WindowBook::new(config);
    let mut fed = Fed {
        closed: Vec::new(),
        accepted: 0,
        duplicates: 0,
        late: 0,
    };
    for (chunk, step) in chunks.iter().zip(steps.iter().cycle()) {
        let times = if matches!(step, Step::FeedTwice) {
            2
        } else {
            1
        };
        for _ in 0..times {
            let out = book.ingest(chunk.as_bytes(), format).unwrap();
            assert!(book.tally_is_exact());
            assert_eq!(out.report.rejected, 0, "{:?}", out.report.rejects);
            assert_eq!(out.report.windows_closed, out.closed.len());
            fed.accepted += out.report.accepted;
            fed.duplicates += out.report.duplicates;
            fed.late += out.report.late;
            fed.closed.extend(out.closed);
        }
        if matches!(step, Step::FeedAndRestart) {
            let bytes = book.to_bytes();
            book = WindowBook::from_bytes(&bytes).unwrap();
            assert!(book.tally_is_exact());
            // Equal states serialise to equal bytes.
            assert_eq!(book.to_bytes(), bytes);
        }
    }
    fed.closed.extend(book.flush());
    assert!(book.tally_is_exact());
    assert_eq!(book.state_bytes(), 0, "a flushed book holds nothing");
    fed
}

/// Cuts `lines` at `cuts` (fractions), keeps a TSV header chunk first, and orders the data chunks
/// by their index plus a random displacement (disorder bounded by `shuffle` chunks).
fn split(
    lines: &[String],
    format: ZeekFormat,
    cuts: &[usize],
    displacement: &[usize],
) -> Vec<Vec<String>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (lines.len() + 1)).collect();
    at.push(0);
    at.push(lines.len());
    at.sort_unstable();
    at.dedup();
    let mut chunks: Vec<(usize, Vec<String>)> = at
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let d = displacement.get(i).copied().unwrap_or(0);
            (i + d, lines[w[0]..w[1]].to_vec())
        })
        .collect();
    chunks.sort_by_key(|(k, _)| *k);
    let mut out: Vec<Vec<String>> = chunks.into_iter().map(|(_, c)| c).collect();
    if format == ZeekFormat::Tsv {
        out.insert(0, TSV_HEADER.lines().map(String::from).collect());
    }
    out
}

fn body(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn gen_log() -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec(
        (
            0i64..4 * 3_600_000_000,
            0u8..6,
            0u8..4,
            0u16..4,
            prop::option::of(0u64..1_000_000),
            prop::option::of(prop_oneof![0u64..1_000_000, Just(u64::MAX)]),
        ),
        1..120,
    )
    .prop_map(|mut conns| {
        // Roughly in time order, as Zeek writes them (by end time, so starts are a little out).
        conns.sort_by_key(|c| c.0 / 600_000_000);
        conns
            .into_iter()
            .map(|(t, o, r, p, ob, rb)| (1_700_000_000_000_000 + t, o, r, p, ob, rb))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any split and order within the lateness, with restarts and retries: the one-shot windows.
    #[test]
    fn any_split_in_any_order_within_the_lateness_gives_the_one_shot_windows(
        conns in gen_log(),
        json in any::<bool>(),
        window in prop::sample::select(vec![60u64, 300, 3600]),
        group_by in prop_oneof![Just(GroupBy::None), Just(GroupBy::OrigHost), Just(GroupBy::RespHost)],
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        displacement in prop::collection::vec(0usize..4, 14),
        steps in prop::collection::vec(step(), 1..8),
        extra_lateness in prop_oneof![Just(0u64), 0u64..600],
    ) {
        let format = if json { ZeekFormat::Json } else { ZeekFormat::Tsv };
        let lines: Vec<String> = conns.iter().enumerate().map(|(i, c)| line(i, c, format)).collect();
        let whole = match format {
            ZeekFormat::Tsv => format!("{TSV_HEADER}{}", body(&lines)),
            ZeekFormat::Json => body(&lines),
        };
        let (expected, _) = window_records(whole.as_bytes(), format, &opts(window, group_by)).unwrap();
        let chunks = split(&lines, format, &cuts, &displacement);
        let times: Vec<Vec<Option<i64>>> = chunks.iter().map(|c| line_times(c, format)).collect();
        let lateness = needed_lateness(&times, window as i64) + extra_lateness;
        let config = BookConfig {
            window: Window::from_secs(window).unwrap(),
            group_by,
            allowed_lateness_secs: lateness,
            dedupe: Dedupe::Uid,
            on_invalid: OnInvalid::Reject,
        };
        let bodies: Vec<String> = chunks.iter().map(|c| body(c)).collect();
        let fed = feed(config, &bodies, &steps, format);
        prop_assert_eq!(bits(&fed.closed), bits(&expected));
        prop_assert_eq!(fed.accepted, conns.len());
        // A retried chunk's lines are duplicates, or late when their window closed meanwhile.
        let retried: usize = chunks.iter().zip(steps.iter().cycle())
            .filter(|(_, s)| matches!(s, Step::FeedTwice))
            .map(|(c, _)| c.iter().filter(|l| !l.starts_with('#')).count())
            .sum();
        prop_assert_eq!(fed.duplicates + fed.late, retried);

        // Without dedupe and without retries, the same.
        let plain: Vec<Step> = steps.iter().map(|s| match s {
            Step::FeedTwice => Step::Feed,
            other => *other,
        }).collect();
        let fed = feed(BookConfig { dedupe: Dedupe::None, ..config }, &bodies, &plain, format);
        prop_assert_eq!(bits(&fed.closed), bits(&expected));
        prop_assert_eq!(fed.late, 0);
    }

    /// Two replicas each ingest part of the log (some chunks both, as retries that landed on
    /// different replicas); their partial states merge into the one-shot windows.
    #[test]
    fn replicas_partials_merge_into_the_one_shot_windows(
        conns in gen_log(),
        window in prop::sample::select(vec![60u64, 300, 3600]),
        group_by in prop_oneof![Just(GroupBy::None), Just(GroupBy::OrigHost)],
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        owner in prop::collection::vec(0u8..3, 14),
    ) {
        let format = ZeekFormat::Json;
        let lines: Vec<String> = conns.iter().enumerate().map(|(i, c)| line(i, c, format)).collect();
        let (expected, _) = window_records(body(&lines).as_bytes(), format, &opts(window, group_by)).unwrap();
        let chunks = split(&lines, format, &cuts, &[]);
        let config = BookConfig {
            window: Window::from_secs(window).unwrap(),
            group_by,
            // Nothing closes before the merge.
            allowed_lateness_secs: 86_400,
            dedupe: Dedupe::Uid,
            on_invalid: OnInvalid::Reject,
        };
        let mut a = WindowBook::new(config);
        let mut b = WindowBook::new(config);
        for (i, c) in chunks.iter().enumerate() {
            let c = body(c);
            // 0: replica a, 1: replica b, 2: both.
            let who = owner.get(i).copied().unwrap_or(0);
            if who != 1 {
                prop_assert!(a.ingest(c.as_bytes(), format).unwrap().closed.is_empty());
            }
            if who != 0 {
                prop_assert!(b.ingest(c.as_bytes(), format).unwrap().closed.is_empty());
            }
        }
        // The whole of b into a copy of a.
        let mut merged = WindowBook::from_bytes(&a.to_bytes()).unwrap();
        for p in b.partials() {
            merged.absorb(&p).unwrap();
        }
        prop_assert_eq!(bits(&merged.flush()), bits(&expected));
        // Window by window, and the other way round.
        let mut by_window: std::collections::BTreeMap<(i64, Option<String>), PartialWindow> =
            b.partials().into_iter().map(|p| ((p.start, p.entity.clone()), p)).collect();
        for p in a.partials() {
            let key = (p.start, p.entity.clone());
            match by_window.get_mut(&key) {
                Some(q) => q.merge(&p).unwrap(),
                None => {
                    by_window.insert(key, p);
                }
            }
        }
        let records: Vec<WindowRecord> = by_window.values().filter_map(PartialWindow::record).collect();
        prop_assert_eq!(bits(&records), bits(&expected));
    }
}

/// The real samples, cut into pieces of several sizes and fed in reverse order within a
/// lateness that allows it, with a restart in the middle: the one-shot windows.
#[test]
fn the_shared_samples_split_and_reordered_give_the_one_shot_windows() {
    for (name, format) in [
        ("conn.log", ZeekFormat::Tsv),
        ("conn.json.log", ZeekFormat::Json),
    ] {
        let text = String::from_utf8(crate::records::zeek::tests::shared_sample(name)).unwrap();
        let (header, data): (Vec<String>, Vec<String>) = text
            .lines()
            .map(String::from)
            .partition(|l| l.starts_with('#'));
        for (window, group_by) in [
            (60, GroupBy::OrigHost),
            (300, GroupBy::RespHost),
            (3600, GroupBy::None),
        ] {
            let (expected, _) =
                window_records(text.as_bytes(), format, &opts(window, group_by)).unwrap();
            for size in [1, 7, 50] {
                let mut chunks: Vec<Vec<String>> =
                    data.chunks(size).map(<[String]>::to_vec).collect();
                chunks.reverse();
                if format == ZeekFormat::Tsv {
                    // The header lines (with #close last, as in the log) go first.
                    chunks.insert(0, header.clone());
                }
                let times: Vec<Vec<Option<i64>>> = chunks
                    .iter()
                    .map(|c| {
                        c.iter()
                            .map(|l| {
                                let body = if format == ZeekFormat::Tsv && !l.starts_with('#') {
                                    format!("{}\n{l}\n", header.join("\n"))
                                } else {
                                    l.clone()
                                };
                                parse_conn_log(body.as_bytes(), format)
                                    .ok()
                                    .map(|c| c[0].ts.timestamp_micros())
                            })
                            .collect()
                    })
                    .collect();
                let config = BookConfig {
                    window: Window::from_secs(window).unwrap(),
                    group_by,
                    allowed_lateness_secs: needed_lateness(&times, window as i64),
                    dedupe: Dedupe::Uid,
                    on_invalid: OnInvalid::Reject,
                };
                let bodies: Vec<String> = chunks.iter().map(|c| body(c)).collect();
                let fed = feed(
                    config,
                    &bodies,
                    &[Step::Feed, Step::FeedAndRestart, Step::FeedTwice],
                    format,
                );
                assert_eq!(bits(&fed.closed), bits(&expected), "{name} {window} {size}");
                assert_eq!(fed.accepted, data.len(), "{name}");
            }
        }
    }
}

fn config(lateness: u64) -> BookConfig {
    BookConfig {
        window: "1m".parse().unwrap(),
        group_by: GroupBy::OrigHost,
        allowed_lateness_secs: lateness,
        dedupe: Dedupe::Uid,
        on_invalid: OnInvalid::Skip,
    }
}

fn json(ts: f64, uid: &str, orig: &str, bytes: u64) -> String {
    format!(
        "{{\"ts\":{ts},\"uid\":\"{uid}\",\"id.orig_h\":\"{orig}\",\"id.resp_h\":\"8.8.8.8\",\"id.resp_p\":53,\"orig_bytes\":{bytes}}}\n"
    )
}

#[test]
fn the_watermark_closes_windows_and_late_lines_are_counted_not_merged() {
    let mut book = WindowBook::new(config(30));
    let first = format!("{}{}", json(60.5, "C1", "a", 10), json(70.0, "C2", "b", 20));
    let out = book.ingest(first.as_bytes(), ZeekFormat::Json).unwrap();
    assert_eq!((out.report.accepted, out.report.windows_opened), (2, 2));
    // Latest 70s, lateness 30s: watermark 40s, the 60s window (ends 120s) stays open.
    assert_eq!(out.report.watermark.unwrap().timestamp(), 40);
    assert!(out.closed.is_empty());
    // 150.2s moves the watermark to 120.2s: the 60s window closes.
    let out = book
        .ingest(json(150.2, "C3", "a", 5).as_bytes(), ZeekFormat::Json)
        .unwrap();
    assert_eq!(out.report.windows_closed, 2);
    assert_eq!(out.closed[0].entity.as_deref(), Some("a"));
    assert_eq!(out.closed[0].bytes_sent, 10.0);
    assert_eq!(out.closed[1].entity.as_deref(), Some("b"));
    // A line for the closed window is late; one within the lateness still merges.
    let body = format!("{}{}", json(65.0, "C4", "a", 99), json(121.0, "C5", "a", 1));
    let out = book.ingest(body.as_bytes(), ZeekFormat::Json).unwrap();
    assert_eq!((out.report.accepted, out.report.late), (1, 1));
    assert!(out.closed.is_empty());
    // The same line again is a duplicate.
    let out = book
        .ingest(json(121.0, "C5", "a", 1).as_bytes(), ZeekFormat::Json)
        .unwrap();
    assert_eq!((out.report.accepted, out.report.duplicates), (0, 1));
    let rest = book.flush();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].bytes_sent, rest[0].connections), (6.0, 2.0));
    // After a flush its windows cannot open again.
    let out = book
        .ingest(json(150.0, "C6", "a", 1).as_bytes(), ZeekFormat::Json)
        .unwrap();
    assert_eq!(out.report.late, 1);
    assert!(book.flush().is_empty());
}

/// The book's state estimate grows with its open windows, sessions and `uid`s, shrinks as they
/// close, and the hosts of closed windows are dropped once they are most of what it keeps.
#[test]
fn the_state_estimate_follows_the_open_windows_and_closed_hosts_are_dropped() {
    let mut book = WindowBook::new(config(0));
    let mut last = 0;
    // 20 minutes, each a window of 1,000 new hosts; lateness 0 closes each minute's windows
    // when the next minute begins.
    for minute in 0..20u32 {
        let body: String = (0..1000u32)
            .map(|h| {
                let host = format!("10.{}.{}.{}", minute, h >> 8, h & 255);
                json(
                    f64::from(minute * 60 + 1),
                    &format!("C{minute}x{h}"),
                    &host,
                    1,
                )
            })
            .collect();
        let out = book.ingest(body.as_bytes(), ZeekFormat::Json).unwrap();
        assert_eq!(out.report.windows_opened, 1000);
        assert!(book.tally_is_exact());
        let bytes = book.state_bytes();
        // 1,000 windows, one session and one uid each, two hosts (one shared).
        assert!(
            (400_000..2_000_000).contains(&bytes),
            "{bytes} bytes for 1,000 windows"
        );
        if minute > 0 {
            assert_eq!(out.report.windows_closed, 1000);
            assert!(
                bytes < 2 * last,
                "{bytes} after {last}: closed windows are forgotten"
            );
        }
        last = bytes;
        // Compacted past twice (windows + 2 × sessions) + 1,024, so never 20,001 hosts.
        assert!(
            book.hosts_kept() <= 2 * 3000 + 1024 + 1001,
            "{} hosts kept after minute {minute}",
            book.hosts_kept()
        );
    }
    assert_eq!(book.flush().len(), 1000);
    assert_eq!((book.state_bytes(), book.hosts_kept()), (0, 0));
}

#[test]
fn bad_lines_are_skipped_or_reject_the_whole_body() {
    let body = format!(
        "{}{{oops\n{}{}",
        json(60.0, "C1", "a", 1),
        "{\"ts\":61,\"id.orig_h\":\"a\",\"id.resp_h\":\"b\",\"id.resp_p\":1}\n",
        json(62.0, "C2", "a", 2)
    );
    let mut book = WindowBook::new(config(0));
    let out = book.ingest(body.as_bytes(), ZeekFormat::Json).unwrap();
    assert_eq!((out.report.accepted, out.report.rejected), (2, 2));
    assert_eq!(out.report.rejects[0].line, 2);
    assert!(out.report.rejects[0].reason.starts_with("invalid JSON"));
    // No uid: cannot be told from its retry.
    assert_eq!(out.report.rejects[1].line, 3);
    assert_eq!(out.report.rejects[1].field.as_deref(), Some("uid"));
    // Reject: the first bad line is the error and nothing changes.
    let mut book = WindowBook::new(BookConfig {
        on_invalid: OnInvalid::Reject,
        ..config(0)
    });
    let before = book.to_bytes();
    let err = book.ingest(body.as_bytes(), ZeekFormat::Json).unwrap_err();
    assert!(matches!(err, ZeekError::Line { line: 2, .. }), "{err}");
    assert_eq!(book.to_bytes(), before);
    assert_eq!(book.open_windows(), 0);
    // Without dedupe a line needs no uid.
    let mut book = WindowBook::new(BookConfig {
        dedupe: Dedupe::None,
        ..config(0)
    });
    let out = book.ingest(body.as_bytes(), ZeekFormat::Json).unwrap();
    assert_eq!((out.report.accepted, out.report.rejected), (3, 1));
}

#[test]
fn a_tsv_header_carries_over_to_later_bodies_and_restarts() {
    let mut book = WindowBook::new(config(0));
    let out = book.ingest(TSV_HEADER.as_bytes(), ZeekFormat::Tsv).unwrap();
    assert_eq!(out.report.accepted, 0);
    let mut book = WindowBook::from_bytes(&book.to_bytes()).unwrap();
    let row = "60.0\tC1\t10.0.0.1\t1\t10.0.1.1\t80\ttcp\t5\t6\n";
    let out = book.ingest(row.as_bytes(), ZeekFormat::Tsv).unwrap();
    assert_eq!((out.report.accepted, out.report.rejected), (1, 0));
    // A fresh book has no header: the line is rejected.
    let out = WindowBook::new(config(0))
        .ingest(row.as_bytes(), ZeekFormat::Tsv)
        .unwrap();
    assert!(out.report.rejects[0].reason.contains("#fields"));
}

#[test]
fn partials_serialise_compactly_and_refuse_to_merge_other_windows() {
    let mut book = WindowBook::new(config(3600));
    let lines: String = (0..100)
        .map(|i| {
            json(
                60.0 + f64::from(i) / 10.0,
                &format!("C{i:017}"),
                "10.0.0.1",
                1000,
            )
        })
        .collect();
    book.ingest(lines.as_bytes(), ZeekFormat::Json).unwrap();
    let parts = book.partials();
    assert_eq!(parts.len(), 1);
    let bytes = postcard::to_stdvec(&parts[0]).unwrap();
    // 100 uids of 18 characters with their counts, one session: well under 30 bytes a line.
    assert!(bytes.len() < 3_000, "{}", bytes.len());
    let back: PartialWindow = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, parts[0]);
    let json_form = serde_json::to_string(&parts[0]).unwrap();
    assert_eq!(
        serde_json::from_str::<PartialWindow>(&json_form).unwrap(),
        parts[0]
    );
    // Merging a partial with itself changes nothing (every uid is already counted).
    let mut same = parts[0].clone();
    same.merge(&parts[0]).unwrap();
    assert_eq!(same, parts[0]);
    let mut other = WindowBook::new(config(3600));
    other
        .ingest(json(600.0, "X", "10.0.0.1", 1).as_bytes(), ZeekFormat::Json)
        .unwrap();
    assert!(same.merge(&other.partials()[0]).is_err());
    assert!(WindowBook::from_bytes(&[9, 1, 2]).is_err());
    assert!(WindowBook::from_bytes(&[]).is_err());
}
