//! The transactional outbox and its dispatcher.
//!
//! An agent's send writes the message (status `queued`) and an outbox row in one
//! transaction. The dispatcher claims due rows with `FOR UPDATE SKIP LOCKED` and a lease,
//! commits, calls the provider outside any transaction, then records the outcome. A
//! crashed worker's lease expires and the row is claimed again: delivery is at-least-once,
//! the only duplicate window being a crash between the provider's acceptance and our
//! commit, and every send carries our message id (`biz_opaque_callback_data`) so statuses
//! still reconcile. Messages to one recipient leave in order: a row is claimable only
//! when no earlier row for the same recipient is pending.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use conversation_store::attachments::BlobStore;
use parley_core::TenantId;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use parley_core::outbound::{Content, Outbound};

use crate::{
    accounts,
    providers::Provider,
    status::advance,
    twilio_sms,
    whatsapp::{
        client::{self, SendOutcome},
        request,
    },
};

/// The NOTIFY channel that wakes dispatchers.
pub const CHANNEL: &str = "parley_outbox";

/// Queue the send of message `message_id` (in the caller's transaction): what it says,
/// provider-neutral; the account's provider renders it when it is sent.
pub async fn enqueue(
    conn: &mut PgConnection,
    tenant: TenantId,
    message_id: Uuid,
    account: Uuid,
    outbound: &Outbound,
) -> Result<(), sqlx::Error> {
    let content = serde_json::to_value(outbound).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO outbox (tenant_id, message_id, channel_account_id, recipient, content)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.0)
    .bind(message_id)
    .bind(account)
    .bind(&outbound.to)
    .bind(content)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// First retry delay; doubled per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Give up (mark failed) when a message is older than this and still failing.
    pub max_age: Duration,
    /// How long a claimed row is reserved; must exceed the provider timeout.
    pub lease: Duration,
    /// Provider call timeout.
    pub provider_timeout: Duration,
    /// Fallback poll when no notification arrives.
    pub poll: Duration,
    /// Rows claimed per round (sent concurrently; one per recipient).
    pub batch: i64,
    /// This process's liveness key ([`crate::worker::Wakeups::instance`]). Rows leased by
    /// a process whose key is no longer locked are taken over at once; `None` leases
    /// without it (only the lease's expiry frees the row).
    pub owner: Option<i32>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            provider_timeout: Duration::from_secs(20),
            poll: Duration::from_secs(1),
            batch: 32,
            owner: None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Job {
    id: i64,
    tenant_id: Uuid,
    message_id: Uuid,
    channel_account_id: Uuid,
    /// What to send (neutral), for rows queued by this release.
    content: Option<Value>,
    /// A Cloud API body, for rows queued by releases before the neutral form.
    request: Option<Value>,
    attempts: i32,
    created_at: DateTime<Utc>,
}

/// Delivers outbox rows to providers.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    db: PgPool,
    http: reqwest::Client,
    blobs: Arc<dyn BlobStore>,
    cfg: DispatchConfig,
}

impl Dispatcher {
    /// A dispatcher over `db`, reading attachment bytes from `blobs`.
    pub fn new(db: PgPool, blobs: Arc<dyn BlobStore>, cfg: DispatchConfig) -> Self {
        let http = crate::http_client(cfg.provider_timeout);
        Self {
            db,
            http,
            blobs,
            cfg,
        }
    }

    /// Run until `shutdown`; woken by NOTIFY, with a slow poll as a fallback.
    pub async fn run(self, wake: crate::worker::Wake, shutdown: CancellationToken) {
        let poll = self.cfg.poll;
        crate::worker::run(wake, CHANNEL, poll, shutdown, || self.round()).await;
    }

