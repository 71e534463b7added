//! The work-slot middleware: every request but the probes takes a work slot when it arrives
//! (none free: 503 `overloaded` with `Retry-After`) and runs as its [`Work`], which
//!
//! - is cancelled when the handler's future is dropped before it answered (the client went
//!   away, or the request timeout fired: that layer sits outside this one), so the blocking
//!   work it started stops at its next check;
//! - is held by the answer's body, so a streamed answer keeps its slot and its memory until its
//!   last byte is handed over or the client is gone.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ProblemCode};
use crate::work::{self, Limits, Work};

/// Takes a work slot for the request, runs it as its work, and holds the slot until the end
/// of the answer.
pub async fn work_slot(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let Some(work) = limits.admit() else {
        return ApiError::unavailable(
            ProblemCode::Overloaded,
            "too many requests at once; retry shortly",
            1,
        )
        .into_response();
    };
    let response = CancelOnDrop {
        work: Some(work.clone()),
        handler: Box::pin(work::scope(work.clone(), next.run(req))),
    }
    .await;
    response.map(|body| Body::new(Held { body, _work: work }))
}

/// An answer's body holding its request's work until the body is done or dropped; sizes and
/// the end are the inner body's (a `Content-Length` stays).
struct Held {
    body: Body,
    _work: Work,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The handler's future, which cancels its work when dropped before it finished: the client
/// went away or the request timed out. The work is cancelled before the future (and the body
/// it reads) is dropped, so a reader never takes a cut body for a whole one.
struct CancelOnDrop<F> {
    work: Option<Work>,
    handler: Pin<Box<F>>,
}

impl<F: Future> Future for CancelOnDrop<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let out = ready!(self.handler.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(out)
    }
}

impl<F> Drop for CancelOnDrop<F> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            work.cancel();
        }
    }
}
