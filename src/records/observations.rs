//! A records body (CSV, NDJSON, JSON) read as observations: every record must carry a
//! timestamp (and, when one is named, a string entity field), and with
//! [`OnInvalid::Skip`] a record that cannot be read is left out and reported by its line
//! instead of sinking the body. (Continuous ingest for a `records` detector: each record is
//! its own window, at its own time.)
//!
//! The whole body is read once; only when that fails, or a record lacks its timestamp or
//! entity, and records may be skipped, is the body split into its records (NDJSON lines, CSV
//! rows under the header, the elements of the JSON array), each checked on its own exactly as
//! the whole body would check it, and the good ones read again together. So a body without a
//! bad record costs one read, and the records kept are read as a `score` request reads them.

use chrono::{DateTime, Utc};

use super::BodyFormat;
use super::batch::Batch;
use super::error::RecordError;
use super::read::{ReadSpec, read_slice};
use super::zeek::{OnInvalid, Reject, Rejects};

/// What a body held: its good records, checked, with their times; the records left out.
pub struct Observations {
    /// `None` when every record was left out.
    pub batch: Option<Batch>,
    /// Each record's time (every record has one).
    pub times: Vec<DateTime<Utc>>,
    pub rejects: Rejects,
}

/// A UTF-8 byte order mark, not part of the first line.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads a records body (`spec.format` CSV, NDJSON or JSON) into observations; see the module
/// doc. `entity` names the string field every record must carry. With
/// [`OnInvalid::Reject`], the first problem is the error; with [`OnInvalid::Skip`], problems
/// of single records are rejects (all of them may be: then there is no batch), and only a
/// problem of the body as a whole (no record, its syntax outside any record, the JSON
/// envelope, the record limit) is an error. Blocking.
pub fn read_observations(
    body: &[u8],
    spec: &ReadSpec,
    entity: Option<&str>,
    on_invalid: OnInvalid,
) -> Result<Observations, RecordError> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let whole = read_slice(body, spec, None).and_then(|p| checked(p.batch, entity));
    let first = match whole {
        Ok((batch, times)) => {
            return Ok(Observations {
                batch: Some(batch),
                times,
                rejects: Rejects::default(),
            });
        }
        Err(e) => e,
    };
    if on_invalid == OnInvalid::Reject {
        return Err(first);
    }
    // A CSV header without a column every record needs is the body's problem, as a Zeek
    // `#fields` line without a required field is.
    let mut needed: Vec<&str> = spec.features.iter().flatten().map(String::as_str).collect();
    needed.push("timestamp");
    needed.extend(entity);
    let Some(units) = split(body, spec.format, &needed) else {
        return Err(first);
    };
    if units.records.len() > spec.max_records {
        return Err(first);
    }
    let mut rejects = Rejects::default();
    let mut good = Vec::with_capacity(units.records.len());
    for unit in &units.records {
        let one = units.body_of(std::iter::once(unit));
        match read_slice(&one, &units.spec(spec), None).and_then(|p| checked(p.batch, entity)) {
            Ok(_) => good.push(unit),
            Err(e) => rejects.push(Reject {
                line: unit.line,
                reason: reason(&e),
                field: e.field.clone(),
            }),
        }
    }
    // Every record reads on its own: the body's problem was the body's, not a record's.
    if rejects.is_empty() {
        return Err(first);
    }
    if good.is_empty() {
        return Ok(Observations {
            batch: None,
            times: Vec::new(),
            rejects,
        });
    }
    let kept = units.body_of(good.into_iter());
    let (batch, times) =
        read_slice(&kept, &units.spec(spec), None).and_then(|p| checked(p.batch, entity))?;
    Ok(Observations {
        batch: Some(batch),
        times,
        rejects,
    })
}

