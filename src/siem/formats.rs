//! Alert exporters: one [`Alert`] as Elastic Common Schema, OCSF, ArcSight CEF or Splunk HEC.
//!
//! Everything here is a pure function of the alert and an [`ExportContext`]: no I/O, no clock,
//! no panics on alert contents. Every format carries the alert id, so a SIEM that receives the
//! same alert twice (a retried delivery, a re-export) can de-duplicate on it.
//!
//! # Shared conventions
//!
//! * **Top record**: `alert.records[0]`, the most anomalous record (the store keeps records most
//!   anomalous first). Entity, byte counts and the message come from it; every record is still
//!   exported in full where the format has room (`netsentinel.records`, OCSF `evidences`).
//! * **Entity**: the first of the echoed fields `src_ip`, `source_ip`, `id.orig_h`, `entity`,
//!   `host` whose value parses as an IP address is the source IP; the first of them that is
//!   non-empty and *not* an IP is the host name. So `src_ip=10.0.0.5, host=web-01` yields both.
//!   `dst_ip`, `dest_ip`, `destination_ip` or `id.resp_h` (an IP) is the destination IP.
//! * **Bytes**: `bytes_sent` (or Zeek's `orig_bytes`) is what the source sent, `bytes_received`
//!   (or `resp_bytes`) what it received. Only finite, non-negative values are exported, rounded
//!   to whole bytes.
//! * **Non-finite numbers** become JSON `null` (and are left out of CEF), never invalid JSON.
//!
//! # Formats and mappings
//!
//! **ECS 8.11** ([`to_ecs`]): nested objects, `event.kind: alert`, `event.category: [network]`,
//! `event.type: [info]`. Of the types ECS expects with the `network` category (access, allowed,
//! connection, denied, end, info, protocol, start) only `info` fits: the alert neither opens nor
//! closes a connection nor reports a policy decision; it reports a finding about traffic.
//! `event.severity` is our 0–100 severity; `event.risk_score` and `event.risk_score_norm` (both
//! floats, the latter defined on 0–100) carry it too. The entity IP goes to `source.ip`, a
//! non-IP host name to `host.name`; bytes to `source.bytes`, `destination.bytes` and, only when
//! both directions are known, their sum to `network.bytes` (a one-sided sum would understate it).
//! `observer.type` is `ids` (one of ECS's own examples). The rule is `rule.id`
//! [`SIGNATURE_ID`] with `rule.version` = model version and `rule.ruleset` = the detector that
//! raised it (its named settings and models: `default` for the v1 paths). Everything without an ECS home (model
//! version, status, acknowledgement, batch summary, all records with explanations) is under
//! `netsentinel.*`.
//!
//! **OCSF 1.3 Detection Finding** ([`to_ocsf`]): class 2004, category 2 (Findings), activity 1
//! (Create), `type_uid` 200401. An acknowledged alert is still exported as Create: the export is a
//! snapshot of the finding, its lifecycle is in `status_id`. `time` and `*_time` are epoch
//! milliseconds. Severity → `severity_id`, along the bands of `detector::severity`:
//!
//! | severity | `severity_id` | why |
//! |---|---|---|
//! | 0–24 | 1 Informational | below the Isolation Forest "no distinct anomaly" line (score 0.5) |
//! | 25–49 | 2 Low | anomalous, "the user decides if action is needed" |
//! | 50–74 | 3 Medium | unusual (score ≥ 0.6) |
//! | 75–89 | 4 High | strongly anomalous (score ≥ 0.7) |
//! | 90–100 | 5 Critical | isolated almost at once |
//!
//! 6 Fatal is never used: OCSF defines it as "an error occurred but it is too late to take
//! remedial action", which a detector cannot know. 0 Unknown is never used: severity is always
//! known. Status: `open` → 1 New, `acknowledged` → 2 In Progress ("under review").
//! `finding_info.analytic.type_id` is 4, "Learning (ML/DL)"; `finding_info.analytic.category`
//! is the detector that raised it. `risk_score` (an OCSF integer) is
//! the severity; `confidence_score` (integer) is the top record's anomaly score × 100, rounded.
//! Each record is one `evidences` entry: `src_endpoint`/`dst_endpoint` when known, and the whole
//! record (values, fields, explanation) in `data`. The rest is in `unmapped`.
//!
//! **ArcSight CEF** ([`to_cef`]): `CEF:0|netsentinel|netsentinel|<version>|netsentinel-batch-anomaly|
//! Network traffic anomaly|<0–10>|<extension>`. The header severity is our severity / 10 rounded
//! half up, `(severity + 5) / 10`: 0–4 → 0, 5–14 → 1, …, 85–94 → 9, 95–100 → 10, so ArcSight's
//! reading (0–3 Low, 4–6 Medium, 7–8 High, 9–10 Very-High) matches ours. Header fields escape
//! `\` and `|`, and newlines become spaces (a header cannot carry one); extension values escape
//! `\`, `=`, and newline / carriage return as the two-character `\n` / `\r`; every other control
//! character (C0, DEL, C1) and U+2028 / U+2029 becomes a space, so a line is always one line and
//! carries nothing a terminal acts on; each value is capped at [`CEF_MAX_VALUE_CHARS`] characters.
//! Extension keys (all from the CEF key dictionary): `rt` (epoch ms), `externalId` (alert id),
//! `cat`, `msg`, `reason`, `cnt` (anomalous records), `src` / `dst` (IPv4; IPv6 goes to
//! `c6a2` / `c6a3` labelled "Source IPv6 Address" / "Destination IPv6 Address", as the spec
//! advises, because `src`/`dst` are IPv4 fields), `shost`, `out` (bytes sent) / `in` (bytes
//! received), `dvchost` (our host), and labelled custom fields: `cs1` modelVersion, `cs2`
//! alertStatus, `cs3` topFeatures, `cs4` detector, `cn1` recordsScored, `cn2` alertSeverity (0–100),
//! `cfp1` anomalyRate, `cfp2` anomalyScore, `deviceCustomDate1` acknowledgedAt. Rates and scores
//! are floats, so they use `cfp*` (floating point) rather than `cn*` (integers).
//!
//! **Splunk HEC** ([`to_splunk_hec`]): an event for `/services/collector/event`: `time` in epoch
//! seconds with millisecond fraction, `host` (the context's, else `netsentinel`), `source`
//! `netsentinel`, `sourcetype` `netsentinel:alert`, `event` = our own alert JSON, and indexed
//! `fields` `alert_id`, `severity`, `model_version`, `status`, `detector` as strings (HEC indexed-field values
//! are strings). `index` is left out so the token's default index applies. HEC accepts several
//! events in one request body, so [`render_within`]'s NDJSON posts as is.
//!
//! **Incident events.** A webhook delivery names the event it delivers ([`ExportContext::event`]);
//! an export names none, and a resolved incident then reads as `resolved`. ECS: `event.type`
//! `[start]` (opened), `[change]` (escalated, renotified), `[end]` (resolved), `[info]` for an
//! export of an open alert as before, and `event.action` the event. OCSF: `activity_id` 1 Create
//! (opened, or no event), 2 Update, 3 Close, `type_uid` 200400 + activity, status `resolved` →
//! `status_id` 4 Resolved, `count` and `finding_info.first_seen_time`/`last_seen_time` for an
//! incident. CEF: `act` (deviceAction) the event, `cs5` incidentEntity, `cn3` incidentCount, `cs6`
//! the latest verdict. HEC: `fields.event_type`, `fields.entity`, `fields.verdict`. JSON: an
//! `event` key. Incident fields and verdicts go under `netsentinel.*` (ECS) and `unmapped` (OCSF),
//! as does `omitted` (entities left out past `--max-alert-entities`; the JSON and HEC `event`
//! carry it as the API does, and every format's message says it, in the alert's reason).
//!
//! # Specifications checked
//!
//! * ECS: elastic.co "ECS categorization field: event.type" (allowed values), "Observer fields"
//!   (`observer.type` examples: firewall, ids, ips, proxy…), `schemas/event.yml` in elastic/ecs
//!   (`event.risk_score`, `risk_score_norm` float, `event.severity` long, `event.created`).
//! * OCSF: ocsf/ocsf-schema `events/findings/finding.json` and `detection_finding.json`
//!   (activity_id, status_id enum New/In Progress/…, evidences, finding_info required),
//!   `objects/finding_info.json`, `objects/analytic.json` (type_id 4 = Learning (ML/DL)),
//!   `objects/evidences.json` (at least one of src_endpoint, data, …), the severity_id enum
//!   (0 Unknown … 5 Critical, 6 Fatal, 99 Other), `confidence_score` / `risk_score` integer_t.
//! * CEF: the Micro Focus "Implementing ArcSight CEF" key dictionary as reproduced in vendor
//!   references (Elastic's decode_cef field list, Trend Micro / Forcepoint / Trellix CEF tables):
//!   key names and types of `rt`, `externalId`, `src`, `shost`, `cnt`, `in`, `out`, `cs*`, `cn*`,
//!   `cfp*`, `c6a*`, `dvchost`, `reason`, and the header and extension escaping rules.
//! * Splunk: help.splunk.com "Format events for HTTP Event Collector" and the HEC event schema
//!   (`time` epoch seconds, `host`, `source`, `sourcetype`, `index`, `event`, `fields`).

