//! The contact directory, a contact's history and transcript, and read marks.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use conversation_store::{
    contacts::{self, Contact, Identity},
    interactions::{self, Interaction},
    messages::{self, TranscriptQuery},
};
use parley_core::{
    ContactId, IdentityId, MessageId, Principal, Role,
    channel::{Channel, Media},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::RequireRole as _,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath, ApiQuery},
    routes::messages::MessageOut,
    validate::Checks,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_contact, list_contacts))
        .routes(routes!(get_contact, patch_contact, delete_contact))
        .routes(routes!(export_contact))
        .routes(routes!(add_identity))
        .routes(routes!(remove_identity))
        .routes(routes!(contact_interactions))
        .routes(routes!(contact_messages))
        .routes(routes!(mark_read))
}

/// A contact's address on a channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityOut {
    /// Id.
    pub id: Uuid,
    /// `whatsapp`, `sms`, `webchat`, `messenger`, `twitter`, `facebook_public`, `twitter_public`.
    pub channel: String,
    /// Normalised address: E.164 for phone numbers.
    pub address: String,
    /// `unverified`, `connect_requested`, `connected`, `declined`, `invalid` or
    /// `opted_out` (the contact wrote STOP; nothing is sent until they write again).
    pub status: String,
    /// The provider's last error when `invalid` (the desktop shows a warning).
    pub last_error: Option<Value>,
    /// Phone numbers the phone metadata does not know for their country: why (the
    /// desktop shows a warning; the number is kept and used all the same, since
    /// providers deliver numbers the metadata has not caught up with).
    pub address_warning: Option<String>,
    /// When the contact last wrote from this address.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// WhatsApp only: when the 24-hour window for free-form messages ends (or ended);
    /// after it, only templates may be sent. Absent if the contact never wrote.
    pub window_expires_at: Option<DateTime<Utc>>,
    /// WhatsApp only: whether free-form messages may be sent now.
    pub window_open: Option<bool>,
    /// WhatsApp Connect evidence: when it was requested and by whom, and the contact's
    /// answer with the message that gave it.
    #[schema(value_type = Option<Object>)]
    pub consent: Option<Value>,
    /// Added.
    pub created_at: DateTime<Utc>,
}

impl From<Identity> for IdentityOut {
    fn from(i: Identity) -> Self {
        let wa = i.channel == "whatsapp";
        let expires = if wa { i.window_expires_at() } else { None };
        let address_warning = if i.address.starts_with('+') && (wa || i.channel == "sms") {
            parley_core::channel::phone_warning(&i.address)
        } else {
            None
        };
        Self {
            address_warning,
            window_expires_at: expires,
            window_open: wa.then(|| expires.is_some_and(|e| e > Utc::now())),
            consent: i.consent,
            id: i.id,
            channel: i.channel,
            address: i.address,
            status: i.status.as_str().to_owned(),
            last_error: i.last_error,
            last_inbound_at: i.last_inbound_at,
            created_at: i.created_at,
        }
    }
}

/// A contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactOut {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Free attributes: the fields templates auto-fill (e.g. `first_name`).
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// Addresses on channels.
    pub identities: Vec<IdentityOut>,
    /// Newest message time.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Contact> for ContactOut {
    fn from(c: Contact) -> Self {
        Self {
            id: c.id,
            name: c.name,
            attributes: c.attributes,
            identities: c.identities.into_iter().map(IdentityOut::from).collect(),
            last_activity_at: c.last_activity_at,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// An address to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityIn {
    /// The channel.
    #[schema(value_type = String, example = "whatsapp")]
    pub channel: Channel,
    /// Phone numbers in international form (normalised to E.164); other channels' ids or
    /// handles as they are.
    #[schema(example = "+44 7946 000123")]
    pub address: String,
}

/// A new contact.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContactIn {
    /// Name.
    pub name: String,
    /// Free attributes (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
    /// Addresses.
    #[serde(default)]
    pub identities: Vec<IdentityIn>,
}

/// Changes to a contact.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchContactIn {
    /// New name.
    pub name: Option<String>,
    /// Attributes merged into the existing ones; a `null` value removes that attribute.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// A page of contacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    /// Contacts ordered by name.
    pub items: Vec<ContactOut>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Directory search and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ContactQuery {
    /// Every word somewhere in the name or an attribute value, case and accents ignored
    /// (`gomez` finds "Gabi Gómez"); or part of an address; or a phone number in any
    /// format (`+44 7700 900123`, `07700 900123`, `0044 7700 900123`).
    pub q: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
}

