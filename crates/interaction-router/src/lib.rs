//! The interaction router: agent states and capacity, offers, and routing queued
//! interactions to the Ready agent with the fewest interactions, then the longest idle
//! (the contact's last agent first, for a continuation).
//!
//! Routing runs in a transaction under an advisory lock, so several gateway replicas never
//! offer one interaction twice nor overfill an agent: whichever replica holds the lock
//! routes, the others find it taken and wait for the next wake-up (NOTIFY `parley_route`,
//! or a short poll that also expires unanswered offers).

pub mod queues;
pub mod reports;

use chrono::{DateTime, Utc};
use conversation_store::{
    StoreError,
    events::{self, Audience},
    interactions::{self, Interaction},
};
use parley_core::{
    InteractionId, TenantId, UserId,
    state::{AgentState, InteractionState},
};
use serde::Serialize;
use serde_json::json;
use sqlx::{AssertSqlSafe, PgConnection};
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
    /// A field of the request is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// Something named in the request does not exist in the tenant.
    #[error("{0} not found")]
    Missing(&'static str),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Database.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Agent states an agent may set themself.
pub const SETTABLE: [AgentState; 3] = [
    AgentState::Ready,
    AgentState::NotReady,
    AgentState::AfterWork,
];

/// Routing settings that are not per queue.
#[derive(Debug, Clone, Copy)]
pub struct RouteSettings {
    /// Offer timeout for interactions outside any queue.
    pub offer_timeout_secs: f64,
    /// An agent with no event-stream socket for this long goes `offline`.
    pub offline_grace_secs: f64,
    /// A continuation within this long after the last interaction goes first to its agent.
    pub continuation_window_secs: f64,
}

impl Default for RouteSettings {
    fn default() -> Self {
        Self {
            offer_timeout_secs: 30.0,
            offline_grace_secs: 60.0,
            continuation_window_secs: 86_400.0,
        }
    }
}

/// Refuse a message from `user` into `contact`'s live chat on `channel` when another agent
/// has it (active). Ended and done conversations may be continued by anyone (the
/// Communication tab), and a queued or offered one by whoever writes first.
pub async fn check_not_anothers_chat(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    contact: parley_core::ContactId,
    channel: parley_core::channel::Channel,
) -> Result<(), RouterError> {
    let other: Option<Uuid> = sqlx::query_scalar(
        "SELECT agent_id FROM interactions
         WHERE tenant_id = $1 AND contact_id = $2 AND channel = $3 AND state = 'active'
           AND agent_id IS DISTINCT FROM $4",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(channel.as_str())
    .bind(user.0)
    .fetch_optional(conn)
    .await?;
    match other {
        Some(_) => Err(RouterError::NotYours(
            "another agent is handling this contact's chat; ask a supervisor to transfer it",
        )),
        None => Ok(()),
    }
}

/// Record who makes the state changes of the current transaction (a user id, `contact` or
/// `system`); the interaction history takes it from here.
pub async fn act_as(conn: &mut PgConnection, actor: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('parley.actor', $1, true)")
        .bind(actor)
        .execute(conn)
        .await?;
    Ok(())
}

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
    /// Whether an event-stream socket of theirs is open.
    pub event_stream: bool,
}

/// What counts against `u`'s capacity: active interactions, ended ones not yet Done (unless
/// their queue says otherwise), and pending offers.
/// The queue a new interaction joins (`i` being the interaction): its channel account's
/// default queue, else its tenant's first queue that takes its channel, else none (any
/// agent may take it).
const QUEUE_FOR: &str = "COALESCE(
    (SELECT ca.default_queue_id FROM channel_accounts ca WHERE ca.id = i.channel_account_id),
    (SELECT qq.id FROM queues qq WHERE qq.tenant_id = i.tenant_id
       AND (cardinality(qq.channels) = 0 OR i.channel = ANY (qq.channels))
     ORDER BY qq.created_at, qq.id LIMIT 1))";

