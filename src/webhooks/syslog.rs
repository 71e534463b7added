//! Syslog sinks: each alert as one RFC 5424 message over TCP (or TLS), framed by octet counting.
//!
//! A syslog collector (syslog-ng, rsyslog, a SIEM's syslog input) is where many SOCs take CEF
//! in. A sink with `"type": "syslog"` (or a `tcp://`, `syslog://` or `tls://` URL) is fed from
//! the same outbox as the webhooks, so it has their guarantees: at least once, retried with
//! backoff, and restart-safe.
//!
//! - **Framing**: RFC 6587 octet counting (`LEN SP MSG`, also RFC 5425's framing over TLS), so a
//!   message is never split, whatever its length or content: a receiver reads exactly `LEN`
//!   bytes. (Line framing would split an alert at any newline and at the receiver's line limit.)
//! - **Message**: `<PRI>1 TIMESTAMP HOSTNAME netsentinel PROCID EVENT [netsentinel@32473
//!   alert_id="…" key="…" detector="…" severity="…"] BOM MSG`, where EVENT is the delivery's
//!   (`opened`, `escalated`, `renotified`, `resolved`), MSG is the alert rendered in the sink's
//!   format (`cef`, `json`, `ecs`, `ocsf` or `splunk_hec`) expressing that event, the priority's
//!   severity follows the alert's, the timestamp is when the alert was raised, and the
//!   structured data carries the alert id and the delivery's idempotency key so a receiver can
//!   drop the duplicates that at-least-once allows.
//!   32473 is the enterprise number RFC 5612 reserves for documentation and examples.
//! - **Delivery**: one connection per message. After writing, netsentinel closes its sending
//!   side and waits for the collector to close: a collector closes only once it has read
//!   everything the connection carried, so the message counts as delivered only when it was
//!   received, not merely handed to the local kernel. A connection that fails or stays open
//!   past the sink's timeout is a failed attempt, retried from the outbox.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::siem::formats::{AlertFormat, ExportContext, render_one};
use crate::store::outbox::DueDelivery;

/// `tcp://` and `syslog://` default to the syslog-conn port (RFC 6587 / IANA 601).
pub const DEFAULT_TCP_PORT: u16 = 601;
/// `tls://` defaults to syslog over TLS (RFC 5425).
pub const DEFAULT_TLS_PORT: u16 = 6514;
/// The default facility, `local0` (16).
pub const DEFAULT_FACILITY: u8 = 16;
/// Enterprise number of our structured-data element: RFC 5612's, for documentation.
const SD_ID: &str = "netsentinel@32473";
/// Bytes the collector may send back before closing (it should send none); more is read and dropped.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Facility names as RFC 5424 numbers them.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The facility number of a name such as `local0` or `authpriv`.
pub fn facility_number(name: &str) -> Option<u8> {
    FACILITIES
        .iter()
        .position(|f| f.eq_ignore_ascii_case(name))
        .map(|i| i as u8)
}

/// Where and how a syslog sink connects.
#[derive(Clone)]
pub struct SyslogTarget {
    pub host: String,
    pub port: u16,
    /// RFC 5424 facility, 0–23.
    pub facility: u8,
    /// Present for `tls://` sinks.
    pub tls: Option<Tls>,
}

impl std::fmt::Debug for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("facility", &self.facility)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A TLS client for one sink: the trusted roots (the sink's `ca_file`, or the public web roots)
/// and the name the collector's certificate must carry.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl Tls {
    /// Trusts the PEM certificates in `ca_file` (or, without one, the public web roots) and
    /// expects `host` in the collector's certificate.
    pub fn new(host: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("ca_file {} is not PEM: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!(
                        "ca_file {} holds no PEM certificate",
                        path.display()
                    ));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "ca_file {} has an unusable certificate: {e}",
                            path.display()
                        )
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host:?} is not a host name TLS can check"))?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// RFC 5424 severity (0 emergency … 7 debug) of an alert's 0–100 severity.
fn syslog_severity(severity: u8) -> u8 {
    match severity {
        90.. => 2, // critical
        75.. => 3, // error
        50.. => 4, // warning
        _ => 5,    // notice
    }
}

/// PRINTUSASCII without spaces, at most `max` characters, or the nil value `-`.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn param_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The RFC 5424 message for one delivery: its event (`opened`, `escalated`, …) as MSGID, the
/// alert id and the delivery's de-duplication key in structured data, the alert rendered in
/// `format` (with `ctx`'s event) as MSG.
pub fn message(
    due: &DueDelivery,
    format: AlertFormat,
    ctx: &ExportContext,
    facility: u8,
) -> String {
    let alert = &due.alert;
    let pri = u16::from(facility) * 8 + u16::from(syslog_severity(alert.severity));
    let mut msg = format!(
        "<{pri}>1 {} {} netsentinel {} {} [{SD_ID} alert_id=\"",
        alert
            .created_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        header_field(ctx.host.unwrap_or("-"), 255),
        std::process::id(),
        header_field(due.event.as_str(), 32),
    );
    param_value(&mut msg, &alert.id);
    msg.push_str("\" key=\"");
    param_value(&mut msg, &due.idempotency_key());
    msg.push_str("\" detector=\"");
    param_value(&mut msg, &alert.detector);
    let _ = write!(msg, "\" severity=\"{}\"] \u{feff}", alert.severity);
    let body = render_one(alert, format, ctx);
    msg.push_str(body.trim_end_matches('\n'));
    msg
}

