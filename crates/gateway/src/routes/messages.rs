//! Messages as the API shows them, the Communication tab and tenant-wide search.

use axum::extract::State;
use chrono::{DateTime, Utc};
use conversation_store::{
    attachments::Attachment,
    messages::{self, Message},
};
use parley_core::{MessageId, Principal, channel::Media};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    error::{ApiError, CommonErrors},
    extract::ApiQuery,
    routes::contacts::page_limit,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations))
        .routes(routes!(search_messages))
}

/// A stored file's description.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentOut {
    /// Id; download with `GET /api/v1/attachments/{id}`.
    pub id: Uuid,
    /// Content type, from the bytes.
    pub mime_type: String,
    /// Bytes.
    pub size: i64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Pixels.
    pub width: Option<i32>,
    /// Pixels.
    pub height: Option<i32>,
    /// The uploaded file name (informational).
    pub filename: Option<String>,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
}

impl From<Attachment> for AttachmentOut {
    fn from(a: Attachment) -> Self {
        Self {
            id: a.id,
            mime_type: a.mime_type,
            size: a.size,
            sha256: a.sha256,
            width: a.width,
            height: a.height,
            filename: a.filename,
            created_at: a.created_at,
        }
    }
}

/// Who sent a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct SenderOut {
    /// `contact`, `agent` or `system`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// The agent's user id, for `agent`.
    pub user_id: Option<Uuid>,
}

/// A message in a transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    /// Id.
    pub id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// The interaction it belongs to.
    pub interaction_id: Option<Uuid>,
    /// The channel.
    pub channel: String,
    /// `chat` or `open_media`.
    pub media: String,
    /// `inbound`, `outbound` or `system`.
    pub direction: String,
    /// Who sent it.
    pub sender: SenderOut,
    /// `text`, `image`, `template`, `interactive`, `button_reply`, `reaction`, `location`, …
    pub kind: String,
    /// The text (byte-for-byte as received or sent).
    pub text: Option<String>,
    /// Kind-specific structured content.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Attached files.
    pub attachments: Vec<AttachmentOut>,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// The message this replies to.
    pub reply_to_id: Option<Uuid>,
    /// `received` (inbound); `queued`, `sent`, `delivered`, `read`, `failed` (outbound).
    pub status: String,
    /// The provider's error when `failed`.
    pub status_error: Option<Value>,
    /// Stored at.
    pub created_at: DateTime<Utc>,
}

impl From<Message> for MessageOut {
    fn from(m: Message) -> Self {
        let (type_, user_id) = m.sender();
        let sender = SenderOut { type_, user_id };
        Self {
            id: m.id,
            contact_id: m.contact_id,
            interaction_id: m.interaction_id,
            channel: m.channel,
            media: m.media,
            direction: m.direction,
            sender,
            kind: m.kind,
            text: m.body,
            payload: m.payload,
            attachments: m.attachments.into_iter().map(AttachmentOut::from).collect(),
            provider_message_id: m.provider_message_id,
            reply_to_id: m.reply_to_id,
            status: m.status,
            status_error: m.status_error,
            created_at: m.created_at,
        }
    }
}

/// Communication-tab filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConversationParams {
    /// `chat` or `open_media`.
    #[param(value_type = Option<String>)]
    pub media: Option<Media>,
    /// Matches the contact's name or attribute values (case and accents ignored), an
    /// address, or a phone number in any format.
    pub q: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
}

/// One conversation in the Communication tab.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationOut {
    /// The contact.
    pub contact_id: Uuid,
    /// Its name.
    pub contact_name: String,
    /// Its newest activity.
    pub last_activity_at: DateTime<Utc>,
    /// Its newest message.
    pub last_message: MessageOut,
    /// Inbound messages not yet read by an agent.
    pub unread_count: i64,
}

/// A page of conversations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    /// Most recent first.
    pub items: Vec<ConversationOut>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

fn conversation_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{id}", at.timestamp_micros())
}

fn parse_conversation_cursor(s: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::invalid_field("cursor", "is not a cursor this endpoint issued");
    let (micros, id) = s.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(bad)?;
    let id = id.parse::<Uuid>().map_err(|_| bad())?;
    Ok((at, id))
}

