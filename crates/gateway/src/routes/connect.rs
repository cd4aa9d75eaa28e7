//! The agent desktop's WhatsApp channel actions: Connect (ask for opt-in with a
//! template), Validate (is the number reachable now, and why), and creating an outbound
//! WhatsApp interaction.

use axum::{extract::State, http::StatusCode};
use channel_connector::{
    accounts,
    providers::{FailureEffect, Provider},
    whatsapp::request,
};
use chrono::{Duration, Utc};
use conversation_store::{
    contacts::{self, Identity},
    interactions,
    messages::Message,
};
use parley_core::outbound::{Content, TemplateButton, TemplateContent};
use parley_core::{ContactId, IdentityId, InteractionId, Principal, TenantId, channel::Channel};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath},
    routes::{
        contacts::{ContactPath, IdentityOut, InteractionOut},
        messages::MessageOut,
        outbound::{Queued, queue},
    },
};

use crate::services::consent::check_consent;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(connect_identity))
        .routes(routes!(validate_identity))
        .routes(routes!(create_interaction))
}

/// A contact's identity in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct IdentityActionPath {
    /// The contact's id.
    pub contact_id: Uuid,
    /// The identity's id.
    pub identity_id: Uuid,
}

/// What Connect did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectOut {
    /// The identity, now `connect_requested`.
    pub identity: IdentityOut,
    /// The opt-in request message (a template with "Yes" / "No" quick replies).
    pub message: MessageOut,
}

/// Validate's verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidateOut {
    /// The identity with its new status.
    pub identity: IdentityOut,
    /// `connected` (recent evidence), `invalid` (the last send was undeliverable) or
    /// `unverified` (no evidence either way).
    pub status: String,
    /// Why, in words.
    pub reason: String,
    /// The evidence: the latest inbound message, delivered/read status, or error.
    #[schema(value_type = Object)]
    pub evidence: Value,
    /// What to do next, when there is something to do.
    pub advice: Option<String>,
}

/// A new interaction the agent starts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInteractionIn {
    /// `whatsapp`.
    #[schema(value_type = String, example = "whatsapp")]
    pub channel: Channel,
}

async fn whatsapp_identity(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    contact: Uuid,
    identity: Uuid,
) -> Result<Identity, ApiError> {
    let c = contacts::get_contact(conn, tenant, ContactId(contact))
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let ident = c
        .identities
        .into_iter()
        .find(|i| i.id == identity)
        .ok_or_else(|| ApiError::not_found("identity"))?;
    if ident.channel != "whatsapp" {
        return Err(ApiError::invalid_field(
            "identity_id",
            "is not a WhatsApp address",
        ));
    }
    Ok(ident)
}

/// Ask the contact to connect on WhatsApp: sends the account's opt-in template with
/// "Yes" / "No" quick replies (allowed outside the 24-hour window) and sets the identity
/// `connect_requested`. The contact's answer sets it `connected` (with the consent kept as
/// evidence) or `declined`.
#[utoipa::path(post, path = "/contacts/{contact_id}/identities/{identity_id}/connect", tag = "contacts",
    security(("bearer" = [])),
    params(IdentityActionPath),
    responses(
        (status = 202, description = "The request is queued", body = ConnectOut),
        (status = 404, description = "No such contact or identity", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn connect_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<IdentityActionPath>,
) -> Result<(StatusCode, axum::Json<ConnectOut>), ApiError> {
    let tenant = principal.tenant_id;
    let mut tx = state.db.begin().await?;
    // Like every send: the contact first (see `contacts::lock_for_write`).
    contacts::lock_for_write(&mut tx, tenant, ContactId(p.contact_id)).await?;
    let ident = whatsapp_identity(&mut tx, tenant, p.contact_id, p.identity_id).await?;
    // A contact who said no (or STOP) is not asked again until they write.
    if matches!(ident.status.as_str(), "declined" | "opted_out") {
        check_consent(&ident.status, false, true)?;
    }
    let account = accounts::for_contact(&mut tx, tenant, p.contact_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field("channel", "the tenant has no WhatsApp channel account")
        })?;
    let content = Content::Template(TemplateContent {
        name: account.optin_template_name.clone(),
        language: account.optin_template_language.clone(),
        header: None,
        body: vec![],
        buttons: [request::CONNECT_YES, request::CONNECT_NO]
            .into_iter()
            .enumerate()
            .map(|(index, payload)| TemplateButton::QuickReply {
                index,
                payload: payload.to_owned(),
            })
            .collect(),
    });
    let message: Message = queue(
        &mut tx,
        principal,
        ContactId(p.contact_id),
        &account,
        &ident.address,
        Queued {
            kind: "template",
            body: Some(format!("Connect request ({})", account.optin_template_name)),
            payload: json!({ "template": account.optin_template_name, "purpose": "connect" }),
            content,
            attachment_ids: vec![],
            reply_to: None,
            reply_ctx: None,
        },
    )
    .await?;
    let consent = json!({ "requested_at": Utc::now(), "requested_by": principal.user_id, "request_message_id": message.id });
    let ident = contacts::set_identity_status(
        &mut tx,
        tenant,
        IdentityId(ident.id),
        "connect_requested",
        None,
        Some(&consent),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("identity"))?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ConnectOut {
            identity: ident.into(),
            message: message.into(),
        }),
    ))
}