/// A contact id in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ContactPath {
    /// The contact's id.
    pub contact_id: Uuid,
}

/// A contact's identity in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct IdentityPath {
    /// The contact's id.
    pub contact_id: Uuid,
    /// The identity's id.
    pub identity_id: Uuid,
}

/// An interaction in a contact's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct InteractionOut {
    /// Id.
    pub id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// The channel.
    pub channel: String,
    /// `queued`, `offered`, `active`, `ended` or `done`.
    pub state: String,
    /// The handling agent.
    pub agent_id: Option<Uuid>,
    /// `contact`, `agent` or `system`.
    pub ended_by: Option<String>,
    /// Wrap-up code.
    pub disposition: Option<String>,
    /// The queue it is routed through.
    pub queue_id: Option<Uuid>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Done.
    pub done_at: Option<DateTime<Utc>>,
    /// Seconds from start to accept.
    pub wait_seconds: Option<f64>,
    /// Seconds from accept to end.
    pub handle_seconds: Option<f64>,
    /// Seconds from end to done.
    pub wrap_up_seconds: Option<f64>,
}

impl From<Interaction> for InteractionOut {
    fn from(i: Interaction) -> Self {
        Self {
            wait_seconds: i.wait_secs(),
            handle_seconds: i.handle_secs(),
            wrap_up_seconds: i.wrap_up_secs(),
            id: i.id,
            contact_id: i.contact_id,
            channel: i.channel,
            state: i.state.as_str().to_owned(),
            agent_id: i.agent_id,
            ended_by: i.ended_by,
            disposition: i.disposition,
            queue_id: i.queue_id,
            started_at: i.created_at,
            accepted_at: i.accepted_at,
            ended_at: i.ended_at,
            done_at: i.done_at,
        }
    }
}

/// Transcript paging: open at the newest page, scroll back with `before`, forward with
/// `after`, or jump to a message with `around`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TranscriptParams {
    /// Messages older than this message id (a previous page's `prev_cursor`).
    pub before: Option<Uuid>,
    /// Messages newer than this message id (a previous page's `next_cursor`).
    pub after: Option<Uuid>,
    /// The page around this message id (a search hit).
    pub around: Option<Uuid>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `chat` (private) or `open_media` (public posts).
    #[param(value_type = Option<String>)]
    pub media: Option<Media>,
    /// Keyword search within this transcript (as `GET /messages/search` matches words).
    pub q: Option<String>,
}

/// A page of a transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct TranscriptOut {
    /// Messages in time order.
    pub items: Vec<MessageOut>,
    /// Pass as `before` for older messages; absent at the beginning.
    pub prev_cursor: Option<Uuid>,
    /// Pass as `after` for newer messages; absent at the end.
    pub next_cursor: Option<Uuid>,
}

/// A read mark.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadIn {
    /// The newest message the agent has seen.
    pub up_to_message_id: Uuid,
}

/// The unread count after marking.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnreadOut {
    /// The contact.
    pub contact_id: Uuid,
    /// Inbound messages not yet read.
    pub unread_count: i64,
}

fn check_attributes(c: &mut Checks, attrs: &Value, allow_null_values: bool) {
    match attrs.as_object() {
        None => c.fail("attributes", "must be a JSON object"),
        Some(map) => {
            for (k, v) in map {
                if k.is_empty() || k.chars().count() > 64 {
                    c.fail(
                        &format!("attributes.{k}"),
                        "attribute names are 1-64 characters",
                    );
                }
                if v.is_null() && !allow_null_values {
                    c.fail(&format!("attributes.{k}"), "must not be null");
                }
            }
            if attrs.to_string().len() > 16 * 1024 {
                c.fail("attributes", "must be at most 16 KiB of JSON");
            }
        }
    }
}

fn parse_identities(c: &mut Checks, identities: &[IdentityIn]) -> Vec<(Channel, String)> {
    identities
        .iter()
        .enumerate()
        .filter_map(
            |(i, ident)| match ident.channel.parse_address(&ident.address) {
                Ok(a) => Some((ident.channel, a)),
                Err(e) => {
                    c.fail(&format!("identities[{i}].address"), e.0);
                    None
                }
            },
        )
        .collect()
}

