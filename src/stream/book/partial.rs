//! A [`WindowBook`]'s partial state: each open window as a self-contained
//! [`PartialWindow`] (to merge another replica's, or to keep), and the whole book as a
//! [`BookSnapshot`] (its bytes survive a restart).

use std::collections::HashMap;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::{BookConfig, ConfigText, Dedupe, MergeError, NO_ENTITY, Open, Tally, WindowBook};
use crate::records::zeek::WindowRecord;
use crate::records::zeek::line::TsvHeader;

impl WindowBook {
    /// The open windows as self-contained partial states, sorted by start, then entity.
    pub fn partials(&self) -> Vec<PartialWindow> {
        let mut out: Vec<PartialWindow> = self
            .open
            .iter()
            .flat_map(|(&start, by_entity)| {
                by_entity
                    .iter()
                    .map(move |(&entity, w)| self.partial(start, entity, w))
            })
            .collect();
        out.sort_by(|a, b| (a.start, &a.entity).cmp(&(b.start, &b.entity)));
        out
    }

    fn partial(&self, start: i64, entity: u32, w: &Open) -> PartialWindow {
        // Hosts by name, so equal states serialise to equal bytes whatever ids this book gave.
        let mut ids: Vec<u32> = w.sessions.iter().flat_map(|&(o, r, _)| [o, r]).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.sort_unstable_by(|&a, &b| self.hosts.name(a).cmp(self.hosts.name(b)));
        let local: HashMap<u32, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        let mut sessions: Vec<(u32, u32, u16)> = w
            .sessions
            .iter()
            .map(|&(o, r, p)| (local[&o], local[&r], p))
            .collect();
        sessions.sort_unstable();
        let mut uids: Vec<(String, u64, u64)> = w
            .uids
            .iter()
            .map(|(u, &(o, r))| (u.to_string(), o, r))
            .collect();
        uids.sort_unstable();
        PartialWindow {
            start,
            entity: (entity != NO_ENTITY).then(|| self.hosts.name(entity).to_string()),
            sent: w.sent,
            received: w.received,
            connections: w.connections,
            dedupe: self.config.dedupe,
            hosts: ids
                .iter()
                .map(|&id| self.hosts.name(id).to_string())
                .collect(),
            sessions,
            uids,
        }
    }

    /// Merges another replica's partial state of a window into this book. A window this book
    /// has already closed cannot take it ([`MergeError::Closed`]).
    pub fn absorb(&mut self, p: &PartialWindow) -> Result<(), MergeError> {
        if p.dedupe != self.config.dedupe {
            return Err(MergeError::DedupeMismatch);
        }
        if self.closed(p.start) {
            return Err(MergeError::Closed(p.start));
        }
        p.check()?;
        let entity = match &p.entity {
            Some(e) => self.hosts.id(e),
            None => NO_ENTITY,
        };
        let ids: Vec<u32> = p.hosts.iter().map(|h| self.hosts.id(h)).collect();
        let known = self
            .open
            .get(&p.start)
            .is_some_and(|m| m.contains_key(&entity));
        let w = self
            .open
            .entry(p.start)
            .or_default()
            .entry(entity)
            .or_default();
        let before = known.then(|| Tally::of(w));
        match p.dedupe {
            Dedupe::None => {
                w.sent += p.sent;
                w.received += p.received;
                w.connections += p.connections;
            }
            Dedupe::Uid => {
                for (uid, o, r) in &p.uids {
                    if !w.uids.contains_key(uid.as_str()) {
                        w.uids.insert(uid.as_str().into(), (*o, *r));
                        w.sent += u128::from(*o);
                        w.received += u128::from(*r);
                        w.connections += 1;
                    }
                }
            }
        }
        w.sessions.extend(
            p.sessions
                .iter()
                .map(|&(o, r, port)| (ids[o as usize], ids[r as usize], port)),
        );
        if let Some(before) = before {
            self.tally.remove(before);
        }
        self.tally.add(Tally::of(w));
        // The merged window's latest event may be later than this book has seen; the watermark
        // moves only on ingest, so merging never closes a window by itself.
        Ok(())
    }

    /// The whole book, to keep across a restart.
    pub fn snapshot(&self) -> BookSnapshot {
        BookSnapshot {
            version: BookSnapshot::VERSION,
            config: (&self.config).into(),
            max_event: self.max_event,
            watermark: self.watermark,
            tsv: self.tsv.clone(),
            windows: self.partials(),
        }
    }

