//! Channel accounts: the tenant's side of a channel (a WhatsApp Business phone number, a
//! Twilio SMS sender), with its credentials. Secrets never leave this module except to
//! the provider.

use chrono::{DateTime, Utc};
use parley_core::TenantId;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::providers::Provider;

/// A channel account as anyone but the provider client may see it: no secrets.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    /// Id (also in the webhook URL).
    pub id: Uuid,
    /// Owner.
    pub tenant_id: Uuid,
    /// `whatsapp`.
    pub provider: String,
    /// Display name.
    pub name: String,
    /// The Cloud API phone number id.
    pub phone_number_id: String,
    /// The WhatsApp Business Account id.
    pub waba_id: Option<String>,
    /// The number as shown to contacts.
    pub display_phone_number: Option<String>,
    /// Graph API base including the version, e.g. `https://graph.facebook.com/v21.0`.
    pub api_base_url: String,
    /// Mark inbound messages read at the provider when an agent reads them.
    pub mark_read: bool,
    /// The approved template Connect sends (quick replies "Yes" / "No").
    pub optin_template_name: String,
    /// Its language code.
    pub optin_template_language: String,
    /// How recent evidence must be for Validate to call an address reachable.
    pub evidence_days: i32,
    /// The provider's legacy contacts-check URL (`…/v1/contacts`), if it offers one.
    pub contacts_check_url: Option<String>,
    /// The queue new interactions from this account join.
    pub default_queue_id: Option<Uuid>,
    /// What the provider needs beyond the common columns (no secrets).
    pub provider_config: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

/// The credentials, for the provider client and webhook checks only.
#[derive(Clone, sqlx::FromRow)]
pub struct Secrets {
    /// Bearer token for the Graph API.
    pub access_token: String,
    /// Key of the webhook HMAC.
    pub app_secret: String,
    /// The verification handshake's token.
    pub verify_token: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Its provider.
    pub provider: Provider,
    /// What the provider needs beyond the common columns.
    pub provider_config: Value,
    /// Display name.
    pub name: String,
    /// Phone number id.
    pub phone_number_id: String,
    /// WABA id.
    pub waba_id: Option<String>,
    /// Display number.
    pub display_phone_number: Option<String>,
    /// Credentials.
    pub secrets: Secrets,
    /// Graph API base.
    pub api_base_url: String,
    /// Mark-read setting.
    pub mark_read: bool,
}

/// Changes; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    /// Name.
    pub name: Option<String>,
    /// WABA id.
    pub waba_id: Option<String>,
    /// Display number.
    pub display_phone_number: Option<String>,
    /// Token.
    pub access_token: Option<String>,
    /// App secret.
    pub app_secret: Option<String>,
    /// Verify token.
    pub verify_token: Option<String>,
    /// Base URL.
    pub api_base_url: Option<String>,
    /// Mark-read.
    pub mark_read: Option<bool>,
    /// Opt-in template name.
    pub optin_template_name: Option<String>,
    /// Opt-in template language.
    pub optin_template_language: Option<String>,
    /// Evidence period in days.
    pub evidence_days: Option<i32>,
    /// Contacts-check URL (empty string clears it).
    pub contacts_check_url: Option<String>,
    /// `Some(None)` clears the default queue.
    pub default_queue_id: Option<Option<Uuid>>,
}

macro_rules! account_columns {
    () => {
        "id, tenant_id, provider, name, phone_number_id, waba_id, display_phone_number, api_base_url, mark_read, optin_template_name, optin_template_language, evidence_days, contacts_check_url, default_queue_id, provider_config, created_at, updated_at"
    };
}

/// Why an account could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The phone number id is already configured in this tenant.
    #[error("phone_number_id is already configured")]
    Duplicate,
    /// Database failure.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn map_db(e: sqlx::Error) -> AccountError {
    if let sqlx::Error::Database(db) = &e
        && db.constraint() == Some("channel_accounts_phone_number_key")
    {
        return AccountError::Duplicate;
    }
    AccountError::Database(e)
}

