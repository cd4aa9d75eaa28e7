//! Sending a notification template to a contact: the template filled from the contact's
//! data and the agent's inputs, checked (approved, known to the provider, every field
//! filled, the header image, consent), and queued like any message. Also the helpers
//! rendering shares: the fill context and a template's parsed definition.

use parley_core::state::IdentityStatus;
use std::collections::BTreeMap;

use axum::http::StatusCode;
use channel_connector::accounts;
use chrono::Utc;
use conversation_store::{attachments, contacts, idempotency};
use notification_templates::{
    Problem,
    fill::{self, Bindings, Context},
    model::{self, Definition, Header},
    store::{self, Template},
};
use parley_core::{AttachmentId, ContactId, Principal};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    app::AppState,
    error::{ApiError, FieldError},
    routes::messages::MessageOut,
    services::outbound::{Queued, claim, queue},
};

/// The problems of a template or its inputs, as one 422 naming every field.
pub fn problems(p: Vec<Problem>) -> ApiError {
    ApiError::invalid_fields(
        p.into_iter()
            .map(|p| FieldError {
                field: p.field,
                message: p.message,
            })
            .collect(),
    )
}

/// The fill context for `contact` as `principal` sees it (and the contact).
pub async fn context(
    conn: &mut sqlx::PgConnection,
    principal: Principal,
    contact: Uuid,
) -> Result<(Context, contacts::Contact), ApiError> {
    let c = contacts::get_contact(conn, principal.tenant_id, ContactId(contact))
        .await?
        .ok_or_else(|| ApiError::invalid_field("contact_id", "no such contact in this tenant"))?;
    let agent: String =
        conversation_store::accounts::display_name(conn, principal.tenant_id, principal.user_id)
            .await?
            .unwrap_or_default();
    let phone = c
        .identities
        .iter()
        .filter(|i| i.channel == "whatsapp")
        .max_by_key(|i| i.last_inbound_at)
        .map(|i| i.address.clone());
    Ok((
        Context {
            contact_name: c.name.clone(),
            contact_attributes: c.attributes.clone(),
            contact_phone: phone,
            agent_name: agent,
            now: Utc::now(),
        },
        c,
    ))
}

/// A template's parsed definition (its problems as a 422).
pub fn definition(t: &Template) -> Result<Definition, ApiError> {
    model::parse(&t.components, false).map_err(problems)
}

/// A notification to send.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationIn {
    /// An approved template.
    pub template_id: Uuid,
    /// Values for fields the data does not fill, by field key.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// An uploaded image for a template with an image header.
    pub header_image_attachment_id: Option<Uuid>,
}

