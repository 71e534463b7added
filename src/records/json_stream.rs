//! A JSON body (an array of records or `{"records": [...]}`) read as it arrives, a record at a
//! time: only the record being read and the chunk it is in are held, never the whole body.
//!
//! The envelope's punctuation (brackets, commas, colons, keys) is read here; each record, key
//! and other value is found by its brackets and strings and handed whole to sonic-rs, through
//! the same visitors [`read_json`] uses. Anything that is not valid JSON is then read by
//! sonic-rs too, from where it starts to the end of the body, after a few bytes that put the
//! parser where the body had it (in the records array, after a record, ...): so every answer is
//! [`read_json`]'s on the whole body, the problem's wording and its line and column included
//! (tested on cut and mangled bodies in `records::read`).

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeSeed;

use serde_json::{Map, Value};

use super::builder::BatchBuilder;
use super::error::RecordError;
use super::json::{
    Envelope, MAX_DEPTH, RecordSeed, Settings, Skip, StrSeed, TopLevel, check_shape, conclude,
    deserializer, message_at, read_json, read_settings,
};
use super::read::ReadSpec;

/// Reads a JSON body, its chunks given by `next` (`None` at its end), into `b`: the answer
/// [`read_json`] gives for the whole body.
pub fn read_json_stream(
    next: impl FnMut() -> Option<Bytes>,
    b: &mut BatchBuilder,
    top: TopLevel,
) -> Result<(), RecordError> {
    let mut w = Walk::new(next, b, None);
    match w.walk() {
        Ok(()) => {}
        // Not an envelope (or empty): nothing was taken but whitespace, and all of it was kept.
        Err(Stop::Whole) => return read_json(&w.r.rest(&[]), w.b, top),
        Err(Stop::At(skeleton)) => return Err(w.r.syntax_error(skeleton)),
        Err(Stop::Problem(e)) => return Err(e),
    }
    check_shape(w.state.not_envelope, w.state.records_not_array)?;
    conclude(w.state, w.b, top)
}

/// The most bytes a setting's value may take (a fit's `params`, `features`, ...): settings are
/// small, and each is held as a JSON tree while the body is read.
pub const MAX_SETTING_BYTES: usize = 1 << 20;

/// Reads a JSON body with settings beside its records (a fit's, an evaluation's) as it
/// arrives: the settings (as [`read_settings`] reads them, but only those named in `spec`
/// kept, any other field as `null`), and the records into `b`, or the problem with them (what
/// [`read_json`] answers past the envelope's problems), reported after the settings' own.
///
/// With `spec.features_setting` a `features` setting met before the records chooses their
/// features (`b` is made again from `spec`); when the records come first, the body is held
/// until it ends and read whole, as a `features` after them must still choose.
pub fn read_json_stream_settings(
    next: impl FnMut() -> Option<Bytes>,
    spec: &ReadSpec,
    b: &mut BatchBuilder,
) -> Result<(Settings, Result<(), RecordError>), RecordError> {
    let taking = Taking {
        spec,
        fields: Map::new(),
        features_used: None,
    };
    let mut w = Walk::new(next, b, Some(taking));
    match w.walk() {
        Ok(()) => {}
        Err(Stop::Whole) => {
            let body = w.r.rest(&[]);
            let mut settings = read_settings(&body)?;
            for (key, value) in settings.fields.iter_mut() {
                if !spec.settings.contains(&key.as_str()) {
                    *value = Value::Null;
                }
            }
            if spec.features_setting {
                *w.b = spec.builder_for(chosen(settings.fields.get("features"), spec));
            }
            let records = read_json(&body, w.b, spec.top_level);
            return Ok((settings, records));
        }
        Err(Stop::At(skeleton)) => return Err(w.r.syntax_error(skeleton)),
        Err(Stop::Problem(e)) => return Err(e),
    }
    check_shape(w.state.not_envelope, w.state.records_not_array)?;
    let Taking {
        fields,
        features_used,
        ..
    } = w.taking.expect("taken above");
    if let Some(used) = features_used {
        if fields.get("features").unwrap_or(&Value::Null) != &used {
            return Err(RecordError::malformed(
                "\"features\" is given twice, once before \"records\" and again after them with \
                 other names; give it once",
            )
            .with_field("features"));
        }
    }
    let settings = Settings {
        fields,
        has_records: w.state.has_records,
    };
    Ok((settings, conclude(w.state, w.b, spec.top_level)))
}

