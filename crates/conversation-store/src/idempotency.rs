//! Idempotency keys for agent sends: a retried request with the same key gets the first
//! answer and acts nothing twice. The key row is written in the same transaction as the
//! work, so concurrent retries serialise on it.

use parley_core::{TenantId, UserId};
use serde_json::Value;
use sqlx::PgConnection;

use crate::StoreError;

/// What a key lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// New key: do the work, then [`finish`].
    Fresh,
    /// Done before: answer with this.
    Replay {
        /// HTTP status.
        status: i32,
        /// Body.
        body: Value,
    },
    /// The key was used for a different request.
    Mismatch,
}

/// Claim `key` for a request whose canonical form hashes to `request_hash`.
pub async fn claim(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    key: &str,
    request_hash: &str,
) -> Result<Claim, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, user_id, key, request_hash)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.0)
    .bind(user.0)
    .bind(key)
    .bind(request_hash)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let row: Option<(String, Option<i32>, Option<Value>)> = sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys
         WHERE tenant_id = $1 AND user_id = $2 AND key = $3",
    )
    .bind(tenant.0)
    .bind(user.0)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    match row {
        Some((hash, _, _)) if hash != request_hash => Ok(Claim::Mismatch),
        Some((_, Some(status), Some(body))) => Ok(Claim::Replay { status, body }),
        // Committed without a response cannot happen (both are written in one
        // transaction); treat it as a mismatch rather than act twice.
        _ => Ok(Claim::Mismatch),
    }
}

/// Record the answer for `key` (same transaction as the work).
pub async fn finish(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    key: &str,
    status: i32,
    body: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $4, response_body = $5
         WHERE tenant_id = $1 AND user_id = $2 AND key = $3",
    )
    .bind(tenant.0)
    .bind(user.0)
    .bind(key)
    .bind(status)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}
