//! Start-up and shutdown: the database (embedded or external), migrations, the demo seed,
//! the listener, and an orderly stop on SIGINT/SIGTERM.

use std::{
    io::Write as _, net::SocketAddr, os::unix::fs::PermissionsExt as _, path::Path, time::Duration,
};

use anyhow::{Context as _, bail};
use conversation_store::accounts::{self, NewUser};
use parley_core::{Role, TenantId};
use pg_cluster::{Cluster, ClusterOptions};
use sqlx::{Connection as _, PgPool, postgres::PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{AppState, build_router, serve},
    config::{Config, Database},
};

/// The demo tenant's users and their password.
pub const DEMO_ADMIN: &str = "admin@demo.local";
/// The demo agent.
pub const DEMO_AGENT: &str = "agent@demo.local";
/// Password of both demo users.
pub const DEMO_PASSWORD: &str = "parley-demo";

/// The database the gateway uses inside its embedded cluster.
const EMBEDDED_DB: &str = "parley";

/// A connected database, plus the embedded cluster when there is one (kept alive here).
pub struct Db {
    /// The pool.
    pub pool: PgPool,
    /// The embedded cluster, stopped when dropped.
    pub cluster: Option<Cluster>,
}

/// Connect to the configured database, starting the embedded cluster if needed, and run
/// the migrations.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let (url, cluster) = match &config.database {
        Database::Url(url) => (url.0.clone(), None),
        Database::Embedded => {
            let mut opts = ClusterOptions::persistent(&config.data_dir);
            opts.unprivileged_user.clone_from(&config.pg_user);
            let cluster = tokio::task::spawn_blocking(move || Cluster::start(&opts))
                .await
                .context("starting the embedded PostgreSQL")??;
            create_database_if_missing(&cluster.url("postgres"), EMBEDDED_DB).await?;
            (cluster.url(EMBEDDED_DB), Some(cluster))
        }
    };
    // No JIT compilation: it starts above an estimated cost, not a run time, and the
    // statements here are short; the router's queue round over a backlog of 9,000
    // (estimated high for its per-row subqueries) spent 77–89 ms compiling on every call.
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .context("DATABASE_URL is not a PostgreSQL URL")?
        .options([("jit", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL; check DATABASE_URL and that the server is up")?;
    conversation_store::MIGRATOR
        .run(&pool)
        .await
        .context("applying database migrations")?;
    Ok(Db { pool, cluster })
}

/// `CREATE DATABASE name` unless it exists.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // Identifiers can't be bound; `name` is ours, quote it anyway.
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

/// The JWT secret: from the settings, or generated once into the data directory.
pub fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.0.as_bytes().to_vec());
    }
    let path = config.data_dir.join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && existing.trim().len() >= 32
    {
        return Ok(existing.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let secret = pg_cluster::random_hex(32);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(secret.as_bytes())?;
    Ok(secret.into_bytes())
}

/// Create the demo tenant, admin and agent unless they exist.
pub async fn seed_demo(pool: &PgPool) -> anyhow::Result<TenantId> {
    let mut tx = pool.begin().await?;
    if let Some(t) = accounts::tenant_of_email(&mut tx, DEMO_ADMIN).await? {
        return Ok(t);
    }
    let tenant = accounts::create_tenant(&mut tx, "Demo Contact Center").await?;
    let tenant_id = TenantId(tenant.id);
    let hash = crate::auth::hash_password(DEMO_PASSWORD.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the demo password: {}", e.code()))?;
    for (email, name, role) in [
        (DEMO_ADMIN, "Demo Admin", Role::Admin),
        (DEMO_AGENT, "Demo Agent", Role::Agent),
    ] {
        accounts::create_user(
            &mut tx,
            tenant_id,
            &NewUser {
                email: email.to_owned(),
                display_name: name.to_owned(),
                role,
                password_hash: hash.clone(),
                skills: vec!["whatsapp".to_owned()],
                capacity: 3,
            },
        )
        .await?;
    }
    // What a desk has on day one: a queue with wrap-up codes, Not Ready reasons, and a
    // standard response, so the console shows them all.
    interaction_router::queues::create(
        &mut tx,
        tenant_id,
        &interaction_router::queues::QueueSpec {
            name: "Support".to_owned(),
            channels: vec![],
            skills: vec![],
            relax_after_secs: None,
            relaxable_skills: vec![],
            offer_timeout_secs: 300,
            wrap_up_codes: ["resolved", "follow_up", "no_answer"]
                .map(str::to_owned)
                .to_vec(),
            ended_counts: true,
            inactivity_timeout_secs: None,
        },
    )
    .await?;
    for (code, label) in [
        ("break", "Break"),
        ("lunch", "Lunch"),
        ("training", "Training"),
    ] {
        interaction_router::queues::save_reason(&mut tx, tenant_id, code, label).await?;
    }
    notification_templates::store::save_response(
        &mut tx,
        tenant_id,
        None,
        &notification_templates::store::ResponseSpec {
            name: "Greeting".to_owned(),
            category: Some("openers".to_owned()),
            text: "Hi {{first_name}}, I'm {{agent}}. How can I help?".to_owned(),
            shortcut: Some("/hi".to_owned()),
            bindings: serde_json::json!({
                "first_name": {"bind": "contact.first_name", "default": "there"},
                "agent": {"bind": "agent.first_name"},
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(tenant_id)
}

/// Bind the listening socket, with a message that says what to do when it fails.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: the address is already in use; stop whatever uses it or set PARLEY_LISTEN to a free address"
        ),
        Err(e) => {
            bail!("cannot listen on {addr}: {e}; set PARLEY_LISTEN to an address this machine has")
        }
    }
}

/// `gateway serve`: everything, until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Bind first: a taken port should fail before a database is started.
    let listener = bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let db = open_database(&config).await?;
    let secret = jwt_secret(&config)?;
    if config.demo {
        seed_demo(&db.pool).await?;
    }
    let pool = db.pool.clone();
    let demo = config.demo;
    let run_sim = config.simulator;
    let sim_listen = config.simulator_listen;
    let sim_listen_set = config.simulator_listen_set;
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let state = AppState::new(pool.clone(), config, &secret);
    let router = build_router(state.clone());

    let shutdown = state.shutdown.clone();
    tokio::spawn(watch_signals(shutdown.clone()));
    let workers = tokio_util::task::TaskTracker::new();
    crate::app::spawn_workers(&state, &workers);
    if let Some(l) = metrics_listener {
        let addr = l.local_addr()?;
        let metrics = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(crate::routes::health::metrics_only),
            )
            .with_state(state.clone());
        let stop = shutdown.clone();
        workers.spawn(async move {
            if let Err(e) = axum::serve(l, metrics)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::warn!(error = %e, "the metrics listener stopped");
            }
        });
        println!("  metrics: http://{addr}/metrics");
    }
    let sim_url = if run_sim {
        let (url, tenant, account) = start_simulator(
            &pool,
            sim_listen,
            sim_listen_set,
            addr,
            &state.config.simulator_bound,
            &workers,
            &shutdown,
        )
        .await?;
        // The demo tenant learns the simulator's templates, as an admin's sync would.
        let st = state.clone();
        workers.spawn(async move {
            match crate::routes::templates::sync_account(&st, tenant, account).await {
                Ok(s) => tracing::info!(synced = s.synced, "demo templates synced from the simulator"),
                Err(e) => tracing::warn!(error = ?e, "demo templates could not be synced; POST …/templates/sync tries again"),
            }
        });
        let sms = start_sms_simulator(
            &pool,
            SocketAddr::new(sim_listen.ip(), sim_listen.port().saturating_add(1)),
            addr,
            &workers,
            &shutdown,
        )
        .await?;
        Some((url, sms))
    } else {
        None
    };

    tracing::info!(%addr, "listening");
    // The test harness and operators read this line.
    println!("Parley is listening on http://{addr}");
    if demo {
        println!(
            "  demo tenant: {DEMO_ADMIN} (admin) and {DEMO_AGENT} (agent), password `{DEMO_PASSWORD}`"
        );
        println!(
            "  try: curl -s http://{addr}/api/v1/auth/login -H 'content-type: application/json' -d '{{\"email\":\"{DEMO_AGENT}\",\"password\":\"{DEMO_PASSWORD}\"}}'"
        );
    }
    if let Some((url, sms)) = &sim_url {
        println!(
            "  WhatsApp simulator: {url} (a contact writes: curl -s {url}/_sim/inbound -H 'content-type: application/json' -d '{{\"from\":\"+14155552671\",\"name\":\"Ana\",\"text\":\"hola\"}}')"
        );
        println!(
            "  SMS simulator: {sms} (a contact texts: curl -s {sms}/_sim/inbound -H 'content-type: application/json' -d '{{\"from\":\"+13105550142\",\"body\":\"hi\"}}')"
        );
    }
    let _ = std::io::stdout().flush();

    let served = serve(
        listener,
        router,
        shutdown.clone(),
        state.config.max_connections_per_ip,
        state.config.header_timeout,
    )
    .await;
    tracing::info!("shutting down");
    shutdown.cancel();
    workers.close();
    workers.wait().await;
    pool.close().await;
    if let Some(cluster) = db.cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
    }
    tracing::info!("stopped");
    served.context("serving HTTP")
}

