//! Fault drills against the compiled binary. The short version runs in the suite; the
//! figures it prints (`drill: …`) are the ones the README's drill table reports.
//!
//! Crash: the gateway is killed with SIGKILL while signed webhooks and agent sends are in
//! flight, then started again on the same database. Every webhook is retried until it is
//! answered 200 (as Meta does) and every send until it is answered 2xx with the same
//! `Idempotency-Key` (as a front-end does). Then everything is reconciled: each webhook is
//! stored exactly once, each send is stored once and reaches the provider; a send may
//! reach the provider twice only when the crash fell between the provider's answer and
//! the commit that marks it sent (the documented window), and never more than once per
//! claimed batch.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const PLATFORM: &str = "platform-token-for-the-drills";
const JWT: &str = "a-jwt-secret-for-the-drills-of-32-chars-or-more";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The gateway process, killed when dropped (so a failing drill leaves nothing behind).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(db_url: &str, port: u16, data_dir: &std::path::Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("PARLEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("PARLEY_DATA_DIR", data_dir)
            .env("PARLEY_PLATFORM_TOKEN", PLATFORM)
            .env("PARLEY_JWT_SECRET", JWT)
            .env("PARLEY_SIMULATOR", "false")
            .env("PARLEY_PROVIDER_HOSTS", "127.0.0.1")
            .env("PARLEY_OUTBOX_BACKOFF_MS", "100")
            .env("PARLEY_LOGIN_MAX_FAILURES_PER_IP", "1000")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gateway"),
    )
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway did not become ready");
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("json")
}

fn webhook(secret: &str, from: usize, wamid: &str) -> (Vec<u8>, String) {
    let from = format!("14156{from:06}");
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA-DRILL", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"},
            "contacts": [{"profile": {"name": "Drill contact"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": "1764000000",
                          "type": "text", "text": {"body": wamid}}]
        }}]}]
    }))
    .expect("json");
    let sig = channel_connector::signature::sign(secret.as_bytes(), &body);
    (body, sig)
}

