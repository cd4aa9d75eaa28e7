//! Notification templates (CRUD, sync from the provider, render, send) and standard
//! responses.

use std::collections::BTreeMap;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use channel_connector::{accounts, whatsapp::client};
use chrono::{DateTime, Utc};
use notification_templates::{
    Problem,
    fill::{self, Bindings},
    model::{self, Definition},
    store::{self, ResponseSpec, StandardResponse, StoreError, Synced, Template, TemplateSpec},
};
use parley_core::{ContactId, Principal, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::RequireRole as _,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath, ApiQuery},
    routes::{
        channel_accounts::AccountPath, contacts::ContactPath, messages::MessageOut,
        outbound::idempotency_key,
    },
    services::notifications::{self, NotificationIn, context, definition, problems},
    validate::Checks,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, patch_template, delete_template))
        .routes(routes!(render_template))
        .routes(routes!(send_notification))
        .routes(routes!(sync_templates))
        .routes(routes!(list_responses, create_response))
        .routes(routes!(get_response, patch_response, delete_response))
        .routes(routes!(render_response))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Taken { field } => {
                ApiError::conflict(field, format!("this {field} is already used"))
            }
            StoreError::Database(d) => d.into(),
        }
    }
}

/// A field of a template or standard response.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldOut {
    /// How requests name it: `1`, `first_name`, `header.1`, `button.2`.
    pub key: String,
    /// `header`, `body` or `button`.
    pub component: String,
    /// The template's example value.
    pub example: Option<String>,
    /// The data path it is bound to.
    pub bind: Option<String>,
    /// Its default.
    pub default: Option<String>,
}

