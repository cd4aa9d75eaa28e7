//! Provider webhooks: `GET` answers the verification handshake, `POST` is checked against
//! the signature over the raw bytes, parsed, and committed before the 200.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use channel_connector::{
    accounts, dead_letters, providers::Provider, signature, whatsapp::webhook,
};
use parley_core::TenantId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{app::AppState, error::ApiError, extract::ApiPath};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify_whatsapp, receive_whatsapp))
        // Meta sends up to 3 MB.
        .layer(DefaultBodyLimit::max(4 * 1024 * 1024))
}

/// The account in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WebhookPath {
    /// The channel account's id.
    pub channel_account_id: Uuid,
}

/// The verification handshake's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Always `subscribe`.
    #[serde(rename = "hub.mode")]
    #[param(rename = "hub.mode")]
    pub mode: Option<String>,
    /// The verify token configured for the account.
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token")]
    pub verify_token: Option<String>,
    /// Echoed back on success.
    #[serde(rename = "hub.challenge")]
    #[param(rename = "hub.challenge")]
    pub challenge: Option<String>,
}

/// Meta's subscription handshake: echo `hub.challenge` when the verify token matches.
#[utoipa::path(get, path = "/webhooks/whatsapp/{channel_account_id}", tag = "webhooks",
    params(WebhookPath, VerifyQuery),
    responses(
        (status = 200, description = "The challenge, as plain text", body = String, content_type = "text/plain"),
        (status = 400, description = "A malformed channel account id or query", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong verify token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such channel account", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_whatsapp(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<WebhookPath>,
    Query(q): Query<VerifyQuery>,
) -> Result<Response, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (_, secrets) = accounts::for_webhook(&mut conn, path.channel_account_id)
        .await?
        .filter(|(a, _)| a.provider() == Some(Provider::WhatsappCloud))
        .ok_or_else(|| ApiError::not_found("channel account"))?;
    let token_ok = q.verify_token.as_deref().is_some_and(|t| {
        crate::auth::constant_time_eq(t.as_bytes(), secrets.verify_token.as_bytes())
    });
    match (q.mode.as_deref(), token_ok, q.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            Ok(([("content-type", "text/plain")], challenge).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "verification_failed",
            "hub.mode must be subscribe and hub.verify_token must match the account's verify token",
        )),
    }
}

/// Inbound messages and delivery statuses from the WhatsApp Cloud API. Signed with
/// `X-Hub-Signature-256`; answered 200 only after everything is committed. A message that
/// cannot be read is kept alone as a dead letter (the rest of the webhook is stored), a
/// body that cannot be read at all is kept whole, and both are answered 200 (the provider
/// would retry them forever); an admin replays dead letters once the cause is fixed.
#[utoipa::path(post, path = "/webhooks/whatsapp/{channel_account_id}", tag = "webhooks",
    params(WebhookPath),
    request_body(content = Object, content_type = "application/json", description = "A Cloud API webhook envelope"),
    responses(
        (status = 200, description = "Stored"),
        (status = 400, description = "A malformed channel account id or query", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong signature; nothing stored", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The body names another business number (`metadata.phone_number_id`); nothing stored", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such channel account", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable; the provider retries", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn receive_whatsapp(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<WebhookPath>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "webhook bodies are limited to 4 MB",
            )
        } else {
            ApiError::bad_request("unreadable_body", e.body_text())
        }
    })?;
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let account_id = path.channel_account_id;
    let (tenant, phone_number_id) = match state.webhook_accounts.fresh(account_id) {
        // A secret changed on another replica is picked up by the refetch below, or
        // within the cache's second at the latest.
        Some(known) if signature::verify(known.app_secret.as_bytes(), &body, sig).is_ok() => {
            (known.tenant, known.phone_number_id)
        }
        _ => {
            let mut conn = state.db.acquire().await?;
            // The account in the URL must be a WhatsApp account: another provider's
            // secret must never admit a WhatsApp body.
            let (account, secrets) = accounts::for_webhook(&mut conn, account_id)
                .await?
                .filter(|(a, _)| a.provider() == Some(Provider::WhatsappCloud))
                .ok_or_else(|| ApiError::not_found("channel account"))?;
            drop(conn);
            let tenant = TenantId(account.tenant_id);
            state.webhook_accounts.keep(
                account_id,
                tenant,
                secrets.app_secret.clone(),
                account.phone_number_id.clone(),
            );
            if let Err(e) = signature::verify(secrets.app_secret.as_bytes(), &body, sig) {
                tracing::warn!(account = %account_id, reason = %e, "webhook refused");
                return Err(ApiError::unauthorized("invalid_signature", e.to_string()));
            }
            (tenant, account.phone_number_id)
        }
    };
    take_body(&state, tenant, account_id, &phone_number_id, &body).await?;
    Ok(StatusCode::OK)
}

