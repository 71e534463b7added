//! The JSON parser of request bodies: sonic-rs behind serde. Through the same typed visitor it
//! parsed the million-record benchmark body 1.25× faster than serde_json (564 vs 450 MiB/s) and
//! simd-json (319 MiB/s); see `BENCHMARKS.md` ("JSON parsers"). Nesting is limited (sonic-rs
//! stops at 255 levels), and invalid UTF-8, lone surrogates and trailing characters are errors,
//! as they were with serde_json.

use serde::Deserialize;

/// A deserializer over a whole JSON text; call [`end`](sonic_rs::Deserializer::end) after the
/// value to reject trailing characters.
pub type Deserializer<'de> = sonic_rs::Deserializer<sonic_rs::Read<'de>>;

/// A deserializer over `text`.
pub fn deserializer(text: &[u8]) -> Deserializer<'_> {
    sonic_rs::Deserializer::from_slice(text)
}

/// Parses one JSON value (and nothing after it) from `text`.
pub fn from_slice<'de, T: Deserialize<'de>>(text: &'de [u8]) -> Result<T, sonic_rs::Error> {
    sonic_rs::from_slice(text)
}

/// What went wrong, on one line, for a problem's `detail`: sonic-rs's message and position
/// ("Invalid number at line 1 column 8"), without the excerpt of the body it appends below.
pub fn message(e: &sonic_rs::Error) -> String {
    let text = e.to_string();
    match text.split_once('\n') {
        Some((first, _)) => first.trim_end().to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(from_slice::<serde_json::Value>(deep.as_bytes()).is_err());
    }
}