fn field_outs(def: Option<&Definition>, bindings: &Value) -> Vec<FieldOut> {
    let b: Bindings = serde_json::from_value(bindings.clone()).unwrap_or_default();
    def.map(|d| {
        d.fields
            .iter()
            .map(|f| FieldOut {
                key: f.key.clone(),
                component: match f.location {
                    model::Location::Header => "header",
                    model::Location::Body => "body",
                    model::Location::Button(_) => "button",
                }
                .to_owned(),
                example: f.example.clone(),
                bind: b.get(&f.key).and_then(|x| x.bind.clone()),
                default: b.get(&f.key).and_then(|x| x.default.clone()),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// A template.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateOut {
    /// Id.
    pub id: Uuid,
    /// Name (lowercase letters, digits, `_`).
    pub name: String,
    /// Language code (`en`, `pt_BR`).
    pub language: String,
    /// `marketing`, `utility` or `authentication`.
    pub category: String,
    /// `approved`, `pending`, `rejected`, `paused` or `disabled`; only approved can be sent.
    pub status: String,
    /// The provider's own status word from the last sync.
    pub provider_status: Option<String>,
    /// Why the provider rejected it.
    pub rejected_reason: Option<String>,
    /// False when the last sync did not find it at the provider (it cannot be sent).
    pub known_to_provider: Option<bool>,
    /// The channel account it was synced from.
    pub channel_account_id: Option<Uuid>,
    /// WhatsApp components: `HEADER`, `BODY`, `FOOTER`, `BUTTONS`.
    #[schema(value_type = Vec<Object>)]
    pub components: Value,
    /// Field key → `{bind, default}`.
    #[schema(value_type = Object)]
    pub bindings: Value,
    /// The template's fields.
    pub fields: Vec<FieldOut>,
    /// Last synced.
    pub synced_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Template> for TemplateOut {
    fn from(t: Template) -> Self {
        let def = model::parse(&t.components, false).ok();
        Self {
            fields: field_outs(def.as_ref(), &t.bindings),
            id: t.id,
            name: t.name,
            language: t.language,
            category: t.category,
            status: t.status,
            provider_status: t.provider_status,
            rejected_reason: t.rejected_reason,
            known_to_provider: t.known_to_provider,
            channel_account_id: t.channel_account_id,
            components: t.components,
            bindings: t.bindings,
            synced_at: t.synced_at,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A template as written (admins and supervisors).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateIn {
    /// Name: lowercase letters, digits and `_`, at most 512.
    pub name: String,
    /// Language code, e.g. `en` or `pt_BR`.
    pub language: String,
    /// `marketing`, `utility` or `authentication`.
    pub category: String,
    /// Default `pending`.
    pub status: Option<String>,
    /// WhatsApp components (types and formats in any case).
    #[schema(value_type = Vec<Object>)]
    pub components: Value,
    /// Field key → `{bind: "contact.name", default: "there"}`.
    #[schema(value_type = Option<Object>)]
    pub bindings: Option<Value>,
}

/// A change to a template; what is left out stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    /// Name.
    pub name: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Components.
    #[schema(value_type = Option<Vec<Object>>)]
    pub components: Option<Value>,
    /// Bindings.
    #[schema(value_type = Option<Object>)]
    pub bindings: Option<Value>,
}

fn bindings_of(v: &Value, at: &str, c: &mut Vec<Problem>) -> Bindings {
    match serde_json::from_value::<Bindings>(v.clone()) {
        Ok(b) => b,
        Err(e) => {
            c.push(Problem::new(
                at,
                format!("must map field keys to {{bind, default}}: {e}"),
            ));
            Bindings::new()
        }
    }
}

fn check_spec(s: &TemplateSpec) -> Result<(), ApiError> {
    let mut p: Vec<Problem> = Vec::new();
    if s.name.is_empty()
        || s.name.len() > 512
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        p.push(Problem::new(
            "name",
            "must be 1 to 512 lowercase letters, digits or _",
        ));
    }
    let lang_ok = {
        let (base, region) = s.language.split_once('_').unwrap_or((&s.language, ""));
        (2..=3).contains(&base.len())
            && base.chars().all(|c| c.is_ascii_lowercase())
            && (region.is_empty()
                || (region.len() == 2 && region.chars().all(|c| c.is_ascii_uppercase())))
    };
    if !lang_ok {
        p.push(Problem::new("language", "must be a code like en or pt_BR"));
    }
    if !model::CATEGORIES.contains(&s.category.as_str()) {
        p.push(Problem::new(
            "category",
            "must be marketing, utility or authentication",
        ));
    }
    if !model::STATUSES.contains(&s.status.as_str()) {
        p.push(Problem::new(
            "status",
            "must be approved, pending, rejected, paused or disabled",
        ));
    }
    match model::parse(&s.components, true) {
        Ok(def) => {
            let b = bindings_of(&s.bindings, "bindings", &mut p);
            p.extend(fill::check_bindings(&def.fields, &b, "bindings"));
        }
        Err(e) => p.extend(e),
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(problems(p))
    }
}

/// Every template (any user; `?status=approved` for what can be sent).
#[utoipa::path(get, path = "/templates", tag = "templates", security(("bearer" = [])),
    params(TemplateQuery),
    responses((status = 200, description = "Templates", body = Vec<TemplateOut>), CommonErrors))]
pub async fn list_templates(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TemplateQuery>,
) -> Result<axum::Json<Vec<TemplateOut>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        store::list(&mut conn, principal.tenant_id, q.status.as_deref())
            .await?
            .into_iter()
            .map(TemplateOut::from)
            .collect(),
    ))
}

/// Template filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    /// Only this status.
    pub status: Option<String>,
}

/// Create a template (admins, supervisors). Every WhatsApp rule broken is reported with
/// the component and the rule.
#[utoipa::path(post, path = "/templates", tag = "templates", security(("bearer" = [])),
    request_body = TemplateIn,
    responses((status = 201, description = "Created", body = TemplateOut), (status = 409, description = "The name (for templates: with the language; for responses: or the shortcut) is already used", body = crate::error::Problem, content_type = "application/problem+json"), crate::error::SupervisorOnly, CommonErrors))]
pub async fn create_template(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<TemplateIn>,
) -> Result<(StatusCode, axum::Json<TemplateOut>), ApiError> {
    principal.require(Role::Supervisor)?;
    let spec = TemplateSpec {
        name: input.name.trim().to_owned(),
        language: input.language.trim().to_owned(),
        category: input.category.to_lowercase(),
        status: input.status.unwrap_or_else(|| "pending".into()),
        components: input.components,
        bindings: input.bindings.unwrap_or_else(|| json!({})),
    };
    check_spec(&spec)?;
    let mut conn = state.db.acquire().await?;
    let t = store::create(&mut conn, principal.tenant_id, &spec).await?;
    Ok((StatusCode::CREATED, axum::Json(t.into())))
}

/// A template in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct TemplatePath {
    /// The template's id.
    pub template_id: Uuid,
}

/// One template.
#[utoipa::path(get, path = "/templates/{template_id}", tag = "templates", security(("bearer" = [])),
    params(TemplatePath),
    responses((status = 200, description = "The template", body = TemplateOut), CommonErrors))]
