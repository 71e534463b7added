//! The OpenAPI shapes of what the API reads and writes, kept out of the domain (`detector/`) and storage (`store/`) types.
//!
//! Two kinds, chosen per type:
//!
//! - **Mirrors** (schema only): where the domain type's own serde form *is* the wire form,
//!   because it is written on the scoring hot path (results, explanations, the batch summary,
//!   the alert a score response carries), streamed in bulk (sample records), read straight from
//!   a request body (generator settings, forest parameters), or shared by contract with another
//!   output (the SIEM `json` export and webhooks send the alert as the API shows it). The
//!   handlers keep serialising the domain type; the mirror, named as the schema
//!   (`#[schema(as = ...)]`), only describes it, and a unit test per mirror proves the domain's
//!   JSON reads into the mirror and writes back unchanged, so the two cannot drift apart.
//! - **Views** (real structs with `From`): cold responses whose JSON is the API's alone — model
//!   metadata (the model file keeps its own), the evaluation report, webhook delivery states.
//!   Handlers convert the domain value at the response, so these may change without touching
//!   the domain or anything stored.

/// `Default` for a mirror read from a body (`#[serde(default)]`): the domain type's defaults,
/// field by field, which the schema shows as each field's `default`.
macro_rules! default_from_domain {
    ($view:ident: $domain:ident { $($field:ident),+ $(,)? }) => {
        impl Default for $view {
            fn default() -> Self {
                let d = $domain::default();
                Self {
                    $($field: d.$field),+
                }
            }
        }
    };
}

pub mod alerts;
pub mod bodies;
pub mod detectors;
pub mod evaluate;
pub mod model;
pub mod samples;
pub mod scoring;
pub mod suppressions;

#[cfg(test)]
pub(crate) mod check {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// `domain` as JSON, read into the mirror `V` and written again: equal JSON means the mirror
    /// names every field the domain type writes, in the same spelling, and no other.
    pub fn mirrors<V: Serialize + DeserializeOwned>(domain: &impl Serialize) {
        let json = serde_json::to_value(domain).unwrap();
        let view: V = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("{} does not read {json}: {e}", std::any::type_name::<V>()));
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            json,
            "{} drifted from the domain type",
            std::any::type_name::<V>()
        );
    }

    /// A view writes byte for byte the JSON the domain type wrote when handlers returned it.
    pub fn same_json(view: &impl Serialize, domain: &impl Serialize) {
        assert_eq!(
            serde_json::to_string(view).unwrap(),
            serde_json::to_string(domain).unwrap()
        );
    }
}
