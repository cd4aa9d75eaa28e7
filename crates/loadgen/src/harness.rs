//! The system under test: a durable PostgreSQL, the WhatsApp simulator, the gateway
//! process, and a provisioned tenant.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pg_cluster::{Cluster, ClusterOptions};
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// A WebSocket client.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Everything a mode needs.
pub struct Harness {
    _cluster: Cluster,
    /// The gateway's database URL.
    pub url: String,
    /// The gateway's database (for baseline tables and connection counts).
    pub db: PgPool,
    gateway: Child,
    /// The gateway's pid.
    pub pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The simulator.
    pub sim: whatsapp_sim::Simulator,
    /// The channel account's webhook URL.
    pub webhook_url: String,
    /// Its app secret.
    pub app_secret: String,
    /// The admin's token.
    pub admin_token: String,
    /// The tenant's agents: (id, token).
    pub agents: Vec<(String, String)>,
    stop: CancellationToken,
    /// The gateway's log file.
    pub log: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
    }
}

/// The `parley_http_request_duration_seconds` buckets of `route` in a metrics text:
/// (`le`, count), in the order given.
fn route_buckets(text: &str, route: &str) -> Vec<(String, u64)> {
    let route = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| {
            l.starts_with("parley_http_request_duration_seconds_bucket{") && l.contains(&route)
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le.to_owned(), count))
        })
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A quarter of the machine's memory, between PostgreSQL's default 128 MiB and 8 GiB.
fn shared_buffers_mib(memory_kib: Option<u64>) -> u64 {
    memory_kib.map_or(128, |kib| (kib / 1024 / 4).clamp(128, 8192))
}

impl Harness {
    /// Start PostgreSQL (durable), the simulator and the gateway; provision a tenant with
    /// a WhatsApp account and `agents` agents.
    pub async fn start(gateway: &std::path::Path, agents: usize) -> anyhow::Result<Self> {
        Self::start_with(gateway, agents, None).await
    }

    /// [`Harness::start`] for a database that will hold millions of messages (`search`).
    /// PostgreSQL's default 128 MB of shared buffers is a placeholder: such a database is
    /// given the usual quarter of the machine's memory (here at most 8 GiB), or a 3 GB
    /// table would be read through the operating system's cache on almost every visit.
    /// The other modes keep the default: their tables stay small, and a fresh 6 GB pool
    /// would charge their short runs the first touch of every new buffer.
    pub async fn start_for_data(gateway: &std::path::Path) -> anyhow::Result<Self> {
        let mib = shared_buffers_mib(crate::report::memory_kib());
        Self::start_with(gateway, 0, Some(mib)).await
    }

    async fn start_with(
        gateway: &std::path::Path,
        agents: usize,
        shared_buffers: Option<u64>,
    ) -> anyhow::Result<Self> {
        if !gateway.exists() {
            bail!(
                "no gateway at {}; build it with: cargo build --release -p gateway -p loadgen",
                gateway.display()
            );
        }
        eprintln!("starting PostgreSQL (durable, synchronous_commit=on)...");
        let mut opts = ClusterOptions::ephemeral();
        opts.fast_unsafe = false;
        // Per-statement timings, so a run can say which statement the database spends its
        // time on (`top_statements`).
        opts.settings.push((
            "shared_preload_libraries".to_owned(),
            "pg_stat_statements".to_owned(),
        ));
        // And their planning, which for short statements can cost as much as running them.
        opts.settings.push((
            "pg_stat_statements.track_planning".to_owned(),
            "on".to_owned(),
        ));
        // A run starts on empty tables and lasts seconds; with the default one-minute
        // autovacuum nap the planner would plan for empty tables throughout (sequential
        // scans cached in every connection's prepared statements), which a database in
        // service, analysed as it grew, does not do.
        opts.settings
            .push(("autovacuum_naptime".to_owned(), "10s".to_owned()));
        if let Some(mib) = shared_buffers {
            opts.settings
                .push(("shared_buffers".to_owned(), format!("{mib}MB")));
        }
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(&opts))
            .await?
            .context("starting PostgreSQL")?;
        let admin_db = PgPoolOptions::new()
            .max_connections(1)
            .connect(&cluster.url("postgres"))
            .await?;
        sqlx::query("CREATE DATABASE parley")
            .execute(&admin_db)
            .await?;
        admin_db.close().await;
        let url = cluster.url("parley");
        let db = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(
                url.parse::<sqlx::postgres::PgConnectOptions>()?
                    .application_name("loadgen"),
            )
            .await?;

