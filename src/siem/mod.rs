//! SIEM integration: alerts rendered in the formats SIEMs ingest without glue code.
//!
//! `formats` holds the pure exporters (ECS, OCSF, ArcSight CEF, Splunk HEC); delivery
//! (webhooks, syslog, HEC posting) belongs elsewhere and calls into it.

pub mod formats;
