//! netsentinel: network-traffic anomaly detection as a service.
//!
//! `detector` is the engine (no HTTP), `store` owns files and the database, `chart` draws,
//! `api` is the HTTP surface, and `startup` wires them together.

pub mod chart;
pub mod detector;
pub mod store;
