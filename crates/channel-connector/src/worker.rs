//! The loop every background worker runs: do a round of work; when there was none, wait
//! for a NOTIFY on its channel or a slow poll (a notification can be lost while the
//! listener reconnects), until shutdown.

use std::{future::Future, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

async fn listen(db: &PgPool, channel: &str) -> Option<PgListener> {
    match PgListener::connect_with(db).await {
        Ok(mut l) => match l.listen(channel).await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(channel, error = %e, "LISTEN failed; polling");
                None
            }
        },
        Err(e) => {
            tracing::debug!(channel, error = %e, "listener unavailable; polling");
            None
        }
    }
}

/// Run `round` (which returns how many items it handled) until `shutdown`.
pub async fn run<F, Fut>(
    db: PgPool,
    channel: &'static str,
    poll: Duration,
    shutdown: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, sqlx::Error>>,
{
    let mut listener = listen(&db, channel).await;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match round().await {
            Ok(n) if n > 0 => {
                // More may be due; let other tasks run first.
                tokio::task::yield_now().await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(channel, error = %e, "worker round failed"),
        }
        if listener.is_none() {
            // Reconnect; the next round catches anything notified meanwhile.
            listener = listen(&db, channel).await;
        }
        let wait = tokio::time::sleep(poll);
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wait => {},
                    n = l.recv() => if let Err(e) = n {
                        tracing::warn!(channel, error = %e, "listener lost; polling until it reconnects");
                        listener = None;
                    },
                }
            }
            None => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wait => {},
                }
            }
        }
    }
}