/// The features a `features` setting names: a list of names, or (null, absent or anything
/// else, which the caller refuses) the spec's own choice.
fn chosen(setting: Option<&Value>, spec: &ReadSpec) -> Option<Vec<String>> {
    let names = setting.and_then(Value::as_array).and_then(|a| {
        a.iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
    });
    names.or_else(|| spec.features.clone())
}

/// The settings of a body being read: those `spec` names, with their values.
struct Taking<'a> {
    spec: &'a ReadSpec,
    fields: Map<String, Value>,
    /// The `features` setting the records were read with (null: none), once they started,
    /// when the setting chooses them.
    features_used: Option<Value>,
}

impl Taking<'_> {
    /// Keeps the setting `key` (its value's text, checked; not JSON: `invalid`), or its name
    /// only when the reader does not take it, so it is still named as unknown.
    fn keep(
        &mut self,
        key: String,
        text: &[u8],
        b: &mut BatchBuilder,
        invalid: Stop,
    ) -> Result<(), Stop> {
        if !self.spec.settings.contains(&key.as_str()) {
            skip(text).map_err(|_| invalid)?;
            self.fields.insert(key, Value::Null);
            return Ok(());
        }
        if text.len() > MAX_SETTING_BYTES {
            let detail = format!(
                "the setting {key:?} takes more than {MAX_SETTING_BYTES} bytes; settings are small"
            );
            return Err(Stop::Problem(
                RecordError::malformed(detail).with_field(key),
            ));
        }
        let value: Value = super::json::from_slice(text).map_err(|_| invalid)?;
        if key == "features" && self.spec.features_setting && self.features_used.is_none() {
            *b = self.spec.builder_for(chosen(Some(&value), self.spec));
        }
        self.fields.insert(key, value);
        Ok(())
    }

    /// The records start: whether they can be read now, with the features chosen so far.
    fn records_start(&mut self) -> bool {
        if !self.spec.features_setting {
            return true;
        }
        match self.fields.get("features") {
            None => false,
            Some(v) => {
                self.features_used.get_or_insert_with(|| v.clone());
                true
            }
        }
    }
}

/// Why the walk stopped early.
enum Stop {
    /// The body is not an array or object: read it whole.
    Whole,
    /// The body is not valid JSON from the current position on; these bytes in front of the
    /// rest put a parser where the body had it.
    At(&'static [u8]),
    /// A problem that is not the body's syntax.
    Problem(RecordError),
}

/// A bare array's records: before the first, and after a comma.
const ARRAY: [&[u8]; 2] = [b"[", b"[0,"];
/// The records of `{"records": [...]}`.
const IN_OBJECT: [&[u8]; 2] = [b"{\"records\":[", b"{\"records\":[0,"];
/// An object's members: before the first, after a comma, and after a value.
const MEMBER: [&[u8]; 3] = [b"{", b"{\"a\":0,", b"{\"a\":[]"];
/// After the body's value.
const AFTER: &[u8] = b"[]";

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// A body being walked: its input, the builder its records go into, what the walk found so
/// far, and (when reading settings) the settings taken.
struct Walk<'a, F> {
    r: Input<F>,
    b: &'a mut BatchBuilder,
    state: Envelope,
    taking: Option<Taking<'a>>,
}

impl<'a, F: FnMut() -> Option<Bytes>> Walk<'a, F> {
    fn new(next: F, b: &'a mut BatchBuilder, taking: Option<Taking<'a>>) -> Self {
        Self {
            r: Input::new(next),
            b,
            state: Envelope::default(),
            taking,
        }
    }

    /// The body's value, then nothing but whitespace.
    fn walk(&mut self) -> Result<(), Stop> {
        let (k, c) = self.r.skip_ws(0);
        match c {
            Some(b'[') => {
                if let Some(t) = &mut self.taking {
                    // No settings in a bare array: the spec's features.
                    t.features_used = t.spec.features_setting.then_some(Value::Null);
                }
                self.r.keep_all = false;
                self.r.take(k + 1);
                self.state.has_records = true;
                self.records(ARRAY)?;
            }
            Some(b'{') => {
                // Until the records start, a body whose settings may choose their features is
                // kept whole: records before `features` read it whole.
                self.r.keep_all = self
                    .taking
                    .as_ref()
                    .is_some_and(|t| t.spec.features_setting);
                self.r.take(k + 1);
                self.object()?;
            }
            _ => return Err(Stop::Whole),
        }
        match self.r.skip_ws(0).1 {
            None => Ok(()),
            Some(_) => Err(Stop::At(AFTER)),
        }
    }

