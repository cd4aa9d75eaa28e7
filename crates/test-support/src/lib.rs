//! Test harness: a real gateway on `127.0.0.1:0` over a fresh PostgreSQL database.
//!
//! One PostgreSQL cluster serves a whole test process: the first test to need a database
//! starts an ephemeral cluster (or, with `DATABASE_URL` set, uses that server), migrates a
//! template database once, and every test then gets its own copy of the template
//! (`CREATE DATABASE … TEMPLATE …`, milliseconds). The cluster stops and its files are
//! removed when the test process exits, even if it is killed.

pub mod browser;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use anyhow::{Context as _, anyhow};
use conversation_store::ingest::{Inbound, Ingested, ingest_inbound};
use gateway::{AppState, Config, auth::JwtKeys};
use parley_core::{Principal, Role, TenantId, UserId, channel::Channel};
use pg_cluster::{Cluster, ClusterOptions};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// The JWT secret every test app signs with.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// The platform token every test app accepts.
pub const TEST_PLATFORM_TOKEN: &str = "platform-token-for-tests";
/// The password of every seeded test user.
pub const TEST_PASSWORD: &str = "password-for-tests";

struct Shared {
    /// A URL to an administrative database on the server (for CREATE DATABASE).
    admin_url: String,
    /// Where test databases live: the admin URL with the database name swapped.
    base_url: String,
    template: String,
    _cluster: Option<Cluster>,
}

