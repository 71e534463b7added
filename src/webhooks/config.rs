//! Webhook sinks as configured: the JSON sinks file and the one-sink settings, checked at startup, secrets redacted.
//!
//! A sinks file looks like
//!
//! ```json
//! {"sinks": [
//!   {"name": "splunk", "url": "https://splunk.example:8088/services/collector/event",
//!    "format": "splunk_hec", "headers": {"Authorization": "Splunk 00000000-0000-0000-0000-000000000000"}},
//!   {"name": "soar", "url": "https://soar.example/hooks/netsentinel", "format": "json",
//!    "secret_env": "SOAR_WEBHOOK_SECRET", "timeout_secs": 5, "max_attempts": 50},
//!   {"name": "collector", "type": "syslog", "url": "tls://syslog.example:6514", "format": "cef",
//!    "ca_file": "/etc/netsentinel/collector-ca.pem", "facility": "local4"}
//! ]}
//! ```
//!
//! A sink's `type` is `webhook` (HTTP POST, the default for `http://` and `https://` URLs) or
//! `syslog` (RFC 5424 over TCP, the default for `tcp://`, `syslog://` and `tls://` URLs; see
//! [`super::syslog`]).
//!
//! Everything that can be wrong with it is reported before the service listens, naming the
//! sink and the field. Secrets and header values are kept out of every `Debug` and error
//! message, and a sink's URL is shown by its origin only (paths and queries carry tokens).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::syslog::{self, SyslogTarget};
use crate::config::Settings;
use crate::siem::formats::AlertFormat;

/// Name of the sink given by `--webhook-url`.
pub const SETTINGS_SINK_NAME: &str = "webhook";
/// How long one delivery may take unless the sink says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Longest sink name: it is a metric label and part of the outbox key.
const MAX_NAME_LEN: usize = 64;
/// Headers a sink may not set: ours carry the delivery contract, the rest belong to HTTP itself.
const RESERVED_HEADERS: &[&str] = &[
    "idempotency-key",
    "x-netsentinel-alert-id",
    "x-netsentinel-signature",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from a setting; empty is refused, since an empty HMAC key signs nothing.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            Err("the webhook secret is empty".into())
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A checked webhook sink: where alerts go, in which format, signed with what.
#[derive(Clone)]
pub struct Sink {
    /// Unique name: the key in the outbox, `deliveries[].sink`, and the metric label.
    pub name: String,
    pub url: Url,
    pub format: AlertFormat,
    /// HMAC-SHA256 key for `X-Netsentinel-Signature`; unsigned without one.
    pub secret: Option<Secret>,
    /// Extra headers, values marked sensitive.
    pub headers: HeaderMap,
    pub timeout: Duration,
    /// Give up after this many attempts; `None` retries for as long as it takes.
    pub max_attempts: Option<u32>,
    /// How alerts travel: HTTP POST, or syslog over TCP.
    pub transport: Transport,
}

/// How a sink's alerts travel.
#[derive(Clone, Debug)]
pub enum Transport {
    /// One signed HTTP POST per alert.
    Webhook,
    /// One RFC 5424 message per alert over TCP or TLS.
    Syslog(SyslogTarget),
}

impl Sink {
    /// `scheme://host:port` of the URL: enough to tell sinks apart in logs, without the path or
    /// query where tokens tend to live.
    pub fn origin(&self) -> String {
        match &self.transport {
            Transport::Webhook => self.url.origin().ascii_serialization(),
            Transport::Syslog(t) => format!("{}://{}:{}", self.url.scheme(), t.host, t.port),
        }
    }

    /// `webhook` or `syslog`, as the sinks file spells it.
    pub fn kind(&self) -> &'static str {
        match self.transport {
            Transport::Webhook => "webhook",
            Transport::Syslog(_) => "syslog",
        }
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("url", &self.origin())
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("transport", &self.transport)
            .finish()
    }
}