const LOAD_SQL: &str = "((SELECT count(*) FROM interactions x LEFT JOIN queues xq ON xq.id = x.queue_id
                          WHERE x.agent_id = u.id
                            AND (x.state = 'active' OR (x.state = 'ended' AND COALESCE(xq.ended_counts, true)
                                                        AND x.ended_by IS DISTINCT FROM 'system')))
    + (SELECT count(*) FROM offers p WHERE p.agent_id = u.id AND p.state = 'pending'))";

/// The statement that picks the agent for a queued interaction (`$1` tenant, `$2`
/// interaction, `$3` contact, `$4` skills, `$5` the transfer's agent or null, `$6` the
/// continuation window in seconds, `$7` the agent who handed it to a queue or null, `$8`
/// when): a Ready, active agent with room and the skills (or the one a transfer names).
///
/// An agent who declined it, let its offer time out or handed it away is passed over
/// until they go Ready anew (a missed offer makes them Not Responding; a decline is
/// answered by going Not Ready and back), and then comes after everyone else: an
/// interaction is never left queued for good because every agent once refused it.
/// Among the rest, the contact's last agent within the window first, then the least
/// loaded, then the longest idle. Public so that a test explains the very statement the
/// router runs.
pub fn agent_pick_sql() -> String {
    // The contact's last agent is looked up within the tenant, which lets the contact
    // index answer it (by the contact alone it was a scan of every interaction, on every
    // routed interaction).
    format!(
        "SELECT u.id FROM agent_states a JOIN users u ON u.id = a.user_id
         WHERE a.tenant_id = $1 AND a.state = 'ready' AND u.active AND a.socket_lost_at IS NULL
           AND ($5::uuid IS NULL OR u.id = $5)
           AND ($5::uuid IS NOT NULL OR u.skills @> $4::text[])
           AND NOT EXISTS (SELECT 1 FROM offers o WHERE o.interaction_id = $2 AND o.agent_id = u.id
                           AND o.state IN ('declined', 'timed_out') AND o.decided_at >= a.since)
           AND NOT COALESCE(u.id = $7::uuid AND a.since <= $8::timestamptz, false)
           AND u.capacity > {LOAD_SQL}
         ORDER BY (u.id IS NOT DISTINCT FROM $7::uuid
                   OR EXISTS (SELECT 1 FROM offers o WHERE o.interaction_id = $2 AND o.agent_id = u.id
                              AND o.state IN ('declined', 'timed_out'))) ASC,
                  (u.id = (SELECT i.agent_id FROM interactions i
                           WHERE i.tenant_id = $1 AND i.contact_id = $3
                             AND i.agent_id IS NOT NULL AND i.id <> $2
                             AND COALESCE(i.done_at, i.ended_at, i.accepted_at) > now() - make_interval(secs => $6)
                           ORDER BY i.created_at DESC LIMIT 1)) DESC NULLS LAST,
                  {LOAD_SQL} ASC, a.idle_since ASC, u.id
         LIMIT 1"
    )
}

/// How many of one tenant's oldest queued interactions a routing round looks at. Each
/// tenant with a Ready agent gets its own share, so one tenant's backlog (say, hundreds
/// its agents cannot take) never keeps another tenant's chats from their free agents.
pub const ROUND_PER_TENANT: i64 = 50;

/// Check a Not Ready reason: when the tenant has defined reason codes, it must be one of
/// them; otherwise any short text (or none) will do.
pub async fn check_reason(
    conn: &mut PgConnection,
    tenant: TenantId,
    reason: Option<&str>,
) -> Result<(), RouterError> {
    let codes: Vec<String> =
        sqlx::query_scalar("SELECT code FROM not_ready_reasons WHERE tenant_id = $1 ORDER BY code")
            .bind(tenant.0)
            .fetch_all(conn)
            .await?;
    if codes.is_empty() {
        return Ok(());
    }
    match reason {
        Some(r) if codes.iter().any(|c| c == r) => Ok(()),
        _ => Err(RouterError::Invalid {
            field: "reason",
            message: format!("must be one of the Not Ready reasons: {}", codes.join(", ")),
        }),
    }
}

