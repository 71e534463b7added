//! Bodies that are bytes, not JSON (CSV, NDJSON and Zeek records, the chart), and the
//! `Content-Encoding` a body of records may come in.

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
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::PartialSchema;
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        vec![
            ParameterBuilder::new()
                .name("Content-Encoding")
                .parameter_in(ParameterIn::Header)
                .required(utoipa::openapi::Required::False)
                .description(Some(
                    "`gzip` or `zstd` for a compressed body (decoded as it arrives; the body limit \
                     holds for the decoded bytes, so a body that decodes past it is a 413). Any \
                     other coding, or two stacked, is a 415 whose `Accept-Encoding` header names \
                     the ones taken.",
                ))
                .schema(Some(ContentEncodingView::schema()))
                .build(),
        ]
    }
}