/// Create a contact, optionally with addresses.
#[utoipa::path(post, path = "/contacts", tag = "contacts", security(("bearer" = [])),
    request_body = CreateContactIn,
    responses(
        (status = 201, description = "Created", body = ContactOut),
        (status = 409, description = "An address belongs to another contact (`existing_id` names it)", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn create_contact(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<CreateContactIn>,
) -> Result<(StatusCode, axum::Json<ContactOut>), ApiError> {
    let mut c = Checks::default();
    let name = c.text("name", &input.name, 200);
    let attributes = input
        .attributes
        .unwrap_or_else(|| Value::Object(Default::default()));
    check_attributes(&mut c, &attributes, false);
    let identities = parse_identities(&mut c, &input.identities);
    c.finish()?;
    let mut tx = state.db.begin().await?;
    let contact = contacts::create_contact(
        &mut tx,
        principal.tenant_id,
        &name,
        &attributes,
        &identities,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(contact.into())))
}

/// Search and page through the directory.
#[utoipa::path(get, path = "/contacts", tag = "contacts", security(("bearer" = [])),
    params(ContactQuery),
    responses((status = 200, description = "A page of contacts", body = ContactPage), CommonErrors))]
pub async fn list_contacts(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ContactQuery>,
) -> Result<axum::Json<ContactPage>, ApiError> {
    let limit = page_limit(q.limit, 50, 200)?;
    let mut conn = state.db.acquire().await?;
    let search = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let mut items = contacts::list_contacts(
        &mut conn,
        principal.tenant_id,
        search,
        q.cursor.map(ContactId),
        limit + 1,
    )
    .await?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(axum::Json(ContactPage {
        next_cursor: if more {
            items.last().map(|c| c.id.to_string())
        } else {
            None
        },
        items: items.into_iter().map(ContactOut::from).collect(),
    }))
}

/// `limit` within 1..=max, defaulting.
pub(crate) fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let l = limit.unwrap_or(default);
    if (1..=max).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {max}"),
        ))
    }
}

async fn load_contact(state: &AppState, p: &Principal, id: Uuid) -> Result<Contact, ApiError> {
    let mut conn = state.db.acquire().await?;
    contacts::get_contact(&mut conn, p.tenant_id, ContactId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))
}

/// One contact with its addresses.
#[utoipa::path(get, path = "/contacts/{contact_id}", tag = "contacts", security(("bearer" = [])),
    params(ContactPath),
    responses(
        (status = 200, description = "The contact", body = ContactOut),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn get_contact(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
) -> Result<axum::Json<ContactOut>, ApiError> {
    Ok(axum::Json(
        load_contact(&state, &principal, path.contact_id)
            .await?
            .into(),
    ))
}

/// Rename a contact or change its attributes.
#[utoipa::path(patch, path = "/contacts/{contact_id}", tag = "contacts", security(("bearer" = [])),
    params(ContactPath),
    request_body = PatchContactIn,
    responses(
        (status = 200, description = "The changed contact", body = ContactOut),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn patch_contact(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
    ApiJson(input): ApiJson<PatchContactIn>,
) -> Result<axum::Json<ContactOut>, ApiError> {
    let mut c = Checks::default();
    let name = input.name.as_deref().map(|n| c.text("name", n, 200));
    if let Some(a) = &input.attributes {
        check_attributes(&mut c, a, true);
    }
    c.finish()?;
    let mut conn = state.db.acquire().await?;
    let contact = contacts::update_contact(
        &mut conn,
        principal.tenant_id,
        ContactId(path.contact_id),
        name.as_deref(),
        input.attributes.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(axum::Json(contact.into()))
}

/// Delete a contact with its whole history (supervisor).
#[utoipa::path(delete, path = "/contacts/{contact_id}", tag = "contacts", security(("bearer" = [])),
    params(ContactPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::SupervisorOnly, CommonErrors,
    ))]
pub async fn delete_contact(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Supervisor)?;
    let mut tx = state.db.begin().await?;
    if contacts::delete_contact(&mut tx, principal.tenant_id, ContactId(path.contact_id)).await? {
        tx.commit().await?;
        // This process's feed may hold the erased text: sockets read from the database.
        state.feed.invalidate();
        tracing::info!(contact = %path.contact_id, by = %principal.user_id, "contact erased");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("contact"))
    }
}

