//! The gateway's settings, read from the environment once at start-up.
//!
//! Every setting is a `PARLEY_*` variable (plus `DATABASE_URL`). A bad value stops
//! start-up with one line naming the variable and what it expects.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

/// Every environment variable the gateway reads (besides `DATABASE_URL` and `RUST_LOG`).
pub const SETTINGS: &[&str] = &[
    "PARLEY_DATA_DIR",
    "PARLEY_ATTACHMENTS_DIR",
    "PARLEY_LISTEN",
    "PARLEY_DEMO",
    "PARLEY_JWT_SECRET",
    "PARLEY_ACCESS_TOKEN_TTL_SECS",
    "PARLEY_SESSION_TTL_HOURS",
    "PARLEY_PLATFORM_TOKEN",
    "PARLEY_LOG_FORMAT",
    "PARLEY_BODY_LIMIT_BYTES",
    "PARLEY_REQUEST_TIMEOUT_SECS",
    "PARLEY_DB_POOL_SIZE",
    "PARLEY_PG_USER",
    "PARLEY_PG_BIN",
    "PARLEY_CORS_ORIGINS",
    "PARLEY_PROVIDER_HOSTS",
    "PARLEY_LOGIN_MAX_FAILURES",
    "PARLEY_LOGIN_MAX_FAILURES_PER_IP",
    "PARLEY_LOGIN_WINDOW_SECS",
    "PARLEY_OUTBOX_BACKOFF_MS",
    "PARLEY_PROVIDER_TIMEOUT_SECS",
    "PARLEY_INGEST_WRITERS",
    "PARLEY_INGEST_BATCH_MAX",
    "PARLEY_WS_MAX_PER_IP",
    "PARLEY_MAX_CONNECTIONS_PER_IP",
    "PARLEY_HEADER_TIMEOUT_SECS",
    "PARLEY_SIMULATOR",
    "PARLEY_OFFER_TIMEOUT_SECS",
    "PARLEY_EVENT_RETENTION_HOURS",
    "PARLEY_OFFLINE_GRACE_SECS",
    "PARLEY_WS_SEND_TIMEOUT_MS",
    "PARLEY_EVENT_FEED_PAGES",
    "PARLEY_WS_MAX_PER_USER",
    "PARLEY_WS_MAX_PER_TENANT",
    "PARLEY_WS_MAX_TOTAL",
    "PARLEY_UPLOADS_PER_USER",
    "PARLEY_UPLOADS_AT_ONCE",
    "PARLEY_TENANT_STORAGE_MB",
    "PARLEY_CONTINUATION_WINDOW_SECS",
    "PARLEY_SIMULATOR_LISTEN",
    "PARLEY_METRICS_LISTEN",
];

/// A setting that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?} {problem}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What it held.
    pub value: String,
    /// What is wrong and what to do.
    pub problem: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the database comes from.
#[derive(Debug, Clone)]
pub enum Database {
    /// An external server (`DATABASE_URL`).
    Url(Secret),
    /// Parley's own cluster under the data directory.
    Embedded,
}

