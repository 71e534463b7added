//! Bodies that are bytes, not JSON (CSV, NDJSON and Zeek records, the chart), and the
//! `Content-Encoding` a body of records may come in.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

/// `type: string, format: binary`: what generated clients send and take as bytes (a file), never
/// parse as JSON.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// The `Content-Encoding` of a body of records: none (`identity`), `gzip` or `zstd`. The body
/// limit holds for the decoded bytes; any other coding is answered 415 with `Accept-Encoding`.
#[derive(utoipa::ToSchema)]
#[schema(as = ContentEncoding, rename_all = "lowercase")]
#[allow(dead_code)] // only describes the header; `records::ContentEncoding` reads it
pub enum ContentEncodingView {
    Identity,
    Gzip,
    Zstd,
}

/// The header parameter, for `#[utoipa::path(params(...))]` of every operation reading records.
pub struct ContentEncodingHeader;

impl utoipa::IntoParams for ContentEncodingHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        use utoipa::PartialSchema;
        vec![optional_header(
            "Content-Encoding",
            "`gzip` or `zstd` for a compressed body (decoded as it arrives; the body limit holds \
             for the decoded bytes, so a body that decodes past it is a 413). Any other coding, or \
             two stacked, is a 415 whose `Accept-Encoding` header names the ones taken.",
            ContentEncodingView::schema(),
        )]
    }
}

/// An optional request header, for hand-written `IntoParams`.
fn optional_header(
    name: &str,
    description: &str,
    schema: impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The `Idempotency-Key` header parameter of the operations that take one (score, fit).
pub struct IdempotencyKeyHeader;

impl utoipa::IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![optional_header(
            crate::error::IDEMPOTENCY_KEY,
            "Makes a retry safe: a repeat with the same key (same detector, operation and API \
             key) gets the first answer again (same status, content type and body, plus \
             `Idempotency-Replayed: true`) and changes nothing. The same key with another \
             request (body after decoding, query string, `Content-Type` or `Accept`) is 422 \
             `idempotency-key-reused`; while the first request runs, 409 \
             `idempotency-key-in-flight` with `Retry-After`; an answer over 1 MiB is not kept, \
             and its repeat is 409 `idempotency-answer-not-kept`. Printable ASCII, 1 to 255 \
             characters (else 400). Keys are kept `--idempotency-ttl-hours` (default 24).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(crate::service::idempotency::MAX_KEY_LEN))
                .pattern(Some("^[ -~]{1,255}$")),
        )]
    }
}
