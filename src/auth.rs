//! API keys and scopes: who may read, who may score, who may change the model.
//!
//! Keys come from `NETSENTINEL_API_KEYS` as comma-separated `SCOPES:SECRET` entries, where SCOPES
//! is `read`, `score` and/or `admin` joined by `+`, and SECRET is the key itself or
//! `sha256:<64 hex digits>` of it (so the plain key need not sit in the environment).
//! Only SHA-256 digests are kept in memory; a presented key is hashed and compared against every
//! stored digest in constant time. `admin` implies `read` and `score`.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ProblemCode};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Model metadata, alerts, the chart.
    Read,
    /// Score, evaluate, generate samples.
    Score,
    /// Fit, roll back, acknowledge and judge alerts (implies the others).
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "read" => Some(Self::Read),
            "score" => Some(Self::Score),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Score => "score",
            Self::Admin => "admin",
        }
    }
}

#[derive(Clone)]
struct Key {
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl Key {
    fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// The configured keys (digests only). Its `Debug` never shows them.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Key>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.keys.len())
    }
}

impl ApiKeys {
    /// Parses `SCOPES:SECRET[,SCOPES:SECRET...]`. Errors never echo a secret.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let Some((scopes, secret)) = entry.split_once(':') else {
                return Err(format!(
                    "API key entry {} must look like SCOPES:SECRET",
                    n + 1
                ));
            };
            let scopes = scopes
                .split('+')
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        format!(
                            "API key entry {}: unknown scope {:?} (use read, score, admin)",
                            n + 1,
                            s.trim()
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let digest = match secret.strip_prefix("sha256:") {
                Some(hex_digest) => {
                    let bytes = hex::decode(hex_digest.trim()).map_err(|_| {
                        format!(
                            "API key entry {}: sha256: must be followed by 64 hex digits",
                            n + 1
                        )
                    })?;
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                        format!(
                            "API key entry {}: sha256: must be followed by 64 hex digits",
                            n + 1
                        )
                    })?
                }
                None => {
                    if secret.len() < 16 {
                        return Err(format!(
                            "API key entry {}: keys must be at least 16 characters",
                            n + 1
                        ));
                    }
                    Sha256::digest(secret.as_bytes()).into()
                }
            };
            keys.push(Key { digest, scopes });
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The scopes of the key presented, if it is one of ours. Constant time in the key's content.
    fn lookup(&self, presented: &str) -> Option<&Key> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }
}

/// Who sent a request, when API keys are configured: a digest derived from the key's (never the
/// key itself), put in the request's extensions by [`authorize`]. Idempotency keys are scoped
/// by it, so one client never gets another's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(pub String);

impl ClientId {
    fn of(key: &Key) -> Self {
        let mut h = Sha256::new();
        h.update(b"netsentinel client id\0");
        h.update(key.digest);
        Self(hex::encode(&h.finalize()[..16]))
    }
}

/// Authorization policy: the keys, and whether `/metrics` needs one.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub keys: ApiKeys,
    pub metrics_require_key: bool,
}

/// The scope a request needs, or `None` for open endpoints.
pub fn required_scope(method: &Method, path: &str, metrics_require_key: bool) -> Option<Scope> {
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => return None,
        "/metrics" => return metrics_require_key.then_some(Scope::Read),
        _ => {}
    }
    if path == "/docs" || path.starts_with("/docs/") {
        return None;
    }
    // Creating, replacing and deleting (detectors) is for admins.
    if method == Method::PUT || method == Method::DELETE {
        return Some(Scope::Admin);
    }
    // A named detector's routes need what the same v1 route (the detector `default`) needs.
    let v1 = path
        .strip_prefix("/v1/detectors/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, route)| format!("/v1/{route}"));
    let path = v1.as_deref().unwrap_or(path);
    let post = method == Method::POST;
    // Suppression rules and feedback change what raises alerts: the role that acknowledges alerts.
    if post
        && (path == "/v1/model/fit"
            || path.ends_with("/activate")
            || path.ends_with("/ack")
            || path.ends_with("/feedback")
            || path == "/v1/suppressions")
    {
        return Some(Scope::Admin);
    }
    if post
        && matches!(
            path,
            "/v1/score" | "/v1/evaluate" | "/v1/evaluate/verdicts" | "/v1/samples"
        )
    {
        return Some(Scope::Score);
    }
    Some(Scope::Read)
}