use std::fmt::Write as _;
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::detector::explain::Direction;
use crate::store::alerts::{Alert, AlertRecord, AlertStatus};
use crate::store::incidents::AlertEvent;

pub use super::cef::{CEF_MAX_VALUE_CHARS, cef_header, cef_severity, cef_value, to_cef};

/// ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";
/// OCSF schema version the findings follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// Product and vendor name in every format.
pub const PRODUCT: &str = "netsentinel";
/// Stable id of the detection: CEF Signature ID, ECS `rule.id`, OCSF analytic uid.
pub const SIGNATURE_ID: &str = "netsentinel-batch-anomaly";
/// Short, fixed event name: CEF Name, ECS `rule.name`. Alert specifics go in the message.
pub const EVENT_NAME: &str = "Network traffic anomaly";
/// OCSF `finding_info.types` entry.
pub const FINDING_TYPE: &str = "Network Traffic Anomaly";
/// Splunk `sourcetype`.
pub const HEC_SOURCETYPE: &str = "netsentinel:alert";

const RULE_DESCRIPTION: &str = "A scored batch of network traffic records whose anomaly rate or \
     top record severity (Isolation Forest) crossed the configured alert limits.";
const ANALYTIC_NAME: &str = "netsentinel Isolation Forest";

/// Echoed fields that name the entity a record is about, in order of preference.
const ENTITY_KEYS: [&str; 5] = ["src_ip", "source_ip", "id.orig_h", "entity", "host"];
/// Echoed fields that name the destination IP.
const DESTINATION_KEYS: [&str; 4] = ["dst_ip", "dest_ip", "destination_ip", "id.resp_h"];
/// Features counting bytes the source sent (ours, then Zeek's conn.log name).
pub(super) const BYTES_SENT_KEYS: [&str; 2] = ["bytes_sent", "orig_bytes"];
/// Features counting bytes the source received.
pub(super) const BYTES_RECEIVED_KEYS: [&str; 2] = ["bytes_received", "resp_bytes"];

