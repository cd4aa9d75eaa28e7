//! Templates and standard responses per tenant.

use chrono::{DateTime, Utc};
use parley_core::TenantId;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name (or shortcut) is taken.
    #[error("{field} is already used")]
    Taken {
        /// Which.
        field: &'static str,
    },
    /// Database.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn taken(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.constraint() {
            Some("templates_name_key" | "standard_responses_name_key") => {
                return StoreError::Taken { field: "name" };
            }
            Some("standard_responses_shortcut_key") => {
                return StoreError::Taken { field: "shortcut" };
            }
            _ => {}
        }
    }
    StoreError::Database(e)
}

/// A template as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Template {
    /// Id.
    pub id: Uuid,
    /// Synced from this channel account.
    pub channel_account_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Language code.
    pub language: String,
    /// Category.
    pub category: String,
    /// Status.
    pub status: String,
    /// The provider's own status word.
    pub provider_status: Option<String>,
    /// The provider's id.
    pub provider_template_id: Option<String>,
    /// Why the provider rejected it.
    pub rejected_reason: Option<String>,
    /// Whether the last sync found it.
    pub known_to_provider: Option<bool>,
    /// WhatsApp components.
    pub components: Value,
    /// Field bindings.
    pub bindings: Value,
    /// Last synced.
    pub synced_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

/// A template's editable parts.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    /// Name.
    pub name: String,
    /// Language.
    pub language: String,
    /// Category.
    pub category: String,
    /// Status.
    pub status: String,
    /// Components.
    pub components: Value,
    /// Bindings.
    pub bindings: Value,
}

const T_COLUMNS: &str = "id, channel_account_id, name, language, category, status, provider_status, provider_template_id, \
                         rejected_reason, known_to_provider, components, bindings, synced_at, created_at, updated_at";

/// Create.
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    s: &TemplateSpec,
) -> Result<Template, StoreError> {
    let sql = format!(
        "INSERT INTO templates (id, tenant_id, name, language, category, status, components, bindings)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {T_COLUMNS}"
    );
    sqlx::query_as::<_, Template>(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(tenant.0)
        .bind(&s.name)
        .bind(&s.language)
        .bind(&s.category)
        .bind(&s.status)
        .bind(&s.components)
        .bind(&s.bindings)
        .fetch_one(conn)
        .await
        .map_err(taken)
}

/// Replace the editable parts.
pub async fn update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    s: &TemplateSpec,
) -> Result<Option<Template>, StoreError> {
    let sql = format!(
        "UPDATE templates SET name = $3, language = $4, category = $5, status = $6, components = $7,
                              bindings = $8, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {T_COLUMNS}"
    );
    sqlx::query_as::<_, Template>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(id)
        .bind(&s.name)
        .bind(&s.language)
        .bind(&s.category)
        .bind(&s.status)
        .bind(&s.components)
        .bind(&s.bindings)
        .fetch_optional(conn)
        .await
        .map_err(taken)
}

/// One.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<Template>, StoreError> {
    let sql = format!("SELECT {T_COLUMNS} FROM templates WHERE tenant_id = $1 AND id = $2");
    Ok(sqlx::query_as::<_, Template>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// All, by name and language; optionally one status.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    status: Option<&str>,
) -> Result<Vec<Template>, StoreError> {
    let sql = format!(
        "SELECT {T_COLUMNS} FROM templates WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY name, language"
    );
    Ok(sqlx::query_as::<_, Template>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(status)
        .fetch_all(conn)
        .await?)
}

/// Delete.
pub async fn delete(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("DELETE FROM templates WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.0)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// A template as the provider lists it.
#[derive(Debug, Clone)]
pub struct Synced {
    /// Name.
    pub name: String,
    /// Language.
    pub language: String,
    /// Category (lowercase).
    pub category: String,
    /// Status (one of ours).
    pub status: String,
    /// The provider's word.
    pub provider_status: String,
    /// The provider's id.
    pub provider_template_id: Option<String>,
    /// Rejection reason.
    pub rejected_reason: Option<String>,
    /// Components.
    pub components: Value,
}

/// Insert or refresh a synced template (bindings are Parley's own and kept); returns
/// whether it was new.
pub async fn upsert_synced(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    s: &Synced,
) -> Result<bool, StoreError> {
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO templates (id, tenant_id, channel_account_id, name, language, category, status, provider_status,
                                provider_template_id, rejected_reason, known_to_provider, components, synced_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true, $11, now())
         ON CONFLICT (tenant_id, name, language) DO UPDATE SET
             channel_account_id = $3, category = $6, status = $7, provider_status = $8, provider_template_id = $9,
             rejected_reason = $10, known_to_provider = true, components = $11, synced_at = now(), updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.0)
    .bind(account)
    .bind(&s.name)
    .bind(&s.language)
    .bind(&s.category)
    .bind(&s.status)
    .bind(&s.provider_status)
    .bind(&s.provider_template_id)
    .bind(&s.rejected_reason)
    .bind(&s.components)
    .fetch_one(conn)
    .await?;
    Ok(inserted)
}

/// After a sync of `account`: templates from that account (or never synced) that the
/// provider did not list are unknown to it. Returns their names.
pub async fn mark_unknown(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    seen: &[(String, String)],
) -> Result<Vec<String>, StoreError> {
    let names: Vec<String> = seen.iter().map(|(n, _)| n.clone()).collect();
    let langs: Vec<String> = seen.iter().map(|(_, l)| l.clone()).collect();
    Ok(sqlx::query_scalar(
        "UPDATE templates t SET known_to_provider = false, updated_at = now()
         WHERE t.tenant_id = $1 AND (t.channel_account_id = $2 OR t.channel_account_id IS NULL)
           AND NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) s(name, language)
                           WHERE s.name = t.name AND s.language = t.language)
         RETURNING t.name || ' (' || t.language || ')'",
    )
    .bind(tenant.0)
    .bind(account)
    .bind(&names)
    .bind(&langs)
    .fetch_all(conn)
    .await?)
}

