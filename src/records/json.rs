//! JSON bodies and NDJSON lines read into a batch with typed visitors (no `Value` tree, no
//! table of cells), and the JSON glue of the hot paths.
//!
//! Request bodies are parsed and score results written with sonic-rs
//! behind serde. Through the same typed visitor it parsed the million-record benchmark body 1.25×
//! faster than serde_json (564 vs 450 MiB/s) and simd-json (319 MiB/s); see `BENCHMARKS.md`
//! ("JSON parsers"). Nesting is limited (to [`MAX_DEPTH`] levels), and invalid UTF-8, lone
//! surrogates and trailing characters are errors, as they were with serde_json. What it writes is
//! byte for byte what serde_json writes (tested below for numbers and strings); everything else
//! (stored alerts, SIEM formats, problems) still goes through serde_json.

use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;
use std::fmt;
use std::io::BufRead;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::builder::{BatchBuilder, CellRef, Role};
use super::error::{RecordError, RecordErrorKind, check_count};

/// Deepest nesting of arrays and objects sonic-rs accepts.
pub const MAX_DEPTH: usize = 254;

/// A deserializer over a whole JSON text; call [`end`](sonic_rs::Deserializer::end) after the
/// value to reject trailing characters.
pub type SonicDeserializer<'de> = sonic_rs::Deserializer<sonic_rs::Read<'de>>;

/// A deserializer over `text`.
pub fn deserializer(text: &[u8]) -> SonicDeserializer<'_> {
    sonic_rs::Deserializer::from_slice(text)
}

/// Parses one JSON value (and nothing after it) from `text`.
pub fn from_slice<'de, T: Deserialize<'de>>(text: &'de [u8]) -> Result<T, sonic_rs::Error> {
    sonic_rs::from_slice(text)
}

/// Appends `value` as JSON to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    sonic_rs::to_writer(out, value).expect("our response types always serialise");
}

/// The problem of a body that is not JSON.
pub fn invalid(e: &sonic_rs::Error) -> RecordError {
    RecordError::malformed(format!("invalid JSON: {}", message(e)))
}

/// What went wrong, on one line, for a problem's `detail`: sonic-rs's message and position
/// ("Invalid number at line 1 column 8"), without the excerpt of the body it appends below.
pub fn message(e: &sonic_rs::Error) -> String {
    message_at(e, e.line(), e.column())
}

/// [`message`] with the position given as `line` and `column`: where the error is in the whole
/// body when sonic-rs read only a part of it.
pub(super) fn message_at(e: &sonic_rs::Error, line: usize, column: usize) -> String {
    let text = e.to_string();
    if text.starts_with("Encountered nesting") {
        // sonic-rs's wording names serde_json's limit of 128, not its own.
        return format!(
            "arrays and objects nested more than {MAX_DEPTH} deep at line {line} column {column}"
        );
    }
    let first = text
        .split_once('\n')
        .map_or(text.as_str(), |(f, _)| f)
        .trim_end();
    match first.rfind(" at line ") {
        Some(at) if e.line() != 0 => format!("{} at line {line} column {column}", &first[..at]),
        _ => first.to_string(),
    }
}

/// Reads NDJSON (one object per line, blank lines skipped) into `b`.
pub fn read_ndjson<R: BufRead>(mut body: R, b: &mut BatchBuilder) -> Result<(), RecordError> {
    let mut line = Vec::with_capacity(1024);
    let mut line_no = 0usize;
    loop {
        line.clear();
        let read = body
            .read_until(b'\n', &mut line)
            .map_err(|e| RecordError::malformed(e.to_string()))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let mut text = line.strip_suffix(b"\n").unwrap_or(&line);
        text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let i = b.len();
        check_count(i + 1, b.max_records())?;
        let mut problem = None;
        let mut de = deserializer(text);
        let is_object = RecordSeed {
            builder: b,
            problem: &mut problem,
        }
        .deserialize(&mut de)
        .and_then(|o| de.end().map(|()| o))
        .map_err(|e| {
            let e = message(&e);
            RecordError::malformed(format!("NDJSON line {line_no}: {e}"))
        })?;
        if let Some(p) = problem {
            return Err(p);
        }
        if !is_object {
            return Err(RecordError::record_at(
                i,
                format!("NDJSON line {line_no} is not a JSON object"),
            ));
        }
    }
    Ok(())
}

/// What a JSON object body may hold besides `records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopLevel {
    /// Nothing: any other field is an `unknown-field` problem (scoring).
    RecordsOnly,
    /// Settings, read before with [`read_settings`] and skipped here (fit, evaluate).
    WithSettings,
}