/// The export formats, as named in `?format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    /// Our own alert JSON, as the alerts API returns it.
    Json,
    /// Elastic Common Schema 8.x document.
    Ecs,
    /// OCSF 1.x Detection Finding (class 2004).
    Ocsf,
    /// ArcSight Common Event Format line.
    Cef,
    /// Splunk HTTP Event Collector event.
    SplunkHec,
}

impl AlertFormat {
    /// Every format, in documentation order.
    pub const ALL: [AlertFormat; 5] = [
        AlertFormat::Json,
        AlertFormat::Ecs,
        AlertFormat::Ocsf,
        AlertFormat::Cef,
        AlertFormat::SplunkHec,
    ];

    /// The query-string and serde spelling: `json`, `ecs`, `ocsf`, `cef`, `splunk_hec`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ecs => "ecs",
            Self::Ocsf => "ocsf",
            Self::Cef => "cef",
            Self::SplunkHec => "splunk_hec",
        }
    }

    /// The format named `s` (ASCII case-insensitive, surrounding spaces ignored), if any.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
    }

    /// Content type of one alert from [`render_one`]: a JSON document, or a CEF text line.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Cef => "text/plain; charset=utf-8",
            _ => "application/json",
        }
    }

    /// Content type of a list from [`render_within`]: NDJSON, or CEF text lines.
    pub fn content_type_many(self) -> &'static str {
        match self {
            Self::Cef => "text/plain; charset=utf-8",
            _ => "application/x-ndjson",
        }
    }
}

/// What the exporters need to know about the running service, and (a webhook delivery) which
/// of the alert's events is being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportContext<'a> {
    /// Our version: ECS `observer.version`, OCSF `metadata.product.version`, CEF Device Version.
    pub product_version: &'a str,
    /// The service's host name: HEC `host`, ECS `observer.hostname`, CEF `dvchost`.
    pub host: Option<&'a str>,
    /// The event delivered (`opened`, `escalated`, `renotified`, `resolved`); `None` for an
    /// export, which is a snapshot (a resolved incident still reads as closed).
    pub event: Option<AlertEvent>,
}

impl<'a> ExportContext<'a> {
    /// A context for this build (`CARGO_PKG_VERSION`) running on `host`.
    pub fn new(host: Option<&'a str>) -> Self {
        Self {
            product_version: env!("CARGO_PKG_VERSION"),
            host,
            event: None,
        }
    }