    /// The records of an array, its `[` taken, to its `]`.
    fn records(&mut self, skeletons: [&'static [u8]; 2]) -> Result<(), Stop> {
        let depth = skeletons[0]
            .iter()
            .filter(|&&c| c == b'[' || c == b'{')
            .count();
        let mut first = true;
        loop {
            let skeleton = skeletons[usize::from(!first)];
            if self.r.closes_empty(first, b']') {
                return Ok(());
            }
            let end = self.r.value_end(0, depth).ok_or(Stop::At(skeleton))?;
            let (sep_at, sep) = self.r.skip_ws(end);
            if !matches!(sep, Some(b',' | b']')) {
                return Err(Stop::At(skeleton));
            }
            record(self.r.slice(0, end), self.b, &mut self.state)
                .map_err(|_| Stop::At(skeleton))?;
            self.r.take(sep_at + 1);
            if sep == Some(b']') {
                return Ok(());
            }
            first = false;
        }
    }

    /// The members of the top-level object, its `{` taken, to its `}`.
    fn object(&mut self) -> Result<(), Stop> {
        let mut first = true;
        loop {
            let skeleton = MEMBER[usize::from(!first)];
            if self.r.closes_empty(first, b'}') {
                return Ok(());
            }
            if self.r.at(0) != Some(b'"') {
                return Err(Stop::At(skeleton));
            }
            let key_end = self.r.string_end(0).ok_or(Stop::At(skeleton))?;
            let key = key(self.r.slice(0, key_end)).ok_or(Stop::At(skeleton))?;
            let (colon, c) = self.r.skip_ws(key_end);
            if c != Some(b':') {
                return Err(Stop::At(skeleton));
            }
            let (v, c) = self.r.skip_ws(colon + 1);
            let sep = if key == "records" && c == Some(b'[') {
                if let Some(t) = &mut self.taking {
                    if !t.records_start() {
                        return Err(Stop::Whole);
                    }
                    self.r.keep_all = false;
                }
                self.r.take(v + 1);
                self.state.has_records = true;
                self.state.records_not_array = false;
                self.records(IN_OBJECT)?;
                let (sep_at, sep) = self.r.skip_ws(0);
                if !matches!(sep, Some(b',' | b'}')) {
                    return Err(Stop::At(MEMBER[2]));
                }
                self.r.take(sep_at + 1);
                sep
            } else {
                let end = self.r.value_end(v, 1).ok_or(Stop::At(skeleton))?;
                let (sep_at, sep) = self.r.skip_ws(end);
                if !matches!(sep, Some(b',' | b'}')) {
                    return Err(Stop::At(skeleton));
                }
                match (key == "records", self.taking.as_mut()) {
                    (true, _) => {
                        skip(self.r.slice(v, end)).map_err(|_| Stop::At(skeleton))?;
                        self.state.records_not_array = true;
                    }
                    (false, Some(t)) => {
                        t.keep(key, self.r.slice(v, end), self.b, Stop::At(skeleton))?
                    }
                    (false, None) => {
                        skip(self.r.slice(v, end)).map_err(|_| Stop::At(skeleton))?;
                        self.state.unknown.insert(key);
                    }
                }
                self.r.take(sep_at + 1);
                sep
            };
            if sep == Some(b'}') {
                return Ok(());
            }
            first = false;
        }
    }
}

/// One record, as `json::read_records` reads it: into the builder, or after the first problem
/// or past the record limit only checked and counted.
fn record(text: &[u8], b: &mut BatchBuilder, state: &mut Envelope) -> Result<(), sonic_rs::Error> {
    let i = state.n_records;
    let mut de = deserializer(text);
    if state.problem.is_some() || i >= b.max_records() {
        Skip::deserialize(&mut de)?;
    } else {
        let mut problem = None;
        let seed = RecordSeed {
            builder: &mut *b,
            problem: &mut problem,
        };
        if !seed.deserialize(&mut de)? {
            problem = Some(RecordError::record_at(
                i,
                format!("record {i} is not a JSON object"),
            ));
        }
        if problem.is_some() {
            state.problem = problem;
        }
    }
    de.end()?;
    state.n_records += 1;
    Ok(())
}

/// A key, its escapes undone; `None` when it is not a valid string.
fn key(text: &[u8]) -> Option<String> {
    let mut de = deserializer(text);
    let key = StrSeed.deserialize(&mut de).ok()?.into_owned();
    de.end().ok().map(|()| key)
}

/// A value only checked.
fn skip(text: &[u8]) -> Result<(), sonic_rs::Error> {
    let mut de = deserializer(text);
    Skip::deserialize(&mut de)?;
    de.end()
}

/// The body as it arrives: the bytes not yet taken (and, until the body's value starts, all
/// of them), with the line and column of the next one.
struct Input<F> {
    next: F,
    buf: Vec<u8>,
    /// The next byte not taken, in `buf`.
    pos: usize,
    /// Nothing is dropped from `buf` (before the value starts: whitespace only).
    keep_all: bool,
    ended: bool,
    /// Offset in the body of `buf[0]`.
    base: usize,
    /// Line (from 1) of the byte at `pos`, and the body offset where that line starts.
    line: usize,
    line_start: usize,
    /// Line and column of the last byte taken.
    last: (usize, usize),
}

impl<F: FnMut() -> Option<Bytes>> Input<F> {
    fn new(next: F) -> Self {
        Self {
            next,
            buf: Vec::new(),
            pos: 0,
            keep_all: true,
            ended: false,
            base: 0,
            line: 1,
            line_start: 0,
            last: (1, 1),
        }
    }

