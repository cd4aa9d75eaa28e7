//! Group commit for provider webhooks.
//!
//! Every verified, parsed webhook is handed to a small set of writer tasks. A writer takes
//! the first waiting webhook and whatever else is already waiting (up to the batch limit),
//! stores them all in one transaction and commits once; each webhook's request is answered
//! only after that commit. Under light load a batch is one webhook, so nothing waits for
//! company; under heavy load one commit (and its WAL flush) serves many webhooks. In
//! between, a writer whose batch is small while another writer is storing waits a few
//! milliseconds for company (until that writer finishes, a quarter of the batch limit has
//! come, or 4 ms pass), so half the maximum rate does not cost a transaction per handful
//! of webhooks.
//!
//! If a batch fails (a deadlock with another batch, one webhook's bad data, a lost
//! connection), its webhooks are stored again one transaction each, so one webhook's
//! failure is only its own. Replays are no-ops (provider ids are unique), so storing again
//! after an unknown commit outcome cannot store anything twice.
//!
//! The writers run on a thread of their own with connections of their own (see
//! `IngestWriter::start_thread`).

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicUsize, Ordering},
};

use channel_connector::whatsapp::webhook::Envelope;
use parley_core::TenantId;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::error::ApiError;

/// The writers' connections' `application_name` (as `pg_stat_activity` shows them).
pub const WRITER_APPLICATION_NAME: &str = "parley webhook writer";

/// One verified webhook waiting to be stored.
struct Job {
    tenant: TenantId,
    account: Uuid,
    envelope: Envelope,
    done: oneshot::Sender<Result<(), ApiError>>,
}

impl Job {
    /// The order batches take their row locks in: by sender (contacts, identities and
    /// interactions are all the sender's), so two batches never wait on each other in a
    /// circle for the common case.
    fn lock_key(&self) -> (Uuid, &str) {
        let first = self
            .envelope
            .messages
            .iter()
            .filter_map(|m| m.phone.as_deref().or(m.bsuid.as_deref()))
            .chain(
                self.envelope
                    .statuses
                    .iter()
                    .map(|s| s.provider_message_id.as_str()),
            )
            .min()
            .unwrap_or_default();
        (self.tenant.0, first)
    }
}

/// The hand-off to the writers. Cheap to clone; writers start on first use.
#[derive(Clone)]
pub struct IngestWriter {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    metrics: Arc<crate::metrics::Metrics>,
    wakeups: channel_connector::worker::Wakeups,
    writers: usize,
    batch_max: usize,
    queue: OnceLock<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for IngestWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestWriter")
            .field("writers", &self.inner.writers)
            .field("batch_max", &self.inner.batch_max)
            .finish()
    }
}

impl IngestWriter {
    /// `writers` concurrent transactions of at most `batch_max` webhooks each.
    pub fn new(
        db: PgPool,
        metrics: Arc<crate::metrics::Metrics>,
        wakeups: channel_connector::worker::Wakeups,
        writers: usize,
        batch_max: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                metrics,
                wakeups,
                writers: writers.max(1),
                batch_max: batch_max.max(1),
                queue: OnceLock::new(),
            }),
        }
    }

    /// Store one webhook's content; returns once it is committed (or failed).
    pub async fn store(
        &self,
        tenant: TenantId,
        account: Uuid,
        envelope: Envelope,
    ) -> Result<(), ApiError> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            tenant,
            account,
            envelope,
            done,
        };
        if self.queue().send(job).await.is_err() {
            return Err(writer_gone());
        }
        answer.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    fn queue(&self) -> &mpsc::Sender<Job> {
        self.inner.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.inner.batch_max * self.inner.writers * 4);
            let rx = Arc::new(Mutex::new(rx));
            if let Err(e) = self.start_thread(rx.clone()) {
                tracing::warn!(error = %e, "no thread for the webhook writers; they share the request threads");
                self.spawn_writers(&tokio::runtime::Handle::current(), &self.inner.db, &rx);
            }
            tx
        })
    }

    /// The writers run on a thread of their own, with their own connections (one per
    /// writer, and one for the wake-ups). On the request threads, a database reply for a
    /// writer waited until a busy worker next looked for I/O, and every statement of a
    /// batch paid that wait while the batch's rows stayed locked; on their own thread the
    /// reply is read as soon as it comes.
    fn start_thread(&self, rx: Arc<Mutex<mpsc::Receiver<Job>>>) -> std::io::Result<()> {
        let this = self.clone();
        let shared = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("ingest-writer".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "no runtime for the webhook writers; they share the request threads");
                        this.spawn_writers(&shared, &this.inner.db, &rx);
                        return;
                    }
                };
                runtime.block_on(async {
                    let db = sqlx::postgres::PgPoolOptions::new()
                        .max_connections(u32::try_from(this.inner.writers + 1).unwrap_or(u32::MAX))
                        .acquire_timeout(std::time::Duration::from_secs(5))
                        .connect_lazy_with(
                            (*this.inner.db.connect_options())
                                .clone()
                                .application_name(WRITER_APPLICATION_NAME),
                        );
                    let loops = this.spawn_writers(&tokio::runtime::Handle::current(), &db, &rx);
                    drop(this);
                    // Until the last sender (the gateway's state) is gone.
                    for l in loops {
                        let _ = l.await;
                    }
                    db.close().await;
                });
            })?;
        Ok(())
    }

    fn spawn_writers(
        &self,
        on: &tokio::runtime::Handle,
        db: &PgPool,
        rx: &Arc<Mutex<mpsc::Receiver<Job>>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let busy = Arc::new(Busy::default());
        (0..self.inner.writers)
            .map(|_| {
                // Not `Inner`: it holds the queue's sender, and a writer holding it would
                // never see the queue close (nor let its thread and connections go) once
                // the gateway's state is dropped.
                let writer = Writer {
                    metrics: self.inner.metrics.clone(),
                    wakeups: self.inner.wakeups.clone(),
                    batch_max: self.inner.batch_max,
                    busy: busy.clone(),
                };
                on.spawn(write_loop(db.clone(), writer, rx.clone()))
            })
            .collect()
    }
}