    /// This context delivering `event`.
    pub fn with_event(self, event: AlertEvent) -> Self {
        Self {
            event: Some(event),
            ..self
        }
    }

    /// The event to express: the delivered one, else `resolved` for a resolved incident.
    pub(super) fn event_of(&self, alert: &Alert) -> Option<AlertEvent> {
        self.event
            .or_else(|| (alert.status == AlertStatus::Resolved).then_some(AlertEvent::Resolved))
    }

    /// The host name, if set and not blank.
    pub(super) fn host(&self) -> Option<&'a str> {
        self.host.map(str::trim).filter(|h| !h.is_empty())
    }
}

/// One alert as one document or line, without a trailing newline.
pub fn render_one(alert: &Alert, format: AlertFormat, ctx: &ExportContext) -> String {
    let json = match format {
        AlertFormat::Json => {
            let mut doc = to_json(alert);
            if let (Some(event), Some(map)) = (ctx.event, doc.as_object_mut()) {
                map.insert("event".into(), event.as_str().into());
            }
            doc
        }
        AlertFormat::Ecs => to_ecs(alert, ctx),
        AlertFormat::Ocsf => to_ocsf(alert, ctx),
        AlertFormat::SplunkHec => to_splunk_hec(alert, ctx),
        AlertFormat::Cef => return to_cef(alert, ctx),
    };
    escape_line_separators(json.to_string())
}

/// Many alerts, one document or CEF line per alert, each ending with `\n` (NDJSON for the JSON
/// formats), stopping before the line that would take the text past `budget` bytes (the first
/// line is always written); also returns how many alerts were written. Empty for no alerts.
pub fn render_within(
    alerts: &[Alert],
    format: AlertFormat,
    ctx: &ExportContext,
    budget: usize,
) -> (String, usize) {
    let mut out = String::new();
    for (written, alert) in alerts.iter().enumerate() {
        let line = render_one(alert, format, ctx);
        if written > 0 && out.len() + line.len() + 1 > budget {
            return (out, written);
        }
        out.push_str(&line);
        out.push('\n');
    }
    (out, alerts.len())
}

/// The alert as an ECS 8.x document (see the module docs for the mapping).
pub fn to_ecs(alert: &Alert, ctx: &ExportContext) -> Value {
    let top = alert.records.first();
    let entity = top.map(Endpoints::of).unwrap_or_default();
    let sent = top.and_then(|r| byte_count(r, &BYTES_SENT_KEYS));
    let received = top.and_then(|r| byte_count(r, &BYTES_RECEIVED_KEYS));
    let created = rfc3339(alert.created_at);
    let event = ctx.event_of(alert);
    let event_type = match event {
        None => "info",
        Some(AlertEvent::Opened) => "start",
        Some(AlertEvent::Escalated | AlertEvent::Renotified) => "change",
        Some(AlertEvent::Resolved) => "end",
    };

    let mut doc = Map::new();
    doc.insert("@timestamp".into(), created.clone().into());
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    doc.insert("message".into(), describe(alert).into());
    doc.insert(
        "event".into(),
        json!({
            "kind": "alert",
            "category": ["network"],
            "type": [event_type],
            "id": alert.id,
            "created": created,
            "dataset": "netsentinel.alert",
            "module": "netsentinel",
            "provider": PRODUCT,
            "severity": alert.severity,
            "risk_score": f64::from(alert.severity),
            "risk_score_norm": f64::from(alert.severity),
            "reason": alert.reason,
        }),
    );
    if let Some(Value::Object(e)) = doc.get_mut("event") {
        insert_some(e, "action", event.map(|e| e.as_str().into()));
        if alert.is_incident() {
            e.insert("start".into(), rfc3339(alert.first_seen).into());
            insert_some(e, "end", alert.resolved_at.map(|t| rfc3339(t).into()));
        }
    }
    doc.insert(
        "rule".into(),
        json!({
            "id": SIGNATURE_ID,
            "name": EVENT_NAME,
            "description": RULE_DESCRIPTION,
            "version": alert.model_version.to_string(),
            "ruleset": alert.detector,
        }),
    );

    let mut observer = Map::new();
    observer.insert("product".into(), PRODUCT.into());
    observer.insert("vendor".into(), PRODUCT.into());
    observer.insert("version".into(), ctx.product_version.into());
    observer.insert("type".into(), "ids".into());
    insert_some(&mut observer, "hostname", ctx.host().map(Value::from));
    doc.insert("observer".into(), observer.into());

    insert_nonempty(&mut doc, "source", ecs_endpoint(entity.source_ip, sent));
    let destination = ecs_endpoint(entity.destination_ip, received);
    insert_nonempty(&mut doc, "destination", destination);

    if let (Some(s), Some(r)) = (sent, received) {
        doc.insert("network".into(), json!({ "bytes": s.saturating_add(r) }));
    }
    if let Some(name) = entity.host {
        doc.insert("host".into(), json!({ "name": name }));
    }

    // related.* lets an analyst pivot on every IP and host the alert mentions, not just the top one.
    let mut related = Map::new();
    let (ips, hosts) = related_entities(alert);
    if !ips.is_empty() {
        related.insert("ip".into(), ips.into());
    }
    if !hosts.is_empty() {
        related.insert("hosts".into(), hosts.into());
    }
    insert_nonempty(&mut doc, "related", related);

    let mut ours = Map::new();
    ours.insert("model_version".into(), alert.model_version.into());
    ours.insert("status".into(), alert.status.as_str().into());
    insert_some(
        &mut ours,
        "acknowledged_at",
        alert.acknowledged_at.map(|t| rfc3339(t).into()),
    );
    ours.insert("summary".into(), to_value(&alert.summary));
    ours.insert("records".into(), to_value(&alert.records));
    insert_incident(&mut ours, alert);
    doc.insert("netsentinel".into(), ours.into());

    Value::Object(doc)
}

