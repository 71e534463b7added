//! Parses a {"records":[...]} body of traffic records into feature columns with one serde visitor
//! (the shape of `src/api/ingest.rs`'s: keys and strings borrowed from the body, numbers as f64,
//! no `Value` tree), driven by serde_json, sonic-rs and simd-json; prints the best of 5 runs each.
//! simd-json's time includes building its tape (it needs a mutable copy of the body, not timed).
//!
//! Usage: cargo run --release --manifest-path scripts/json-parsers/Cargo.toml -- BODY.json
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::time::Instant;

const FEATURES: [&str; 4] = [
    "bytes_sent",
    "bytes_received",
    "connections",
    "active_sessions",
];

#[derive(Default)]
struct Columns {
    data: Vec<f64>,
    ts: String,
    ts_ends: Vec<u32>,
    echo: String,
    n: usize,
}

struct Body<'a>(&'a mut Columns);
impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for Body<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while let Some(k) = m.next_key::<Cow<'de, str>>()? {
            if k == "records" {
                m.next_value_seed(Records(&mut *self.0))?;
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}
struct Records<'a>(&'a mut Columns);
impl<'de> DeserializeSeed<'de> for Records<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}
impl<'de> Visitor<'de> for Records<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element_seed(Record(&mut *self.0))?.is_some() {}
        Ok(())
    }
}
struct Record<'a>(&'a mut Columns);
enum Cell<'de> {
    Num(f64),
    Text(Cow<'de, str>),
    Other,
}
struct CellSeed;
impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cell<'de>, D::Error> {
        d.deserialize_any(self)
    }
}
impl<'de> Visitor<'de> for CellSeed {
    type Value = Cell<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_f64<E>(self, v: f64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v as f64))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Cell<'de>, E> {
        Ok(Cell::Num(v as f64))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
        Ok(Cell::Text(Cow::Owned(v.to_string())))
    }
    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Cell<'de>, E> {
        Ok(Cell::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Cell<'de>, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Cell::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Cell<'de>, A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Cell::Other)
    }
}
impl<'de> DeserializeSeed<'de> for Record<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for Record<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let c = self.0;
        let mut row = [f64::NAN; 4];
        while let Some(k) = m.next_key::<Cow<'de, str>>()? {
            let v = m.next_value_seed(CellSeed)?;
            if let Some(j) = FEATURES.iter().position(|f| *f == k) {
                if let Cell::Num(x) = v {
                    row[j] = x;
                }
            } else if k == "timestamp" {
                if let Cell::Text(t) = v {
                    c.ts.push_str(&t);
                    c.ts_ends.push(c.ts.len() as u32);
                }
            } else if let Cell::Text(t) = v {
                c.echo.push_str(&t);
            }
        }
        if row.iter().any(|x| x.is_nan()) {
            return Err(de::Error::custom("missing feature"));
        }
        c.data.extend_from_slice(&row);
        c.n += 1;
        Ok(())
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("path");
    let body = std::fs::read(&path).unwrap();
    let runs = 5;
    let mut results = Vec::new();
    for name in ["serde_json", "sonic-rs", "simd-json"] {
        let mut best = f64::MAX;
        let mut n = 0;
        for _ in 0..runs {
            let mut cols = Columns::default();
            let mut copy = body.clone();
            let t = Instant::now();
            match name {
                "serde_json" => {
                    let mut d = serde_json::Deserializer::from_slice(&body);
                    Body(&mut cols).deserialize(&mut d).unwrap();
                    d.end().unwrap();
                }
                "sonic-rs" => {
                    let mut d = sonic_rs::Deserializer::from_slice(&body);
                    Body(&mut cols).deserialize(&mut d).unwrap();
                    d.end().unwrap();
                }
                _ => {
                    let mut d = simd_json::Deserializer::from_slice(&mut copy).unwrap();
                    Body(&mut cols).deserialize(&mut d).unwrap();
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
            n = cols.n;
            std::hint::black_box(&cols);
        }
        results.push((name, best, n));
    }
    println!("| parser | best of {runs} s | records/s | MiB/s |");
    println!("|---|---:|---:|---:|");
    for (name, s, n) in results {
        println!(
            "| {name} | {s:.3} | {:.0} | {:.0} |",
            n as f64 / s,
            body.len() as f64 / 1048576.0 / s
        );
    }
}
