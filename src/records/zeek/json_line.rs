//! A Zeek JSON conn line read with sonic-rs through a typed visitor that asks the deserializer
//! for exactly what a `serde_json::Value` would (so syntax errors, their wording and positions
//! are the same as reading the line into a `Value`), but keeps only the fields a window needs,
//! borrowed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::ZeekError;
use super::line::{ConnLine, epoch_parts, epoch_text, parse_ts_text, ts_from_epoch};
use super::tsv_fast::ConnFields;

pub(super) fn json_line<'a>(
    no: usize,
    line: &'a [u8],
    shape: &mut Shape,
) -> Result<Option<ConnLine<'a>>, ZeekError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(conn) = flat_line(line, Some(shape)) {
        return Ok(Some(conn));
    }
    visited_line(no, line)
}

/// A line read through the typed sonic-rs visitor: any JSON, and the errors of a `Value`.
fn visited_line(no: usize, line: &[u8]) -> Result<Option<ConnLine<'_>>, ZeekError> {
    let JsonLine(value) = crate::records::json::from_slice(line).map_err(|e| {
        let e = crate::records::json::message(&e);
        ZeekError::line_error(no, format!("invalid JSON: {e}"))
    })?;
    let Val::Object(fields) = value else {
        return Err(ZeekError::line_error(no, "not a JSON object"));
    };
    (*fields).conn(no).map(Some)
}

/// A JSON value as far as a window needs it: what `serde_json::Value` would hold, without the
/// parts no field of ours looks at.
#[derive(Debug, Default)]
enum Val<'a> {
    /// The key is not there.
    #[default]
    Absent,
    Null,
    Num(Number),
    Str(Cow<'a, str>),
    /// A line's object, or `id`'s: its fields (`id`'s inner ones under the flat keys they
    /// stand for).
    Object(Box<Fields<'a>>),
    /// A boolean, an array, or an object anywhere but a line or `id`.
    Other,
}

/// The fields of a line's object that a window needs (of `id`'s object: the three it nests).
#[derive(Debug, Default)]
struct Fields<'a> {
    ts: Val<'a>,
    uid: Val<'a>,
    orig_h: Val<'a>,
    resp_h: Val<'a>,
    resp_p: Val<'a>,
    orig_bytes: Val<'a>,
    resp_bytes: Val<'a>,
    id: Val<'a>,
}

/// A line's value, read as the object of a line ([`Val::Object`] when it is one).
struct JsonLine<'a>(Val<'a>);

impl<'de> Deserialize<'de> for JsonLine<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectSeed(Place::Line)).map(JsonLine)
    }
}

/// Where an object of ours stands, which names its keys: a line, or the `id` inside one (the
/// nested form some shippers write: `{"id": {"orig_h": .., "resp_h": .., "resp_p": ..}}`).
#[derive(Clone, Copy)]
enum Place {
    Line,
    Id,
}

/// Which of our fields a key names. Keys are read as `serde_json::Value` reads them (`str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Ts,
    Uid,
    OrigH,
    RespH,
    RespP,
    OrigBytes,
    RespBytes,
    Id,
    Other,
}

impl Key {
    /// How many there are (a flat line's values are kept by key in an array this long):
    /// `Other` is the last.
    const COUNT: usize = Key::Other as usize + 1;

    /// The field a key of an object at `place` names (inside `id`, the flat key it stands for:
    /// `orig_h` is `id.orig_h`).
    fn of(name: &str, place: Place) -> Self {
        match (place, name) {
            (Place::Line, "ts") => Self::Ts,
            (Place::Line, "uid") => Self::Uid,
            (Place::Line, "id.orig_h") | (Place::Id, "orig_h") => Self::OrigH,
            (Place::Line, "id.resp_h") | (Place::Id, "resp_h") => Self::RespH,
            (Place::Line, "id.resp_p") | (Place::Id, "resp_p") => Self::RespP,
            (Place::Line, "orig_bytes") => Self::OrigBytes,
            (Place::Line, "resp_bytes") => Self::RespBytes,
            (Place::Line, "id") => Self::Id,
            _ => Self::Other,
        }
    }
}

