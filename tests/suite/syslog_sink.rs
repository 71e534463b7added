//! Syslog sinks against a real collector: Debian's syslog-ng (`syslog-ng-core`) listens on two
//! loopback ports, plain TCP and TLS (a CA made here), with RFC 5424 octet-counted framing, and
//! writes each message it receives to a file. netsentinel raises an alert while the collector is
//! down, is restarted, and then raises one more than 8 KiB long: the collector receives every
//! alert exactly once per sink, whole, and nothing is re-sent after a second restart.
//!
//! Without syslog-ng the test prints a loud SKIP and passes, unless `CI` is set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netsentinel::config::Settings;
use serde_json::{Value, json};

use crate::support::app::{TestApp, spawn_app_in};
use crate::support::responses::json_ok;
use crate::support::syslog_ng::{Binaries, SyslogNg};
use crate::support::{eventually, traffic::bursty_batch};

const DEADLINE: Duration = Duration::from_secs(60);
/// The structured-data element netsentinel puts the alert id in.
const SD: &str = ".SDATA.netsentinel@32473";

/// A CA and a `localhost` server certificate it signed, as PEM files in `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "netsentinel test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A collector in the style of the README's: RFC 5424 over TCP on `tcp_port` and over TLS on
/// `tls_port`, one line per received message in `out_tcp` / `out_tls`: the alert id from the
/// structured data, a tab, the message length, a tab, the message.
fn collector_conf(dir: &Path, tcp_port: u16, tls_port: u16, cert: &Path, key: &Path) -> String {
    let template =
        format!("\"${{{SD}.alert_id}}\\t${{MSGID}}\\t$(length ${{MSG}})\\t${{MSG}}\\n\"");
    format!(
        r#"@version: 3.38
options {{ stats-freq(0); }};
source s_tcp {{ syslog(ip("127.0.0.1") port({tcp_port}) transport("tcp") log-msg-size(1048576)); }};
source s_tls {{ syslog(ip("127.0.0.1") port({tls_port}) transport("tls") log-msg-size(1048576)
    tls(key-file("{key}") cert-file("{cert}") peer-verify(optional-untrusted))); }};
destination d_tcp {{ file("{out_tcp}" template({template}) template-escape(no)); }};
destination d_tls {{ file("{out_tls}" template({template}) template-escape(no)); }};
log {{ source(s_tcp); destination(d_tcp); }};
log {{ source(s_tls); destination(d_tls); }};
"#,
        key = key.display(),
        cert = cert.display(),
        out_tcp = dir.join("out_tcp").display(),
        out_tls = dir.join("out_tls").display(),
    )
}

/// One received message.
#[derive(Debug)]
struct Received {
    alert_id: String,
    msgid: String,
    /// The message's length as syslog-ng counted it.
    length: usize,
    msg: String,
}

fn received(path: &Path) -> Vec<Received> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut cols = line.splitn(4, '\t');
            let mut next = || cols.next().unwrap_or_default().to_owned();
            Received {
                alert_id: next(),
                msgid: next(),
                length: next().parse().unwrap_or(0),
                msg: next(),
            }
        })
        .collect()
}

fn counts(messages: &[Received]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for m in messages {
        *out.entry(m.alert_id.clone()).or_default() += 1;
    }
    out
}

/// A batch that raises an alert whose records each carry a dozen echoed strings of 1 KiB.
fn big_batch(seed: u64) -> Value {
    let mut batch = bursty_batch(seed);
    for record in batch.as_array_mut().unwrap() {
        for i in 0..12 {
            record[format!("note_{i}")] = json!(format!("{i}").repeat(1024));
        }
    }
    batch
}

