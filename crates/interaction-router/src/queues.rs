//! Admin-defined queues: which channels they take, the skills an agent needs (and which
//! of them may be dropped after a wait), the offer timeout, wrap-up codes and whether an
//! ended-but-not-Done interaction still counts against capacity. And what waits in them.

use chrono::{DateTime, Utc};
use parley_core::TenantId;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::RouterError;

/// A queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Queue {
    /// Id.
    pub id: Uuid,
    /// Name, unique in the tenant.
    pub name: String,
    /// Channels it takes (empty: all).
    pub channels: Vec<String>,
    /// Skills an agent needs.
    pub skills: Vec<String>,
    /// After this many seconds of waiting, `relaxable_skills` are no longer required.
    pub relax_after_secs: Option<i32>,
    /// Skills dropped after `relax_after_secs`.
    pub relaxable_skills: Vec<String>,
    /// How long an agent has to accept an offer.
    pub offer_timeout_secs: i32,
    /// Wrap-up codes; when any are set, Done needs one of them.
    pub wrap_up_codes: Vec<String>,
    /// Whether an ended (not Done) interaction counts against the agent's capacity.
    pub ended_counts: bool,
    /// An active interaction in which nobody wrote for this long is ended by the system.
    pub inactivity_timeout_secs: Option<i32>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A queue's settings as written.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Name.
    pub name: String,
    /// Channels.
    pub channels: Vec<String>,
    /// Skills.
    pub skills: Vec<String>,
    /// Relaxation threshold.
    pub relax_after_secs: Option<i32>,
    /// Relaxable skills.
    pub relaxable_skills: Vec<String>,
    /// Offer timeout.
    pub offer_timeout_secs: i32,
    /// Wrap-up codes.
    pub wrap_up_codes: Vec<String>,
    /// Ended counts against capacity.
    pub ended_counts: bool,
    /// Inactivity timeout.
    pub inactivity_timeout_secs: Option<i32>,
}

const COLUMNS: &str = "id, name, channels, skills, relax_after_secs, relaxable_skills, offer_timeout_secs, \
                       wrap_up_codes, ended_counts, inactivity_timeout_secs, created_at, updated_at";

fn conflict(e: sqlx::Error) -> RouterError {
    if let sqlx::Error::Database(db) = &e
        && db.constraint() == Some("queues_name_key")
    {
        return RouterError::Invalid {
            field: "name",
            message: "a queue with this name already exists".into(),
        };
    }
    RouterError::Database(e)
}

/// Create a queue.
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    spec: &QueueSpec,
) -> Result<Queue, RouterError> {
    let sql = format!(
        "INSERT INTO queues (id, tenant_id, name, channels, skills, relax_after_secs, relaxable_skills,
                             offer_timeout_secs, wrap_up_codes, ended_counts, inactivity_timeout_secs)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, Queue>(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(tenant.0)
        .bind(&spec.name)
        .bind(&spec.channels)
        .bind(&spec.skills)
        .bind(spec.relax_after_secs)
        .bind(&spec.relaxable_skills)
        .bind(spec.offer_timeout_secs)
        .bind(&spec.wrap_up_codes)
        .bind(spec.ended_counts)
        .bind(spec.inactivity_timeout_secs)
        .fetch_one(conn)
        .await
        .map_err(conflict)
}

/// Replace a queue's settings; `None` when the tenant has no such queue.
pub async fn update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    spec: &QueueSpec,
) -> Result<Option<Queue>, RouterError> {
    let sql = format!(
        "UPDATE queues SET name = $3, channels = $4, skills = $5, relax_after_secs = $6, relaxable_skills = $7,
                           offer_timeout_secs = $8, wrap_up_codes = $9, ended_counts = $10,
                           inactivity_timeout_secs = $11, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    );
    let q = sqlx::query_as::<_, Queue>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(id)
        .bind(&spec.name)
        .bind(&spec.channels)
        .bind(&spec.skills)
        .bind(spec.relax_after_secs)
        .bind(&spec.relaxable_skills)
        .bind(spec.offer_timeout_secs)
        .bind(&spec.wrap_up_codes)
        .bind(spec.ended_counts)
        .bind(spec.inactivity_timeout_secs)
        .fetch_optional(&mut *conn)
        .await
        .map_err(conflict)?;
    if q.is_some() {
        // Relaxed skills or a new ended-counts rule may free agents for waiting work.
        crate::wake(conn).await?;
    }
    Ok(q)
}

/// One queue.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<Queue>, RouterError> {
    let sql = format!("SELECT {COLUMNS} FROM queues WHERE tenant_id = $1 AND id = $2");
    Ok(sqlx::query_as::<_, Queue>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Every queue of the tenant, by name.
pub async fn list(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Queue>, RouterError> {
    let sql = format!("SELECT {COLUMNS} FROM queues WHERE tenant_id = $1 ORDER BY name, id");
    Ok(sqlx::query_as::<_, Queue>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .fetch_all(conn)
        .await?)
}

/// Delete a queue; interactions in it fall back to routing without a queue and channel
/// accounts lose it as their default.
pub async fn delete(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<bool, RouterError> {
    let n = sqlx::query("DELETE FROM queues WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    crate::wake(conn).await?;
    Ok(n > 0)
}

/// An interaction waiting in a queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Waiting {
    /// The interaction.
    pub interaction_id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// The channel.
    pub channel: String,
    /// 1 is next.
    pub position: i64,
    /// Since when it waits.
    pub queued_at: DateTime<Utc>,
    /// Seconds waited so far.
    pub waiting_secs: f64,
    /// Whether an offer to an agent is out for it right now.
    pub offered: bool,
}

/// What waits in a queue, next first (interactions being offered keep their place).
pub async fn waiting(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> Result<Vec<Waiting>, RouterError> {
    Ok(sqlx::query_as::<_, Waiting>(
        "SELECT id AS interaction_id, contact_id, channel,
                row_number() OVER (ORDER BY queued_at, id) AS position, queued_at,
                EXTRACT(EPOCH FROM now() - queued_at)::float8 AS waiting_secs,
                state = 'offered' AS offered
         FROM interactions WHERE tenant_id = $1 AND queue_id = $2 AND state IN ('queued', 'offered')
         ORDER BY queued_at, id",
    )
    .bind(tenant.0)
    .bind(id)
    .fetch_all(conn)
    .await?)
}

/// The tenant's Not Ready reason codes and their labels, by code.
pub async fn reasons(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Vec<(String, String)>, RouterError> {
    Ok(sqlx::query_as(
        "SELECT code, label FROM not_ready_reasons WHERE tenant_id = $1 ORDER BY code",
    )
    .bind(tenant.0)
    .fetch_all(conn)
    .await?)
}

/// Add a Not Ready reason, or relabel it.
pub async fn save_reason(
    conn: &mut PgConnection,
    tenant: TenantId,
    code: &str,
    label: &str,
) -> Result<(), RouterError> {
    sqlx::query(
        "INSERT INTO not_ready_reasons (tenant_id, code, label) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, code) DO UPDATE SET label = $3",
    )
    .bind(tenant.0)
    .bind(code)
    .bind(label)
    .execute(conn)
    .await?;
    Ok(())
}

/// Remove a Not Ready reason; whether it existed.
pub async fn delete_reason(
    conn: &mut PgConnection,
    tenant: TenantId,
    code: &str,
) -> Result<bool, RouterError> {
    let n = sqlx::query("DELETE FROM not_ready_reasons WHERE tenant_id = $1 AND code = $2")
        .bind(tenant.0)
        .bind(code)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}