/// The batch with its times, or the first record without a time or an entity.
fn checked(
    mut batch: Batch,
    entity: Option<&str>,
) -> Result<(Batch, Vec<DateTime<Utc>>), RecordError> {
    let Some(times) = batch.parsed_times.take() else {
        let i = (0..batch.len())
            .find(|&i| batch.timestamps.get(i).is_none())
            .unwrap_or(0);
        return Err(RecordError::record(
            i,
            "timestamp",
            format!(
                "record {i}: timestamp is missing; an ingested record is its own window, at its \
                 timestamp (RFC 3339)"
            ),
        ));
    };
    if let Some(field) = entity {
        if let Some(i) =
            (0..batch.len()).find(|&i| batch.echo.field(i, field).is_none_or(str::is_empty))
        {
            return Err(RecordError::record(
                i,
                field,
                format!(
                    "record {i}: the entity field {field:?} (the detector's source.group_by) is \
                     missing or not a string"
                ),
            ));
        }
    }
    batch.parsed_times = Some(times.clone());
    Ok((batch, times))
}

/// A reject's reason: the error's detail without the "record 0: " a lone record's error
/// starts with (the reject names its line instead).
fn reason(e: &RecordError) -> String {
    let d = e.detail.as_str();
    let d = d.strip_prefix("record 0: ").unwrap_or(d);
    match d.strip_prefix("NDJSON line 1: ") {
        Some(rest) => rest.to_owned(),
        None => d.to_owned(),
    }
}

/// One record of a body: its bytes and the 1-based line it starts on.
struct Unit<'a> {
    bytes: &'a [u8],
    line: usize,
}

/// A body split into its records, and what each is read with.
struct Units<'a> {
    format: BodyFormat,
    /// CSV: the header row (with its line end).
    header: &'a [u8],
    records: Vec<Unit<'a>>,
}

impl<'a> Units<'a> {
    /// A body of these records in the body's format (a JSON body's elements as an array).
    fn body_of<'r>(&self, units: impl Iterator<Item = &'r Unit<'a>>) -> Vec<u8>
    where
        'a: 'r,
    {
        let mut out = Vec::new();
        match self.format {
            BodyFormat::Csv => {
                out.extend_from_slice(self.header);
                for u in units {
                    out.extend_from_slice(u.bytes);
                    if !u.bytes.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                }
            }
            BodyFormat::Json => {
                out.push(b'[');
                for (i, u) in units.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(u.bytes);
                }
                out.push(b']');
            }
            _ => {
                for u in units {
                    out.extend_from_slice(u.bytes);
                    out.push(b'\n');
                }
            }
        }
        out
    }

    /// How the records are read: as the body, a JSON body as a plain array.
    fn spec(&self, spec: &ReadSpec) -> ReadSpec {
        ReadSpec {
            top_level: super::TopLevel::RecordsOnly,
            ..spec.clone()
        }
    }
}

/// The records of a body, or `None` when the body cannot be split (not a records format, its
/// shape is wrong outside any record, or a CSV header lacks one of the `needed` columns: then
/// the whole body's error stands).
fn split<'a>(body: &'a [u8], format: BodyFormat, needed: &[&str]) -> Option<Units<'a>> {
    match format {
        BodyFormat::Ndjson => Some(Units {
            format,
            header: &[],
            records: body
                .split(|&b| b == b'\n')
                .enumerate()
                .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
                .map(|(i, l)| Unit {
                    bytes: l.strip_suffix(b"\r").unwrap_or(l),
                    line: i + 1,
                })
                .collect(),
        }),
        BodyFormat::Csv => split_csv(body, needed),
        BodyFormat::Json => split_json(body),
        _ => None,
    }
}