        let stop = CancellationToken::new();
        let cfg = whatsapp_sim::SimConfig {
            status_delay: Duration::from_millis(5),
            ..whatsapp_sim::SimConfig::default()
        };
        let sim = whatsapp_sim::Simulator::new(cfg.clone());
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim_addr = sim_listener.local_addr()?;
        tokio::spawn(whatsapp_sim::serve(sim_listener, sim.clone(), stop.clone()));

        let port = free_port()?;
        let data_dir =
            std::env::temp_dir().join(format!("parley-load-{}", pg_cluster::random_hex(6)));
        std::fs::create_dir_all(&data_dir)?;
        let log = data_dir.join("gateway.log");
        let platform = pg_cluster::random_hex(16);
        let child = Command::new(gateway)
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env("PARLEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("PARLEY_DATA_DIR", &data_dir)
            .env("PARLEY_PLATFORM_TOKEN", &platform)
            .env("PARLEY_JWT_SECRET", pg_cluster::random_hex(32))
            .env("PARLEY_SIMULATOR", "false")
            .env("PARLEY_PROVIDER_HOSTS", "127.0.0.1")
            .env("PARLEY_LOGIN_MAX_FAILURES_PER_IP", "1000")
            // Every simulated agent and contact comes from loopback.
            .env("PARLEY_WS_MAX_PER_IP", "1000000")
            .env("PARLEY_MAX_CONNECTIONS_PER_IP", "1000000")
            // `connections` opens all its sockets as one user.
            .env("PARLEY_WS_MAX_PER_USER", "10000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", gateway.display()))?;
        let pid = child.id();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut h = Self {
            _cluster: cluster,
            url: url.clone(),
            db,
            gateway: child,
            pid,
            base,
            http,
            sim,
            webhook_url: String::new(),
            app_secret: cfg.app_secret.clone(),
            admin_token: String::new(),
            agents: Vec::new(),
            stop,
            log,
        };
        h.wait_ready().await?;
        h.provision(&platform, &cfg, sim_addr, agents).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&h.db)
            .await?;
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&h.db)
            .await?;
        Ok(h)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.gateway.try_wait() {
                bail!("the gateway exited ({status}); see {}", self.log.display());
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the gateway did not become ready; see {}",
            self.log.display()
        )
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status} {v}");
        }
        Ok(v)
    }

    /// POST with a bearer token; the status.
    pub async fn post_status(&self, path: &str, token: &str, body: &Value) -> u16 {
        match self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let v = self
            .post(
                "/api/v1/auth/login",
                "",
                &json!({"email": email, "password": password}),
            )
            .await?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token")
    }

    async fn provision(
        &mut self,
        platform: &str,
        cfg: &whatsapp_sim::SimConfig,
        sim_addr: std::net::SocketAddr,
        agents: usize,
    ) -> anyhow::Result<()> {
        let password = "load-test-password";
        self.post(
            "/platform/v1/tenants",
            platform,
            &json!({"name": "Load", "admin_email": "admin@load.example", "admin_password": password}),
        )
        .await?;
        self.admin_token = self.login("admin@load.example", password).await?;
        let acc = self
            .post(
                "/api/v1/channel-accounts",
                &self.admin_token,
                &json!({
                    "provider": "whatsapp", "name": "Load number",
                    "phone_number_id": cfg.phone_number_id, "waba_id": "WABA-LOAD",
                    "display_phone_number": cfg.display_phone_number,
                    "access_token": cfg.access_token, "app_secret": cfg.app_secret,
                    "verify_token": "verify", "api_base_url": format!("http://{sim_addr}/v21.0"),
                }),
            )
            .await?;
        let account = acc["id"].as_str().context("account id")?;
        self.webhook_url = format!("{}/webhooks/whatsapp/{account}", self.base);
        self.sim.set_webhook(&self.webhook_url, &cfg.app_secret);
        for n in 0..agents {
            let email = format!("agent{n}@load.example");
            let u = self
                .post(
                    "/api/v1/users",
                    &self.admin_token,
                    &json!({"email": email, "display_name": format!("Agent {n}"), "password": password,
                            "role": "agent", "capacity": 5}),
                )
                .await?;
            let id = u["id"].as_str().context("user id")?.to_owned();
            let token = self.login(&email, password).await?;
            self.agents.push((id, token));
        }
        Ok(())
    }

    /// A signed inbound text webhook from contact `contact`, provider id `wamid`.
    pub fn webhook(&self, contact: usize, wamid: &str, text: &str) -> (Vec<u8>, String) {
        let from = format!("14156{:06}", contact % 1_000_000);
        // Written now, as a provider's webhook says: the 24-hour window counts from it.
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let body = serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA-LOAD", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"},
                "contacts": [{"profile": {"name": format!("Contact {contact}")}, "wa_id": from}],
                "messages": [{"from": from, "id": wamid, "timestamp": sent,
                              "type": "text", "text": {"body": text}}]
            }}]}]
        }))
        .unwrap_or_default();
        let sig = channel_connector::signature::sign(self.app_secret.as_bytes(), &body);
        (body, sig)
    }

    /// Deliver a webhook; the status (0 on a transport error).
    pub async fn send_webhook(&self, body: Vec<u8>, sig: String) -> u16 {
        match self
            .http
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// An event-stream socket for `token`.
    pub async fn socket(&self, token: &str) -> anyhow::Result<Ws> {
        let url = format!(
            "{}/api/v1/events?access_token={token}",
            self.base.replacen("http://", "ws://", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(ws)
    }

    /// The gateway's CPU seconds so far (user + system).
    pub fn cpu_secs(&self) -> f64 {
        proc_stat(self.pid).map_or(0.0, |p| p.cpu)
    }

    /// The gateway's own histogram of its webhook route's request durations, from its
    /// `/metrics`: (upper bound in seconds, requests so far), cumulative as Prometheus
    /// buckets are. Empty if it cannot be read.
    pub async fn webhook_latency_buckets(&self) -> Vec<(String, u64)> {
        let Ok(r) = self.http.get(format!("{}/metrics", self.base)).send().await else {
            return Vec::new();
        };
        let text = r.text().await.unwrap_or_default();
        route_buckets(&text, "/webhooks/whatsapp/{channel_account_id}")
    }

    /// CPU seconds so far of the gateway, of the database (the postmaster and its
    /// processes, with those that have exited, e.g. autovacuum workers) and of the whole
    /// machine (every process, this tool included; steal and idle not counted).
    pub async fn cpu_snapshot(&self) -> CpuSnapshot {
        let postmaster = match sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&self.db)
            .await
        {
            Ok(backend) => u32::try_from(backend)
                .ok()
                .and_then(proc_stat)
                .map(|b| b.ppid),
            Err(_) => None,
        };
        let postgres = postmaster.map_or(0.0, |pm| {
            let mut sum = proc_stat(pm).map_or(0.0, |p| p.cpu + p.reaped_children);
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for entry in dir.flatten() {
                    let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    if let Some(p) = proc_stat(pid).filter(|p| p.ppid == pm) {
                        sum += p.cpu;
                    }
                }
            }
            sum
        });
        // user nice system idle iowait irq softirq steal ...
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.strip_prefix("cpu ")?.to_owned();
                let t: Vec<f64> = line
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                Some(
                    [0, 1, 2, 5, 6]
                        .iter()
                        .filter_map(|i| t.get(*i))
                        .sum::<f64>()
                        / TICKS,
                )
            })
            .unwrap_or(0.0);
        CpuSnapshot {
            gateway: self.cpu_secs(),
            postgres,
            machine,
        }
    }

    /// The gateway's (current, peak) resident memory in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The `n` statements the database spent the most time executing since provisioning,
    /// with calls, mean time and share of the total: where the database time goes. The
    /// tool's own statements (`pg_stat_activity`, the commit probe, S1's inserts) are left
    /// out.
    pub async fn top_statements(&self, n: i64) -> Value {
        let rows: Vec<(String, i64, f64, f64, i64, f64)> = sqlx::query_as(
            "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, mean_exec_time,
                    100 * total_exec_time / NULLIF(sum(total_exec_time) OVER (), 0),
                    plans, mean_plan_time
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'parley')
               AND query NOT LIKE '%pg_stat_activity%' AND query NOT LIKE '%loadgen_probe%'
               AND query NOT LIKE '%bench_messages%'
             ORDER BY total_exec_time DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&self.db)
        .await
        .unwrap_or_default();
        Value::Array(
            rows.into_iter()
                .map(|(q, calls, mean, share, plans, plan_mean)| {
                    json!({
                        "share_pct": (share * 10.0).round() / 10.0,
                        "calls": calls,
                        "mean_ms": (mean * 1000.0).round() / 1000.0,
                        "plans": plans,
                        "mean_plan_ms": (plan_mean * 1000.0).round() / 1000.0,
                        "query": q.chars().take(160).collect::<String>(),
                    })
                })
                .collect(),
        )
    }

    pub async fn pg_connections(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'parley' AND application_name NOT LIKE 'loadgen%'",
        )
        .fetch_one(&self.db)
        .await
        .unwrap_or(-1)
    }
}

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds of the gateway, the database and the machine at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub gateway: f64,
    pub postgres: f64,
    pub machine: f64,
}

