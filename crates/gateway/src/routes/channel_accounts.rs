//! Channel accounts (admin). Secrets are write-only: accepted, never returned or logged.

use axum::{extract::State, http::StatusCode};
use channel_connector::{
    accounts::{self, Account, AccountError, AccountPatch, NewAccount, Secrets},
    providers::Provider,
};
use chrono::{DateTime, Utc};
use parley_core::{Principal, Role};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::RequireRole as _,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath},
    validate::Checks,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account, patch_account))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
}

/// A channel account (no secrets).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOut {
    /// Id; the webhook URL is `/webhooks/whatsapp/{id}`.
    pub id: Uuid,
    /// `whatsapp`.
    pub provider: String,
    /// Name.
    pub name: String,
    /// Cloud API phone number id.
    pub phone_number_id: String,
    /// WhatsApp Business Account id.
    pub waba_id: Option<String>,
    /// The number contacts see.
    pub display_phone_number: Option<String>,
    /// Graph API base URL with version.
    pub api_base_url: String,
    /// Mark inbound messages read at the provider when an agent reads them.
    pub mark_read: bool,
    /// The approved template Connect sends (quick replies "Yes" / "No").
    pub optin_template_name: String,
    /// Its language code.
    pub optin_template_language: String,
    /// How recent (days) evidence must be for Validate to call an address reachable.
    pub evidence_days: i32,
    /// The provider's legacy contacts-check URL, when it offers one (Validate uses it).
    pub contacts_check_url: Option<String>,
    /// The queue new interactions from this account join.
    pub default_queue_id: Option<Uuid>,
    /// Where to point the provider's webhook (relative to this server).
    pub webhook_path: String,
    /// What the provider needs beyond the common fields (Twilio: `account_sid`,
    /// `public_url`); no secrets.
    #[schema(value_type = Object)]
    pub provider_config: serde_json::Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Account> for AccountOut {
    fn from(a: Account) -> Self {
        Self {
            webhook_path: format!("/webhooks/{}/{}", a.provider, a.id),
            provider_config: a.provider_config,
            id: a.id,
            provider: a.provider,
            name: a.name,
            phone_number_id: a.phone_number_id,
            waba_id: a.waba_id,
            display_phone_number: a.display_phone_number,
            api_base_url: a.api_base_url,
            mark_read: a.mark_read,
            optin_template_name: a.optin_template_name,
            optin_template_language: a.optin_template_language,
            evidence_days: a.evidence_days,
            contacts_check_url: a.contacts_check_url,
            default_queue_id: a.default_queue_id,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// A new account: WhatsApp (`whatsapp`: the Cloud API fields) or SMS through Twilio
/// (`twilio_sms`: `account_sid`, `from`, `auth_token`, `public_url`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountIn {
    /// `whatsapp` or `twilio_sms`.
    pub provider: String,
    /// Name.
    pub name: String,
    /// WhatsApp: the Cloud API phone number id.
    pub phone_number_id: Option<String>,
    /// WhatsApp: the WhatsApp Business Account id.
    pub waba_id: Option<String>,
    /// WhatsApp: the number contacts see.
    pub display_phone_number: Option<String>,
    /// WhatsApp: the Graph API token (write-only).
    pub access_token: Option<String>,
    /// WhatsApp: the app secret for webhook signatures (write-only).
    pub app_secret: Option<String>,
    /// WhatsApp: the verify token of the webhook handshake (write-only).
    pub verify_token: Option<String>,
    /// The provider's API base (default `https://graph.facebook.com/v21.0` for WhatsApp,
    /// `https://api.twilio.com/2010-04-01` for Twilio).
    pub api_base_url: Option<String>,
    /// WhatsApp: mark inbound messages read at the provider (default false).
    #[serde(default)]
    pub mark_read: bool,
    /// Twilio: the account SID (`AC…`).
    pub account_sid: Option<String>,
    /// Twilio: the sender, an E.164 number or a Messaging Service SID (`MG…`).
    pub from: Option<String>,
    /// Twilio: the auth token (write-only); it also keys `X-Twilio-Signature`.
    pub auth_token: Option<String>,
    /// Twilio: the base URL Twilio reaches this server at (scheme, host, port if any,
    /// path prefix), e.g. `https://parley.example.com`. Configure the number's messaging
    /// webhook at Twilio as this plus the account's `webhook_path` (POST): signatures
    /// cover that exact URL. Status callbacks go to it plus `/status`.
    pub public_url: Option<String>,
}

/// Changes; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAccountIn {
    /// Name.
    pub name: Option<String>,
    /// WABA id.
    pub waba_id: Option<String>,
    /// Display number.
    pub display_phone_number: Option<String>,
    /// New token (write-only).
    pub access_token: Option<String>,
    /// New app secret (write-only).
    pub app_secret: Option<String>,
    /// New verify token (write-only).
    pub verify_token: Option<String>,
    /// New base URL.
    pub api_base_url: Option<String>,
    /// Mark-read setting.
    pub mark_read: Option<bool>,
    /// The Connect opt-in template's name.
    pub optin_template_name: Option<String>,
    /// Its language code.
    pub optin_template_language: Option<String>,
    /// Validate's evidence period in days (1 to 365).
    pub evidence_days: Option<i32>,
    /// The provider's legacy contacts-check URL (`…/v1/contacts`); empty clears it.
    pub contacts_check_url: Option<String>,
    /// The queue new interactions from this account join; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub default_queue_id: Option<Option<Uuid>>,
}

/// A field that may be given as `null` (`Some(None)`) or left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

/// An account id in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AccountPath {
    /// The channel account's id.
    pub account_id: Uuid,
}

