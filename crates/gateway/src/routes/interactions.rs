//! Agent state, the supervisors' agent list, and the interaction lifecycle (accept,
//! decline, end, done).

use axum::extract::State;
use interaction_router::{self as router, AgentView, RouterError};
use parley_core::state::{AgentState, InteractionState};
use parley_core::{InteractionId, Principal, Role};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::RequireRole as _,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath, ApiQuery},
    routes::contacts::InteractionOut,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_my_state, put_my_state))
        .routes(routes!(list_agents))
        .routes(routes!(transfer_targets))
        .routes(routes!(list_interactions))
        .routes(routes!(accept_interaction))
        .routes(routes!(decline_interaction))
        .routes(routes!(end_interaction))
        .routes(routes!(done_interaction))
        .routes(routes!(transfer_interaction))
        .routes(routes!(send_interaction_message))
}

impl From<RouterError> for ApiError {
    fn from(e: RouterError) -> Self {
        match e {
            RouterError::NotFound => ApiError::not_found("interaction"),
            RouterError::NotYours(why) => ApiError::forbidden(why),
            RouterError::WrongState(why) => {
                ApiError::new(axum::http::StatusCode::CONFLICT, "invalid_state", why)
            }
            RouterError::Invalid { field, message } => ApiError::invalid_field(field, message),
            RouterError::Missing(what) => ApiError::invalid_field(
                match what {
                    "agent" => "agent_id",
                    "queue" => "queue_id",
                    other => other,
                },
                format!("no such {what} in this tenant"),
            ),
            RouterError::Store(s) => s.into(),
            RouterError::Database(d) => d.into(),
        }
    }
}

/// An agent's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentOut {
    /// The user.
    pub user_id: Uuid,
    /// Name.
    pub display_name: String,
    /// `ready`, `not_ready`, `not_responding`, `after_work` or `offline`.
    pub state: String,
    /// The Not Ready reason.
    pub reason: Option<String>,
    /// Since.
    pub since: chrono::DateTime<chrono::Utc>,
    /// Interactions counting against capacity (active, ended but not done, offered).
    pub load: i64,
    /// Chat capacity.
    pub capacity: i32,
    /// Whether an event-stream socket of theirs is open. New offers go only to agents
    /// with one (or who never opened one), and an agent without one is made `offline`
    /// after the grace period.
    pub event_stream: bool,
}

impl From<AgentView> for AgentOut {
    fn from(a: AgentView) -> Self {
        Self {
            event_stream: a.event_stream,
            user_id: a.user_id,
            display_name: a.display_name,
            state: a.state,
            reason: a.reason,
            since: a.since,
            load: a.load,
            capacity: a.capacity,
        }
    }
}

/// A state change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateIn {
    /// `ready`, `not_ready` or `after_work`.
    pub state: String,
    /// A reason code for Not Ready.
    pub reason: Option<String>,
}

/// An offer waiting for my answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfferOut {
    /// The offer.
    pub offer_id: Uuid,
    /// The interaction offered (accept or decline it by this id).
    pub interaction_id: Uuid,
    /// Its contact.
    pub contact_id: Uuid,
    /// Its channel.
    pub channel: String,
    /// When the offer lapses (and the agent becomes Not Responding).
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Whether it comes by transfer.
    pub transfer: bool,
}

/// My state with the offers waiting for me: what a desktop reads after a reload.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyStateOut {
    /// My state, load and whether my event stream is open.
    #[serde(flatten)]
    pub agent: AgentOut,
    /// Pending offers, oldest first.
    pub offers: Vec<OfferOut>,
    /// Set when something needs my attention (Ready without an open event stream).
    pub warning: Option<String>,
}