/// Middleware: checks `Authorization: Bearer <key>` against the policy. With no keys configured
/// every request passes (the service said so at start).
pub async fn authorize(
    State(policy): State<Arc<Policy>>,
    mut req: Request,
    next: Next,
) -> Response {
    if policy.keys.is_empty() {
        return next.run(req).await;
    }
    let Some(scope) = required_scope(req.method(), req.uri().path(), policy.metrics_require_key)
    else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return unauthorized("this endpoint needs an API key: send Authorization: Bearer <key>");
    };
    match policy.keys.lookup(presented) {
        None => unauthorized("the API key is not valid"),
        Some(key) if !key.allows(scope) => ApiError::new(
            ProblemCode::Forbidden,
            format!(
                "this API key lacks the {:?} scope this endpoint needs",
                scope.name()
            ),
        )
        .into_response(),
        Some(key) => {
            let client = ClientId::of(key);
            req.extensions_mut().insert(client);
            next.run(req).await
        }
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut response = ApiError::new(ProblemCode::Unauthorized, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"netsentinel\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_hashed_keys() {
        let hashed = hex::encode(Sha256::digest(b"another-long-secret-key"));
        let keys = ApiKeys::parse(&format!(
            "read:reader-secret-key-1,score+read:sha256:{hashed}, admin:admin-secret-key-12"
        ))
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert!(
            keys.lookup("reader-secret-key-1")
                .unwrap()
                .allows(Scope::Read)
        );
        assert!(
            !keys
                .lookup("reader-secret-key-1")
                .unwrap()
                .allows(Scope::Score)
        );
        assert!(
            keys.lookup("another-long-secret-key")
                .unwrap()
                .allows(Scope::Score)
        );
        assert!(
            keys.lookup("admin-secret-key-12")
                .unwrap()
                .allows(Scope::Read)
        );
        assert!(keys.lookup("nope").is_none());
        // Each key has its own client id, which is not its digest.
        let id = |k: &str| ClientId::of(keys.lookup(k).unwrap());
        assert_ne!(id("reader-secret-key-1"), id("admin-secret-key-12"));
        assert_eq!(id("reader-secret-key-1"), id("reader-secret-key-1"));
        let digest = hex::encode(Sha256::digest(b"reader-secret-key-1"));
        assert!(!digest.contains(&id("reader-secret-key-1").0));
        assert!(!format!("{keys:?}").contains("reader"));
    }

    #[test]
    fn bad_specs_do_not_echo_secrets() {
        for spec in [
            "nocolon",
            "write:some-long-secret-key",
            "read:short",
            "read:sha256:zz",
        ] {
            let err = ApiKeys::parse(spec).unwrap_err();
            assert!(
                !err.contains("some-long-secret") && !err.contains("short"),
                "{err}"
            );
        }
    }

    #[test]
    fn routes_map_to_scopes() {
        let (get, post) = (Method::GET, Method::POST);
        let (put, delete) = (Method::PUT, Method::DELETE);
        let (read, score, admin) = (Some(Scope::Read), Some(Scope::Score), Some(Scope::Admin));
        // (method, path, whether /metrics needs a key, the scope required)
        let cases = [
            (&get, "/healthz", false, None),
            (&get, "/metrics", false, None),
            (&get, "/metrics", true, read),
            (&get, "/docs/index.html", false, None),
            (&post, "/v1/model/fit", false, admin),
            (&post, "/v1/model/versions/3/activate", false, admin),
            (&post, "/v1/alerts/x/ack", false, admin),
            (&post, "/v1/score", false, score),
            (&get, "/v1/alerts", false, read),
            (&get, "/v1/chart.png", false, read),
            // Detectors: their routes as the v1 ones, writes for admins.
            (&put, "/v1/detectors/zeek", false, admin),
            (&delete, "/v1/detectors/zeek", false, admin),
            (&get, "/v1/detectors", false, read),
            (&get, "/v1/detectors/zeek", false, read),
            (&post, "/v1/detectors/zeek/model/fit", false, admin),
            (
                &post,
                "/v1/detectors/zeek/model/versions/2/activate",
                false,
                admin,
            ),
            (&post, "/v1/detectors/zeek/score", false, score),
            (&post, "/v1/detectors/zeek/evaluate", false, score),
            (&get, "/v1/detectors/zeek/model", false, read),
            (&get, "/v1/detectors/zeek/chart.svg", false, read),
        ];
        for (method, path, metrics_require_key, scope) in cases {
            let required = required_scope(method, path, metrics_require_key);
            assert_eq!(required, scope, "{method} {path}");
        }
    }
}