/// A key read as `serde_json::Value` reads it (`deserialize_str`), named as at its place.
struct KeySeed(Place);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key::of(v, self.0))
    }
}

/// Any value, read as `serde_json::Value` reads it (keys with `deserialize_str`, values with
/// `deserialize_any`), keeping numbers, strings and null.
struct ValSeed;

impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = Val<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValSeed)
    }
}

/// A value nobody looks at, still read in full so its errors are the `Value`'s errors.
struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValSeed).map(|_| Ignored)
    }
}

impl<'de> Visitor<'de> for ValSeed {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::Num(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(Val::Num(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'de>, E> {
        // As `serde_json::Value` holds it: a number that is not finite is null.
        Ok(Number::from_f64(v).map_or(Val::Null, Val::Num))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        while seq.next_element::<Ignored>()?.is_some() {}
        Ok(Val::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        while map.next_key_seed(KeySeed(Place::Line))?.is_some() {
            map.next_value::<Ignored>()?;
        }
        Ok(Val::Other)
    }
}

/// An object of ours at its place, read into [`Fields`] (a repeated key keeps its last value,
/// as a `Value` map does): [`Val::Object`]. Every other value (an array read in full, so its
/// errors are the `Value`'s) is [`Val::Other`], null is [`Val::Null`].
#[derive(Clone, Copy)]
struct ObjectSeed(Place);

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Val<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.0 {
            Place::Line => "a JSON object",
            Place::Id => "any JSON value",
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        while seq.next_element::<Ignored>()?.is_some() {}
        Ok(Val::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            fields.read(key, &mut map)?;
        }
        Ok(Val::Object(Box::new(fields)))
    }
}

impl<'de> Fields<'de> {
    /// Reads the value of `key` into its field; a value we do not keep is read and dropped.
    fn read<A: MapAccess<'de>>(&mut self, key: Key, map: &mut A) -> Result<(), A::Error> {
        match key {
            Key::Id => self.id = map.next_value_seed(ObjectSeed(Place::Id))?,
            key => match self.slot(&key) {
                Some(slot) => *slot = map.next_value()?,
                None => map.next_value::<Ignored>().map(drop)?,
            },
        }
        Ok(())
    }
}

impl<'a> Fields<'a> {
    /// The flat field `key` names (`None`: `id`, or one we do not keep).
    fn slot(&mut self, key: &Key) -> Option<&mut Val<'a>> {
        match key {
            Key::Ts => Some(&mut self.ts),
            Key::Uid => Some(&mut self.uid),
            Key::OrigH => Some(&mut self.orig_h),
            Key::RespH => Some(&mut self.resp_h),
            Key::RespP => Some(&mut self.resp_p),
            Key::OrigBytes => Some(&mut self.orig_bytes),
            Key::RespBytes => Some(&mut self.resp_bytes),
            Key::Id | Key::Other => None,
        }
    }