/// Why the webhook configuration was refused at startup.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("cannot read webhooks file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "webhooks file {path} is not valid: {source}; expected {{\"sinks\": [{{\"name\": \"…\", \"url\": \"https://…\", \"format\": \"json\"}}]}}"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("webhook sink {sink:?}: {reason}")]
    Invalid { sink: String, reason: String },
    #[error("webhook sink name {0:?} is used more than once; sink names must be unique")]
    DuplicateName(String),
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// The sinks file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinksFile {
    sinks: Vec<SinkEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkEntry {
    name: String,
    #[serde(default, rename = "type")]
    kind: Option<SinkKind>,
    url: String,
    #[serde(default)]
    format: Option<AlertFormat>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    max_attempts: Option<u32>,
    /// Syslog over TLS: PEM certificates to trust instead of the public web roots.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Syslog: the RFC 5424 facility by name (default `local0`).
    #[serde(default)]
    facility: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SinkKind {
    Webhook,
    Syslog,
}

impl fmt::Debug for SinkEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every configured sink: the sinks file's, then the one from `--webhook-url`.
pub fn sinks_from_settings(settings: &Settings) -> Result<Vec<Sink>, WebhookConfigError> {
    let mut sinks = match &settings.webhooks_file {
        Some(path) => sinks_from_file(path, &|var| std::env::var(var).ok())?,
        None => Vec::new(),
    };
    if let Some(url) = &settings.webhook_url {
        let entry = SinkEntry {
            name: SETTINGS_SINK_NAME.into(),
            kind: None,
            url: url.clone(),
            format: Some(settings.webhook_format),
            secret: None,
            secret_env: None,
            headers: BTreeMap::new(),
            timeout_secs: None,
            max_attempts: None,
            ca_file: None,
            facility: None,
        };
        let mut sink = check(entry, &|_| None)?;
        sink.secret = settings.webhook_secret.clone();
        sinks.push(sink);
    }
    unique(&sinks)?;
    Ok(sinks)
}

/// The sinks in the JSON file at `path`; `env` looks up `secret_env` variables.
pub fn sinks_from_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Sink>, WebhookConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebhookConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_sinks(&text, env).map_err(|e| match e {
        ParseError::Json(source) => WebhookConfigError::Parse {
            path: path.to_path_buf(),
            source,
        },
        ParseError::Config(e) => e,
    })
}

enum ParseError {
    Json(serde_json::Error),
    Config(WebhookConfigError),
}

fn parse_sinks(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Sink>, ParseError> {
    let file: SinksFile = serde_json::from_str(text).map_err(ParseError::Json)?;
    let sinks = file
        .sinks
        .into_iter()
        .map(|e| check(e, env))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ParseError::Config)?;
    unique(&sinks).map_err(ParseError::Config)?;
    Ok(sinks)
}

fn unique(sinks: &[Sink]) -> Result<(), WebhookConfigError> {
    let mut seen = std::collections::HashSet::new();
    for s in sinks {
        if !seen.insert(s.name.as_str()) {
            return Err(WebhookConfigError::DuplicateName(s.name.clone()));
        }
    }
    Ok(())
}

