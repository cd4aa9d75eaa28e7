//! The modes.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    Args,
    harness::{Harness, Ws},
    report::{histogram, machine, record, summary},
};

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read frames until `f` returns false or the socket ends; answer pings.
async fn read_events(mut ws: Ws, mut f: impl FnMut(Value) -> bool) {
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) => {
                if let Ok(v) = serde_json::from_str::<Value>(&t)
                    && !f(v)
                {
                    return;
                }
            }
            Message::Ping(p) => {
                let _ = ws.send(Message::Pong(p)).await;
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// Run `f` on a thread and a current-thread runtime of their own. On the tool's main
/// runtime, busy sending thousands of requests a second, a wake-up (a frame's arrival, a
/// commit's answer) was noticed only when a worker next looked for I/O, and that wait was
/// measured as the server's or the database's. Whatever `f` holds is dropped if no runtime
/// can be made.
fn on_own_thread<F, Fut>(name: &str, f: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(f());
            }
        })?;
    Ok(())
}

/// [`read_events`] on a socket of `token`'s, connected and read on a thread of its own
/// ([`on_own_thread`]). Returns once the socket is connected.
async fn read_events_on_own_thread(
    h: Arc<Harness>,
    token: String,
    f: impl FnMut(Value) -> bool + Send + 'static,
) -> anyhow::Result<()> {
    let (connected, answer) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    on_own_thread("event-reader", move || async move {
        let socket = h.socket(&token).await;
        // The harness is let go at once: its last holder stops the gateway when the run
        // ends, and this thread, reading until the process exits, must not be it.
        drop(h);
        match socket {
            Ok(ws) => {
                let _ = connected.send(Ok(()));
                read_events(ws, f).await;
            }
            Err(e) => {
                let _ = connected.send(Err(e));
            }
        }
    })?;
    answer
        .await
        .map_err(|_| anyhow::anyhow!("the event reader's thread has no runtime"))?
}

/// What the database was doing while the load ran, seen from outside the gateway.
#[derive(Default)]
struct DbWatch {
    /// A one-row insert committed every 10 ms on a connection of its own: how long a
    /// durable commit took at that moment, whatever the gateway was doing.
    commits: Option<Histogram<u64>>,
    /// (seconds into the measured window, milliseconds) of the probe commits over 50 ms.
    slow_commits: Vec<(f64, f64)>,
    /// Every 50 ms, the wait events of the sessions then active (`running`: none, on a CPU
    /// or waiting for one) and what autovacuum was doing: (seconds, [(event, n)]).
    waits: Vec<(f64, Vec<(String, i64)>)>,
}

/// Watch the database from `from` to `until` ([`DbWatch`]) on a thread of its own.
fn watch_db(
    url: String,
    from: Instant,
    until: Instant,
    out: Shared<DbWatch>,
) -> anyhow::Result<()> {
    on_own_thread("db-watch", move || async move {
        use sqlx::Connection as _;
        let (mut probe, mut sampler) = match (
            sqlx::PgConnection::connect(&url).await,
            sqlx::PgConnection::connect(&url).await,
        ) {
            (Ok(p), Ok(s)) => (p, s),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("database watch: no connection ({e}); the run goes on without it");
                return;
            }
        };
        if let Err(e) =
            sqlx::query("CREATE TABLE IF NOT EXISTS loadgen_probe (at timestamptz NOT NULL)")
                .execute(&mut probe)
                .await
        {
            eprintln!("database watch: no probe table ({e}); the run goes on without it");
            return;
        }
        // After a stall the next tick comes a period later, not as a burst of the ticks
        // missed meanwhile.
        let every = |ms| {
            let mut tick = tokio::time::interval(Duration::from_millis(ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        };
        lock(&out).commits = Some(histogram());
        let commit = {
            let out = out.clone();
            async move {
                let mut tick = every(10);
                while Instant::now() < until {
                    tick.tick().await;
                    let t = Instant::now();
                    if let Err(e) = sqlx::query("INSERT INTO loadgen_probe VALUES (now())")
                        .execute(&mut probe)
                        .await
                    {
                        eprintln!("database watch: the commit probe stopped ({e})");
                        return;
                    }
                    let took = t.elapsed();
                    if t < from {
                        continue;
                    }
                    let mut w = lock(&out);
                    if let Some(h) = &mut w.commits {
                        record(h, took);
                    }
                    if took > Duration::from_millis(50) {
                        w.slow_commits
                            .push(((t - from).as_secs_f64(), took.as_secs_f64() * 1000.0));
                    }
                }
            }
        };
        let sample = async move {
            let mut tick = every(50);
            while Instant::now() < until {
                tick.tick().await;
                let t = Instant::now();
                let Ok(rows) = sqlx::query_as::<_, (String, i64)>(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'running'), count(*)
                     FROM pg_stat_activity
                     WHERE backend_type = 'client backend' AND state = 'active'
                       AND pid <> pg_backend_pid()
                     GROUP BY 1
                     UNION ALL
                     SELECT query, count(*) FROM pg_stat_activity
                     WHERE backend_type = 'autovacuum worker' GROUP BY 1",
                )
                .fetch_all(&mut sampler)
                .await
                .inspect_err(|e| eprintln!("database watch: sampling stopped ({e})")) else {
                    return;
                };
                if t >= from {
                    lock(&out).waits.push(((t - from).as_secs_f64(), rows));
                }
            }
        };
        tokio::join!(commit, sample);
    })
}