impl CpuSnapshot {
    /// Microseconds of CPU per item between `self` (earlier) and `later`.
    pub fn per_item_us(&self, later: &CpuSnapshot, items: u64) -> Value {
        let per = |a: f64, b: f64| {
            if items == 0 {
                return Value::Null;
            }
            json!(((b - a) * 1e6 / items as f64).round())
        };
        json!({
            "gateway": per(self.gateway, later.gateway),
            "postgres": per(self.postgres, later.postgres),
            "machine": per(self.machine, later.machine),
        })
    }
}

/// One process's CPU seconds (user + system), its reaped children's, and its parent.
struct ProcStat {
    cpu: f64,
    reaped_children: f64,
    ppid: u32,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state, ppid, ...; utime, stime,
    // cutime, cstime are fields 14-17 of the whole line.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some(ProcStat {
        cpu: (ticks(11) + ticks(12)) / TICKS,
        reaped_children: (ticks(13) + ticks(14)) / TICKS,
        ppid: f.get(1)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::{route_buckets, shared_buffers_mib};

    #[test]
    fn a_routes_latency_buckets_are_read_from_the_metrics_text() {
        let text = "\
# TYPE parley_http_request_duration_seconds histogram
parley_http_request_duration_seconds_bucket{le=\"0.01\",method=\"POST\",route=\"/webhooks/whatsapp/{channel_account_id}\"} 12
parley_http_request_duration_seconds_bucket{le=\"0.025\",method=\"POST\",route=\"/webhooks/whatsapp/{channel_account_id}\"} 30
parley_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"POST\",route=\"/webhooks/whatsapp/{channel_account_id}\"} 31
parley_http_request_duration_seconds_bucket{le=\"0.01\",method=\"GET\",route=\"/api/v1/contacts\"} 99
parley_http_request_duration_seconds_count{method=\"POST\",route=\"/webhooks/whatsapp/{channel_account_id}\"} 31
";
        assert_eq!(
            route_buckets(text, "/webhooks/whatsapp/{channel_account_id}"),
            [
                ("0.01".to_owned(), 12),
                ("0.025".to_owned(), 30),
                ("+Inf".to_owned(), 31)
            ]
        );
        assert!(route_buckets(text, "/nowhere").is_empty());
    }

    #[test]
    fn shared_buffers_are_a_quarter_of_memory_within_bounds() {
        assert_eq!(shared_buffers_mib(None), 128);
        assert_eq!(shared_buffers_mib(Some(256 * 1024)), 128);
        assert_eq!(shared_buffers_mib(Some(24 * 1024 * 1024)), 6144);
        assert_eq!(shared_buffers_mib(Some(64 * 1024 * 1024)), 8192);
    }
}