/// Reads a JSON body (an array of records or `{"records": [...]}`) into `b`: the envelope's
/// problems first (syntax, shape, unknown fields, no records), then the record limit, then the
/// first record that is not an object or carries too many fields.
pub fn read_json(body: &[u8], b: &mut BatchBuilder, top: TopLevel) -> Result<(), RecordError> {
    let state = walk_envelope(body, Some(&mut *b), Envelope::default())?;
    conclude(state, b, top)
}

/// What a body's walk found, once it is known to be JSON of the envelope's shape: unknown
/// fields, no records, too many records, then the first record problem.
pub(super) fn conclude(
    state: Envelope,
    b: &BatchBuilder,
    top: TopLevel,
) -> Result<(), RecordError> {
    if let Some(k) = state
        .unknown
        .into_iter()
        .find(|_| top == TopLevel::RecordsOnly)
    {
        return Err(RecordError::new(
            RecordErrorKind::UnknownField,
            format!("unknown top-level field {k:?}"),
        )
        .with_field(k));
    }
    if !state.has_records {
        return Err(
            RecordError::malformed("the body has no \"records\" array").with_field("records")
        );
    }
    check_count(state.n_records, b.max_records())?;
    match state.problem {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// A body of nothing but whitespace.
fn check_not_empty(body: &[u8]) -> Result<(), RecordError> {
    match body.iter().all(u8::is_ascii_whitespace) {
        true => Err(RecordError::malformed("the body is empty")),
        false => Ok(()),
    }
}

/// The envelope's shape: an array or an object at the top, an array in `records`.
pub(super) fn check_shape(not_envelope: bool, records_not_array: bool) -> Result<(), RecordError> {
    if not_envelope {
        return Err(RecordError::malformed(
            "the body must be a JSON array of records or an object with \"records\"",
        ));
    }
    if records_not_array {
        return Err(
            RecordError::malformed("\"records\" must be an array of objects").with_field("records"),
        );
    }
    Ok(())
}

/// The scalar `visit_*` methods (bool, integers, floats, strings, null) of a visitor that
/// treats every scalar alike: `|v| value` names the visitor and gives the result.
macro_rules! visit_scalars {
    ($value:ty, |$v:ident| $result:expr) => {
        visit_scalars!(@each $value, |$v| $result,
            visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
        fn visit_unit<E>(self) -> Result<$value, E> {
            let $v = self;
            Ok($result)
        }
    };
    (@each $value:ty, |$v:ident| $result:expr, $($visit:ident: $scalar:ty),*) => {
        $(
            fn $visit<E>(self, _: $scalar) -> Result<$value, E> {
                let $v = self;
                Ok($result)
            }
        )*
    };
}

#[derive(Default)]
pub(super) struct Envelope {
    pub(super) not_envelope: bool,
    pub(super) records_not_array: bool,
    pub(super) has_records: bool,
    /// Sorted, as a `serde_json::Map` would list them.
    pub(super) unknown: BTreeSet<String>,
    pub(super) n_records: usize,
    /// The first record problem (not an object, too many fields).
    pub(super) problem: Option<RecordError>,
    /// When reading settings: the other top-level fields (then the records are only checked
    /// for syntax, and no field is unknown).
    pub(super) settings: Option<Map<String, Value>>,
}

/// The body's top-level value (`top`), or the value of its `records` field.
struct EnvelopeSeed<'a> {
    /// Where the records go; none when only the settings are read.
    builder: Option<&'a mut BatchBuilder>,
    state: &'a mut Envelope,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.top {
            true => "an array of records or an object with \"records\"",
            false => "an array of records",
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.state.has_records = true;
        if !self.top {
            self.state.records_not_array = false;
        }
        match self.builder {
            Some(b) => read_records(seq, b, self.state),
            None => {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(())
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        if !self.top {
            while map.next_entry::<Skip, Skip>()?.is_some() {}
            self.state.records_not_array = true;
            return Ok(());
        }
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if key.as_ref() == "records" {
                map.next_value_seed(EnvelopeSeed {
                    builder: self.builder.as_deref_mut(),
                    state: &mut *self.state,
                    top: false,
                })?;
            } else if let Some(fields) = &mut self.state.settings {
                fields.insert(key.into_owned(), map.next_value::<Value>()?);
            } else {
                map.next_value::<Skip>()?;
                self.state.unknown.insert(key.into_owned());
            }
        }
        Ok(())
    }

    visit_scalars!((), |v| match v.top {
        true => v.state.not_envelope = true,
        false => v.state.records_not_array = true,
    });
}

/// Records of an array into the builder; after the first problem or past the record limit the
/// rest are only checked for syntax and counted.
fn read_records<'de, A: SeqAccess<'de>>(
    mut seq: A,
    b: &mut BatchBuilder,
    state: &mut Envelope,
) -> Result<(), A::Error> {
    loop {
        let i = state.n_records;
        if state.problem.is_some() || i >= b.max_records() {
            if seq.next_element::<Skip>()?.is_none() {
                return Ok(());
            }
        } else {
            let mut problem = None;
            let seed = RecordSeed {
                builder: &mut *b,
                problem: &mut problem,
            };
            match seq.next_element_seed(seed)? {
                None => return Ok(()),
                Some(true) => {}
                Some(false) => {
                    problem = Some(RecordError::record_at(
                        i,
                        format!("record {i} is not a JSON object"),
                    ));
                }
            }
            if problem.is_some() {
                state.problem = problem;
            }
        }
        state.n_records += 1;
    }
}

/// One record: `true` when it was an object (and went into the builder).
pub(super) struct RecordSeed<'a> {
    pub(super) builder: &'a mut BatchBuilder,
    pub(super) problem: &'a mut Option<RecordError>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let b = self.builder;
        b.start_record();
        let mut pos = 0;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if self.problem.is_some() {
                map.next_value::<Skip>()?;
                continue;
            }
            let role = match b.key_role(&key, pos) {
                Ok(r) => r,
                Err(e) => {
                    *self.problem = Some(e);
                    map.next_value::<Skip>()?;
                    continue;
                }
            };
            pos += 1;
            if role == Role::Skip || (role == Role::Label && !b.reads_labels()) {
                map.next_value::<Skip>()?;
                continue;
            }
            let cell = map.next_value::<Cell>()?;
            let cell_ref = match &cell {
                Cell::Null => CellRef::Null,
                Cell::Num(v) => CellRef::Num(*v),
                Cell::Text(s) => CellRef::Text(s),
                Cell::Bool(v) => CellRef::Bool(*v),
                Cell::Nested => CellRef::Nested,
            };
            b.field(role, cell_ref);
        }
        if self.problem.is_none() {
            b.end_record();
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(false)
    }
    visit_scalars!(bool, |_v| false);
}