/// Note that the agent has a live event-stream socket (called on connect and on every
/// presence tick), or (`lost`) that a replica saw its last one there close. An agent seen
/// within the grace period is not made `offline`; one whose socket was lost gets no new
/// offers until a socket of theirs is seen again (a pending offer stays theirs to accept
/// after a reload: `GET /me/state` lists it).
pub async fn touch_presence(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    lost: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_states (user_id, tenant_id, last_seen_at, socket_lost_at)
         VALUES ($1, $2, now(), CASE WHEN $3 THEN now() END)
         ON CONFLICT (user_id) DO UPDATE SET last_seen_at = now(),
             socket_lost_at = CASE WHEN $3 THEN now() END",
    )
    .bind(user.0)
    .bind(tenant.0)
    .bind(lost)
    .execute(conn)
    .await?;
    Ok(())
}

/// A pending offer, as its agent sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PendingOffer {
    /// The offer.
    pub offer_id: Uuid,
    /// The interaction offered.
    pub interaction_id: Uuid,
    /// Its contact.
    pub contact_id: Uuid,
    /// Its channel.
    pub channel: String,
    /// When the offer lapses.
    pub expires_at: DateTime<Utc>,
    /// Whether it comes by transfer.
    pub transfer: bool,
}

/// `user`'s pending offers, oldest first (a desktop recovering after a reload).
pub async fn pending_offers(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<PendingOffer>, RouterError> {
    Ok(sqlx::query_as::<_, PendingOffer>(
        "SELECT o.id AS offer_id, o.interaction_id, i.contact_id, i.channel, o.expires_at,
                i.transfer_to IS NOT NULL AS transfer
         FROM offers o JOIN interactions i ON i.id = o.interaction_id
         WHERE o.agent_id = $2 AND o.state = 'pending' AND o.tenant_id = $1 AND i.tenant_id = $1
         ORDER BY o.created_at",
    )
    .bind(tenant.0)
    .bind(user.0)
    .fetch_all(conn)
    .await?)
}

/// Set an agent's state; appends `agent.state` for supervisors and wakes routers when the
/// agent becomes Ready.
pub async fn set_state(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    state: AgentState,
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
    .bind(state.as_str())
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
    // The agent's own copy, unless the supervisors' copy already reaches them (a
    // supervisor or admin got each of their own changes twice).
    let sees_supervisor_events: bool = sqlx::query_scalar(
        "SELECT role IN ('supervisor', 'admin') FROM users WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(user.0)
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(false);
    if !sees_supervisor_events {
        events::append(
            conn,
            tenant,
            Audience::User(user),
            "agent.state",
            &json!({ "agent": view }),
        )
        .await?;
    }
    if state == AgentState::Ready {
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
                COALESCE(a.since, u.created_at) AS since, {LOAD_SQL} AS load, u.capacity,
                COALESCE(a.last_seen_at IS NOT NULL AND a.socket_lost_at IS NULL
                         AND a.state <> 'offline', false) AS event_stream
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
    transfer_to: Option<Uuid>,
    skills: Option<Vec<String>>,
    relaxable_skills: Option<Vec<String>>,
    relaxed: bool,
    offer_timeout_secs: Option<i32>,
    transferred_by: Option<Uuid>,
    transferred_at: Option<DateTime<Utc>>,
}

/// Offer `interaction` to `agent` (in the caller's transaction, which must hold the
/// routing lock): a pending offer, the interaction `offered`, `interaction.offered` to
/// the agent.
#[allow(clippy::too_many_arguments)]
async fn make_offer(
    tx: &mut PgConnection,
    tenant: TenantId,
    interaction: Uuid,
    contact: Uuid,
    channel: &str,
    agent: Uuid,
    timeout_secs: f64,
    transfer: bool,
) -> Result<(), RouterError> {
    let offer = Uuid::now_v7();
    let expires: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO offers (id, tenant_id, interaction_id, agent_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp() + make_interval(secs => $5))
         RETURNING expires_at",
    )
    .bind(offer)
    .bind(tenant.0)
    .bind(interaction)
    .bind(agent)
    .bind(timeout_secs)
    .fetch_one(&mut *tx)
    .await?;
    interactions::set_state(
        tx,
        tenant,
        InteractionId(interaction),
        InteractionState::Offered,
        None,
        None,
        None,
    )
    .await?;
    events::append(
        tx,
        tenant,
        Audience::User(UserId(agent)),
        "interaction.offered",
        &json!({
            "offer_id": offer, "interaction_id": interaction, "contact_id": contact,
            "channel": channel, "expires_at": expires, "transfer": transfer,
        }),
    )
    .await?;
    Ok(())
}

/// Put an interaction back in its queue after an offer failed (declined or timed out);
/// a transfer to a named agent falls back to the queue.
async fn requeue(
    tx: &mut PgConnection,
    tenant: TenantId,
    interaction: Uuid,
) -> Result<(), RouterError> {
    sqlx::query("UPDATE interactions SET transfer_to = NULL WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(interaction)
        .execute(&mut *tx)
        .await?;
    interactions::set_state(
        tx,
        tenant,
        InteractionId(interaction),
        InteractionState::Queued,
        None,
        None,
        None,
    )
    .await?;
    Ok(())
}

/// Take the routing lock for the rest of the transaction, waiting for it.
async fn lock_routing(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(7315002)")
        .execute(tx)
        .await?;
    Ok(())
}

/// One routing round (all tenants): expire unanswered offers, take agents without a
/// live socket offline, give new interactions their queue, then offer queued
/// interactions to available agents. Returns how many changes were made.
pub async fn route_round(
    conn: &mut PgConnection,
    settings: &RouteSettings,
) -> Result<usize, RouterError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7315002)")
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(0);
    }
    act_as(&mut tx, "system").await?;
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
        requeue(&mut tx, tenant, interaction).await?;
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
            AgentState::NotResponding,
            Some("missed an offer"),
        )
        .await?;
        changes += 1;
    }
    // Chats nobody wrote in for their queue's inactivity timeout end (by the system; they
    // no longer count against the agent's capacity).
    let idle: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT i.id, i.tenant_id FROM interactions i JOIN queues q ON q.id = i.queue_id
         WHERE i.state = 'active' AND q.inactivity_timeout_secs IS NOT NULL
           AND GREATEST(i.accepted_at,
                        (SELECT max(m.created_at) FROM messages m WHERE m.interaction_id = i.id))
               < now() - make_interval(secs => q.inactivity_timeout_secs)
         FOR UPDATE OF i SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (interaction, tenant) in idle {
        let ended = end_as(
            &mut tx,
            TenantId(tenant),
            InteractionId(interaction),
            "system",
            Some("inactivity"),
        )
        .await?;
        if ended.is_some() {
            changes += 1;
        }
    }
    let gone: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT user_id, tenant_id FROM agent_states
         WHERE state <> 'offline' AND GREATEST(last_seen_at, since) < now() - make_interval(secs => $1)
         FOR UPDATE",
    )
    .bind(settings.offline_grace_secs)
    .fetch_all(&mut *tx)
    .await?;
    for (user, tenant) in gone {
        set_state(
            &mut tx,
            TenantId(tenant),
            UserId(user),
            AgentState::Offline,
            None,
        )
        .await?;
        changes += 1;
    }
    // New interactions join their queue (`QUEUE_FOR`). Only tenants
    // with queues are looked at (a default queue is one of its tenant's queues), through
    // the index of queued interactions without a queue: elsewhere those stay without one,
    // and a backlog of them must not be read again on every round.
    let with_queues: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM queues")
        .fetch_all(&mut *tx)
        .await?;
    if !with_queues.is_empty() {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE interactions i SET queue_id = {QUEUE_FOR}
             WHERE i.tenant_id = ANY ($1) AND i.state = 'queued' AND i.queue_id IS NULL"
        )))
        .bind(&with_queues)
        .execute(&mut *tx)
        .await?;
    }
    // An interaction committed after the statement above began is seen here without the
    // queue it will get: it waits for the next round (its own wake-up brings one) rather
    // than go to an agent its queue's skills would pass over. One no queue takes stays
    // open to any agent.
    let queued = sqlx::query_as::<_, Queued>(AssertSqlSafe(format!(
        "SELECT w.* FROM (SELECT DISTINCT tenant_id FROM agent_states WHERE state = 'ready') t
         CROSS JOIN LATERAL (
           SELECT i.id, i.tenant_id, i.contact_id, i.channel, i.transfer_to, q.skills, q.relaxable_skills,
                  (q.relax_after_secs IS NOT NULL AND i.queued_at <= now() - make_interval(secs => q.relax_after_secs)) AS relaxed,
                  q.offer_timeout_secs, i.transferred_by, i.transferred_at, i.queued_at
           FROM interactions i LEFT JOIN queues q ON q.id = i.queue_id
           WHERE i.tenant_id = t.tenant_id AND i.state = 'queued'
             AND (i.queue_id IS NOT NULL OR NOT (i.tenant_id = ANY ($1)) OR {QUEUE_FOR} IS NULL)
           ORDER BY i.queued_at, i.id LIMIT $2 FOR UPDATE OF i SKIP LOCKED) w
         ORDER BY w.queued_at, w.id"
    )))
    .bind(&with_queues)
    .bind(ROUND_PER_TENANT)
    .fetch_all(&mut *tx)
    .await?;
    for q in queued {
        let mut skills = q.skills.clone().unwrap_or_default();
        if q.relaxed {
            let drop = q.relaxable_skills.clone().unwrap_or_default();
            skills.retain(|s| !drop.contains(s));
        }
        let agent: Option<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(agent_pick_sql()))
            .bind(q.tenant_id)
            .bind(q.id)
            .bind(q.contact_id)
            .bind(&skills)
            .bind(q.transfer_to)
            .bind(settings.continuation_window_secs)
            .bind(q.transferred_by)
            .bind(q.transferred_at)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(agent) = agent else { continue };
        let timeout = q
            .offer_timeout_secs
            .map_or(settings.offer_timeout_secs, f64::from);
        make_offer(
            &mut tx,
            TenantId(q.tenant_id),
            q.id,
            q.contact_id,
            &q.channel,
            agent,
            timeout,
            q.transfer_to.is_some(),
        )
        .await?;
        changes += 1;
    }
    tx.commit().await?;
    Ok(changes)
}