/// All settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`, or the embedded cluster when unset.
    pub database: Database,
    /// `PARLEY_DATA_DIR` (default `./.parley`): the embedded cluster and the demo JWT secret.
    pub data_dir: PathBuf,
    /// `PARLEY_ATTACHMENTS_DIR` (default `<data dir>/attachments`): where uploaded files
    /// are kept, content-addressed.
    pub attachments_dir: Option<PathBuf>,
    /// `PARLEY_LISTEN` (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `PARLEY_DEMO`: seed the demo tenant. Default on with the embedded cluster, off with
    /// `DATABASE_URL`.
    pub demo: bool,
    /// `PARLEY_JWT_SECRET`; with the embedded cluster it may be left unset and is then
    /// generated once and kept in the data directory.
    pub jwt_secret: Option<Secret>,
    /// `PARLEY_ACCESS_TOKEN_TTL_SECS` (default 900): lifetime of an access token.
    pub access_token_ttl: Duration,
    /// `PARLEY_SESSION_TTL_HOURS` (default 24): how long a login's refresh token can
    /// keep renewing access tokens (a working day) before the password is asked again.
    pub session_ttl: Duration,
    /// `PARLEY_PLATFORM_TOKEN`: enables the provisioning API when set.
    pub platform_token: Option<Secret>,
    /// `PARLEY_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `PARLEY_BODY_LIMIT_BYTES` (default 1 MiB): the largest request body accepted.
    pub body_limit: usize,
    /// `PARLEY_REQUEST_TIMEOUT_SECS` (default 30).
    pub request_timeout: Duration,
    /// `PARLEY_DB_POOL_SIZE` (default 20): connections in the pool.
    pub db_pool_size: u32,
    /// `PARLEY_PG_USER` (default `postgres`): the system user the embedded server runs as
    /// when Parley is started as root.
    pub pg_user: String,
    /// `PARLEY_CORS_ORIGINS`: comma-separated origins allowed to call the API from a
    /// browser; none by default.
    pub cors_origins: Vec<String>,
    /// `PARLEY_PROVIDER_HOSTS`: comma-separated hosts (`host` or `host:port`) that
    /// admin-set provider URLs may point at; `*` allows any. Default `graph.facebook.com`,
    /// plus `127.0.0.1` and `localhost` when the bundled simulator runs. Keeps an admin from
    /// making the server call internal hosts (SSRF).
    pub provider_hosts: Vec<String>,
    /// `PARLEY_LOGIN_MAX_FAILURES` (default 5): failed logins per email per window before
    /// that email is locked out for the rest of the window.
    pub login_max_failures: i32,
    /// `PARLEY_LOGIN_MAX_FAILURES_PER_IP` (default 50): the same, per client address.
    pub login_max_failures_per_ip: i32,
    /// `PARLEY_LOGIN_WINDOW_SECS` (default 900).
    pub login_window: Duration,
    /// `PARLEY_OUTBOX_BACKOFF_MS` (default 1000): the first retry delay of a failed
    /// provider send; doubled per attempt, capped at 5 minutes.
    pub outbox_backoff: Duration,
    /// `PARLEY_PROVIDER_TIMEOUT_SECS` (default 20): how long a provider call may take
    /// before it counts as failed and is retried; the outbox lease is this plus 40 s.
    pub provider_timeout: Duration,
    /// `PARLEY_INGEST_WRITERS` (default 2): webhook transactions in flight at once. The
    /// writers run on a thread of their own with a connection each (and one for their
    /// wake-ups), apart from the pool. Fewer writers make bigger batches; on a two-core
    /// database two beat four or eight.
    pub ingest_writers: usize,
    /// `PARLEY_INGEST_BATCH_MAX` (default 64): the most webhooks one transaction stores
    /// (group commit); 1 stores each webhook in its own transaction.
    pub ingest_batch_max: usize,
    /// `PARLEY_SIMULATOR`: run the bundled WhatsApp Cloud API simulator beside the gateway
    /// with a demo channel account bound to it. Default: on in demo mode.
    pub simulator: bool,
    /// `PARLEY_SIMULATOR_LISTEN` (default `127.0.0.1:8081` in demo mode, else
    /// `127.0.0.1:0`): the simulator's address. When the demo default is taken, any free
    /// port is used instead.
    pub simulator_listen: SocketAddr,
    /// Whether `PARLEY_SIMULATOR_LISTEN` was set (then a taken address is an error).
    pub simulator_listen_set: bool,
    /// Where the bundled simulator was bound, once it is (the only loopback address an
    /// admin may point a provider URL at without `PARLEY_PROVIDER_HOSTS`).
    pub simulator_bound: std::sync::Arc<std::sync::OnceLock<SocketAddr>>,
    /// `PARLEY_METRICS_LISTEN` (default unset): when set (e.g. `127.0.0.1:9090`),
    /// `/metrics` is served on that address only and no longer on `PARLEY_LISTEN`, so the
    /// public listener does not show it.
    pub metrics_listen: Option<SocketAddr>,
    /// `PARLEY_OFFER_TIMEOUT_SECS` (default 30; 300 in demo mode): how long an agent has to accept an offer
    /// before it goes to the next agent and the agent becomes Not Responding.
    pub offer_timeout: Duration,
    /// `PARLEY_EVENT_RETENTION_HOURS` (default 168 = 7 days): how long events are kept
    /// for resuming clients.
    pub event_retention: Duration,
    /// `PARLEY_OFFLINE_GRACE_SECS` (default 60): an agent with no event-stream socket for
    /// this long goes `offline`.
    pub offline_grace: Duration,
    /// `PARLEY_WS_SEND_TIMEOUT_MS` (default 10000): an event-stream client that does not
    /// take a frame within this long is disconnected with close code 4001 (resume).
    pub ws_send_timeout: Duration,
    /// `PARLEY_EVENT_FEED_PAGES` (default 64): pages of new events kept in memory for this
    /// process's sockets; a socket further behind reads from the database.
    pub event_feed_pages: usize,
    /// `PARLEY_WS_MAX_PER_USER` (default 20): event-stream sockets one user may hold open
    /// on one gateway process; more are refused with 429.
    pub ws_max_per_user: usize,
    /// `PARLEY_WS_MAX_PER_TENANT` (default 10000): event-stream sockets one tenant's users
    /// may hold open on one process, so one tenant cannot take every socket.
    pub ws_max_per_tenant: usize,
    /// `PARLEY_WS_MAX_TOTAL` (default: the process's open-file limit less 1,024, kept for
    /// HTTP requests, webhooks and the database): event-stream sockets on one process.
    pub ws_max_total: usize,
    /// `PARLEY_UPLOADS_PER_USER` (default 2): uploads one user may have in progress.
    pub uploads_per_user: usize,
    /// `PARLEY_UPLOADS_AT_ONCE` (default 16): uploads read at once on one process (each
    /// holds up to 5 MB); more wait their turn.
    pub uploads_at_once: usize,
    /// `PARLEY_TENANT_STORAGE_MB` (default 10240): how much a tenant's uploaded files may
    /// take; an upload past it is refused (507). Files contacts send are always kept.
    pub tenant_storage_bytes: i64,
    /// `PARLEY_WS_MAX_PER_IP` (default 1000): event-stream sockets one client address may
    /// hold open on one gateway process (an office behind one NAT address counts once).
    pub ws_max_per_ip: usize,
    /// `PARLEY_MAX_CONNECTIONS_PER_IP` (default 2000): TCP connections one client
    /// address may hold open on one gateway process; more are closed at once, so a
    /// client trickling requests over many connections (slow-loris) cannot hold them all.
    pub max_connections_per_ip: usize,
    /// `PARLEY_HEADER_TIMEOUT_SECS` (default 10): once a client starts a request it has
    /// this long to send all its headers; then the connection is closed (slow-loris).
    pub header_timeout: Duration,
    /// `PARLEY_CONTINUATION_WINDOW_SECS` (default 86400): a contact writing again within
    /// this long goes first to the agent who last handled them.
    pub continuation_window: Duration,
}

