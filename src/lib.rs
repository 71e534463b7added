//! netsentinel: network-traffic anomaly detection as a service.
//!
//! `api` is the HTTP surface; `service` holds what a request means (scoring, evaluating,
//! training, model versions); `records` reads bodies into batches; `detector` is the engine (no
//! HTTP, no storage); `store` owns files and the database; `chart` draws; `webhooks` pushes
//! alerts to SIEMs from the outbox; `startup` wires everything together. ARCHITECTURE.md draws
//! the layers and what may import what.

pub mod api;
pub mod auth;
pub mod chart;
pub mod config;
pub mod demo;
pub mod detector;
pub mod error;
pub mod model_sync;
pub mod monitoring;
pub mod records;
pub mod server;
pub mod service;
pub mod siem;
pub mod startup;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod webhooks;
pub mod work;