fn swap_database(url: &str, db: &str) -> anyhow::Result<String> {
    // postgres://user@host:port/<db>?params
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = before_query
        .find("://")
        .ok_or_else(|| anyhow!("not a URL"))?
        + 3;
    let path_start = before_query[scheme_end..]
        .find('/')
        .map_or(before_query.len(), |i| i + scheme_end);
    let mut out = format!("{}/{db}", &before_query[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

fn shared() -> Result<&'static Shared, String> {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            // Set up on a plain thread with its own runtime: callers are inside test
            // runtimes, and nothing created here may outlive this set-up.
            std::thread::spawn(|| init_shared().map_err(|e| format!("{e:#}")))
                .join()
                .unwrap_or_else(|_| Err("test database set-up panicked".to_owned()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn init_shared() -> anyhow::Result<Shared> {
    let (admin_url, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => (url, None),
        _ => {
            let cluster = Cluster::start(&ClusterOptions::ephemeral())
                .context("starting the test PostgreSQL cluster")?;
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let template = format!("parley_tpl_{}", pg_cluster::random_hex(4));
    let base_url = admin_url.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut conn = PgConnection::connect(&admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {template}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&swap_database(&base_url, &template)?)
            .await?;
        conversation_store::MIGRATOR.run(&pool).await?;
        pool.close().await;
        anyhow::Ok(())
    })?;
    Ok(Shared {
        admin_url,
        base_url,
        template,
        _cluster: cluster,
    })
}

/// A fresh, migrated database of its own; returns its URL.
pub async fn fresh_database_url() -> anyhow::Result<String> {
    let shared = shared().map_err(|e| anyhow!(e))?;
    let name = format!("parley_test_{}", pg_cluster::random_hex(6));
    let mut conn = PgConnection::connect(&shared.admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {}",
        shared.template
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    swap_database(&shared.base_url, &name)
}

/// A pool on a fresh, migrated database.
pub async fn fresh_database() -> anyhow::Result<PgPool> {
    let url = fresh_database_url().await?;
    Ok(PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await?)
}

/// The settings a test app runs with, over `database_url`.
pub fn test_config(database_url: &str, overrides: &[(&str, &str)]) -> anyhow::Result<Config> {
    let mut env: HashMap<String, String> = [
        ("DATABASE_URL", database_url),
        ("PARLEY_JWT_SECRET", TEST_JWT_SECRET),
        ("PARLEY_PLATFORM_TOKEN", TEST_PLATFORM_TOKEN),
        ("PARLEY_LISTEN", "127.0.0.1:0"),
        ("PARLEY_DB_POOL_SIZE", "10"),
        // The simulators run on loopback.
        ("PARLEY_PROVIDER_HOSTS", "127.0.0.1,graph.facebook.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Ok(Config::from_lookup(|k| env.get(k).cloned())?)
}

/// A seeded user with a ready access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Id.
    pub id: UserId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Login email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// A valid access token.
    pub token: String,
}

/// A running gateway with a seeded tenant.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// A pool on the app's database (for assertions on stored state).
    pub db: PgPool,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The seeded tenant.
    pub tenant: TenantId,
    /// Its admin.
    pub admin: TestUser,
    /// Its agent.
    pub agent: TestUser,
    /// Its supervisor.
    pub supervisor: TestUser,
    jwt: Arc<JwtKeys>,
    shutdown: CancellationToken,
    /// The app's data directory (attachments), removed on drop.
    pub data_dir: std::path::PathBuf,
    workers: std::sync::Mutex<CancellationToken>,
    state: AppState,
    /// The database URL (for extra connections).
    pub db_url: String,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub json: Value,
    /// The raw body.
    pub text: String,
}

impl Reply {
    /// The `content-type` header.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The problem+json `code`.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or_default()
    }
}

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().build().ok();
        std::thread::spawn(move || {
            rt.and_then(|rt| {
                rt.block_on(gateway::auth::hash_password(TEST_PASSWORD.to_owned()))
                    .ok()
            })
            .unwrap_or_default()
        })
        .join()
        .unwrap_or_default()
    })
}

/// An HTTP client for tests (with the TLS provider installed).
pub fn http() -> reqwest::Client {
    channel_connector::http_client(std::time::Duration::from_secs(30))
}

/// Start another gateway replica over the same database as `app` (its own pool,
/// listener, event sequencer and hub, router, pruner and outbox dispatcher), as a second
/// process behind a load balancer would be.
pub async fn spawn_replica(app: &TestApp) -> (String, CancellationToken) {
    let db = PgPoolOptions::new()
        .max_connections(app.state.config.db_pool_size)
        .connect(&app.db_url)
        .await
        .expect("replica pool");
    let state = AppState::new(db, (*app.state.config).clone(), TEST_JWT_SECRET.as_bytes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = gateway::build_router(state.clone());
    let stop = state.shutdown.clone();
    let (cap, headers) = (
        state.config.max_connections_per_ip,
        state.config.header_timeout,
    );
    tokio::spawn(gateway::serve(listener, router, stop.clone(), cap, headers));
    start_background(&state, &stop);
    let parent = app.shutdown.clone();
    let child = stop.clone();
    tokio::spawn(async move {
        parent.cancelled().await;
        child.cancel();
    });
    (addr.to_string(), stop)
}

/// The background work of one gateway process (its LISTEN connection, the dispatcher,
/// which stops with `dispatcher_stop`, the media fetcher, the sequencer, the router).
fn start_background(state: &AppState, dispatcher_stop: &CancellationToken) {
    let stop = state.shutdown.clone();
    tokio::spawn(channel_connector::worker::listen(
        state.db.clone(),
        state.wakeups.clone(),
        stop.clone(),
    ));
    tokio::spawn(gateway::app::dispatcher(state).run(
        state.wakeups.subscribe(channel_connector::outbox::CHANNEL),
        dispatcher_stop.clone(),
    ));
    tokio::spawn(gateway::app::media_fetcher(state).run(
        state.wakeups.subscribe(channel_connector::media::CHANNEL),
        stop.clone(),
    ));
    tokio::spawn(gateway::events::run_sequencer(state.clone(), stop.clone()));
    tokio::spawn(gateway::events::run_feed(state.clone(), stop.clone()));
    tokio::spawn(gateway::app::run_router(state.clone(), stop));
}

/// Start a gateway with the default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Start a gateway with some settings overridden (`PARLEY_*` names).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    match try_spawn_app(overrides).await {
        Ok(app) => app,
        Err(e) => panic!("spawn_app failed: {e:#}"),
    }
}

async fn try_spawn_app(overrides: &[(&str, &str)]) -> anyhow::Result<TestApp> {
    let url = fresh_database_url().await?;
    let data_dir = std::env::temp_dir().join(format!("parley-app-{}", pg_cluster::random_hex(6)));
    let data_dir_s = data_dir.display().to_string();
    let mut all: Vec<(&str, &str)> = vec![
        ("PARLEY_DATA_DIR", data_dir_s.as_str()),
        ("PARLEY_OUTBOX_BACKOFF_MS", "50"),
    ];
    all.extend_from_slice(overrides);
    let config = test_config(&url, &all)?;
    let db = PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .connect(&url)
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(db.clone(), config, TEST_JWT_SECRET.as_bytes());
    let jwt = state.jwt.clone();
    let router = gateway::build_router(state.clone());
    let shutdown = state.shutdown.clone();
    let (cap, headers) = (
        state.config.max_connections_per_ip,
        state.config.header_timeout,
    );
    tokio::spawn(gateway::serve(
        listener,
        router,
        shutdown.clone(),
        cap,
        headers,
    ));
    let workers = shutdown.child_token();
    start_background(&state, &workers);
    let (tenant, users) = seed_tenant(&db, &jwt, "Test Tenant", "test").await?;
    let [admin, supervisor, agent] = users;
    Ok(TestApp {
        base: format!("http://{addr}"),
        addr,
        db,
        client: http(),
        tenant,
        admin,
        agent,
        supervisor,
        jwt,
        shutdown,
        data_dir,
        workers: std::sync::Mutex::new(workers),
        state,
        db_url: url,
    })
}

/// Create a tenant with an admin, a supervisor and an agent (emails
/// `<role>@<slug>-<random>.test`), each with a token.
pub async fn seed_tenant(
    db: &PgPool,
    jwt: &JwtKeys,
    name: &str,
    slug: &str,
) -> anyhow::Result<(TenantId, [TestUser; 3])> {
    let mut tx = db.begin().await?;
    let tenant = conversation_store::accounts::create_tenant(&mut tx, name).await?;
    let tenant_id = TenantId(tenant.id);
    let domain = format!("{slug}-{}.test", pg_cluster::random_hex(3));
    let mut users = Vec::new();
    for role in [Role::Admin, Role::Supervisor, Role::Agent] {
        let email = format!("{}@{domain}", role.as_str());
        let user = conversation_store::accounts::create_user(
            &mut tx,
            tenant_id,
            &conversation_store::accounts::NewUser {
                email: email.clone(),
                display_name: format!("Test {}", role.as_str()),
                role,
                password_hash: password_hash().to_owned(),
                skills: vec![],
                capacity: 3,
            },
        )
        .await?;
        let token = jwt.issue(&Principal {
            user_id: user.id,
            tenant_id,
            role,
        })?;
        users.push(TestUser {
            id: user.id,
            tenant_id,
            email,
            role,
            token,
        });
    }
    tx.commit().await?;
    let users: [TestUser; 3] = users
        .try_into()
        .map_err(|_| anyhow!("expected three users"))?;
    Ok((tenant_id, users))
}

impl TestApp {
    /// A full URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Seed another tenant in the same database.
    pub async fn other_tenant(&self) -> (TenantId, [TestUser; 3]) {
        match seed_tenant(&self.db, &self.jwt, "Other Tenant", "other").await {
            Ok(t) => t,
            Err(e) => panic!("seeding another tenant failed: {e:#}"),
        }
    }

    /// Sign a token for any principal (e.g. a forged tenant).
    pub fn token_for(&self, p: &Principal) -> String {
        self.jwt.issue(p).unwrap_or_default()
    }

    /// Send a request; `token` adds a bearer header, `body` a JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => panic!("request to {path} failed: {e:?}"),
        };
        read_reply(res).await
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// PATCH JSON with a token.
    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// Log in over HTTP.
    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&serde_json::json!({"email": email, "password": password})),
        )
        .await
    }
}