impl Config {
    /// Read settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read settings through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let database = match get("DATABASE_URL") {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError {
                        name: "DATABASE_URL",
                        value: "<hidden>".to_owned(),
                        problem: "must be a postgres:// or postgresql:// URL".to_owned(),
                    });
                }
                Database::Url(Secret(url))
            }
            None => Database::Embedded,
        };
        let embedded = matches!(database, Database::Embedded);
        let listen = parse(&get, "PARLEY_LISTEN", "127.0.0.1:8080", |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| "is not a socket address; use host:port, e.g. 127.0.0.1:8080".into())
        })?;
        let demo = match get("PARLEY_DEMO") {
            None => embedded,
            Some(v) => parse_bool("PARLEY_DEMO", &v)?,
        };
        let jwt_secret = get("PARLEY_JWT_SECRET").map(Secret);
        if let Some(s) = &jwt_secret
            && s.0.len() < 32
        {
            return Err(ConfigError {
                name: "PARLEY_JWT_SECRET",
                value: "<hidden>".to_owned(),
                problem: "must be at least 32 characters; generate one with `openssl rand -hex 32`"
                    .to_owned(),
            });
        }
        if jwt_secret.is_none() && !embedded {
            return Err(ConfigError {
                name: "PARLEY_JWT_SECRET",
                value: String::new(),
                problem: "must be set when DATABASE_URL is set (every replica needs the same one); generate one with `openssl rand -hex 32`".to_owned(),
            });
        }
        let platform_token = get("PARLEY_PLATFORM_TOKEN").map(Secret);
        if let Some(t) = &platform_token
            && t.0.len() < 16
        {
            return Err(ConfigError {
                name: "PARLEY_PLATFORM_TOKEN",
                value: "<hidden>".to_owned(),
                problem: "must be at least 16 characters".to_owned(),
            });
        }
        let log_format = parse(&get, "PARLEY_LOG_FORMAT", "text", |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("must be `text` or `json`".into()),
        })?;
        Ok(Config {
            database,
            attachments_dir: get("PARLEY_ATTACHMENTS_DIR").map(PathBuf::from),
            data_dir: PathBuf::from(get("PARLEY_DATA_DIR").unwrap_or_else(|| "./.parley".into())),
            listen,
            demo,
            jwt_secret,
            access_token_ttl: Duration::from_secs(number(
                &get,
                "PARLEY_ACCESS_TOKEN_TTL_SECS",
                900,
                10,
                86_400,
            )?),
            session_ttl: Duration::from_secs(
                3600 * number(&get, "PARLEY_SESSION_TTL_HOURS", 24, 1, 24 * 90)?,
            ),
            platform_token,
            log_format,
            body_limit: usize::try_from(number(
                &get,
                "PARLEY_BODY_LIMIT_BYTES",
                1 << 20,
                1024,
                1 << 30,
            )?)
            .unwrap_or(1 << 20),
            request_timeout: Duration::from_secs(number(
                &get,
                "PARLEY_REQUEST_TIMEOUT_SECS",
                30,
                1,
                3600,
            )?),
            db_pool_size: u32::try_from(number(&get, "PARLEY_DB_POOL_SIZE", 20, 2, 1000)?)
                .unwrap_or(20),
            pg_user: get("PARLEY_PG_USER").unwrap_or_else(|| "postgres".into()),
            cors_origins: get("PARLEY_CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            provider_hosts: match get("PARLEY_PROVIDER_HOSTS") {
                Some(v) => v
                    .split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect(),
                None => vec!["graph.facebook.com".to_owned()],
            },
            login_max_failures: i32::try_from(number(
                &get,
                "PARLEY_LOGIN_MAX_FAILURES",
                5,
                1,
                1000,
            )?)
            .unwrap_or(5),
            login_max_failures_per_ip: i32::try_from(number(
                &get,
                "PARLEY_LOGIN_MAX_FAILURES_PER_IP",
                50,
                1,
                100_000,
            )?)
            .unwrap_or(50),
            login_window: Duration::from_secs(number(
                &get,
                "PARLEY_LOGIN_WINDOW_SECS",
                900,
                1,
                86_400,
            )?),
            outbox_backoff: Duration::from_millis(number(
                &get,
                "PARLEY_OUTBOX_BACKOFF_MS",
                1000,
                1,
                600_000,
            )?),
            provider_timeout: Duration::from_secs(number(
                &get,
                "PARLEY_PROVIDER_TIMEOUT_SECS",
                20,
                1,
                300,
            )?),
            ingest_writers: usize::try_from(number(&get, "PARLEY_INGEST_WRITERS", 2, 1, 64)?)
                .unwrap_or(2),
            ingest_batch_max: usize::try_from(number(
                &get,
                "PARLEY_INGEST_BATCH_MAX",
                64,
                1,
                1000,
            )?)
            .unwrap_or(64),
            simulator: match get("PARLEY_SIMULATOR") {
                None => demo,
                Some(v) => parse_bool("PARLEY_SIMULATOR", &v)?,
            },
            simulator_listen_set: get("PARLEY_SIMULATOR_LISTEN").is_some(),
            // A stable address in the demo, so a saved simulator URL keeps working.
            simulator_listen: parse(
                &get,
                "PARLEY_SIMULATOR_LISTEN",
                if demo {
                    "127.0.0.1:8081"
                } else {
                    "127.0.0.1:0"
                },
                |v| {
                    v.parse::<SocketAddr>()
                        .map_err(|_| "is not a socket address; use host:port".into())
                },
            )?,
            simulator_bound: Default::default(),
            metrics_listen: match get("PARLEY_METRICS_LISTEN").filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(v) => Some(v.trim().parse::<SocketAddr>().map_err(|_| ConfigError {
                    name: "PARLEY_METRICS_LISTEN",
                    value: v.clone(),
                    problem: "is not a socket address; use host:port".into(),
                })?),
            },
            // In the demo a person accepts offers by hand (curl): five minutes, not 30 s.
            offer_timeout: Duration::from_secs(number(
                &get,
                "PARLEY_OFFER_TIMEOUT_SECS",
                if demo { 300 } else { 30 },
                1,
                3600,
            )?),
            event_retention: Duration::from_secs(
                3600 * number(&get, "PARLEY_EVENT_RETENTION_HOURS", 168, 1, 24 * 365)?,
            ),
            offline_grace: Duration::from_secs(number(
                &get,
                "PARLEY_OFFLINE_GRACE_SECS",
                60,
                1,
                86_400,
            )?),
            ws_send_timeout: Duration::from_millis(number(
                &get,
                "PARLEY_WS_SEND_TIMEOUT_MS",
                10_000,
                10,
                600_000,
            )?),
            event_feed_pages: usize::try_from(number(
                &get,
                "PARLEY_EVENT_FEED_PAGES",
                64,
                1,
                100_000,
            )?)
            .unwrap_or(64),
            ws_max_per_tenant: usize::try_from(number(
                &get,
                "PARLEY_WS_MAX_PER_TENANT",
                10_000,
                1,
                10_000_000,
            )?)
            .unwrap_or(10_000),
            ws_max_total: usize::try_from(number(
                &get,
                "PARLEY_WS_MAX_TOTAL",
                open_file_limit().map_or(10_000, |n| n.saturating_sub(1024).max(100)),
                1,
                10_000_000,
            )?)
            .unwrap_or(10_000),
            uploads_per_user: usize::try_from(number(&get, "PARLEY_UPLOADS_PER_USER", 2, 1, 100)?)
                .unwrap_or(2),
            uploads_at_once: usize::try_from(number(&get, "PARLEY_UPLOADS_AT_ONCE", 16, 1, 1000)?)
                .unwrap_or(16),
            tenant_storage_bytes: i64::try_from(number(
                &get,
                "PARLEY_TENANT_STORAGE_MB",
                10_240,
                1,
                100_000_000,
            )?)
            .unwrap_or(i64::MAX / (1024 * 1024))
                * 1024
                * 1024,
            ws_max_per_user: usize::try_from(number(
                &get,
                "PARLEY_WS_MAX_PER_USER",
                20,
                1,
                10_000,
            )?)
            .unwrap_or(20),
            ws_max_per_ip: usize::try_from(number(
                &get,
                "PARLEY_WS_MAX_PER_IP",
                1000,
                1,
                1_000_000,
            )?)
            .unwrap_or(1000),
            max_connections_per_ip: usize::try_from(number(
                &get,
                "PARLEY_MAX_CONNECTIONS_PER_IP",
                2000,
                1,
                1_000_000,
            )?)
            .unwrap_or(2000),
            header_timeout: Duration::from_secs(number(
                &get,
                "PARLEY_HEADER_TIMEOUT_SECS",
                10,
                1,
                300,
            )?),
            continuation_window: Duration::from_secs(number(
                &get,
                "PARLEY_CONTINUATION_WINDOW_SECS",
                86_400,
                0,
                30 * 86_400,
            )?),
        })
    }
}

