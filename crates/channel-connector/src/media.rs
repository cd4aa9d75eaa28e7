//! Inbound media: the webhook records what to fetch (in its transaction); this worker
//! fetches it from the provider into attachment storage afterwards, retrying with backoff,
//! so a slow or failing download never delays the webhook's 200.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use conversation_store::attachments::{self, BlobStore, StoredFile};
use parley_core::TenantId;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{accounts, providers::Provider};

/// The NOTIFY channel that wakes the fetcher.
pub const CHANNEL: &str = "parley_media";

/// The largest media file fetched (WhatsApp documents go up to 100 MB).
pub const MAX_MEDIA_BYTES: usize = 100 * 1024 * 1024;

/// Record that message `message_id` has provider media `media_id` to fetch.
pub async fn enqueue(
    conn: &mut PgConnection,
    tenant: TenantId,
    message_id: Uuid,
    account: Uuid,
    media_id: &str,
    mime_type: Option<&str>,
    filename: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO media_downloads (tenant_id, message_id, channel_account_id, media_id, mime_type, filename)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.0)
    .bind(message_id)
    .bind(account)
    .bind(media_id)
    .bind(mime_type)
    .bind(filename)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Job {
    id: i64,
    tenant_id: Uuid,
    message_id: Uuid,
    channel_account_id: Uuid,
    media_id: String,
    mime_type: Option<String>,
    filename: Option<String>,
    attempts: i32,
    created_at: DateTime<Utc>,
}

/// Fetches provider media into attachment storage.
#[derive(Debug, Clone)]
pub struct MediaFetcher {
    db: PgPool,
    http: reqwest::Client,
    blobs: Arc<dyn BlobStore>,
    backoff_base: Duration,
}

enum Fetch {
    Done(Vec<u8>, String),
    Retry(String),
    Gone(String),
}

impl MediaFetcher {
    /// A fetcher over `db` writing into `blobs`.
    pub fn new(db: PgPool, blobs: Arc<dyn BlobStore>, backoff_base: Duration) -> Self {
        Self {
            db,
            http: crate::http_client(Duration::from_secs(60)),
            blobs,
            backoff_base,
        }
    }

    /// Run until `shutdown`.
    pub async fn run(self, wake: crate::worker::Wake, shutdown: CancellationToken) {
        crate::worker::run(wake, CHANNEL, Duration::from_secs(2), shutdown, || {
            self.round()
        })
        .await;
    }

