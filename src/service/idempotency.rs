//! Idempotency keys, without HTTP: look a key up, claim it while its request runs, and build
//! the record that the request's effect commits with.
//!
//! The steps, for any operation (score and fit now, ingest later):
//!
//! 1. [`begin`]: a key whose request is still running in this process is
//!    [`ServiceError::KeyInFlight`]; a kept key is [`Lookup::Done`] with its record (the caller
//!    hashes the request and calls [`replay`]); otherwise the key is claimed ([`Lookup::Run`])
//!    until the claim is dropped.
//! 2. The operation runs with a [`KeyedRun`] (the claim and the request hash) and, where it has
//!    an effect in the alert database, commits [`KeyedRun::record`] in that same transaction
//!    (`AlertStore::insert_keyed`), or on its own otherwise ([`KeyedRun::keep`]).
//! 3. A commit that finds the key kept already (another replica, or a request dropped while its
//!    commit ran) fails with `StoreError::KeyTaken` and rolls back its effect: the caller looks
//!    the key up again and replays.
//!
//! Only successful answers are kept: a request that failed changed nothing, so its retry runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::{ServiceError, blocking};
use crate::records::read::BodyChunk;
use crate::state::AppState;
use crate::store::idempotency::{IdempotencyStore, KeyRecord, KeyScope, StoredAnswer};

/// Largest answer kept for replay; a larger one is kept as its length and SHA-256 only.
pub const MAX_KEPT_ANSWER: usize = 1024 * 1024;
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// Seconds a client is told to wait before retrying a key whose request is still running.
pub const IN_FLIGHT_RETRY_SECS: u64 = 1;

/// Whether `key` is acceptable: 1..=255 bytes of printable ASCII (space to `~`).
pub fn valid_key(key: &[u8]) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// The keys whose requests run in this process now.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashSet<(KeyScope, String)>>);

/// A key claimed for a request that runs now; dropping it releases the key.
pub struct Claim {
    state: AppState,
    scope: KeyScope,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut keys = self
            .state
            .in_flight()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        keys.remove(&(
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
        ));
    }
}

/// What [`begin`] found.
pub enum Lookup {
    /// The key is new: run the request, holding the claim.
    Run(Claim),
    /// The key is kept: its first request's record.
    Done(Box<KeyRecord>),
}

/// Claims `key` in `scope`, or finds its record. A key whose request still runs here is
/// [`ServiceError::KeyInFlight`].
pub async fn begin(state: &AppState, scope: KeyScope, key: String) -> Result<Lookup, ServiceError> {
    {
        let mut keys = state
            .in_flight()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !keys.insert((scope.clone(), key.clone())) {
            return Err(ServiceError::KeyInFlight);
        }
    }
    let claim = Claim {
        state: state.clone(),
        scope,
        key,
    };
    let found = lookup(state, &claim.scope, &claim.key).await?;
    Ok(match found {
        Some(record) => Lookup::Done(Box::new(record)),
        None => Lookup::Run(claim),
    })
}

/// The record of `key` in `scope`, if kept.
pub async fn lookup(
    state: &AppState,
    scope: &KeyScope,
    key: &str,
) -> Result<Option<KeyRecord>, ServiceError> {
    let store = state.stores().idempotency.clone();
    let (scope, key) = (scope.clone(), key.to_owned());
    blocking(move || Ok(store.key_record(&scope, &key)?)).await
}

/// What a repeat gets: the first answer, when the repeat is the same request.
pub fn replay(record: KeyRecord, request_hash: &str) -> Result<StoredAnswer, ServiceError> {
    if record.request_hash != request_hash {
        return Err(ServiceError::KeyReused);
    }
    match record.answer.body {
        Some(_) => Ok(record.answer),
        None => Err(ServiceError::AnswerNotKept {
            bytes: record.answer.body_len,
        }),
    }
}

/// A whole answer, as an operation renders it for its key's record and its client alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How an operation's answer reads from its result `T`.
pub type AnswerOf<T> = Box<dyn FnOnce(&T) -> Answer + Send>;

/// A request running under its claimed key.
pub struct KeyedRun {
    claim: Claim,
    hash: RequestHash,
}

impl KeyedRun {
    pub fn new(claim: Claim, hash: RequestHash) -> Self {
        Self { claim, hash }
    }

    /// The record of this request with its answer (`body` `None`: streamed, not kept).
    pub fn record(
        &self,
        status: u16,
        content_type: &str,
        headers: Vec<(String, String)>,
        body: Option<&[u8]>,
    ) -> KeyRecord {
        let parts = (
            self.claim.scope.clone(),
            self.claim.key.clone(),
            self.hash.finish(),
        );
        key_record(parts, status, content_type, headers, body)
    }