/// A string borrowed from the body when it has no escapes.
pub(super) struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

/// A field value; numbers as `f64` (as `serde_json::Value::as_f64` gives them).
enum Cell<'de> {
    Null,
    Num(f64),
    Text(std::borrow::Cow<'de, str>),
    Bool(bool),
    Nested,
}

impl<'de> Deserialize<'de> for Cell<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Cell<'de>, E> {
        Ok(Cell::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(std::borrow::Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(std::borrow::Cow::Owned(v.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cell<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Cell::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cell<'de>, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Cell::Nested)
    }
}

/// A JSON body's top-level fields besides `records`: the settings a fit or an evaluation reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub fields: Map<String, Value>,
    /// Whether the body holds records (a bare array, or a `records` array).
    pub has_records: bool,
}

/// Reads the settings of a JSON body, its records only checked for syntax, with the problems of
/// the envelope that [`read_json`] reports (empty, not JSON, not an array or object, `records`
/// not an array). A repeated field counts once, its last value.
pub fn read_settings(body: &[u8]) -> Result<Settings, RecordError> {
    let reading_settings = Envelope {
        settings: Some(Map::new()),
        ..Envelope::default()
    };
    let state = walk_envelope(body, None, reading_settings)?;
    Ok(Settings {
        fields: state.settings.unwrap_or_default(),
        has_records: state.has_records,
    })
}

/// Walks a JSON body once, its records into `builder` when there is one, and answers the
/// envelope's own problems (empty, not JSON, not an array or object, `records` not an array);
/// what it saw of the rest is left in the returned state.
fn walk_envelope(
    body: &[u8],
    builder: Option<&mut BatchBuilder>,
    mut state: Envelope,
) -> Result<Envelope, RecordError> {
    check_not_empty(body)?;
    let mut de = deserializer(body);
    EnvelopeSeed {
        builder,
        state: &mut state,
        top: true,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| invalid(&e))?;
    check_shape(state.not_envelope, state.records_not_array)?;
    Ok(state)
}

/// A value read and dropped. Unlike `serde::de::IgnoredAny` (which a parser may skip without
/// counting depth) it goes through `deserialize_any`, so nesting past the parser's recursion
/// limit is the same 400 as when the body is parsed into a `Value`.
pub(super) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    visit_scalars!(Skip, |_v| Skip);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_as_the_table_path_reads_the_envelope() {
        use crate::records::table::parse_json_envelope;
        let bodies: &[&[u8]] = &[
            br#"{"records":[{"a":1}],"params":{"seed":3},"features":["a"]}"#,
            br#"{"features":["a"],"records":[{"a":1}],"threshold":0.6}"#,
            br#"[{"a":1},{"a":2}]"#,
            br#"{"generate":{"profile":"seed"}}"#,
            br#"{"records":{"a":1}}"#,
            br#"{"records":null,"x":1}"#,
            br#"{"records":[],"records":{"a":1}}"#,
            br#"{"records":{"a":1},"records":[]}"#,
            br#"{"x":1,"x":[2]}"#,
            br#"42"#,
            br#"{"records":[1,"#,
            b"  ",
        ];
        for body in bodies {
            let got = read_settings(body);
            match parse_json_envelope(body) {
                Ok(env) => {
                    let got = got.unwrap_or_else(|e| panic!("{body:?}: {e}"));
                    assert_eq!(got.fields, env.rest, "{body:?}");
                    assert_eq!(got.has_records, env.records.is_some(), "{body:?}");
                }
                Err(e) => assert_eq!(got.unwrap_err(), e, "{body:?}"),
            }
        }
    }
    use rand::{RngExt, SeedableRng};

    #[test]
    fn messages_are_one_line_with_the_position() {
        let e = from_slice::<serde_json::Value>(b"{\"a\": [-]}").unwrap_err();
        assert_eq!(message(&e), "Invalid number at line 1 column 8");
        let e = from_slice::<serde_json::Value>(b"[1, 2").unwrap_err();
        assert!(!message(&e).contains('\n'), "{}", message(&e));
        let e = from_slice::<serde_json::Value>(b"[1] x").unwrap_err();
        assert!(message(&e).starts_with("JSON has non-whitespace trailing characters"));
    }

    #[test]
    fn numbers_read_exactly_as_serde_json_reads_them() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut texts: Vec<String> = (0..20_000)
            .map(|_| {
                let v = f64::from_bits(rng.random::<u64>());
                if v.is_finite() {
                    v.to_string()
                } else {
                    "0".into()
                }
            })
            .collect();
        texts.extend((0..20_000).map(|_| format!("{:.6}", rng.random::<f64>() * 1e7)));
        texts.extend((0..20_000).map(|_| format!("{}", rng.random::<u64>())));
        texts.extend(
            [
                "0",
                "1e-320",
                "2.2250738585072011e-308",
                "1.7976931348623157e308",
                "9007199254740993",
                "18446744073709551616",
                "0.1",
                "123456789012345678901234567890",
            ]
            .map(String::from),
        );
        for t in &texts {
            let ours: f64 = from_slice(t.as_bytes()).unwrap();
            let reference: f64 = serde_json::from_str(t).unwrap();
            assert_eq!(ours.to_bits(), reference.to_bits(), "{t}");
        }
        // The one difference: sonic-rs drops the sign of a negative zero ("-0", "-0.0", "-1e-400"
        // are 0.0, serde_json's -0.0), the same number to the scaler and the forest.
        for t in ["-0", "-0.0", "-1e-400"] {
            assert_eq!(from_slice::<f64>(t.as_bytes()).unwrap(), 0.0, "{t}");
        }
        for t in ["1e400", "-1e400"] {
            assert!(serde_json::from_str::<f64>(t).is_err());
            assert!(from_slice::<f64>(t.as_bytes()).is_err(), "{t}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(from_slice::<serde_json::Value>(nested(MAX_DEPTH).as_bytes()).is_ok());
        let e = from_slice::<serde_json::Value>(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert_eq!(
            message(&e),
            format!("arrays and objects nested more than {MAX_DEPTH} deep at line 1 column 255")
        );
        assert!(from_slice::<serde_json::Value>(nested(100_000).as_bytes()).is_err());
    }

    #[test]
    fn sonic_writes_floats_as_serde_json_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut bad = Vec::new();
        for k in 0..200_000 {
            let v = match k % 3 {
                0 => f64::from_bits(rng.random::<u64>()),
                1 => rng.random::<f64>() * 10f64.powi(rng.random_range(-30..30)),
                _ => (rng.random::<u32>() as f64) * 10f64.powi(rng.random_range(-5..25)),
            };
            let a = sonic_rs::to_string(&v).unwrap();
            let b = serde_json::to_string(&v).unwrap();
            if a != b {
                bad.push((v, a, b));
            }
        }
        assert!(
            bad.is_empty(),
            "{} differ, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(8)]
        );
        for v in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            1e21,
            1e-7,
            5e-324,
        ] {
            assert_eq!(
                sonic_rs::to_string(&v).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
    }

    #[test]
    fn sonic_escapes_strings_as_serde_json_does() {
        let mut all: String = (0u32..0x800).filter_map(char::from_u32).collect();
        all.push_str("\u{2028}\u{2029}\u{feff}\u{10ffff}é\"\\/");
        for s in [all.as_str(), "", "10.0.0.7", "a\"b", "\u{7f}"] {
            assert_eq!(
                sonic_rs::to_string(s).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
        // Escapes in long strings take the vectorised path.
        let long = all.repeat(40);
        assert_eq!(
            sonic_rs::to_string(&long).unwrap(),
            serde_json::to_string(&long).unwrap()
        );
    }
}