/// The alert as an OCSF 1.x Detection Finding (see the module docs for the mapping).
pub fn to_ocsf(alert: &Alert, ctx: &ExportContext) -> Value {
    let (severity_id, severity) = ocsf_severity(alert.severity);
    let (status_id, status) = match alert.status {
        AlertStatus::Open => (1, "New"),
        AlertStatus::Acknowledged => (2, "In Progress"),
        AlertStatus::Resolved => (4, "Resolved"),
    };
    let (activity_id, activity) = match ctx.event_of(alert) {
        None | Some(AlertEvent::Opened) => (1, "Create"),
        Some(AlertEvent::Escalated | AlertEvent::Renotified) => (2, "Update"),
        Some(AlertEvent::Resolved) => (3, "Close"),
    };
    let created_ms = alert.created_at.timestamp_millis();
    let top = alert.records.first();

    let mut finding_info = Map::new();
    finding_info.insert("uid".into(), alert.id.clone().into());
    finding_info.insert("title".into(), title(alert).into());
    finding_info.insert("desc".into(), alert.reason.clone().into());
    finding_info.insert("created_time".into(), created_ms.into());
    insert_some(
        &mut finding_info,
        "modified_time",
        alert.acknowledged_at.map(|t| t.timestamp_millis().into()),
    );
    finding_info.insert("types".into(), json!([FINDING_TYPE]));
    if alert.is_incident() {
        let first = alert.first_seen.timestamp_millis();
        finding_info.insert("first_seen_time".into(), first.into());
        let last = alert.last_seen.timestamp_millis();
        finding_info.insert("last_seen_time".into(), last.into());
    }
    finding_info.insert(
        "analytic".into(),
        json!({
            "name": ANALYTIC_NAME,
            "type_id": 4,
            "type": "Learning (ML/DL)",
            "uid": SIGNATURE_ID,
            "version": alert.model_version.to_string(),
            "category": alert.detector,
        }),
    );

    let mut doc = Map::new();
    doc.insert("class_uid".into(), 2004.into());
    doc.insert("class_name".into(), "Detection Finding".into());
    doc.insert("category_uid".into(), 2.into());
    doc.insert("category_name".into(), "Findings".into());
    doc.insert("activity_id".into(), activity_id.into());
    doc.insert("activity_name".into(), activity.into());
    doc.insert("type_uid".into(), (200_400 + activity_id).into());
    let type_name = format!("Detection Finding: {activity}");
    doc.insert("type_name".into(), type_name.into());
    if alert.is_incident() {
        doc.insert("count".into(), alert.count.into());
    }
    doc.insert("severity_id".into(), severity_id.into());
    doc.insert("severity".into(), severity.into());
    doc.insert("time".into(), created_ms.into());
    doc.insert("message".into(), describe(alert).into());
    doc.insert("status_id".into(), status_id.into());
    doc.insert("status".into(), status.into());
    doc.insert("risk_score".into(), alert.severity.into());
    insert_some(
        &mut doc,
        "confidence_score",
        top.and_then(|r| percent(r.score)).map(Value::from),
    );
    doc.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": alert.id,
            "product": {
                "name": PRODUCT,
                "vendor_name": PRODUCT,
                "version": ctx.product_version,
            },
        }),
    );
    doc.insert("finding_info".into(), finding_info.into());
    if !alert.records.is_empty() {
        let evidences: Vec<Value> = alert
            .records
            .iter()
            .map(|r| ocsf_evidence(&alert.id, r))
            .collect();
        doc.insert("evidences".into(), evidences.into());
    }

    let mut unmapped = Map::new();
    unmapped.insert("model_version".into(), alert.model_version.into());
    unmapped.insert("alert_status".into(), alert.status.as_str().into());
    unmapped.insert("alert_severity".into(), alert.severity.into());
    insert_some(
        &mut unmapped,
        "acknowledged_at",
        alert.acknowledged_at.map(|t| rfc3339(t).into()),
    );
    unmapped.insert("summary".into(), to_value(&alert.summary));
    insert_some(&mut unmapped, "event", ctx.event.map(|e| e.as_str().into()));
    insert_incident(&mut unmapped, alert);
    doc.insert("unmapped".into(), unmapped.into());

    Value::Object(doc)
}

