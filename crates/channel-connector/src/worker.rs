//! One `LISTEN` connection per process and the loop every background worker runs.
//!
//! [`Wakeups`] holds one counter per NOTIFY channel; [`listen`] keeps a single listener
//! connection subscribed to all of them and bumps a channel's counter for each
//! notification (and every counter after a reconnect, since a notification may have been
//! lost meanwhile). Workers and sockets wait on a [`Wake`] for their channel.
//!
//! [`run`]: do a round of work; when there was none, wait for a wake-up or a slow poll,
//! until shutdown.
//!
//! The listener connection also proves this process alive: it holds a session advisory
//! lock on the process's [`Wakeups::instance`] key. Work a process leases (outbox rows) is
//! stamped with that key, so another process can take it over as soon as the owner's
//! connection is gone (a crash), instead of waiting for the lease to run out.
//!
//! The same locks tell a process whether any other replica is alive
//! ([`Wakeups::others_alive`]). A notification meant only for the other replicas (one
//! carrying [`Wakeups::origin`], sent after waking this process's own workers directly)
//! costs a transaction and a WAL flush of its own, several per webhook batch; a lone
//! process skips them. A replica that starts says so on [`HELLO_CHANNEL`], so the others
//! notify it from then on, and wakes its own workers once more a second later for what
//! was committed in between.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Waits for notifications on one channel.
pub type Wake = watch::Receiver<u64>;

/// Per-channel wake-up counters, shared by everything in one process.
#[derive(Debug, Clone)]
pub struct Wakeups {
    channels: Arc<HashMap<&'static str, watch::Sender<u64>>>,
    instance: i32,
    /// Whether another replica may be alive (true until known otherwise).
    others: Arc<AtomicBool>,
}

/// The channel on which a process that (re)connected its listener announces itself, so
/// that the others start notifying it at once.
pub const HELLO_CHANNEL: &str = "parley_hello";

/// How often a process looks again whether other replicas are alive.
const OTHERS_CHECK: Duration = Duration::from_secs(1);

/// The advisory-lock namespace of process liveness keys (`pg_advisory_lock(ns, key)`).
pub const LIVENESS_NAMESPACE: i32 = 20_261_201;

/// SQL that is true when the process with liveness key `{key}` (an int4 expression) no
/// longer holds its lock, i.e. it is gone.
pub fn owner_gone_sql(key: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_locks l
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                       AND l.classid = {LIVENESS_NAMESPACE}::oid AND l.objid = ({key})::oid
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )
}

impl Wakeups {
    /// Counters for `channels`.
    pub fn new(channels: &[&'static str]) -> Self {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let key = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & i32::MAX;
        Self {
            channels: Arc::new(channels.iter().map(|c| (*c, watch::channel(0).0)).collect()),
            instance: key,
            others: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether another replica may be alive: false only once this process's listener has
    /// found no other process's liveness lock (and heard no hello since). Notifications
    /// carrying [`Wakeups::origin`] are for the others only; without them they are skipped.
    pub fn others_alive(&self) -> bool {
        self.others.load(Ordering::Relaxed)
    }

    /// This process's liveness key (positive, random per process).
    pub fn instance(&self) -> i32 {
        self.instance
    }

    /// The payload of a notification this process sends after waking its own workers
    /// directly: its listener skips it (see [`listen`]), the other replicas' do not.
    pub fn origin(&self) -> String {
        format!("process {}", self.instance)
    }

    /// Wake-ups for `channel` (one that was never registered never fires; the worker
    /// then only polls).
    pub fn subscribe(&self, channel: &str) -> Wake {
        match self.channels.get(channel) {
            Some(tx) => tx.subscribe(),
            None => watch::channel(0).1,
        }
    }

    /// Wake everything waiting on `channel`.
    pub fn bump(&self, channel: &str) {
        if let Some(tx) = self.channels.get(channel) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn bump_all(&self) {
        for tx in self.channels.values() {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn names(&self) -> Vec<&'static str> {
        self.channels.keys().copied().collect()
    }
}

/// Whether a process other than `own` holds its liveness lock in this database.
async fn others_alive(db: &PgPool, own: i32) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_locks l
                        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                          AND l.classid = ($1)::oid AND l.objid <> ($2)::oid
                          AND l.database = (SELECT oid FROM pg_database
                                            WHERE datname = current_database()))",
    )
    .bind(LIVENESS_NAMESPACE)
    .bind(own)
    .fetch_one(db)
    .await
    // Unknown: notify, as if there were.
    .unwrap_or(true)
}

/// Keep one listener subscribed to every channel of `wakeups` until `shutdown`,
/// reconnecting (and waking everyone) after it is lost. A notification whose payload is
/// this process's [`Wakeups::origin`] is skipped: its sender woke this process's workers
/// already. The listener's session holds this process's liveness lock; once it is held the
/// process says hello to the others, and every second it looks whether any other is
/// alive (see [`Wakeups::others_alive`]).
pub async fn listen(db: PgPool, wakeups: Wakeups, shutdown: CancellationToken) {
    let mut names = wakeups.names();
    names.push(HELLO_CHANNEL);
    let own = wakeups.origin();
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(&db).await?;
            l.listen_all(names.iter().copied()).await?;
            sqlx::query("SELECT pg_advisory_lock($1, $2)")
                .bind(LIVENESS_NAMESPACE)
                .bind(wakeups.instance)
                .execute(&mut l)
                .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(HELLO_CHANNEL)
                .bind(&own)
                .execute(&mut l)
                .await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        let mut l = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "listener unavailable; workers poll until it is back");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        wakeups.bump_all();
        wakeups
            .others
            .store(others_alive(&db, wakeups.instance).await, Ordering::Relaxed);
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + OTHERS_CHECK, OTHERS_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The others may have skipped notifying this process until they heard its hello:
        // one more round for every worker once they surely have.
        let mut catch_up = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = check.tick() => {
                    if std::mem::take(&mut catch_up) {
                        wakeups.bump_all();
                    }
                    let alive = others_alive(&db, wakeups.instance).await;
                    wakeups.others.store(alive, Ordering::Relaxed);
                }
                n = l.recv() => match n {
                    // This process woke its own workers before sending it.
                    Ok(n) if n.payload() == own => {}
                    Ok(n) if n.channel() == HELLO_CHANNEL => {
                        wakeups.others.store(true, Ordering::Relaxed);
                    }
                    Ok(n) => wakeups.bump(n.channel()),
                    Err(e) => {
                        tracing::warn!(error = %e, "listener lost; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

/// Run `round` (which returns how many items it handled) until `shutdown`: again at once
/// when it did something, else after a wake-up or `poll`.
pub async fn run<F, Fut>(
    mut wake: Wake,
    name: &'static str,
    poll: Duration,
    shutdown: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, sqlx::Error>>,
{
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Anything notified from here on wakes the wait below.
        wake.mark_unchanged();
        match round().await {
            Ok(n) if n > 0 => {
                // More may be due; let other tasks run first.
                tokio::task::yield_now().await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(worker = name, error = %e, "worker round failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {},
            _ = wake.changed() => {},
        }
    }
}