async fn my_state(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    principal: &Principal,
) -> Result<MyStateOut, ApiError> {
    let agent: AgentOut = router::agents(conn, principal.tenant_id)
        .await?
        .into_iter()
        .find(|a| a.user_id == principal.user_id.0)
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "the user no longer exists"))?
        .into();
    let offers = router::pending_offers(conn, principal.tenant_id, principal.user_id)
        .await?
        .into_iter()
        .map(|o| OfferOut {
            offer_id: o.offer_id,
            interaction_id: o.interaction_id,
            contact_id: o.contact_id,
            channel: o.channel,
            expires_at: o.expires_at,
            transfer: o.transfer,
        })
        .collect();
    let warning = (agent.state == AgentState::Ready.as_str() && !agent.event_stream).then(|| {
        format!(
            "no event stream is open for you: open GET /api/v1/events to see offers as they come; \
             without one you are made offline {} s after your last socket closed or your state was set",
            state.config.offline_grace.as_secs()
        )
    });
    Ok(MyStateOut {
        agent,
        offers,
        warning,
    })
}

/// My state, load and pending offers.
#[utoipa::path(get, path = "/me/state", tag = "routing", security(("bearer" = [])),
    responses((status = 200, description = "My state and pending offers", body = MyStateOut), CommonErrors))]
pub async fn get_my_state(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<MyStateOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(my_state(&state, &mut conn, &principal).await?))
}

/// Set my state: Ready receives offers; Not Ready (with a reason) and After Work do not.
/// Offers are pushed over the event stream (`GET /api/v1/events`): Ready without one
/// open answers with a `warning`, and the agent is made `offline` after the grace period.
#[utoipa::path(put, path = "/me/state", tag = "routing", security(("bearer" = [])),
    request_body = StateIn,
    responses((status = 200, description = "My new state and pending offers", body = MyStateOut), CommonErrors))]
pub async fn put_my_state(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<StateIn>,
) -> Result<axum::Json<MyStateOut>, ApiError> {
    let wanted = AgentState::parse(&input.state)
        .filter(|s| router::SETTABLE.contains(s))
        .ok_or_else(|| {
            ApiError::invalid_field("state", "must be ready, not_ready or after_work")
        })?;
    if input
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 64)
    {
        return Err(ApiError::invalid_field(
            "reason",
            "must be at most 64 characters",
        ));
    }
    let reason = if wanted == AgentState::NotReady {
        input.reason.as_deref()
    } else {
        None
    };
    let mut tx = state.db.begin().await?;
    if wanted == AgentState::NotReady {
        router::check_reason(&mut tx, principal.tenant_id, reason).await?;
    }
    router::set_state(
        &mut tx,
        principal.tenant_id,
        principal.user_id,
        wanted,
        reason,
    )
    .await?;
    let out = my_state(&state, &mut tx, &principal).await?;
    tx.commit().await?;
    Ok(axum::Json(out))
}

/// An agent who can take a transfer now.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferTargetOut {
    /// The agent's user id (`agent_id` in a transfer).
    pub user_id: Uuid,
    /// Name.
    pub display_name: String,
}

/// The agents a transfer can go to now: Ready, with free capacity, not the caller (any
/// signed-in user; names only, not states or loads, which are supervisors').
#[utoipa::path(get, path = "/agents/available", tag = "routing", security(("bearer" = [])),
    responses((status = 200, description = "Agents who can take a transfer now", body = Vec<TransferTargetOut>), CommonErrors))]
pub async fn transfer_targets(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Vec<TransferTargetOut>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        router::agents(&mut conn, principal.tenant_id)
            .await?
            .into_iter()
            .filter(|a| {
                a.user_id != principal.user_id.0
                    && a.state == AgentState::Ready.as_str()
                    && a.load < i64::from(a.capacity)
            })
            .map(|a| TransferTargetOut {
                user_id: a.user_id,
                display_name: a.display_name,
            })
            .collect(),
    ))
}

/// Every agent's state and load (supervisors).
#[utoipa::path(get, path = "/agents", tag = "routing", security(("bearer" = [])),
    responses((status = 200, description = "Agents", body = Vec<AgentOut>), crate::error::SupervisorOnly, CommonErrors))]