/// The alert as a Splunk HEC event (see the module docs for the mapping).
pub fn to_splunk_hec(alert: &Alert, ctx: &ExportContext) -> Value {
    // Milliseconds are exact in an f64 for any plausible date, so `time` round-trips to the ms.
    let time = alert.created_at.timestamp_millis() as f64 / 1000.0;
    let mut doc = json!({
        "time": finite(time),
        "host": ctx.host().unwrap_or(PRODUCT),
        "source": PRODUCT,
        "sourcetype": HEC_SOURCETYPE,
        "event": to_json(alert),
        "fields": {
            "alert_id": alert.id,
            "severity": alert.severity.to_string(),
            "model_version": alert.model_version.to_string(),
            "status": alert.status.as_str(),
            "detector": alert.detector,
        },
    });
    if let Some(Value::Object(fields)) = doc.get_mut("fields") {
        let event = ctx.event_of(alert).map(|e| e.as_str().into());
        insert_some(fields, "event_type", event);
        insert_some(fields, "entity", alert.entity.clone().map(Value::from));
        let verdict = alert.feedback.last().map(|f| to_value(&f.verdict));
        insert_some(fields, "verdict", verdict);
    }
    doc
}

/// One OCSF `evidences` entry for a record: its endpoints when known, and the record itself.
fn ocsf_evidence(alert_id: &str, record: &AlertRecord) -> Value {
    let endpoints = Endpoints::of(record);
    let mut evidence = Map::new();
    // Unique within the SIEM: the alert id plus the record's position in its batch.
    evidence.insert("uid".into(), format!("{alert_id}:{}", record.index).into());
    evidence.insert("name".into(), "Anomalous traffic record".into());
    let mut src = Map::new();
    insert_some(
        &mut src,
        "ip",
        endpoints.source_ip.map(|ip| ip.to_string().into()),
    );
    insert_some(&mut src, "hostname", endpoints.host.map(Value::from));
    insert_nonempty(&mut evidence, "src_endpoint", src);
    if let Some(ip) = endpoints.destination_ip {
        evidence.insert("dst_endpoint".into(), json!({ "ip": ip.to_string() }));
    }
    evidence.insert("data".into(), to_value(record));
    Value::Object(evidence)
}

/// OCSF `severity_id` and its caption for our 0–100 severity (table in the module docs).
pub fn ocsf_severity(severity: u8) -> (u8, &'static str) {
    match severity {
        0..=24 => (1, "Informational"),
        25..=49 => (2, "Low"),
        50..=74 => (3, "Medium"),
        75..=89 => (4, "High"),
        _ => (5, "Critical"),
    }
}

/// The characters of `chars` with every one `escape` has a replacement for replaced by it.
pub(super) fn escaped(
    chars: impl Iterator<Item = char>,
    capacity: usize,
    escape: impl Fn(char) -> Option<&'static str>,
) -> String {
    let mut out = String::with_capacity(capacity);
    for c in chars {
        match escape(c) {
            Some(replacement) => out.push_str(replacement),
            None => out.push(c),
        }
    }
    out
}

/// A JSON document with U+2028, U+2029 and U+0085 written as `\u` escapes: the same JSON, but
/// no consumer that splits lines on them (JavaScript, some log shippers) cuts it in pieces.
/// They can only occur inside strings, where the escape means the same character.
pub fn escape_line_separators(json: String) -> String {
    if !json.contains(['\u{2028}', '\u{2029}', '\u{85}']) {
        return json;
    }
    escaped(json.chars(), json.len() + 16, |c| match c {
        '\u{2028}' => Some("\\u2028"),
        '\u{2029}' => Some("\\u2029"),
        '\u{85}' => Some("\\u0085"),
        _ => None,
    })
}