    /// The record of this request, to write once its result is known (inside the commit that
    /// stores it): `answer` reads the answer from the result.
    pub fn record_later<T: 'static>(
        &self,
        answer: AnswerOf<T>,
    ) -> Box<dyn FnOnce(&T) -> KeyRecord + Send> {
        let parts = (
            self.claim.scope.clone(),
            self.claim.key.clone(),
            self.hash.finish(),
        );
        Box::new(move |result| {
            let a = answer(result);
            key_record(parts, a.status, &a.content_type, a.headers, Some(&a.body))
        })
    }

    /// Keeps `record` on its own (the request had no effect in the alert database).
    pub async fn keep(&self, record: KeyRecord) -> Result<(), ServiceError> {
        let store: Arc<dyn IdempotencyStore> = self.claim.state.stores().idempotency.clone();
        blocking(move || Ok(store.record_key(&record)?)).await
    }
}

/// A key's record: its scope, key and request hash, and the answer.
fn key_record(
    (scope, key, request_hash): (KeyScope, String, String),
    status: u16,
    content_type: &str,
    headers: Vec<(String, String)>,
    body: Option<&[u8]>,
) -> KeyRecord {
    let (kept, body_len, body_sha256) = match body {
        Some(b) => (
            (b.len() <= MAX_KEPT_ANSWER).then(|| b.to_vec()),
            b.len() as u64,
            hex::encode(Sha256::digest(b)),
        ),
        None => (None, 0, String::new()),
    };
    KeyRecord {
        scope,
        key,
        request_hash,
        created_at: Utc::now(),
        answer: StoredAnswer {
            status,
            content_type: content_type.to_owned(),
            headers,
            body: kept,
            body_len,
            body_sha256,
        },
    }
}

/// SHA-256 over what determines an answer: the operation's own inputs (query string, media
/// types), each length-prefixed, then the decoded body, fed as it arrives.
#[derive(Clone)]
pub struct RequestHash(Arc<Mutex<Sha256>>);

impl RequestHash {
    pub fn new(parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        Self(Arc::new(Mutex::new(h)))
    }

    pub fn update(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(bytes);
    }

    /// The hex digest of what was fed so far.
    pub fn finish(&self) -> String {
        hex::encode(
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .finalize(),
        )
    }

    /// `body`, feeding each chunk to the hash as it passes.
    pub fn hashing<S>(&self, body: S) -> impl Stream<Item = BodyChunk> + Send + Unpin + use<S>
    where
        S: Stream<Item = BodyChunk> + Send + Unpin,
    {
        let hash = self.clone();
        body.map(move |chunk| {
            if let Ok(bytes) = &chunk {
                hash.update(bytes);
            }
            chunk
        })
    }

    /// The hash over `parts` and a whole body, fed off the async runtime.
    pub async fn of_whole(parts: &[&str], body: Bytes) -> Result<Self, ServiceError> {
        let hash = Self::new(parts);
        let fed = hash.clone();
        blocking(move || {
            fed.update(&body);
            Ok(())
        })
        .await?;
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fit's key is checked against the hash of its body as it streams; keys kept when the
    /// body was hashed whole must still match: the same digest, pinned.
    #[tokio::test]
    async fn a_body_hashed_as_it_streams_has_the_digest_of_the_whole_body() {
        let parts = ["fit", "seed=7", "text/csv", ""];
        let body = b"bytes_sent,connections\n1,2\n3,4\n";
        let whole = RequestHash::new(&parts);
        whole.update(body);
        let streamed = RequestHash::new(&parts);
        let chunks: Vec<BodyChunk> = body
            .chunks(5)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let passed: Vec<BodyChunk> = streamed
            .hashing(futures_util::stream::iter(chunks))
            .collect()
            .await;
        assert_eq!(passed.len(), body.chunks(5).count());
        assert_eq!(streamed.finish(), whole.finish());
        assert_eq!(
            whole.finish(),
            "dd96f5d859c921515ae9e2bcf1ca837407ff3de7bc1767d18df5a1a5369dd1fc"
        );
    }

    #[test]
    fn keys_are_printable_ascii_of_1_to_255_bytes() {
        let long = [b'x'; 255];
        let too_long = [b'x'; 256];
        let cases: [(&[u8], bool); 8] = [
            (b"a", true),
            (b"retry 7 ~ of batch/2026-11-30", true),
            (&long, true),
            (b"", false),
            (&too_long, false),
            (b"tab\there", false),
            ("caf\u{e9}".as_bytes(), false),
            (b"del\x7f", false),
        ];
        for (key, ok) in cases {
            assert_eq!(valid_key(key), ok, "{:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn the_hash_separates_its_parts_and_covers_the_body() {
        let of = |parts: &[&str], body: &[u8]| {
            let h = RequestHash::new(parts);
            h.update(body);
            h.finish()
        };
        let base = of(&["score", "a=1", "text/csv"], b"x,y\n1,2\n");
        assert_eq!(base, of(&["score", "a=1", "text/csv"], b"x,y\n1,2\n"));
        assert_ne!(base, of(&["score", "a=1", "text/csv"], b"x,y\n1,3\n"));
        assert_ne!(base, of(&["score", "a=", "1text/csv"], b"x,y\n1,2\n"));
        assert_ne!(base, of(&["fit", "a=1", "text/csv"], b"x,y\n1,2\n"));
        // Fed in pieces, the same digest.
        let h = RequestHash::new(&["score", "a=1", "text/csv"]);
        h.update(b"x,y\n");
        h.update(b"1,2\n");
        assert_eq!(h.finish(), base);
    }
}