async fn alert_of(app: &TestApp, batch: &Value) -> String {
    let scored = app.score(batch.as_array().unwrap()).await;
    scored["alert"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the batch raises an alert: {scored}"))
        .to_owned()
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let alert = json_ok(app.get(&format!("/v1/alerts/{id}")).await).await;
    alert["deliveries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_syslog_ng_collector_gets_every_alert_once_whole_across_restarts_over_tcp_and_tls() {
    let Some(bins) = Binaries::find_or_skip("syslog_sink", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let (tcp_port, tls_port) = (free_port(), free_port());
    let sinks = dir.path().join("sinks.json");
    std::fs::write(
        &sinks,
        json!({"sinks": [
            {"name": "collector", "url": format!("tcp://127.0.0.1:{tcp_port}"), "format": "json",
             "timeout_secs": 5},
            {"name": "collector-tls", "type": "syslog", "url": format!("tls://localhost:{tls_port}"),
             "format": "cef", "ca_file": ca, "facility": "local4", "timeout_secs": 5},
        ]})
        .to_string(),
    )
    .unwrap();
    let settings = Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        webhooks_file: Some(sinks),
        webhook_retry_base_ms: 20,
        webhook_retry_cap_ms: 200,
        ..Settings::default()
    };
    let data = Arc::new(tempfile::tempdir().unwrap());

    // 1. An alert while the collector is down: attempts fail and are retried.
    let app = spawn_app_in(data.clone(), settings.clone()).await;
    app.fit_small(7).await;
    let first = alert_of(&app, &bursty_batch(1)).await;
    eventually("failed attempts to both sinks", DEADLINE, || async {
        let d = deliveries(&app, &first).await;
        (d.len() == 2
            && d.iter().all(|d| {
                d["state"] == "pending"
                    && d["attempts"].as_u64() >= Some(1)
                    && d["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("connect"))
            }))
        .then_some(())
    })
    .await;

    // 2. A graceful restart, then the collector comes up: the first alert arrives.
    let app = app.restart().await;
    let sng = SyslogNg::start(
        &bins,
        dir.path(),
        &collector_conf(dir.path(), tcp_port, tls_port, &cert, &key),
    );
    // 3. An alert longer than 8 KiB.
    let second = alert_of(&app, &big_batch(2)).await;
    for id in [&first, &second] {
        eventually(
            &format!("{id} delivered to both sinks"),
            DEADLINE,
            || async {
                let d = deliveries(&app, id).await;
                (d.len() == 2 && d.iter().all(|d| d["state"] == "delivered")).then_some(())
            },
        )
        .await;
    }
    let tcp_path = dir.path().join("out_tcp");
    let tls_path = dir.path().join("out_tls");
    eventually(
        "syslog-ng writing both alerts to both files",
        DEADLINE,
        || async {
            (received(&tcp_path).len() >= 2 && received(&tls_path).len() >= 2).then_some(())
        },
    )
    .await;

    // 4. Another restart: nothing delivered is sent again. The delivery loops poll the outbox
    // at least once a second; give them a few rounds.
    let app = app.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expected = HashMap::from([(first.clone(), 1), (second.clone(), 1)]);
    let tcp = received(&tcp_path);
    let tls = received(&tls_path);
    assert_eq!(counts(&tcp), expected, "tcp: {:?}\n{}", tcp, sng.log());
    assert_eq!(counts(&tls), expected, "tls: {:?}\n{}", tls, sng.log());

    // Whole messages: the long JSON alert parses and is the stored alert, byte for byte in
    // length; every message is RFC 5424 with the event as MSGID (batch alerts: `opened`).
    let big = tcp.iter().find(|m| m.alert_id == second).unwrap();
    let body = big.msg.trim_start_matches('\u{feff}');
    assert!(
        big.length > 8 * 1024,
        "the alert is over 8 KiB: {}",
        big.length
    );
    assert_eq!(
        big.length,
        big.msg.len(),
        "syslog-ng's length is the line's"
    );
    let parsed: Value = serde_json::from_str(body).expect("one whole JSON alert");
    assert_eq!(parsed["id"], second.as_str());
    let stored = json_ok(app.get(&format!("/v1/alerts/{second}")).await).await;
    assert_eq!(parsed["records"], stored["records"]);
    for m in tcp.iter().chain(&tls) {
        assert_eq!(m.msgid, "opened", "{m:?}");
    }
    for m in &tls {
        assert!(
            m.msg.trim_start_matches('\u{feff}').starts_with("CEF:0|"),
            "{m:?}"
        );
        assert!(m.msg.contains(&m.alert_id), "{m:?}");
    }
}

#[tokio::test]
async fn a_webhook_url_of_tcp_or_tls_is_a_syslog_sink_and_wrong_settings_stop_startup() {
    let data = Arc::new(tempfile::tempdir().unwrap());
    let ok = Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        webhook_url: Some("tcp://127.0.0.1:5514".into()),
        ..Settings::default()
    };
    let sinks = netsentinel::webhooks::config::sinks_from_settings(&ok).unwrap();
    assert_eq!(sinks[0].kind(), "syslog");
    assert_eq!(sinks[0].origin(), "tcp://127.0.0.1:5514");
    let app = spawn_app_in(data.clone(), ok).await;
    drop(app);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sinks.json");
    // Each case: a sink, then `=>` and what the refusal must say.
    for case in [
        r#"{"name": "s", "url": "tcp://x:1", "secret": "k"} => webhook sinks only"#,
        r#"{"name": "s", "type": "syslog", "url": "https://x"} => tcp://, syslog:// or tls://"#,
        r#"{"name": "s", "url": "tcp://x:1", "ca_file": "/etc/ca.pem"} => ca_file needs a tls://"#,
        r#"{"name": "s", "url": "tls://x:1", "ca_file": "/no/such/ca.pem"} => /no/such/ca.pem"#,
        r#"{"name": "s", "url": "syslog://x", "facility": "local9"} => facility"#,
        r#"{"name": "s", "url": "https://x", "facility": "local0"} => syslog sinks only"#,
    ] {
        let (sink, expected) = case.split_once(" => ").unwrap();
        let sink: Value = serde_json::from_str(sink).unwrap();
        std::fs::write(&path, json!({ "sinks": [sink] }).to_string()).unwrap();
        let err = netsentinel::webhooks::config::sinks_from_file(&path, &|_| None)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{sink}: {err}");
    }
    std::fs::write(
        &path,
        json!({"sinks": [{"name": "s", "url": "syslog://collector.example"},
                         {"name": "t", "url": "tls://collector.example"}]})
        .to_string(),
    )
    .unwrap();
    let sinks = netsentinel::webhooks::config::sinks_from_file(&path, &|_| None).unwrap();
    assert_eq!(sinks[0].origin(), "syslog://collector.example:601");
    assert_eq!(sinks[1].origin(), "tls://collector.example:6514");
}
