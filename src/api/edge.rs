//! The edge of every answer: middleware that holds whatever route a request takes.
//!
//! - [`sanitize`]: a client's `x-request-id` is kept only when it is safe to log (at most
//!   [`MAX_REQUEST_ID_LEN`] characters of `A-Z a-z 0-9 . _ : -`), otherwise replaced by a fresh
//!   one; every answer carries `X-Content-Type-Options: nosniff`.
//! - [`problems_everywhere`]: an error the framework answers itself (a path that does not
//!   decode, an extractor's rejection, ...) becomes problem+json like every other error.
//! - [`min_body_rate`]: a request body that arrives slower than the configured rate is cut and
//!   answered 408 (`request-timeout`), so a trickling upload cannot hold a work slot for the
//!   whole request timeout. Only time spent waiting for the client counts, not time the
//!   service spends working on what it already received.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use tokio::time::{Instant, Sleep};

use crate::error::{ApiError, ProblemCode, truncate_chars};

/// Longest client `x-request-id` kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id may be logged and echoed as it is.
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Outermost middleware: drops an unsafe `x-request-id` (the next layer makes a fresh one) and
/// sets `nosniff` on the answer.
pub async fn sanitize(mut req: Request, next: Next) -> Response {
    let bad = req
        .headers()
        .get_all("x-request-id")
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !valid_request_id(v.as_bytes()));
    if bad {
        req.headers_mut().remove("x-request-id");
    }
    let mut response = next.run(req).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Most of a framework error's text kept as the problem's detail.
const MAX_FRAMEWORK_DETAIL: usize = 1024;

/// Turns an error answer that is not problem+json (axum's own rejections and fallbacks) into
/// one, keeping its status and its text as the detail.
pub async fn problems_everywhere(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let mut detail = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string()
    } else {
        text
    };
    truncate_chars(&mut detail, MAX_FRAMEWORK_DETAIL);
    let code = match status.as_u16() {
        401 => ProblemCode::Unauthorized,
        403 => ProblemCode::Forbidden,
        404 => ProblemCode::NotFound,
        405 => ProblemCode::MethodNotAllowed,
        406 => ProblemCode::NotAcceptable,
        408 => ProblemCode::RequestTimeout,
        413 => ProblemCode::BodyTooLarge,
        415 => ProblemCode::UnsupportedMediaType,
        503 => ProblemCode::Overloaded,
        500..=599 => ProblemCode::Internal,
        _ => ProblemCode::BadRequest,
    };
    let mut problem = ApiError::new(code, detail);
    problem.status = status;
    let mut response = problem.into_response();
    if let Some(v) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The slowest a request body may arrive: fewer than `bytes_per_sec × window` bytes in a
/// `window` of waiting for the client cuts it.
#[derive(Debug, Clone, Copy)]
pub struct MinBodyRate {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

/// Middleware: enforces [`MinBodyRate`] on the request body; a body cut for being too slow is
/// answered 408 whatever the handler made of the cut.
pub async fn min_body_rate(
    State(rate): State<Option<MinBodyRate>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(rate) = rate.filter(|r| r.bytes_per_sec > 0 && !r.window.is_zero()) else {
        return next.run(req).await;
    };
    let tripped = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(RateBody {
            inner: body,
            min_bytes: (rate.bytes_per_sec as f64 * rate.window.as_secs_f64()) as u64,
            window: rate.window,
            waited: Duration::ZERO,
            bytes: 0,
            pending_since: None,
            timer: None,
            tripped: tripped.clone(),
        })
    });
    let response = next.run(req).await;
    if !tripped.load(Ordering::Acquire) {
        return response;
    }
    let mut response = ApiError::new(
        ProblemCode::RequestTimeout,
        format!(
            "the request body arrived slower than {} bytes/s over {:?} and was cut; send it faster",
            rate.bytes_per_sec, rate.window
        ),
    )
    .into_response();
    // The rest of the body is not read: the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The body the handler reads: the client's, counting bytes per window of waiting.
struct RateBody {
    inner: Body,
    min_bytes: u64,
    window: Duration,
    /// Time spent waiting for the client in this window.
    waited: Duration,
    /// Bytes received in this window.
    bytes: u64,
    /// When the current wait for the client began.
    pending_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    tripped: Arc<AtomicBool>,
}

/// The error a cut body ends with (the middleware answers 408 for it).
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
struct TooSlow;

impl RateBody {
    /// Ends the current wait; at the end of a window, checks the bytes it brought.
    fn account_wait(&mut self, now: Instant) -> Result<(), TooSlow> {
        if let Some(since) = self.pending_since.take() {
            self.waited += now - since;
        }
        if self.waited >= self.window {
            if self.bytes < self.min_bytes {
                self.tripped.store(true, Ordering::Release);
                return Err(TooSlow);
            }
            self.waited = Duration::ZERO;
            self.bytes = 0;
        }
        Ok(())
    }
}

impl http_body::Body for RateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.tripped.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(axum::Error::new(TooSlow))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(Ok(f)) = &frame {
                    if let Some(data) = f.data_ref() {
                        this.bytes += data.len() as u64;
                    }
                }
                if let Err(e) = this.account_wait(Instant::now()) {
                    return Poll::Ready(Some(Err(axum::Error::new(e))));
                }
                this.timer = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.pending_since.get_or_insert(now);
                let deadline = since + this.window.saturating_sub(this.waited);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.timer = None;
                    if let Err(e) = this.account_wait(Instant::now()) {
                        return Poll::Ready(Some(Err(axum::Error::new(e))));
                    }
                    // The window was met: keep waiting in a new one.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_that_are_safe_to_log() {
        assert!(valid_request_id(b"0192e2a4-7c1d-7c3e-9d2a-1f2e3d4c5b6a"));
        assert!(valid_request_id(b"trace:abc_1.2-3"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"x\" level=error msg=\"forged"));
        assert!(!valid_request_id(b"line\nbreak"));
        assert!(!valid_request_id("é".as_bytes()));
        assert!(valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
    }

    #[test]
    fn truncation_marks_the_cut_on_a_character_boundary() {
        let mut s = "ééééé".to_string();
        truncate_chars(&mut s, 3);
        assert_eq!(s, "ééé…");
        let mut short = "abc".to_string();
        truncate_chars(&mut short, 3);
        assert_eq!(short, "abc");
    }
}
