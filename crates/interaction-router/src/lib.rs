//! The interaction router: agent states and capacity, offers, and routing queued
//! interactions to the Ready agent with the fewest interactions, then the longest idle
//! (the contact's last agent first, for a continuation).
//!
//! Routing runs in a transaction under an advisory lock, so several gateway replicas never
//! offer one interaction twice nor overfill an agent: whichever replica holds the lock
//! routes, the others find it taken and wait for the next wake-up (NOTIFY `parley_route`,
//! or a short poll that also expires unanswered offers).

use chrono::{DateTime, Utc};
use conversation_store::{
    StoreError,
    events::{self, Audience},
    interactions::{self, Interaction},
};
use parley_core::{InteractionId, TenantId, UserId};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// The NOTIFY channel that wakes routers.
pub const ROUTE_CHANNEL: &str = "parley_route";

/// A router failure.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No such interaction in the tenant.
    #[error("interaction not found")]
    NotFound,
    /// The caller may not act on it (not their offer or interaction).
    #[error("{0}")]
    NotYours(&'static str),
    /// The interaction is not in a state that allows this.
    #[error("{0}")]
    WrongState(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Database.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Agent states an agent may set themself.
pub const SETTABLE: [&str; 3] = ["ready", "not_ready", "after_work"];

/// Wake routers (after the caller's transaction commits).
pub async fn wake(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(ROUTE_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// An agent's state as supervisors see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AgentView {
    /// The user.
    pub user_id: Uuid,
    /// Name.
    pub display_name: String,
    /// `ready`, `not_ready`, `not_responding`, `after_work`, `offline`.
    pub state: String,
    /// Not Ready reason.
    pub reason: Option<String>,
    /// In this state since.
    pub since: DateTime<Utc>,
    /// Interactions counting against capacity (active, ended-not-done, pending offers).
    pub load: i64,
    /// Capacity.
    pub capacity: i32,
}

const LOAD_SQL: &str = "((SELECT count(*) FROM interactions x WHERE x.agent_id = u.id AND x.state IN ('active', 'ended'))
    + (SELECT count(*) FROM offers p WHERE p.agent_id = u.id AND p.state = 'pending'))";

/// Set an agent's state; appends `agent.state` for supervisors and wakes routers when the
/// agent becomes Ready.
pub async fn set_state(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    state: &str,
    reason: Option<&str>,
) -> Result<AgentView, RouterError> {
    sqlx::query(
        "INSERT INTO agent_states (user_id, tenant_id, state, reason, since, idle_since)
         VALUES ($1, $2, $3, $4, now(), now())
         ON CONFLICT (user_id) DO UPDATE SET state = $3, reason = $4, since = now(),
             idle_since = CASE WHEN $3 = 'ready' AND agent_states.state <> 'ready' THEN now() ELSE agent_states.idle_since END",
    )
    .bind(user.0)
    .bind(tenant.0)
    .bind(state)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    let view = agents(conn, tenant)
        .await?
        .into_iter()
        .find(|a| a.user_id == user.0)
        .ok_or(RouterError::NotFound)?;
    events::append(
        conn,
        tenant,
        Audience::Supervisors,
        "agent.state",
        &json!({ "agent": view }),
    )
    .await?;
    events::append(
        conn,
        tenant,
        Audience::User(user),
        "agent.state",
        &json!({ "agent": view }),
    )
    .await?;
    if state == "ready" {
        wake(conn).await?;
    }
    Ok(view)
}

/// Every agent of the tenant with state and load.
pub async fn agents(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Vec<AgentView>, RouterError> {
    let sql = format!(
        "SELECT u.id AS user_id, u.display_name, COALESCE(a.state, 'offline') AS state, a.reason,
                COALESCE(a.since, u.created_at) AS since, {LOAD_SQL} AS load, u.capacity
         FROM users u LEFT JOIN agent_states a ON a.user_id = u.id
         WHERE u.tenant_id = $1 AND u.active
         ORDER BY u.display_name, u.id"
    );
    Ok(sqlx::query_as::<_, AgentView>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .fetch_all(conn)
        .await?)
}

#[derive(sqlx::FromRow)]
struct Queued {
    id: Uuid,
    tenant_id: Uuid,
    contact_id: Uuid,
    channel: String,
}

/// One routing round (all tenants): expire unanswered offers, then offer queued
/// interactions to available agents. Returns how many offers were made or expired.
pub async fn route_round(
    conn: &mut PgConnection,
    offer_timeout_secs: f64,
) -> Result<usize, RouterError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7315002)")
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(0);
    }
    let mut changes = 0;
    let expired: Vec<(Uuid, Uuid, Uuid, Uuid)> = sqlx::query_as(
        "UPDATE offers SET state = 'timed_out', decided_at = now()
         WHERE state = 'pending' AND expires_at <= now()
         RETURNING id, tenant_id, interaction_id, agent_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (offer, tenant, interaction, agent) in expired {
        let tenant = TenantId(tenant);
        interactions::set_state(
            &mut tx,
            tenant,
            InteractionId(interaction),
            "queued",
            None,
            None,
            None,
        )
        .await?;
        events::append(
            &mut tx,
            tenant,
            Audience::User(UserId(agent)),
            "interaction.offer_revoked",
            &json!({ "offer_id": offer, "interaction_id": interaction, "reason": "timed_out" }),
        )
        .await?;
        set_state(
            &mut tx,
            tenant,
            UserId(agent),
            "not_responding",
            Some("missed an offer"),
        )
        .await?;
        changes += 1;
    }
    let queued = sqlx::query_as::<_, Queued>(
        "SELECT id, tenant_id, contact_id, channel FROM interactions
         WHERE state = 'queued' ORDER BY created_at, id LIMIT 200 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for q in queued {
        let sql = format!(
            "SELECT u.id FROM agent_states a JOIN users u ON u.id = a.user_id
             WHERE a.tenant_id = $1 AND a.state = 'ready' AND u.active
               AND NOT EXISTS (SELECT 1 FROM offers o WHERE o.interaction_id = $2 AND o.agent_id = u.id
                               AND o.state IN ('declined', 'timed_out'))
               AND u.capacity > {LOAD_SQL}
             ORDER BY (u.id = (SELECT i.agent_id FROM interactions i
                               WHERE i.contact_id = $3 AND i.agent_id IS NOT NULL AND i.id <> $2
                                 AND COALESCE(i.done_at, i.ended_at, i.accepted_at) > now() - interval '24 hours'
                               ORDER BY i.created_at DESC LIMIT 1)) DESC NULLS LAST,
                      {LOAD_SQL} ASC, a.idle_since ASC, u.id
             LIMIT 1"
        );
        let agent: Option<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(q.tenant_id)
            .bind(q.id)
            .bind(q.contact_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(agent) = agent else { continue };
        let tenant = TenantId(q.tenant_id);
        let offer = Uuid::now_v7();
        let expires: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO offers (id, tenant_id, interaction_id, agent_id, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
        )
        .bind(offer)
        .bind(q.tenant_id)
        .bind(q.id)
        .bind(agent)
        .bind(offer_timeout_secs)
        .fetch_one(&mut *tx)
        .await?;
        interactions::set_state(
            &mut tx,
            tenant,
            InteractionId(q.id),
            "offered",
            None,
            None,
            None,
        )
        .await?;
        events::append(
            &mut tx,
            tenant,
            Audience::User(UserId(agent)),
            "interaction.offered",
            &json!({
                "offer_id": offer, "interaction_id": q.id, "contact_id": q.contact_id,
                "channel": q.channel, "expires_at": expires,
            }),
        )
        .await?;
        changes += 1;
    }
    tx.commit().await?;
    Ok(changes)
}

async fn pending_offer(
    conn: &mut PgConnection,
    tenant: TenantId,
    interaction: InteractionId,
) -> Result<Option<(Uuid, Uuid)>, RouterError> {
    Ok(sqlx::query_as(
        "SELECT id, agent_id FROM offers WHERE tenant_id = $1 AND interaction_id = $2 AND state = 'pending' FOR UPDATE",
    )
    .bind(tenant.0)
    .bind(interaction.0)
    .fetch_optional(conn)
    .await?)
}

/// The offered agent accepts: the interaction becomes active and theirs.
pub async fn accept(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    interaction: InteractionId,
) -> Result<Interaction, RouterError> {
    let (offer, agent) = pending_offer(conn, tenant, interaction)
        .await?
        .ok_or_else(|| {
            RouterError::WrongState("there is no pending offer for this interaction".into())
        })?;
    if agent != user.0 {
        return Err(RouterError::NotYours("the offer is for another agent"));
    }
    sqlx::query("UPDATE offers SET state = 'accepted', decided_at = now() WHERE id = $1")
        .bind(offer)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE agent_states SET idle_since = now() WHERE user_id = $1")
        .bind(user.0)
        .execute(&mut *conn)
        .await?;
    let i = interactions::set_state(
        conn,
        tenant,
        interaction,
        "active",
        Some(user.0),
        None,
        None,
    )
    .await?
    .ok_or(RouterError::NotFound)?;
    events::append(
        conn,
        tenant,
        Audience::Tenant,
        "interaction.accepted",
        &json!({ "interaction": i }),
    )
    .await?;
    Ok(i)
}

/// The offered agent declines: the interaction goes back to the queue and is offered to
/// someone else (never again to this agent).
pub async fn decline(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    interaction: InteractionId,
) -> Result<(), RouterError> {
    let (offer, agent) = pending_offer(conn, tenant, interaction)
        .await?
        .ok_or_else(|| {
            RouterError::WrongState("there is no pending offer for this interaction".into())
        })?;
    if agent != user.0 {
        return Err(RouterError::NotYours("the offer is for another agent"));
    }
    sqlx::query("UPDATE offers SET state = 'declined', decided_at = now() WHERE id = $1")
        .bind(offer)
        .execute(&mut *conn)
        .await?;
    interactions::set_state(conn, tenant, interaction, "queued", None, None, None).await?;
    events::append(
        conn,
        tenant,
        Audience::User(user),
        "interaction.offer_revoked",
        &json!({ "offer_id": offer, "interaction_id": interaction, "reason": "declined" }),
    )
    .await?;
    wake(conn).await?;
    Ok(())
}

async fn own(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    interaction: InteractionId,
) -> Result<Interaction, RouterError> {
    let i = interactions::get(conn, tenant, interaction)
        .await?
        .ok_or(RouterError::NotFound)?;
    if i.agent_id != Some(user.0) {
        return Err(RouterError::NotYours("the interaction is not yours"));
    }
    Ok(i)
}

/// The agent ends the conversation (it still counts against capacity until Done).
pub async fn end(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    interaction: InteractionId,
) -> Result<Interaction, RouterError> {
    let i = own(conn, tenant, user, interaction).await?;
    if i.state != "active" {
        return Err(RouterError::WrongState(format!(
            "only an active interaction can be ended; it is {}",
            i.state
        )));
    }
    let i = interactions::set_state(
        conn,
        tenant,
        interaction,
        "ended",
        None,
        Some("agent"),
        None,
    )
    .await?
    .ok_or(RouterError::NotFound)?;
    events::append(
        conn,
        tenant,
        Audience::Tenant,
        "interaction.ended",
        &json!({ "interaction": i }),
    )
    .await?;
    Ok(i)
}

/// The agent marks it Done (with an optional disposition); capacity is freed.
pub async fn done(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    interaction: InteractionId,
    disposition: Option<&str>,
) -> Result<Interaction, RouterError> {
    let i = own(conn, tenant, user, interaction).await?;
    if !matches!(i.state.as_str(), "active" | "ended") {
        return Err(RouterError::WrongState(format!(
            "only an active or ended interaction can be marked done; it is {}",
            i.state
        )));
    }
    if i.state == "active" {
        interactions::set_state(
            conn,
            tenant,
            interaction,
            "ended",
            None,
            Some("agent"),
            None,
        )
        .await?;
    }
    let i = interactions::set_state(conn, tenant, interaction, "done", None, None, disposition)
        .await?
        .ok_or(RouterError::NotFound)?;
    events::append(
        conn,
        tenant,
        Audience::Tenant,
        "interaction.done",
        &json!({ "interaction": i }),
    )
    .await?;
    wake(conn).await?;
    Ok(i)
}