    /// A book as it was when `snapshot` was taken.
    pub fn restore(snapshot: BookSnapshot) -> Result<Self, MergeError> {
        if snapshot.version != BookSnapshot::VERSION {
            return Err(MergeError::Snapshot(format!(
                "version {} (this build reads {})",
                snapshot.version,
                BookSnapshot::VERSION
            )));
        }
        let config = BookConfig::try_from(snapshot.config)
            .map_err(|e| MergeError::Snapshot(e.to_string()))?;
        let mut book = Self::new(config);
        book.tsv = snapshot.tsv;
        for p in &snapshot.windows {
            book.absorb(p)?;
        }
        book.max_event = snapshot.max_event;
        book.watermark = snapshot.watermark;
        Ok(book)
    }

    /// The snapshot as bytes: a one-byte format version, then postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![BookSnapshot::VERSION];
        out.extend(postcard::to_stdvec(&self.snapshot()).expect("a snapshot always serialises"));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MergeError> {
        match bytes.split_first() {
            Some((&BookSnapshot::VERSION, rest)) => {
                let snapshot: BookSnapshot =
                    postcard::from_bytes(rest).map_err(|e| MergeError::Snapshot(e.to_string()))?;
                Self::restore(snapshot)
            }
            Some((v, _)) => Err(MergeError::Snapshot(format!("format version {v}"))),
            None => Err(MergeError::Snapshot("empty".into())),
        }
    }
}

/// A whole [`WindowBook`] as kept: its config, clock and TSV header, and its open windows.
#[derive(Serialize, Deserialize)]
pub struct BookSnapshot {
    version: u8,
    config: ConfigText,
    max_event: Option<i64>,
    watermark: Option<i64>,
    tsv: TsvHeader,
    windows: Vec<PartialWindow>,
}

impl BookSnapshot {
    pub const VERSION: u8 = 1;
}

/// The state of one open window, self-contained (hosts by name), to keep or to send to another
/// replica. Sums are exact integers; sessions and `uid`s are sorted, so equal states serialise
/// to equal bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialWindow {
    /// Window start, Unix seconds.
    pub start: i64,
    pub entity: Option<String>,
    pub sent: u128,
    pub received: u128,
    pub connections: u64,
    pub dedupe: Dedupe,
    /// The hosts `sessions` name, by index.
    hosts: Vec<String>,
    /// Distinct (orig_h, resp_h, resp_p), hosts as indexes into `hosts`.
    sessions: Vec<(u32, u32, u16)>,
    /// (uid, orig_bytes, resp_bytes) of every connection counted, with [`Dedupe::Uid`].
    uids: Vec<(String, u64, u64)>,
}

impl PartialWindow {
    fn check(&self) -> Result<(), MergeError> {
        let n = self.hosts.len();
        if self
            .sessions
            .iter()
            .any(|&(o, r, _)| o as usize >= n || r as usize >= n)
        {
            return Err(MergeError::BadHostIndex);
        }
        Ok(())
    }

    /// Combines another replica's state of the same window into this one, exactly: sums add,
    /// sessions unite, and with dedupe a `uid` both hold counts once.
    pub fn merge(&mut self, other: &PartialWindow) -> Result<(), MergeError> {
        if (self.start, &self.entity) != (other.start, &other.entity) {
            return Err(MergeError::DifferentWindows(format!(
                "{} {:?} and {} {:?}",
                self.start, self.entity, other.start, other.entity
            )));
        }
        if self.dedupe != other.dedupe {
            return Err(MergeError::DedupeMismatch);
        }
        self.check()?;
        other.check()?;
        let mut book = WindowBook::new(BookConfig {
            dedupe: self.dedupe,
            ..BookConfig::default()
        });
        book.absorb(self)?;
        book.absorb(other)?;
        let (&start, by_entity) = book.open.iter().next().expect("absorbed a window");
        let (&entity, w) = by_entity.iter().next().expect("absorbed a window");
        let mut merged = book.partial(start, entity, w);
        merged.entity.clone_from(&self.entity);
        *self = merged;
        Ok(())
    }

    /// The window record this state closes to.
    pub fn record(&self) -> Option<WindowRecord> {
        Some(WindowRecord {
            timestamp: DateTime::from_timestamp(self.start, 0)?,
            entity: self.entity.clone(),
            bytes_sent: self.sent as f64,
            bytes_received: self.received as f64,
            connections: self.connections as f64,
            active_sessions: self.sessions.len() as f64,
        })
    }
}