/// CSV rows as the csv reader finds them (quoted line ends stay in their row), when the
/// header names every `needed` column.
fn split_csv<'a>(body: &'a [u8], needed: &[&str]) -> Option<Units<'a>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let header = reader.byte_headers().ok()?;
    let names: Vec<&[u8]> = header.iter().map(<[u8]>::trim_ascii).collect();
    if !needed.iter().all(|n| names.contains(&n.as_bytes())) {
        return None;
    }
    let mut starts = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {
                let p = record.position()?;
                starts.push((usize::try_from(p.byte()).ok()?, p.line() as usize));
            }
            Ok(false) => break,
            Err(_) => return None,
        }
    }
    let first = starts.first()?.0;
    let records = starts
        .iter()
        .enumerate()
        .map(|(i, &(start, line))| {
            let end = starts.get(i + 1).map_or(body.len(), |s| s.0);
            Unit {
                bytes: body.get(start..end).unwrap_or_default(),
                line,
            }
        })
        .collect();
    Some(Units {
        format: BodyFormat::Csv,
        header: &body[..first],
        records,
    })
}

/// The elements of a JSON array body, or of the `records` array of an object body that holds
/// nothing else.
fn split_json(body: &[u8]) -> Option<Units<'_>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    let array: &[u8] = if *first == b'{' {
        let mut records = None;
        for item in sonic_rs::to_object_iter(body) {
            let (key, value) = item.ok()?;
            if key.as_ref() != "records" || records.is_some() {
                return None;
            }
            records = Some(value);
        }
        within(body, records?.as_raw_str().as_bytes())?
    } else {
        body
    };
    let mut records = Vec::new();
    for item in sonic_rs::to_array_iter(array) {
        let raw = within(body, item.ok()?.as_raw_str().as_bytes())?;
        let at = raw.as_ptr() as usize - body.as_ptr() as usize;
        let line = 1 + body[..at].iter().filter(|&&b| b == b'\n').count();
        records.push(Unit { bytes: raw, line });
    }
    Some(Units {
        format: BodyFormat::Json,
        header: &[],
        records,
    })
}

/// `part` as a slice of `body`, when it lies in it (sonic-rs hands back the text it read).
fn within<'a>(body: &'a [u8], part: &[u8]) -> Option<&'a [u8]> {
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    body.get(start..start + part.len())
}