/// Octet-counting frame of one message: its length in bytes, a space, the message.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// Sends one framed message and waits until the collector has closed the connection (so it has
/// read it), all within `timeout`.
pub async fn send(target: &SyslogTarget, frame: &[u8], timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        tcp.set_nodelay(true).ok();
        match &target.tls {
            None => exchange(tcp, frame).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                exchange(stream, frame).await
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("timed out after {} s", timeout.as_secs()))?
}

/// Writes the frame, closes the sending side, and reads until the collector closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    frame: &[u8],
) -> Result<(), String> {
    stream
        .write_all(frame)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    stream
        .shutdown()
        .await
        .map_err(|e| format!("closing the connection failed: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut seen = 0usize;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => {
                seen += n;
                if seen > MAX_REPLY_BYTES {
                    return Err("the collector keeps sending data instead of closing".into());
                }
            }
            // A TLS collector may close without close_notify; the message was read by then.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("the collector closed with an error: {e}")),
        }
    }
}

/// Renders and sends one delivery to `target` once.
pub async fn deliver(
    target: &SyslogTarget,
    format: AlertFormat,
    due: &DueDelivery,
    timeout: Duration,
) -> Result<(), String> {
    let ctx = crate::siem::local_context().with_event(due.event);
    let text = message(due, format, &ctx, target.facility);
    send(target, &frame(&text), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::alerts::Alert;
    use crate::store::incidents::AlertEvent;

    fn alert(severity: u8, detector: &str) -> Alert {
        let mut a = crate::store::alerts::tests::alert(
            "2026-11-30T09:15:02.123456789Z".parse().unwrap(),
            severity,
        );
        a.detector = detector.into();
        a
    }

    fn due(alert: Alert, seq: u32, event: AlertEvent) -> DueDelivery {
        DueDelivery {
            alert,
            sink: "collector".into(),
            attempts: 0,
            seq,
            event,
            claim: 1,
        }
    }

    #[test]
    fn a_message_is_rfc_5424_with_the_event_and_alert_id_in_structured_data() {
        let ctx = ExportContext::new(Some("sensor 1"));
        let a = alert(80, "dns\"]x");
        let id = a.id.clone();
        let m = message(
            &due(a.clone(), 0, AlertEvent::Opened),
            AlertFormat::Cef,
            &ctx,
            DEFAULT_FACILITY,
        );
        // local0 (16) * 8 + error (3)
        let head = format!(
            "<131>1 2026-11-30T09:15:02.123456Z sensor1 netsentinel {} opened [netsentinel@32473 alert_id=\"{id}\" key=\"{id}\" detector=\"dns\\\"\\]x\" severity=\"80\"] \u{feff}CEF:",
            std::process::id(),
        );
        assert!(m.starts_with(&head), "{m}");
        assert!(!m.contains('\n'), "{m}");
        let ctx = ctx.with_event(AlertEvent::Escalated);
        let json = message(
            &due(a, 2, AlertEvent::Escalated),
            AlertFormat::Json,
            &ctx,
            4,
        );
        assert!(
            json.contains(&format!(
                " escalated [netsentinel@32473 alert_id=\"{id}\" key=\"{id}/2\""
            )),
            "{json}"
        );
        let body = json.split_once('\u{feff}').unwrap().1;
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["id"], id.as_str());
        assert_eq!(parsed["event"], "escalated");
        assert!(json.starts_with("<35>1 "), "auth (4) * 8 + error: {json}");
    }

    #[test]
    fn severities_map_to_syslog_levels_and_facilities_by_name() {
        assert_eq!(
            [0, 49, 50, 74, 75, 89, 90, 100].map(syslog_severity),
            [5, 5, 4, 4, 3, 3, 2, 2]
        );
        assert_eq!(facility_number("local0"), Some(16));
        assert_eq!(facility_number("AUTHPRIV"), Some(10));
        assert_eq!(facility_number("local8"), None);
    }

    #[test]
    fn frames_count_bytes_not_characters() {
        assert_eq!(frame("é x"), b"4 \xc3\xa9 x".to_vec());
        let long = "a".repeat(20_000);
        let f = frame(&long);
        assert!(f.starts_with(b"20000 a"));
        assert_eq!(f.len(), 20_006);
    }

    #[tokio::test]
    async fn send_waits_for_the_collector_to_read_and_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let target = SyslogTarget {
            host: "127.0.0.1".into(),
            port,
            facility: DEFAULT_FACILITY,
            tls: None,
        };
        send(&target, b"5 hello", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap(), b"5 hello");
    }

    #[tokio::test]
    async fn a_collector_that_never_closes_is_a_failed_attempt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let target = SyslogTarget {
            host: "127.0.0.1".into(),
            port,
            facility: DEFAULT_FACILITY,
            tls: None,
        };
        let err = send(&target, b"5 hello", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        holder.abort();
        let closed = SyslogTarget { port: 1, ..target };
        let err = send(&closed, b"5 hello", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