/// A webhook body that was signed but could not be processed.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterOut {
    /// Id.
    pub id: i64,
    /// Why.
    pub reason: String,
    /// The raw body (lossy UTF-8).
    pub body: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When an admin replayed it and its content was stored.
    pub replayed_at: Option<DateTime<Utc>>,
}

impl From<channel_connector::dead_letters::DeadLetter> for DeadLetterOut {
    fn from(d: channel_connector::dead_letters::DeadLetter) -> Self {
        Self {
            id: d.id,
            reason: d.reason,
            body: String::from_utf8_lossy(&d.body).into_owned(),
            created_at: d.created_at,
            replayed_at: d.replayed_at,
        }
    }
}

/// A dead letter in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeadLetterPath {
    /// The channel account's id.
    pub account_id: Uuid,
    /// The dead letter's id.
    pub dead_letter_id: i64,
}

fn check_url(c: &mut Checks, config: &crate::config::Config, field: &str, url: &str) {
    if let Err(why) = config.provider_url_allowed(url) {
        c.fail(field, why);
    }
}

fn check_secret(c: &mut Checks, field: &str, s: &str) {
    if s.trim().is_empty() || s.len() > 4096 {
        c.fail(field, "must be 1 to 4096 characters");
    }
}

fn map_err(e: AccountError) -> ApiError {
    match e {
        AccountError::Duplicate => ApiError::conflict(
            "phone_number_id",
            "this phone number id is already configured",
        ),
        AccountError::Database(d) => d.into(),
    }
}

/// The WABA id (a URL path segment, so provider-id characters only) and the display
/// number, when given.
fn number_fields(
    c: &mut Checks,
    waba_id: Option<&str>,
    display: Option<&str>,
) -> (Option<String>, Option<String>) {
    (
        waba_id.map(|w| c.provider_id("waba_id", w)),
        display.map(|d| c.text("display_phone_number", d, 32)),
    )
}