/// Turns one entry into a sink, or says which field is wrong (never quoting a secret).
fn check(e: SinkEntry, env: &dyn Fn(&str) -> Option<String>) -> Result<Sink, WebhookConfigError> {
    let shown: String = e.name.chars().take(MAX_NAME_LEN).collect();
    let invalid = |reason: String| WebhookConfigError::Invalid {
        sink: shown.clone(),
        reason,
    };
    if e.name.is_empty()
        || e.name.len() > MAX_NAME_LEN
        || !e
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid(format!(
            "name must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '_', '-' or '.'"
        )));
    }
    let url = Url::parse(&e.url).map_err(|err| invalid(format!("url is not a URL: {err}")))?;
    let host = url.host_str().unwrap_or_default();
    let kind = match (url.scheme(), e.kind) {
        (_, _) if host.is_empty() => None,
        ("http" | "https", None | Some(SinkKind::Webhook)) => Some(SinkKind::Webhook),
        ("tcp" | "syslog" | "tls", None | Some(SinkKind::Syslog)) => Some(SinkKind::Syslog),
        _ => None,
    };
    let Some(kind) = kind else {
        return Err(invalid(match e.kind {
            Some(SinkKind::Syslog) => {
                "a syslog sink's url must be tcp://, syslog:// or tls:// with a host".into()
            }
            _ => "url must be an http:// or https:// URL with a host (or tcp://, syslog:// or tls:// for a syslog sink)".into(),
        }));
    };
    let transport = match kind {
        SinkKind::Webhook => {
            if e.ca_file.is_some() || e.facility.is_some() {
                return Err(invalid(
                    "ca_file and facility apply to syslog sinks only".into(),
                ));
            }
            Transport::Webhook
        }
        SinkKind::Syslog => syslog_target(&e, &url).map_err(invalid)?,
    };
    let secret = match (e.secret, e.secret_env) {
        (Some(_), Some(_)) => {
            return Err(invalid("give either secret or secret_env, not both".into()));
        }
        (Some(s), None) => Some(s),
        (None, Some(var)) => Some(env(&var).ok_or_else(|| {
            invalid(format!(
                "secret_env names {var:?}, which is not set in the environment"
            ))
        })?),
        (None, None) => None,
    };
    let secret = secret
        .map(|s| Secret::parse(&s))
        .transpose()
        .map_err(invalid)?;
    let mut headers = HeaderMap::new();
    for (name, value) in e.headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            invalid(format!(
                "header name {name:?} is not a valid HTTP header name"
            ))
        })?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(invalid(format!(
                "header {name:?} is set by netsentinel and cannot be configured"
            )));
        }
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            invalid(format!(
                "the value of header {name:?} has characters HTTP headers cannot carry"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    let timeout_secs = e.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=300).contains(&timeout_secs) {
        return Err(invalid("timeout_secs must be between 1 and 300".into()));
    }
    if e.max_attempts == Some(0) {
        return Err(invalid(
            "max_attempts must be at least 1 (or null: retry until delivered)".into(),
        ));
    }
    Ok(Sink {
        name: e.name,
        url,
        format: e.format.unwrap_or(AlertFormat::Json),
        secret,
        headers,
        timeout: Duration::from_secs(timeout_secs),
        max_attempts: e.max_attempts,
        transport,
    })
}

