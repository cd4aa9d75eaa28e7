//! Sending a message to a contact: the use case behind `POST /contacts/{id}/messages` and
//! `POST /interactions/{id}/messages` (validation against the channel's capabilities,
//! consent and reply window, idempotency, the message and its outbox row in one
//! transaction). No HTTP here: the handlers parse, call [`send`], and serialise.

use axum::http::StatusCode;
use channel_connector::{accounts, outbox, providers::Provider};
use chrono::Utc;
use conversation_store::{
    contacts,
    idempotency::{self, Claim},
    messages::{self, Direction, NewMessage},
};
use parley_core::{
    AttachmentId, ContactId, InteractionId, MessageId, Principal,
    channel::Channel,
    outbound::{Content, Outbound, ReplyButton},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{app::AppState, error::ApiError, routes::messages::MessageOut, validate::Checks};

/// A reaction to one of the contact's messages.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactionIn {
    /// The message reacted to.
    pub message_id: Uuid,
    /// One emoji; empty removes the reaction.
    pub emoji: String,
}

/// A reply button under a text.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ButtonIn {
    /// Comes back as the contact's `button_reply` `reply_id` (1-256 characters).
    pub id: String,
    /// The label (1-20 characters).
    pub title: String,
}

/// An agent's message. Exactly one of `text`, `attachment_id` or `reaction`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendIn {
    /// `whatsapp` (the default; on an interaction, its channel).
    #[schema(value_type = Option<String>, example = "whatsapp")]
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Text, at most 4,096 characters.
    pub text: Option<String>,
    /// An uploaded image to send.
    pub attachment_id: Option<Uuid>,
    /// The image's caption.
    pub caption: Option<String>,
    /// Reply to this message (shown quoted on the contact's phone).
    pub reply_to: Option<Uuid>,
    /// A reaction instead of a message.
    pub reaction: Option<ReactionIn>,
    /// Which of the contact's WhatsApp addresses (default: the one they last wrote from).
    pub identity_id: Option<Uuid>,
    /// Up to three reply buttons under `text` (an interactive message).
    pub buttons: Option<Vec<ButtonIn>>,
}

