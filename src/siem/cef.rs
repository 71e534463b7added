//! ArcSight CEF: one alert as one CEF line, and CEF's escaping (mapping in
//! [`super::formats`]'s module docs).

use std::fmt::Write as _;
use std::net::IpAddr;

use super::formats::{
    BYTES_RECEIVED_KEYS, BYTES_SENT_KEYS, EVENT_NAME, Endpoints, ExportContext, PRODUCT,
    SIGNATURE_ID, byte_count, describe, escaped,
};
use crate::store::alerts::Alert;

/// The alert as one ArcSight CEF line, without a trailing newline (see the module docs).
pub fn to_cef(alert: &Alert, ctx: &ExportContext) -> String {
    let top = alert.records.first();
    let entity = top.map(Endpoints::of).unwrap_or_default();

    let mut ext: Vec<(&str, String)> = vec![
        ("rt", alert.created_at.timestamp_millis().to_string()),
        ("externalId", alert.id.clone()),
        ("cat", "/Anomaly/Network/Traffic".to_string()),
        ("msg", describe(alert)),
        ("reason", alert.reason.clone()),
        ("cnt", alert.summary.n_anomalies.to_string()),
    ];
    let source_v6 = ["c6a2Label", "c6a2", "Source IPv6 Address"];
    cef_address(&mut ext, entity.source_ip, "src", source_v6);
    let destination_v6 = ["c6a3Label", "c6a3", "Destination IPv6 Address"];
    cef_address(&mut ext, entity.destination_ip, "dst", destination_v6);
    if let Some(host) = entity.host {
        ext.push(("shost", host.to_string()));
    }
    if let Some(bytes) = top.and_then(|r| byte_count(r, &BYTES_SENT_KEYS)) {
        ext.push(("out", bytes.to_string()));
    }
    if let Some(bytes) = top.and_then(|r| byte_count(r, &BYTES_RECEIVED_KEYS)) {
        ext.push(("in", bytes.to_string()));
    }
    if let Some(host) = ctx.host() {
        ext.push(("dvchost", host.to_string()));
    }
    let model_version = alert.model_version.to_string();
    labeled(&mut ext, ["cs1Label", "cs1", "modelVersion"], model_version);
    let status = alert.status.as_str().to_string();
    labeled(&mut ext, ["cs2Label", "cs2", "alertStatus"], status);
    if let Some(record) = top.filter(|r| !r.explanation.is_empty()) {
        let features: Vec<&str> = record
            .explanation
            .iter()
            .map(|c| c.feature.as_str())
            .collect();
        let features = features.join(",");
        labeled(&mut ext, ["cs3Label", "cs3", "topFeatures"], features);
    }
    labeled(
        &mut ext,
        ["cs4Label", "cs4", "detector"],
        alert.detector.clone(),
    );
    let n_records = alert.summary.n_records.to_string();
    labeled(&mut ext, ["cn1Label", "cn1", "recordsScored"], n_records);
    let severity = alert.severity.to_string();
    labeled(&mut ext, ["cn2Label", "cn2", "alertSeverity"], severity);
    if alert.summary.anomaly_rate.is_finite() {
        let rate = alert.summary.anomaly_rate.to_string();
        labeled(&mut ext, ["cfp1Label", "cfp1", "anomalyRate"], rate);
    }
    if let Some(score) = top.map(|r| r.score).filter(|s| s.is_finite()) {
        let score = score.to_string();
        labeled(&mut ext, ["cfp2Label", "cfp2", "anomalyScore"], score);
    }
    if let Some(event) = ctx.event_of(alert) {
        ext.push(("act", event.as_str().to_string()));
    }
    if let Some(entity) = &alert.entity {
        labeled(
            &mut ext,
            ["cs5Label", "cs5", "incidentEntity"],
            entity.clone(),
        );
        let count = alert.count.to_string();
        labeled(&mut ext, ["cn3Label", "cn3", "incidentCount"], count);
    }
    if let Some(f) = alert.feedback.last() {
        let verdict = serde_json::to_value(f.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        labeled(&mut ext, ["cs6Label", "cs6", "verdict"], verdict);
    }
    if let Some(at) = alert.acknowledged_at {
        let acknowledged = [
            "deviceCustomDate1Label",
            "deviceCustomDate1",
            "acknowledgedAt",
        ];
        labeled(&mut ext, acknowledged, at.timestamp_millis().to_string());
    }

    let mut line = String::from("CEF:0");
    for field in [
        PRODUCT,
        PRODUCT,
        ctx.product_version,
        SIGNATURE_ID,
        EVENT_NAME,
    ] {
        line.push('|');
        line.push_str(&cef_header(field));
    }
    let _ = write!(line, "|{}|", cef_severity(alert.severity));
    let mut first = true;
    for (key, value) in ext {
        if value.is_empty() {
            continue;
        }
        if !first {
            line.push(' ');
        }
        first = false;
        line.push_str(key);
        line.push('=');
        line.push_str(&cef_value(&value));
    }
    line
}

/// CEF header severity (0–10) for our 0–100 severity: divided by 10, rounded half up.
pub fn cef_severity(severity: u8) -> u8 {
    // u8 arithmetic would overflow for 251..=255; u16 keeps out-of-range input harmless.
    let tenths = (u16::from(severity) + 5) / 10;
    tenths.min(10) as u8
}

/// Longest CEF value (header field or extension value), in characters before escaping; longer
/// ones are cut and end with `...`. Collectors commonly cap a syslog line at a few KiB, and
/// ArcSight's own string fields hold at most 4,000 characters.
pub const CEF_MAX_VALUE_CHARS: usize = 1023;

/// Whether `c` may break a line or a terminal: C0 controls, DEL, C1 controls (NEL among them),
/// and the Unicode line and paragraph separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `s` cut to [`CEF_MAX_VALUE_CHARS`] characters.
fn cef_capped(s: &str) -> impl Iterator<Item = char> + '_ {
    let cut = s.chars().count() > CEF_MAX_VALUE_CHARS;
    let keep = if cut {
        CEF_MAX_VALUE_CHARS - 3
    } else {
        CEF_MAX_VALUE_CHARS
    };
    s.chars()
        .take(keep)
        .chain(if cut { "..." } else { "" }.chars())
}