    /// Claim and process one batch; returns how many rows were claimed.
    pub async fn round(&self) -> Result<usize, sqlx::Error> {
        let sql = format!(
            "UPDATE outbox SET locked_until = now() + make_interval(secs => $1), locked_by = $3,
                               attempts = attempts + 1, updated_at = now()
             WHERE id IN (
                 SELECT o.id FROM outbox o
                 WHERE o.state = 'pending' AND o.next_attempt_at <= now()
                   AND (o.locked_until IS NULL OR o.locked_until < now()
                        OR (o.locked_by IS NOT NULL AND {}))
                   AND NOT EXISTS (
                       SELECT 1 FROM outbox p
                       WHERE p.state = 'pending' AND p.channel_account_id = o.channel_account_id
                         AND p.recipient = o.recipient AND p.id < o.id)
                 ORDER BY o.id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, tenant_id, message_id, channel_account_id, content, request, attempts, created_at",
            crate::worker::owner_gone_sql("o.locked_by")
        );
        let jobs = sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql))
            .bind(self.cfg.lease.as_secs_f64())
            .bind(self.cfg.batch)
            .bind(self.cfg.owner)
            .fetch_all(&self.db)
            .await?;
        let n = jobs.len();
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let me = self.clone();
            set.spawn(async move {
                let id = job.id;
                if let Err(e) = me.process(job).await {
                    tracing::warn!(outbox_id = id, error = %e, "recording an outbox result failed; the lease will expire and it is retried");
                }
            });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    async fn process(&self, job: Job) -> Result<(), sqlx::Error> {
        let tenant = TenantId(job.tenant_id);
        let mut conn = self.db.acquire().await?;
        let account = accounts::get(&mut conn, tenant, job.channel_account_id).await?;
        let secrets = accounts::secrets(&mut conn, tenant, job.channel_account_id).await?;
        drop(conn);
        let (Some(account), Some(secrets)) = (account, secrets) else {
            return self
                .finish_failed(
                    &job,
                    &serde_json::json!({"title": "the channel account no longer exists"}),
                )
                .await;
        };
        let outcome = match (&job.content, &job.request) {
            (Some(content), _) => match serde_json::from_value::<Outbound>(content.clone()) {
                Ok(outbound) => {
                    self.send(&account, &secrets, tenant, job.message_id, &outbound)
                        .await
                }
                Err(e) => SendOutcome::Permanent(serde_json::json!({
                    "title": "the queued content cannot be read", "details": e.to_string()
                })),
            },
            (None, Some(request)) => {
                let mut request = request.clone();
                match self
                    .legacy_media(&account, &secrets, tenant, &mut request)
                    .await
                {
                    Err(outcome) => outcome,
                    Ok(()) => client::send(&self.http, &account, &secrets, &request).await,
                }
            }
            (None, None) => SendOutcome::Permanent(
                serde_json::json!({"title": "the outbox row holds nothing to send"}),
            ),
        };
        match outcome {
            SendOutcome::Accepted(wamid) => {
                let mut tx = self.db.begin().await?;
                advance(&mut tx, tenant, job.message_id, "sent", Some(&wamid), None).await?;
                sqlx::query(
                    "UPDATE outbox SET state = 'done', locked_until = NULL, last_error = NULL, updated_at = now()
                     WHERE id = $1",
                )
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }
            SendOutcome::Retry(reason) => {
                let age = Utc::now() - job.created_at;
                if age.to_std().unwrap_or_default() > self.cfg.max_age {
                    return self
                        .finish_failed(
                            &job,
                            &serde_json::json!({"title": "gave up retrying", "details": reason}),
                        )
                        .await;
                }
                let delay = backoff(&self.cfg, job.attempts);
                tracing::info!(outbox_id = job.id, attempt = job.attempts, delay_ms = delay.as_millis() as u64, %reason, "provider send will be retried");
                sqlx::query(
                    "UPDATE outbox SET locked_until = NULL, last_error = $2, updated_at = now(),
                            next_attempt_at = now() + make_interval(secs => $3)
                     WHERE id = $1",
                )
                .bind(job.id)
                .bind(&reason)
                .bind(delay.as_secs_f64())
                .execute(&self.db)
                .await?;
                Ok(())
            }
            SendOutcome::Unknown(reason) => {
                // The provider may have taken it: its status webhook (which carries our
                // message id) settles the row (`status::apply`). Only if none comes within
                // the reconciliation wait is it sent again; at-least-once.
                let age = Utc::now() - job.created_at;
                if age.to_std().unwrap_or_default() > self.cfg.max_age {
                    return self
                        .finish_failed(
                            &job,
                            &serde_json::json!({"title": "gave up retrying", "details": reason}),
                        )
                        .await;
                }
                let delay = backoff(&self.cfg, job.attempts).max(reconcile_wait(&self.cfg));
                tracing::warn!(outbox_id = job.id, attempt = job.attempts, wait_ms = delay.as_millis() as u64, %reason,
                    "provider send outcome unknown; waiting for its status before sending again");
                sqlx::query(
                    "UPDATE outbox SET locked_until = NULL, last_error = $2, updated_at = now(),
                            next_attempt_at = now() + make_interval(secs => $3)
                     WHERE id = $1 AND state = 'pending'",
                )
                .bind(job.id)
                .bind(format!("outcome unknown: {reason}"))
                .bind(delay.as_secs_f64())
                .execute(&self.db)
                .await?;
                Ok(())
            }
            SendOutcome::Permanent(error) => self.finish_failed(&job, &error).await,
        }
    }