pub async fn get_template(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<TemplatePath>,
) -> Result<axum::Json<TemplateOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        store::get(&mut conn, principal.tenant_id, p.template_id)
            .await?
            .ok_or_else(|| ApiError::not_found("template"))?
            .into(),
    ))
}

/// Change a template (admins, supervisors); validated whole.
#[utoipa::path(patch, path = "/templates/{template_id}", tag = "templates", security(("bearer" = [])),
    params(TemplatePath), request_body = TemplatePatch,
    responses((status = 200, description = "Changed", body = TemplateOut), (status = 409, description = "The name (for templates: with the language; for responses: or the shortcut) is already used", body = crate::error::Problem, content_type = "application/problem+json"), crate::error::SupervisorOnly, CommonErrors))]
pub async fn patch_template(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<TemplatePath>,
    ApiJson(input): ApiJson<TemplatePatch>,
) -> Result<axum::Json<TemplateOut>, ApiError> {
    principal.require(Role::Supervisor)?;
    let mut tx = state.db.begin().await?;
    let t = store::get(&mut tx, principal.tenant_id, p.template_id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    let spec = TemplateSpec {
        name: input.name.map_or(t.name, |n| n.trim().to_owned()),
        language: input.language.map_or(t.language, |l| l.trim().to_owned()),
        category: input.category.map_or(t.category, |c| c.to_lowercase()),
        status: input.status.unwrap_or(t.status),
        components: input.components.unwrap_or(t.components),
        bindings: input.bindings.unwrap_or(t.bindings),
    };
    check_spec(&spec)?;
    let t = store::update(&mut tx, principal.tenant_id, p.template_id, &spec)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    tx.commit().await?;
    Ok(axum::Json(t.into()))
}

/// Delete a template (admins, supervisors).
#[utoipa::path(delete, path = "/templates/{template_id}", tag = "templates", security(("bearer" = [])),
    params(TemplatePath),
    responses((status = 204, description = "Deleted"), crate::error::SupervisorOnly, CommonErrors))]
pub async fn delete_template(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<TemplatePath>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Supervisor)?;
    let mut conn = state.db.acquire().await?;
    if !store::delete(&mut conn, principal.tenant_id, p.template_id).await? {
        return Err(ApiError::not_found("template"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// What to render for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderIn {
    /// The contact whose data fills the fields.
    pub contact_id: Uuid,
    /// Values the agent typed, by field key.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// A template or standard response filled for a contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenderOut {
    /// Header text, filled.
    pub header_text: Option<String>,
    /// `IMAGE` when the header is an image placeholder (send needs
    /// `header_image_attachment_id`).
    pub header_media: Option<String>,
    /// The body as the contact will see it (blank fields stay as `{{…}}`).
    pub body: String,
    /// Footer.
    pub footer: Option<String>,
    /// Buttons: `type`, `text`, `url` (suffix filled), `phone_number`, `payload`.
    #[schema(value_type = Vec<Object>)]
    pub buttons: Value,
    /// Every field: `key`, `location`, `value`, `source` (`agent_input`, `contact_data`,
    /// `agent_data`, `clock`, `default`, `blank`), `bind`, `example`.
    #[schema(value_type = Vec<Object>)]
    pub fields: Value,
    /// Keys of the fields still blank.
    pub blank: Vec<String>,
    /// All the text together, as the transcript will show it.
    pub text: String,
}

impl From<&fill::Rendered> for RenderOut {
    fn from(r: &fill::Rendered) -> Self {
        Self {
            header_text: r.header_text.clone(),
            header_media: r.header_media.clone(),
            body: r.body.clone(),
            footer: r.footer.clone(),
            buttons: serde_json::to_value(&r.buttons).unwrap_or_default(),
            fields: serde_json::to_value(&r.fields).unwrap_or_default(),
            blank: r.blank.clone(),
            text: r.text(),
        }
    }
}

/// Fill a template for a contact: each field with its value and where it came from, the
/// fields still blank, and the buttons, as the contact will see them.
#[utoipa::path(post, path = "/templates/{template_id}/render", tag = "templates", security(("bearer" = [])),
    params(TemplatePath), request_body = RenderIn,
    responses((status = 200, description = "Rendered", body = RenderOut), CommonErrors))]
