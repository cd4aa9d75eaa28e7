//! Interactions as the conversation store keeps them: one routed unit of work with one
//! contact on one channel. The router drives their states; the store records them and
//! answers the contact's history.

use chrono::{DateTime, Utc};
use parley_core::{
    ContactId, IdentityId, InteractionId, TenantId, channel::Channel, state::InteractionState,
};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// An interaction with its timings. It serialises (in events) exactly as the REST API
/// shows it (`started_at`, `wait_seconds`, `handle_seconds`, `wrap_up_seconds`), so a
/// front-end needs one model; `created_at` is kept beside `started_at` for clients
/// written against earlier events.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Interaction {
    /// Id.
    pub id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// The channel.
    pub channel: String,
    /// Where it is in its lifecycle.
    #[sqlx(try_from = "String")]
    pub state: InteractionState,
    /// The handling agent, once accepted.
    pub agent_id: Option<Uuid>,
    /// Who ended it: `contact`, `agent` or `system`.
    pub ended_by: Option<String>,
    /// The wrap-up code given at Done.
    pub disposition: Option<String>,
    /// The queue it is routed through, if any.
    pub queue_id: Option<Uuid>,
    /// Started (the first message).
    pub created_at: DateTime<Utc>,
    /// Accepted by an agent.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Marked done.
    pub done_at: Option<DateTime<Utc>>,
}

impl Serialize for Interaction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: Uuid,
            contact_id: Uuid,
            channel: &'a str,
            state: &'a str,
            agent_id: Option<Uuid>,
            ended_by: Option<&'a str>,
            disposition: Option<&'a str>,
            queue_id: Option<Uuid>,
            started_at: DateTime<Utc>,
            accepted_at: Option<DateTime<Utc>>,
            ended_at: Option<DateTime<Utc>>,
            done_at: Option<DateTime<Utc>>,
            wait_seconds: Option<f64>,
            handle_seconds: Option<f64>,
            wrap_up_seconds: Option<f64>,
            created_at: DateTime<Utc>,
        }
        Wire {
            id: self.id,
            contact_id: self.contact_id,
            channel: &self.channel,
            state: self.state.as_str(),
            agent_id: self.agent_id,
            ended_by: self.ended_by.as_deref(),
            disposition: self.disposition.as_deref(),
            queue_id: self.queue_id,
            started_at: self.created_at,
            accepted_at: self.accepted_at,
            ended_at: self.ended_at,
            done_at: self.done_at,
            wait_seconds: self.wait_secs(),
            handle_seconds: self.handle_secs(),
            wrap_up_seconds: self.wrap_up_secs(),
            created_at: self.created_at,
        }
        .serialize(s)
    }
}

impl Interaction {
    /// Seconds from start to acceptance.
    pub fn wait_secs(&self) -> Option<f64> {
        secs(self.created_at, self.accepted_at?)
    }
    /// Seconds from acceptance to end.
    pub fn handle_secs(&self) -> Option<f64> {
        secs(self.accepted_at?, self.ended_at?)
    }
    /// Seconds from end to done (wrap-up).
    pub fn wrap_up_secs(&self) -> Option<f64> {
        secs(self.ended_at?, self.done_at?)
    }
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<f64> {
    Some((to - from).num_milliseconds() as f64 / 1000.0)
}

macro_rules! interaction_columns {
    () => {
        "id, contact_id, channel, state, agent_id, ended_by, disposition, queue_id, created_at, accepted_at, ended_at, done_at"
    };
}

/// The tenant's newest interactions (at most `limit`), optionally in one state and/or of
/// one agent.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    state: Option<InteractionState>,
    agent: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Interaction>, StoreError> {
    Ok(sqlx::query_as::<_, Interaction>(concat!(
        "SELECT ",
        interaction_columns!(),
        " FROM interactions WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
           AND ($3::uuid IS NULL OR agent_id = $3)
         ORDER BY created_at DESC LIMIT $4"
    ))
    .bind(tenant.0)
    .bind(state.map(InteractionState::as_str))
    .bind(agent)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The contact and channel of an interaction of the tenant.
pub async fn contact_and_channel(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: InteractionId,
) -> Result<Option<(ContactId, Option<Channel>)>, StoreError> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT contact_id, channel FROM interactions WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(c, ch)| (ContactId(c), ch.parse().ok())))
}

/// The id of the contact's open (not done) interaction on `channel`, if any.
pub async fn open_id(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
) -> Result<Option<InteractionId>, StoreError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM interactions WHERE tenant_id = $1 AND contact_id = $2 AND channel = $3
           AND state <> 'done'",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(channel.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(id.map(InteractionId))
}