/// Queue notification `input` to contact `to` (see the module's documentation); the
/// answer to give (a replay of the first answer for a retried `key`).
pub async fn send(
    state: &AppState,
    principal: Principal,
    to: ContactId,
    key: Option<String>,
    input: NotificationIn,
) -> Result<(StatusCode, Value), ApiError> {
    let hash = hex::encode(Sha256::digest(
        format!(
            "notification:{}:{}",
            to.0,
            serde_json::to_string(&input).unwrap_or_default()
        )
        .as_bytes(),
    ));
    let tenant = principal.tenant_id;
    let mut tx = state.db.begin().await?;
    if let Some((status, body)) = claim(&mut tx, principal, key.as_deref(), &hash).await? {
        return Ok((status, body));
    }
    if !contacts::lock_for_write(&mut tx, tenant, to).await? {
        return Err(ApiError::not_found("contact"));
    }
    let t = store::get(&mut tx, tenant, input.template_id)
        .await?
        .ok_or_else(|| ApiError::invalid_field("template_id", "no such template in this tenant"))?;
    if t.status != "approved" {
        return Err(ApiError::invalid_field(
            "template_id",
            format!(
                "the template is {}; only approved templates can be sent",
                t.status
            ),
        ));
    }
    if t.known_to_provider == Some(false) {
        return Err(ApiError::invalid_field(
            "template_id",
            format!(
                "the provider does not know template {} ({}); create it there and sync",
                t.name, t.language
            ),
        ));
    }
    let def = definition(&t)?;
    let mut bad = fill::check_inputs(&def.fields, &input.fields);
    let (ctx, contact) = context(&mut tx, principal, to.0).await?;
    // The address they last wrote from, else a connected one; never an invalid one.
    let ident = contact
        .identities
        .iter()
        .filter(|i| i.channel == "whatsapp" && i.status != IdentityStatus::Invalid)
        .max_by_key(|i| (i.last_inbound_at, i.status == IdentityStatus::Connected))
        .cloned();
    let Some(ident) = ident else {
        return Err(ApiError::invalid_field(
            "contact_id",
            "the contact has no usable WhatsApp address; add one and Connect it first",
        ));
    };
    // A template is business-initiated: it needs the contact's opt-in (a Connect they
    // said yes to, or their own message within the 24-hour window), and never goes to
    // an address that opted out or declined.
    let window_open = ident
        .window_expires_at()
        .is_some_and(|e| e > chrono::Utc::now());
    crate::services::consent::check_consent(ident.status, window_open, true)?;
    let b: Bindings = serde_json::from_value(t.bindings.clone()).unwrap_or_default();
    let rendered = fill::render(&def, &b, &input.fields, &ctx);
    for k in &rendered.blank {
        bad.push(Problem::new(
            format!("fields.{k}"),
            "is blank; give a value",
        ));
    }
    let mut attachment_ids = Vec::new();
    match (&def.header, input.header_image_attachment_id) {
        (Header::Media(m), _) if m != "IMAGE" => bad.push(Problem::new(
            "template_id",
            format!("templates with a {m} header cannot be sent yet"),
        )),
        (Header::Media(_), None) => bad.push(Problem::new(
            "header_image_attachment_id",
            "the template has an image header; upload an image and give its id",
        )),
        (Header::Media(_), Some(a)) => {
            match attachments::get(&mut tx, tenant, AttachmentId(a)).await? {
                None => bad.push(Problem::new(
                    "header_image_attachment_id",
                    "no such attachment in this tenant",
                )),
                Some(att) if !matches!(att.mime_type.as_str(), "image/jpeg" | "image/png") => bad
                    .push(Problem::new(
                        "header_image_attachment_id",
                        "must be a JPEG or PNG image",
                    )),
                Some(att) if att.size > 5 * 1024 * 1024 => bad.push(Problem::new(
                    "header_image_attachment_id",
                    "WhatsApp images are at most 5 MB",
                )),
                Some(_) => attachment_ids.push(AttachmentId(a)),
            }
        }
        (_, Some(_)) => bad.push(Problem::new(
            "header_image_attachment_id",
            "the template has no image header",
        )),
        _ => {}
    }
    if !bad.is_empty() {
        return Err(problems(bad));
    }
    let account = accounts::for_contact(&mut tx, tenant, to.0)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field("template_id", "the tenant has no WhatsApp channel account")
        })?;
    let content = parley_core::outbound::Content::Template(fill::template_content(
        &def,
        &rendered,
        &t.name,
        &t.language,
        input.header_image_attachment_id,
    ));
    let fields: Vec<Value> = rendered
        .fields
        .iter()
        .map(|f| json!({"key": f.key, "value": f.value, "source": f.source}))
        .collect();
    let message = queue(
        &mut tx,
        principal,
        to,
        &account,
        &ident.address,
        Queued {
            kind: "template",
            body: Some(rendered.text()),
            payload: json!({
                "template_id": t.id, "name": t.name, "language": t.language,
                "header_text": rendered.header_text, "header_image_attachment_id": input.header_image_attachment_id,
                "footer": rendered.footer, "buttons": rendered.buttons, "fields": fields,
            }),
            content,
            attachment_ids,
            reply_to: None,
            reply_ctx: None,
        },
    )
    .await?;
    let out = serde_json::to_value(MessageOut::from(message)).unwrap_or_default();
    if let Some(k) = &key {
        idempotency::finish(&mut tx, tenant, principal.user_id, k, 202, &out).await?;
    }
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, out))
}
