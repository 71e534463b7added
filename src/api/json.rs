//! JSON on the hot paths: request bodies are parsed and score results written with sonic-rs
//! behind serde. Through the same typed visitor it parsed the million-record benchmark body 1.25×
//! faster than serde_json (564 vs 450 MiB/s) and simd-json (319 MiB/s); see `BENCHMARKS.md`
//! ("JSON parsers"). Nesting is limited (to [`MAX_DEPTH`] levels), and invalid UTF-8, lone
//! surrogates and trailing characters are errors, as they were with serde_json. What it writes is
//! byte for byte what serde_json writes (tested below for numbers and strings); everything else
//! (stored alerts, SIEM formats, problems) still goes through serde_json.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Deepest nesting of arrays and objects sonic-rs accepts.
pub const MAX_DEPTH: usize = 254;

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

/// Appends `value` as JSON to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    sonic_rs::to_writer(out, value).expect("our response types always serialise");
}

/// The 400 for a body that is not JSON.
pub fn invalid(e: &sonic_rs::Error) -> ApiError {
    ApiError::bad_request("malformed-body", format!("invalid JSON: {}", message(e)))
}

/// What went wrong, on one line, for a problem's `detail`: sonic-rs's message and position
/// ("Invalid number at line 1 column 8"), without the excerpt of the body it appends below.
pub fn message(e: &sonic_rs::Error) -> String {
    let text = e.to_string();
    if text.starts_with("Encountered nesting") {
        // sonic-rs's wording names serde_json's limit of 128, not its own.
        return format!(
            "arrays and objects nested more than {MAX_DEPTH} deep at line {} column {}",
            e.line(),
            e.column()
        );
    }
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
