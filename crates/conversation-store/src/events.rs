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

impl Audience {
    /// The `audience` and `user_id` columns.
    fn columns(&self) -> (&'static str, Option<uuid::Uuid>) {
        match self {
            Audience::Tenant => ("tenant", None),
            Audience::Supervisors => ("supervisors", None),
            Audience::User(u) => ("user", Some(u.0)),
        }
    }
}

/// The sequencer's wake-up as an appending statement sends it: a notification delivered
/// at commit, unless the transaction has deferred it.
const WAKEUP: &str = "(SELECT CASE WHEN current_setting('parley.defer_event_wakeup', true) = 'on'
                                THEN NULL ELSE pg_notify('parley_events', '') END)";

/// `BEGIN` a transaction whose events get no wake-up at commit (for
/// `begin_with`, one round trip); the caller sends one with [`wake_sequencer`] after
/// committing. PostgreSQL serialises the commits of notifying transactions (a lock held
/// from before the commit record until after its flush), so a notification inside a
/// write-heavy transaction makes its WAL flush wait for every other one's; a notification
/// sent afterwards in a transaction of its own writes nothing. If the process dies between
/// the two, the sequencer's periodic round finds the events.
pub const BEGIN_DEFERRING_WAKEUP: &str = "BEGIN; SET LOCAL parley.defer_event_wakeup = 'on'";

/// Wake the sequencers (every replica's) after committing deferred events. `from` is the
/// notification's payload: a listener may skip its own process's (whose sequencer the
/// caller woke directly).
pub async fn wake_sequencer(conn: &mut PgConnection, from: &str) -> Result<(), StoreError> {
    notify_from(conn, APPEND_CHANNEL, from).await
}

/// A notification on `channel` with payload `from`, delivered when the connection's
/// transaction commits (at once outside a transaction).
async fn notify_from(conn: &mut PgConnection, channel: &str, from: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(from)
        .execute(conn)
        .await?;
    Ok(())
}

/// Append an event; returns its id.
pub async fn append(
    conn: &mut PgConnection,
    tenant: TenantId,
    audience: Audience,
    kind: &str,
    payload: &Value,
) -> Result<i64, StoreError> {
    let (aud, user) = audience.columns();
    // One round trip: the row, and a wake-up for the sequencer delivered at commit
    // (unless the transaction defers it, see `BEGIN_DEFERRING_WAKEUP`). The notification's payload
    // is constant, so PostgreSQL folds a transaction's many appends into one.
    let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH e AS (INSERT INTO events (tenant_id, audience, user_id, kind, payload)
                    VALUES ($1, $2, $3, $4, $5) RETURNING id)
         SELECT e.id FROM e, {WAKEUP} AS n"
    )))
    .bind(tenant.0)
    .bind(aud)
    .bind(user)
    .bind(kind)
    .bind(payload)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Append several events in one round trip, in the order given. Each payload is given
/// as JSON text (serialised straight from the caller's types, without building a
/// `Value`); it must be a JSON object.
pub async fn append_many(
    conn: &mut PgConnection,
    events: Vec<(TenantId, Audience, &str, String)>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tenants = Vec::with_capacity(events.len());
    let mut audiences = Vec::with_capacity(events.len());
    let mut users = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for (tenant, audience, kind, payload) in events {
        let (aud, user) = audience.columns();
        tenants.push(tenant.0);
        audiences.push(aud);
        users.push(user);
        kinds.push(kind);
        payloads.push(payload);
    }
    // With the sequencer's wake-up, as in `append`.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH e AS (INSERT INTO events (tenant_id, audience, user_id, kind, payload)
                    SELECT x.tenant_id, x.audience, x.user_id, x.kind, x.payload::jsonb
                    FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[])
                         WITH ORDINALITY AS x(tenant_id, audience, user_id, kind, payload, ord)
                    ORDER BY x.ord RETURNING id)
         SELECT count(*) FROM e, {WAKEUP} AS n"
    )))
    .bind(tenants)
    .bind(audiences)
    .bind(users)
    .bind(kinds)
    .bind(payloads)
    .execute(&mut *conn)
    .await?;
    Ok(())
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

