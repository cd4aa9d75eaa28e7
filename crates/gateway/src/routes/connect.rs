//! The agent desktop's WhatsApp channel actions: Connect (ask for opt-in with a
//! template), Validate (is the number reachable now, and why), and creating an outbound
//! WhatsApp interaction.

use axum::{extract::State, http::StatusCode};
use parley_core::{ContactId, IdentityId, Principal, channel::Channel};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    },
    services::channel_actions,
};

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
    let (identity, message) = channel_actions::connect(
        &state,
        principal,
        ContactId(p.contact_id),
        IdentityId(p.identity_id),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ConnectOut {
            identity: identity.into(),
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
    let v = channel_actions::validate(
        &state,
        principal.tenant_id,
        ContactId(p.contact_id),
        IdentityId(p.identity_id),
    )
    .await?;
    Ok(axum::Json(ValidateOut {
        identity: v.identity.into(),
        status: v.status.as_str().to_owned(),
        reason: v.reason,
        evidence: v.evidence,
        advice: v.advice,
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
    let (interaction, created) = channel_actions::create_interaction(
        &state,
        principal,
        ContactId(p.contact_id),
        input.channel,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(interaction.into())))
}
