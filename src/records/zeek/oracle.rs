//! The conn log reader and aggregator as they were before streaming (a `Vec<Conn>` of owned
//! strings, then a `BTreeMap` of windows), kept for tests only: the streaming reader
//! ([`super::aggregate`], [`super::line`]) must give bit-identical windows and the same errors.
//! Only the leaf parsers (numbers, times, ports, a TSV line's fields from its values, the
//! `#separator` escapes, the `#path` check) are shared: the cutting of lines and fields, the
//! header state, the JSON reading and the windows are its own.

use std::collections::{BTreeMap, HashSet};

use chrono::DateTime;
use serde_json::{Map, Value};

use super::json_line::number_count;
use super::line::{Columns, conn_path, parse_ts_text, ts_from_epoch, tsv_fields, unescape, utf8};
use super::{Conn, GroupBy, WindowRecord, ZeekError, ZeekFormat, ZeekOptions};

/// Reads every connection of a conn log; a bad line is an error naming it.
pub(super) fn parse_conn_log(body: &[u8], format: ZeekFormat) -> Result<Vec<Conn>, ZeekError> {
    // A UTF-8 byte order mark (Windows editors add one) is not part of the first line.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let conns = match format {
        ZeekFormat::Tsv => parse_tsv(body)?,
        ZeekFormat::Json => parse_json(body)?,
    };
    if conns.is_empty() {
        return Err(ZeekError::NoConnections);
    }
    Ok(conns)
}

/// Lines with their 1-based numbers, without the line break (`\n` or `\r\n`).
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
}

fn parse_tsv(body: &[u8]) -> Result<Vec<Conn>, ZeekError> {
    // Zeek's defaults, used until the header says otherwise.
    let mut sep = String::from("\t");
    let mut unset = String::from("-");
    let mut empty = String::from("(empty)");
    let mut columns: Option<Columns> = None;
    let mut conns = Vec::new();
    for (no, raw) in lines(body) {
        if raw.is_empty() {
            continue;
        }
        let line = utf8(no, raw)?;
        if let Some(directive) = line.strip_prefix('#') {
            // `#separator` is written with a space, since the separator is not known yet.
            if let Some(value) = directive.strip_prefix("separator") {
                let value = unescape(no, value.trim_start_matches([' ', '\t']))?;
                if value.is_empty() {
                    return Err(ZeekError::line_error(no, "the #separator is empty"));
                }
                sep = value;
                continue;
            }
            let mut parts = directive.split(sep.as_str());
            let name = parts.next().unwrap_or("");
            match name {
                "fields" => columns = Some(Columns::from_header(no, parts)?),
                "unset_field" => unset = parts.next().unwrap_or("").to_string(),
                "empty_field" => empty = parts.next().unwrap_or("").to_string(),
                "path" => conn_path(no, parts.next().unwrap_or(""))?,
                // #open, #close, #types, #set_separator and comments carry nothing we need.
                _ => {}
            }
            continue;
        }
        let Some(cols) = &columns else {
            return Err(ZeekError::line_error(
                no,
                "a data line before the #fields header; send the log with its # header lines (zeek-cut -c keeps them)",
            ));
        };
        let values: Vec<&str> = line.split(sep.as_str()).collect();
        if values.len() != cols.count {
            return Err(ZeekError::line_error(
                no,
                format!("{} fields, but #fields names {}", values.len(), cols.count),
            ));
        }
        let set =
            |i: usize| Some(values[i]).filter(|v| *v != unset && *v != empty && !v.is_empty());
        conns.push(tsv_fields(no, cols, set)?.into());
    }
    Ok(conns)
}

fn parse_json(body: &[u8]) -> Result<Vec<Conn>, ZeekError> {
    let mut conns = Vec::new();
    for (no, line) in lines(body) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = crate::records::json::from_slice(line).map_err(|e| {
            let e = crate::records::json::message(&e);
            ZeekError::line_error(no, format!("invalid JSON: {e}"))
        })?;
        let Value::Object(map) = value else {
            return Err(ZeekError::line_error(no, "not a JSON object"));
        };
        conns.push(json_conn(no, &map)?);
    }
    Ok(conns)
}