/// Why there is no pending offer: the interaction is not this tenant's (404), or it is in
/// another state (409).
async fn no_offer(
    conn: &mut PgConnection,
    tenant: TenantId,
    interaction: InteractionId,
) -> RouterError {
    match interactions::get(conn, tenant, interaction).await {
        Ok(None) => RouterError::NotFound,
        Ok(Some(_)) => {
            RouterError::WrongState("there is no pending offer for this interaction".into())
        }
        Err(e) => e.into(),
    }
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
    let Some((offer, agent)) = pending_offer(conn, tenant, interaction).await? else {
        return Err(no_offer(conn, tenant, interaction).await);
    };
    if agent != user.0 {
        return Err(RouterError::NotYours("the offer is for another agent"));
    }
    act_as(conn, &user.0.to_string()).await?;
    sqlx::query("UPDATE offers SET state = 'accepted', decided_at = now() WHERE id = $1")
        .bind(offer)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE agent_states SET idle_since = now() WHERE user_id = $1")
        .bind(user.0)
        .execute(&mut *conn)
        .await?;
    make_active(conn, tenant, interaction, user).await
}

/// The offered agent declines: the interaction goes back to the queue and is offered to
/// someone else (never again to this agent).
pub async fn decline(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    interaction: InteractionId,
) -> Result<(), RouterError> {
    let Some((offer, agent)) = pending_offer(conn, tenant, interaction).await? else {
        return Err(no_offer(conn, tenant, interaction).await);
    };
    if agent != user.0 {
        return Err(RouterError::NotYours("the offer is for another agent"));
    }
    act_as(conn, &user.0.to_string()).await?;
    sqlx::query("UPDATE offers SET state = 'declined', decided_at = now() WHERE id = $1")
        .bind(offer)
        .execute(&mut *conn)
        .await?;
    requeue(conn, tenant, interaction.0).await?;
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
    act_as(conn, &user.0.to_string()).await?;
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
    if i.state != InteractionState::Active {
        return Err(RouterError::WrongState(format!(
            "only an active interaction can be ended; it is {}",
            i.state
        )));
    }
    end_as(conn, tenant, interaction, "agent", None)
        .await?
        .ok_or(RouterError::NotFound)
}