pub async fn list_agents(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Vec<AgentOut>>, ApiError> {
    principal.require(Role::Supervisor)?;
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        router::agents(&mut conn, principal.tenant_id)
            .await?
            .into_iter()
            .map(AgentOut::from)
            .collect(),
    ))
}

/// Interaction filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InteractionQuery {
    /// `queued`, `offered`, `active`, `ended` or `done`.
    pub state: Option<String>,
    /// An agent's id (supervisors; agents always see their own).
    pub agent: Option<Uuid>,
}

/// Interactions: an agent's own, or (supervisors) anyone's; newest first, at most 200.
#[utoipa::path(get, path = "/interactions", tag = "routing", security(("bearer" = [])),
    params(InteractionQuery),
    responses((status = 200, description = "Interactions", body = Vec<InteractionOut>), CommonErrors))]
pub async fn list_interactions(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<InteractionQuery>,
) -> Result<axum::Json<Vec<InteractionOut>>, ApiError> {
    let wanted = match q.state.as_deref() {
        None => None,
        Some(s) => Some(InteractionState::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                format!("must be one of {}", InteractionState::spellings()),
            )
        })?),
    };
    let agent = if principal.has_role(Role::Supervisor) {
        q.agent
    } else {
        Some(principal.user_id.0)
    };
    let mut conn = state.db.acquire().await?;
    let rows =
        conversation_store::interactions::list(&mut conn, principal.tenant_id, wanted, agent, 200)
            .await?;
    Ok(axum::Json(
        rows.into_iter().map(InteractionOut::from).collect(),
    ))
}

/// An interaction in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct InteractionPath {
    /// The interaction's id.
    pub interaction_id: Uuid,
}

/// Wrap-up.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoneIn {
    /// A disposition (wrap-up) code.
    pub disposition: Option<String>,
}

/// Accept my offer: the interaction becomes active and mine.
#[utoipa::path(post, path = "/interactions/{interaction_id}/accept", tag = "routing", security(("bearer" = [])),
    params(InteractionPath),
    responses(
        (status = 200, description = "Active", body = InteractionOut),
        (status = 409, description = "No pending offer", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::NotYours, CommonErrors,
    ))]
pub async fn accept_interaction(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<InteractionPath>,
) -> Result<axum::Json<InteractionOut>, ApiError> {
    let mut tx = state.db.begin().await?;
    let i = router::accept(
        &mut tx,
        principal.tenant_id,
        principal.user_id,
        InteractionId(p.interaction_id),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(i.into()))
}

/// Decline my offer: it goes to the next agent.
#[utoipa::path(post, path = "/interactions/{interaction_id}/decline", tag = "routing", security(("bearer" = [])),
    params(InteractionPath),
    responses(
        (status = 204, description = "Declined"),
        (status = 409, description = "No pending offer", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::NotYours, CommonErrors,
    ))]
pub async fn decline_interaction(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<InteractionPath>,
) -> Result<axum::http::StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    router::decline(
        &mut tx,
        principal.tenant_id,
        principal.user_id,
        InteractionId(p.interaction_id),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// End my interaction (it still counts against my capacity until Done).
#[utoipa::path(post, path = "/interactions/{interaction_id}/end", tag = "routing", security(("bearer" = [])),
    params(InteractionPath),
    responses((status = 200, description = "Ended", body = InteractionOut), crate::error::NotYours, CommonErrors))]
pub async fn end_interaction(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<InteractionPath>,
) -> Result<axum::Json<InteractionOut>, ApiError> {
    let mut tx = state.db.begin().await?;
    let i = router::end(
        &mut tx,
        principal.tenant_id,
        principal.user_id,
        InteractionId(p.interaction_id),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(i.into()))
}

/// Mark my interaction Done, with an optional disposition; frees capacity.
#[utoipa::path(post, path = "/interactions/{interaction_id}/done", tag = "routing", security(("bearer" = [])),
    params(InteractionPath),
    request_body = DoneIn,
    responses((status = 200, description = "Done", body = InteractionOut), crate::error::NotYours, CommonErrors))]