/// An incident's own fields (entity, count, first and last seen, max severity, resolution),
/// analysts' verdicts and what the alert left out past `--max-alert-entities`, where a format
/// keeps what it has no home for.
fn insert_incident(map: &mut Map<String, Value>, alert: &Alert) {
    if alert.is_incident() {
        insert_some(map, "entity", alert.entity.clone().map(Value::from));
        map.insert("count".into(), alert.count.into());
        map.insert("first_seen".into(), rfc3339(alert.first_seen).into());
        map.insert("last_seen".into(), rfc3339(alert.last_seen).into());
        map.insert("max_severity".into(), alert.max_severity.into());
        insert_some(
            map,
            "resolved_at",
            alert.resolved_at.map(|t| rfc3339(t).into()),
        );
    }
    if !alert.feedback.is_empty() {
        map.insert("feedback".into(), to_value(&alert.feedback));
    }
    if let Some(omitted) = &alert.omitted {
        map.insert("omitted".into(), to_value(omitted));
    }
}

/// Our own alert JSON.
fn to_json(alert: &Alert) -> Value {
    to_value(alert)
}

/// Serializes one of our types. They serialize infallibly (plain structs, string map keys), and
/// serde_json turns non-finite floats into `null`; the fallback only keeps this panic-free.
fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A JSON number, or `null` when `x` is not finite (JSON has no NaN or infinity).
fn finite(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// RFC 3339 in UTC with a `Z`, keeping sub-second digits only when there are some.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A score in [0, 1] as a whole percentage, if finite.
fn percent(score: f64) -> Option<u8> {
    score
        .is_finite()
        .then(|| (score.clamp(0.0, 1.0) * 100.0).round() as u8)
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_string(), v);
    }
}

/// An ECS `source` or `destination`: its IP and byte count, where known.
fn ecs_endpoint(ip: Option<IpAddr>, bytes: Option<u64>) -> Map<String, Value> {
    let mut endpoint = Map::new();
    insert_some(&mut endpoint, "ip", ip.map(|ip| ip.to_string().into()));
    insert_some(&mut endpoint, "bytes", bytes.map(Value::from));
    endpoint
}

fn insert_nonempty(map: &mut Map<String, Value>, key: &str, value: Map<String, Value>) {
    if !value.is_empty() {
        map.insert(key.to_string(), Value::Object(value));
    }
}

/// Who a record is about, read from its echoed fields (rules in the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Endpoints<'a> {
    pub(super) source_ip: Option<IpAddr>,
    pub(super) destination_ip: Option<IpAddr>,
    pub(super) host: Option<&'a str>,
}