    async fn finish_failed(&self, job: &Job, error: &Value) -> Result<(), sqlx::Error> {
        // The agent sees it as the message's `failed` status with this error; operators
        // see it here (a template the provider does not know: 132001, for one).
        tracing::warn!(outbox_id = job.id, message_id = %job.message_id,
            code = %error.get("code").unwrap_or(&serde_json::Value::Null),
            title = %error.get("title").or_else(|| error.get("message")).unwrap_or(&serde_json::Value::Null),
            "the provider refused a send for good");
        let mut tx = self.db.begin().await?;
        advance(
            &mut tx,
            TenantId(job.tenant_id),
            job.message_id,
            "failed",
            None,
            Some(error),
        )
        .await?;
        sqlx::query(
            "UPDATE outbox SET state = 'failed', locked_until = NULL, last_error = $2, updated_at = now()
             WHERE id = $1",
        )
        .bind(job.id)
        .bind(error.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Render `outbound` for the account's provider and send it, uploading its
    /// attachment first if it has one.
    async fn send(
        &self,
        account: &accounts::Account,
        secrets: &accounts::Secrets,
        tenant: TenantId,
        message_id: Uuid,
        outbound: &Outbound,
    ) -> SendOutcome {
        match account.provider() {
            Some(Provider::WhatsappCloud) => {
                let media_id = match outbound.content.attachment() {
                    Some(att) => match self.upload(account, secrets, tenant, att).await {
                        Ok(id) => Some(id),
                        Err(outcome) => return outcome,
                    },
                    None => None,
                };
                let body = request::render(outbound, &message_id.to_string(), media_id.as_deref());
                client::send(&self.http, account, secrets, &body).await
            }
            Some(Provider::TwilioSms) => {
                let Some(cfg) = account.twilio() else {
                    return SendOutcome::Permanent(
                        serde_json::json!({"title": "the account's Twilio configuration is incomplete"}),
                    );
                };
                // MMS media go by URL: a signed link to the attachment that Twilio fetches.
                let (body, media) = match &outbound.content {
                    Content::Text { body } => (body.as_str(), None),
                    Content::Image {
                        attachment_id,
                        caption,
                    } => (
                        caption.as_deref().unwrap_or_default(),
                        Some(cfg.media_link(
                            &secrets.access_token,
                            &attachment_id.to_string(),
                            Utc::now().timestamp() + twilio_sms::MEDIA_LINK_SECONDS,
                        )),
                    ),
                    _ => {
                        return SendOutcome::Permanent(
                            serde_json::json!({"title": "SMS carries text and images only"}),
                        );
                    }
                };
                twilio_sms::send(
                    &self.http,
                    &cfg,
                    &secrets.access_token,
                    &outbound.to,
                    body,
                    media.as_deref(),
                    &message_id.to_string(),
                )
                .await
            }
            None => SendOutcome::Permanent(serde_json::json!({
                "title": format!("provider `{}` is not known to this build", account.provider)
            })),
        }
    }

    /// Upload attachment `att` to the provider; its media id.
    async fn upload(
        &self,
        account: &accounts::Account,
        secrets: &accounts::Secrets,
        tenant: TenantId,
        att: Uuid,
    ) -> Result<String, SendOutcome> {
        let meta = {
            let mut conn = self
                .db
                .acquire()
                .await
                .map_err(|e| SendOutcome::Retry(e.to_string()))?;
            conversation_store::attachments::get(&mut conn, tenant, parley_core::AttachmentId(att))
                .await
                .map_err(|e| SendOutcome::Retry(e.to_string()))?
        };
        let Some(meta) = meta else {
            return Err(SendOutcome::Permanent(
                serde_json::json!({"title": "attachment not found"}),
            ));
        };
        let bytes = self
            .blobs
            .get(tenant, &meta.sha256)
            .await
            .map_err(|e| SendOutcome::Retry(format!("attachment bytes: {e}")))?;
        let name = meta.filename.clone().unwrap_or_else(|| "image".to_owned());
        client::upload_media(&self.http, account, secrets, bytes, &meta.mime_type, &name).await
    }

    /// A row queued before the neutral form (a Cloud API body with the attachment's id
    /// under `parley_attachment_id`): upload the attachment and put its media id where
    /// the body wants it. Kept for one release, so rows queued across the upgrade leave.
    async fn legacy_media(
        &self,
        account: &accounts::Account,
        secrets: &accounts::Secrets,
        tenant: TenantId,
        request: &mut Value,
    ) -> Result<(), SendOutcome> {
        let Some(att) = request
            .get("parley_attachment_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Uuid>().ok())
        else {
            return Ok(());
        };
        if let Some(o) = request.as_object_mut() {
            o.remove("parley_attachment_id");
        }
        let media_id = self.upload(account, secrets, tenant, att).await?;
        if let Some(image) = request.get_mut("image").and_then(Value::as_object_mut) {
            image.insert("id".to_owned(), Value::String(media_id));
        } else if let Some(components) = request
            .pointer_mut("/template/components")
            .and_then(Value::as_array_mut)
        {
            // A template's image header.
            for c in components {
                if c.get("type").and_then(Value::as_str) == Some("header")
                    && let Some(image) = c
                        .pointer_mut("/parameters/0/image")
                        .and_then(Value::as_object_mut)
                {
                    image.insert("id".to_owned(), Value::String(media_id.clone()));
                }
            }
        }
        Ok(())
    }
}

/// How long a send whose outcome is unknown waits for the provider's status before it is
/// sent again: twenty first-retry delays (20 s by default), time for a status webhook.
pub fn reconcile_wait(cfg: &DispatchConfig) -> Duration {
    cfg.backoff_base.saturating_mul(20)
}

/// Mark the outbox row of `message_id` done if it is still pending: a status from the
/// provider says it took the message, so it must not be sent again (a send that timed out
/// at our end, or a crash between the provider's acceptance and our record of it).
pub async fn settle_by_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    message_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE outbox SET state = 'done', locked_until = NULL, last_error = NULL, updated_at = now()
         WHERE tenant_id = $1 AND message_id = $2 AND state = 'pending'",
    )
    .bind(tenant.0)
    .bind(message_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The newest message sent to `recipient` of `contact` through the outbox: its status,
/// the provider's error and when it was queued (Validate's evidence).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastSend {
    /// Its status.
    #[sqlx(try_from = "String")]
    pub status: parley_core::state::MessageStatus,
    /// The provider's error, when it failed.
    pub status_error: Option<Value>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

/// See [`LastSend`].
pub async fn last_send_to(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: Uuid,
    recipient: &str,
) -> Result<Option<LastSend>, sqlx::Error> {
    sqlx::query_as::<_, LastSend>(
        "SELECT m.status, m.status_error, m.created_at FROM messages m JOIN outbox o ON o.message_id = m.id
         WHERE m.tenant_id = $1 AND m.contact_id = $2 AND o.recipient = $3
         ORDER BY m.created_at DESC LIMIT 1",
    )
    .bind(tenant.0)
    .bind(contact)
    .bind(recipient)
    .fetch_optional(conn)
    .await
}

/// Exponential backoff with jitter: base·2^(attempt-1), capped, ±20 %.
pub fn backoff(cfg: &DispatchConfig, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
    let raw = cfg.backoff_base.saturating_mul(2_u32.saturating_pow(exp));
    let capped = raw.min(cfg.backoff_max);
    let jitter = (Uuid::new_v4().as_u128() % 41) as f64 / 100.0 + 0.8;
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = DispatchConfig::default();
        let b1 = backoff(&cfg, 1);
        let b4 = backoff(&cfg, 4);
        assert!(b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200));
        assert!(b4 >= Duration::from_millis(6400) && b4 <= Duration::from_millis(9600));
        assert!(backoff(&cfg, 40) <= Duration::from_secs(360));
    }
}