/// The connection settings of a syslog sink, or what is wrong with them.
fn syslog_target(e: &SinkEntry, url: &Url) -> Result<Transport, String> {
    if e.secret.is_some() || e.secret_env.is_some() || !e.headers.is_empty() {
        return Err("secret, secret_env and headers apply to webhook sinks only".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || !url.username().is_empty() {
        return Err(
            "a syslog sink's url is scheme://host:port, without a path, query or user".into(),
        );
    }
    let tls = url.scheme() == "tls";
    if e.ca_file.is_some() && !tls {
        return Err("ca_file needs a tls:// url".into());
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let facility = match &e.facility {
        None => syslog::DEFAULT_FACILITY,
        Some(name) => syslog::facility_number(name).ok_or_else(|| {
            format!("facility {name:?} is not a syslog facility (kern, user, … local0 … local7)")
        })?,
    };
    let tls = tls
        .then(|| syslog::Tls::new(&host, e.ca_file.as_deref()))
        .transpose()?;
    let default_port = if tls.is_some() {
        syslog::DEFAULT_TLS_PORT
    } else {
        syslog::DEFAULT_TCP_PORT
    };
    Ok(Transport::Syslog(SyslogTarget {
        host,
        port: url.port().unwrap_or(default_port),
        facility,
        tls,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Vec<Sink>, String> {
        parse_sinks(text, &|v| {
            (v == "HOOK_SECRET").then(|| "from-env".to_string())
        })
        .map_err(|e| match e {
            ParseError::Json(e) => format!("json: {e}"),
            ParseError::Config(e) => e.to_string(),
        })
    }

    #[test]
    fn a_full_sinks_file_parses() {
        let sinks = parse(
            r#"{"sinks": [
                {"name": "splunk", "url": "https://splunk.example:8088/services/collector/event",
                 "format": "splunk_hec", "headers": {"Authorization": "Splunk tok-123"}},
                {"name": "soar", "url": "http://127.0.0.1:9000/hook", "secret_env": "HOOK_SECRET",
                 "timeout_secs": 5, "max_attempts": 7}
            ]}"#,
        )
        .unwrap();
        assert_eq!(sinks.len(), 2);
        assert_eq!(sinks[0].format, AlertFormat::SplunkHec);
        assert_eq!(sinks[0].headers["authorization"], "Splunk tok-123");
        assert_eq!(sinks[0].timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        assert_eq!(sinks[0].max_attempts, None);
        assert_eq!(sinks[1].format, AlertFormat::Json, "json is the default");
        assert_eq!(
            sinks[1].secret.as_ref().map(Secret::expose),
            Some(&b"from-env"[..])
        );
        assert_eq!(sinks[1].timeout, Duration::from_secs(5));
        assert_eq!(sinks[1].max_attempts, Some(7));
    }

    #[test]
    fn bad_sinks_are_refused_naming_the_sink_and_the_field() {
        let cases = [
            (
                r#"{"sinks": [{"name": "a", "url": "ftp://x/y"}]}"#,
                "http:// or https://",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "not a url"}]}"#,
                "url is not a URL",
            ),
            (
                r#"{"sinks": [{"name": "a b", "url": "http://x"}]}"#,
                "name must be",
            ),
            (
                r#"{"sinks": [{"name": "", "url": "http://x"}]}"#,
                "name must be",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]}"#,
                "used more than once",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "secret": "s", "secret_env": "HOOK_SECRET"}]}"#,
                "not both",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "secret_env": "UNSET_VAR"}]}"#,
                "UNSET_VAR",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "secret": ""}]}"#,
                "empty",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "headers": {"Idempotency-Key": "k"}}]}"#,
                "set by netsentinel",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "headers": {"bad header": "v"}}]}"#,
                "not a valid HTTP header name",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "timeout_secs": 0}]}"#,
                "timeout_secs",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "max_attempts": 0}]}"#,
                "max_attempts",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "format": "xml"}]}"#,
                "json:",
            ),
            (
                r#"{"sinks": [{"name": "a", "url": "http://x", "sekret": "s"}]}"#,
                "json:",
            ),
            (r#"{"sink": []}"#, "json:"),
        ];
        for (text, expected) in cases {
            let err = parse(text).map(|_| ()).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            if !err.starts_with("json:") && !err.contains("used more than once") {
                assert!(err.contains("sink \""), "{text}: names the sink: {err}");
            }
        }
    }

    #[test]
    fn a_bad_header_value_is_refused_without_quoting_it() {
        let err = parse(
            "{\"sinks\": [{\"name\": \"a\", \"url\": \"http://x\", \"headers\": {\"Authorization\": \"Splunk sec\\nret\"}}]}",
        )
        .map(|_| ())
        .unwrap_err();
        assert!(err.contains("Authorization"), "{err}");
        assert!(!err.contains("sec"), "{err}");
    }

    #[test]
    fn secrets_headers_and_url_paths_stay_out_of_debug_output() {
        let sinks = parse(
            r#"{"sinks": [{"name": "splunk", "url": "https://user:pw@splunk.example:8088/hook/tok-in-path?token=tok-in-query",
                 "secret": "hmac-key-value", "headers": {"Authorization": "Splunk header-token"}}]}"#,
        )
        .unwrap();
        let shown = format!("{:?} {:?}", sinks[0], sinks[0].secret);
        for secret in [
            "hmac-key-value",
            "header-token",
            "tok-in-path",
            "tok-in-query",
            "pw@",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("splunk.example"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = sinks_from_file(Path::new("/no/such/webhooks.json"), &no_env)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("/no/such/webhooks.json"), "{err}");
    }

    #[test]
    fn the_settings_sink_joins_the_file_sinks_and_names_must_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.json");
        std::fs::write(
            &path,
            r#"{"sinks": [{"name": "webhook", "url": "http://x"}]}"#,
        )
        .unwrap();
        let mut settings = Settings {
            webhook_url: Some("https://hooks.example/a".into()),
            webhook_secret: Some(Secret::parse("k").unwrap()),
            ..Settings::default()
        };
        let only = sinks_from_settings(&settings).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].name, SETTINGS_SINK_NAME);
        assert!(only[0].secret.is_some());
        settings.webhooks_file = Some(path);
        let err = sinks_from_settings(&settings).map(|_| ()).unwrap_err();
        assert!(matches!(err, WebhookConfigError::DuplicateName(_)), "{err}");
        settings.webhook_url = Some("mailto:soc@example.com".into());
        settings.webhooks_file = None;
        assert!(sinks_from_settings(&settings).is_err());
    }
}