/// The bundled WhatsApp simulator bound to a channel account of the test tenant.
pub struct Wa {
    /// The simulator (real HTTP).
    pub sim: whatsapp_sim::Simulator,
    /// The channel account.
    pub account_id: uuid::Uuid,
    /// `http://127.0.0.1:<port>` of the simulator.
    pub sim_base: String,
    /// The account's app secret (to sign webhooks by hand).
    pub app_secret: String,
    /// The webhook path.
    pub webhook_path: String,
}

/// An SMS simulator wired to a channel account of the app's tenant.
pub struct Sms {
    /// The simulator.
    pub sim: sms_sim::Simulator,
    /// The channel account.
    pub account_id: uuid::Uuid,
    /// `/webhooks/twilio_sms/{id}`.
    pub webhook_path: String,
}

impl TestApp {
    /// Stop the outbox dispatcher (as if the gateway died before sending).
    pub fn stop_dispatcher(&self) {
        if let Ok(w) = self.workers.lock() {
            w.cancel();
        }
    }

    /// Start a new outbox dispatcher (as a restarted gateway does).
    pub fn start_dispatcher(&self) {
        let token = self.shutdown.child_token();
        tokio::spawn(
            gateway::app::dispatcher(&self.state).run(
                self.state
                    .wakeups
                    .subscribe(channel_connector::outbox::CHANNEL),
                token.clone(),
            ),
        );
        if let Ok(mut w) = self.workers.lock() {
            *w = token;
        }
    }