/// The watch's findings: the probe's commit latencies, when they were slow, and the wait
/// events seen in all samples and in those taken while some ack was late (a sample at `s`
/// counts when a request scheduled at `t` was answered after `s`, `t ≤ s`, and took over
/// 50 ms).
///
/// Also the acks of the requests not in flight while a probe commit was slow: what the
/// gateway's own tail is when the storage is not stalling every durable commit (a
/// diagnosis, not a substitute for `ack`).
fn db_watch_report(w: &DbWatch, slow_acks: &[(f64, f64)], acks: &[(f64, f64)]) -> Value {
    let late: std::collections::HashSet<u64> = slow_acks
        .iter()
        .flat_map(|(t, ms)| {
            let first = (t * 20.0) as u64;
            let last = ((t + ms / 1000.0) * 20.0) as u64;
            first..=last
        })
        .collect();
    let (mut all, mut when_late) = (
        BTreeMap::<String, i64>::new(),
        BTreeMap::<String, i64>::new(),
    );
    let mut late_samples = 0;
    for (s, rows) in &w.waits {
        let is_late = late.contains(&((s * 20.0) as u64));
        late_samples += u64::from(is_late);
        for (event, n) in rows {
            *all.entry(event.clone()).or_default() += n;
            if is_late {
                *when_late.entry(event.clone()).or_default() += n;
            }
        }
    }
    let stalls: Vec<(f64, f64)> = w
        .slow_commits
        .iter()
        .map(|(t, ms)| (*t, t + ms / 1000.0))
        .collect();
    let mut outside = histogram();
    let mut during = 0;
    for (t, ms) in acks {
        let end = t + ms / 1000.0;
        if stalls.iter().any(|(from, to)| *t <= *to && end >= *from) {
            during += 1;
        } else {
            record(&mut outside, Duration::from_secs_f64(ms / 1000.0));
        }
    }
    json!({
        "ack_outside_commit_stalls": summary(&outside),
        "acks_during_commit_stalls": during,
        "commit_probe": w.commits.as_ref().map(summary),
        "commit_probe_over_50ms_at_secs": slow_bursts(&w.slow_commits),
        "db_wait_samples": w.waits.len(),
        "db_waits": all,
        "db_wait_samples_while_acks_late": late_samples,
        "db_waits_while_acks_late": when_late,
    })
}