    /// Another chunk into the buffer (what was taken dropped first); false at the body's end.
    fn more(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if !self.keep_all && self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.base += self.pos;
            self.pos = 0;
        }
        loop {
            match (self.next)() {
                Some(chunk) if chunk.is_empty() => {}
                Some(chunk) => {
                    self.buf.extend_from_slice(&chunk);
                    return true;
                }
                None => {
                    self.ended = true;
                    return false;
                }
            }
        }
    }

    /// The byte `k` after the next one not taken, reading on as needed.
    fn at(&mut self, k: usize) -> Option<u8> {
        while self.pos + k >= self.buf.len() {
            if !self.more() {
                return None;
            }
        }
        Some(self.buf[self.pos + k])
    }

    /// The first byte from `k` on that is not whitespace, and where it is.
    fn skip_ws(&mut self, mut k: usize) -> (usize, Option<u8>) {
        loop {
            match self.at(k) {
                Some(c) if is_ws(c) => k += 1,
                c => return (k, c),
            }
        }
    }

    /// Before an item of an array or object (`first`: just after its opening bracket), the
    /// whitespace taken; true when there is no first item, the container closing at once
    /// (`close` taken too).
    fn closes_empty(&mut self, first: bool, close: u8) -> bool {
        let (k, c) = self.skip_ws(0);
        let empty = first && c == Some(close);
        self.take(k + usize::from(empty));
        empty
    }

    /// Just after the string starting at `k` (its quote).
    fn string_end(&mut self, k: usize) -> Option<usize> {
        self.scan(Scan::string(k), 0)
    }

    /// Just after the value starting at `k`, found by its brackets and strings (what is in
    /// between sonic-rs checks); `None` when the body ends first, or when the value's nesting,
    /// `depth` levels in already, passes [`MAX_DEPTH`] (an error in any case).
    fn value_end(&mut self, k: usize, depth: usize) -> Option<usize> {
        self.scan(Scan::value(k), depth)
    }

    /// Runs `scan` over the bytes not taken, reading on as it needs.
    fn scan(&mut self, mut scan: Scan, depth: usize) -> Option<usize> {
        loop {
            match scan.run(&self.buf[self.pos..], depth) {
                Scanned::End(end) => return Some(end),
                Scanned::TooDeep => return None,
                Scanned::More if self.more() => {}
                Scanned::More => return None,
            }
        }
    }

    /// Bytes `a..b` after the next one not taken.
    fn slice(&self, a: usize, b: usize) -> &[u8] {
        &self.buf[self.pos + a..self.pos + b]
    }

    /// Takes `k` bytes, following their lines.
    fn take(&mut self, k: usize) {
        let Some(before_last) = k.checked_sub(1) else {
            return;
        };
        let start = self.base + self.pos;
        let taken = &self.buf[self.pos..self.pos + k];
        let (before, last) = (&taken[..before_last], start + before_last);
        let line = self.line + memchr::memchr_iter(b'\n', before).count();
        let line_start = memchr::memrchr(b'\n', before).map_or(self.line_start, |i| start + i + 1);
        self.last = (line, last - line_start + 1);
        (self.line, self.line_start) = match taken[before_last] {
            b'\n' => (line + 1, last + 1),
            _ => (line, line_start),
        };
        self.pos += k;
    }

    /// `prefix`, then the rest of the body from the next byte not taken (all of it while
    /// `keep_all`, when `pos` is where the whitespace before the value starts being taken).
    fn rest(&mut self, prefix: &[u8]) -> Vec<u8> {
        let from = if self.keep_all { 0 } else { self.pos };
        self.rest_from(from, prefix)
    }

