//! SIEM exporters: every format checked field by field on a fixture alert, plus hostile input.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use netsentinel::detector::explain::{Direction, FeatureContribution};
use netsentinel::detector::model::BatchSummary;
use netsentinel::siem::formats::{
    AlertFormat, ExportContext, render_one, render_within, to_cef, to_ecs, to_ocsf, to_splunk_hec,
};
use netsentinel::store::alerts::{Alert, AlertRecord, AlertStatus};
use serde_json::{Value, json};

const ID: &str = "01928f6e-7c3a-7d41-9b2e-5f0c8a1d2e3f";
/// 2024-01-05T04:00:00.123Z in epoch milliseconds.
const CREATED_MS: i64 = 1_704_427_200_123;

fn created() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(CREATED_MS)
        .single()
        .expect("valid instant")
}

/// Every alert as a line, with no byte budget.
fn render_many(alerts: &[Alert], format: AlertFormat, ctx: &ExportContext) -> String {
    render_within(alerts, format, ctx, usize::MAX).0
}

fn ctx() -> ExportContext<'static> {
    ExportContext {
        product_version: "0.1.0",
        host: Some("sentinel-1"),
        event: None,
    }
}

fn contribution(feature: &str, value: f64, contribution: f64) -> FeatureContribution {
    FeatureContribution {
        feature: feature.to_string(),
        value,
        direction: Direction::Above,
        contribution,
        normal_range: [671000.0, 1330000.0],
        expected: None,
        band: None,
        summary: None,
    }
}

fn record(index: usize, score: f64, severity: u8, fields: &[(&str, &str)]) -> AlertRecord {
    AlertRecord {
        index,
        timestamp: Some("2024-01-05T03:59:00Z".to_string()),
        score,
        severity,
        values: BTreeMap::from([
            ("bytes_sent".to_string(), 5_247_031.96),
            ("bytes_received".to_string(), 120_000.4),
            ("connections".to_string(), 40.0),
        ]),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        explanation: vec![
            contribution("bytes_sent", 5_247_031.96, 0.82),
            contribution("connections", 40.0, 0.18),
        ],
        entity: None,
    }
}

/// An open alert with two records; the top one has `src_ip` and `host` echo fields.
fn fixture() -> Alert {
    let at = created();
    Alert {
        entity: None,
        count: 1,
        first_seen: at,
        last_seen: at,
        max_severity: 87,
        resolved_at: None,
        feedback: Vec::new(),
        omitted: None,
        notified: None,
        policy: None,
        id: ID.to_string(),
        created_at: created(),
        model_version: 3,
        detector: "default".into(),
        severity: 87,
        status: AlertStatus::Open,
        acknowledged_at: None,
        reason: "anomaly rate 12.5% exceeds 10.0%".to_string(),
        summary: BatchSummary {
            n_records: 24,
            n_anomalies: 3,
            anomaly_rate: 0.125,
            threshold: 0.5,
            max_severity: 87,
        },
        records: vec![
            record(
                7,
                0.748,
                87,
                &[
                    ("src_ip", "10.0.0.5"),
                    ("host", "web-01"),
                    ("dst_ip", "192.0.2.9"),
                ],
            ),
            record(2, 0.62, 55, &[("src_ip", "2001:db8::7"), ("host", "db-02")]),
        ],
    }
}

fn acknowledged() -> Alert {
    let mut alert = fixture();
    alert.status = AlertStatus::Acknowledged;
    alert.acknowledged_at = Some(created() + chrono::Duration::minutes(5));
    alert
}

fn no_records() -> Alert {
    let mut alert = fixture();
    alert.records.clear();
    alert
}

/// Renders and parses back, so every check also proves the text is valid JSON.
fn round_trip(alert: &Alert, format: AlertFormat) -> Value {
    let text = render_one(alert, format, &ctx());
    assert!(!text.contains('\n'), "{format:?} must be one line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{format:?} is not JSON ({e}): {text}"))
}