/// Add a channel account (admin).
#[utoipa::path(post, path = "/channel-accounts", tag = "channels", security(("bearer" = [])),
    request_body = CreateAccountIn,
    responses(
        (status = 201, description = "Created", body = AccountOut),
        (status = 409, description = "The phone number id is already configured", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn create_account(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<CreateAccountIn>,
) -> Result<(StatusCode, axum::Json<AccountOut>), ApiError> {
    principal.require(Role::Admin)?;
    let mut c = Checks::default();
    let name = c.text("name", &input.name, 100);
    let required = |c: &mut Checks, field: &str, v: &Option<String>| -> String {
        match v {
            Some(v) => v.clone(),
            None => {
                c.fail(field, "is required for this provider");
                String::new()
            }
        }
    };
    let new = match Provider::parse(&input.provider) {
        Some(Provider::WhatsappCloud) => {
            let pnid = required(&mut c, "phone_number_id", &input.phone_number_id);
            let pnid = c.provider_id("phone_number_id", &pnid);
            let (waba_id, display_phone_number) = number_fields(
                &mut c,
                input.waba_id.as_deref(),
                input.display_phone_number.as_deref(),
            );
            let secrets = Secrets {
                access_token: required(&mut c, "access_token", &input.access_token),
                app_secret: required(&mut c, "app_secret", &input.app_secret),
                verify_token: required(&mut c, "verify_token", &input.verify_token),
            };
            check_secret(&mut c, "access_token", &secrets.access_token);
            check_secret(&mut c, "app_secret", &secrets.app_secret);
            check_secret(&mut c, "verify_token", &secrets.verify_token);
            let base = input
                .api_base_url
                .unwrap_or_else(|| "https://graph.facebook.com/v21.0".to_owned());
            check_url(&mut c, &state.config, "api_base_url", &base);
            NewAccount {
                provider: Provider::WhatsappCloud,
                provider_config: serde_json::json!({}),
                name,
                phone_number_id: pnid,
                waba_id,
                display_phone_number,
                secrets,
                api_base_url: base.trim_end_matches('/').to_owned(),
                mark_read: input.mark_read,
            }
        }
        Some(Provider::TwilioSms) => {
            let sid = required(&mut c, "account_sid", &input.account_sid);
            if !(sid.starts_with("AC")
                && sid.len() == 34
                && sid[2..].chars().all(|ch| ch.is_ascii_hexdigit()))
                && input.account_sid.is_some()
            {
                c.fail(
                    "account_sid",
                    "must be a Twilio account SID: AC and 32 hex digits",
                );
            }
            let from = required(&mut c, "from", &input.from);
            let from = if from.starts_with("MG") {
                c.provider_id("from", &from)
            } else {
                match parley_core::channel::parse_e164(&from) {
                    Ok(e164) => e164,
                    Err(_) if input.from.is_none() => from,
                    Err(e) => {
                        c.fail(
                            "from",
                            format!("must be an E.164 number or a Messaging Service SID: {e}"),
                        );
                        from
                    }
                }
            };
            let token = required(&mut c, "auth_token", &input.auth_token);
            check_secret(&mut c, "auth_token", &token);
            let public_url = required(&mut c, "public_url", &input.public_url);
            if input.public_url.is_some()
                && (!(public_url.starts_with("https://") || public_url.starts_with("http://"))
                    || public_url.contains(['?', '#']))
            {
                c.fail(
                    "public_url",
                    "must be the http(s) base URL Twilio reaches this server at, without query or fragment",
                );
            }
            let base = input
                .api_base_url
                .unwrap_or_else(|| "https://api.twilio.com/2010-04-01".to_owned());
            check_url(&mut c, &state.config, "api_base_url", &base);
            for field in [
                "phone_number_id",
                "waba_id",
                "access_token",
                "app_secret",
                "verify_token",
            ] {
                let given = match field {
                    "phone_number_id" => input.phone_number_id.is_some(),
                    "waba_id" => input.waba_id.is_some(),
                    "access_token" => input.access_token.is_some(),
                    "app_secret" => input.app_secret.is_some(),
                    _ => input.verify_token.is_some(),
                };
                if given {
                    c.fail(field, "is a WhatsApp field; Twilio accounts take account_sid, from, auth_token and public_url");
                }
            }
            NewAccount {
                provider: Provider::TwilioSms,
                provider_config: serde_json::json!({
                    "account_sid": sid, "public_url": public_url.trim_end_matches('/'),
                }),
                name,
                display_phone_number: Some(from.clone()),
                phone_number_id: from,
                waba_id: None,
                secrets: Secrets {
                    access_token: token.clone(),
                    app_secret: token,
                    verify_token: String::new(),
                },
                api_base_url: base.trim_end_matches('/').to_owned(),
                mark_read: false,
            }
        }
        None => {
            c.fail("provider", "must be `whatsapp` or `twilio_sms`");
            c.finish()?;
            return Err(ApiError::invalid_field("provider", "unknown"));
        }
    };
    c.finish()?;
    let mut conn = state.db.acquire().await?;
    let acc = accounts::create(&mut conn, principal.tenant_id, &new)
        .await
        .map_err(map_err)?;
    Ok((StatusCode::CREATED, axum::Json(acc.into())))
}

/// The tenant's channel accounts (admin).
#[utoipa::path(get, path = "/channel-accounts", tag = "channels", security(("bearer" = [])),
    responses((status = 200, description = "Accounts", body = Vec<AccountOut>), crate::error::AdminOnly, CommonErrors))]