    /// A field by Zeek's flat name (`id.orig_h`), or nested (`{"id": {"orig_h": ..}}`).
    fn take(&mut self, key: Key) -> Val<'a> {
        let Some(flat) = self.slot(&key) else {
            return Val::Absent;
        };
        if !matches!(flat, Val::Absent) {
            return std::mem::take(flat);
        }
        let Val::Object(id) = &mut self.id else {
            return Val::Absent;
        };
        id.slot(&key).map(std::mem::take).unwrap_or_default()
    }

    fn conn(mut self, no: usize) -> Result<ConnLine<'a>, ZeekError> {
        let ts = match self.take(Key::Ts) {
            Val::Num(n) => ts_from_epoch(no, n.as_f64().unwrap_or(f64::NAN))?,
            Val::Str(s) => parse_ts_text(no, &s)?,
            Val::Null | Val::Absent => {
                return Err(ZeekError::field_error(no, "ts", "ts is missing"));
            }
            Val::Object(_) | Val::Other => {
                return Err(ZeekError::field_error(
                    no,
                    "ts",
                    "ts must be epoch seconds or an ISO 8601 string",
                ));
            }
        };
        let mut text = |key: Key, name: &str| match self.take(key) {
            Val::Str(s) if !s.is_empty() => Ok(s),
            Val::Null | Val::Absent => Err(ZeekError::field_error(
                no,
                name,
                format!("{name} is missing"),
            )),
            _ => Err(ZeekError::field_error(
                no,
                name,
                format!("{name} must be a non-empty string"),
            )),
        };
        // In the order Zeek writes them, so the first missing field is the one reported.
        let orig_h = text(Key::OrigH, "id.orig_h")?;
        let resp_h = text(Key::RespH, "id.resp_h")?;
        let resp_p = match self.take(Key::RespP) {
            Val::Num(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Val::Null | Val::Absent => {
                return Err(ZeekError::field_error(
                    no,
                    "id.resp_p",
                    "id.resp_p is missing",
                ));
            }
            _ => None,
        }
        .ok_or_else(|| {
            ZeekError::field_error(no, "id.resp_p", "id.resp_p is not a port (0 to 65535)")
        })?;
        let orig_bytes = json_count(no, self.take(Key::OrigBytes), "orig_bytes")?;
        let resp_bytes = json_count(no, self.take(Key::RespBytes), "resp_bytes")?;
        let uid = match self.take(Key::Uid) {
            Val::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        };
        Ok(ConnLine {
            ts,
            uid,
            orig_h,
            resp_h,
            resp_p,
            orig_bytes,
            resp_bytes,
        })
    }
}

/// A byte count: absent or null (Zeek's JSON writer omits unset fields) is 0.
fn json_count(no: usize, value: Val<'_>, name: &str) -> Result<u64, ZeekError> {
    let n = match value {
        Val::Absent | Val::Null => return Ok(0),
        Val::Num(n) => n,
        _ => {
            return Err(ZeekError::field_error(
                no,
                name,
                format!("{name} must be a number"),
            ));
        }
    };
    number_count(no, &n, name)
}

/// A JSON number as a byte count.
pub(crate) fn number_count(no: usize, n: &Number, name: &str) -> Result<u64, ZeekError> {
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    // Shippers that pass logs through floats write 601.0; a whole float is still a count.
    match n.as_f64() {
        Some(v) if v < 0.0 => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} {n} is negative"),
        )),
        Some(v) if v.is_finite() && v.fract() == 0.0 && v <= u64::MAX as f64 => Ok(v as u64),
        _ => Err(ZeekError::field_error(
            no,
            name,
            format!("{name} {n} is not a whole number of bytes"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The short way for lines as Zeek writes them

/// A value as the flat scanner saw it: the text of a string (no escapes) or of a number.
#[derive(Clone, Copy)]
enum Tok<'a> {
    Str(&'a [u8]),
    Num(&'a [u8]),
    Null,
    Bool,
}

/// The connection on a line as Zeek's JSON writer writes it — one flat object, ASCII, strings
/// without escapes, numbers without exponents, no nested value, no `id` key, every field of the
/// usual type — or `None` for anything else, which [`visited_line`] then reads (and reports on)
/// in full. Whatever this accepts is valid JSON that the visitor reads to the same connection.
/// `shape`: the keys of the last line read, compared to this line's (see [`Shape`]).
fn flat_line<'a>(line: &'a [u8], shape: Option<&mut Shape>) -> Option<ConnLine<'a>> {
    if !line.is_ascii() {
        return None;
    }
    let f = flat_fields(line, shape)?;
    let text = |v: &'a [u8]| std::str::from_utf8(v).ok().map(Cow::Borrowed);
    Some(ConnLine {
        ts: epoch_text(f.ts)?,
        uid: match f.uid {
            Some(v) => Some(text(v)?),
            None => None,
        },
        orig_h: text(f.orig_h)?,
        resp_h: text(f.resp_h)?,
        resp_p: f.resp_p,
        orig_bytes: f.orig_bytes,
        resp_bytes: f.resp_bytes,
    })
}

/// [`flat_line`] straight to the fields a window needs, for a line of a batch checked to be
/// ASCII as a whole (so not again here): no `DateTime`, no UTF-8 check of its strings. `None`
/// where `flat_line` is `None`; otherwise the fields of the connection it reads.
pub(crate) fn fast_json<'a>(line: &'a str, shape: &mut Shape) -> Option<ConnFields<'a>> {
    let f = flat_fields(line.as_bytes(), Some(shape))?;
    // A string's text as a part of `line` (it is one: the scanner cuts it out of `line`).
    let part = |v: &[u8]| {
        let at = v.as_ptr() as usize - line.as_ptr() as usize;
        line.get(at..at + v.len())
    };
    Some(ConnFields {
        ts_secs: epoch_parts(f.ts)?.0,
        orig_h: part(f.orig_h)?,
        resp_h: part(f.resp_h)?,
        resp_p: f.resp_p,
        orig_bytes: f.orig_bytes,
        resp_bytes: f.resp_bytes,
    })
}