/// A field by Zeek's flat name (`id.orig_h`), or nested (`{"id": {"orig_h": ..}}`) as some
/// shippers rewrite it.
fn json_field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    let (outer, inner) = name.split_once('.')?;
    map.get(outer)?.as_object()?.get(inner)
}

fn json_conn(no: usize, map: &Map<String, Value>) -> Result<Conn, ZeekError> {
    let ts = match json_field(map, "ts") {
        Some(Value::Number(n)) => ts_from_epoch(no, n.as_f64().unwrap_or(f64::NAN))?,
        Some(Value::String(s)) => parse_ts_text(no, s)?,
        Some(Value::Null) | None => return Err(ZeekError::field_error(no, "ts", "ts is missing")),
        Some(_) => {
            return Err(ZeekError::field_error(
                no,
                "ts",
                "ts must be epoch seconds or an ISO 8601 string",
            ));
        }
    };
    let text = |name: &str| match json_field(map, name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Null) | None => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} is missing"),
        )),
        Some(_) => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} must be a non-empty string"),
        )),
    };
    // In the order Zeek writes them, so the first missing field is the one reported.
    let orig_h = text("id.orig_h")?;
    let resp_h = text("id.resp_h")?;
    let resp_p = match json_field(map, "id.resp_p") {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::Null) | None => {
            return Err(ZeekError::field_error(
                no,
                "id.resp_p",
                "id.resp_p is missing",
            ));
        }
        Some(_) => None,
    }
    .ok_or_else(|| {
        ZeekError::field_error(no, "id.resp_p", "id.resp_p is not a port (0 to 65535)")
    })?;
    Ok(Conn {
        ts,
        orig_h,
        resp_h,
        resp_p,
        orig_bytes: json_count(no, map, "orig_bytes")?,
        resp_bytes: json_count(no, map, "resp_bytes")?,
    })
}

/// A byte count: absent or null (Zeek's JSON writer omits unset fields) is 0.
fn json_count(no: usize, map: &Map<String, Value>, name: &str) -> Result<u64, ZeekError> {
    let n = match json_field(map, name) {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => n,
        Some(_) => {
            return Err(ZeekError::field_error(
                no,
                name,
                format!("{name} must be a number"),
            ));
        }
    };
    number_count(no, n, name)
}

#[derive(Default)]
struct Accumulator<'a> {
    // u128: a window may sum many u64-sized counts without overflowing.
    sent: u128,
    received: u128,
    connections: u64,
    sessions: HashSet<(&'a str, &'a str, u16)>,
}

/// Buckets connections into windows (and entities); see the module doc for what each field means.
pub(super) fn aggregate(conns: &[Conn], opts: &ZeekOptions) -> Vec<WindowRecord> {
    let window = opts.window.secs();
    let mut buckets: BTreeMap<(i64, Option<&str>), Accumulator<'_>> = BTreeMap::new();
    for c in conns {
        let start = c.ts.timestamp().div_euclid(window) * window;
        let entity = match opts.group_by {
            GroupBy::None => None,
            GroupBy::OrigHost => Some(c.orig_h.as_str()),
            GroupBy::RespHost => Some(c.resp_h.as_str()),
        };
        let acc = buckets.entry((start, entity)).or_default();
        acc.sent += u128::from(c.orig_bytes);
        acc.received += u128::from(c.resp_bytes);
        acc.connections += 1;
        acc.sessions
            .insert((c.orig_h.as_str(), c.resp_h.as_str(), c.resp_p));
    }
    buckets
        .into_iter()
        .filter_map(|((start, entity), acc)| {
            // Starts come from valid timestamps floored toward 1970, so they are valid too.
            Some(WindowRecord {
                timestamp: DateTime::from_timestamp(start, 0)?,
                entity: entity.map(str::to_string),
                bytes_sent: acc.sent as f64,
                bytes_received: acc.received as f64,
                connections: acc.connections as f64,
                active_sessions: acc.sessions.len() as f64,
            })
        })
        .collect()
}