#[test]
fn ecs_document_has_every_required_field() {
    let alert = fixture();
    let doc = round_trip(&alert, AlertFormat::Ecs);
    assert_eq!(doc, to_ecs(&alert, &ctx()), "render_one(ecs) is to_ecs");

    assert_eq!(doc["@timestamp"], "2024-01-05T04:00:00.123Z");
    assert_eq!(doc["ecs"]["version"], "8.11.0");
    let event = &doc["event"];
    assert_eq!(event["kind"], "alert");
    assert_eq!(event["category"], json!(["network"]));
    assert_eq!(event["type"], json!(["info"]));
    assert_eq!(event["severity"], 87);
    assert_eq!(event["risk_score"], 87.0);
    assert!(event["risk_score"].is_f64(), "ECS risk_score is a float");
    assert_eq!(event["risk_score_norm"], 87.0);
    assert_eq!(event["dataset"], "netsentinel.alert");
    assert_eq!(event["module"], "netsentinel");
    assert_eq!(event["id"], ID);
    assert_eq!(event["created"], "2024-01-05T04:00:00.123Z");
    assert_eq!(event["reason"], alert.reason);

    assert_eq!(doc["rule"]["id"], "netsentinel-batch-anomaly");
    assert_eq!(doc["rule"]["name"], "Network traffic anomaly");
    assert!(
        doc["rule"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(doc["rule"]["version"], "3");
    assert_eq!(
        doc["rule"]["ruleset"], "default",
        "the detector that raised it"
    );

    let message = doc["message"].as_str().expect("message is a string");
    assert!(
        message.starts_with("anomaly rate 12.5% exceeds 10.0%"),
        "{message}"
    );
    assert!(
        message.contains("#7") && message.contains("10.0.0.5"),
        "{message}"
    );
    assert!(
        message.contains("bytes_sent"),
        "names the main driver: {message}"
    );

    let observer = &doc["observer"];
    assert_eq!(observer["product"], "netsentinel");
    assert_eq!(observer["vendor"], "netsentinel");
    assert_eq!(observer["version"], "0.1.0");
    assert_eq!(observer["type"], "ids");
    assert_eq!(observer["hostname"], "sentinel-1");

    // The IP entity goes to source.ip, the non-IP host name to host.name.
    assert_eq!(doc["source"]["ip"], "10.0.0.5");
    assert_eq!(doc["host"]["name"], "web-01");
    assert_eq!(doc["destination"]["ip"], "192.0.2.9");
    // Bytes rounded to whole bytes (ECS longs); network.bytes is their sum.
    assert_eq!(doc["source"]["bytes"], 5_247_032);
    assert_eq!(doc["destination"]["bytes"], 120_000);
    assert_eq!(doc["network"]["bytes"], 5_367_032);
    assert_eq!(
        doc["related"]["ip"],
        json!(["10.0.0.5", "192.0.2.9", "2001:db8::7"])
    );
    assert_eq!(doc["related"]["hosts"], json!(["web-01", "db-02"]));

    let ours = &doc["netsentinel"];
    assert_eq!(ours["model_version"], 3);
    assert_eq!(ours["status"], "open");
    assert!(ours.get("acknowledged_at").is_none());
    assert_eq!(ours["summary"]["n_anomalies"], 3);
    assert_eq!(ours["summary"]["anomaly_rate"], 0.125);
    assert_eq!(ours["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(ours["records"][0]["fields"]["src_ip"], "10.0.0.5");
    assert_eq!(
        ours["records"][0]["explanation"][0]["feature"],
        "bytes_sent"
    );
    assert_eq!(ours["records"][1]["index"], 2);

    // ECS wants nested objects: no top-level key may contain a dot except "@timestamp".
    let keys: Vec<&String> = doc.as_object().expect("object").keys().collect();
    assert!(
        keys.iter().all(|k| !k.contains('.')),
        "dotted keys: {keys:?}"
    );
}

#[test]
fn ecs_acknowledged_alert_carries_its_status() {
    let doc = round_trip(&acknowledged(), AlertFormat::Ecs);
    assert_eq!(doc["netsentinel"]["status"], "acknowledged");
    assert_eq!(
        doc["netsentinel"]["acknowledged_at"],
        "2024-01-05T04:05:00.123Z"
    );
    assert_eq!(doc["event"]["id"], ID);
}

#[test]
fn ecs_partial_byte_counts_do_not_invent_a_total() {
    let mut alert = fixture();
    alert.records[0].values.remove("bytes_received");
    let doc = to_ecs(&alert, &ctx());
    assert_eq!(doc["source"]["bytes"], 5_247_032);
    assert!(doc["destination"].get("bytes").is_none());
    assert!(
        doc.get("network").is_none(),
        "one direction is not network.bytes"
    );
}

#[test]
fn ocsf_finding_has_every_required_field() {
    let alert = fixture();
    let doc = round_trip(&alert, AlertFormat::Ocsf);
    assert_eq!(doc, to_ocsf(&alert, &ctx()));

    assert_eq!(doc["class_uid"], 2004);
    assert_eq!(doc["class_name"], "Detection Finding");
    assert_eq!(doc["category_uid"], 2);
    assert_eq!(doc["category_name"], "Findings");
    assert_eq!(doc["activity_id"], 1);
    assert_eq!(doc["activity_name"], "Create");
    assert_eq!(doc["type_uid"], 200401);
    assert_eq!(doc["type_name"], "Detection Finding: Create");
    // 87 is in the 75–89 band: High.
    assert_eq!(doc["severity_id"], 4);
    assert_eq!(doc["severity"], "High");
    assert_eq!(doc["time"], CREATED_MS);
    assert_eq!(doc["status_id"], 1);
    assert_eq!(doc["status"], "New");
    assert_eq!(doc["risk_score"], 87);
    // Top record score 0.748 → 75, an integer as OCSF requires.
    assert_eq!(doc["confidence_score"], 75);
    assert!(doc["message"].as_str().is_some_and(|m| m.contains("12.5%")));

    let meta = &doc["metadata"];
    assert_eq!(meta["version"], "1.3.0");
    assert_eq!(meta["uid"], ID);
    assert_eq!(meta["product"]["name"], "netsentinel");
    assert_eq!(meta["product"]["vendor_name"], "netsentinel");
    assert_eq!(meta["product"]["version"], "0.1.0");

    let info = &doc["finding_info"];
    assert_eq!(info["uid"], ID);
    assert_eq!(
        info["title"],
        "Network traffic anomaly: 3 of 24 records anomalous (severity 87)"
    );
    assert_eq!(info["desc"], alert.reason);
    assert_eq!(info["created_time"], CREATED_MS);
    assert!(info.get("modified_time").is_none());
    assert_eq!(info["types"], json!(["Network Traffic Anomaly"]));
    assert_eq!(info["analytic"]["type_id"], 4);
    assert_eq!(info["analytic"]["type"], "Learning (ML/DL)");
    assert_eq!(info["analytic"]["uid"], "netsentinel-batch-anomaly");
    assert_eq!(info["analytic"]["version"], "3");
    assert_eq!(
        info["analytic"]["category"], "default",
        "the detector that raised it"
    );
    assert!(
        info["analytic"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );

    let evidences = doc["evidences"].as_array().expect("evidences array");
    assert_eq!(evidences.len(), 2, "one evidence per record");
    assert_eq!(evidences[0]["uid"], format!("{ID}:7"));
    assert_eq!(evidences[0]["src_endpoint"]["ip"], "10.0.0.5");
    assert_eq!(evidences[0]["src_endpoint"]["hostname"], "web-01");
    assert_eq!(evidences[0]["dst_endpoint"]["ip"], "192.0.2.9");
    assert_eq!(evidences[0]["data"]["fields"]["host"], "web-01");
    assert_eq!(evidences[0]["data"]["values"]["bytes_sent"], 5_247_031.96);
    assert_eq!(
        evidences[0]["data"]["explanation"][1]["feature"],
        "connections"
    );
    assert_eq!(evidences[1]["src_endpoint"]["ip"], "2001:db8::7");
    assert!(evidences[1].get("dst_endpoint").is_none());

    let unmapped = &doc["unmapped"];
    assert_eq!(unmapped["model_version"], 3);
    assert_eq!(unmapped["alert_status"], "open");
    assert_eq!(unmapped["summary"]["n_records"], 24);
}

#[test]
fn ocsf_acknowledged_alert_is_in_progress() {
    let doc = round_trip(&acknowledged(), AlertFormat::Ocsf);
    assert_eq!(doc["status_id"], 2);
    assert_eq!(doc["status"], "In Progress");
    assert_eq!(
        doc["finding_info"]["modified_time"],
        CREATED_MS + 5 * 60 * 1000
    );
    assert_eq!(
        doc["unmapped"]["acknowledged_at"],
        "2024-01-05T04:05:00.123Z"
    );
    assert_eq!(
        doc["activity_id"], 1,
        "a re-exported snapshot is still the Create finding"
    );
}

#[test]
fn ocsf_severity_id_follows_the_documented_bands() {
    let mut alert = fixture();
    for (severity, id, caption) in [
        (0, 1, "Informational"),
        (24, 1, "Informational"),
        (25, 2, "Low"),
        (74, 3, "Medium"),
        (75, 4, "High"),
        (90, 5, "Critical"),
        (100, 5, "Critical"),
    ] {
        alert.severity = severity;
        let doc = to_ocsf(&alert, &ctx());
        assert_eq!(doc["severity_id"], id, "severity {severity}");
        assert_eq!(doc["severity"], caption, "severity {severity}");
    }
}

#[test]
fn splunk_hec_event_has_every_required_field() {
    let alert = fixture();
    let doc = round_trip(&alert, AlertFormat::SplunkHec);
    assert_eq!(doc, to_splunk_hec(&alert, &ctx()));

    assert_eq!(doc["time"], 1_704_427_200.123);
    assert_eq!(doc["host"], "sentinel-1");
    assert_eq!(doc["source"], "netsentinel");
    assert_eq!(doc["sourcetype"], "netsentinel:alert");
    assert!(doc.get("index").is_none(), "index is left to the HEC token");
    assert_eq!(doc["fields"]["alert_id"], ID);
    assert_eq!(doc["fields"]["severity"], "87");
    assert_eq!(doc["fields"]["model_version"], "3");
    assert_eq!(doc["fields"]["status"], "open");
    assert_eq!(doc["fields"]["detector"], "default");
    let event: Alert = serde_json::from_value(doc["event"].clone()).expect("event is our alert");
    assert_eq!(event, alert);

    let no_host = ExportContext {
        product_version: "0.1.0",
        host: None,
        event: None,
    };
    assert_eq!(to_splunk_hec(&alert, &no_host)["host"], "netsentinel");
}

#[test]
fn json_format_round_trips_to_the_same_alert() {
    for alert in [fixture(), acknowledged(), no_records()] {
        let text = render_one(&alert, AlertFormat::Json, &ctx());
        let back: Alert = serde_json::from_str(&text).expect("our own alert JSON");
        assert_eq!(back, alert);
    }
}

#[test]
fn cef_line_has_header_and_extension_fields() {
    let alert = fixture();
    let line = render_one(&alert, AlertFormat::Cef, &ctx());
    assert_eq!(line, to_cef(&alert, &ctx()));
    let (header, ext) = parse_cef(&line);

    assert_eq!(
        header,
        [
            "0",
            "netsentinel",
            "netsentinel",
            "0.1.0",
            "netsentinel-batch-anomaly",
            "Network traffic anomaly",
            "9"
        ]
    );
    assert_eq!(ext["rt"], CREATED_MS.to_string());
    assert_eq!(ext["externalId"], ID);
    assert_eq!(ext["src"], "10.0.0.5");
    assert_eq!(ext["dst"], "192.0.2.9");
    assert_eq!(ext["shost"], "web-01");
    assert_eq!(ext["dvchost"], "sentinel-1");
    assert_eq!(ext["out"], "5247032");
    assert_eq!(ext["in"], "120000");
    assert_eq!(ext["cnt"], "3");
    assert_eq!(ext["reason"], alert.reason);
    assert!(ext["msg"].starts_with(&alert.reason), "{}", ext["msg"]);
    assert_eq!(ext["cat"], "/Anomaly/Network/Traffic");
    assert_eq!(ext["cs1Label"], "modelVersion");
    assert_eq!(ext["cs1"], "3");
    assert_eq!(ext["cs2Label"], "alertStatus");
    assert_eq!(ext["cs2"], "open");
    assert_eq!(ext["cs3Label"], "topFeatures");
    assert_eq!(ext["cs3"], "bytes_sent,connections");
    assert_eq!(ext["cs4Label"], "detector");
    assert_eq!(ext["cs4"], "default");
    assert_eq!(ext["cn1Label"], "recordsScored");
    assert_eq!(ext["cn1"], "24");
    assert_eq!(ext["cn2Label"], "alertSeverity");
    assert_eq!(ext["cn2"], "87");
    assert_eq!(ext["cfp1Label"], "anomalyRate");
    assert_eq!(ext["cfp1"], "0.125");
    assert_eq!(ext["cfp2Label"], "anomalyScore");
    assert_eq!(ext["cfp2"], "0.748");
    assert!(!ext.contains_key("deviceCustomDate1"));
}

#[test]
fn cef_acknowledged_and_ipv6_entity() {
    let mut alert = acknowledged();
    alert.records.swap(0, 1);
    let (_, ext) = parse_cef(&to_cef(&alert, &ctx()));
    assert_eq!(ext["cs2"], "acknowledged");
    assert_eq!(ext["deviceCustomDate1Label"], "acknowledgedAt");
    assert_eq!(ext["deviceCustomDate1"], (CREATED_MS + 300_000).to_string());
    // src is an IPv4 field; an IPv6 source goes to c6a2 with the spec's label.
    assert!(!ext.contains_key("src"));
    assert_eq!(ext["c6a2Label"], "Source IPv6 Address");
    assert_eq!(ext["c6a2"], "2001:db8::7");
    assert_eq!(ext["shost"], "db-02");
}

#[test]
fn cef_survives_hostile_strings_and_parses_back_exactly() {
    let reason = "rate=12.5% | C:\\tmp\\ \\= end\\\nsecond line\r\nthird cs1=evil msg=x ünï 🚨 ";
    let host = "evil|host=1 \\ \n shost=fake";
    let feature = "bytes=sent|\\n\nname";
    let mut alert = fixture();
    alert.reason = reason.to_string();
    alert.records[0]
        .fields
        .insert("host".to_string(), host.to_string());
    alert.records[0].explanation[0].feature = feature.to_string();
    alert.records[0].values.insert(feature.to_string(), 1.0);
    let ctx = ExportContext {
        product_version: "1.0|rc\\1\nx",
        host: Some("sentinel=1"),
        event: None,
    };

    let line = to_cef(&alert, &ctx);
    assert!(
        !line.contains('\n') && !line.contains('\r'),
        "one line: {line:?}"
    );
    let (header, ext) = parse_cef(&line);
    assert_eq!(header.len(), 7);
    // Header: `|` and `\` survive escaping; the newline had to become a space.
    assert_eq!(header[3], "1.0|rc\\1 x");
    assert_eq!(header[6], "9");
    assert_eq!(ext["reason"], reason);
    assert!(
        ext["msg"].starts_with(reason.trim_end()),
        "{:?}",
        ext["msg"]
    );
    assert!(
        ext["msg"].contains(feature),
        "driver named verbatim: {:?}",
        ext["msg"]
    );
    assert_eq!(ext["shost"], host);
    assert_eq!(ext["dvchost"], "sentinel=1");
    assert_eq!(ext["cs3"], format!("{feature},connections"));
    // The `key=value`-looking text stayed inside its value: no injected keys.
    assert_eq!(ext["cs1"], "3");
    assert_eq!(ext["externalId"], ID);
    assert_eq!(ext["src"], "10.0.0.5");

    // The JSON formats carry the same strings untouched.
    for format in [AlertFormat::Ecs, AlertFormat::Ocsf, AlertFormat::SplunkHec] {
        let text = render_one(&alert, format, &ctx);
        assert!(!text.contains('\n'), "{format:?}");
        let doc: Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(text.contains("🚨"), "{format:?} keeps unicode");
        if format == AlertFormat::Ecs {
            assert_eq!(doc["event"]["reason"], reason);
            assert_eq!(doc["host"]["name"], host.trim());
        }
    }
}

#[test]
fn render_many_writes_one_parseable_line_per_alert() {
    let alerts = [fixture(), acknowledged(), no_records()];
    for format in AlertFormat::ALL {
        let text = render_many(&alerts, format, &ctx());
        assert!(text.ends_with('\n'), "{format:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), alerts.len(), "{format:?}");
        for (line, alert) in lines.iter().zip(&alerts) {
            assert_eq!(*line, render_one(alert, format, &ctx()));
            if format == AlertFormat::Cef {
                assert_eq!(parse_cef(line).1["externalId"], alert.id);
            } else {
                let doc: Value = serde_json::from_str(line).expect("NDJSON line");
                assert!(line.contains(ID), "{format:?} carries the id");
                assert!(doc.is_object());
            }
        }
    }
    assert_eq!(render_many(&[], AlertFormat::Ecs, &ctx()), "");
}

#[test]
fn alert_without_records_renders_in_every_format() {
    let alert = no_records();
    for format in AlertFormat::ALL {
        let text = render_one(&alert, format, &ctx());
        assert!(text.contains(ID), "{format:?} carries the id");
    }
    let ecs = to_ecs(&alert, &ctx());
    assert!(ecs.get("source").is_none() && ecs.get("host").is_none());
    assert_eq!(ecs["message"], "anomaly rate 12.5% exceeds 10.0%.");
    let ocsf = to_ocsf(&alert, &ctx());
    assert!(ocsf.get("evidences").is_none());
    assert!(ocsf.get("confidence_score").is_none());
    let (_, ext) = parse_cef(&to_cef(&alert, &ctx()));
    assert!(!ext.contains_key("src") && !ext.contains_key("cs3") && !ext.contains_key("cfp2"));
}

#[test]
fn non_finite_numbers_become_null_not_invalid_json() {
    let mut alert = fixture();
    alert.summary.anomaly_rate = f64::NAN;
    alert.records[0].score = f64::INFINITY;
    alert.records[0]
        .values
        .insert("bytes_sent".to_string(), f64::NAN);
    alert.records[0].explanation[0].value = f64::NEG_INFINITY;
    for format in [
        AlertFormat::Json,
        AlertFormat::Ecs,
        AlertFormat::Ocsf,
        AlertFormat::SplunkHec,
    ] {
        let text = render_one(&alert, format, &ctx());
        serde_json::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("{format:?} invalid JSON ({e}): {text}"));
    }
    let ecs = to_ecs(&alert, &ctx());
    assert_eq!(ecs["netsentinel"]["summary"]["anomaly_rate"], Value::Null);
    assert!(
        ecs["source"].get("bytes").is_none(),
        "NaN bytes are left out"
    );
    assert!(ecs.get("network").is_none());
    assert!(to_ocsf(&alert, &ctx()).get("confidence_score").is_none());
    let (_, ext) = parse_cef(&to_cef(&alert, &ctx()));
    assert!(!ext.contains_key("cfp1") && !ext.contains_key("cfp2") && !ext.contains_key("out"));
}

#[test]
fn formats_parse_and_name_their_content_types() {
    assert_eq!(
        AlertFormat::parse("splunk_hec"),
        Some(AlertFormat::SplunkHec)
    );
    assert_eq!(AlertFormat::parse("ECS"), Some(AlertFormat::Ecs));
    assert_eq!(AlertFormat::parse("leef"), None);
    assert_eq!(AlertFormat::Ocsf.content_type(), "application/json");
    assert_eq!(
        AlertFormat::Ocsf.content_type_many(),
        "application/x-ndjson"
    );
    assert!(AlertFormat::Cef.content_type().starts_with("text/plain"));
    assert!(
        AlertFormat::Cef
            .content_type_many()
            .starts_with("text/plain")
    );
}

/// A small CEF reader, independent of the writer: splits the header on unescaped `|`, then the
/// extension at each unescaped `=` preceded by a key, and undoes the escapes.
fn parse_cef(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
    assert!(!line.contains('\n') && !line.contains('\r'), "one line");
    let rest = line.strip_prefix("CEF:").expect("starts with CEF:");
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = rest.chars();
    let extension: Vec<char> = loop {
        match chars.next() {
            Some('\\') => field.push(chars.next().expect("escape has a character")),
            Some('|') => {
                header.push(std::mem::take(&mut field));
                if header.len() == 7 {
                    break chars.collect();
                }
            }
            Some(c) => field.push(c),
            None => panic!("header has fewer than 7 fields: {line}"),
        }
    };

    let mut separators = Vec::new();
    let mut i = 0;
    while i < extension.len() {
        match extension[i] {
            '\\' => i += 2,
            '=' => {
                separators.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    let key_start = |eq: usize| {
        let mut s = eq;
        while s > 0 && extension[s - 1].is_ascii_alphanumeric() {
            s -= 1;
        }
        assert!(s < eq, "empty key before '=' at {eq}: {line}");
        assert!(
            s == 0 || extension[s - 1] == ' ',
            "key not after a space: {line}"
        );
        s
    };
    let mut pairs = BTreeMap::new();
    for (n, &eq) in separators.iter().enumerate() {
        let key: String = extension[key_start(eq)..eq].iter().collect();
        let end = separators
            .get(n + 1)
            .map_or(extension.len(), |&next| key_start(next) - 1);
        let mut value = String::new();
        let mut raw = extension[eq + 1..end].iter();
        while let Some(&c) = raw.next() {
            if c == '\\' {
                match raw.next() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some(&other) => value.push(other),
                    None => panic!("dangling escape in {key}"),
                }
            } else {
                value.push(c);
            }
        }
        assert!(
            pairs.insert(key.clone(), value).is_none(),
            "duplicate key {key}"
        );
    }
    (header, pairs)
}

#[test]
fn render_within_stops_before_the_line_that_passes_the_budget() {
    let alerts = [fixture(), acknowledged(), no_records()];
    let whole = render_many(&alerts, AlertFormat::Cef, &ctx());
    let first = render_one(&alerts[0], AlertFormat::Cef, &ctx()).len() + 1;
    let second = render_one(&alerts[1], AlertFormat::Cef, &ctx()).len() + 1;
    assert_eq!(
        render_within(&alerts, AlertFormat::Cef, &ctx(), usize::MAX),
        (whole.clone(), alerts.len())
    );
    let (text, n) = render_within(&alerts, AlertFormat::Cef, &ctx(), first + second);
    assert_eq!(n, 2);
    assert_eq!(text, whole[..first + second]);
    let (text, n) = render_within(&alerts, AlertFormat::Cef, &ctx(), first + second - 1);
    assert_eq!((text.len(), n), (first, 1));
    // The first alert is always written, however small the budget.
    assert_eq!(render_within(&alerts, AlertFormat::Cef, &ctx(), 1).1, 1);
}

#[test]
fn each_format_expresses_an_incidents_event_its_own_way() {
    use netsentinel::store::alerts::AlertEvent;
    let mut alert = fixture();
    alert.entity = Some("10.0.0.5".into());
    alert.count = 15;
    for (event, activity, ecs_type) in [
        (AlertEvent::Opened, 1, "start"),
        (AlertEvent::Escalated, 2, "change"),
        (AlertEvent::Renotified, 2, "change"),
        (AlertEvent::Resolved, 3, "end"),
    ] {
        let ctx = ctx().with_event(event);
        let ocsf = to_ocsf(&alert, &ctx);
        assert_eq!(ocsf["activity_id"], activity, "{event:?}");
        assert_eq!(ocsf["type_uid"], 200_400 + activity);
        assert_eq!(ocsf["count"], 15);
        assert_eq!(ocsf["unmapped"]["event"], event.as_str());
        let ecs = to_ecs(&alert, &ctx);
        assert_eq!(ecs["event"]["type"], json!([ecs_type]));
        assert_eq!(ecs["event"]["action"], event.as_str());
        assert_eq!(ecs["netsentinel"]["entity"], "10.0.0.5");
        let cef = to_cef(&alert, &ctx);
        assert!(cef.contains(&format!(" act={} ", event.as_str())), "{cef}");
        assert!(
            cef.contains("cs5=10.0.0.5") && cef.contains("cn3=15"),
            "{cef}"
        );
        let hec = to_splunk_hec(&alert, &ctx);
        assert_eq!(hec["fields"]["event_type"], event.as_str());
        let mine: Value =
            serde_json::from_str(&render_one(&alert, AlertFormat::Json, &ctx)).unwrap();
        assert_eq!(mine["event"], event.as_str());
        assert_eq!(mine["count"], 15);
    }
    // An export (no event) of an open incident is a Create and of a resolved one a Close.
    assert_eq!(to_ocsf(&alert, &ctx())["activity_id"], 1);
    assert_eq!(to_ecs(&alert, &ctx())["event"]["type"], json!(["info"]));
    assert!(!to_cef(&alert, &ctx()).contains(" act="));
    alert.status = AlertStatus::Resolved;
    alert.resolved_at = Some(created());
    let ocsf = to_ocsf(&alert, &ctx());
    assert_eq!(
        (ocsf["activity_id"].clone(), ocsf["status_id"].clone()),
        (json!(3), json!(4))
    );
    assert_eq!(ocsf["status"], "Resolved");
    assert_eq!(to_ecs(&alert, &ctx())["event"]["type"], json!(["end"]));
}