fn writer_gone() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the webhook writer has stopped; the provider will retry",
    )
}

/// What a writer needs besides its connections and the queue.
struct Writer {
    metrics: Arc<crate::metrics::Metrics>,
    wakeups: channel_connector::worker::Wakeups,
    batch_max: usize,
    /// What the writers of one gateway share: how many are storing a batch, and a signal
    /// when one finishes.
    busy: Arc<Busy>,
}

#[derive(Default)]
struct Busy {
    storing: AtomicUsize,
    finished: tokio::sync::Notify,
}

/// The longest a writer holding a small batch waits for company while another writer is
/// storing.
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(4);

async fn write_loop(db: PgPool, writer: Writer, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let batch_max = writer.batch_max;
    // A batch this big goes at once, whatever the other writers do.
    let enough = (batch_max / 4).max(1);
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            drain(&mut rx, &mut batch, batch_max);
            // While another writer is storing, the database is busy: a small batch started
            // now would pay a transaction's fixed cost (round trips, commit, sequencing)
            // for a few webhooks and compete with it for the cores. It gathers what comes
            // until that writer finishes, it has enough, or a few milliseconds pass.
            // Alone (light load) it goes at once.
            if batch.len() < enough && writer.busy.storing.load(Ordering::Acquire) > 0 {
                let until = tokio::time::Instant::now() + GATHER_WAIT;
                loop {
                    let finished = writer.busy.finished.notified();
                    tokio::pin!(finished);
                    finished.as_mut().enable();
                    if writer.busy.storing.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    tokio::select! {
                        () = &mut finished => break,
                        () = tokio::time::sleep_until(until) => break,
                        job = rx.recv() => match job {
                            Some(job) => {
                                batch.push(job);
                                drain(&mut rx, &mut batch, batch_max);
                                if batch.len() >= enough {
                                    break;
                                }
                            }
                            None => break,
                        },
                    }
                }
            }
        }
        let storing = Storing::start(&writer.busy);
        write_batch(&db, &writer, batch).await;
        drop(storing);
    }
}

/// One writer storing a batch, counted until dropped (even by a panic), which tells the
/// writers gathering company.
struct Storing<'a>(&'a Busy);

impl<'a> Storing<'a> {
    fn start(busy: &'a Busy) -> Self {
        busy.storing.fetch_add(1, Ordering::AcqRel);
        Self(busy)
    }
}

impl Drop for Storing<'_> {
    fn drop(&mut self) {
        self.0.storing.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_waiters();
    }
}

/// Add whatever is already waiting to `batch`, up to `max`.
fn drain(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

async fn write_batch(db: &PgPool, writer: &Writer, batch: Vec<Job>) {
    store_and_answer(db, &writer.metrics, batch).await;
    // The sequencer's wake-up, left out of the batch's transaction (see
    // `events::BEGIN_DEFERRING_WAKEUP`): this process's sequencer directly, the other
    // replicas' through the database while this writer takes its next batch. If that is
    // lost, their sequencer's own round finds the events.
    writer
        .wakeups
        .bump(conversation_store::events::APPEND_CHANNEL);
    let db = db.clone();
    let origin = writer.wakeups.origin();
    tokio::spawn(async move {
        if let Ok(mut conn) = db.acquire().await
            && let Err(e) = conversation_store::events::wake_sequencer(&mut conn, &origin).await
        {
            tracing::debug!(error = %e, "sequencer wake-up not sent");
        }
    });
}

async fn store_and_answer(db: &PgPool, metrics: &crate::metrics::Metrics, mut batch: Vec<Job>) {
    batch.sort_by(|a, b| a.lock_key().cmp(&b.lock_key()));
    match store_all(db, &batch).await {
        Ok(()) => {
            metrics.ingest_batch.observe(batch.len() as f64);
            for job in batch {
                let _ = job.done.send(Ok(()));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.pop() {
                let _ = job.done.send(Err(e));
            }
        }
        Err(e) => {
            tracing::debug!(size = batch.len(), error = ?e, "webhook batch failed; storing one by one");
            metrics.ingest_split.inc();
            for job in batch {
                let alone = store_all(db, std::slice::from_ref(&job)).await;
                if alone.is_ok() {
                    metrics.ingest_batch.observe(1.0);
                }
                let _ = job.done.send(alone);
            }
        }
    }
}

async fn store_all(db: &PgPool, jobs: &[Job]) -> Result<(), ApiError> {
    let batch: Vec<crate::services::whatsapp_inbound::Delivery<'_>> = jobs
        .iter()
        .map(|j| crate::services::whatsapp_inbound::Delivery {
            tenant: j.tenant,
            account: j.account,
            envelope: &j.envelope,
        })
        .collect();
    let mut tx = db
        .begin_with(conversation_store::events::BEGIN_DEFERRING_WAKEUP)
        .await?;
    crate::services::whatsapp_inbound::apply_batch(&mut tx, &batch).await?;
    tx.commit().await?;
    Ok(())
}