/// What the flat scanner reads from a line: the text of `ts` (a number), of `uid` (a string
/// that is not empty), of the hosts, and the port and counts.
struct FlatFields<'a> {
    ts: &'a [u8],
    uid: Option<&'a [u8]>,
    orig_h: &'a [u8],
    resp_h: &'a [u8],
    resp_p: u16,
    orig_bytes: u64,
    resp_bytes: u64,
}

/// The keys of the last line a reader scanned, in their order, each as its text from the
/// opening quote to the colon (`"ts":`): the lines of one log repeat them, so the next line's
/// keys are compared to these, and named without being read as strings.
#[derive(Debug, Default, Clone)]
pub(crate) struct Shape {
    text: Vec<u8>,
    /// Key `k`'s text (`text[start..end]`) and what it names; an empty text never matches.
    keys: Vec<(u32, u32, Key)>,
}

impl Shape {
    /// Key `k` of the last line, when `rest` starts with its text: what it names and the length.
    #[inline]
    fn key(&self, k: usize, rest: &[u8]) -> Option<(Key, usize)> {
        let &(start, end, slot) = self.keys.get(k)?;
        let text = &self.text[start as usize..end as usize];
        let head = rest.get(..text.len())?;
        (!text.is_empty() && same(head, text)).then_some((slot, text.len()))
    }

    /// Keeps `text` (none: a key spaced from its colon, never matched) as key `k`, which
    /// names `slot`; the keys after it are the last line's no more.
    fn keep(&mut self, k: usize, text: Option<&[u8]>, slot: Key) {
        if let Some(&(start, _, _)) = self.keys.get(k) {
            self.text.truncate(start as usize);
        }
        self.keys.truncate(k);
        let start = self.text.len() as u32;
        self.text.extend_from_slice(text.unwrap_or_default());
        self.keys.push((start, self.text.len() as u32, slot));
    }
}

/// Whether `a` and `b`, of one length, hold the same bytes: from 4 to 16 bytes (a key's text
/// from `"ts":` to `"orig_ip_bytes":`) as two words that overlap, compared in registers,
/// where a slice comparison of a length known only at run time calls `memcmp`.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    debug_assert_eq!(n, b.len());
    let w8 = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("eight"));
    let w4 = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("four"));
    match n {
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        _ => a == b,
    }
}

