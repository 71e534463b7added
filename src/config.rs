//! Settings from command-line flags and `NETSENTINEL_*` environment variables, with defaults that run out of the box.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::ApiKeys;
use crate::siem::formats::AlertFormat;
use crate::webhooks::Secret;

/// netsentinel: network-traffic anomaly detection service.
///
/// With no subcommand it serves the HTTP API (same as `netsentinel serve`).
#[derive(Debug, Parser)]
#[command(
    name = "netsentinel",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Settings,
}

// Parsed once at startup and moved into the app: the size of the Serve variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(Settings),
    /// Run the tutorial end to end offline: generate, fit, report, alert, chart.
    Demo(DemoArgs),
    /// Print the OpenAPI document (what /openapi.json serves).
    Openapi,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the chart is written (as cybersecurity_analysis.png).
    #[arg(long, env = "NETSENTINEL_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Every setting of the service. Each flag can also be given as the environment variable shown.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "NETSENTINEL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Directory for model files and the alert database (created if missing).
    #[arg(long, env = "NETSENTINEL_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Raise an alert when a batch's anomaly rate exceeds this (the tutorial's 10%).
    #[arg(long, env = "NETSENTINEL_ALERT_RATE", default_value_t = 0.1, value_parser = parse_unit_interval)]
    pub alert_rate: f64,

    /// Also raise an alert when any record reaches this severity (0-100).
    #[arg(long, env = "NETSENTINEL_ALERT_SEVERITY", default_value_t = 75, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub alert_severity: u8,

    /// How many of a batch's most anomalous records an alert keeps (at most 100, which bounds
    /// a stored alert's size together with the caps on echoed fields).
    #[arg(long, env = "NETSENTINEL_ALERT_TOP_RECORDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub alert_top_records: u64,

    /// Most entities one alert (one score request, or one ingest or flush call) turns into
    /// incidents: the entities with the highest scores are kept (ties: the earlier record), the
    /// rest are left out of the alert and the store, counted in the alert's `omitted`, logged and
    /// counted in /metrics. Every record is still scored and answered.
    #[arg(long, env = "NETSENTINEL_MAX_ALERT_ENTITIES", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_alert_entities: u64,

    /// Seconds of quiet that resolve an entity's incident, for detectors whose
    /// `alerting.close_after` is not set (the detector `default` of the v1 paths included).
    #[arg(long, env = "NETSENTINEL_INCIDENT_CLOSE_AFTER_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub incident_close_after_secs: u64,

    /// How many features each explanation lists.
    #[arg(long, env = "NETSENTINEL_EXPLAIN_TOP_K", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub explain_top_k: u64,

    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, env = "NETSENTINEL_MAX_BODY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Days an alert is kept; older ones are deleted hourly (an alert still owed to a webhook
    /// sink waits for its delivery). 0 keeps alerts forever.
    #[arg(long, env = "NETSENTINEL_ALERT_RETENTION_DAYS", default_value_t = 90)]
    pub alert_retention_days: u64,

    /// Hours an `Idempotency-Key` and its first answer are kept (a retry within them gets that
    /// answer again); older ones are deleted hourly with the alerts past retention.
    #[arg(long, env = "NETSENTINEL_IDEMPOTENCY_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub idempotency_ttl_hours: u64,

    /// Days a closed window of continuous ingest (`GET …/windows`) is kept, counted from its
    /// closing; older ones are deleted hourly. 0 keeps them forever.
    #[arg(long, env = "NETSENTINEL_WINDOW_RETENTION_DAYS", default_value_t = 30)]
    pub window_retention_days: u64,

    /// Most windows a detector's ingest keeps pending while the detector has no active model
    /// (closed windows waiting to be scored by its first model); an ingest or flush call that
    /// would pass it is 503 `overloaded` with `Retry-After`, and nothing of that call is kept.
    #[arg(
        long,
        env = "NETSENTINEL_MAX_PENDING_WINDOWS",
        default_value_t = 100_000
    )]
    pub max_pending_windows: u64,

    /// Most bytes of state a detector's continuous ingest keeps in open windows (an estimate:
    /// about 500 bytes a window, 26 a distinct session, 70 a `uid` plus its text, and the
    /// hosts they name). Held against the memory budget while kept; an ingest call that would
    /// pass it is 503 `overloaded` with `Retry-After`, and nothing of that call is kept
    /// (`POST …/flush` closes the open windows).
    #[arg(
        long,
        env = "NETSENTINEL_MAX_OPEN_WINDOW_BYTES",
        default_value_t = 256 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024..)
    )]
    pub max_open_window_bytes: u64,

    /// Most bytes of alerts in one page of `GET /v1/alerts` (JSON or an export format); the page
    /// ends before the alert that would pass it, and its cursor continues from there.
    #[arg(long, env = "NETSENTINEL_ALERTS_PAGE_BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub alerts_page_bytes: u64,

    /// Most records accepted in one batch (more gets 413).
    #[arg(long, env = "NETSENTINEL_MAX_RECORDS", default_value_t = 1_000_000)]
    pub max_records: usize,

    /// How many model versions to keep on disk (older ones are deleted; the active one never).
    #[arg(long, env = "NETSENTINEL_KEEP_MODELS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_models: u64,

    /// Seconds a request may take before it is answered 503.
    #[arg(long, env = "NETSENTINEL_REQUEST_TIMEOUT_SECS", default_value_t = 300)]
    pub request_timeout_secs: u64,

    /// Requests handled at once; more are refused with 503 and Retry-After. The probes
    /// (/healthz, /readyz, /metrics) have slots of their own and are never refused.
    #[arg(long, env = "NETSENTINEL_MAX_CONCURRENCY", default_value_t = 64)]
    pub max_concurrency: usize,

    /// Working memory, in MiB, all requests together may reserve (bodies being read, batches,
    /// samples, charts, forests being grown); a request that does not fit in what is left is
    /// answered 503 with Retry-After. 0: half of the machine's physical memory.
    #[arg(long, env = "NETSENTINEL_MEMORY_BUDGET_MIB", default_value_t = 0)]
    pub memory_budget_mib: u64,

    /// Working memory, in MiB, one request may reserve; a request estimated to need more is
    /// answered 413. 0: half of the memory budget.
    #[arg(
        long,
        env = "NETSENTINEL_REQUEST_MEMORY_BUDGET_MIB",
        default_value_t = 0
    )]
    pub request_memory_budget_mib: u64,

    /// Seconds a client has to send a complete request head: from accepting the connection for
    /// the first request, from its first byte for later ones. Slower connections are closed.
    #[arg(long, env = "NETSENTINEL_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds a keep-alive connection may stay idle between requests before it is closed.
    #[arg(long, env = "NETSENTINEL_KEEP_ALIVE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_timeout_secs: u64,

    /// Slowest a request body may arrive, in bytes per second averaged over
    /// --min-body-rate-window-secs of waiting for the client; slower bodies are cut with 408. 0: no minimum.
    #[arg(long, env = "NETSENTINEL_MIN_BODY_RATE", default_value_t = 1024)]
    pub min_body_rate: u64,

    /// The window, in seconds, over which --min-body-rate is measured.
    #[arg(long, env = "NETSENTINEL_MIN_BODY_RATE_WINDOW_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub min_body_rate_window_secs: u64,

    /// Most client connections open at once (lowered at start to stay below the process's
    /// file-descriptor limit). At the cap the connection idle longest is closed to make room;
    /// when all are busy, new ones wait in the accept backlog.
    #[arg(long, env = "NETSENTINEL_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// API keys: comma-separated `SCOPES:SECRET` entries, SCOPES being read, score and/or admin
    /// joined by `+`, SECRET the key (16+ characters) or `sha256:<hex>` of it. Unset: no authentication.
    #[arg(long, env = "NETSENTINEL_API_KEYS", value_parser = ApiKeys::parse, hide_env_values = true)]
    pub api_keys: Option<ApiKeys>,

    /// Serve without API keys on a non-loopback address (refused otherwise).
    #[arg(long, env = "NETSENTINEL_INSECURE_OPEN", default_value_t = false)]
    pub insecure_open: bool,

    /// Require an API key with the read scope for /metrics (open by default, for scrapers).
    #[arg(long, env = "NETSENTINEL_METRICS_REQUIRE_KEY", default_value_t = false)]
    pub metrics_require_key: bool,

    /// JSON file of webhook sinks that every new alert is pushed to (see the README, "Webhooks").
    #[arg(long, env = "NETSENTINEL_WEBHOOKS_FILE")]
    pub webhooks_file: Option<PathBuf>,

    /// One sink (named "webhook") to push every new alert to: http(s)://... for a webhook, or
    /// tcp://host:port / tls://host:port for a syslog collector (RFC 5424, octet counting)
    #[arg(long, env = "NETSENTINEL_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Body format of --webhook-url: json, ecs, ocsf, cef or splunk_hec.
    #[arg(long, env = "NETSENTINEL_WEBHOOK_FORMAT", default_value = "json", value_parser = parse_alert_format)]
    pub webhook_format: AlertFormat,

    /// HMAC-SHA256 key that signs --webhook-url deliveries (X-Netsentinel-Signature).
    #[arg(long, env = "NETSENTINEL_WEBHOOK_SECRET", value_parser = Secret::parse, hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// First webhook retry waits up to this many milliseconds; each failure doubles it (full jitter).
    #[arg(
        long,
        env = "NETSENTINEL_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 1000
    )]
    pub webhook_retry_base_ms: u64,

    /// Longest wait between webhook retries, in milliseconds (10 minutes).
    #[arg(
        long,
        env = "NETSENTINEL_WEBHOOK_RETRY_CAP_MS",
        default_value_t = 600_000
    )]
    pub webhook_retry_cap_ms: u64,

    /// PostgreSQL connection URL (postgres://USER:PASSWORD@HOST:PORT/DB). Set, alerts, the
    /// webhook outbox and model versions live there and several replicas can share them; unset,
    /// they live in the data directory (SQLite and files). TLS is not supported.
    #[arg(long, env = "NETSENTINEL_DATABASE_URL", value_parser = DatabaseUrl::parse, hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "NETSENTINEL_DATABASE_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,

    /// Longest wait, in milliseconds, to connect to PostgreSQL, to get a pooled connection, and
    /// for one statement; beyond it the request gets 503 `store-unavailable`.
    #[arg(long, env = "NETSENTINEL_DATABASE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    pub database_timeout_ms: u64,

    /// Log format.
    #[arg(long, env = "NETSENTINEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. "info" or "netsentinel=debug").
    #[arg(long, env = "NETSENTINEL_LOG", default_value = "info")]
    pub log: String,
}

