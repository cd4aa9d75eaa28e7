//! The event log: every change an agent's desktop must learn about is a row here, written
//! in the same transaction as the change. The gateway streams them.

use parley_core::{TenantId, UserId};
use serde_json::Value;
use sqlx::PgConnection;

use crate::StoreError;

/// Who may see an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every user of the tenant.
    Tenant,
    /// Supervisors and admins of the tenant.
    Supervisors,
    /// One user.
    User(UserId),
}

/// Append an event; returns its id.
pub async fn append(
    conn: &mut PgConnection,
    tenant: TenantId,
    audience: Audience,
    kind: &str,
    payload: &Value,
) -> Result<i64, StoreError> {
    let (aud, user) = match audience {
        Audience::Tenant => ("tenant", None),
        Audience::Supervisors => ("supervisors", None),
        Audience::User(u) => ("user", Some(u.0)),
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (tenant_id, audience, user_id, kind, payload)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(tenant.0)
    .bind(aud)
    .bind(user)
    .bind(kind)
    .bind(payload)
    .fetch_one(&mut *conn)
    .await?;
    // Wakes listeners after commit; the payload carries ids only.
    sqlx::query("SELECT pg_notify('parley_events', $1)")
        .bind(format!("{}:{id}", tenant.0))
        .execute(conn)
        .await?;
    Ok(id)
}

/// A stored event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    /// Monotonic id.
    pub id: i64,
    /// Kind, e.g. `message.created`.
    pub kind: String,
    /// Audience spelling.
    pub audience: String,
    /// For `user` audience.
    pub user_id: Option<uuid::Uuid>,
    /// What happened.
    pub payload: Value,
}

/// Events of a tenant after `after`, oldest first (for tests and the stream).
pub async fn list_after(
    conn: &mut PgConnection,
    tenant: TenantId,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    Ok(sqlx::query_as::<_, Event>(
        "SELECT id, kind, audience, user_id, payload FROM events
         WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(tenant.0)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