/// The fields of a flat line in the form [`flat_line`] reads (the caller checks it is ASCII).
fn flat_fields<'a>(s: &'a [u8], mut shape: Option<&mut Shape>) -> Option<FlatFields<'a>> {
    let mut i = ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(s, i + 1);
    let mut v: [Option<Tok<'a>>; Key::COUNT] = [None; Key::COUNT];
    if s.get(i) == Some(&b'}') {
        i += 1;
    } else {
        let mut k = 0;
        loop {
            // The key the last line had here, when this one has it too, as the same text;
            // otherwise the key read and named, and kept for the next line.
            let known = shape.as_deref().and_then(|sh| sh.key(k, &s[i..]));
            let slot = if let Some((slot, len)) = known {
                i += len;
                slot
            } else {
                let (key, next) = string(s, i)?;
                let colon = ws(s, next);
                if s.get(colon) != Some(&b':') {
                    return None;
                }
                // ASCII (the caller checked); `id` holds the ids nested: the visitor reads it.
                let slot = match Key::of(std::str::from_utf8(key).ok()?, Place::Line) {
                    Key::Id => return None,
                    slot => slot,
                };
                if let Some(sh) = shape.as_deref_mut() {
                    sh.keep(k, (colon == next).then(|| &s[i..=colon]), slot);
                }
                i = colon + 1;
                slot
            };
            let (value, next) = token(s, ws(s, i))?;
            i = ws(s, next);
            // A repeated key keeps its last value, as a `Value` map does.
            v[slot as usize] = Some(value);
            k += 1;
            match s.get(i) {
                Some(b',') => i = ws(s, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    let at = |k: Key| v[k as usize];
    if ws(s, i) != s.len() {
        return None;
    }
    let host = |t: Option<Tok<'a>>| match t {
        Some(Tok::Str(v)) if !v.is_empty() => Some(v),
        _ => None,
    };
    let count = |t: Option<Tok<'_>>| match t {
        None | Some(Tok::Null) => Some(0),
        Some(Tok::Num(v)) => digits(v, 19),
        _ => None,
    };
    let Some(Tok::Num(ts)) = at(Key::Ts) else {
        return None;
    };
    let Some(Tok::Num(port)) = at(Key::RespP) else {
        return None;
    };
    Some(FlatFields {
        ts,
        uid: match at(Key::Uid) {
            Some(Tok::Str(v)) if !v.is_empty() => Some(v),
            _ => None,
        },
        orig_h: host(at(Key::OrigH))?,
        resp_h: host(at(Key::RespH))?,
        resp_p: u16::try_from(digits(port, 5)?).ok()?,
        orig_bytes: count(at(Key::OrigBytes))?,
        resp_bytes: count(at(Key::RespBytes))?,
    })
}

/// Skips JSON whitespace from `i`.
fn ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// The text of the string at `i` and where it ends; `None` for an escape or a control byte.
fn string(s: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let rest = &s[i + 1..];
    let end = stop(rest)?;
    if rest[end] != b'"' {
        return None;
    }
    Some((&rest[..end], i + 1 + end + 1))
}

/// Where a string's text stops: its first `"`, `\\` or control byte. Eight bytes at a time
/// (the keys and values of a conn line are a few bytes long, shorter than memchr's setup pays
/// for): a byte equal to `c` is a zero byte of `w ^ c`, found by the borrow trick, which can
/// only flag bytes above a true match, so the lowest flag is exact.
fn stop(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut words = rest.chunks_exact(8);
    for (n, word) in (&mut words).enumerate() {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let hits = (zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if hits != 0 {
            return Some(8 * n + hits.trailing_zeros() as usize / 8);
        }
    }
    let tail = words.remainder();
    let at = tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(rest.len() - tail.len() + at)
}

/// The value at `i` and where it ends; `None` for an object, an array, an escaped string, a
/// number with an exponent, more than 19 whole digits or 48 characters, or anything that is
/// not JSON.
fn token(s: &[u8], i: usize) -> Option<(Tok<'_>, usize)> {
    match *s.get(i)? {
        b'"' => string(s, i).map(|(v, end)| (Tok::Str(v), end)),
        b'n' => s[i..].starts_with(b"null").then_some((Tok::Null, i + 4)),
        b't' => s[i..].starts_with(b"true").then_some((Tok::Bool, i + 4)),
        b'f' => s[i..].starts_with(b"false").then_some((Tok::Bool, i + 5)),
        b'-' | b'0'..=b'9' => {
            // -?(0|[1-9][0-9]*)(\.[0-9]+)?
            let mut j = i + usize::from(s[i] == b'-');
            let int = j;
            while s.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            if j == int || (s[int] == b'0' && j - int > 1) || j - int > 19 {
                return None;
            }
            if s.get(j) == Some(&b'.') {
                j += 1;
                let frac = j;
                while s.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
                if j == frac {
                    return None;
                }
            }
            if matches!(s.get(j), Some(b'e' | b'E')) || j - i > 48 {
                return None;
            }
            Some((Tok::Num(&s[i..j]), j))
        }
        _ => None,
    }
}

/// A number of at most `max` plain digits (no sign, point or leading zero but `0` itself).
fn digits(v: &[u8], max: usize) -> Option<u64> {
    if v.is_empty() || v.len() > max || (v[0] == b'0' && v.len() > 1) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Two overlapping words compare as the bytes do, at every length.
        #[test]
        fn same_is_byte_equality(
            a in prop::collection::vec(prop_oneof![b'a'..=b'c', Just(b'"')], 0..24),
            flip in prop::option::of(0usize..24),
        ) {
            let mut b = a.clone();
            if let Some(at) = flip.filter(|&at| at < b.len()) {
                b[at] = b'z';
            }
            prop_assert_eq!(same(&a, &b), a == b);
        }

        /// Eight bytes at a time, `stop` finds what a byte-by-byte scan finds, for any bytes
        /// (not only ASCII) and any length.
        #[test]
        fn stop_is_the_first_quote_backslash_or_control_byte(
            bytes in prop::collection::vec(prop_oneof![
                6 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => 0x80u8..=0xff,
            ], 0..40)
        ) {
            let scan = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(stop(&bytes), scan);
        }
    }

    /// A value for any key: mostly what Zeek writes, sometimes what the short way leaves to
    /// the visitor (escapes, exponents, nesting, odd types, bad JSON).
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (0u64..4_000_000_000, 0u32..1_000_000).prop_map(|(s, f)| format!("{s}.{f:06}")),
            2 => (0u64..4_000_000_000, 0u32..1_000, 1usize..7).prop_map(|(s, f, n)| format!("{s}.{}", &format!("{f:06}")[..n])),
            3 => any::<u64>().prop_map(|v| v.to_string()),
            2 => (0u32..70_000).prop_map(|v| v.to_string()),
            2 => "[a-z0-9.:]{0,12}".prop_map(|v| format!("\"{v}\"")),
            1 => prop::sample::select(vec![
                "null", "true", "false", "-1", "-0", "0", "00", "01", "1.", ".5", "1e3", "1E+2",
                "1.5e-3", "-2.5", "18446744073709551616", "99999999999999999999999",
                "4000000000.5", "3999999999.999999", "1700000000.1234567", "\"a\\\"b\"",
                "\"\\u0041\"", "\"\"", "[]", "{}", "[1,{\"a\":2}]", "{\"orig_h\":\"x\"}", "nul",
                "tru", "\"open", "1.5.5", "--1", "+1", "0x10", "\"tab\there\"", "NaN",
            ]).prop_map(String::from),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "ts",
            "uid",
            "id.orig_h",
            "id.resp_h",
            "id.resp_p",
            "orig_bytes",
            "resp_bytes",
            "id",
            "proto",
            "duration",
            "",
            "id.orig_p",
            "ts ",
        ])
        .prop_map(String::from)
    }

    /// A line: mostly a flat object of the usual fields, sometimes with odd spacing or junk.
    fn line() -> impl Strategy<Value = String> {
        let field = (key(), value());
        let usual = (
            value(),
            "[a-z]{1,3}",
            "[0-9.]{1,15}",
            "[0-9.]{1,15}",
            0u32..70_000,
            prop::option::of(value()),
            prop::option::of(value()),
        )
            .prop_map(|(ts, uid, o, r, p, ob, rb)| {
                let mut v = vec![
                    format!("\"ts\":{ts}"),
                    format!("\"uid\":\"{uid}\""),
                    format!("\"id.orig_h\":\"{o}\""),
                    format!("\"id.resp_h\":\"{r}\""),
                    format!("\"id.resp_p\":{p}"),
                ];
                v.extend(ob.map(|b| format!("\"orig_bytes\":{b}")));
                v.extend(rb.map(|b| format!("\"resp_bytes\":{b}")));
                v
            });
        (
            usual,
            prop::collection::vec(field, 0..4),
            0usize..8,
            prop::sample::select(vec!["", " ", "\t", "\r", " x", ",", "}"]),
            prop::sample::select(vec![",", " , ", ",\t"]),
        )
            .prop_map(|(mut fields, extra, at, tail, comma)| {
                for (i, (k, v)) in extra.into_iter().enumerate() {
                    let at = (at + i).min(fields.len());
                    fields.insert(at, format!("\"{k}\":{v}"));
                }
                format!("{{{}}}{tail}", fields.join(comma))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Whatever the short way reads, the visitor reads to the same connection.
        #[test]
        fn the_flat_scanner_agrees_with_the_visitor(line in line()) {
            let visited = visited_line(7, line.as_bytes());
            if let Some(conn) = flat_line(line.as_bytes(), None) {
                prop_assert_eq!(visited, Ok(Some(conn)), "{}", line);
            }
        }

        /// The fast path (lines of an ASCII batch) reads the lines the flat scanner reads, to
        /// the fields of the connection it reads.
        #[test]
        fn the_fast_path_reads_what_the_flat_scanner_reads(line in line()) {
            let flat = flat_line(line.as_bytes(), None);
            let fast = fast_json(&line, &mut Shape::default());
            prop_assert_eq!(fast.is_some(), flat.is_some(), "{}", line);
            if let (Some(fast), Some(c)) = (fast, flat) {
                prop_assert_eq!(fast, c.fields(), "{}", line);
            }
        }

        /// Lines read one after the other, each comparing its keys to the last line's, read as
        /// each alone: whatever keys, spacing and order the lines before it had.
        #[test]
        fn keys_compared_to_the_last_lines_read_as_keys_read_alone(
            lines in prop::collection::vec(line(), 1..6),
            repeat in prop::collection::vec(0usize..6, 0..6),
        ) {
            // Lines of one shape in a row, as a log has them, and lines of other shapes.
            let order: Vec<&String> = lines
                .iter()
                .chain(repeat.iter().map(|&r| &lines[r % lines.len()]))
                .collect();
            let (mut shape, mut lines_shape) = (Shape::default(), Shape::default());
            for line in order {
                let alone = fast_json(line, &mut Shape::default());
                prop_assert_eq!(fast_json(line, &mut shape), alone, "{}", line);
                let alone = flat_line(line.as_bytes(), None);
                let after = flat_line(line.as_bytes(), Some(&mut lines_shape));
                prop_assert_eq!(after, alone, "{}", line);
            }
        }
    }

    /// Zeek's own lines take the short way (or the benchmark measures the wrong thing).
    #[test]
    fn zeek_lines_take_the_short_way() {
        let body = crate::records::zeek::tests::shared_sample("conn.json.log");
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let short = lines
            .iter()
            .filter(|l| flat_line(l.as_bytes(), None).is_some())
            .count();
        assert!(short * 10 >= lines.len() * 9, "{short} of {}", lines.len());
        let mut shape = Shape::default();
        for l in lines {
            if let Some(c) = flat_line(l.as_bytes(), None) {
                assert_eq!(fast_json(l, &mut shape), Some(c.fields()), "{l}");
                assert_eq!(visited_line(1, l.as_bytes()), Ok(Some(c)), "{l}");
            }
        }
    }
}