    /// Start another outbox dispatcher beside the running one, as a second gateway
    /// replica on the same database would.
    pub fn start_second_dispatcher(&self) {
        tokio::spawn(
            gateway::app::dispatcher(&self.state).run(
                self.state
                    .wakeups
                    .subscribe(channel_connector::outbox::CHANNEL),
                self.shutdown.child_token(),
            ),
        );
    }

    /// Start another router beside the running one, as a second replica would.
    pub fn start_second_router(&self) {
        tokio::spawn(gateway::app::run_router(
            self.state.clone(),
            self.shutdown.child_token(),
        ));
    }

    /// Start a WhatsApp simulator and configure a channel account for it through the API.
    pub async fn whatsapp(&self) -> Wa {
        let cfg = whatsapp_sim::SimConfig::default();
        let sim = whatsapp_sim::Simulator::new(cfg.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sim");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(whatsapp_sim::serve(
            listener,
            sim.clone(),
            self.shutdown.clone(),
        ));
        let r = self
            .post(
                "/api/v1/channel-accounts",
                &self.admin.token,
                &serde_json::json!({
                    "provider": "whatsapp",
                    "name": "Test number",
                    "phone_number_id": cfg.phone_number_id,
                    "waba_id": "WABA-SIM",
                    "display_phone_number": cfg.display_phone_number,
                    "access_token": cfg.access_token,
                    "app_secret": cfg.app_secret,
                    "verify_token": "verify-me",
                    "api_base_url": format!("http://{addr}/v21.0"),
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let account_id: uuid::Uuid = r.json["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        let webhook_path = format!("/webhooks/whatsapp/{account_id}");
        sim.set_webhook(&self.url(&webhook_path), &cfg.app_secret);
        Wa {
            sim,
            account_id,
            sim_base: format!("http://{addr}"),
            app_secret: cfg.app_secret,
            webhook_path,
        }
    }

    /// Start an SMS (Twilio) simulator and configure a channel account for it through
    /// the API, its public URL this gateway's.
    pub async fn sms(&self) -> Sms {
        let sim = sms_sim::Simulator::new(sms_sim::SimConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sim");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(sms_sim::serve(listener, sim.clone(), self.shutdown.clone()));
        let r = self
            .post(
                "/api/v1/channel-accounts",
                &self.admin.token,
                &serde_json::json!({
                    "provider": "twilio_sms",
                    "name": "Test SMS number",
                    "account_sid": sim.account_sid(),
                    "from": sim.number(),
                    "auth_token": sim.auth_token(),
                    "public_url": self.base,
                    "api_base_url": format!("http://{addr}/2010-04-01"),
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let account_id: uuid::Uuid = r.json["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        let webhook_path = r.json["webhook_path"].as_str().expect("path").to_owned();
        sim.set_webhook(&self.url(&webhook_path));
        Sms {
            sim,
            account_id,
            webhook_path,
        }
    }

    /// The id of the contact with this phone number (the directory's search).
    pub async fn contact_id_of(&self, phone: &str) -> String {
        let r = self
            .get(
                &format!("/api/v1/contacts?q={}", phone.trim_start_matches('+')),
                &self.agent.token,
            )
            .await;
        r.json["items"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a contact for {phone}: {}", r.text))
            .to_owned()
    }

    /// The contact's transcript (up to 200 messages, oldest first), as the agent reads it.
    pub async fn transcript_of(&self, contact: &str) -> Vec<Value> {
        self.get(
            &format!("/api/v1/contacts/{contact}/messages?limit=200"),
            &self.agent.token,
        )
        .await
        .json["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Wait (up to 10 s) until `check` holds, polling.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for: {what}");
    }
}

/// An inbound message for [`TestApp::inbound`].
#[derive(Debug, Clone)]
pub struct In<'a> {
    /// Channel.
    pub channel: Channel,
    /// Sender address (already normalised).
    pub address: &'a str,
    /// Profile name.
    pub name: Option<&'a str>,
    /// Text.
    pub body: &'a str,
    /// Provider id.
    pub provider_id: Option<&'a str>,
}

impl TestApp {
    /// Store an inbound message the way a channel connector does (one transaction).
    pub async fn inbound_in(&self, tenant: TenantId, m: In<'_>) -> Ingested {
        let mut tx = self.db.begin().await.expect("begin");
        let out = ingest_inbound(
            &mut tx,
            tenant,
            &Inbound {
                channel: m.channel,
                channel_account_id: None,
                address: m.address.to_owned(),
                profile_name: m.name.map(str::to_owned),
                provider_message_id: m.provider_id.map(str::to_owned),
                kind: "text".to_owned(),
                body: Some(m.body.to_owned()),
                payload: serde_json::json!({}),
                attachment_ids: vec![],
                reply_to_provider_id: None,
                sent_at: None,
            },
        )
        .await
        .expect("ingest");
        tx.commit().await.expect("commit");
        out
    }

    /// [`TestApp::inbound_in`] for the app's own tenant, WhatsApp, one sender.
    pub async fn inbound(&self, address: &str, body: &str) -> Ingested {
        self.inbound_in(
            self.tenant,
            In {
                channel: Channel::Whatsapp,
                address,
                name: None,
                body,
                provider_id: None,
            },
        )
        .await
    }
}

/// Read a response whole.
pub async fn read_reply(res: reqwest::Response) -> Reply {
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        json,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::swap_database;

    #[test]
    fn database_name_is_swapped_keeping_parameters() {
        assert_eq!(
            swap_database(
                "postgres://parley@localhost/postgres?host=/tmp/x&port=5432",
                "t1"
            )
            .ok()
            .as_deref(),
            Some("postgres://parley@localhost/t1?host=/tmp/x&port=5432")
        );
        assert_eq!(
            swap_database("postgres://u:p@h:5433/db", "t2")
                .ok()
                .as_deref(),
            Some("postgres://u:p@h:5433/t2")
        );
        assert_eq!(
            swap_database("postgres://u@h", "t3").ok().as_deref(),
            Some("postgres://u@h/t3")
        );
    }
}
