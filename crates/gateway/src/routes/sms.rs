//! SMS through Twilio: the inbound webhook and status callbacks (signed with
//! `X-Twilio-Signature` over the account's configured URL), and what a text costs as SMS.

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use channel_connector::{
    accounts::{self, Account, Secrets},
    dead_letters,
    providers::Provider,
    status, twilio_sms,
};
use parley_core::{Principal, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath, ApiQuery},
    routes::webhooks::{Taken, WebhookPath},
};

pub(crate) fn webhooks() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive_twilio_sms))
        .routes(routes!(twilio_sms_status))
        .routes(routes!(twilio_sms_media))
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sms_segments))
}

/// The empty TwiML answer: stored, no auto-reply.
fn twiml() -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
    )
        .into_response()
}

/// Twilio account `account_id` with its secrets and configuration; `None` when there is
/// no such account or it is not a (configured) Twilio one.
async fn twilio_account(
    state: &AppState,
    account_id: Uuid,
) -> Result<Option<(Account, Secrets, twilio_sms::Config)>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(accounts::for_webhook(&mut conn, account_id)
        .await?
        .and_then(|(account, secrets)| {
            let cfg = account.twilio()?;
            Some((account, secrets, cfg))
        }))
}

/// The Twilio account in the path, its secrets, and its configuration; its webhook
/// checked against `url` (the configured URL, never one rebuilt from the request).
async fn verified(
    state: &AppState,
    account_id: Uuid,
    headers: &HeaderMap,
    body: &[u8],
    url: impl FnOnce(&twilio_sms::Config) -> String,
) -> Result<(Account, Secrets, twilio_sms::Config), ApiError> {
    let (account, secrets, cfg) = twilio_account(state, account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel account"))?;
    let sig = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = twilio_sms::verify(&url(&cfg), body, sig, &secrets.app_secret) {
        tracing::warn!(account = %account_id, reason = %e, "Twilio webhook refused");
        return Err(match e {
            twilio_sms::SignatureError::Missing => {
                ApiError::unauthorized("invalid_signature", e.to_string())
            }
            twilio_sms::SignatureError::Mismatch => {
                ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", e.to_string())
            }
        });
    }
    Ok((account, secrets, cfg))
}

/// An inbound SMS or MMS from Twilio (form-encoded, signed with `X-Twilio-Signature`
/// over the account's `webhook_url` and every parameter). Committed before the answer,
/// which is empty TwiML (no auto-reply); a redelivered `MessageSid` stores nothing twice;
/// a body that cannot be read is kept as a dead letter and answered the same way.
#[utoipa::path(post, path = "/webhooks/twilio_sms/{channel_account_id}", tag = "webhooks",
    params(WebhookPath),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's message webhook parameters"),
    responses(
        (status = 200, description = "Stored; empty TwiML", body = String, content_type = "text/xml"),
        (status = 401, description = "No signature; nothing stored", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong signature; nothing stored", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such Twilio channel account", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn receive_twilio_sms(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<WebhookPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account_id = path.channel_account_id;
    let (account, _, _) = verified(&state, account_id, &headers, &body, |cfg| {
        cfg.webhook_url.clone()
    })
    .await?;
    take_body(&state, TenantId(account.tenant_id), account_id, &body).await?;
    Ok(twiml())
}

/// Store what a signed message webhook body carries (the webhook, or an admin's replay of
/// a dead letter), committed; a body that cannot be read is kept as a dead letter.
pub(crate) async fn take_body(
    state: &AppState,
    tenant: TenantId,
    account_id: Uuid,
    body: &[u8],
) -> Result<Taken, ApiError> {
    let message = match twilio_sms::parse_inbound(body) {
        Ok(m) => m,
        Err(reason) => {
            let mut conn = state.db.acquire().await?;
            dead_letters::record(&mut conn, tenant, account_id, &reason, body).await?;
            tracing::warn!(account = %account_id, %reason, "signed Twilio webhook kept as a dead letter");
            return Ok(Taken::DeadLetter(reason));
        }
    };
    let mut tx = state.db.begin().await?;
    crate::services::sms_inbound::store_inbound(&mut tx, tenant, account_id, &message).await?;
    tx.commit().await?;
    Ok(Taken::Stored {
        stored: 1,
        rejected: Vec::new(),
    })
}

/// The message a status callback is about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Parley's message id, carried in the `StatusCallback` URL.
    pub m: Option<Uuid>,
}

/// A delivery status from Twilio (`StatusCallback`, which carries Parley's message id so
/// a status that arrives before the send's answer was recorded still finds it). Statuses
/// only move forward (a late `sent` never undoes `delivered`); `failed` and
/// `undelivered` carry Twilio's error, and 21610 opts the address out. Always 200 for a
/// signed callback, even about a message Parley does not know.
#[utoipa::path(post, path = "/webhooks/twilio_sms/{channel_account_id}/status", tag = "webhooks",
    params(WebhookPath, StatusQuery),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback parameters"),
    responses(
        (status = 200, description = "Recorded"),
        (status = 401, description = "No signature", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong signature", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such Twilio channel account", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn twilio_sms_status(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<WebhookPath>,
    Query(q): Query<StatusQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let account_id = path.channel_account_id;
    let (account, _, _) = verified(&state, account_id, &headers, &body, |cfg| match q.m {
        Some(m) => cfg.status_callback(&m.to_string()),
        None => format!("{}/status", cfg.webhook_url.trim_end_matches('/')),
    })
    .await?;
    let tenant = TenantId(account.tenant_id);
    let Ok(st) = twilio_sms::parse_status(&body) else {
        return Ok(StatusCode::OK);
    };
    let Some(new) = st.parley_status() else {
        return Ok(StatusCode::OK);
    };
    let mut tx = state.db.begin().await?;
    let known = status::apply_status(
        &mut tx,
        tenant,
        account_id,
        &st.message_sid,
        q.m,
        new,
        st.error.as_ref(),
    )
    .await?;
    if !known {
        tracing::debug!(account = %account_id, sid = %st.message_sid, status = %st.status, "status not applied (unknown message or not forward)");
    }
    tx.commit().await?;
    Ok(StatusCode::OK)
}

/// A media link's path: the account and the attachment.
#[derive(Debug, Deserialize, IntoParams)]
pub struct MediaPath {
    /// The channel account's id.
    pub channel_account_id: Uuid,
    /// The attachment's id.
    pub attachment_id: Uuid,
}

/// A media link's signature.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MediaQuery {
    /// Until when the link works (Unix seconds).
    pub expires: i64,
    /// The link's signature (made with the account's auth token).
    pub sig: String,
}

/// An MMS image for Twilio to fetch: Twilio takes media by URL, so an image an agent
/// sends by SMS goes as this link, signed with the account's auth token and valid for a
/// day. Anyone without a valid, unexpired link gets 403 and learns nothing.
#[utoipa::path(get, path = "/webhooks/twilio_sms/{channel_account_id}/media/{attachment_id}", tag = "webhooks",
    params(MediaPath, MediaQuery),
    responses(
        (status = 200, description = "The file, with its content type", content(
            (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/gif"))),
        (status = 400, description = "A malformed path or query", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a valid link, or expired", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such attachment", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn twilio_sms_media(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<MediaPath>,
    ApiQuery(q): ApiQuery<MediaQuery>,
) -> Result<Response, ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_link",
            "not a valid media link",
        )
    };
    let (account, secrets, _) = twilio_account(&state, path.channel_account_id)
        .await?
        .ok_or_else(refused)?;
    if !twilio_sms::media_link_ok(
        &secrets.access_token,
        &path.attachment_id.to_string(),
        q.expires,
        &q.sig,
        chrono::Utc::now().timestamp(),
    ) {
        return Err(refused());
    }
    crate::routes::attachments::serve(
        &state,
        TenantId(account.tenant_id),
        parley_core::AttachmentId(path.attachment_id),
    )
    .await
}

/// A text to price as SMS.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentsIn {
    /// The text an agent is about to send.
    pub text: String,
}

/// How a text travels as SMS.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentsOut {
    /// `GSM-7` or `UCS-2` (one character outside GSM-7 makes the whole text UCS-2).
    pub encoding: String,
    /// Septets (GSM-7) or UTF-16 units (UCS-2; an emoji takes two).
    pub units: usize,
    /// How many SMS it takes (each billed): 160 / 153 per segment in GSM-7, 70 / 67 in
    /// UCS-2.
    pub segments: usize,
    /// Units per segment at this length.
    pub per_segment: usize,
    /// The longest text an SMS send takes (UTF-16 units).
    pub max_units: usize,
    /// Whether this text is within it.
    pub within_limit: bool,
}

/// What a text costs as SMS, before it is sent: its encoding and segment count, and
/// whether it is within the 1,600-character limit (longer sends are refused with 422).
#[utoipa::path(post, path = "/sms/segments", tag = "contacts", security(("bearer" = [])),
    request_body = SegmentsIn,
    responses((status = 200, description = "The encoding and segments", body = SegmentsOut), CommonErrors))]
pub async fn sms_segments(
    _principal: Principal,
    ApiJson(input): ApiJson<SegmentsIn>,
) -> Result<axum::Json<SegmentsOut>, ApiError> {
    let s = twilio_sms::segments(&input.text);
    let units = twilio_sms::body_units(&input.text);
    Ok(axum::Json(SegmentsOut {
        encoding: s.encoding.to_owned(),
        units: s.units,
        segments: s.segments,
        per_segment: s.per_segment,
        max_units: Provider::TwilioSms.capabilities().max_text_chars,
        within_limit: units <= twilio_sms::MAX_BODY_CHARS,
    }))
}