impl<'a> Endpoints<'a> {
    pub(super) fn of(record: &'a AlertRecord) -> Self {
        let entity_values = || {
            ENTITY_KEYS
                .iter()
                .filter_map(|k| record.fields.get(*k))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        Self {
            source_ip: entity_values().find_map(parse_ip),
            destination_ip: DESTINATION_KEYS
                .iter()
                .filter_map(|k| record.fields.get(*k))
                .find_map(|v| parse_ip(v.trim())),
            host: entity_values().find(|v| parse_ip(v).is_none()),
        }
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Every distinct IP and host name named by any record's entity or destination fields.
fn related_entities(alert: &Alert) -> (Vec<String>, Vec<String>) {
    let mut ips: Vec<String> = Vec::new();
    let mut hosts: Vec<String> = Vec::new();
    for record in &alert.records {
        for key in ENTITY_KEYS.iter().chain(DESTINATION_KEYS.iter()) {
            let Some(value) = record.fields.get(*key).map(|v| v.trim()) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            match parse_ip(value) {
                Some(ip) => push_unique(&mut ips, ip.to_string()),
                // A destination field that is not an IP is not a host we can vouch for.
                None if ENTITY_KEYS.contains(key) => push_unique(&mut hosts, value.to_string()),
                None => {}
            }
        }
    }
    (ips, hosts)
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !list.contains(&value) {
        list.push(value);
    }
}

/// The first of `keys` present in the record's values, as whole bytes, if finite and ≥ 0.
pub(super) fn byte_count(record: &AlertRecord, keys: &[&str]) -> Option<u64> {
    let value = keys.iter().find_map(|k| record.values.get(*k))?;
    // `as` saturates at u64::MAX, which is the right answer for absurd inputs.
    (value.is_finite() && *value >= 0.0).then(|| value.round() as u64)
}

/// A short title: how much of the batch was anomalous.
fn title(alert: &Alert) -> String {
    format!(
        "{EVENT_NAME}: {} of {} records anomalous (severity {})",
        alert.summary.n_anomalies, alert.summary.n_records, alert.severity
    )
}

/// One human sentence: the reason, then the top record and what drove its score.
pub(super) fn describe(alert: &Alert) -> String {
    let mut msg = alert.reason.trim_end_matches('.').to_string();
    let Some(top) = alert.records.first() else {
        msg.push('.');
        return msg;
    };
    let _ = write!(msg, "; most anomalous record #{}", top.index);
    let entity = Endpoints::of(top);
    let mut who = Vec::new();
    if let Some(ip) = entity.source_ip {
        who.push(format!("source {ip}"));
    }
    if let Some(host) = entity.host {
        who.push(format!("host {host}"));
    }
    if !who.is_empty() {
        let _ = write!(msg, " ({})", who.join(", "));
    }
    let _ = write!(msg, " scored {:.3}, severity {}", top.score, top.severity);
    if let Some(line) = top.explanation.first().and_then(|d| d.summary.as_deref()) {
        let _ = write!(msg, "; main driver {line}");
    } else if let Some(driver) = top.explanation.first() {
        let direction = match driver.direction {
            Direction::Above => "above",
            Direction::Below => "below",
            Direction::Within => "within",
        };
        let _ = write!(
            msg,
            "; main driver {} at {}, {} the normal range {} to {}",
            driver.feature, driver.value, direction, driver.normal_range[0], driver.normal_range[1]
        );
    }
    msg.push('.');
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocsf_severity_bands_follow_the_severity_scale() {
        assert_eq!(ocsf_severity(0), (1, "Informational"));
        assert_eq!(ocsf_severity(24), (1, "Informational"));
        assert_eq!(ocsf_severity(25), (2, "Low"));
        assert_eq!(ocsf_severity(50), (3, "Medium"));
        assert_eq!(ocsf_severity(75), (4, "High"));
        assert_eq!(ocsf_severity(89), (4, "High"));
        assert_eq!(ocsf_severity(90), (5, "Critical"));
        assert_eq!(ocsf_severity(100), (5, "Critical"));
        // Out-of-range input must not produce Fatal (6) or panic.
        assert_eq!(ocsf_severity(255), (5, "Critical"));
    }

    #[test]
    fn cef_severity_rounds_half_up_to_0_through_10() {
        let cases = [
            (0, 0),
            (4, 0),
            (5, 1),
            (14, 1),
            (15, 2),
            (87, 9),
            (94, 9),
            (95, 10),
        ];
        for (ours, cef) in cases {
            assert_eq!(cef_severity(ours), cef, "severity {ours}");
        }
        assert_eq!(cef_severity(100), 10);
        assert_eq!(cef_severity(255), 10);
    }

    #[test]
    fn cef_escaping() {
        assert_eq!(cef_header("a|b\\c\nd\re"), "a\\|b\\\\c d e");
        assert_eq!(cef_value("a=b\\c\nd\re|f"), "a\\=b\\\\c\\nd\\re|f");
    }

    #[test]
    fn cef_values_are_capped_and_carry_no_control_characters() {
        let long = "h".repeat(5000);
        for escaped in [cef_value(&long), cef_header(&long)] {
            assert_eq!(escaped.chars().count(), CEF_MAX_VALUE_CHARS);
            assert!(escaped.ends_with("hh..."));
        }
        let nasty = "a\u{0}\u{1b}[31m\u{7f}\u{85}\u{9b}\u{2028}\u{2029}\u{b}b";
        assert_eq!(cef_value(nasty), "a  [31m      b");
        assert_eq!(cef_header(nasty), "a  [31m      b");
        assert_eq!(
            cef_value(&"é".repeat(2000)).chars().count(),
            CEF_MAX_VALUE_CHARS
        );
    }

    #[test]
    fn format_names_round_trip() {
        for f in AlertFormat::ALL {
            assert_eq!(AlertFormat::parse(f.as_str()), Some(f));
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
        assert_eq!(
            AlertFormat::parse(" Splunk_HEC "),
            Some(AlertFormat::SplunkHec)
        );
        assert_eq!(AlertFormat::parse("xml"), None);
        assert_eq!(AlertFormat::parse(""), None);
    }

    #[test]
    fn non_finite_floats_become_null() {
        assert_eq!(finite(f64::NAN), Value::Null);
        assert_eq!(finite(f64::INFINITY), Value::Null);
        assert_eq!(to_value(&f64::NAN), Value::Null);
        assert_eq!(percent(f64::NAN), None);
    }
}