pub async fn done_interaction(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<InteractionPath>,
    crate::extract::ApiJsonOrEmpty(input): crate::extract::ApiJsonOrEmpty<DoneIn>,
) -> Result<axum::Json<InteractionOut>, ApiError> {
    if input
        .disposition
        .as_ref()
        .is_some_and(|d| d.chars().count() > 64)
    {
        return Err(ApiError::invalid_field(
            "disposition",
            "must be at most 64 characters",
        ));
    }
    let mut tx = state.db.begin().await?;
    let i = router::done(
        &mut tx,
        principal.tenant_id,
        principal.user_id,
        InteractionId(p.interaction_id),
        input.disposition.as_deref(),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(i.into()))
}

/// Where to transfer: exactly one of `agent_id` or `queue_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferIn {
    /// Offer it to this agent (who must be Ready with free capacity).
    pub agent_id: Option<Uuid>,
    /// Put it back in routing through this queue.
    pub queue_id: Option<Uuid>,
}

/// Transfer an active interaction to another agent or a queue (its agent, or a
/// supervisor). The agent's capacity is freed at once; a transfer the target agent
/// declines or misses goes to the queue, and one handed to a queue is offered to the
/// agent who handed it only after everyone else. Supervisors also assign waiting
/// (queued or offered) interactions this way; a pending offer is withdrawn.
#[utoipa::path(post, path = "/interactions/{interaction_id}/transfer", tag = "routing", security(("bearer" = [])),
    params(InteractionPath),
    request_body = TransferIn,
    responses(
        (status = 200, description = "Transferred", body = InteractionOut),
        (status = 409, description = "Neither active nor waiting, or the agent cannot take it now", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::NotYours, CommonErrors,
    ))]
pub async fn transfer_interaction(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<InteractionPath>,
    ApiJson(input): ApiJson<TransferIn>,
) -> Result<axum::Json<InteractionOut>, ApiError> {
    let to = match (input.agent_id, input.queue_id) {
        (Some(a), None) => router::TransferTo::Agent(parley_core::UserId(a)),
        (None, Some(q)) => router::TransferTo::Queue(q),
        _ => {
            return Err(ApiError::invalid_field(
                "agent_id",
                "give exactly one of agent_id or queue_id",
            ));
        }
    };
    let mut tx = state.db.begin().await?;
    let i = router::transfer(
        &mut tx,
        principal.tenant_id,
        principal.user_id,
        principal.has_role(Role::Supervisor),
        InteractionId(p.interaction_id),
        to,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(i.into()))
}

/// Send a message through the interaction's channel (its agent, or a supervisor): text,
/// an image attachment, a reply, buttons or a reaction, as on the contact. An ended
/// interaction resumes. Repeat the same `Idempotency-Key` to retry safely.
#[utoipa::path(post, path = "/interactions/{interaction_id}/messages", tag = "routing", security(("bearer" = [])),
    params(InteractionPath, ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request act once")),
    request_body = crate::routes::outbound::SendIn,
    responses(
        (status = 202, description = "Queued for delivery", body = crate::routes::messages::MessageOut),
        (status = 409, description = "Not accepted yet, or done", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::NotYours, CommonErrors,
    ))]
pub async fn send_interaction_message(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<InteractionPath>,
    headers: axum::http::HeaderMap,
    ApiJson(input): ApiJson<crate::routes::outbound::SendIn>,
) -> Result<(axum::http::StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let contact: Uuid = {
        let mut conn = state.db.acquire().await?;
        conversation_store::interactions::contact_and_channel(
            &mut conn,
            principal.tenant_id,
            parley_core::InteractionId(p.interaction_id),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("interaction"))?
        .0
        .0
    };
    let key = crate::routes::outbound::idempotency_key(&headers)?;
    let (status, body) = crate::services::outbound::send(
        &state,
        principal,
        parley_core::ContactId(contact),
        Some(InteractionId(p.interaction_id)),
        key,
        input,
    )
    .await?;
    Ok((status, axum::Json(body)))
}