/// Everything Parley holds about one contact (a data-subject access request).
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactExportOut {
    /// When the export was made.
    pub exported_at: DateTime<Utc>,
    /// The contact with its addresses and consent evidence.
    pub contact: ContactOut,
    /// Every interaction, newest first.
    pub interactions: Vec<InteractionOut>,
    /// Every message, oldest first; files are listed on their messages and download from
    /// `GET /api/v1/attachments/{id}`.
    pub messages: Vec<MessageOut>,
}

/// Export one contact's data (GDPR access request; supervisors): the contact, their
/// addresses and consent, every interaction and every message with its files.
#[utoipa::path(get, path = "/contacts/{contact_id}/export", tag = "contacts",
    security(("bearer" = [])),
    params(ContactPath),
    responses(
        (status = 200, description = "The contact's data", body = ContactExportOut),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::SupervisorOnly, CommonErrors,
    ))]
pub async fn export_contact(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
) -> Result<axum::Json<ContactExportOut>, ApiError> {
    principal.require(Role::Supervisor)?;
    let id = ContactId(path.contact_id);
    // One snapshot for the whole export.
    let mut tx = state.db.begin().await?;
    conversation_store::snapshot_read_only(&mut tx).await?;
    let contact = contacts::get_contact(&mut tx, principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let interactions = interactions::list_for_contact(&mut tx, principal.tenant_id, id).await?;
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = messages::transcript(
            &mut tx,
            principal.tenant_id,
            id,
            &TranscriptQuery {
                before,
                after: None,
                around: None,
                limit: 200,
                media: None,
                q: None,
            },
        )
        .await?;
        before = page.prev_cursor.map(MessageId);
        pages.push(page.items);
        if before.is_none() {
            break;
        }
    }
    tx.commit().await?;
    pages.reverse();
    tracing::info!(contact = %path.contact_id, by = %principal.user_id, "contact exported");
    Ok(axum::Json(ContactExportOut {
        exported_at: Utc::now(),
        contact: contact.into(),
        interactions: interactions.into_iter().map(InteractionOut::from).collect(),
        messages: pages.into_iter().flatten().map(MessageOut::from).collect(),
    }))
}

/// Add an address (a phone number is normalised to E.164; one the phone metadata does not
/// know is kept with an `address_warning`).
#[utoipa::path(post, path = "/contacts/{contact_id}/identities", tag = "contacts", security(("bearer" = [])),
    params(ContactPath),
    request_body = IdentityIn,
    responses(
        (status = 201, description = "Added", body = IdentityOut),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The address belongs to a contact (`existing_id` names it)", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn add_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
    ApiJson(input): ApiJson<IdentityIn>,
) -> Result<(StatusCode, axum::Json<IdentityOut>), ApiError> {
    let address = input
        .channel
        .parse_address(&input.address)
        .map_err(|e| ApiError::invalid_field("address", e.0))?;
    let mut tx = state.db.begin().await?;
    if !contacts::contact_exists(&mut tx, principal.tenant_id, ContactId(path.contact_id)).await? {
        return Err(ApiError::not_found("contact"));
    }
    let identity = contacts::add_identity(
        &mut tx,
        principal.tenant_id,
        ContactId(path.contact_id),
        input.channel,
        &address,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(identity.into())))
}

/// Remove an address from a contact.
#[utoipa::path(delete, path = "/contacts/{contact_id}/identities/{identity_id}", tag = "contacts",
    security(("bearer" = [])),
    params(IdentityPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such identity on this contact", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn remove_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<IdentityPath>,
) -> Result<StatusCode, ApiError> {
    let mut conn = state.db.acquire().await?;
    if contacts::remove_identity(
        &mut conn,
        principal.tenant_id,
        ContactId(path.contact_id),
        IdentityId(path.identity_id),
    )
    .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("identity"))
    }
}

/// Every interaction with the contact, newest first, with timings.
#[utoipa::path(get, path = "/contacts/{contact_id}/interactions", tag = "contacts",
    security(("bearer" = [])),
    params(ContactPath),
    responses(
        (status = 200, description = "The contact's interactions", body = Vec<InteractionOut>),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn contact_interactions(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
) -> Result<axum::Json<Vec<InteractionOut>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let id = ContactId(path.contact_id);
    if !contacts::contact_exists(&mut conn, principal.tenant_id, id).await? {
        return Err(ApiError::not_found("contact"));
    }
    let list = interactions::list_for_contact(&mut conn, principal.tenant_id, id).await?;
    Ok(axum::Json(
        list.into_iter().map(InteractionOut::from).collect(),
    ))
}

