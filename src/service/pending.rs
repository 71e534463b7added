//! Windows an ingest or flush call closes while its detector has no active model: kept
//! **pending** in the store (a chunk per commit, in the commit of the stream state) until a
//! commit that has a model scores them. This file is their encoding in a chunk.
//!
//! A Zeek chunk keeps the closed windows' values exactly (f64 bits), so scoring them later
//! gives the bits scoring them at closing would have. A records chunk keeps the call's body as
//! it came: which of its values are features depends on the model, so it is read again, as
//! that call would have been read, by the model that scores it.

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::ServiceError;
use crate::records::zeek::WindowRecord;
use crate::records::{BodyFormat, RecordError, RecordErrorKind};

/// What one pending chunk holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Closed Zeek windows, by start then entity.
    Zeek(Vec<WindowRecord>),
    /// A `records` detector's ingest body (CSV, NDJSON or JSON), as it came, and how many
    /// records of it were accepted.
    Records {
        format: BodyFormat,
        body: Vec<u8>,
        records: u64,
    },
}

/// The first byte of a chunk: its format version.
const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
enum Chunk {
    Zeek(Vec<Win>),
    Records {
        format: u8,
        body: Vec<u8>,
        records: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Win {
    start_micros: i64,
    entity: Option<String>,
    /// bytes_sent, bytes_received, connections, active_sessions.
    values: [f64; 4],
}

const RECORD_FORMATS: [BodyFormat; 3] = [BodyFormat::Json, BodyFormat::Ndjson, BodyFormat::Csv];

impl Pending {
    pub fn to_bytes(&self) -> Vec<u8> {
        let chunk = match self {
            Self::Zeek(ws) => Chunk::Zeek(
                ws.iter()
                    .map(|w| Win {
                        start_micros: w.timestamp.timestamp_micros(),
                        entity: w.entity.clone(),
                        values: [
                            w.bytes_sent,
                            w.bytes_received,
                            w.connections,
                            w.active_sessions,
                        ],
                    })
                    .collect(),
            ),
            Self::Records {
                format,
                body,
                records,
            } => Chunk::Records {
                format: RECORD_FORMATS.iter().position(|f| f == format).unwrap_or(0) as u8,
                body: body.clone(),
                records: *records,
            },
        };
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(&chunk).expect("a pending chunk always serialises"));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ServiceError> {
        let bad = |why: String| {
            ServiceError::Records(RecordError::new(
                RecordErrorKind::Internal,
                format!("a stored chunk of pending windows cannot be read ({why}); it is kept"),
            ))
        };
        let rest = match bytes.split_first() {
            Some((&VERSION, rest)) => rest,
            Some((v, _)) => return Err(bad(format!("format version {v}"))),
            None => return Err(bad("empty".into())),
        };
        let chunk: Chunk = postcard::from_bytes(rest).map_err(|e| bad(e.to_string()))?;
        Ok(match chunk {
            Chunk::Zeek(ws) => Self::Zeek(
                ws.into_iter()
                    .map(|w| {
                        let timestamp = DateTime::from_timestamp_micros(w.start_micros)
                            .ok_or_else(|| bad(format!("start {}", w.start_micros)))?;
                        let [bytes_sent, bytes_received, connections, active_sessions] = w.values;
                        Ok(WindowRecord {
                            timestamp,
                            entity: w.entity,
                            bytes_sent,
                            bytes_received,
                            connections,
                            active_sessions,
                        })
                    })
                    .collect::<Result<_, ServiceError>>()?,
            ),
            Chunk::Records {
                format,
                body,
                records,
            } => Self::Records {
                format: *RECORD_FORMATS
                    .get(usize::from(format))
                    .ok_or_else(|| bad(format!("body format {format}")))?,
                body,
                records,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_bit_for_bit() {
        let w = |s: i64, e: Option<&str>, x: f64| WindowRecord {
            timestamp: DateTime::from_timestamp(s, 0).unwrap(),
            entity: e.map(str::to_owned),
            bytes_sent: x,
            bytes_received: x / 3.0,
            connections: 7.0,
            active_sessions: f64::MIN_POSITIVE,
        };
        let zeek = Pending::Zeek(vec![
            w(1_700_000_000, Some("10.0.0.1"), 0.1 + 0.2),
            w(1_700_000_060, None, 1e300),
        ]);
        let back = Pending::from_bytes(&zeek.to_bytes()).unwrap();
        assert_eq!(back, zeek);
        let Pending::Zeek(ws) = back else {
            unreachable!()
        };
        assert_eq!(
            ws[0].bytes_received.to_bits(),
            ((0.1_f64 + 0.2) / 3.0).to_bits()
        );
        for format in RECORD_FORMATS {
            let records = Pending::Records {
                format,
                body: b"timestamp,x\n2024-01-01T00:00:00Z,1\n".to_vec(),
                records: 1,
            };
            assert_eq!(Pending::from_bytes(&records.to_bytes()).unwrap(), records);
        }
        assert!(Pending::from_bytes(&[]).is_err());
        assert!(Pending::from_bytes(&[9, 0]).is_err());
        assert!(Pending::from_bytes(&[VERSION, 7]).is_err());
    }
}