/// What became of a signed body.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Stored; `rejected` messages of it were kept as dead letters instead.
    Stored {
        /// Messages, statuses and template statuses stored (replays included).
        stored: usize,
        /// Why each message kept as a dead letter instead could not be read.
        rejected: Vec<String>,
    },
    /// Not readable at all: kept whole as a dead letter.
    DeadLetter(String),
}

/// Store what a signed body for `account_id` carries (the webhook, or an admin's replay of
/// a dead letter): the readable messages and statuses are stored and committed, each
/// unreadable message is kept alone as a dead letter, and a body that cannot be read at
/// all is kept whole.
pub(crate) async fn take_body(
    state: &AppState,
    tenant: TenantId,
    account_id: Uuid,
    phone_number_id: &str,
    body: &[u8],
) -> Result<Taken, ApiError> {
    let envelope = match webhook::parse(body) {
        Ok(env) => env,
        Err(e) => {
            let mut conn = state.db.acquire().await?;
            dead_letters::record(&mut conn, tenant, account_id, &e.0, body).await?;
            tracing::warn!(account = %account_id, reason = %e, "signed webhook kept as a dead letter");
            return Ok(Taken::DeadLetter(e.0));
        }
    };
    // A signed body names the business number it is for; the same app (and so the same
    // signing secret) may serve numbers of other accounts, even other tenants', so a
    // body is only taken by the account whose number it names.
    if let Some(other) = envelope
        .phone_number_ids
        .iter()
        .find(|id| id.as_str() != phone_number_id)
    {
        tracing::warn!(account = %account_id, named = %other, "webhook for another business number refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_business_number",
            format!(
                "metadata.phone_number_id `{other}` is not this channel account's phone number id"
            ),
        ));
    }
    for err in &envelope.errors {
        tracing::warn!(account = %account_id, error = %err, "provider reported an error");
    }
    let rejected: Vec<String> = envelope.rejected.iter().map(|r| r.reason.clone()).collect();
    if !envelope.rejected.is_empty() {
        // Kept before the rest is stored: after a failure below the provider sends the
        // webhook again, and the same message is kept once.
        let mut tx = state.db.begin().await?;
        for r in &envelope.rejected {
            let body = serde_json::to_vec(&r.envelope).unwrap_or_default();
            dead_letters::record(&mut tx, tenant, account_id, &r.reason, &body).await?;
        }
        tx.commit().await?;
        tracing::warn!(account = %account_id, count = rejected.len(), "unreadable messages kept as dead letters; the rest is stored");
    }
    let stored =
        envelope.messages.len() + envelope.statuses.len() + envelope.template_statuses.len();
    state.ingest.store(tenant, account_id, envelope).await?;
    Ok(Taken::Stored { stored, rejected })
}

/// What a webhook needs of its channel account (the tenant and the key of the signature),
/// kept for a second per account so that a busy account's webhooks do not each read it.
///
/// A webhook whose signature the kept secret does not verify reads the account again
/// before it is refused, so a new secret is used at once; an account changed on this
/// process is forgotten at once, one changed on another replica within the second (the old
/// secret still verifies there meanwhile).
#[derive(Clone, Default)]
pub struct WebhookAccounts {
    kept: Arc<Mutex<HashMap<Uuid, KeptAccount>>>,
}

/// One kept account.
#[derive(Clone)]
pub struct KeptAccount {
    /// The account's tenant.
    pub tenant: TenantId,
    /// The key of the webhook signature.
    pub app_secret: String,
    /// The business number's id the account's webhooks must name.
    pub phone_number_id: String,
    read_at: Instant,
}

impl std::fmt::Debug for WebhookAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookAccounts(***)")
    }
}

impl WebhookAccounts {
    /// How long an account read for a webhook is used without reading it again.
    pub const KEEP_FOR: Duration = Duration::from_secs(1);

    /// The account, if it was read less than [`Self::KEEP_FOR`] ago.
    pub fn fresh(&self, id: Uuid) -> Option<KeptAccount> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(&id)
            .filter(|k| k.read_at.elapsed() < Self::KEEP_FOR)
            .cloned()
    }

    /// Keep an account just read.
    pub fn keep(&self, id: Uuid, tenant: TenantId, app_secret: String, phone_number_id: String) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(
            id,
            KeptAccount {
                tenant,
                app_secret,
                phone_number_id,
                read_at: Instant::now(),
            },
        );
    }

    /// Forget an account that was changed, so its next webhook reads it again.
    pub fn forget(&self, id: Uuid) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.remove(&id);
    }
}