/// The NOTIFY channel that says new positions were assigned (payload: ids only).
pub const READY_CHANNEL: &str = "parley_events_ready";
/// The NOTIFY channel that says stored events were rewritten (an erasure): every
/// replica's in-memory feed drops what it read before.
pub const ERASED_CHANNEL: &str = "parley_events_erased";
/// The NOTIFY channel every append signals.
pub const APPEND_CHANNEL: &str = "parley_events";

/// The most events one [`sequence`] call gives positions to (the function's `LIMIT`):
/// a round that sequenced fewer left none ready behind it.
pub const SEQUENCE_ROUND: usize = 5000;

/// Give positions to every event whose transaction can no longer be overtaken: all
/// transactions with a smaller xid have finished. One sequencer at a time across replicas
/// (a transaction-scoped advisory lock). One round trip: the steps are the
/// `parley_sequence_events` function's (see its migration). Returns the events it
/// sequenced (at most [`SEQUENCE_ROUND`]), in position order, as [`feed_after`] would read
/// them; the caller announces them with [`announce_ready`].
pub async fn sequence(conn: &mut PgConnection) -> Result<Vec<FeedEvent>, StoreError> {
    Ok(sqlx::query_as::<_, FeedEvent>(
        "SELECT stream_position AS position, tenant_id, audience, user_id, kind, payload,
                created_at
         FROM parley_sequence_events()",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Tell every replica's feed that new positions were assigned, after the sequencing
/// committed (in a transaction of its own, see `BEGIN_DEFERRING_WAKEUP`). `from` is the
/// notification's payload: a listener may skip its own process's (which woke its feed
/// already).
pub async fn announce_ready(conn: &mut PgConnection, from: &str) -> Result<(), StoreError> {
    notify_from(conn, READY_CHANNEL, from).await
}

/// A sequenced event as a stream delivers it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct StreamEvent {
    /// The stream position: strictly increasing; resume with `after=<id>`.
    #[sqlx(rename = "position")]
    pub id: i64,
    /// Kind, e.g. `message.created`.
    pub kind: String,
    /// What happened.
    pub payload: Value,
    /// When it was recorded.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Sequenced events after `after` that `user` (with `is_supervisor`) may see, oldest
/// first.
pub async fn stream_after(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    is_supervisor: bool,
    after: i64,
    limit: i64,
) -> Result<Vec<StreamEvent>, StoreError> {
    Ok(sqlx::query_as::<_, StreamEvent>(
        "SELECT s.position, e.kind, e.payload, e.created_at
         FROM event_stream s JOIN events e ON e.id = s.event_id
         WHERE s.tenant_id = $1 AND s.position > $2
           AND (e.audience = 'tenant'
                OR (e.audience = 'supervisors' AND $4)
                OR (e.audience = 'user' AND e.user_id = $3))
         ORDER BY s.position LIMIT $5",
    )
    .bind(tenant.0)
    .bind(after)
    .bind(user.0)
    .bind(is_supervisor)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// A sequenced event of any tenant, with who may see it (the per-process feed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedEvent {
    /// The stream position.
    pub position: i64,
    /// The tenant.
    pub tenant_id: uuid::Uuid,
    /// `tenant`, `supervisors` or `user`.
    pub audience: String,
    /// For `user`.
    pub user_id: Option<uuid::Uuid>,
    /// Kind.
    pub kind: String,
    /// What happened.
    pub payload: Value,
    /// When it was recorded.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl FeedEvent {
    /// Whether `user` of `tenant` (a supervisor or not) may see it: the same rule as
    /// [`stream_after`].
    pub fn visible_to(&self, tenant: TenantId, user: UserId, is_supervisor: bool) -> bool {
        self.tenant_id == tenant.0
            && match self.audience.as_str() {
                "tenant" => true,
                "supervisors" => is_supervisor,
                "user" => self.user_id == Some(user.0),
                _ => false,
            }
    }

    /// As a client receives it: the text of a [`StreamEvent`] frame (serialised from
    /// this event's fields, without copying its payload).
    pub fn stream_text(&self) -> String {
        #[derive(serde::Serialize)]
        struct Frame<'a> {
            id: i64,
            kind: &'a str,
            payload: &'a Value,
            created_at: chrono::DateTime<chrono::Utc>,
        }
        serde_json::to_string(&Frame {
            id: self.position,
            kind: &self.kind,
            payload: &self.payload,
            created_at: self.created_at,
        })
        .unwrap_or_default()
    }
}

/// Sequenced events of every tenant after `after`, oldest first. Positions form a
/// contiguous prefix (one sequencer at a time assigns them in one transaction), so a page
/// read here never skips one that a later read would find.
pub async fn feed_after(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<FeedEvent>, StoreError> {
    Ok(sqlx::query_as::<_, FeedEvent>(
        "SELECT s.position, e.tenant_id, e.audience, e.user_id, e.kind, e.payload, e.created_at
         FROM event_stream s JOIN events e ON e.id = s.event_id
         WHERE s.position > $1 ORDER BY s.position LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The newest position of all tenants.
pub async fn global_head(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar::<_, Option<i64>>(
        "SELECT GREATEST((SELECT max(position) FROM event_stream),
                             (SELECT max(pruned_through_position) FROM event_prune_marks))",
    )
    .fetch_one(conn)
    .await?
    .unwrap_or(0))
}

/// Delete sequenced events older than `keep_secs`, oldest position first, up to 10,000 of
/// them, recording per tenant the newest position removed. Returns how many were deleted
/// (call again until 0). An old event behind a newer one (its transaction started long
/// before it was sequenced) goes once those before it have gone.
pub async fn prune(conn: &mut PgConnection, keep_secs: f64) -> Result<u64, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let deleted: Vec<(uuid::Uuid, i64, i64)> = sqlx::query_as(
        "WITH oldest AS (
            SELECT s.position, s.event_id
            FROM (SELECT position, event_id FROM event_stream ORDER BY position LIMIT 10000) s
            JOIN events e ON e.id = s.event_id
            WHERE e.created_at < now() - make_interval(secs => $1)),
          gone AS (
            DELETE FROM event_stream s USING oldest o WHERE s.position = o.position
            RETURNING s.tenant_id, s.position, s.event_id),
          dropped AS (DELETE FROM events e USING gone g WHERE e.id = g.event_id RETURNING 1)
         SELECT tenant_id, max(position), count(*) FROM gone GROUP BY tenant_id",
    )
    .bind(keep_secs)
    .fetch_all(&mut *tx)
    .await?;
    for (tenant, pos, _) in &deleted {
        sqlx::query(
            "INSERT INTO event_prune_marks (tenant_id, pruned_through_position) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE
             SET pruned_through_position = GREATEST(event_prune_marks.pruned_through_position, $2)",
        )
        .bind(tenant)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(deleted
        .iter()
        .map(|(_, _, n)| u64::try_from(*n).unwrap_or(0))
        .sum())
}

/// The newest position pruned for the tenant (0 if none): resuming from before it
/// would miss events.
pub async fn pruned_through(conn: &mut PgConnection, tenant: TenantId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT pruned_through_position FROM event_prune_marks WHERE tenant_id = $1",
    )
    .bind(tenant.0)
    .fetch_optional(conn)
    .await?
    .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The feed's frames and the catch-up's (a [`StreamEvent`] serialised) are the same
    /// text, so a client cannot tell which path an event came by.
    #[test]
    fn a_feed_frame_is_the_stream_event_as_the_catch_up_sends_it() {
        let created_at = chrono::DateTime::parse_from_rfc3339("2026-12-01T20:00:00.123456Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let payload =
            serde_json::json!({"message": {"id": "m1", "text": "héllo \"there\"", "n": [1, 2.5]}});
        let fed = FeedEvent {
            position: 42,
            tenant_id: uuid::Uuid::nil(),
            audience: "tenant".to_owned(),
            user_id: None,
            kind: "message.created".to_owned(),
            payload: payload.clone(),
            created_at,
        };
        let caught_up = StreamEvent {
            id: 42,
            kind: "message.created".to_owned(),
            payload,
            created_at,
        };
        assert_eq!(
            fed.stream_text(),
            serde_json::to_string(&caught_up).expect("serialise")
        );
    }
}
