//! SIEM integration: alerts rendered in the formats SIEMs ingest without glue code.
//!
//! `formats` holds the pure exporters (ECS, OCSF, ArcSight CEF, Splunk HEC); delivery
//! (`crate::webhooks`) lives elsewhere and calls into it.

mod cef;
pub mod formats;

use formats::ExportContext;

/// The export context of this process: our version and the host name from `/etc/hostname`
/// (read once), for everything that renders alerts (the alerts API, webhook deliveries).
pub fn local_context() -> ExportContext<'static> {
    static HOST: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    });
    ExportContext::new(host.as_deref())
}