pub async fn render_template(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<TemplatePath>,
    ApiJson(input): ApiJson<RenderIn>,
) -> Result<axum::Json<RenderOut>, ApiError> {
    let mut tx = state.db.begin().await?;
    let t = store::get(&mut tx, principal.tenant_id, p.template_id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    let def = definition(&t)?;
    let bad = fill::check_inputs(&def.fields, &input.fields);
    if !bad.is_empty() {
        return Err(problems(bad));
    }
    let (ctx, _) = context(&mut tx, principal, input.contact_id).await?;
    tx.commit().await?;
    let b: Bindings = serde_json::from_value(t.bindings.clone()).unwrap_or_default();
    Ok(axum::Json(
        (&fill::render(&def, &b, &input.fields, &ctx)).into(),
    ))
}

/// Send a WhatsApp notification template to the contact (allowed outside the 24-hour
/// window). Refused with 422 when a field is blank, the header image is missing, the
/// template is not approved or unknown to the provider, or the contact's WhatsApp address
/// has never been connected. Repeat the same `Idempotency-Key` to retry safely.
#[utoipa::path(post, path = "/contacts/{contact_id}/notifications", tag = "templates", security(("bearer" = [])),
    params(ContactPath, ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request act once")),
    request_body = NotificationIn,
    responses((status = 202, description = "Queued for delivery", body = MessageOut), CommonErrors))]
pub async fn send_notification(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<NotificationIn>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let key = idempotency_key(&headers)?;
    let (status, body) =
        notifications::send(&state, principal, ContactId(path.contact_id), key, input).await?;
    Ok((status, axum::Json(body)))
}

/// What a sync did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncOut {
    /// Templates the provider listed.
    pub synced: usize,
    /// Of which new to Parley.
    pub created: usize,
    /// Parley templates the provider does not know (now unsendable).
    pub unknown_to_provider: Vec<String>,
}