/// The contact's transcript: every message across interactions and channels, in time
/// order, newest page first.
#[utoipa::path(get, path = "/contacts/{contact_id}/messages", tag = "contacts",
    security(("bearer" = [])),
    params(ContactPath, TranscriptParams),
    responses(
        (status = 200, description = "A page of the transcript", body = TranscriptOut),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn contact_messages(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
    ApiQuery(p): ApiQuery<TranscriptParams>,
) -> Result<axum::Json<TranscriptOut>, ApiError> {
    let limit = page_limit(p.limit, 50, 200)?;
    if [p.before.is_some(), p.after.is_some(), p.around.is_some()]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(ApiError::invalid_field(
            "before",
            "use at most one of before, after and around",
        ));
    }
    let id = ContactId(path.contact_id);
    let mut tx = state.db.begin().await?;
    if !contacts::contact_exists(&mut tx, principal.tenant_id, id).await? {
        return Err(ApiError::not_found("contact"));
    }
    let page = messages::transcript(
        &mut tx,
        principal.tenant_id,
        id,
        &TranscriptQuery {
            before: p.before.map(MessageId),
            after: p.after.map(MessageId),
            around: p.around.map(MessageId),
            limit,
            media: p.media,
            q: p.q.filter(|q| !q.trim().is_empty()),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(TranscriptOut {
        items: page.items.into_iter().map(MessageOut::from).collect(),
        prev_cursor: page.prev_cursor,
        next_cursor: page.next_cursor,
    }))
}

/// Mark the contact's messages read up to a message; other desktops get a
/// `conversation.unread` event.
#[utoipa::path(post, path = "/contacts/{contact_id}/read", tag = "contacts",
    security(("bearer" = [])),
    params(ContactPath),
    request_body = ReadIn,
    responses(
        (status = 200, description = "The new unread count", body = UnreadOut),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn mark_read(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
    ApiJson(input): ApiJson<ReadIn>,
) -> Result<axum::Json<UnreadOut>, ApiError> {
    let id = ContactId(path.contact_id);
    let mut tx = state.db.begin().await?;
    if !contacts::contact_exists(&mut tx, principal.tenant_id, id).await? {
        return Err(ApiError::not_found("contact"));
    }
    let unread = messages::mark_read(
        &mut tx,
        principal.tenant_id,
        id,
        MessageId(input.up_to_message_id),
        principal.user_id,
    )
    .await?;
    let receipt = read_receipt_target(&mut tx, &principal, input.up_to_message_id).await?;
    tx.commit().await?;
    // Blue ticks at the provider, when the account asks for them: best effort, after the
    // commit, never inside the transaction.
    if let Some((account, secrets, wamid)) = receipt {
        let http = state.provider_http.clone();
        tokio::spawn(async move {
            channel_connector::whatsapp::client::mark_read(&http, &account, &secrets, &wamid).await;
        });
    }
    Ok(axum::Json(UnreadOut {
        contact_id: path.contact_id,
        unread_count: unread,
    }))
}

async fn read_receipt_target(
    conn: &mut sqlx::PgConnection,
    p: &Principal,
    up_to: Uuid,
) -> Result<
    Option<(
        channel_connector::accounts::Account,
        channel_connector::accounts::Secrets,
        String,
    )>,
    ApiError,
> {
    let Some(m) = messages::get(conn, p.tenant_id, MessageId(up_to)).await? else {
        return Ok(None);
    };
    let (Some(account_id), Some(wamid)) = (
        messages::channel_account_of(conn, p.tenant_id, MessageId(m.id)).await?,
        m.provider_message_id
            .filter(|_| m.direction == "inbound" && m.channel == "whatsapp"),
    ) else {
        return Ok(None);
    };
    let Some(account) = channel_connector::accounts::get(conn, p.tenant_id, account_id).await?
    else {
        return Ok(None);
    };
    if !account.mark_read {
        return Ok(None);
    }
    let Some(secrets) = channel_connector::accounts::secrets(conn, p.tenant_id, account_id).await?
    else {
        return Ok(None);
    };
    Ok(Some((account, secrets, wamid)))
}