/// Bind a demo simulator's address; when its usual address is taken (another Parley?)
/// and it was not set explicitly, any free port will do.
async fn bind_simulator(
    listen: SocketAddr,
    listen_set: bool,
    what: &str,
) -> anyhow::Result<TcpListener> {
    match bind(listen).await {
        Ok(l) => Ok(l),
        Err(e) if !listen_set => {
            tracing::warn!(%listen, error = %e, simulator = what, "the simulator's usual address is taken; using a free port");
            bind(SocketAddr::new(listen.ip(), 0))
                .await
                .with_context(|| format!("starting the {what} simulator"))
        }
        Err(e) => Err(e.context(format!("starting the {what} simulator"))),
    }
}

/// Start the bundled WhatsApp simulator and bind the demo tenant's channel account to it
/// (created on first run, re-pointed at the simulator's new port on later runs).
async fn start_simulator(
    pool: &PgPool,
    listen: SocketAddr,
    listen_set: bool,
    gateway: SocketAddr,
    bound: &std::sync::OnceLock<SocketAddr>,
    workers: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<(String, TenantId, uuid::Uuid)> {
    let listener = bind_simulator(listen, listen_set, "WhatsApp").await?;
    let sim_addr = listener.local_addr()?;
    let _ = bound.set(sim_addr);
    let cfg = whatsapp_sim::SimConfig::default();
    let sim = whatsapp_sim::Simulator::new(cfg.clone());
    for t in demo_templates() {
        sim.set_template(t);
    }
    workers.spawn(whatsapp_sim::serve(listener, sim.clone(), shutdown.clone()));
    let base = format!("http://{sim_addr}/v21.0");
    let mut tx = pool.begin().await?;
    let tenant = accounts::tenant_of_email(&mut tx, DEMO_ADMIN)
        .await?
        .context("the simulator needs the demo tenant; set PARLEY_DEMO=1")?;
    let existing = channel_connector::accounts::list(&mut tx, tenant)
        .await?
        .into_iter()
        .find(|a| a.phone_number_id == cfg.phone_number_id);
    let account = match existing {
        Some(a) => channel_connector::accounts::update(
            &mut tx,
            tenant,
            a.id,
            &channel_connector::accounts::AccountPatch {
                api_base_url: Some(base.clone()),
                ..Default::default()
            },
        )
        .await?
        .context("demo channel account vanished")?,
        None => {
            channel_connector::accounts::create(
                &mut tx,
                tenant,
                &channel_connector::accounts::NewAccount {
                    provider: channel_connector::providers::Provider::WhatsappCloud,
                    provider_config: serde_json::json!({}),
                    name: "Demo WhatsApp (simulator)".to_owned(),
                    phone_number_id: cfg.phone_number_id.clone(),
                    waba_id: Some("WABA-SIM".to_owned()),
                    display_phone_number: Some(cfg.display_phone_number.clone()),
                    secrets: channel_connector::accounts::Secrets {
                        access_token: cfg.access_token.clone(),
                        app_secret: cfg.app_secret.clone(),
                        verify_token: "sim-verify-token".to_owned(),
                    },
                    api_base_url: base.clone(),
                    mark_read: false,
                },
            )
            .await?
        }
    };
    tx.commit().await?;
    sim.set_webhook(
        &format!("http://{gateway}/webhooks/whatsapp/{}", account.id),
        &cfg.app_secret,
    );
    Ok((format!("http://{sim_addr}"), tenant, account.id))
}

/// Start the bundled SMS (Twilio) simulator next to the WhatsApp one (any free port when
/// that one is taken) and bind the demo tenant's SMS account to it.
async fn start_sms_simulator(
    pool: &PgPool,
    listen: SocketAddr,
    gateway: SocketAddr,
    workers: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<String> {
    let listener = bind_simulator(listen, false, "SMS").await?;
    let sim_addr = listener.local_addr()?;
    let sim = sms_sim::Simulator::new(sms_sim::SimConfig::default());
    workers.spawn(sms_sim::serve(listener, sim.clone(), shutdown.clone()));
    let base = format!("http://{sim_addr}/2010-04-01");
    let mut tx = pool.begin().await?;
    let tenant = accounts::tenant_of_email(&mut tx, DEMO_ADMIN)
        .await?
        .context("the simulator needs the demo tenant; set PARLEY_DEMO=1")?;
    let existing = channel_connector::accounts::list(&mut tx, tenant)
        .await?
        .into_iter()
        .find(|a| a.provider == "twilio_sms" && a.phone_number_id == sim.number());
    let account = match existing {
        Some(a) => {
            channel_connector::accounts::update(
                &mut tx,
                tenant,
                a.id,
                &channel_connector::accounts::AccountPatch {
                    api_base_url: Some(base.clone()),
                    ..Default::default()
                },
            )
            .await?;
            channel_connector::accounts::set_provider_config(
                &mut tx,
                tenant,
                a.id,
                &serde_json::json!({
                    "account_sid": sim.account_sid(),
                    "public_url": format!("http://{gateway}"),
                }),
            )
            .await?
            .context("demo SMS account vanished")?
        }
        None => {
            channel_connector::accounts::create(
                &mut tx,
                tenant,
                &channel_connector::accounts::NewAccount {
                    provider: channel_connector::providers::Provider::TwilioSms,
                    provider_config: serde_json::json!({
                        "account_sid": sim.account_sid(),
                        "public_url": format!("http://{gateway}"),
                    }),
                    name: "Demo SMS (simulator)".to_owned(),
                    phone_number_id: sim.number(),
                    waba_id: None,
                    display_phone_number: Some(sim.number()),
                    secrets: channel_connector::accounts::Secrets {
                        access_token: sim.auth_token(),
                        app_secret: sim.auth_token(),
                        verify_token: String::new(),
                    },
                    api_base_url: base,
                    mark_read: false,
                },
            )
            .await?
        }
    };
    tx.commit().await?;
    let webhook = account
        .twilio()
        .map(|c| c.webhook_url)
        .context("the demo SMS account is a Twilio account")?;
    sim.set_webhook(&webhook);
    Ok(format!("http://{sim_addr}"))
}

/// Templates the demo's simulator holds approved, so notifications work out of the box:
/// an appointment proposal with an image header, an auto-filled name and Yes/No reply
/// buttons, and a plain order update.
fn demo_templates() -> [serde_json::Value; 2] {
    [
        serde_json::json!({
            "name": "appointment_proposal", "language": "en", "status": "APPROVED",
            "category": "UTILITY", "id": "900000000000001",
            "components": [
                {"type": "HEADER", "format": "IMAGE"},
                {"type": "BODY", "text": "Hello {{1}}, we can offer you an appointment on {{2}}. Does that suit you?",
                 "example": {"body_text": [["Ana", "Monday at 10:00"]]}},
                {"type": "FOOTER", "text": "Reply STOP to opt out"},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Yes"},
                    {"type": "QUICK_REPLY", "text": "No"}]}
            ]
        }),
        serde_json::json!({
            "name": "order_update", "language": "en", "status": "APPROVED",
            "category": "UTILITY", "id": "900000000000002",
            "components": [
                {"type": "BODY", "text": "Hi {{1}}, your order {{2}} is on its way.",
                 "example": {"body_text": [["Ana", "A-1001"]]}}
            ]
        }),
    ]
}

/// `gateway migrate`: apply migrations and exit.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    db.pool.close().await;
    if let Some(cluster) = db.cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
    }
    Ok(())
}

async fn watch_signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = ctrl_c.await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("signal received");
    shutdown.cancel();
}

/// Whether `path` looks like it holds an embedded cluster (for messages).
pub fn has_cluster(path: &Path) -> bool {
    path.join("pg").join("PG_VERSION").exists() || path.join("pg-location").exists()
}