/// `true` when the webhook was answered 200.
async fn deliver(http: &reqwest::Client, url: &str, body: &[u8], sig: &str) -> bool {
    http.post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body.to_vec())
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// `true` when the send was answered 2xx.
async fn agent_send(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    contact: &str,
    n: u64,
) -> bool {
    http.post(format!("{base}/api/v1/contacts/{contact}/messages"))
        .bearer_auth(token)
        .header("idempotency-key", format!("drill-{n}"))
        .json(&json!({"channel": "whatsapp", "text": format!("drill-out-{n}")}))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_traffic_loses_nothing_and_acts_once() {
    let db_url = test_support::fresh_database_url().await.expect("database");
    let db = sqlx::PgPool::connect(&db_url).await.expect("pool");
    let cfg = whatsapp_sim::SimConfig::default();
    let sim = whatsapp_sim::Simulator::new(cfg.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim_addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(whatsapp_sim::serve(listener, sim.clone(), stop.clone()));
    let data_dir = std::env::temp_dir().join(format!("parley-drill-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = test_support::http();

    let mut gw = spawn(&db_url, port, &data_dir);
    wait_ready(&http, &base).await;
    post(
        &http,
        &format!("{base}/platform/v1/tenants"),
        PLATFORM,
        &json!({"name": "Drill", "admin_email": "admin@drill.test", "admin_password": "drill-password"}),
    )
    .await;
    let login = post(
        &http,
        &format!("{base}/api/v1/auth/login"),
        "",
        &json!({"email": "admin@drill.test", "password": "drill-password"}),
    )
    .await;
    let token = login["access_token"].as_str().expect("token").to_owned();
    let acc = post(
        &http,
        &format!("{base}/api/v1/channel-accounts"),
        &token,
        &json!({"provider": "whatsapp", "name": "Drill number", "phone_number_id": cfg.phone_number_id,
                "waba_id": "WABA-DRILL", "display_phone_number": cfg.display_phone_number,
                "access_token": cfg.access_token, "app_secret": cfg.app_secret, "verify_token": "v",
                "api_base_url": format!("http://{sim_addr}/v21.0")}),
    )
    .await;
    let hook = format!(
        "{base}/webhooks/whatsapp/{}",
        acc["id"].as_str().expect("id")
    );

    // Contacts that have written (so the 24-hour window is open for replies).
    const CONTACTS: usize = 20;
    for c in 0..CONTACTS {
        let (body, sig) = webhook(&cfg.app_secret, c, &format!("wamid.drill-seed-{c}"));
        assert!(deliver(&http, &hook, &body, &sig).await);
    }
    let contacts: Vec<String> = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM contacts")
        .fetch_all(&db)
        .await
        .expect("contacts")
        .into_iter()
        .map(|u| u.to_string())
        .collect();
    assert_eq!(contacts.len(), CONTACTS);
    let contacts = Arc::new(contacts);

    // Traffic: inbound webhooks and agent sends, each remembering whether it was answered.
    let running = Arc::new(AtomicBool::new(true));
    let seq = Arc::new(AtomicU64::new(0));
    let inbound: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    let outbound: Arc<Mutex<BTreeMap<u64, bool>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..6 {
        let (http, hook, running, seq, inbound) = (
            http.clone(),
            hook.clone(),
            running.clone(),
            seq.clone(),
            inbound.clone(),
        );
        let secret = cfg.app_secret.clone();
        workers.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let wamid = format!("wamid.drill-in-{n}");
                let (body, sig) = webhook(&secret, (w * 7 + n as usize) % CONTACTS, &wamid);
                let ok = deliver(&http, &hook, &body, &sig).await;
                inbound.lock().expect("lock").insert(wamid, ok);
                if !ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for _ in 0..3 {
        let (http, base, token, running, seq, outbound, contacts) = (
            http.clone(),
            base.clone(),
            token.clone(),
            running.clone(),
            seq.clone(),
            outbound.clone(),
            contacts.clone(),
        );
        workers.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let c = &contacts[n as usize % contacts.len()];
                let ok = agent_send(&http, &base, &token, c, n).await;
                outbound.lock().expect("lock").insert(n, ok);
                if !ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gw.0.kill().expect("kill -9");
    let _ = gw.0.wait();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw = spawn(&db_url, port, &data_dir);
    wait_ready(&http, &base).await;
    let recovery = killed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    running.store(false, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }

    // The provider retries what was not answered 200; the front-end retries its sends.
    let inbound = inbound.lock().expect("lock").clone();
    let outbound = outbound.lock().expect("lock").clone();
    let unanswered_in = inbound.values().filter(|ok| !**ok).count();
    let unanswered_out = outbound.values().filter(|ok| !**ok).count();
    for (wamid, ok) in &inbound {
        if !ok {
            let n: usize = wamid
                .trim_start_matches("wamid.drill-in-")
                .parse()
                .expect("n");
            let (body, sig) = webhook(&cfg.app_secret, n % CONTACTS, wamid);
            let mut done = false;
            for _ in 0..50 {
                if deliver(&http, &hook, &body, &sig).await {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(done, "{wamid} was never answered 200");
        }
    }
    for (n, ok) in &outbound {
        if !ok {
            let c = &contacts[*n as usize % contacts.len()];
            let mut done = false;
            for _ in 0..50 {
                if agent_send(&http, &base, &token, c, *n).await {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(done, "send {n} was never answered 2xx");
        }
    }

    // Reconcile the webhooks: each stored exactly once.
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT provider_message_id, count(*) FROM messages
         WHERE provider_message_id LIKE 'wamid.drill-in-%' GROUP BY 1",
    )
    .fetch_all(&db)
    .await
    .expect("stored");
    let stored: BTreeMap<String, i64> = stored.into_iter().collect();
    let lost_in: Vec<&String> = inbound
        .keys()
        .filter(|w| !stored.contains_key(*w))
        .collect();
    let dup_in = stored.values().filter(|c| **c > 1).count();
    assert!(lost_in.is_empty(), "webhooks lost: {lost_in:?}");
    assert_eq!(dup_in, 0, "webhooks stored twice");
    assert_eq!(stored.len(), inbound.len());

    // Reconcile the sends: each stored once, and each at the provider.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT body, count(*) FROM messages WHERE body LIKE 'drill-out-%' GROUP BY 1",
    )
    .fetch_all(&db)
    .await
    .expect("rows");
    assert_eq!(
        rows.len(),
        outbound.len(),
        "a send was lost or stored twice"
    );
    assert!(rows.iter().all(|(_, c)| *c == 1), "a send was stored twice");
    let wanted: BTreeSet<String> = outbound.keys().map(|n| format!("drill-out-{n}")).collect();
    let mut at_provider: BTreeMap<String, usize> = BTreeMap::new();
    let t = Instant::now();
    loop {
        at_provider.clear();
        for s in sim.sent() {
            if let Some(b) = s["text"]["body"].as_str()
                && wanted.contains(b)
            {
                *at_provider.entry(b.to_owned()).or_default() += 1;
            }
        }
        if at_provider.len() == wanted.len() || t.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lost_out: Vec<&String> = wanted
        .iter()
        .filter(|b| !at_provider.contains_key(*b))
        .collect();
    let dup_out: usize = at_provider.values().map(|c| c - 1).sum();
    eprintln!(
        "drill: kill -9 under traffic: {} webhooks ({} unanswered at the crash, retried), {} sends ({} retried); \
         faults 1; reconciled {} + {}; lost 0 + {}; duplicated 0 + {dup_out} (crash window); recovery {} ms",
        inbound.len(),
        unanswered_in,
        outbound.len(),
        unanswered_out,
        stored.len(),
        at_provider.len(),
        lost_out.len(),
        recovery.as_millis()
    );
    assert!(
        lost_out.is_empty(),
        "sends never reached the provider: {lost_out:?}"
    );
    assert!(
        dup_out <= 32,
        "{dup_out} duplicates: more than one claimed batch"
    );
    assert!(
        inbound.len() > 50 && outbound.len() > 20,
        "too little traffic"
    );
    drop(gw);
    stop.cancel();
    let _ = std::fs::remove_dir_all(&data_dir);
}