/// The most connections the gateway's database had at once, sampled every half second
/// until the task is aborted.
/// What every mode reports of the gateway and the database over its measured part: the
/// gateway's CPU (cores used on average) and peak memory, and the most connections the
/// database had open (sampled every 500 ms).
pub struct GatewayWatch {
    cpu0: f64,
    started: Instant,
    max_conns: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl GatewayWatch {
    pub fn start(h: &Arc<Harness>) -> Self {
        let max_conns = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (h, max_conns) = (h.clone(), max_conns.clone());
            tokio::spawn(async move {
                loop {
                    let n = u64::try_from(h.pg_connections().await).unwrap_or(0);
                    max_conns.fetch_max(n, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        Self {
            cpu0: h.cpu_secs(),
            started: Instant::now(),
            max_conns,
            sampler,
        }
    }

    /// Stop sampling: `gateway_cpu_cores_used`, `gateway_peak_rss_mib` and
    /// `pg_connections_max`, to add to a mode's result.
    pub fn finish(self, h: &Harness) -> Value {
        self.sampler.abort();
        let cpu = h.cpu_secs() - self.cpu0;
        let secs = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let (_, peak) = h.rss_kib();
        json!({
            "gateway_cpu_cores_used": ((cpu / secs) * 100.0).round() / 100.0,
            "gateway_peak_rss_mib": peak / 1024,
            "pg_connections_max": self.max_conns.load(Ordering::Relaxed),
        })
    }
}

/// Add `fields` (an object) to `result` (an object).
pub fn add_fields(result: &mut Value, fields: Value) {
    if let (Some(r), Value::Object(f)) = (result.as_object_mut(), fields) {
        r.extend(f);
    }
}

/// Count one failure of `kind` (`accept_http_409`, `webhook_http_0` for a transport
/// error, ...).
fn count_error(errors: &Mutex<BTreeMap<String, u64>>, kind: String) {
    *lock(errors).entry(kind).or_default() += 1;
}

/// An agent's `action` on an interaction (`accept`, `done`): whether it was answered 200;
/// otherwise an error of its kind is counted.
async fn act(
    h: &Harness,
    token: &str,
    interaction: &str,
    action: &str,
    errors: &Mutex<BTreeMap<String, u64>>,
) -> bool {
    let code = h
        .post_status(
            &format!("/api/v1/interactions/{interaction}/{action}"),
            token,
            &json!({}),
        )
        .await;
    if code != 200 {
        count_error(errors, format!("{action}_http_{code}"));
    }
    code == 200
}

fn progress(
    label: &'static str,
    counters: Vec<(&'static str, Arc<AtomicU64>)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let parts: Vec<String> = counters
                .iter()
                .map(|(k, c)| format!("{k}={}", c.load(Ordering::Relaxed)))
                .collect();
            eprintln!(
                "[{label} {:>4.0}s] {}",
                started.elapsed().as_secs_f64(),
                parts.join(" ")
            );
        }
    })
}

/// A copy of `messages` (same indexes and constraints) in the gateway's database, for the
/// raw commit rates every result is compared with.
struct BenchTable {
    tenant: uuid::Uuid,
    account: uuid::Uuid,
    contacts: Arc<Vec<uuid::Uuid>>,
}

impl BenchTable {
    async fn create(h: &Harness) -> anyhow::Result<Self> {
        sqlx::query(
            "CREATE TABLE bench_messages (LIKE messages INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING CONSTRAINTS)",
        )
        .execute(&h.db)
        .await?;
        Ok(Self {
            tenant: uuid::Uuid::now_v7(),
            account: uuid::Uuid::now_v7(),
            contacts: Arc::new((0..1000).map(|_| uuid::Uuid::now_v7()).collect()),
        })
    }

    /// `clients` connections each committing `batch`-row inserts for `duration`: rows per
    /// second and the latency of each insert with its commit.
    async fn commit_rate(
        &self,
        h: &Harness,
        clients: usize,
        duration: Duration,
        batch: i64,
    ) -> anyhow::Result<(f64, Histogram<u64>)> {
        let rows = Arc::new(AtomicU64::new(0));
        let latency = Arc::new(Mutex::new(histogram()));
        let deadline = Instant::now() + duration;
        let seq = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (db, rows, seq, contacts, latency) = (
                h.db.clone(),
                rows.clone(),
                seq.clone(),
                self.contacts.clone(),
                latency.clone(),
            );
            let (tenant, account) = (self.tenant, self.account);
            tasks.push(tokio::spawn(async move {
                let mut conn = db.acquire().await?;
                let mut i = c;
                while Instant::now() < deadline {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    sqlx::query(
                        "INSERT INTO bench_messages (id, tenant_id, contact_id, channel, media, direction, kind, body,
                                                     status, channel_account_id, provider_message_id)
                         SELECT gen_random_uuid(), $1, $2, 'whatsapp', 'chat', 'inbound', 'text',
                                'a message of a typical length, about sixty characters long', 'received', $3,
                                'wamid.B' || $5 || '.' || $4 || '.' || g
                         FROM generate_series(1, $5) g",
                    )
                    .bind(tenant)
                    .bind(contacts[i % contacts.len()])
                    .bind(account)
                    .bind(i64::try_from(n).unwrap_or(0))
                    .bind(batch)
                    .execute(&mut *conn)
                    .await?;
                    record(&mut lock(&latency), t.elapsed());
                    rows.fetch_add(u64::try_from(batch).unwrap_or(0), Ordering::Relaxed);
                    i += 7;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let rate = rows.load(Ordering::Relaxed) as f64 / duration.as_secs_f64();
        let latency = lock(&latency).clone();
        Ok((rate, latency))
    }

    async fn remove(self, h: &Harness) -> anyhow::Result<()> {
        sqlx::query("DROP TABLE bench_messages")
            .execute(&h.db)
            .await?;
        Ok(())
    }
}

/// What no server could beat on this machine and database.
pub async fn baseline(a: &Args) -> anyhow::Result<Value> {
    let h = Harness::start(&a.gateway, 0).await?;
    let mut result = json!({"mode": "baseline", "machine": machine(), "clients": a.clients,
                            "duration_secs": a.duration.as_secs_f64()});
    let bench = BenchTable::create(&h).await?;
    for batch in [1_i64, 50] {
        eprintln!(
            "baseline: {batch}-row INSERT+COMMIT with {} clients for {:?}...",
            a.clients, a.duration
        );
        let (rate, latency) = bench.commit_rate(&h, a.clients, a.duration, batch).await?;
        let key = if batch == 1 {
            "insert_commit_rows_per_sec"
        } else {
            "batch50_rows_per_sec"
        };
        result[key] = json!(rate.round());
        // The commit latency the database alone gives: the floor under any ack latency.
        result[if batch == 1 {
            "insert_commit_latency"
        } else {
            "batch50_commit_latency"
        }] = summary(&latency);
    }
    eprintln!(
        "baseline: no-op axum handler parsing a webhook body, {:?}...",
        a.duration
    );
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|body: axum::body::Bytes| async move {
            match serde_json::from_slice::<Value>(&body) {
                Ok(_) => axum::http::StatusCode::OK,
                Err(_) => axum::http::StatusCode::BAD_REQUEST,
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (body, _) = h.webhook(1, "wamid.noop", "hello there");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + a.duration;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, body, done) = (h.http.clone(), body.clone(), done.clone());
        let url = format!("http://{addr}/hook");
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if let Ok(r) = http.post(&url).body(body.clone()).send().await
                    && r.status().is_success()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    result["noop_http_requests_per_sec"] =
        json!((done.load(Ordering::Relaxed) as f64 / a.duration.as_secs_f64()).round());
    result["note"] = json!("the no-op server and its client share this machine's cores");
    Ok(result)
}

/// Signed inbound webhooks: ack latency and webhook → `message.created` on a socket.
pub async fn ingest(a: &Args) -> anyhow::Result<Value> {
    let h = Arc::new(Harness::start(&a.gateway, 0).await?);
    // S1 on the same database just before the load: a ratio to it is not thrown by the
    // machine's drift between separate runs.
    let s1 = if a.s1.is_zero() {
        None
    } else {
        eprintln!(
            "ingest: S1 first (single-row INSERT+COMMIT, {} clients, {:?})...",
            a.clients, a.s1
        );
        let bench = BenchTable::create(&h).await?;
        let got = bench.commit_rate(&h, a.clients, a.s1, 1).await?;
        bench.remove(&h).await?;
        Some(got)
    };
    let pending: Shared<HashMap<String, Instant>> = Arc::new(Mutex::new(HashMap::new()));
    let e2e: Shared<Histogram<u64>> = Arc::new(Mutex::new(histogram()));
    let ack: Shared<Histogram<u64>> = Arc::new(Mutex::new(histogram()));
    // When each ack was scheduled (seconds into the measured window) and how long it took
    // (ms): a tail that comes in bursts points at something periodic.
    let acks_at: Shared<Vec<(f64, f64)>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Shared<BTreeMap<String, u64>> = Arc::new(Mutex::new(BTreeMap::new()));
    let events = Arc::new(AtomicU64::new(0));
    {
        let (pending, e2e, events) = (pending.clone(), e2e.clone(), events.clone());
        read_events_on_own_thread(h.clone(), h.admin_token.clone(), move |v| {
            if v["kind"] == "message.created"
                && let Some(id) = v["payload"]["message"]["provider_message_id"].as_str()
                && let Some(t) = lock(&pending).remove(id)
            {
                record(&mut lock(&e2e), t.elapsed());
                events.fetch_add(1, Ordering::Relaxed);
            }
            true
        })
        .await?;
    }
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let ticker = progress(
        "ingest",
        vec![
            ("sent", sent.clone()),
            ("acked", acked.clone()),
            ("events", events.clone()),
        ],
    );
    let gateway_watch = GatewayWatch::start(&h);
    let started = Instant::now();
    // Requests of the warm-up (connections opened, statements prepared, first contacts
    // created) are sent but not measured.
    let measured_cpu = {
        let h = h.clone();
        let at = tokio::time::Instant::from_std(started + a.warmup);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            (h.cpu_snapshot().await, h.webhook_latency_buckets().await)
        })
    };
    let measured_from = started + a.warmup;
    // The same moment on the wall clock, so the slow acks' seconds can be matched with the
    // gateway's and the database's logs.
    let measured_from_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        - started.elapsed().as_secs_f64()
        + a.warmup.as_secs_f64();
    // Off unless asked for: its hundred commits a second compete with the gateway's for
    // the WAL's flushes, and with the sampling it costs a few per cent of the machine.
    let watch: Shared<DbWatch> = Arc::default();
    if a.watch_db {
        watch_db(
            h.url.clone(),
            measured_from,
            measured_from + a.duration,
            watch.clone(),
        )?;
    }
    let seq = Arc::new(AtomicUsize::new(0));
    let one = {
        let (h, pending, ack, errors, acked, sent, seq, acks_at) = (
            h.clone(),
            pending.clone(),
            ack.clone(),
            errors.clone(),
            acked.clone(),
            sent.clone(),
            seq.clone(),
            acks_at.clone(),
        );
        let contacts = a.contacts.max(1);
        move |scheduled: Instant| {
            let (h, pending, ack, errors, acked, sent, acks_at) = (
                h.clone(),
                pending.clone(),
                ack.clone(),
                errors.clone(),
                acked.clone(),
                sent.clone(),
                acks_at.clone(),
            );
            let n = seq.fetch_add(1, Ordering::Relaxed);
            async move {
                let wamid = format!("wamid.LOAD{n}");
                let (body, sig) = h.webhook(n % contacts, &wamid, "hello, is anyone there?");
                let measured = scheduled >= measured_from;
                if measured {
                    lock(&pending).insert(wamid.clone(), scheduled);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let status = h.send_webhook(body, sig).await;
                if !measured {
                    if status != 200 {
                        count_error(&errors, format!("warmup_http_{status}"));
                    }
                } else if status == 200 {
                    let took = scheduled.elapsed();
                    record(&mut lock(&ack), took);
                    lock(&acks_at).push((
                        (scheduled - measured_from).as_secs_f64(),
                        took.as_secs_f64() * 1000.0,
                    ));
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    lock(&pending).remove(&wamid);
                    count_error(&errors, format!("http_{status}"));
                }
            }
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    match a.closed {
        Some(c) => {
            let deadline = measured_from + a.duration;
            for _ in 0..c {
                let one = one.clone();
                tasks.spawn(async move {
                    while Instant::now() < deadline {
                        one(Instant::now()).await;
                    }
                });
            }
        }
        None => {
            let total = (a.rate * (a.warmup + a.duration).as_secs_f64()) as u64;
            let interval = Duration::from_secs_f64(1.0 / a.rate);
            for i in 0..total {
                let at = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(at.into()).await;
                if tasks.len() > 20_000 {
                    count_error(&errors, "client_overloaded".to_owned());
                    continue;
                }
                tasks.spawn(one(at));
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = measured_from.elapsed();
    let cpu_end = h.cpu_snapshot().await;
    let buckets_end = h.webhook_latency_buckets().await;
    let (cpu_start, buckets_start) = measured_cpu.await.unwrap_or_default();
    // The gateway's CPU over the whole run, warm-up included.
    let gateway = gateway_watch.finish(&h);
    // Let the last events arrive.
    for _ in 0..100 {
        if lock(&pending).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ticker.abort();
    let missing = lock(&pending).len();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&h.db)
        .await
        .unwrap_or(-1);
    let acked_n = acked.load(Ordering::Relaxed);
    let slow: Vec<(f64, f64)> = lock(&acks_at)
        .iter()
        .filter(|(_, ms)| *ms > 50.0)
        .copied()
        .collect();
    let mut result = json!({
        "mode": "ingest",
        "machine": machine(),
        "schedule": match a.closed { Some(c) => format!("closed loop, {c} concurrent"), None => format!("open loop, {} /s", a.rate) },
        "duration_secs": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "webhooks_acked": acked_n,
        "achieved_per_sec": (acked_n as f64 / elapsed.as_secs_f64()).round(),
        "messages_stored": stored,
        "ack": summary(&lock(&ack)),
        "webhook_to_message_created": summary(&lock(&e2e)),
        "events_missing": missing,
        "acks_over_50ms": slow.len(),
        "acks_over_50ms_at_secs": slow_bursts(&slow),
        "measured_from_unix_secs": (measured_from_unix * 1000.0).round() / 1000.0,
        "errors": *lock(&errors),
        "cpu_us_per_webhook": cpu_start.per_item_us(&cpu_end, acked_n),
        "top_statements": h.top_statements(8).await,
    });
    add_fields(&mut result, gateway);
    result["gateway_webhook_handling_within"] = handled_within(&buckets_start, &buckets_end);
    if let Some((rate, latency)) = &s1 {
        result["s1_rows_per_sec"] = json!(rate.round());
        result["s1_commit_latency"] = summary(latency);
        // For a closed loop the throughput against S1 (the target is at least 1); for an
        // open loop the offered rate's share of it.
        result["achieved_vs_s1"] =
            json!((acked_n as f64 / elapsed.as_secs_f64() / rate * 100.0).round() / 100.0);
    }
    if a.watch_db {
        add_fields(
            &mut result,
            db_watch_report(&lock(&watch), &slow, &lock(&acks_at)),
        );
    }
    Ok(result)
}

/// The share of the measured window's webhooks the gateway itself handled within each
/// bucket of its own histogram (its middleware to its response: without the sockets, the
/// kernel and this tool, which `ack` includes): `[["≤0.01s", 0.41], ...]`.
fn handled_within(start: &[(String, u64)], end: &[(String, u64)]) -> Value {
    let before: HashMap<&str, u64> = start.iter().map(|(le, n)| (le.as_str(), *n)).collect();
    let delta = |le: &str, n: u64| n.saturating_sub(before.get(le).copied().unwrap_or(0));
    let total = end
        .iter()
        .find(|(le, _)| le == "+Inf")
        .map_or(0, |(le, n)| delta(le, *n));
    if total == 0 {
        return Value::Null;
    }
    // In the histogram's order, from the first bucket holding any to the first holding all.
    let shares: Vec<(&str, f64)> = end
        .iter()
        .filter(|(le, _)| le != "+Inf")
        .map(|(le, n)| (le.as_str(), delta(le, *n) as f64 / total as f64))
        .collect();
    let first = shares.iter().position(|(_, s)| *s > 0.0).unwrap_or(0);
    let last = shares
        .iter()
        .position(|(_, s)| *s >= 1.0)
        .unwrap_or(shares.len().saturating_sub(1));
    Value::Array(
        shares
            .get(first..=last)
            .unwrap_or_default()
            .iter()
            .map(|(le, s)| json!([format!("≤{le}s"), (s * 1000.0).round() / 1000.0]))
            .collect(),
    )
}

/// The slow acks grouped by the tenth of a second they were sent in: `"12.3s": n`.
fn slow_bursts(slow: &[(f64, f64)]) -> Value {
    let mut at: BTreeMap<u64, u64> = BTreeMap::new();
    for (t, _) in slow {
        *at.entry((t * 10.0) as u64).or_default() += 1;
    }
    Value::String(
        at.iter()
            .take(40)
            .map(|(k, n)| format!("{:.1}s×{n}", *k as f64 / 10.0))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// K idle sockets: memory per socket, then one event to all of them.
pub async fn connections(a: &Args) -> anyhow::Result<Value> {
    let h = Arc::new(Harness::start(&a.gateway, 0).await?);
    // The contact writes once before the sockets open, so the timed event is a known
    // contact's message (what the time measures is the fan-out, not the first webhook's
    // contact creation and statement preparation).
    let (body, sig) = h.webhook(1, "wamid.WARMUP", "first message");
    let status = h.send_webhook(body, sig).await;
    anyhow::ensure!(status == 200, "the warm-up webhook was answered {status}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss0, _) = h.rss_kib();
    let watch = GatewayWatch::start(&h);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let connected = Arc::new(AtomicU64::new(0));
    let ticker = progress("connections", vec![("connected", connected.clone())]);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..a.sockets {
        let (h, tx, connected, gate) = (h.clone(), tx.clone(), connected.clone(), gate.clone());
        opening.spawn(async move {
            let permit = gate.acquire_owned().await;
            let ws = h.socket(&h.admin_token).await;
            drop(permit);
            let ws = ws?;
            connected.fetch_add(1, Ordering::Relaxed);
            // Cheap on the client side (no JSON parse), so the measurement is the server's.
            // The socket stays open after the event (closing 10,000 sockets while the
            // rest are still being delivered to would be timed as delivery).
            tokio::spawn(async move {
                let mut ws = ws;
                let mut seen = false;
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m
                        && !seen
                        && t.contains("\"message.created\"")
                    {
                        seen = true;
                        let _ = tx.send(Instant::now());
                    }
                }
            });
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = opening.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            failed += 1;
            if first_error.is_none() {
                first_error = Some(match r {
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => e.to_string(),
                    Ok(Ok(())) => String::new(),
                });
            }
        }
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, _) = h.rss_kib();
    let open = connected.load(Ordering::Relaxed);
    eprintln!("{open} sockets open ({failed} failed); sending one event...");
    let t0 = Instant::now();
    let (body, sig) = h.webhook(1, "wamid.BROADCAST", "one event for everyone");
    let status = h.send_webhook(body, sig).await;
    let answered = t0.elapsed();
    anyhow::ensure!(status == 200, "the webhook was answered {status}");
    let mut delivered = histogram();
    let mut last = t0;
    while let Ok(Some(at)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        record(&mut delivered, at - t0);
        last = last.max(at);
        if delivered.len() == open {
            break;
        }
    }
    ticker.abort();
    let mut result = json!({
        "mode": "connections",
        "machine": machine(),
        "sockets_open": open,
        "sockets_failed": failed,
        "first_failure": first_error,
        "gateway_rss_kib_before": rss0,
        "gateway_rss_kib_after": rss1,
        "kib_per_socket": if open > 0 { ((rss1.saturating_sub(rss0)) as f64 / open as f64 * 10.0).round() / 10.0 } else { 0.0 },
        "delivered": delivered.len(),
        "delivery": summary(&delivered),
        "webhook_answered_ms": answered.as_millis(),
        "all_delivered_ms": (last - t0).as_millis(),
    });
    add_fields(&mut result, watch.finish(&h));
    Ok(result)
}

/// The full loop: contacts write, agents are offered, accept, reply, and finish.
pub async fn conversation(a: &Args) -> anyhow::Result<Value> {
    let h = Arc::new(Harness::start(&a.gateway, a.agents).await?);
    let created_at: Shared<HashMap<String, Instant>> = Arc::new(Mutex::new(HashMap::new()));
    let contact_sched: Shared<HashMap<String, Instant>> = Arc::new(Mutex::new(HashMap::new()));
    // The first offer of each contact's interaction, matched after the run to when its
    // webhook was scheduled (the offer can reach an agent before the admin's socket has
    // told which contact the webhook's message went to).
    let offered: Shared<HashMap<String, Instant>> = Arc::new(Mutex::new(HashMap::new()));
    let accept: Shared<Histogram<u64>> = Arc::new(Mutex::new(histogram()));
    let send_call: Shared<Histogram<u64>> = Arc::new(Mutex::new(histogram()));
    // Each agent reply's legs, matched after the run by its message id (the provider's
    // receipt can come before the agent has read its own send's answer).
    let legs: Shared<SendLegs> = Arc::new(Mutex::new(SendLegs::default()));
    {
        let mut told = h.sim.observe();
        let legs = legs.clone();
        tokio::spawn(async move {
            while let Some(o) = told.recv().await {
                lock(&legs).observed(o);
            }
        });
    }
    let handled = Arc::new(AtomicU64::new(0));
    let errors: Shared<BTreeMap<String, u64>> = Arc::new(Mutex::new(BTreeMap::new()));
    {
        // The admin's socket links each contact to when its webhook was scheduled.
        let ws = h.socket(&h.admin_token).await?;
        let (created_at, contact_sched) = (created_at.clone(), contact_sched.clone());
        tokio::spawn(read_events(ws, move |v| {
            if v["kind"] == "message.created"
                && let (Some(id), Some(contact)) = (
                    v["payload"]["message"]["provider_message_id"].as_str(),
                    v["payload"]["message"]["contact_id"].as_str(),
                )
                && let Some(t) = lock(&created_at).remove(id)
            {
                lock(&contact_sched).entry(contact.to_owned()).or_insert(t);
            }
            true
        }));
    }
    for (_, token) in &h.agents {
        let ws = h.socket(token).await?;
        let code = h
            .http
            .put(format!("{}/api/v1/me/state", h.base))
            .bearer_auth(token)
            .json(&json!({"state": "ready"}))
            .send()
            .await?
            .status();
        anyhow::ensure!(code.is_success(), "setting Ready: {code}");
        let (h, token) = (h.clone(), token.clone());
        let (offered, accept, send_call, legs, handled, errors) = (
            offered.clone(),
            accept.clone(),
            send_call.clone(),
            legs.clone(),
            handled.clone(),
            errors.clone(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Value)>();
        tokio::spawn(read_events(ws, move |v| {
            tx.send((Instant::now(), v)).is_ok()
        }));
        tokio::spawn(async move {
            while let Some((seen, v)) = rx.recv().await {
                match v["kind"].as_str() {
                    Some("interaction.offered") => {
                        let interaction = v["payload"]["interaction_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if let Some(contact) = v["payload"]["contact_id"].as_str() {
                            lock(&offered).entry(contact.to_owned()).or_insert(seen);
                        }
                        let t = Instant::now();
                        if !act(&h, &token, &interaction, "accept", &errors).await {
                            continue;
                        }
                        record(&mut lock(&accept), t.elapsed());
                        let t = Instant::now();
                        let r = h
                            .http
                            .post(format!(
                                "{}/api/v1/interactions/{interaction}/messages",
                                h.base
                            ))
                            .bearer_auth(&token)
                            .header("idempotency-key", format!("reply-{interaction}"))
                            .json(&json!({"text": "Hello! How can I help you today?"}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                if let Ok(m) = r.json::<Value>().await
                                    && let Some(id) = m["id"].as_str()
                                {
                                    record(&mut lock(&send_call), t.elapsed());
                                    lock(&legs).sent.insert(id.to_owned(), t);
                                } else {
                                    count_error(&errors, "send_unreadable".to_owned());
                                }
                            }
                            Ok(r) => {
                                count_error(&errors, format!("send_http_{}", r.status().as_u16()))
                            }
                            Err(_) => count_error(&errors, "send_http_0".to_owned()),
                        }
                        act(&h, &token, &interaction, "done", &errors).await;
                        handled.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("message.status") => {
                        if let (Some(id), Some(status)) = (
                            v["payload"]["message_id"].as_str(),
                            v["payload"]["status"].as_str(),
                        ) {
                            lock(&legs).status_event(id, status, seen);
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    let sent = Arc::new(AtomicU64::new(0));
    let ticker = progress(
        "conversation",
        vec![
            ("conversations", sent.clone()),
            ("handled", handled.clone()),
        ],
    );
    // The warm-up's conversations (`--warmup`: pool connections opened, statements
    // prepared, the agents' first offers) are handled like the others, then what they
    // timed is forgotten; the measured conversations follow, with contacts of their own.
    let warm = (a.rate * a.warmup.as_secs_f64()) as usize;
    let total = (a.rate * a.duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let mut sending = a.duration;
    let mut watch = None;
    for (first, count, measured) in [(0, warm, false), (warm, total, true)] {
        if measured {
            watch = Some(GatewayWatch::start(&h));
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..count {
            let i = first + k;
            let at = started + interval.mul_f64(k as f64);
            tokio::time::sleep_until(at.into()).await;
            let (h, created_at, sent, errors) =
                (h.clone(), created_at.clone(), sent.clone(), errors.clone());
            tasks.spawn(async move {
                let wamid = format!("wamid.CONV{i}");
                let (body, sig) = h.webhook(i, &wamid, "Hi, I need help with my order");
                lock(&created_at).insert(wamid, at);
                sent.fetch_add(1, Ordering::Relaxed);
                let code = h.send_webhook(body, sig).await;
                if code != 200 {
                    count_error(&errors, format!("webhook_http_{code}"));
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        if measured {
            // The schedule spans the duration; sends that end later stretch it.
            sending = started.elapsed().max(a.duration);
        }
        for _ in 0..200 {
            if handled.load(Ordering::Relaxed) as usize >= first + count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The last statuses (delivered, read) come a little after the reply.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !measured {
            *lock(&legs) = SendLegs::default();
            lock(&offered).clear();
            lock(&contact_sched).clear();
            lock(&created_at).clear();
            *lock(&accept) = histogram();
            *lock(&send_call) = histogram();
        }
    }
    ticker.abort();
    let gateway = watch.map_or(Value::Null, |w| w.finish(&h));
    let (send_to_provider, status_to_event, send_to_status) = lock(&legs).histograms();
    let mut result = json!({
        "mode": "conversation",
        "machine": machine(),
        "target_conversations_per_sec": a.rate,
        "achieved_conversations_per_sec": (total as f64 / sending.as_secs_f64() * 10.0).round() / 10.0,
        "agents": a.agents,
        "warmup_conversations": warm,
        "conversations": total,
        "handled": (handled.load(Ordering::Relaxed) as usize).saturating_sub(warm),
        "errors": *lock(&errors),
        "webhook_to_offer": summary(&leg_histogram(&lock(&contact_sched), &lock(&offered))),
        "accept_call": summary(&lock(&accept)),
        "send_call": summary(&lock(&send_call)),
        "agent_send_to_provider": summary(&send_to_provider),
        "delivered_webhook_to_status_event": summary(&status_to_event),
        "agent_send_to_status_event": summary(&send_to_status),
        "top_statements": h.top_statements(8).await,
    });
    add_fields(&mut result, gateway);
    Ok(result)
}

/// When each leg of an agent's reply happened, by Parley's message id: the agent's send
/// request; the provider's receipt of the gateway's request; the `sent` status event on
/// the agent's socket (Parley's own, once the provider has accepted the send: the
/// provider's `sent` webhook then changes nothing); and the provider's `delivered` status
/// webhook with the `message.status` event it becomes, the first status only a webhook
/// brings.
#[derive(Default)]
struct SendLegs {
    sent: HashMap<String, Instant>,
    at_provider: HashMap<String, Instant>,
    /// The provider's id of each send it accepted, to Parley's (its callback data).
    ours: HashMap<String, String>,
    sent_event: HashMap<String, Instant>,
    delivered_posted: HashMap<String, Instant>,
    delivered_event: HashMap<String, Instant>,
}

impl SendLegs {
    fn observed(&mut self, o: whatsapp_sim::Observed) {
        match o {
            whatsapp_sim::Observed::Accepted {
                at,
                wamid,
                callback: Some(id),
            } => {
                // A retried send is timed to its first receipt.
                self.at_provider.entry(id.clone()).or_insert(at);
                self.ours.insert(wamid, id);
            }
            whatsapp_sim::Observed::StatusPosted { at, wamid, status } if status == "delivered" => {
                if let Some(id) = self.ours.get(&wamid) {
                    self.delivered_posted.entry(id.clone()).or_insert(at);
                }
            }
            _ => {}
        }
    }

    fn status_event(&mut self, id: &str, status: &str, at: Instant) {
        let seen = match status {
            "sent" => &mut self.sent_event,
            "delivered" => &mut self.delivered_event,
            _ => return,
        };
        seen.entry(id.to_owned()).or_insert(at);
    }

    /// (agent send → provider receipt, `delivered` webhook → its `message.status` event,
    /// agent send → `sent` event), over the replies whose both ends were seen.
    fn histograms(&self) -> (Histogram<u64>, Histogram<u64>, Histogram<u64>) {
        (
            leg_histogram(&self.sent, &self.at_provider),
            leg_histogram(&self.delivered_posted, &self.delivered_event),
            leg_histogram(&self.sent, &self.sent_event),
        )
    }
}

/// From each start to its end of the same key, for the keys with both.
fn leg_histogram(from: &HashMap<String, Instant>, to: &HashMap<String, Instant>) -> Histogram<u64> {
    let mut h = histogram();
    for (key, start) in from {
        if let Some(end) = to.get(key) {
            record(&mut h, end.saturating_duration_since(*start));
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::{DbWatch, SendLegs, db_watch_report, handled_within};
    use std::time::{Duration, Instant};

    #[test]
    fn a_replys_legs_are_matched_by_its_message_id_in_whatever_order_they_are_seen() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut legs = SendLegs::default();
        // The provider's receipt is told before the agent has read its send's answer.
        legs.observed(whatsapp_sim::Observed::Accepted {
            at: ms(4),
            wamid: "wamid.A".into(),
            callback: Some("m1".into()),
        });
        legs.sent.insert("m1".into(), ms(0));
        legs.status_event("m1", "sent", ms(7));
        // The provider's `sent` webhook, after Parley's own `sent`, is not a leg.
        legs.observed(whatsapp_sim::Observed::StatusPosted {
            at: ms(10),
            wamid: "wamid.A".into(),
            status: "sent".into(),
        });
        legs.observed(whatsapp_sim::Observed::StatusPosted {
            at: ms(20),
            wamid: "wamid.A".into(),
            status: "delivered".into(),
        });
        legs.status_event("m1", "delivered", ms(23));
        legs.status_event("m1", "read", ms(40));
        // A send that is not Parley's (no callback data) counts nowhere.
        legs.observed(whatsapp_sim::Observed::Accepted {
            at: ms(5),
            wamid: "wamid.X".into(),
            callback: None,
        });
        // A reply whose events never came is in the first leg only.
        legs.sent.insert("m2".into(), ms(1));
        legs.observed(whatsapp_sim::Observed::Accepted {
            at: ms(9),
            wamid: "wamid.B".into(),
            callback: Some("m2".into()),
        });
        let (to_provider, delivered_to_event, to_sent_event) = legs.histograms();
        assert_eq!(to_provider.len(), 2);
        assert_eq!(delivered_to_event.len(), 1);
        assert_eq!(to_sent_event.len(), 1);
        let ms_of = |h: &hdrhistogram::Histogram<u64>| h.max() / 1000;
        assert_eq!(ms_of(&to_provider), 8);
        assert_eq!(ms_of(&delivered_to_event), 3);
        assert_eq!(ms_of(&to_sent_event), 7);
    }

    #[test]
    fn the_gateways_own_shares_are_taken_over_the_measured_window() {
        let b = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(le, n)| ((*le).to_owned(), *n)).collect()
        };
        // Before the window: 20 requests (the warm-up), 10 of them within 10 ms.
        let start = b(&[("0.01", 10), ("0.025", 15), ("+Inf", 20)]);
        // After it: 100 more, 30 of them within 10 ms and 70 within 25 ms.
        let end = b(&[("0.01", 40), ("0.025", 85), ("+Inf", 120)]);
        let r = handled_within(&start, &end);
        assert_eq!(r, serde_json::json!([["≤0.01s", 0.3], ["≤0.025s", 0.7]]));
        // Leading empty buckets and those after the first full one are left out.
        let end = b(&[
            ("0.005", 0),
            ("0.01", 40),
            ("0.025", 120),
            ("0.05", 120),
            ("+Inf", 120),
        ]);
        let start = b(&[
            ("0.005", 0),
            ("0.01", 10),
            ("0.025", 20),
            ("0.05", 20),
            ("+Inf", 20),
        ]);
        assert_eq!(
            handled_within(&start, &end),
            serde_json::json!([["≤0.01s", 0.3], ["≤0.025s", 1.0]])
        );
        // Nothing read (metrics unreachable): nothing claimed.
        assert!(handled_within(&[], &[]).is_null());
    }

    #[test]
    fn acks_in_flight_during_a_slow_probe_commit_are_set_apart() {
        let watch = DbWatch {
            commits: None,
            // The storage held a commit for 200 ms from 5.0 s.
            slow_commits: vec![(5.0, 200.0)],
            waits: vec![
                (5.1, vec![("IO:WALSync".to_owned(), 2)]),
                (8.0, vec![("running".to_owned(), 1)]),
            ],
        };
        let acks = [
            (4.9, 250.0), // answered at 5.15: in flight during the stall
            (5.15, 80.0), // sent during it
            (5.3, 10.0),  // after it
            (4.0, 60.0),  // slow, but long before it
        ];
        let slow: Vec<(f64, f64)> = acks.iter().copied().filter(|(_, ms)| *ms > 50.0).collect();
        let r = db_watch_report(&watch, &slow, &acks);
        assert_eq!(r["acks_during_commit_stalls"], 2);
        assert_eq!(r["ack_outside_commit_stalls"]["count"], 2);
        // The slowest left is the early one (60 ms, to the histogram's precision).
        assert!(
            r["ack_outside_commit_stalls"]["max_ms"]
                .as_f64()
                .is_some_and(|ms| (ms - 60.0).abs() < 0.1)
        );
        assert_eq!(r["commit_probe_over_50ms_at_secs"], "5.0s×1");
        // The 5.1 s sample was taken while late acks were in flight; the 8.0 s one was not.
        assert_eq!(r["db_wait_samples"], 2);
        assert_eq!(r["db_wait_samples_while_acks_late"], 1);
        assert_eq!(r["db_waits_while_acks_late"]["IO:WALSync"], 2);
        assert!(r["db_waits_while_acks_late"].get("running").is_none());
        assert_eq!(r["db_waits"]["running"], 1);
    }
}
