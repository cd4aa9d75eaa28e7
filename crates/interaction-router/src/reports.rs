//! Agent reports from the interaction history: how many interactions each agent
//! handled, how long they spent on them, and how fast they accepted and first replied.

use chrono::{DateTime, Utc};
use parley_core::TenantId;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::RouterError;

/// One agent's figures over a period.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AgentReport {
    /// The agent.
    pub agent_id: Uuid,
    /// Their name.
    pub display_name: String,
    /// Interactions the agent had active in the period (accepted, resumed or
    /// transferred to them).
    pub interactions_handled: i64,
    /// Seconds the agent's interactions were active (accepted → ended, summed over every
    /// active stretch; a still-active one counts up to the end of the period or now).
    pub total_handle_secs: f64,
    /// `total_handle_secs / interactions_handled`.
    pub avg_handle_secs: Option<f64>,
    /// Mean seconds from accepting (or resuming) to the agent's first message.
    pub avg_first_response_secs: Option<f64>,
    /// Mean seconds from an offer to its acceptance.
    pub avg_time_to_accept_secs: Option<f64>,
    /// Offers declined or missed.
    pub offers_refused: i64,
}

/// Per agent with any activity in `[from, to)`, by name.
pub async fn agents(
    conn: &mut PgConnection,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<AgentReport>, RouterError> {
    Ok(sqlx::query_as::<_, AgentReport>(
        "WITH seg AS (
             SELECT h.interaction_id, h.agent_id, h.state, h.at AS started,
                    lead(h.at) OVER (PARTITION BY h.interaction_id ORDER BY h.id) AS stopped
             FROM interaction_history h
             WHERE h.tenant_id = $1 AND h.interaction_id IN (
                 SELECT interaction_id FROM interaction_history
                 WHERE tenant_id = $1 AND state = 'active' AND at < $3)
         ),
         active AS (
             SELECT interaction_id, agent_id, started,
                    LEAST(COALESCE(stopped, now()), $3) AS stopped
             FROM seg
             WHERE state = 'active' AND agent_id IS NOT NULL
               AND started < $3 AND COALESCE(stopped, now()) > $2
         ),
         handled AS (
             SELECT agent_id, count(DISTINCT interaction_id) AS n,
                    COALESCE(sum(EXTRACT(EPOCH FROM stopped - GREATEST(started, $2))), 0)::float8 AS secs
             FROM active GROUP BY agent_id
         ),
         first_reply AS (
             SELECT a.agent_id,
                    avg(EXTRACT(EPOCH FROM (SELECT min(m.created_at) FROM messages m
                                            WHERE m.interaction_id = a.interaction_id
                                              AND m.sender_user_id = a.agent_id
                                              AND m.direction = 'outbound'
                                              AND m.created_at >= a.started AND m.created_at < a.stopped)
                                    - a.started))::float8 AS secs
             FROM (SELECT DISTINCT ON (interaction_id, agent_id) interaction_id, agent_id, started, stopped
                   FROM active WHERE started >= $2 ORDER BY interaction_id, agent_id, started) a
             GROUP BY a.agent_id
         ),
         offered AS (
             SELECT agent_id,
                    avg(EXTRACT(EPOCH FROM decided_at - created_at)) FILTER (WHERE state = 'accepted')::float8 AS accept_secs,
                    count(*) FILTER (WHERE state IN ('declined', 'timed_out')) AS refused
             FROM offers WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
             GROUP BY agent_id
         )
         SELECT u.id AS agent_id, u.display_name,
                COALESCE(h.n, 0) AS interactions_handled,
                COALESCE(h.secs, 0) AS total_handle_secs,
                h.secs / NULLIF(h.n, 0) AS avg_handle_secs,
                f.secs AS avg_first_response_secs,
                o.accept_secs AS avg_time_to_accept_secs,
                COALESCE(o.refused, 0) AS offers_refused
         FROM users u
         LEFT JOIN handled h ON h.agent_id = u.id
         LEFT JOIN first_reply f ON f.agent_id = u.id
         LEFT JOIN offered o ON o.agent_id = u.id
         WHERE u.tenant_id = $1 AND (h.agent_id IS NOT NULL OR o.agent_id IS NOT NULL)
         ORDER BY u.display_name, u.id",
    )
    .bind(tenant.0)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?)
}