/// Validate, dedupe by `Idempotency-Key`, and queue an agent's message to `contact`
/// (through `interaction`, which must be the caller's, or a supervisor's to act on; an
/// ended one resumes).
pub async fn send(
    state: &AppState,
    principal: Principal,
    contact: ContactId,
    interaction: Option<InteractionId>,
    key: Option<String>,
    input: SendIn,
) -> Result<(StatusCode, Value), ApiError> {
    let mut c = Checks::default();
    if let Some(ch) = input.channel
        && Provider::for_channel(ch).is_none()
    {
        c.fail(
            "channel",
            format!("`{}` cannot be sent to yet: whatsapp or sms", ch.as_str()),
        );
    }
    let chosen = [
        input.text.is_some(),
        input.attachment_id.is_some(),
        input.reaction.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        c.fail(
            "text",
            "give exactly one of text, attachment_id or reaction",
        );
    }
    if let Some(t) = &input.text {
        if t.trim().is_empty() {
            c.fail("text", "must not be blank");
        } else if t.chars().count() > messages::MAX_BODY_CHARS {
            c.fail("text", "must be at most 4096 characters");
        }
        // (Each channel's own limit is checked once the channel is known.)
    }
    if let Some(buttons) = &input.buttons {
        if input.text.is_none() {
            c.fail("buttons", "buttons go under a text");
        }
        if buttons.is_empty() || buttons.len() > 3 {
            c.fail("buttons", "give 1 to 3 buttons");
        }
        if input
            .text
            .as_ref()
            .is_some_and(|t| t.chars().count() > 1024)
        {
            c.fail("text", "must be at most 1024 characters with buttons");
        }
        for (i, b) in buttons.iter().enumerate() {
            let t = b.title.trim().chars().count();
            if t == 0 || t > 20 {
                c.fail(&format!("buttons[{i}].title"), "must be 1 to 20 characters");
            }
            if b.id.is_empty() || b.id.len() > 256 {
                c.fail(&format!("buttons[{i}].id"), "must be 1 to 256 characters");
            }
            if buttons[..i].iter().any(|o| o.id == b.id) {
                c.fail(&format!("buttons[{i}].id"), "must be unique");
            }
        }
    }
    if input
        .caption
        .as_ref()
        .is_some_and(|cap| cap.chars().count() > 1024)
    {
        c.fail("caption", "must be at most 1024 characters");
    }
    if let Some(r) = &input.reaction
        && r.emoji.chars().count() > 10
    {
        c.fail("reaction.emoji", "must be one emoji");
    }
    c.finish()?;
    let hash = hex::encode(Sha256::digest(
        format!(
            "{}:{}:{}",
            contact.0,
            interaction.map(|i| i.0.to_string()).unwrap_or_default(),
            serde_json::to_string(&input).unwrap_or_default()
        )
        .as_bytes(),
    ));
    let tenant = principal.tenant_id;
    let mut tx = state.db.begin().await?;
    if let Some(replay) = claim(&mut tx, principal, key.as_deref(), &hash).await? {
        return Ok(replay);
    }
    if !contacts::lock_for_write(&mut tx, tenant, contact).await? {
        return Err(ApiError::not_found("contact"));
    }
    let channel = match input.channel {
        Some(ch) => ch,
        None => default_channel(&mut tx, tenant, contact, interaction).await?,
    };
    let provider = Provider::for_channel(channel).ok_or_else(|| {
        ApiError::invalid_field(
            "channel",
            format!(
                "`{}` cannot be sent to yet: whatsapp or sms",
                channel.as_str()
            ),
        )
    })?;
    check_capabilities(provider, &input)?;
    let supervisor = principal.has_role(parley_core::Role::Supervisor);
    match interaction {
        Some(i) => {
            interaction_router::reply_through(&mut tx, tenant, principal.user_id, supervisor, i)
                .await?;
        }
        // The Communication tab: a contact's ended or done conversation may be continued
        // by anyone, but another agent's live chat is theirs.
        None if !supervisor => {
            interaction_router::check_not_anothers_chat(
                &mut tx,
                tenant,
                principal.user_id,
                contact,
                channel,
            )
            .await?;
        }
        None => {}
    }
    let target = contacts::send_target(&mut tx, tenant, contact, channel, input.identity_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "identity_id",
                format!(
                    "the contact has no {} address; add one first",
                    channel.as_str()
                ),
            )
        })?;
    crate::services::consent::check_consent(target.status, true, false)?;
    if provider.capabilities().reply_window_hours.is_some() {
        let end = contacts::window_end(target.last_inbound_at, target.window_closed_at);
        if end.is_none_or(|e| e <= Utc::now()) {
            return Err(ApiError::window_closed(end));
        }
    }
    let account = accounts::for_contact_on(&mut tx, tenant, contact.0, provider)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "channel",
                format!("the tenant has no {} channel account", channel.as_str()),
            )
        })?;
    let provider_id_of =
        |m: Option<messages::Message>, field: &'static str| -> Result<String, ApiError> {
            m.filter(|m| m.contact_id == contact.0)
                .and_then(|m| m.provider_message_id)
                .ok_or_else(|| {
                    ApiError::invalid_field(field, "is not a delivered message of this contact")
                })
        };
    let reply_ctx = match input.reply_to {
        Some(r) => Some(provider_id_of(
            messages::get(&mut tx, tenant, MessageId(r)).await?,
            "reply_to",
        )?),
        None => None,
    };
    let (kind, body, content, attachment_ids, payload) =
        if let (Some(text), Some(buttons)) = (&input.text, &input.buttons) {
            let pairs: Vec<ReplyButton> = buttons
                .iter()
                .map(|b| ReplyButton {
                    id: b.id.clone(),
                    title: b.title.trim().to_owned(),
                })
                .collect();
            (
                "interactive",
                Some(text.clone()),
                Content::Buttons {
                    body: text.clone(),
                    buttons: pairs,
                },
                vec![],
                serde_json::json!({ "buttons": buttons }),
            )
        } else if let Some(text) = &input.text {
            (
                "text",
                Some(text.clone()),
                Content::Text { body: text.clone() },
                vec![],
                serde_json::json!({}),
            )
        } else if let Some(att) = input.attachment_id {
            (
                "image",
                None,
                Content::Image {
                    attachment_id: att,
                    caption: input.caption.clone(),
                },
                vec![AttachmentId(att)],
                serde_json::json!({ "caption": input.caption }),
            )
        } else if let Some(r) = &input.reaction {
            let target = provider_id_of(
                messages::get(&mut tx, tenant, MessageId(r.message_id)).await?,
                "reaction.message_id",
            )?;
            (
                "reaction",
                (!r.emoji.is_empty()).then(|| r.emoji.clone()),
                Content::Reaction {
                    to: target,
                    emoji: r.emoji.clone(),
                },
                vec![],
                serde_json::json!({ "message_id": r.message_id, "emoji": r.emoji }),
            )
        } else {
            return Err(ApiError::invalid_field(
                "text",
                "give exactly one of text, attachment_id or reaction",
            ));
        };
    let message = queue(
        &mut tx,
        principal,
        contact,
        &account,
        &target.address,
        Queued {
            kind,
            body,
            payload,
            content,
            attachment_ids,
            reply_to: input.reply_to.map(MessageId),
            reply_ctx: reply_ctx.as_deref(),
        },
    )
    .await?;
    let out = serde_json::to_value(MessageOut::from(message)).unwrap_or_default();
    if let Some(k) = &key {
        idempotency::finish(&mut tx, tenant, principal.user_id, k, 202, &out).await?;
    }
    tx.commit().await?;
    let _ = target.id;
    Ok((StatusCode::ACCEPTED, out))
}

