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

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

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
}

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
        }
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

/// Keep one listener subscribed to every channel of `wakeups` until `shutdown`,
/// reconnecting (and waking everyone) after it is lost. A notification whose payload is
/// this process's [`Wakeups::origin`] is skipped: its sender woke this process's workers
/// already. The listener's session holds this process's liveness lock.
pub async fn listen(db: PgPool, wakeups: Wakeups, shutdown: CancellationToken) {
    let names = wakeups.names();
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(&db).await?;
            l.listen_all(names.iter().copied()).await?;
            sqlx::query("SELECT pg_advisory_lock($1, $2)")
                .bind(LIVENESS_NAMESPACE)
                .bind(wakeups.instance)
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
        let own = wakeups.origin();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = l.recv() => match n {
                    // This process woke its own workers before sending it.
                    Ok(n) if n.payload() == own => {}
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