/// End an interaction on behalf of `by` (`agent`, `system`, `contact`) and tell the
/// tenant (`interaction.ended`, with `reason` when given). `None` when it does not exist.
async fn end_as(
    conn: &mut PgConnection,
    tenant: TenantId,
    interaction: InteractionId,
    by: &str,
    reason: Option<&str>,
) -> Result<Option<Interaction>, RouterError> {
    let Some(i) = interactions::set_state(
        conn,
        tenant,
        interaction,
        InteractionState::Ended,
        None,
        Some(by),
        None,
    )
    .await?
    else {
        return Ok(None);
    };
    let mut payload = json!({ "interaction": i });
    if let Some(r) = reason {
        payload["reason"] = json!(r);
    }
    events::append(
        conn,
        tenant,
        Audience::Tenant,
        "interaction.ended",
        &payload,
    )
    .await?;
    Ok(Some(i))
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
    if !matches!(i.state, InteractionState::Active | InteractionState::Ended) {
        return Err(RouterError::WrongState(format!(
            "only an active or ended interaction can be marked done; it is {}",
            i.state
        )));
    }
    let codes: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(q.wrap_up_codes) FROM interactions i JOIN queues q ON q.id = i.queue_id
         WHERE i.tenant_id = $1 AND i.id = $2",
    )
    .bind(tenant.0)
    .bind(interaction.0)
    .fetch_all(&mut *conn)
    .await?;
    if !codes.is_empty() && !disposition.is_some_and(|d| codes.iter().any(|c| c == d)) {
        return Err(RouterError::Invalid {
            field: "disposition",
            message: format!(
                "must be one of the queue's wrap-up codes: {}",
                codes.join(", ")
            ),
        });
    }
    if i.state == InteractionState::Active {
        interactions::set_state(
            conn,
            tenant,
            interaction,
            InteractionState::Ended,
            None,
            Some("agent"),
            None,
        )
        .await?;
    }
    let i = interactions::set_state(
        conn,
        tenant,
        interaction,
        InteractionState::Done,
        None,
        None,
        disposition,
    )
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