mod tests {
    use super::super::{OnInvalid, Rejects, Window, ZeekReader, window_records};
    use super::*;
    use proptest::prelude::*;

    type Windows = Result<(Vec<WindowRecord>, Rejects), ZeekError>;

    /// The old reader's answer, in the streaming reader's shape.
    fn old(body: &[u8], format: ZeekFormat, opts: &ZeekOptions) -> Windows {
        parse_conn_log(body, format).map(|c| (aggregate(&c, opts), Rejects::default()))
    }

    /// The streaming reader, fed `chunk`-byte pieces and handing its workers batches of about
    /// `3 * chunk` bytes (so a generated log is read by several workers and merged).
    fn streamed(body: &[u8], format: ZeekFormat, opts: &ZeekOptions, chunk: usize) -> Windows {
        let body = body.strip_prefix(super::super::line::BOM).unwrap_or(body);
        let mut reader = ZeekReader::new(format, opts).with_batch_bytes(3 * chunk);
        for piece in body.chunks(chunk.max(1)) {
            reader.push(piece)?;
        }
        reader.finish()
    }

    /// Bit-identical: same windows in the same order with the same f64 bits, or the same error.
    fn same(a: &Windows, b: &Windows) -> Result<(), String> {
        let bits = |r: &WindowRecord| {
            (
                r.timestamp,
                r.entity.clone(),
                r.features().map(f64::to_bits),
            )
        };
        match (a, b) {
            (Ok((x, rx)), Ok((y, ry))) if rx == ry && x.iter().map(bits).eq(y.iter().map(bits)) => {
                Ok(())
            }
            (Err(x), Err(y)) if x == y => Ok(()),
            _ => Err(format!("{a:?}\n  vs\n{b:?}")),
        }
    }

    /// Checks a body both ways, whole and in pieces, for every grouping.
    fn check(body: &[u8], format: ZeekFormat, window: u64, chunk: usize) -> Result<(), String> {
        for group_by in [GroupBy::None, GroupBy::OrigHost, GroupBy::RespHost] {
            let opts = ZeekOptions {
                window: Window::from_secs(window).unwrap(),
                group_by,
                ..ZeekOptions::default()
            };
            let expected = old(body, format, &opts);
            same(&window_records(body, format, &opts), &expected)
                .map_err(|e| format!("whole, {group_by}: {e}"))?;
            same(&streamed(body, format, &opts, chunk), &expected)
                .map_err(|e| format!("chunks of {chunk}, {group_by}: {e}"))?;
            // The public owned-connection reader agrees too.
            let conns = super::super::parse_conn_log(body, format);
            let old_conns = parse_conn_log(body, format);
            if conns != old_conns {
                return Err(format!("connections: {conns:?}\n  vs\n{old_conns:?}"));
            }
        }
        Ok(())
    }