impl Config {
    /// Whether an admin may point a provider URL at `raw`: http(s), no credentials, and a
    /// host in `provider_hosts` (or the bundled simulator's own address while it runs:
    /// any other loopback port would let an admin probe this machine's services, with the
    /// account's token in every request).
    pub fn provider_url_allowed(&self, raw: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(raw).map_err(|_| "must be an http(s) URL".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") || raw.len() > 500 {
            return Err("must be an http(s) URL of at most 500 characters".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        let host = url
            .host_str()
            .ok_or_else(|| "must name a host".to_owned())?
            .to_lowercase();
        if self.provider_hosts.iter().any(|h| h == "*") {
            return Ok(());
        }
        let simulator = self.simulator
            && matches!(host.as_str(), "127.0.0.1" | "localhost")
            && self
                .simulator_bound
                .get()
                .is_some_and(|a| url.port_or_known_default() == Some(a.port()));
        let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
        if simulator
            || self
                .provider_hosts
                .iter()
                .any(|h| *h == host || Some(h) == with_port.as_ref())
        {
            Ok(())
        } else {
            Err(format!(
                "{host} is not an allowed provider host; an operator can allow it with PARLEY_PROVIDER_HOSTS"
            ))
        }
    }

    /// Where attachment bytes are stored.
    pub fn attachments_dir(&self) -> PathBuf {
        self.attachments_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("attachments"))
    }
}

fn parse<T>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = get(name).unwrap_or_else(|| default.to_owned());
    f(value.trim()).map_err(|problem| ConfigError {
        name,
        value,
        problem,
    })
}