/// Where a transfer goes.
#[derive(Debug, Clone, Copy)]
pub enum TransferTo {
    /// Offered to this agent only (who must be Ready with free capacity).
    Agent(UserId),
    /// Back to routing, in this queue.
    Queue(Uuid),
}

/// Transfer an active interaction: its agent (or a supervisor) hands it to another agent
/// or queue. The current agent's capacity is freed at once; a transfer to an agent who
/// declines or misses it falls back to the interaction's queue, and one handed to a queue
/// goes to its agent again only after everyone else. A supervisor may also assign a
/// waiting (queued or offered) interaction this way: a pending offer is withdrawn first.
pub async fn transfer(
    conn: &mut PgConnection,
    tenant: TenantId,
    by: UserId,
    supervisor: bool,
    interaction: InteractionId,
    to: TransferTo,
) -> Result<Interaction, RouterError> {
    lock_routing(conn).await?;
    let i = interactions::get(conn, tenant, interaction)
        .await?
        .ok_or(RouterError::NotFound)?;
    match i.state {
        InteractionState::Active if i.agent_id == Some(by.0) || supervisor => {}
        InteractionState::Active => {
            return Err(RouterError::NotYours("the interaction is not yours"));
        }
        InteractionState::Queued | InteractionState::Offered if supervisor => {}
        InteractionState::Queued | InteractionState::Offered => {
            return Err(RouterError::NotYours(
                "only a supervisor may assign a waiting interaction",
            ));
        }
        other => {
            return Err(RouterError::WrongState(format!(
                "only an active or waiting interaction can be transferred; it is {other}"
            )));
        }
    }
    act_as(conn, &by.0.to_string()).await?;
    if i.state == InteractionState::Offered {
        withdraw_offer(conn, tenant, interaction, "reassigned").await?;
    }
    let from = i.agent_id;
    match to {
        TransferTo::Agent(agent) => {
            if Some(agent.0) == from {
                return Err(RouterError::Invalid {
                    field: "agent_id",
                    message: "the interaction is already theirs".into(),
                });
            }
            let sql = format!(
                "SELECT COALESCE(a.state, 'offline'), u.capacity > {LOAD_SQL}
                 FROM users u LEFT JOIN agent_states a ON a.user_id = u.id
                 WHERE u.tenant_id = $1 AND u.id = $2 AND u.active"
            );
            let (state, free): (String, bool) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tenant.0)
                .bind(agent.0)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(RouterError::Missing("agent"))?;
            if state != AgentState::Ready.as_str() || !free {
                return Err(RouterError::WrongState(format!(
                    "that agent cannot take it now (state {state}{})",
                    if free { "" } else { ", at capacity" }
                )));
            }
            sqlx::query(
                "UPDATE interactions SET agent_id = NULL, transfer_to = $3, queued_at = now()
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.0)
            .bind(interaction.0)
            .bind(agent.0)
            .execute(&mut *conn)
            .await?;
            let timeout: Option<i32> = sqlx::query_scalar(
                "SELECT q.offer_timeout_secs FROM interactions i JOIN queues q ON q.id = i.queue_id WHERE i.id = $1",
            )
            .bind(interaction.0)
            .fetch_optional(&mut *conn)
            .await?;
            make_offer(
                conn,
                tenant,
                interaction.0,
                i.contact_id,
                &i.channel,
                agent.0,
                timeout.map_or(RouteSettings::default().offer_timeout_secs, f64::from),
                true,
            )
            .await?;
        }
        TransferTo::Queue(queue) => {
            let found = sqlx::query(
                "UPDATE interactions SET agent_id = NULL, transfer_to = NULL, queued_at = now(),
                     queue_id = $3, state = 'queued', updated_at = now(),
                     transferred_by = COALESCE($4, transferred_by),
                     transferred_at = CASE WHEN $4::uuid IS NULL THEN transferred_at ELSE now() END
                 WHERE tenant_id = $1 AND id = $2
                   AND EXISTS (SELECT 1 FROM queues WHERE tenant_id = $1 AND id = $3)",
            )
            .bind(tenant.0)
            .bind(interaction.0)
            .bind(queue)
            .bind(from)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if found == 0 {
                return Err(RouterError::Missing("queue"));
            }
            wake(conn).await?;
        }
    }
    let after = interactions::get(conn, tenant, interaction)
        .await?
        .ok_or(RouterError::NotFound)?;
    let (to_agent, to_queue) = match to {
        TransferTo::Agent(a) => (Some(a.0), None),
        TransferTo::Queue(q) => (None, Some(q)),
    };
    events::append(
        conn,
        tenant,
        Audience::Tenant,
        "interaction.transferred",
        &json!({
            "interaction": after, "from_agent_id": from, "by": by.0,
            "to_agent_id": to_agent, "to_queue_id": to_queue,
        }),
    )
    .await?;
    Ok(after)
}