    /// Claim and fetch one batch.
    pub async fn round(&self) -> Result<usize, sqlx::Error> {
        let jobs = sqlx::query_as::<_, Job>(
            "UPDATE media_downloads SET locked_until = now() + interval '120 seconds', attempts = attempts + 1
             WHERE id IN (SELECT id FROM media_downloads
                          WHERE state = 'pending' AND next_attempt_at <= now()
                            AND (locked_until IS NULL OR locked_until < now())
                          ORDER BY id LIMIT 8 FOR UPDATE SKIP LOCKED)
             RETURNING id, tenant_id, message_id, channel_account_id, media_id, mime_type, filename, attempts, created_at",
        )
        .fetch_all(&self.db)
        .await?;
        let n = jobs.len();
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let me = self.clone();
            set.spawn(async move {
                let id = job.id;
                if let Err(e) = me.process(job).await {
                    tracing::warn!(media_download = id, error = %e, "recording a media download failed");
                }
            });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    async fn fetch(&self, job: &Job) -> Fetch {
        let tenant = TenantId(job.tenant_id);
        let Ok(mut conn) = self.db.acquire().await else {
            return Fetch::Retry("database unavailable".to_owned());
        };
        let account = accounts::get(&mut conn, tenant, job.channel_account_id).await;
        let secrets = accounts::secrets(&mut conn, tenant, job.channel_account_id).await;
        drop(conn);
        let (Ok(Some(account)), Ok(Some(secrets))) = (account, secrets) else {
            return Fetch::Gone("the channel account no longer exists".to_owned());
        };
        match account.provider() {
            Some(Provider::WhatsappCloud) => self.fetch_whatsapp(job, &account, &secrets).await,
            Some(Provider::TwilioSms) => self.fetch_twilio(job, &account, &secrets).await,
            None => Fetch::Gone(format!("provider `{}` is not known", account.provider)),
        }
    }

    /// Twilio: the media reference is its URL on the account's API host, fetched with the
    /// account's credentials; Twilio redirects to a CDN, and the credentials are not sent
    /// on across hosts. A URL on any other host is refused (a webhook must not make
    /// Parley fetch arbitrary addresses).
    async fn fetch_twilio(
        &self,
        job: &Job,
        account: &accounts::Account,
        secrets: &accounts::Secrets,
    ) -> Fetch {
        let origin = |u: &str| {
            reqwest::Url::parse(u).ok().map(|u| {
                (
                    u.scheme().to_owned(),
                    u.host_str().map(str::to_owned),
                    u.port_or_known_default(),
                )
            })
        };
        if origin(&job.media_id).is_none() || origin(&job.media_id) != origin(&account.api_base_url)
        {
            return Fetch::Gone("the media URL is not on the provider's API host".to_owned());
        }
        let sid = account.twilio().map(|c| c.account_sid).unwrap_or_default();
        let res = self
            .http
            .get(&job.media_id)
            .basic_auth(sid, Some(&secrets.access_token))
            .send()
            .await;
        let mime = job
            .mime_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        match res {
            Ok(r) if r.status().is_success() => {
                let mime = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .unwrap_or(mime);
                match r.bytes().await {
                    Ok(b) if b.len() <= MAX_MEDIA_BYTES => Fetch::Done(b.to_vec(), mime),
                    Ok(_) => Fetch::Gone("media larger than 100 MB".to_owned()),
                    Err(e) => Fetch::Retry(format!("download: {e}")),
                }
            }
            // Media can be missing for a moment while it propagates.
            Ok(r) if r.status().as_u16() == 404 && job.attempts < 5 => {
                Fetch::Retry("media not there yet (404)".to_owned())
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                Fetch::Gone(format!("media download answered {}", r.status()))
            }
            Ok(r) => Fetch::Retry(format!("media download answered {}", r.status())),
            Err(e) => Fetch::Retry(format!("network: {e}")),
        }
    }

    /// WhatsApp: look the media id up, then download it with the token.
    async fn fetch_whatsapp(
        &self,
        job: &Job,
        account: &accounts::Account,
        secrets: &accounts::Secrets,
    ) -> Fetch {
        let info_url = format!(
            "{}/{}",
            account.api_base_url.trim_end_matches('/'),
            job.media_id
        );
        let info = match self
            .http
            .get(&info_url)
            .bearer_auth(&secrets.access_token)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap_or(Value::Null),
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                return Fetch::Gone(format!("media lookup answered {}", r.status()));
            }
            Ok(r) => return Fetch::Retry(format!("media lookup answered {}", r.status())),
            Err(e) => return Fetch::Retry(format!("network: {e}")),
        };
        let Some(url) = info.get("url").and_then(Value::as_str) else {
            return Fetch::Retry("media lookup had no url".to_owned());
        };
        let mime = info
            .get("mime_type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| job.mime_type.clone())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        match self
            .http
            .get(url)
            .bearer_auth(&secrets.access_token)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                if r.content_length()
                    .is_some_and(|l| l > MAX_MEDIA_BYTES as u64)
                {
                    return Fetch::Gone("media larger than 100 MB".to_owned());
                }
                match r.bytes().await {
                    Ok(b) if b.len() <= MAX_MEDIA_BYTES => Fetch::Done(b.to_vec(), mime),
                    Ok(_) => Fetch::Gone("media larger than 100 MB".to_owned()),
                    Err(e) => Fetch::Retry(format!("download: {e}")),
                }
            }
            Ok(r) => Fetch::Retry(format!("download answered {}", r.status())),
            Err(e) => Fetch::Retry(format!("network: {e}")),
        }
    }

    async fn process(&self, job: Job) -> Result<(), sqlx::Error> {
        let tenant = TenantId(job.tenant_id);
        match self.fetch(&job).await {
            Fetch::Done(bytes, mime) => {
                let sha = attachments::sha256_hex(&bytes);
                if let Err(e) = self.blobs.put(tenant, &sha, &bytes).await {
                    return self.retry(&job, &format!("storage: {e}")).await;
                }
                let (width, height) = match imagesize_of(&bytes, &mime) {
                    Some((w, h)) => (Some(w), Some(h)),
                    None => (None, None),
                };
                let mut tx = self.db.begin().await?;
                let file = StoredFile {
                    mime_type: &mime,
                    width,
                    height,
                    sha256: &sha,
                    size: bytes.len(),
                    filename: job.filename.as_deref(),
                };
                let stored = attachments::insert_file(&mut tx, tenant, &file, None).await?;
                attachments::link_to_message(&mut tx, tenant, job.message_id, &stored).await?;
                sqlx::query(
                    "UPDATE media_downloads SET state = 'done', locked_until = NULL WHERE id = $1",
                )
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
            Fetch::Retry(reason) => self.retry(&job, &reason).await,
            Fetch::Gone(reason) => {
                sqlx::query("UPDATE media_downloads SET state = 'failed', locked_until = NULL, last_error = $2 WHERE id = $1")
                    .bind(job.id)
                    .bind(reason)
                    .execute(&self.db)
                    .await?;
                Ok(())
            }
        }
    }

    async fn retry(&self, job: &Job, reason: &str) -> Result<(), sqlx::Error> {
        // The provider keeps media about a week.
        let expired = Utc::now() - job.created_at > chrono::Duration::days(7);
        let cfg = crate::outbox::DispatchConfig {
            backoff_base: self.backoff_base,
            ..Default::default()
        };
        let delay = crate::outbox::backoff(&cfg, job.attempts);
        sqlx::query(
            "UPDATE media_downloads SET locked_until = NULL, last_error = $2,
                    state = CASE WHEN $4 THEN 'failed' ELSE state END,
                    next_attempt_at = now() + make_interval(secs => $3)
             WHERE id = $1",
        )
        .bind(job.id)
        .bind(reason)
        .bind(delay.as_secs_f64())
        .bind(expired)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}

fn imagesize_of(bytes: &[u8], mime: &str) -> Option<(i32, i32)> {
    if !mime.starts_with("image/") {
        return None;
    }
    attachments::sniff_image(bytes)
        .ok()
        .map(|i| (i.width, i.height))
}