/// The process's soft limit on open files (Linux: `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    parse(get, name, &default.to_string(), |v| {
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("must be a whole number from {min} to {max}")),
        }
    })
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError {
            name,
            value: v.to_owned(),
            problem: "must be 1/0, true/false, yes/no or on/off".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_run_the_embedded_demo() {
        let c = with(&[]).expect("defaults are valid");
        assert!(matches!(c.database, Database::Embedded));
        assert!(c.demo);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./.parley"));
    }

    #[test]
    fn external_database_needs_a_jwt_secret_and_seeds_nothing() {
        let err = with(&[("DATABASE_URL", "postgres://x@h/db")]).expect_err("secret required");
        assert_eq!(err.name, "PARLEY_JWT_SECRET");
        let c = with(&[
            ("DATABASE_URL", "postgres://x@h/db"),
            ("PARLEY_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
        .expect("valid");
        assert!(!c.demo);
    }

    #[test]
    fn in_demo_mode_only_the_simulators_own_loopback_address_is_a_provider() {
        let c = with(&[]).expect("defaults are valid");
        assert!(c.simulator);
        // Before the simulator is bound, no loopback address at all.
        assert!(
            c.provider_url_allowed("http://127.0.0.1:5432/v21.0")
                .is_err()
        );
        let _ = c
            .simulator_bound
            .set("127.0.0.1:8081".parse().expect("addr"));
        assert!(
            c.provider_url_allowed("http://127.0.0.1:8081/v21.0")
                .is_ok()
        );
        assert!(
            c.provider_url_allowed("http://localhost:8081/v21.0")
                .is_ok()
        );
        for probe in [
            "http://127.0.0.1:5432/v21.0",
            "http://127.0.0.1/v21.0",
            "http://localhost:6379/",
            "http://127.0.0.2:8081/",
        ] {
            let err = c.provider_url_allowed(probe).expect_err(probe);
            assert!(err.contains("PARLEY_PROVIDER_HOSTS"), "{err}");
        }
        assert!(
            c.provider_url_allowed("https://graph.facebook.com/v21.0")
                .is_ok()
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = with(&[("PARLEY_LISTEN", "localhost")]).expect_err("bad listen");
        assert_eq!(err.name, "PARLEY_LISTEN");
        assert!(err.to_string().contains("host:port"));
        let err = with(&[("PARLEY_DB_POOL_SIZE", "0")]).expect_err("bad pool");
        assert_eq!(err.name, "PARLEY_DB_POOL_SIZE");
        let err = with(&[("PARLEY_DEMO", "maybe")]).expect_err("bad bool");
        assert_eq!(err.name, "PARLEY_DEMO");
    }

    #[test]
    fn every_variable_read_is_listed_in_settings() {
        let read = std::sync::Mutex::new(Vec::new());
        let _ = Config::from_lookup(|k| {
            if let Ok(mut r) = read.lock() {
                r.push(k.to_owned());
            }
            None
        });
        let read = read.into_inner().unwrap_or_default();
        assert!(read.len() > 10);
        for k in read {
            assert!(
                k == "DATABASE_URL" || SETTINGS.contains(&k.as_str()),
                "{k} not in SETTINGS"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = with(&[
            ("PARLEY_JWT_SECRET", "super-secret-value-0123456789abcdef"),
            ("PARLEY_PLATFORM_TOKEN", "platform-token-0123456789"),
        ])
        .expect("valid");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("super-secret-value"));
        assert!(!dbg.contains("platform-token-0123"));
    }
}
