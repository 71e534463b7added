//! netsentinel: network-traffic anomaly detection as a service.
//!
//! `detector` is the engine (no HTTP), `store` owns files and the database, `chart` draws,
//! `api` is the HTTP surface, `scoring` and `registry` hold the service logic between them,
//! `webhooks` pushes alerts to SIEMs from the outbox, and `startup` wires everything together.

pub mod api;
pub mod auth;
pub mod chart;
pub mod config;
pub mod demo;
pub mod detector;
pub mod error;
pub mod model_sync;
pub mod monitoring;
pub mod registry;
pub mod scoring;
pub mod siem;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod zeek;