/// An agent takes a contact's open interaction for themself (Create WhatsApp
/// Interaction, when one is already open, say after the contact's "Yes" to a Connect
/// request): a waiting one (queued, or offered to anyone: the offer is withdrawn) or an
/// ended one becomes active and theirs; one already theirs is answered as it is; another
/// agent's live one is refused. Appends `interaction.accepted` when it changes hands.
pub async fn take_over(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    interaction: InteractionId,
) -> Result<Interaction, RouterError> {
    // Under the routing lock: the router cannot offer it meanwhile.
    lock_routing(conn).await?;
    let i = interactions::get(conn, tenant, interaction)
        .await?
        .ok_or(RouterError::NotFound)?;
    match i.state {
        InteractionState::Active if i.agent_id == Some(user.0) => return Ok(i),
        InteractionState::Active => {
            return Err(RouterError::NotYours(
                "another agent is handling this contact's chat; ask a supervisor to transfer it",
            ));
        }
        InteractionState::Queued | InteractionState::Offered | InteractionState::Ended => {}
        other => {
            return Err(RouterError::WrongState(format!(
                "the interaction is {other}"
            )));
        }
    }
    act_as(conn, &user.0.to_string()).await?;
    if i.state == InteractionState::Offered {
        withdraw_offer(conn, tenant, interaction, "taken").await?;
    }
    sqlx::query("UPDATE interactions SET transfer_to = NULL WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(interaction.0)
        .execute(&mut *conn)
        .await?;
    make_active(conn, tenant, interaction, user).await
}

/// Withdraw an interaction's pending offer (if any), telling its agent why.
async fn withdraw_offer(
    conn: &mut PgConnection,
    tenant: TenantId,
    interaction: InteractionId,
    reason: &str,
) -> Result<(), RouterError> {
    let Some((offer, agent)) = pending_offer(conn, tenant, interaction).await? else {
        return Ok(());
    };
    sqlx::query("UPDATE offers SET state = 'rescinded', decided_at = now() WHERE id = $1")
        .bind(offer)
        .execute(&mut *conn)
        .await?;
    events::append(
        conn,
        tenant,
        Audience::User(UserId(agent)),
        "interaction.offer_revoked",
        &json!({ "offer_id": offer, "interaction_id": interaction, "reason": reason }),
    )
    .await?;
    Ok(())
}

/// Make an interaction active and `user`'s, and tell the tenant (`interaction.accepted`):
/// an accepted offer, a take-over, or an interaction an agent starts.
pub async fn make_active(
    conn: &mut PgConnection,
    tenant: TenantId,
    interaction: InteractionId,
    user: UserId,
) -> Result<Interaction, RouterError> {
    let i = interactions::set_state(
        conn,
        tenant,
        interaction,
        InteractionState::Active,
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

/// Before an agent's message goes out through `interaction`: it must be theirs (or the
/// caller a supervisor) and active; an ended one resumes (async chat).
pub async fn reply_through(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    supervisor: bool,
    interaction: InteractionId,
) -> Result<Interaction, RouterError> {
    let state: Option<String> = sqlx::query_scalar(
        "SELECT state FROM interactions WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant.0)
    .bind(interaction.0)
    .fetch_optional(&mut *conn)
    .await?;
    state.ok_or(RouterError::NotFound)?;
    let i = interactions::get(conn, tenant, interaction)
        .await?
        .ok_or(RouterError::NotFound)?;
    if matches!(
        i.state,
        InteractionState::Queued | InteractionState::Offered
    ) {
        return Err(RouterError::WrongState(format!(
            "the interaction is {}; accept it first",
            i.state
        )));
    }
    if i.agent_id != Some(user.0) && !supervisor {
        return Err(RouterError::NotYours("the interaction is not yours"));
    }
    match i.state {
        InteractionState::Active => Ok(i),
        InteractionState::Ended => {
            act_as(conn, &user.0.to_string()).await?;
            interactions::resume(conn, tenant, interaction)
                .await?
                .ok_or(RouterError::NotFound)
        }
        InteractionState::Done => Err(RouterError::WrongState(
            "the interaction is done; start a new one with POST /contacts/{id}/interactions".into(),
        )),
        other @ (InteractionState::Queued | InteractionState::Offered) => Err(
            RouterError::WrongState(format!("the interaction is {other}; accept it first")),
        ),
    }
}