/// Pull the account's templates and their approval status from the provider's
/// `message_templates` endpoint (admins).
#[utoipa::path(post, path = "/channel-accounts/{account_id}/templates/sync", tag = "templates", security(("bearer" = [])),
    params(AccountPath),
    responses(
        (status = 200, description = "Synced", body = SyncOut),
        (status = 502, description = "The provider failed", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn sync_templates(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<AccountPath>,
) -> Result<axum::Json<SyncOut>, ApiError> {
    principal.require(Role::Admin)?;
    Ok(axum::Json(
        sync_account(&state, principal.tenant_id, p.account_id).await?,
    ))
}

/// Read a channel account's templates from the provider into Parley's (the sync
/// endpoint, and the demo's start-up).
pub(crate) async fn sync_account(
    state: &AppState,
    tenant: parley_core::TenantId,
    account_id: Uuid,
) -> Result<SyncOut, ApiError> {
    let p = AccountPath { account_id };
    let (account, secrets) = {
        let mut conn = state.db.acquire().await?;
        let a = accounts::get(&mut conn, tenant, p.account_id)
            .await?
            .ok_or_else(|| ApiError::not_found("channel account"))?;
        let s = accounts::secrets(&mut conn, tenant, p.account_id)
            .await?
            .ok_or_else(|| ApiError::not_found("channel account"))?;
        (a, s)
    };
    if !account
        .provider()
        .is_some_and(|p| p.capabilities().templates)
    {
        return Err(ApiError::invalid_field(
            "account_id",
            format!(
                "a `{}` account has no notification templates",
                account.provider
            ),
        ));
    }
    let listed = client::message_templates(&state.provider_http, &account, &secrets)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", e))?;
    let mut tx = state.db.begin().await?;
    let mut seen = Vec::new();
    let mut created = 0;
    for t in &listed {
        let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(name), Some(language)) = (s("name"), s("language")) else {
            continue;
        };
        let provider_status = s("status").unwrap_or_else(|| "PENDING".into());
        let category = s("category").unwrap_or_default().to_lowercase();
        let synced = Synced {
            status: store::status_from_provider(&provider_status).to_owned(),
            category: if model::CATEGORIES.contains(&category.as_str()) {
                category
            } else {
                "utility".into()
            },
            provider_status,
            provider_template_id: s("id"),
            rejected_reason: s("rejected_reason").filter(|r| r != "NONE"),
            components: t.get("components").cloned().unwrap_or_else(|| json!([])),
            name: name.clone(),
            language: language.clone(),
        };
        if store::upsert_synced(&mut tx, tenant, account.id, &synced).await? {
            created += 1;
        }
        seen.push((name, language));
    }
    let unknown = store::mark_unknown(&mut tx, tenant, account.id, &seen).await?;
    tx.commit().await?;
    Ok(SyncOut {
        synced: seen.len(),
        created,
        unknown_to_provider: unknown,
    })
}

/// A standard response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseOut {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Category.
    pub category: Option<String>,
    /// Text with `{{field}}`s.
    pub text: String,
    /// Shortcut, e.g. `/hello`.
    pub shortcut: Option<String>,
    /// Field → `{bind, default}`.
    #[schema(value_type = Object)]
    pub bindings: Value,
    /// Its fields.
    pub fields: Vec<FieldOut>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

impl From<StandardResponse> for ResponseOut {
    fn from(r: StandardResponse) -> Self {
        let def = Definition::plain(&r.text).ok();
        Self {
            fields: field_outs(def.as_ref(), &r.bindings),
            id: r.id,
            name: r.name,
            category: r.category,
            text: r.text,
            shortcut: r.shortcut,
            bindings: r.bindings,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A standard response as written.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseIn {
    /// Name (1-100 characters).
    pub name: String,
    /// Category.
    pub category: Option<String>,
    /// Text (1-4096 characters) with fields like `{{first_name}}`.
    pub text: String,
    /// A shortcut agents type (1-32 characters, no spaces).
    pub shortcut: Option<String>,
    /// Field → `{bind, default}`.
    #[schema(value_type = Option<Object>)]
    pub bindings: Option<Value>,
}

/// A change to a standard response; what is left out stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponsePatch {
    /// Name.
    pub name: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Text.
    pub text: Option<String>,
    /// Shortcut.
    pub shortcut: Option<String>,
    /// Bindings.
    #[schema(value_type = Option<Object>)]
    pub bindings: Option<Value>,
}

fn check_response(r: ResponseSpec) -> Result<ResponseSpec, ApiError> {
    let mut c = Checks::default();
    let name = c.text("name", &r.name, 100);
    let category = r.category.as_deref().map(|x| c.text("category", x, 100));
    if r.text.trim().is_empty() || r.text.chars().count() > 4096 {
        c.fail("text", "must be 1 to 4096 characters");
    }
    if let Some(s) = &r.shortcut
        && (s.is_empty() || s.chars().count() > 32 || s.contains(char::is_whitespace))
    {
        c.fail("shortcut", "must be 1 to 32 characters without spaces");
    }
    match Definition::plain(&r.text) {
        Err(e) => c.fail("text", e),
        Ok(def) => {
            let mut p = Vec::new();
            let b = bindings_of(&r.bindings, "bindings", &mut p);
            p.extend(fill::check_bindings(&def.fields, &b, "bindings"));
            for x in p {
                c.fail(&x.field, x.message);
            }
        }
    }
    c.finish()?;
    Ok(ResponseSpec {
        name,
        category,
        ..r
    })
}

/// Response search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResponseQuery {
    /// Words in the name, category, shortcut or text.
    pub q: Option<String>,
}

/// Standard responses (any user), optionally searched.
#[utoipa::path(get, path = "/standard-responses", tag = "templates", security(("bearer" = [])),
    params(ResponseQuery),
    responses((status = 200, description = "Responses", body = Vec<ResponseOut>), CommonErrors))]
pub async fn list_responses(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ResponseQuery>,
) -> Result<axum::Json<Vec<ResponseOut>>, ApiError> {
    if q.q.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::invalid_field(
            "q",
            "must be at most 200 characters",
        ));
    }
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        store::list_responses(
            &mut conn,
            principal.tenant_id,
            q.q.as_deref().filter(|s| !s.trim().is_empty()),
        )
        .await?
        .into_iter()
        .map(ResponseOut::from)
        .collect(),
    ))
}

/// Create a standard response (admins, supervisors).
#[utoipa::path(post, path = "/standard-responses", tag = "templates", security(("bearer" = [])),
    request_body = ResponseIn,
    responses((status = 201, description = "Created", body = ResponseOut), (status = 409, description = "The name (for templates: with the language; for responses: or the shortcut) is already used", body = crate::error::Problem, content_type = "application/problem+json"), crate::error::SupervisorOnly, CommonErrors))]
