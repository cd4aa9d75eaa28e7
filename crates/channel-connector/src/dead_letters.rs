//! Signed webhook bodies that could not be parsed: kept with the reason, for admins.

use chrono::{DateTime, Utc};
use parley_core::TenantId;
use sqlx::PgConnection;
use uuid::Uuid;

/// A kept body.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    /// Id.
    pub id: i64,
    /// The channel account it arrived on.
    pub channel_account_id: Uuid,
    /// Why it could not be processed.
    pub reason: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When an admin replayed it successfully.
    pub replayed_at: Option<DateTime<Utc>>,
}

/// Keep a body (once: the same body kept again for the account is a no-op).
pub async fn record(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    reason: &str,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_dead_letters (tenant_id, channel_account_id, reason, body)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, channel_account_id, sha256(body)) DO NOTHING",
    )
    .bind(tenant.0)
    .bind(account)
    .bind(reason)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest dead letters of one of a tenant's channel accounts.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as::<_, DeadLetter>(
        "SELECT id, channel_account_id, reason, body, created_at, replayed_at
         FROM webhook_dead_letters
         WHERE tenant_id = $1 AND channel_account_id = $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant.0)
    .bind(account)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One dead letter of a tenant's channel account.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    id: i64,
) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as::<_, DeadLetter>(
        "SELECT id, channel_account_id, reason, body, created_at, replayed_at
         FROM webhook_dead_letters
         WHERE tenant_id = $1 AND channel_account_id = $2 AND id = $3",
    )
    .bind(tenant.0)
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Mark a dead letter replayed (its content is now stored).
pub async fn mark_replayed(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_dead_letters SET replayed_at = coalesce(replayed_at, now())
         WHERE tenant_id = $1 AND id = $2 RETURNING replayed_at",
    )
    .bind(tenant.0)
    .bind(id)
    .fetch_optional(conn)
    .await
    .map(Option::flatten)
}