/// The channel a send without one goes out on: the interaction's, else the channel the
/// contact last wrote on (of those Parley can send to), else WhatsApp.
async fn default_channel(
    tx: &mut sqlx::PgConnection,
    tenant: parley_core::TenantId,
    contact: ContactId,
    interaction: Option<InteractionId>,
) -> Result<Channel, ApiError> {
    let found = match interaction {
        Some(i) => conversation_store::interactions::contact_and_channel(tx, tenant, i)
            .await?
            .and_then(|(_, ch)| ch),
        None => {
            let sendable: Vec<Channel> = Provider::ALL.iter().map(|p| p.channel()).collect();
            contacts::last_written_channel(tx, tenant, contact, &sendable).await?
        }
    };
    Ok(found.unwrap_or(Channel::Whatsapp))
}

/// Refuse up front (422 naming the field) what the channel cannot carry.
fn check_capabilities(provider: Provider, input: &SendIn) -> Result<(), ApiError> {
    let caps = provider.capabilities();
    let name = provider.channel().as_str();
    let mut c = Checks::default();
    if let Some(t) = &input.text
        && provider == Provider::TwilioSms
        && channel_connector::twilio_sms::body_units(t) > caps.max_text_chars
    {
        c.fail(
            "text",
            format!(
                "must be at most {} characters on SMS (UTF-16 units: an emoji counts two); see POST /sms/segments",
                caps.max_text_chars
            ),
        );
    }
    if input.buttons.is_some() && caps.max_buttons == 0 {
        c.fail("buttons", format!("{name} has no reply buttons"));
    }
    if input.attachment_id.is_some() && !caps.images {
        c.fail("attachment_id", format!("{name} cannot carry images yet"));
    }
    if input.reaction.is_some() && !caps.reactions {
        c.fail("reaction", format!("{name} has no reactions"));
    }
    c.finish()
}

/// Claim `key` for a request hashing to `hash`: `Some(answer)` when it was already
/// answered (replay that), an error when it was used for a different request.
pub(crate) async fn claim(
    tx: &mut sqlx::PgConnection,
    principal: Principal,
    key: Option<&str>,
    hash: &str,
) -> Result<Option<(StatusCode, Value)>, ApiError> {
    let Some(k) = key else { return Ok(None) };
    match idempotency::claim(tx, principal.tenant_id, principal.user_id, k, hash).await? {
        Claim::Fresh => Ok(None),
        Claim::Replay { status, body } => {
            let status = StatusCode::from_u16(u16::try_from(status).unwrap_or(202))
                .unwrap_or(StatusCode::ACCEPTED);
            Ok(Some((status, body)))
        }
        Claim::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
        )),
    }
}

/// What to queue.
pub(crate) struct Queued<'a> {
    /// Parley's kind.
    pub kind: &'a str,
    /// Text to show and search.
    pub body: Option<String>,
    /// Structured content for the transcript.
    pub payload: Value,
    /// What to send, provider-neutral.
    pub content: Content,
    /// Attachments.
    pub attachment_ids: Vec<AttachmentId>,
    /// Our message it replies to.
    pub reply_to: Option<MessageId>,
    /// The provider id it replies to.
    pub reply_ctx: Option<&'a str>,
}

/// Store an outbound message (`queued`) and its outbox row, in the caller's transaction.
/// The message joins the contact's open interaction on the account's channel, if any.
pub(crate) async fn queue(
    tx: &mut sqlx::PgConnection,
    principal: Principal,
    contact: ContactId,
    account: &accounts::Account,
    address: &str,
    q: Queued<'_>,
) -> Result<messages::Message, ApiError> {
    let tenant = principal.tenant_id;
    let channel = account
        .provider()
        .map_or(Channel::Whatsapp, Provider::channel);
    let open_interaction =
        conversation_store::interactions::open_id(tx, tenant, contact, channel).await?;
    let message = messages::insert(
        tx,
        tenant,
        &NewMessage {
            contact_id: contact,
            interaction_id: open_interaction,
            channel,
            direction: Direction::Outbound,
            sender_user_id: Some(principal.user_id),
            kind: q.kind.to_owned(),
            body: q.body,
            payload: q.payload,
            channel_account_id: Some(account.id),
            provider_message_id: None,
            reply_to_id: q.reply_to,
            status: "queued".to_owned(),
            attachment_ids: q.attachment_ids,
        },
    )
    .await?
    .ok_or_else(|| ApiError::internal(&conversation_store::StoreError::NotFound("message")))?;
    let outbound = Outbound::new(address, q.reply_ctx, q.content);
    outbox::enqueue(tx, tenant, message.id, account.id, &outbound).await?;
    Ok(message)
}