/// A standard response.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StandardResponse {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Category.
    pub category: Option<String>,
    /// Text with `{{field}}`s.
    pub text: String,
    /// Shortcut (e.g. `/hello`).
    pub shortcut: Option<String>,
    /// Field bindings.
    pub bindings: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

/// A standard response's editable parts.
#[derive(Debug, Clone)]
pub struct ResponseSpec {
    /// Name.
    pub name: String,
    /// Category.
    pub category: Option<String>,
    /// Text.
    pub text: String,
    /// Shortcut.
    pub shortcut: Option<String>,
    /// Bindings.
    pub bindings: Value,
}

const R_COLUMNS: &str = "id, name, category, text, shortcut, bindings, created_at, updated_at";

/// Create or (with `id`) replace.
pub async fn save_response(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Option<Uuid>,
    s: &ResponseSpec,
) -> Result<Option<StandardResponse>, StoreError> {
    let sql = match id {
        None => format!(
            "INSERT INTO standard_responses (id, tenant_id, name, category, text, shortcut, bindings)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {R_COLUMNS}"
        ),
        Some(_) => format!(
            "UPDATE standard_responses SET name = $3, category = $4, text = $5, shortcut = $6, bindings = $7,
                                           updated_at = now()
             WHERE id = $1 AND tenant_id = $2 RETURNING {R_COLUMNS}"
        ),
    };
    sqlx::query_as::<_, StandardResponse>(sqlx::AssertSqlSafe(sql))
        .bind(id.unwrap_or_else(Uuid::now_v7))
        .bind(tenant.0)
        .bind(&s.name)
        .bind(&s.category)
        .bind(&s.text)
        .bind(&s.shortcut)
        .bind(&s.bindings)
        .fetch_optional(conn)
        .await
        .map_err(taken)
}

/// One.
pub async fn get_response(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<StandardResponse>, StoreError> {
    let sql =
        format!("SELECT {R_COLUMNS} FROM standard_responses WHERE tenant_id = $1 AND id = $2");
    Ok(
        sqlx::query_as::<_, StandardResponse>(sqlx::AssertSqlSafe(sql))
            .bind(tenant.0)
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// All (or those whose name, category, shortcut or text contain `q`), by name.
pub async fn list_responses(
    conn: &mut PgConnection,
    tenant: TenantId,
    q: Option<&str>,
) -> Result<Vec<StandardResponse>, StoreError> {
    let pattern = q.map(|q| {
        format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let sql = format!(
        "SELECT {R_COLUMNS} FROM standard_responses WHERE tenant_id = $1
           AND ($2::text IS NULL OR name ILIKE $2 OR category ILIKE $2 OR shortcut ILIKE $2 OR text ILIKE $2)
         ORDER BY (shortcut ILIKE $2) DESC NULLS LAST, name LIMIT 200"
    );
    Ok(
        sqlx::query_as::<_, StandardResponse>(sqlx::AssertSqlSafe(sql))
            .bind(tenant.0)
            .bind(pattern)
            .fetch_all(conn)
            .await?,
    )
}

/// Delete.
pub async fn delete_response(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("DELETE FROM standard_responses WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.0)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Parley's status for a provider status word.
pub fn status_from_provider(provider: &str) -> &'static str {
    match provider.to_uppercase().as_str() {
        "APPROVED" => "approved",
        "PENDING" | "IN_APPEAL" | "REINSTATED" | "UNARCHIVED" => "pending",
        "REJECTED" => "rejected",
        "PAUSED" | "FLAGGED" => "paused",
        _ => "disabled",
    }
}

#[allow(clippy::too_many_arguments)]
/// Apply a provider's status announcement to the template it names (by provider id, or
/// name and language) among the account's; returns how many templates changed.
pub async fn apply_provider_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    event: &str,
    provider_id: Option<&str>,
    name: Option<&str>,
    language: Option<&str>,
    reason: Option<&str>,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE templates SET status = $4, provider_status = $5, rejected_reason = $6, updated_at = now()
         WHERE tenant_id = $1 AND (channel_account_id = $2 OR channel_account_id IS NULL)
           AND (($3::text IS NOT NULL AND provider_template_id = $3)
                OR ($7::text IS NOT NULL AND name = $7 AND ($8::text IS NULL OR language = $8)))",
    )
    .bind(tenant.0)
    .bind(account)
    .bind(provider_id)
    .bind(status_from_provider(event))
    .bind(event.to_uppercase())
    .bind(reason)
    .bind(name)
    .bind(language)
    .execute(conn)
    .await?
    .rows_affected())
}