pub async fn list_accounts(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Vec<AccountOut>>, ApiError> {
    principal.require(Role::Admin)?;
    let mut conn = state.db.acquire().await?;
    let list = accounts::list(&mut conn, principal.tenant_id).await?;
    Ok(axum::Json(list.into_iter().map(AccountOut::from).collect()))
}

/// One channel account (admin).
#[utoipa::path(get, path = "/channel-accounts/{account_id}", tag = "channels", security(("bearer" = [])),
    params(AccountPath),
    responses(
        (status = 200, description = "The account", body = AccountOut),
        (status = 404, description = "No such account in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn get_account(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<AccountPath>,
) -> Result<axum::Json<AccountOut>, ApiError> {
    principal.require(Role::Admin)?;
    let mut conn = state.db.acquire().await?;
    let acc = accounts::get(&mut conn, principal.tenant_id, p.account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel account"))?;
    Ok(axum::Json(acc.into()))
}

/// Change a channel account, e.g. rotate its token (admin).
#[utoipa::path(patch, path = "/channel-accounts/{account_id}", tag = "channels", security(("bearer" = [])),
    params(AccountPath),
    request_body = PatchAccountIn,
    responses(
        (status = 200, description = "The account", body = AccountOut),
        (status = 404, description = "No such account in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn patch_account(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<AccountPath>,
    ApiJson(input): ApiJson<PatchAccountIn>,
) -> Result<axum::Json<AccountOut>, ApiError> {
    principal.require(Role::Admin)?;
    let mut c = Checks::default();
    let name = input.name.as_deref().map(|n| c.text("name", n, 100));
    for (field, v) in [
        ("access_token", &input.access_token),
        ("app_secret", &input.app_secret),
        ("verify_token", &input.verify_token),
    ] {
        if let Some(v) = v {
            check_secret(&mut c, field, v);
        }
    }
    if let Some(u) = &input.api_base_url {
        check_url(&mut c, &state.config, "api_base_url", u);
    }
    let (waba_id, display_phone_number) = number_fields(
        &mut c,
        input.waba_id.as_deref(),
        input.display_phone_number.as_deref(),
    );
    let optin_template_name = input
        .optin_template_name
        .as_deref()
        .map(|n| c.text("optin_template_name", n, 512));
    let optin_template_language = input
        .optin_template_language
        .as_deref()
        .map(|n| c.text("optin_template_language", n, 16));
    if let Some(u) = input
        .contacts_check_url
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        check_url(&mut c, &state.config, "contacts_check_url", u);
    }
    if input.evidence_days.is_some_and(|d| !(1..=365).contains(&d)) {
        c.fail("evidence_days", "must be between 1 and 365");
    }
    c.finish()?;
    let mut conn = state.db.acquire().await?;
    if let Some(Some(q)) = input.default_queue_id
        && interaction_router::queues::get(&mut conn, principal.tenant_id, q)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid_field(
            "default_queue_id",
            "no such queue in this tenant",
        ));
    }
    let acc = accounts::update(
        &mut conn,
        principal.tenant_id,
        p.account_id,
        &AccountPatch {
            name,
            waba_id,
            display_phone_number,
            access_token: input.access_token,
            app_secret: input.app_secret,
            verify_token: input.verify_token,
            api_base_url: input
                .api_base_url
                .map(|u| u.trim_end_matches('/').to_owned()),
            mark_read: input.mark_read,
            optin_template_name,
            optin_template_language,
            evidence_days: input.evidence_days,
            contacts_check_url: input.contacts_check_url,
            default_queue_id: input.default_queue_id,
        },
    )
    .await
    .map_err(map_err)?
    .ok_or_else(|| ApiError::not_found("channel account"))?;
    state.webhook_accounts.forget(p.account_id);
    Ok(axum::Json(acc.into()))
}

/// Signed webhook bodies that could not be parsed, newest first (admin).
#[utoipa::path(get, path = "/channel-accounts/{account_id}/dead-letters", tag = "channels",
    security(("bearer" = [])),
    params(AccountPath),
    responses(
        (status = 200, description = "Dead letters", body = Vec<DeadLetterOut>),
        (status = 404, description = "No such account in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<AccountPath>,
) -> Result<axum::Json<Vec<DeadLetterOut>>, ApiError> {
    principal.require(Role::Admin)?;
    let mut conn = state.db.acquire().await?;
    accounts::get(&mut conn, principal.tenant_id, p.account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel account"))?;
    let list =
        channel_connector::dead_letters::list(&mut conn, principal.tenant_id, p.account_id, 100)
            .await?;
    Ok(axum::Json(
        list.into_iter().map(DeadLetterOut::from).collect(),
    ))
}

/// Replay a dead letter (admin): its body goes through the webhook's path again, as if the
/// provider had sent it now. Once the cause is fixed (a Parley upgrade that reads it, a
/// queue or account set up), its messages reach the transcript and it is marked replayed;
/// replaying again stores nothing twice. A body that still cannot be read is answered 422
/// with the reason, and the dead letter stays as it was.
#[utoipa::path(post, path = "/channel-accounts/{account_id}/dead-letters/{dead_letter_id}/replay",
    tag = "channels", security(("bearer" = [])),
    params(DeadLetterPath),
    responses(
        (status = 200, description = "Stored; the dead letter, marked replayed", body = DeadLetterOut),
        (status = 404, description = "No such account or dead letter in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Still unreadable (`still_unreadable`, with the reason)", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<DeadLetterPath>,
) -> Result<axum::Json<DeadLetterOut>, ApiError> {
    principal.require(Role::Admin)?;
    let mut conn = state.db.acquire().await?;
    let account = accounts::get(&mut conn, principal.tenant_id, p.account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel account"))?;
    let mut letter = channel_connector::dead_letters::get(
        &mut conn,
        principal.tenant_id,
        p.account_id,
        p.dead_letter_id,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("dead letter"))?;
    drop(conn);
    let still = |why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "still_unreadable",
            format!("the dead letter still cannot be read: {why}"),
        )
    };
    let taken = match account.provider() {
        Some(Provider::TwilioSms) => {
            crate::routes::sms::take_body(&state, principal.tenant_id, p.account_id, &letter.body)
                .await?
        }
        Some(Provider::WhatsappCloud) | None => {
            crate::routes::webhooks::take_body(
                &state,
                principal.tenant_id,
                p.account_id,
                &account.phone_number_id,
                &letter.body,
            )
            .await?
        }
    };
    match taken {
        crate::routes::webhooks::Taken::DeadLetter(why) => return Err(still(why)),
        // Nothing of it could be read. (A body with readable parts is replayed: its
        // unreadable messages are kept again, each as a dead letter of its own.)
        crate::routes::webhooks::Taken::Stored {
            stored: 0,
            rejected,
        } if !rejected.is_empty() => {
            return Err(still(rejected.join("; ")));
        }
        crate::routes::webhooks::Taken::Stored { .. } => {}
    }
    let mut conn = state.db.acquire().await?;
    letter.replayed_at =
        channel_connector::dead_letters::mark_replayed(&mut conn, principal.tenant_id, letter.id)
            .await?;
    tracing::info!(account = %p.account_id, dead_letter = letter.id, "dead letter replayed");
    Ok(axum::Json(letter.into()))
}
