//! The stream state of a `records` detector: each record is its own window, closed as it
//! arrives, so nothing is held open; what is kept is the latest event time seen (the answer's
//! `watermark`). It is stored where a Zeek stream keeps its [`WindowBook`] snapshot, told
//! apart by its first byte.
//!
//! [`WindowBook`]: super::WindowBook

use chrono::{DateTime, Utc};

/// The first byte of a records stream's bytes (a window book's snapshot starts with its
/// format version, a small number).
const MARK: u8 = 0xEC;

/// A records detector's stream: the latest event time seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStream {
    /// Microseconds since the epoch.
    latest: Option<i64>,
}

impl RecordStream {
    /// Whether `bytes` are a records stream's (else a window book's snapshot).
    pub fn is_records(bytes: &[u8]) -> bool {
        bytes.first() == Some(&MARK)
    }

    pub fn to_bytes(self) -> Vec<u8> {
        let mut out = vec![MARK];
        if let Some(t) = self.latest {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out
    }

    /// The stream from its bytes; `None` when they are not a records stream's.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&MARK, [])) => Some(Self::default()),
            Some((&MARK, rest)) => Some(Self {
                latest: Some(i64::from_le_bytes(rest.try_into().ok()?)),
            }),
            _ => None,
        }
    }

    /// Moves the latest event time forward to `t` (never back).
    pub fn saw(&mut self, t: DateTime<Utc>) {
        self.latest = self.latest.max(Some(t.timestamp_micros()));
    }

    /// The latest event time seen: records have no lateness, so this is the watermark.
    pub fn watermark(self) -> Option<DateTime<Utc>> {
        self.latest.and_then(DateTime::from_timestamp_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{BookConfig, WindowBook};

    #[test]
    fn round_trips_and_is_told_apart_from_a_window_book() {
        let mut s = RecordStream::default();
        assert_eq!(RecordStream::from_bytes(&s.to_bytes()), Some(s));
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        s.saw(t);
        s.saw(t - chrono::Duration::hours(1));
        assert_eq!(s.watermark(), Some(t));
        assert_eq!(RecordStream::from_bytes(&s.to_bytes()), Some(s));
        let book = WindowBook::new(BookConfig::default()).to_bytes();
        assert!(!RecordStream::is_records(&book));
        assert_eq!(RecordStream::from_bytes(&book), None);
        assert!(WindowBook::from_bytes(&s.to_bytes()).is_err());
        assert_eq!(RecordStream::from_bytes(&[MARK, 1, 2]), None);
    }
}
