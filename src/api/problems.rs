//! The problem+json responses operations document, declared once and named by what they mean.

use std::collections::BTreeMap;

use utoipa::openapi::response::Response;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

/// One `application/problem+json` response with the `Problem` schema.
pub(crate) fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// Sets of problem responses for `#[utoipa::path(responses(...))]`: `(status, description)`.
macro_rules! problems {
    ($($(#[$doc:meta])* $name:ident { $($status:literal: $description:literal),+ $(,)? })*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$(($status, $description)),+]
                    .into_iter()
                    .map(|(status, description)| (status.to_string(), problem_response(description).into()))
                    .collect()
            }
        }
    )*};
}

problems! {
    /// An endpoint that reads a body: malformed (400), too large (413), of a type it does not
    /// take (415), or with a record or setting that cannot be used (422).
    BodyProblems { "400": "", "413": "", "415": "", "422": "" }
    /// A query parameter that cannot be read.
    BadParameter { "400": "" }
    /// `Accept` allows none of the media types the endpoint answers.
    NotAcceptable { "406": "Accept allows none of the types this endpoint answers" }
    /// Scoring before any model was fitted.
    NoModelYet { "409": "No model yet" }
    /// The model asked for does not exist yet.
    NoModelFound { "404": "No model yet" }
    /// The resource named in the path does not exist.
    NotFound { "404": "" }
    /// The stored model of a version does not decode.
    CorruptModel { "409": "The file is corrupt" }
    /// A per-detector route naming a detector that does not exist.
    NoSuchDetector { "404": "No detector of this name (`no-such-detector`)" }
    /// Detector settings: not JSON (400, 415), or not usable (422 `invalid-detector`).
    DetectorProblems { "400": "", "413": "", "415": "", "422": "Settings that cannot be used (`invalid-detector`), `field` names the one at fault" }
    /// Feedback on an alert: not JSON (400, 415), or not usable (422).
    FeedbackProblems { "400": "", "413": "", "415": "", "422": "A note over 2000 characters (`invalid-parameter`), or a `suppress` rule that cannot be used (`invalid-suppression`, as `POST /v1/suppressions` answers); `field` names it" }
    /// Evaluating on verdicts: none found, or all of one class.
    VerdictProblems { "422": "No verdict to evaluate on, or verdicts of one class only (`invalid-parameter`, `field`: `labels`), or a budget that cannot be met" }
    /// A suppression rule: not JSON or of the wrong shape (400, `field` names the one at
    /// fault), or not usable (422).
    SuppressionProblems { "400": "", "413": "", "415": "", "422": "A rule that cannot be used (`invalid-suppression`), `field` names the one at fault" }
    /// A fit, which takes an `Idempotency-Key` (listed after [`BodyProblems`], whose 422 it
    /// describes more fully): its key, and training data a model cannot be fitted on.
    FitProblems {
        "409": "The Idempotency-Key's first request still runs (`idempotency-key-in-flight`, with `Retry-After`), or was done but its answer was too large to keep for replay (`idempotency-answer-not-kept`)",
        "422": "A record or setting that cannot be used; training data that cannot separate anything (`insufficient-training-data`: fewer than 8 records, or every feature constant; the active model stays); or an Idempotency-Key sent before with a different request (`idempotency-key-reused`)",
    }
    /// An operation taking an `Idempotency-Key` that also needs a model (listed after
    /// [`BodyProblems`], whose 422 it describes more fully).
    NoModelOrIdempotencyProblems {
        "409": "No model yet (`no-model`); or the Idempotency-Key's first request still runs (`idempotency-key-in-flight`, with `Retry-After`), or was done but its answer was too large to keep for replay (`idempotency-answer-not-kept`)",
        "422": "A record or setting that cannot be used, or an Idempotency-Key sent before with a different request (`idempotency-key-reused`)",
    }
    /// Continuous ingest (which takes an `Idempotency-Key`) that cannot run now: a stream it
    /// cannot take, a key in flight or reused, or too many windows pending without a model.
    IngestProblems {
        "409": "The detector's stream cannot take this call now (`ingest-conflict`: a model not fitted on the detector's windows or records, settings changed under open windows); or the Idempotency-Key's first request still runs (`idempotency-key-in-flight`, with `Retry-After`), or was done but its answer was too large to keep for replay (`idempotency-answer-not-kept`)",
        "422": "A record or setting that cannot be used, or an Idempotency-Key sent before with a different request (`idempotency-key-reused`)",
        "503": "The detector has no active model and already keeps as many windows pending as `NETSENTINEL_MAX_PENDING_WINDOWS` allows (`overloaded`, with `Retry-After`): nothing of this call is kept; or the store or the memory budget is busy",
    }
    /// A chart before any batch was scored, or of an impossible size.
    ChartProblems { "400": "", "409": "Nothing to draw yet" }
}
