//! `Idempotency-Key` on the operations that change something (score, fit, ingest, flush): the header read and
//! checked, the request hashed, and kept answers replayed. What a key means and how it is kept
//! is `service::idempotency`'s.

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::auth::ClientId;
use crate::error::{ApiError, IDEMPOTENCY_KEY, ProblemCode};
use crate::records::read::BodyChunk;
use crate::service::ServiceError;
use crate::service::idempotency::{
    self as idem, Answer, KeyedRun, Lookup, MAX_KEY_LEN, RequestHash,
};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::idempotency::{KeyScope, StoredAnswer};

/// The header marking a replayed answer.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// A request's `Idempotency-Key` (checked) and who sent it; no key: `None`.
pub struct IdempotencyKey(Option<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(Self(None));
        };
        let bytes = value.as_bytes();
        if !idem::valid_key(bytes) {
            return Err(ApiError::new(
                ProblemCode::InvalidParameter,
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
            )
            .with_field(IDEMPOTENCY_KEY));
        }
        let client = parts.extensions.get::<ClientId>().map(|c| c.0.clone());
        let key = String::from_utf8_lossy(bytes).into_owned();
        Ok(Self(Some((client.unwrap_or_default(), key))))
    }
}

impl IdempotencyKey {
    fn scope(&self, detector: &str, operation: &str) -> Option<(KeyScope, String)> {
        self.0.as_ref().map(|(client, key)| {
            let scope = KeyScope {
                client: client.clone(),
                detector: detector.to_owned(),
                operation: operation.to_owned(),
            };
            (scope, key.clone())
        })
    }
}

/// What determines an operation's answer besides its body: the operation, the query string and
/// the media types of body and answer.
pub fn request_parts(operation: &str, uri: &Uri, headers: &HeaderMap) -> [String; 4] {
    let header = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    [
        operation.to_owned(),
        uri.query().unwrap_or_default().to_owned(),
        header(header::CONTENT_TYPE),
        header(header::ACCEPT),
    ]
}

/// How a keyed request goes on: replay a kept answer, or run (with its key, if it has one).
pub enum Start<B> {
    Replay(Response),
    Run {
        key: Option<KeyedRun>,
        body: B,
        retry: Option<Retry>,
    },
}

/// What a run needs to replay instead, when its key was kept while it ran.
pub struct Retry {
    scope: KeyScope,
    key: String,
    hash: RequestHash,
}

/// Starts a request whose body streams: a new key hashes the body as the operation reads it; a
/// kept one reads the whole body to compare it with the first request's.
pub async fn start_streaming(
    state: &AppState,
    key: &IdempotencyKey,
    (detector, parts): (&str, [String; 4]),
    body: BoxStream<'static, BodyChunk>,
    declared_len: usize,
) -> Result<Start<BoxStream<'static, BodyChunk>>, ApiError> {
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let Some((scope, k)) = key.scope(detector, parts[0]) else {
        return Ok(Start::Run {
            key: None,
            body,
            retry: None,
        });
    };
    match idem::begin(state, scope.clone(), k.clone()).await? {
        Lookup::Run(claim) => {
            let hash = RequestHash::new(&parts);
            let body = hash.hashing(body).boxed();
            let retry = Retry {
                scope,
                key: k,
                hash: hash.clone(),
            };
            Ok(Start::Run {
                key: Some(KeyedRun::new(claim, hash)),
                body,
                retry: Some(retry),
            })
        }
        Lookup::Done(record) => {
            let max = state.settings().max_body_bytes;
            let bytes = crate::records::read_whole(body, declared_len, max).await?;
            let hash = RequestHash::of_whole(&parts, bytes).await?;
            Ok(Start::Replay(replayed(idem::replay(
                *record,
                &hash.finish(),
            )?)))
        }
    }
}

/// Starts a request whose body was read whole.
pub async fn start_whole(
    state: &AppState,
    key: &IdempotencyKey,
    (detector, parts): (&str, [String; 4]),
    body: Bytes,
) -> Result<Start<()>, ApiError> {
    let Some((scope, k)) = key.scope(detector, &parts[0]) else {
        return Ok(Start::Run {
            key: None,
            body: (),
            retry: None,
        });
    };
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let hash = RequestHash::of_whole(&parts, body).await?;
    match idem::begin(state, scope.clone(), k.clone()).await? {
        Lookup::Run(claim) => Ok(Start::Run {
            key: Some(KeyedRun::new(claim, hash.clone())),
            body: (),
            retry: Some(Retry {
                scope,
                key: k,
                hash,
            }),
        }),
        Lookup::Done(record) => Ok(Start::Replay(replayed(idem::replay(
            *record,
            &hash.finish(),
        )?))),
    }
}

/// The outcome of a keyed run; when its key was kept by another request while it ran (and so
/// nothing of this one was), that request's answer.
pub async fn or_replay<T>(
    state: &AppState,
    retry: Option<Retry>,
    outcome: Result<T, ServiceError>,
) -> Result<Result<T, Response>, ApiError> {
    match (outcome, retry) {
        (Ok(t), _) => Ok(Ok(t)),
        (Err(ServiceError::Store(StoreError::KeyTaken(_))), Some(r)) => {
            match idem::lookup(state, &r.scope, &r.key).await? {
                Some(record) => Ok(Err(replayed(idem::replay(record, &r.hash.finish())?))),
                // Kept and pruned in between: the first request's effect stands.
                None => Err(ServiceError::AnswerNotKept { bytes: 0 }.into()),
            }
        }
        (Err(e), _) => Err(e.into()),
    }
}

/// A kept answer, as first sent, marked as replayed.
fn replayed(answer: StoredAnswer) -> Response {
    let mut response = whole(Answer {
        status: answer.status,
        content_type: answer.content_type,
        headers: answer.headers,
        body: answer.body.unwrap_or_default(),
    });
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A whole answer as a response.
pub fn whole(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    let content_type = std::iter::once((
        header::CONTENT_TYPE.as_str().to_owned(),
        answer.content_type,
    ));
    for (name, value) in content_type.chain(answer.headers) {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(n, v);
        }
    }
    response
}