    /// Skip mode reads what the old reader reads once the skipped lines are blanked, and its
    /// first skipped line is the error reject mode gives.
    fn check_skip(body: &[u8], format: ZeekFormat, chunk: usize) -> Result<(), String> {
        let opts = ZeekOptions {
            window: Window::from_secs(60).unwrap(),
            group_by: GroupBy::OrigHost,
            on_invalid: OnInvalid::Skip,
        };
        let skipped = streamed(body, format, &opts, chunk);
        let rejected = streamed(
            body,
            format,
            &ZeekOptions {
                on_invalid: OnInvalid::Reject,
                ..opts
            },
            chunk,
        );
        let Ok((records, rejects)) = &skipped else {
            // Only a header problem or no connection at all ends a skipping read.
            let e = skipped.as_ref().unwrap_err();
            let header_or_empty =
                matches!(e, ZeekError::NoConnections | ZeekError::MissingField { .. })
                    || e.line().is_some_and(|n| {
                        body.split(|&b| b == b'\n').nth(n - 1).is_some_and(|l| {
                            let l = l.strip_prefix(super::super::line::BOM).unwrap_or(l);
                            l.first() == Some(&b'#')
                        })
                    });
            return if header_or_empty {
                Ok(())
            } else {
                Err(format!("skip mode failed on a data line: {e}"))
            };
        };
        if rejects.total != rejects.first.len() {
            return Err("fewer than 100 bad lines here, all kept".into());
        }
        match (&rejected, rejects.first.first()) {
            (Ok(_), None) => {}
            (
                Err(ZeekError::Line {
                    line,
                    message,
                    field,
                }),
                Some(first),
            ) if *line == first.line && *message == first.reason && *field == first.field => {}
            _ => {
                return Err(format!(
                    "reject mode {rejected:?} vs first skip {:?}",
                    rejects.first.first()
                ));
            }
        }
        let bad: std::collections::HashSet<usize> = rejects.first.iter().map(|r| r.line).collect();
        let blanked: Vec<&[u8]> = body
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, l)| if bad.contains(&(i + 1)) { &b""[..] } else { l })
            .collect();
        let blanked = blanked.join(&b'\n');
        let expected = old(
            &blanked,
            format,
            &ZeekOptions {
                on_invalid: OnInvalid::Reject,
                ..opts
            },
        );
        same(&Ok((records.clone(), Rejects::default())), &expected)
    }

    const FIELDS: [&str; 9] = [
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
        "orig_bytes",
        "resp_bytes",
    ];

    /// A TSV value for a field: mostly good, sometimes unset, empty or bad.
    fn tsv_value(field: &'static str) -> BoxedStrategy<String> {
        let unset = prop_oneof![
            Just("-".to_string()),
            Just("(empty)".to_string()),
            Just(String::new())
        ];
        match field {
            "ts" => prop_oneof![
                8 => (0u64..20_000, 0u32..1_000_000).prop_map(|(s, f)| format!("{s}.{f:06}")),
                2 => (0u64..20_000).prop_map(|s| s.to_string()),
                1 => Just("1970-01-01T01:00:00.5Z".to_string()),
                1 => Just("3599.9999996".to_string()),
                1 => prop::sample::select(vec!["abc", "-1", "1e300", "NaN", "inf", "253402300800"]).prop_map(String::from),
                1 => unset,
            ].boxed(),
            "id.orig_h" | "id.resp_h" => prop_oneof![
                10 => (0u8..6).prop_map(|h| format!("10.0.0.{h}")),
                1 => Just("fe80::1".to_string()),
                1 => unset,
            ].boxed(),
            "id.resp_p" | "id.orig_p" => prop_oneof![
                10 => (0u16..4).prop_map(|p| p.to_string()),
                1 => prop::sample::select(vec!["70000", "x", "-1", "65535"]).prop_map(String::from),
                1 => unset,
            ].boxed(),
            "orig_bytes" | "resp_bytes" => prop_oneof![
                10 => (0u64..100_000).prop_map(|b| b.to_string()),
                1 => Just(u64::MAX.to_string()),
                1 => prop::sample::select(vec!["-5", "1.5", "x", "18446744073709551616"]).prop_map(String::from),
                2 => unset,
            ].boxed(),
            "uid" => prop_oneof![
                (0u32..50).prop_map(|u| format!("C{u}")),
                unset,
            ].boxed(),
            _ => prop_oneof![Just("tcp".to_string()), unset].boxed(),
        }
    }

    /// A data line for `fields`, sometimes with a field too many or too few, or invalid UTF-8.
    fn tsv_line(fields: Vec<&'static str>, sep: &'static str) -> impl Strategy<Value = Vec<u8>> {
        let values: Vec<_> = fields.iter().map(|f| tsv_value(f)).collect();
        (values, 0u8..20).prop_map(move |(mut v, twist)| {
            match twist {
                0 => {
                    v.pop();
                }
                1 => v.push("extra".into()),
                _ => {}
            }
            let mut line = v.join(sep).into_bytes();
            if twist == 2 {
                line.push(0xFF);
            }
            line
        })
    }

    /// A TSV conn log: optional BOM, header variants, data lines, blank and comment lines, a second
    /// `#fields` header, CRLF or LF, with or without a last line break.
    fn tsv_body() -> impl Strategy<Value = Vec<u8>> {
        let fields = prop::sample::subsequence(FIELDS.to_vec(), 3..=FIELDS.len()).prop_shuffle();
        let seps =
            prop::sample::select(vec![("\\x09", "\t"), ("\\x2c", ","), ("\\x7c\\x7c", "||")]);
        (
            fields,
            seps,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u8..8,
        )
            .prop_flat_map(|(fields, (escaped, sep), bom, crlf, last_break, extra)| {
                let lines = prop::collection::vec(
                    prop_oneof![
                        12 => tsv_line(fields.clone(), sep),
                        1 => Just(Vec::new()),
                        1 => Just(b"#close\t2024-01-01-00-00-00".to_vec()),
                        1 => Just(b"   ".to_vec()),
                    ],
                    0..24,
                );
                let second = tsv_line(vec!["id.resp_p", "id.resp_h", "id.orig_h", "ts"], sep);
                (
                    Just((fields, escaped, sep, bom, crlf, last_break, extra)),
                    lines,
                    second,
                )
            })
            .prop_map(
                |((fields, escaped, sep, bom, crlf, last_break, extra), lines, second)| {
                    let mut out: Vec<Vec<u8>> = Vec::new();
                    out.push(format!("#separator {escaped}").into_bytes());
                    match extra {
                        0 => out.push(format!("#unset_field{sep}NONE").into_bytes()),
                        1 => out.push(format!("#path{sep}dns").into_bytes()),
                        2 => out.push(b"#separator \\x".to_vec()),
                        _ => out.push(format!("#path{sep}conn").into_bytes()),
                    }
                    out.push(format!("#fields{sep}{}", fields.join(sep)).into_bytes());
                    out.push(format!("#types{sep}time").into_bytes());
                    let half = lines.len() / 2;
                    out.extend(lines[..half].iter().cloned());
                    if extra == 3 {
                        out.push(
                            format!("#fields{sep}id.resp_p{sep}id.resp_h{sep}id.orig_h{sep}ts")
                                .into_bytes(),
                        );
                        out.push(second);
                    }
                    out.extend(lines[half..].iter().cloned());
                    join_body(&out, bom, crlf, last_break)
                },
            )
    }

    /// A JSON value for a Zeek field: mostly good, sometimes null, of another type or bad.
    fn json_value(field: &'static str) -> BoxedStrategy<String> {
        let odd = prop::sample::select(vec![
            "null",
            "true",
            "[1,2]",
            "{\"a\":1}",
            "\"\"",
            "-1",
            "1.5",
            "1e400",
            "\"x\"",
        ])
        .prop_map(String::from);
        match field {
            "ts" => prop_oneof![
                8 => (0u64..20_000, 0u32..1_000_000).prop_map(|(s, f)| format!("{s}.{f:06}")),
                2 => (0u64..20_000).prop_map(|s| s.to_string()),
                1 => Just("\"1970-01-01T01:00:00.5Z\"".to_string()),
                1 => Just("\"3600.25\"".to_string()),
                1 => Just("1e20".to_string()),
                1 => odd,
            ].boxed(),
            "id.orig_h" | "id.resp_h" => prop_oneof![
                10 => (0u8..6).prop_map(|h| format!("\"10.0.0.{h}\"")),
                1 => Just("\"10.0.0.\\u0031\"".to_string()),
                1 => odd,
            ].boxed(),
            "id.resp_p" | "id.orig_p" => prop_oneof![
                10 => (0u16..4).prop_map(|p| p.to_string()),
                1 => prop::sample::select(vec!["70000", "80.0", "\"80\""]).prop_map(String::from),
                1 => odd,
            ].boxed(),
            "orig_bytes" | "resp_bytes" => prop_oneof![
                10 => (0u64..100_000).prop_map(|b| b.to_string()),
                1 => Just(u64::MAX.to_string()),
                1 => prop::sample::select(vec!["1.0e3", "-3", "-3.0", "1e19", "1e20", "18446744073709551616"]).prop_map(String::from),
                1 => odd,
            ].boxed(),
            "uid" => (0u32..50).prop_map(|u| format!("\"C{u}\"")).boxed(),
            _ => prop_oneof![Just("\"tcp\"".to_string()), Just("[\"a\\\"b\",{\"x\":[]}]".to_string()), odd].boxed(),
        }
    }

    /// A JSON line: fields in any order (some missing, some twice), flat or nested `id`, or junk.
    fn json_line() -> impl Strategy<Value = Vec<u8>> {
        let fields = prop::sample::subsequence(FIELDS.to_vec(), 2..=FIELDS.len()).prop_shuffle();
        let good = (fields, any::<bool>(), 0u8..6).prop_flat_map(|(fields, nested, dup)| {
            let values: Vec<_> = fields.iter().map(|f| json_value(f)).collect();
            let again = json_value("id.orig_h");
            (Just((fields, nested, dup)), values, again)
        });
        let good = good.prop_map(|((fields, nested, dup), values, again)| {
            let mut flat = Vec::new();
            let mut inner = Vec::new();
            for (f, v) in fields.iter().zip(&values) {
                match f.strip_prefix("id.") {
                    Some(name) if nested => inner.push(format!("\"{name}\":{v}")),
                    _ => flat.push(format!("\"{f}\":{v}")),
                }
            }
            if nested {
                flat.push(format!("\"id\":{{{}}}", inner.join(",")));
            }
            match dup {
                0 => flat.push(format!("\"id.orig_h\":{again}")),
                1 => flat.insert(0, format!("\"id.orig_h\":{again}")),
                2 => flat.push("\"id\":7".to_string()),
                _ => {}
            }
            format!("{{{}}}", flat.join(",")).into_bytes()
        });
        prop_oneof![
            16 => good,
            1 => Just(b"{oops".to_vec()),
            1 => Just(b"[1,2]".to_vec()),
            1 => Just(b"[1,2] x".to_vec()),
            1 => Just(b"  ".to_vec()),
            1 => Just(Vec::new()),
            1 => Just(b"{\"ts\":1,\"id.orig_h\":\"a\",\"id.resp_h\":\"b\",\"id.resp_p\":1} {}".to_vec()),
            1 => Just(b"{\"ts\":1,\"id.orig_h\":\"a\xff\",\"id.resp_h\":\"b\",\"id.resp_p\":1}".to_vec()),
            1 => Just(b"{\"ts\":1,\"id.orig_h\":\"a\",\"id.resp_h\":\"b\",\"id.resp_p\":1,\"x\":\"\\q\"}".to_vec()),
            1 => Just(format!("{{\"ts\":1,\"id.orig_h\":\"a\",\"id.resp_h\":\"b\",\"id.resp_p\":1,\"deep\":{}{}}}", "[".repeat(300), "]".repeat(300)).into_bytes()),
        ]
    }

    fn json_body() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(json_line(), 0..24),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(lines, bom, crlf, last_break)| join_body(&lines, bom, crlf, last_break))
    }

    /// The lines as one body: after an optional BOM, joined by CRLF or LF, with or without a
    /// last line break.
    fn join_body(lines: &[Vec<u8>], bom: bool, crlf: bool, last_break: bool) -> Vec<u8> {
        let nl: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut body = if bom {
            super::super::line::BOM.to_vec()
        } else {
            Vec::new()
        };
        body.extend(lines.join(nl));
        if last_break {
            body.extend_from_slice(nl);
        }
        body
    }

    /// [`check`] and [`check_skip`] on a generated body, failing the case with the body.
    fn reads_as_the_old_reader(
        body: &[u8],
        format: ZeekFormat,
        window: u64,
        chunk: usize,
    ) -> Result<(), TestCaseError> {
        let shown = || String::from_utf8_lossy(body).into_owned();
        let verdict = check(body, format, window, chunk);
        prop_assert!(verdict.is_ok(), "{:?}: {}", shown(), verdict.unwrap_err());
        let verdict = check_skip(body, format, chunk);
        prop_assert!(
            verdict.is_ok(),
            "skip: {:?}: {}",
            shown(),
            verdict.unwrap_err()
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Generated logs, TSV or JSON, whole and cut anywhere: the streaming reader gives the
        /// old reader's windows bit for bit, or its error.
        #[test]
        fn logs_read_as_the_old_reader_reads_them(
            (body, format) in prop_oneof![
                tsv_body().prop_map(|b| (b, ZeekFormat::Tsv)),
                json_body().prop_map(|b| (b, ZeekFormat::Json)),
            ],
            window in prop::sample::select(vec![1u64, 60, 300, 3600]),
            chunk in 1usize..64,
        ) {
            reads_as_the_old_reader(&body, format, window, chunk)?;
        }
    }

    /// The failures the generated logs once found: a key given twice (null the second time),
    /// and a `#path` other than conn.
    #[test]
    fn the_cases_once_found_read_as_the_old_reader_reads_them() {
        let json = br#"{"ts":0.000000,"id.orig_h":"10.0.0.0","id.orig_h":null}"#;
        let tsv = b"#separator \\x09\r\n#path\tdns\r\n#fields\tid.orig_h\tid.resp_p\torig_bytes\r\n#types\ttime";
        for (body, format) in [(&json[..], ZeekFormat::Json), (&tsv[..], ZeekFormat::Tsv)] {
            reads_as_the_old_reader(body, format, 1, 1).unwrap();
        }
    }

    /// The real samples, whole and in pieces of several sizes.
    #[test]
    fn the_shared_samples_read_as_the_old_reader_reads_them() {
        for (name, format) in [
            ("conn.log", ZeekFormat::Tsv),
            ("conn.json.log", ZeekFormat::Json),
        ] {
            let body = crate::records::zeek::tests::shared_sample(name);
            for window in [1, 60, 300, 3600, 86_400] {
                for chunk in [1, 7, 4096, 1 << 20] {
                    check(&body, format, window, chunk).unwrap_or_else(|e| panic!("{name}: {e}"));
                }
            }
        }
    }

    /// A log of more windows and sessions than are merged and sorted on one thread (2^16):
    /// 5,000 hosts over 16 windows, every tenth connection repeated (a session seen twice), read
    /// by several workers, gives the old reader's windows.
    #[test]
    fn a_log_past_the_parallel_merge_reads_as_the_old_reader_reads_it() {
        let mut body =
            String::from("#fields\tts\tid.orig_h\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n");
        for i in 0..80_000u64 {
            let line = format!(
                "{}.5\t10.{}.{}.{}\t192.168.0.{}\t{}\t{}\t{}\n",
                1_700_000_000 + (i / 5_000) * 300 + i % 7,
                i % 5_000 / 250,
                i % 250,
                i % 3,
                i % 11,
                443 + i % 2,
                i * 3,
                i % 1_000
            );
            body.push_str(&line);
            if i % 10 == 0 {
                body.push_str(&line);
            }
        }
        for window in [300, 1] {
            check(body.as_bytes(), ZeekFormat::Tsv, window, 64 << 10).unwrap();
        }
    }
}