/// A PostgreSQL connection string. `Debug` hides it: it usually carries a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Accepts `postgres://` and `postgresql://` URLs; the full syntax is checked when connecting.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self(s.to_owned()))
        } else {
            Err("must start with postgres:// (e.g. postgres://netsentinel:PASSWORD@db:5432/netsentinel)".into())
        }
    }

    /// The URL itself, for the connection only; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

/// The memory budget when the machine's memory cannot be read.
const FALLBACK_MEMORY_BUDGET: u64 = 2 << 30;

impl Settings {
    /// The process's memory budget in bytes (`--memory-budget-mib`, or half the machine's memory).
    pub fn memory_budget_bytes(&self) -> u64 {
        match self.memory_budget_mib {
            0 => crate::work::physical_memory().map_or(FALLBACK_MEMORY_BUDGET, |m| m / 2),
            n => n.saturating_mul(1 << 20),
        }
    }

    /// One request's memory budget in bytes (`--request-memory-budget-mib`, or half the process's).
    pub fn request_memory_budget_bytes(&self) -> u64 {
        let process = self.memory_budget_bytes();
        match self.request_memory_budget_mib {
            0 => process / 2,
            n => n.saturating_mul(1 << 20).min(process),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Cli::parse_from(["netsentinel"]).serve
    }
}

fn parse_unit_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between 0 and 1, got {v}"))
    }
}