/// The tenant's contacts with activity, most recent first, with the last message and the
/// unread count.
#[utoipa::path(get, path = "/conversations", tag = "conversations", security(("bearer" = [])),
    params(ConversationParams),
    responses((status = 200, description = "A page of conversations", body = ConversationPage), CommonErrors))]
pub async fn list_conversations(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(p): ApiQuery<ConversationParams>,
) -> Result<axum::Json<ConversationPage>, ApiError> {
    let limit = page_limit(p.limit, 50, 200)?;
    let after = p
        .cursor
        .as_deref()
        .map(parse_conversation_cursor)
        .transpose()?;
    let mut conn = state.db.acquire().await?;
    let q = p.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut rows =
        messages::conversations(&mut conn, principal.tenant_id, p.media, q, after, limit + 1)
            .await?;
    let take = usize::try_from(limit).unwrap_or(50);
    let more = rows.len() > take;
    rows.truncate(take);
    let next_cursor = if more {
        rows.last()
            .map(|r| conversation_cursor(r.last_activity_at, r.contact_id))
    } else {
        None
    };
    Ok(axum::Json(ConversationPage {
        items: rows
            .into_iter()
            .map(|r| ConversationOut {
                contact_id: r.contact_id,
                contact_name: r.contact_name,
                last_activity_at: r.last_activity_at,
                last_message: r.last_message.into(),
                unread_count: r.unread_count,
            })
            .collect(),
        next_cursor,
    }))
}

/// Tenant-wide search parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words to find: every word must match the start of a word of the message, case and
    /// accents ignored in every script (`llego` finds `llegó`, `pedid` finds `pedido`);
    /// any part of a number matches however it was written; Chinese, Japanese and Thai
    /// words match as phrases; emoji work.
    pub q: String,
    /// `chat` or `open_media`.
    #[param(value_type = Option<String>)]
    pub media: Option<Media>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
    /// 1 to 100 (default 20).
    pub limit: Option<i64>,
}

/// A search hit.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHitOut {
    /// The matching message.
    pub message: MessageOut,
    /// The contact's name.
    pub contact_name: String,
    /// The text, HTML-escaped, with matches wrapped in `<mark>…</mark>`.
    pub highlight: String,
    /// Open the transcript here: `GET /api/v1/contacts/{contact_id}/messages?around=<this>`.
    pub around_cursor: Uuid,
}

/// A page of search hits.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    /// Newest first.
    pub items: Vec<SearchHitOut>,
    /// Pass as `cursor` for older hits.
    pub next_cursor: Option<Uuid>,
}

/// Search every transcript of the tenant.
#[utoipa::path(get, path = "/messages/search", tag = "conversations", security(("bearer" = [])),
    params(SearchParams),
    responses((status = 200, description = "Matching messages, newest first", body = SearchPage), CommonErrors))]
pub async fn search_messages(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> Result<axum::Json<SearchPage>, ApiError> {
    let limit = page_limit(p.limit, 20, 100)?;
    let q = p.q.trim();
    if q.is_empty() {
        return Err(ApiError::invalid_field("q", "must not be empty"));
    }
    if q.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "q",
            "must be at most 200 characters",
        ));
    }
    let mut tx = state.db.begin().await?;
    let (hits, next) = messages::search_tenant(
        &mut tx,
        principal.tenant_id,
        q,
        p.media,
        p.cursor.map(MessageId),
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(SearchPage {
        items: hits
            .into_iter()
            .map(|h| SearchHitOut {
                around_cursor: h.message.id,
                contact_name: h.contact_name,
                highlight: h.highlight,
                message: h.message.into(),
            })
            .collect(),
        next_cursor: next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_cursors_round_trip() {
        let at = DateTime::<Utc>::from_timestamp_micros(1_795_000_000_123_456).expect("time");
        let id = Uuid::now_v7();
        let c = conversation_cursor(at, id);
        assert_eq!(parse_conversation_cursor(&c).ok(), Some((at, id)));
        assert!(parse_conversation_cursor("nope").is_err());
    }
}