pub async fn create_response(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<ResponseIn>,
) -> Result<(StatusCode, axum::Json<ResponseOut>), ApiError> {
    principal.require(Role::Supervisor)?;
    let spec = check_response(ResponseSpec {
        name: input.name,
        category: input.category,
        text: input.text,
        shortcut: input.shortcut,
        bindings: input.bindings.unwrap_or_else(|| json!({})),
    })?;
    let mut conn = state.db.acquire().await?;
    let r = store::save_response(&mut conn, principal.tenant_id, None, &spec)
        .await?
        .ok_or_else(|| ApiError::not_found("standard response"))?;
    Ok((StatusCode::CREATED, axum::Json(r.into())))
}

/// A standard response in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ResponsePath {
    /// The response's id.
    pub response_id: Uuid,
}

/// One standard response.
#[utoipa::path(get, path = "/standard-responses/{response_id}", tag = "templates", security(("bearer" = [])),
    params(ResponsePath),
    responses((status = 200, description = "The response", body = ResponseOut), CommonErrors))]
pub async fn get_response(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<ResponsePath>,
) -> Result<axum::Json<ResponseOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        store::get_response(&mut conn, principal.tenant_id, p.response_id)
            .await?
            .ok_or_else(|| ApiError::not_found("standard response"))?
            .into(),
    ))
}

/// Change a standard response (admins, supervisors).
#[utoipa::path(patch, path = "/standard-responses/{response_id}", tag = "templates", security(("bearer" = [])),
    params(ResponsePath), request_body = ResponsePatch,
    responses((status = 200, description = "Changed", body = ResponseOut), (status = 409, description = "The name (for templates: with the language; for responses: or the shortcut) is already used", body = crate::error::Problem, content_type = "application/problem+json"), crate::error::SupervisorOnly, CommonErrors))]
pub async fn patch_response(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<ResponsePath>,
    ApiJson(input): ApiJson<ResponsePatch>,
) -> Result<axum::Json<ResponseOut>, ApiError> {
    principal.require(Role::Supervisor)?;
    let mut tx = state.db.begin().await?;
    let r = store::get_response(&mut tx, principal.tenant_id, p.response_id)
        .await?
        .ok_or_else(|| ApiError::not_found("standard response"))?;
    let spec = check_response(ResponseSpec {
        name: input.name.unwrap_or(r.name),
        category: input.category.or(r.category),
        text: input.text.unwrap_or(r.text),
        shortcut: input.shortcut.or(r.shortcut),
        bindings: input.bindings.unwrap_or(r.bindings),
    })?;
    let r = store::save_response(&mut tx, principal.tenant_id, Some(p.response_id), &spec)
        .await?
        .ok_or_else(|| ApiError::not_found("standard response"))?;
    tx.commit().await?;
    Ok(axum::Json(r.into()))
}

/// Delete a standard response (admins, supervisors).
#[utoipa::path(delete, path = "/standard-responses/{response_id}", tag = "templates", security(("bearer" = [])),
    params(ResponsePath),
    responses((status = 204, description = "Deleted"), crate::error::SupervisorOnly, CommonErrors))]
pub async fn delete_response(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<ResponsePath>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Supervisor)?;
    let mut conn = state.db.acquire().await?;
    if !store::delete_response(&mut conn, principal.tenant_id, p.response_id).await? {
        return Err(ApiError::not_found("standard response"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Fill a standard response for a contact.
#[utoipa::path(post, path = "/standard-responses/{response_id}/render", tag = "templates", security(("bearer" = [])),
    params(ResponsePath), request_body = RenderIn,
    responses((status = 200, description = "Rendered", body = RenderOut), CommonErrors))]
pub async fn render_response(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<ResponsePath>,
    ApiJson(input): ApiJson<RenderIn>,
) -> Result<axum::Json<RenderOut>, ApiError> {
    let mut tx = state.db.begin().await?;
    let r = store::get_response(&mut tx, principal.tenant_id, p.response_id)
        .await?
        .ok_or_else(|| ApiError::not_found("standard response"))?;
    let def = Definition::plain(&r.text).map_err(|e| ApiError::invalid_field("text", e))?;
    let bad = fill::check_inputs(&def.fields, &input.fields);
    if !bad.is_empty() {
        return Err(problems(bad));
    }
    let (ctx, _) = context(&mut tx, principal, input.contact_id).await?;
    tx.commit().await?;
    let b: Bindings = serde_json::from_value(r.bindings.clone()).unwrap_or_default();
    Ok(axum::Json(
        (&fill::render(&def, &b, &input.fields, &ctx)).into(),
    ))
}