/// Escapes a CEF header field: `\` and `|` get a backslash; a header cannot hold a line break,
/// so CR, LF and every other control character become spaces. Capped at [`CEF_MAX_VALUE_CHARS`].
pub fn cef_header(s: &str) -> String {
    escaped(
        cef_capped(s),
        s.len().min(CEF_MAX_VALUE_CHARS + 8),
        |c| match c {
            '\\' => Some("\\\\"),
            '|' => Some("\\|"),
            c if breaks_lines(c) => Some(" "),
            _ => None,
        },
    )
}

/// Escapes a CEF extension value: `\` and `=` get a backslash, LF and CR become the two
/// characters `\n` and `\r`, and every other control character (C0, DEL, C1) and U+2028 /
/// U+2029 a space, so a line is always one line and carries nothing a terminal acts on. `|`
/// needs no escape in the extension. Capped at [`CEF_MAX_VALUE_CHARS`].
pub fn cef_value(s: &str) -> String {
    escaped(
        cef_capped(s),
        s.len().min(CEF_MAX_VALUE_CHARS + 8),
        |c| match c {
            '\\' => Some("\\\\"),
            '=' => Some("\\="),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            c if breaks_lines(c) => Some(" "),
            _ => None,
        },
    )
}

/// A CEF custom field and its label: `[label key, key, label]`, then the value.
fn labeled(
    ext: &mut Vec<(&str, String)>,
    [label_key, key, label]: [&'static str; 3],
    value: String,
) {
    ext.push((label_key, label.to_string()));
    ext.push((key, value));
}

/// A CEF address: an IPv4 one under `v4_key`, an IPv6 one in the labeled custom field `v6`.
fn cef_address(
    ext: &mut Vec<(&str, String)>,
    ip: Option<IpAddr>,
    v4_key: &'static str,
    v6: [&'static str; 3],
) {
    match ip {
        Some(IpAddr::V4(ip)) => ext.push((v4_key, ip.to_string())),
        Some(IpAddr::V6(ip)) => labeled(ext, v6, ip.to_string()),
        None => {}
    }
}