fn parse_alert_format(s: &str) -> Result<AlertFormat, String> {
    AlertFormat::parse(s)
        .ok_or_else(|| format!("unknown format {s:?}; use one of json, ecs, ocsf, cef, splunk_hec"))
}

impl Cli {
    /// The settings to serve with, whichever way they were given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_database_url_the_embedded_store_is_used() {
        assert_eq!(Settings::default().database_url, None);
    }

    #[test]
    fn the_database_url_is_parsed_and_never_shown_in_debug_output() {
        let cli = Cli::parse_from([
            "netsentinel",
            "--database-url",
            "postgres://ns:hunter2-secret@db:5432/ns",
            "--database-pool-size",
            "3",
        ]);
        let url = cli.serve.database_url.as_ref().expect("a URL");
        assert_eq!(url.expose(), "postgres://ns:hunter2-secret@db:5432/ns");
        assert_eq!(cli.serve.database_pool_size, 3);
        let shown = format!("{:?}", cli.serve);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            Cli::try_parse_from(["netsentinel", "--database-url", "mysql://x"]).is_err(),
            "only PostgreSQL URLs"
        );
        assert!(
            Cli::try_parse_from(["netsentinel", "--database-pool-size", "0"]).is_err(),
            "a pool needs a connection"
        );
    }
}