/// Create an account.
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    new: &NewAccount,
) -> Result<Account, AccountError> {
    sqlx::query_as::<_, Account>(concat!(
        "INSERT INTO channel_accounts (id, tenant_id, provider, name, phone_number_id, waba_id,
            display_phone_number, access_token, app_secret, verify_token, api_base_url, mark_read,
            provider_config)
         VALUES ($1, $2, $12, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13) RETURNING ",
        account_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(tenant.0)
    .bind(&new.name)
    .bind(&new.phone_number_id)
    .bind(&new.waba_id)
    .bind(&new.display_phone_number)
    .bind(&new.secrets.access_token)
    .bind(&new.secrets.app_secret)
    .bind(&new.secrets.verify_token)
    .bind(&new.api_base_url)
    .bind(new.mark_read)
    .bind(new.provider.as_str())
    .bind(&new.provider_config)
    .fetch_one(conn)
    .await
    .map_err(map_db)
}

/// The tenant's accounts.
pub async fn list(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Account>, sqlx::Error> {
    sqlx::query_as::<_, Account>(concat!(
        "SELECT ",
        account_columns!(),
        " FROM channel_accounts WHERE tenant_id = $1 ORDER BY created_at, id"
    ))
    .bind(tenant.0)
    .fetch_all(conn)
    .await
}

/// One account of the tenant.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as::<_, Account>(concat!(
        "SELECT ",
        account_columns!(),
        " FROM channel_accounts WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.0)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// An account and its secrets by id alone: for webhooks, where the URL names the account
/// and the signature proves the caller.
pub async fn for_webhook(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(Account, Secrets)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        account: Account,
        #[sqlx(flatten)]
        secrets: Secrets,
    }
    let row = sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        account_columns!(),
        ", access_token, app_secret, verify_token FROM channel_accounts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| (r.account, r.secrets)))
}

/// The account's secrets.
pub async fn secrets(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<Secrets>, sqlx::Error> {
    sqlx::query_as::<_, Secrets>(
        "SELECT access_token, app_secret, verify_token FROM channel_accounts
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Change an account.
pub async fn update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    p: &AccountPatch,
) -> Result<Option<Account>, AccountError> {
    sqlx::query_as::<_, Account>(concat!(
        "UPDATE channel_accounts SET
            name = COALESCE($3, name), waba_id = COALESCE($4, waba_id),
            display_phone_number = COALESCE($5, display_phone_number),
            access_token = COALESCE($6, access_token), app_secret = COALESCE($7, app_secret),
            verify_token = COALESCE($8, verify_token), api_base_url = COALESCE($9, api_base_url),
            mark_read = COALESCE($10, mark_read),
            optin_template_name = COALESCE($11, optin_template_name),
            optin_template_language = COALESCE($12, optin_template_language),
            evidence_days = COALESCE($13, evidence_days),
            contacts_check_url = CASE WHEN $14::text IS NULL THEN contacts_check_url
                                      WHEN $14 = '' THEN NULL ELSE $14 END,
            default_queue_id = CASE WHEN $15 THEN $16 ELSE default_queue_id END,
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING ",
        account_columns!()
    ))
    .bind(tenant.0)
    .bind(id)
    .bind(&p.name)
    .bind(&p.waba_id)
    .bind(&p.display_phone_number)
    .bind(&p.access_token)
    .bind(&p.app_secret)
    .bind(&p.verify_token)
    .bind(&p.api_base_url)
    .bind(p.mark_read)
    .bind(&p.optin_template_name)
    .bind(&p.optin_template_language)
    .bind(p.evidence_days)
    .bind(&p.contacts_check_url)
    .bind(p.default_queue_id.is_some())
    .bind(p.default_queue_id.flatten())
    .fetch_optional(conn)
    .await
    .map_err(map_db)
}

/// Replace an account's provider configuration (validated by the caller).
pub async fn set_provider_config(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    config: &Value,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as::<_, Account>(concat!(
        "UPDATE channel_accounts SET provider_config = $3, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING ",
        account_columns!()
    ))
    .bind(tenant.0)
    .bind(id)
    .bind(config)
    .fetch_optional(conn)
    .await
}

/// The tenant's WhatsApp account a conversation with `contact` uses (see
/// [`for_contact_on`]).
pub async fn for_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: Uuid,
) -> Result<Option<Account>, sqlx::Error> {
    for_contact_on(conn, tenant, contact, Provider::WhatsappCloud).await
}

/// The tenant's `provider` account a conversation with `contact` uses: the one the
/// contact's latest interaction on that provider's channel came in on, else the tenant's
/// first account of that provider.
pub async fn for_contact_on(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: Uuid,
    provider: Provider,
) -> Result<Option<Account>, sqlx::Error> {
    let last: Option<Uuid> = sqlx::query_scalar(
        "SELECT i.channel_account_id FROM interactions i
         JOIN channel_accounts a ON a.id = i.channel_account_id AND a.provider = $4
         WHERE i.tenant_id = $1 AND i.contact_id = $2 AND i.channel = $3
           AND i.channel_account_id IS NOT NULL
         ORDER BY i.created_at DESC LIMIT 1",
    )
    .bind(tenant.0)
    .bind(contact)
    .bind(provider.channel().as_str())
    .bind(provider.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = last
        && let Some(acc) = get(conn, tenant, id).await?
    {
        return Ok(Some(acc));
    }
    Ok(list(conn, tenant)
        .await?
        .into_iter()
        .find(|a| a.provider() == Some(provider)))
}

impl Account {
    /// Its provider (`None` only for a spelling this build does not know).
    pub fn provider(&self) -> Option<Provider> {
        Provider::parse(&self.provider)
    }

    /// A Twilio SMS account's configuration.
    pub fn twilio(&self) -> Option<crate::twilio_sms::Config> {
        let text = |k: &str| {
            self.provider_config
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        (self.provider() == Some(Provider::TwilioSms)).then(|| crate::twilio_sms::Config {
            account_sid: text("account_sid").unwrap_or_default(),
            from: self.phone_number_id.clone(),
            webhook_url: format!(
                "{}/webhooks/twilio_sms/{}",
                text("public_url").unwrap_or_default().trim_end_matches('/'),
                self.id
            ),
            api_base_url: self.api_base_url.clone(),
        })
    }
}