/// Every interaction with a contact, newest first.
pub async fn list_for_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
) -> Result<Vec<Interaction>, StoreError> {
    Ok(sqlx::query_as::<_, Interaction>(concat!(
        "SELECT ",
        interaction_columns!(),
        " FROM interactions WHERE tenant_id = $1 AND contact_id = $2 ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant.0)
    .bind(contact.0)
    .fetch_all(conn)
    .await?)
}

/// The contact's open (not done) interaction on `channel`, creating a queued one when
/// there is none (recording the channel account it came in on, when known). Returns it
/// and whether it was created. Safe under concurrency: a partial unique index allows one
/// open interaction per contact and channel.
pub async fn open_or_create(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
    identity: Option<IdentityId>,
    channel_account: Option<Uuid>,
) -> Result<(Interaction, bool), StoreError> {
    // Usually the contact is already in conversation: one read.
    if let Some(open) = open_one(&mut *conn, tenant, contact, channel).await? {
        return Ok((open, false));
    }
    let created = sqlx::query_as::<_, Interaction>(concat!(
        "INSERT INTO interactions (id, tenant_id, contact_id, channel, identity_id,
                                   channel_account_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, contact_id, channel) WHERE state <> 'done' DO NOTHING
         RETURNING ",
        interaction_columns!()
    ))
    .bind(InteractionId::new().0)
    .bind(tenant.0)
    .bind(contact.0)
    .bind(channel.as_str())
    .bind(identity.map(|i| i.0))
    .bind(channel_account)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::from_db)?;
    if let Some(i) = created {
        // Wake the router (delivered when the caller's transaction commits).
        sqlx::query("SELECT pg_notify('parley_route', '')")
            .execute(&mut *conn)
            .await?;
        return Ok((i, true));
    }
    // Another transaction opened one first.
    let existing = open_one(conn, tenant, contact, channel)
        .await?
        .ok_or(StoreError::NotFound("interaction"))?;
    Ok((existing, false))
}

async fn open_one(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
) -> Result<Option<Interaction>, StoreError> {
    Ok(sqlx::query_as::<_, Interaction>(concat!(
        "SELECT ",
        interaction_columns!(),
        " FROM interactions WHERE tenant_id = $1 AND contact_id = $2 AND channel = $3 AND state <> 'done'"
    ))
    .bind(tenant.0)
    .bind(contact.0)
    .bind(channel.as_str())
    .fetch_optional(conn)
    .await?)
}

/// One interaction of `tenant`.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: InteractionId,
) -> Result<Option<Interaction>, StoreError> {
    Ok(sqlx::query_as::<_, Interaction>(concat!(
        "SELECT ",
        interaction_columns!(),
        " FROM interactions WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?)
}

/// Record a state change (the router decides which are legal).
pub async fn set_state(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: InteractionId,
    state: InteractionState,
    agent: Option<Uuid>,
    ended_by: Option<&str>,
    disposition: Option<&str>,
) -> Result<Option<Interaction>, StoreError> {
    sqlx::query_as::<_, Interaction>(concat!(
        "UPDATE interactions SET
            state = $3,
            agent_id = COALESCE($4, agent_id),
            accepted_at = CASE WHEN $3 = 'active' AND accepted_at IS NULL THEN now() ELSE accepted_at END,
            ended_at = CASE WHEN $3 = 'ended' THEN now() WHEN $3 = 'active' THEN NULL ELSE ended_at END,
            ended_by = CASE WHEN $3 = 'ended' THEN $5 WHEN $3 = 'active' THEN NULL ELSE ended_by END,
            done_at = CASE WHEN $3 = 'done' THEN now() ELSE done_at END,
            disposition = COALESCE($6, disposition),
            transfer_to = CASE WHEN $3 IN ('queued', 'offered') THEN transfer_to END,
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING ",
        interaction_columns!()
    ))
    .bind(tenant.0)
    .bind(id.0)
    .bind(state.as_str())
    .bind(agent)
    .bind(ended_by)
    .bind(disposition)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from_db)
}

/// Resume an ended interaction (async chat: a new message from either side): it becomes
/// active again with its agent, and `interaction.resumed` is appended.
pub async fn resume(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: InteractionId,
) -> Result<Option<Interaction>, StoreError> {
    let Some(resumed) =
        set_state(conn, tenant, id, InteractionState::Active, None, None, None).await?
    else {
        return Ok(None);
    };
    crate::events::append(
        conn,
        tenant,
        crate::events::Audience::Tenant,
        "interaction.resumed",
        &serde_json::json!({ "interaction": resumed }),
    )
    .await?;
    Ok(Some(resumed))
}