    /// `prefix`, then the rest of the body from `buf[from]`.
    fn rest_from(&mut self, from: usize, prefix: &[u8]) -> Vec<u8> {
        let mut doc = prefix.to_vec();
        doc.extend_from_slice(&self.buf[from..]);
        while let Some(chunk) = (self.next)() {
            doc.extend_from_slice(&chunk);
        }
        doc
    }

    /// The syntax error in the rest of the body, as sonic-rs reads it after `skeleton`, where
    /// it is in the whole body.
    fn syntax_error(&mut self, skeleton: &[u8]) -> RecordError {
        let (line, column) = (self.line, self.base + self.pos - self.line_start + 1);
        let doc = self.rest_from(self.pos, skeleton);
        let mut de = deserializer(&doc);
        let Err(e) = Skip::deserialize(&mut de).and_then(|_| de.end()) else {
            // The walk stops only at what is not JSON; should it not be, say so plainly.
            debug_assert!(false, "the streamed JSON walk stopped at valid JSON");
            return RecordError::malformed("invalid JSON");
        };
        // sonic-rs places the end of a body at its last byte: with nothing left after where
        // the walk stopped, that is the last byte taken.
        let (l, c) = (e.line(), e.column());
        let at = match l {
            _ if doc.len() == skeleton.len() => self.last,
            0 | 1 => (line, column + c.saturating_sub(1 + skeleton.len())),
            _ => (line + l - 1, c),
        };
        RecordError::malformed(format!("invalid JSON: {}", message_at(&e, at.0, at.1)))
    }
}

/// The bytes that matter to [`Scan`] between the strings of an array or object.
const STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t[b'{' as usize] = true;
    t[b'}' as usize] = true;
    t
};

/// Where a value ends, found over the bytes as they arrive: a scan that stops at the end of
/// what is buffered and goes on from there when more comes. Strings are crossed with
/// `memchr` (their quotes and backslashes) and the bytes between them through a table, a slice
/// at a time: the records' bytes are looked at once, in a tight loop, before sonic-rs reads them.
struct Scan {
    /// The next byte to look at (from the next one not taken).
    at: usize,
    /// Arrays and objects open.
    open: usize,
    in_string: bool,
}

enum Scanned {
    /// Just after the value.
    End(usize),
    /// Nested past [`MAX_DEPTH`].
    TooDeep,
    /// The buffered bytes end first.
    More,
}

impl Scan {
    /// A value starting at `at`.
    fn value(at: usize) -> Self {
        Self {
            at,
            open: 0,
            in_string: false,
        }
    }

    /// A string whose quote is at `at`.
    fn string(at: usize) -> Self {
        Self {
            at: at + 1,
            open: 0,
            in_string: true,
        }
    }

    /// Goes on over `s` (the bytes not taken), nested `depth` levels in already.
    fn run(&mut self, s: &[u8], depth: usize) -> Scanned {
        loop {
            if self.in_string {
                let Some(i) = memchr::memchr2(b'"', b'\\', s.get(self.at..).unwrap_or(&[])) else {
                    self.at = self.at.max(s.len());
                    return Scanned::More;
                };
                let j = self.at + i;
                if s[j] == b'\\' {
                    // An escape: the next byte, whatever it is, is part of the string.
                    if j + 1 >= s.len() {
                        self.at = j;
                        return Scanned::More;
                    }
                    self.at = j + 2;
                    continue;
                }
                self.in_string = false;
                self.at = j + 1;
                if self.open == 0 {
                    return Scanned::End(self.at);
                }
                continue;
            }
            if self.open > 0 {
                let rest = s.get(self.at..).unwrap_or(&[]);
                match rest.iter().position(|&c| STRUCTURAL[usize::from(c)]) {
                    Some(i) => self.at += i,
                    None => {
                        self.at = self.at.max(s.len());
                        return Scanned::More;
                    }
                }
            }
            let Some(&c) = s.get(self.at) else {
                return Scanned::More;
            };
            match c {
                b'"' => {
                    self.in_string = true;
                    self.at += 1;
                }
                b'[' | b'{' => {
                    self.open += 1;
                    if depth + self.open > MAX_DEPTH {
                        return Scanned::TooDeep;
                    }
                    self.at += 1;
                }
                b']' | b'}' if self.open == 0 => return Scanned::End(self.at),
                b']' | b'}' => {
                    self.open -= 1;
                    self.at += 1;
                    if self.open == 0 {
                        return Scanned::End(self.at);
                    }
                }
                c if self.open == 0 && (is_ws(c) || c == b',' || c == b':') => {
                    return Scanned::End(self.at);
                }
                _ => self.at += 1,
            }
        }
    }
}