/// Is this number reachable on WhatsApp now? The Cloud API has no number check, so this
/// judges from evidence: a message from the contact or a delivered/read status within the
/// account's evidence period → `connected`; the last send failed with 131026 →
/// `invalid`; otherwise `unverified`, with advice to send a template.
#[utoipa::path(post, path = "/contacts/{contact_id}/identities/{identity_id}/validate", tag = "contacts",
    security(("bearer" = [])),
    params(IdentityActionPath),
    responses(
        (status = 200, description = "The verdict", body = ValidateOut),
        (status = 404, description = "No such contact or identity", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn validate_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<IdentityActionPath>,
) -> Result<axum::Json<ValidateOut>, ApiError> {
    let tenant = principal.tenant_id;
    let mut tx = state.db.begin().await?;
    let ident = whatsapp_identity(&mut tx, tenant, p.contact_id, p.identity_id).await?;
    let account = accounts::for_contact(&mut tx, tenant, p.contact_id).await?;
    let days = account.as_ref().map_or(30, |a| a.evidence_days);
    let check = match &account {
        Some(a) => match &a.contacts_check_url {
            Some(url) => accounts::secrets(&mut tx, tenant, a.id)
                .await?
                .map(|s| (url.clone(), s)),
            None => None,
        },
        None => None,
    };
    let since = Utc::now() - Duration::days(i64::from(days));
    let last_send =
        channel_connector::outbox::last_send_to(&mut tx, tenant, p.contact_id, &ident.address)
            .await?;
    // The evidence is read; the provider is asked (if at all) with no transaction open,
    // and the verdict is written in a transaction of its own.
    tx.commit().await?;
    let recent_inbound = ident.last_inbound_at.filter(|t| *t >= since);
    let recent_delivery = last_send.as_ref().filter(|s| {
        matches!(s.status.as_str(), "delivered" | "read" | "played") && s.created_at >= since
    });
    let undeliverable = last_send.as_ref().filter(|s| {
        s.status == "failed"
            && s.status_error.as_ref().is_some_and(|e| {
                Provider::WhatsappCloud.failure_effect(e) == FailureEffect::AddressUnreachable
            })
    });
    // The provider's contacts check, when it has one.
    let checked = match (
        &check,
        recent_inbound.is_none() && recent_delivery.is_none(),
    ) {
        (Some((url, secrets)), true) if !parley_core::channel::is_bsuid(&ident.address) => {
            channel_connector::whatsapp::client::contacts_check(
                &state.provider_http,
                url,
                secrets,
                &ident.address,
            )
            .await
        }
        _ => None,
    };
    let (status, reason, evidence, advice) = if let Some(at) = recent_inbound {
        (
            "connected",
            format!("the contact wrote from this number at {at}"),
            json!({"last_inbound_at": at}),
            None,
        )
    } else if let Some(s) = recent_delivery {
        (
            "connected",
            format!(
                "a message to this number was {} at {}",
                s.status, s.created_at
            ),
            json!({"last_send_status": s.status, "sent_at": s.created_at}),
            None,
        )
    } else if let Some(valid) = checked {
        if valid {
            (
                "connected",
                "the provider's contacts check says this number is on WhatsApp".to_owned(),
                json!({"contacts_check": "valid"}),
                None,
            )
        } else {
            (
                "invalid",
                "the provider's contacts check says this number is not on WhatsApp".to_owned(),
                json!({"contacts_check": "invalid"}),
                Some("check the number with the contact, or use another channel".to_owned()),
            )
        }
    } else if let Some(s) = undeliverable {
        (
            "invalid",
            "the last message to this number was undeliverable (131026): it is probably not on WhatsApp".to_owned(),
            json!({"last_send_error": s.status_error, "sent_at": s.created_at}),
            Some("check the number with the contact, or use another channel".to_owned()),
        )
    } else {
        (
            "unverified",
            format!("no message from or delivered to this number in the last {days} days"),
            json!({}),
            Some(
                "send the Connect template; a delivered or answered template proves the number"
                    .to_owned(),
            ),
        )
    };
    // Validate never overrides the contact's own answer to Connect (read again: it may
    // have come while the provider was asked).
    let mut tx = state.db.begin().await?;
    let ident = whatsapp_identity(&mut tx, tenant, p.contact_id, p.identity_id).await?;
    let keep =
        matches!(ident.status.as_str(), "declined" | "connect_requested") && status != "invalid";
    let ident = if keep || ident.status == status {
        ident
    } else {
        contacts::set_identity_status(
            &mut tx,
            tenant,
            IdentityId(ident.id),
            status,
            undeliverable
                .and_then(|s| s.status_error.clone())
                .or_else(|| {
                    (checked == Some(false))
                        .then(|| json!({"code": "contacts_check", "title": "not a WhatsApp user"}))
                })
                .as_ref(),
            None,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("identity"))?
    };
    tx.commit().await?;
    Ok(axum::Json(ValidateOut {
        identity: ident.into(),
        status: status.to_owned(),
        reason,
        evidence,
        advice,
    }))
}

/// Start a WhatsApp interaction with the contact (Create WhatsApp Interaction): it is
/// active and assigned to the caller (`interaction.accepted`). When one is already open
/// and waiting (queued, offered to someone, or ended), the caller takes it over (a
/// pending offer is withdrawn); another agent's active one is refused (403).
#[utoipa::path(post, path = "/contacts/{contact_id}/interactions", tag = "contacts",
    security(("bearer" = [])),
    params(ContactPath),
    request_body = CreateInteractionIn,
    responses(
        (status = 201, description = "Created", body = InteractionOut),
        (status = 200, description = "An interaction was already open on this channel: now the caller's", body = InteractionOut),
        (status = 403, description = "Another agent is handling the open interaction", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such contact", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn create_interaction(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<ContactPath>,
    ApiJson(input): ApiJson<CreateInteractionIn>,
) -> Result<(StatusCode, axum::Json<InteractionOut>), ApiError> {
    if input.channel != Channel::Whatsapp {
        return Err(ApiError::invalid_field(
            "channel",
            "only whatsapp interactions can be started today",
        ));
    }
    let tenant = principal.tenant_id;
    let mut tx = state.db.begin().await?;
    let contact = contacts::get_contact(&mut tx, tenant, ContactId(p.contact_id))
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let ident = contact
        .identities
        .iter()
        .filter(|i| i.channel == "whatsapp" && i.status != "invalid" && i.status != "declined")
        .max_by_key(|i| i.last_inbound_at)
        .ok_or_else(|| {
            ApiError::invalid_field("channel", "the contact has no usable WhatsApp address")
        })?;
    let account = accounts::for_contact(&mut tx, tenant, p.contact_id).await?;
    let (interaction, created) = interactions::open_or_create(
        &mut tx,
        tenant,
        ContactId(p.contact_id),
        Channel::Whatsapp,
        Some(IdentityId(ident.id)),
        account.map(|a| a.id),
    )
    .await?;
    let interaction = if created {
        interaction_router::make_active(
            &mut tx,
            tenant,
            InteractionId(interaction.id),
            principal.user_id,
        )
        .await?
    } else {
        // Open already (say the contact answered a Connect request and it is waiting to
        // be routed): the caller takes it, unless another agent is handling it.
        interaction_router::take_over(
            &mut tx,
            tenant,
            principal.user_id,
            InteractionId(interaction.id),
        )
        .await?
    };
    tx.commit().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(interaction.into())))
}