impl Rejects {
    /// Counts a reject, keeping it among the first.
    pub fn push(&mut self, r: Reject) {
        self.total += 1;
        if self.first.len() < super::zeek::REJECTS_KEPT {
            self.first.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordErrorKind;

    fn spec(format: BodyFormat) -> ReadSpec {
        ReadSpec::new(format, Some(vec!["a".into(), "b".into()]), 1000)
    }

    fn read(body: &str, format: BodyFormat, skip: bool) -> Result<Observations, RecordError> {
        let on_invalid = if skip {
            OnInvalid::Skip
        } else {
            OnInvalid::Reject
        };
        read_observations(body.as_bytes(), &spec(format), Some("host"), on_invalid)
    }

    fn lines(o: &Observations) -> Vec<(usize, Option<String>)> {
        o.rejects
            .first
            .iter()
            .map(|r| (r.line, r.field.clone()))
            .collect()
    }

    /// The kept records' `a` values, in order.
    fn kept(o: &Observations) -> Vec<f64> {
        o.batch
            .as_ref()
            .unwrap()
            .matrix
            .rows()
            .map(|r| r[0])
            .collect()
    }

    const T: &str = "2024-01-01T00:00:00Z";

    #[test]
    fn bad_ndjson_lines_are_skipped_by_line_and_the_good_ones_kept() {
        let body = format!(
            "{{\"timestamp\":\"{T}\",\"a\":1,\"b\":2,\"host\":\"x\"}}\n\
             \n\
             {{\"timestamp\":\"{T}\",\"a\":\"no\",\"b\":2,\"host\":\"x\"}}\n\
             not json\n\
             {{\"a\":3,\"b\":2,\"host\":\"x\"}}\n\
             {{\"timestamp\":\"{T}\",\"a\":4,\"b\":2}}\n\
             {{\"timestamp\":\"2024-01-01T00:00:01.5Z\",\"a\":5,\"b\":2,\"host\":\"y\"}}\r\n"
        );
        let o = read(&body, BodyFormat::Ndjson, true).unwrap();
        assert_eq!(kept(&o), vec![1.0, 5.0]);
        assert_eq!(o.times[1].timestamp_subsec_millis(), 500);
        assert_eq!(o.rejects.total, 4);
        assert_eq!(
            lines(&o),
            vec![
                (3, Some("a".into())),
                (4, None),
                (5, Some("timestamp".into())),
                (6, Some("host".into()))
            ]
        );
        assert!(
            o.rejects.first[0].reason.starts_with("feature \"a\""),
            "{:?}",
            o.rejects
        );
        // Rejecting: a problem sinks the body (the syntax error, found first).
        let e = read(&body, BodyFormat::Ndjson, false).err().unwrap();
        assert_eq!(e.kind, RecordErrorKind::Malformed);
        assert!(e.detail.contains("line 4"), "{e:?}");
    }

    #[test]
    fn csv_rows_keep_their_line_with_quoted_line_ends_and_ragged_rows_are_rejects() {
        let body = format!(
            "\u{feff}timestamp,a,b,host,note\n\
             {T},1,2,x,\"two\nlines\"\n\
             {T},1,2\n\
             {T},3,2,x,ok\n\
             {T},4,,x,ok"
        );
        let o = read(&body, BodyFormat::Csv, true).unwrap();
        assert_eq!(kept(&o), vec![1.0, 3.0]);
        assert_eq!(
            o.batch.as_ref().unwrap().echo.fields(0)["note"],
            "two\nlines"
        );
        assert_eq!(
            o.rejects.first.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![4, 6]
        );
        // A header without a needed column refuses the body: no row could be read.
        for header in ["timestamp,a,host", "timestamp,a,b", "a,b,host"] {
            let body = format!("{header}\n1,2,3\n");
            assert!(read(&body, BodyFormat::Csv, true).is_err(), "{header}");
        }
    }

    #[test]
    fn json_elements_are_rejected_by_the_line_they_start_on() {
        let good = format!("{{\"timestamp\":\"{T}\",\"a\":1,\"b\":2,\"host\":\"x\"}}");
        let body = format!("{{\"records\": [\n{good},\n{{\"a\":1}},\n  {good}\n]}}");
        let o = read(&body, BodyFormat::Json, true).unwrap();
        assert_eq!(kept(&o), vec![1.0, 1.0]);
        assert_eq!(lines(&o).iter().map(|l| l.0).collect::<Vec<_>>(), vec![3]);
        // The envelope's own problems are the body's: no record is skipped for them.
        let other = format!("{{\"records\": [{good}, {{\"a\":1}}], \"extra\": 1}}");
        assert_eq!(
            read(&other, BodyFormat::Json, true).err().unwrap().kind,
            RecordErrorKind::UnknownField
        );
    }

    #[test]
    fn a_body_of_bad_records_only_is_all_rejects_and_an_empty_one_an_error() {
        let body = format!("{{\"timestamp\":\"{T}\",\"a\":1,\"b\":2,\"host\":\"x\"}}\n");
        let o = read(&body, BodyFormat::Ndjson, true).unwrap();
        assert_eq!((o.batch.unwrap().len(), o.rejects.total), (1, 0));
        let bad = read("{\"a\":1}\n{\"b\":1}\n", BodyFormat::Ndjson, true).unwrap();
        assert!(bad.batch.is_none());
        assert_eq!(
            bad.rejects.first.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(read("\n \n", BodyFormat::Ndjson, true).is_err());
        // Without an entity field named, none is required.
        let no_entity = format!("{{\"timestamp\":\"{T}\",\"a\":1,\"b\":2}}\n");
        let o = read_observations(
            no_entity.as_bytes(),
            &spec(BodyFormat::Ndjson),
            None,
            OnInvalid::Reject,
        )
        .unwrap();
        assert_eq!(o.batch.unwrap().len(), 1);
    }
}
