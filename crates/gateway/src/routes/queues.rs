//! Queues (admin), what waits in them, Not Ready reason codes, and agent reports.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use interaction_router::{
    queues::{self, Queue, QueueSpec, Waiting},
    reports::{self, AgentReport},
};
use parley_core::{Principal, Role};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::RequireRole as _,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath, ApiQuery},
    validate::Checks,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues, create_queue))
        .routes(routes!(get_queue, update_queue, delete_queue))
        .routes(routes!(list_reasons, create_reason))
        .routes(routes!(delete_reason))
        .routes(routes!(agent_report))
}

/// A queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueOut {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Channels it takes (empty: every channel).
    pub channels: Vec<String>,
    /// Skills an agent needs to be offered its interactions.
    pub skills: Vec<String>,
    /// After this many seconds of waiting, `relaxable_skills` are no longer required.
    pub relax_after_secs: Option<i32>,
    /// Skills dropped after `relax_after_secs`.
    pub relaxable_skills: Vec<String>,
    /// Seconds an agent has to accept an offer.
    pub offer_timeout_secs: i32,
    /// Wrap-up codes; when any are set, Done needs one as its disposition.
    pub wrap_up_codes: Vec<String>,
    /// Whether an ended-but-not-Done interaction still counts against the agent's capacity.
    pub ended_counts: bool,
    /// An active chat in which neither side wrote for this many seconds is ended by the
    /// system (`ended_by: system`; it no longer counts against the agent's capacity).
    /// Unset: never.
    pub inactivity_timeout_secs: Option<i32>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Queue> for QueueOut {
    fn from(q: Queue) -> Self {
        Self {
            id: q.id,
            name: q.name,
            channels: q.channels,
            skills: q.skills,
            relax_after_secs: q.relax_after_secs,
            relaxable_skills: q.relaxable_skills,
            offer_timeout_secs: q.offer_timeout_secs,
            wrap_up_codes: q.wrap_up_codes,
            ended_counts: q.ended_counts,
            inactivity_timeout_secs: q.inactivity_timeout_secs,
            created_at: q.created_at,
            updated_at: q.updated_at,
        }
    }
}

/// A queue's settings. Omitted lists are empty; `offer_timeout_secs` defaults to 30 and
/// `ended_counts` to true.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueIn {
    /// Name (1-100 characters), unique in the tenant.
    pub name: String,
    /// Channels: `whatsapp`, `sms`, `webchat`, `messenger`, `twitter` (X direct
    /// messages), `facebook_public`, `twitter_public` (the same spelling as everywhere).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Required skills.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Seconds of waiting after which `relaxable_skills` are dropped.
    pub relax_after_secs: Option<i32>,
    /// Skills (a subset of `skills`) that may be dropped.
    #[serde(default)]
    pub relaxable_skills: Vec<String>,
    /// 1-3600 seconds.
    pub offer_timeout_secs: Option<i32>,
    /// Wrap-up codes (each 1-64 characters).
    #[serde(default)]
    pub wrap_up_codes: Vec<String>,
    /// Whether an ended-but-not-Done interaction counts against capacity.
    pub ended_counts: Option<bool>,
    /// End active chats nobody wrote in for this many seconds (1 to 2,592,000); unset:
    /// never.
    pub inactivity_timeout_secs: Option<i32>,
}

fn spec(input: QueueIn) -> Result<QueueSpec, ApiError> {
    let mut c = Checks::default();
    let name = c.text("name", &input.name, 100);
    for (i, ch) in input.channels.iter().enumerate() {
        if ch.parse::<parley_core::channel::Channel>().is_err() {
            c.fail(
                &format!("channels[{i}]"),
                format!(
                    "must be one of {}",
                    parley_core::channel::Channel::ALL
                        .map(parley_core::channel::Channel::as_str)
                        .join(", ")
                ),
            );
        }
    }
    let skills = c.skills("skills", &input.skills);
    let relaxable = c.skills("relaxable_skills", &input.relaxable_skills);
    for (i, s) in relaxable.iter().enumerate() {
        if !skills.contains(s) {
            c.fail(
                &format!("relaxable_skills[{i}]"),
                "must be one of the queue's skills",
            );
        }
    }
    if input.relax_after_secs.is_some_and(|s| s < 1) {
        c.fail("relax_after_secs", "must be at least 1");
    }
    if !relaxable.is_empty() && input.relax_after_secs.is_none() {
        c.fail(
            "relax_after_secs",
            "is required when relaxable_skills are given",
        );
    }
    if input
        .inactivity_timeout_secs
        .is_some_and(|t| !(1..=2_592_000).contains(&t))
    {
        c.fail("inactivity_timeout_secs", "must be 1 to 2592000 (30 days)");
    }
    let timeout = input.offer_timeout_secs.unwrap_or(30);
    if !(1..=3600).contains(&timeout) {
        c.fail("offer_timeout_secs", "must be 1 to 3600");
    }
    if input.wrap_up_codes.len() > 100 {
        c.fail("wrap_up_codes", "at most 100 codes");
    }
    let mut codes: Vec<String> = Vec::new();
    for (i, w) in input.wrap_up_codes.iter().enumerate() {
        let w = c.text(&format!("wrap_up_codes[{i}]"), w, 64);
        if codes.contains(&w) {
            c.fail(&format!("wrap_up_codes[{i}]"), "is listed twice");
        }
        codes.push(w);
    }
    let mut channels = input.channels;
    channels.sort();
    channels.dedup();
    c.finish()?;
    Ok(QueueSpec {
        name,
        channels,
        skills,
        relax_after_secs: input.relax_after_secs,
        relaxable_skills: relaxable,
        offer_timeout_secs: timeout,
        wrap_up_codes: codes,
        ended_counts: input.ended_counts.unwrap_or(true),
        inactivity_timeout_secs: input.inactivity_timeout_secs,
    })
}

/// Every queue (any signed-in user; agents see where work comes from).
#[utoipa::path(get, path = "/queues", tag = "routing", security(("bearer" = [])),
    responses((status = 200, description = "Queues", body = Vec<QueueOut>), CommonErrors))]
pub async fn list_queues(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Vec<QueueOut>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        queues::list(&mut conn, principal.tenant_id)
            .await?
            .into_iter()
            .map(QueueOut::from)
            .collect(),
    ))
}

/// Create a queue (admins).
#[utoipa::path(post, path = "/queues", tag = "routing", security(("bearer" = [])),
    request_body = QueueIn,
    responses((status = 201, description = "Created", body = QueueOut), crate::error::AdminOnly, CommonErrors))]
pub async fn create_queue(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<QueueIn>,
) -> Result<(StatusCode, axum::Json<QueueOut>), ApiError> {
    principal.require(Role::Admin)?;
    let spec = spec(input)?;
    let mut tx = state.db.begin().await?;
    let q = queues::create(&mut tx, principal.tenant_id, &spec).await?;
    interaction_router::wake(&mut tx).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(q.into())))
}

/// A queue in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct QueuePath {
    /// The queue's id.
    pub queue_id: Uuid,
}

/// A queue with what waits in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStatusOut {
    /// The queue.
    #[serde(flatten)]
    pub queue: QueueOut,
    /// How many interactions wait (including those being offered right now).
    pub waiting_count: usize,
    /// Seconds the longest-waiting interaction has waited.
    pub oldest_wait_secs: Option<f64>,
    /// The waiting interactions, next first.
    pub waiting: Vec<WaitingOut>,
}

/// An interaction waiting in a queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingOut {
    /// The interaction.
    pub interaction_id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// The channel.
    pub channel: String,
    /// 1 is next.
    pub position: i64,
    /// Waiting since.
    pub queued_at: DateTime<Utc>,
    /// Seconds waited.
    pub waiting_secs: f64,
    /// An offer is out to an agent right now.
    pub offered: bool,
}

impl From<Waiting> for WaitingOut {
    fn from(w: Waiting) -> Self {
        Self {
            interaction_id: w.interaction_id,
            contact_id: w.contact_id,
            channel: w.channel,
            position: w.position,
            queued_at: w.queued_at,
            waiting_secs: w.waiting_secs,
            offered: w.offered,
        }
    }
}

/// A queue, its waiting count, oldest wait and each waiting interaction's position.
#[utoipa::path(get, path = "/queues/{queue_id}", tag = "routing", security(("bearer" = [])),
    params(QueuePath),
    responses((status = 200, description = "The queue", body = QueueStatusOut), CommonErrors))]
pub async fn get_queue(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<QueuePath>,
) -> Result<axum::Json<QueueStatusOut>, ApiError> {
    let mut tx = state.db.begin().await?;
    let q = queues::get(&mut tx, principal.tenant_id, p.queue_id)
        .await?
        .ok_or_else(|| ApiError::not_found("queue"))?;
    let waiting = queues::waiting(&mut tx, principal.tenant_id, p.queue_id).await?;
    tx.commit().await?;
    Ok(axum::Json(QueueStatusOut {
        queue: q.into(),
        waiting_count: waiting.len(),
        oldest_wait_secs: waiting.first().map(|w| w.waiting_secs),
        waiting: waiting.into_iter().map(WaitingOut::from).collect(),
    }))
}

/// Replace a queue's settings (admins).
#[utoipa::path(put, path = "/queues/{queue_id}", tag = "routing", security(("bearer" = [])),
    params(QueuePath), request_body = QueueIn,
    responses(
        (status = 200, description = "Updated", body = QueueOut),
        (status = 404, description = "No such queue in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn update_queue(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<QueuePath>,
    ApiJson(input): ApiJson<QueueIn>,
) -> Result<axum::Json<QueueOut>, ApiError> {
    principal.require(Role::Admin)?;
    let spec = spec(input)?;
    let mut tx = state.db.begin().await?;
    let q = queues::update(&mut tx, principal.tenant_id, p.queue_id, &spec)
        .await?
        .ok_or_else(|| ApiError::not_found("queue"))?;
    tx.commit().await?;
    Ok(axum::Json(q.into()))
}

/// Delete a queue (admins); what waits in it is routed without a queue.
#[utoipa::path(delete, path = "/queues/{queue_id}", tag = "routing", security(("bearer" = [])),
    params(QueuePath),
    responses((status = 204, description = "Deleted"), crate::error::AdminOnly, CommonErrors))]
pub async fn delete_queue(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<QueuePath>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    let mut tx = state.db.begin().await?;
    if !queues::delete(&mut tx, principal.tenant_id, p.queue_id).await? {
        return Err(ApiError::not_found("queue"));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A Not Ready reason code.
#[derive(Debug, Deserialize, Serialize, ToSchema, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct ReasonIn {
    /// The code agents send as `reason` (1-64 characters).
    pub code: String,
    /// What the desktop shows (1-100 characters).
    pub label: String,
}

/// The tenant's Not Ready reason codes. While there are none, any short reason is
/// accepted; once there are, `PUT /me/state` with `not_ready` needs one of them.
#[utoipa::path(get, path = "/not-ready-reasons", tag = "routing", security(("bearer" = [])),
    responses((status = 200, description = "Reasons", body = Vec<ReasonIn>), CommonErrors))]
pub async fn list_reasons(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Vec<ReasonIn>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let reasons = interaction_router::queues::reasons(&mut conn, principal.tenant_id).await?;
    Ok(axum::Json(
        reasons
            .into_iter()
            .map(|(code, label)| ReasonIn { code, label })
            .collect(),
    ))
}

/// Add or relabel a Not Ready reason code (admins).
#[utoipa::path(post, path = "/not-ready-reasons", tag = "routing", security(("bearer" = [])),
    request_body = ReasonIn,
    responses((status = 201, description = "Saved", body = ReasonIn), crate::error::AdminOnly, CommonErrors))]
pub async fn create_reason(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<ReasonIn>,
) -> Result<(StatusCode, axum::Json<ReasonIn>), ApiError> {
    principal.require(Role::Admin)?;
    let mut c = Checks::default();
    let code = c.text("code", &input.code, 64);
    let label = c.text("label", &input.label, 100);
    c.finish()?;
    let mut conn = state.db.acquire().await?;
    interaction_router::queues::save_reason(&mut conn, principal.tenant_id, &code, &label).await?;
    Ok((StatusCode::CREATED, axum::Json(ReasonIn { code, label })))
}

/// A reason code in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ReasonPath {
    /// The code.
    pub code: String,
}

/// Remove a Not Ready reason code (admins).
#[utoipa::path(delete, path = "/not-ready-reasons/{code}", tag = "routing", security(("bearer" = [])),
    params(ReasonPath),
    responses((status = 204, description = "Removed"), crate::error::AdminOnly, CommonErrors))]
pub async fn delete_reason(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<ReasonPath>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    let mut conn = state.db.acquire().await?;
    if !interaction_router::queues::delete_reason(&mut conn, principal.tenant_id, &p.code).await? {
        return Err(ApiError::not_found("reason"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The report period.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Start (RFC 3339), inclusive.
    pub from: DateTime<Utc>,
    /// End (RFC 3339), exclusive.
    pub to: DateTime<Utc>,
}

/// One agent's figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentReportOut {
    /// The agent.
    pub agent_id: Uuid,
    /// Name.
    pub display_name: String,
    /// Interactions the agent had active in the period.
    pub interactions_handled: i64,
    /// Seconds active (accepted → ended, every stretch, clipped to the period).
    pub total_handle_secs: f64,
    /// Per interaction.
    pub avg_handle_secs: Option<f64>,
    /// Mean seconds from accepting to the agent's first message.
    pub avg_first_response_secs: Option<f64>,
    /// Mean seconds from offer to accept.
    pub avg_time_to_accept_secs: Option<f64>,
    /// Offers declined or missed.
    pub offers_refused: i64,
}

impl From<AgentReport> for AgentReportOut {
    fn from(r: AgentReport) -> Self {
        Self {
            agent_id: r.agent_id,
            display_name: r.display_name,
            interactions_handled: r.interactions_handled,
            total_handle_secs: r.total_handle_secs,
            avg_handle_secs: r.avg_handle_secs,
            avg_first_response_secs: r.avg_first_response_secs,
            avg_time_to_accept_secs: r.avg_time_to_accept_secs,
            offers_refused: r.offers_refused,
        }
    }
}

/// Per agent over `[from, to)`: interactions handled, handle time, first response time,
/// time to accept (supervisors).
#[utoipa::path(get, path = "/reports/agents", tag = "routing", security(("bearer" = [])),
    params(ReportQuery),
    responses((status = 200, description = "Per agent", body = Vec<AgentReportOut>), crate::error::SupervisorOnly, CommonErrors))]
pub async fn agent_report(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<axum::Json<Vec<AgentReportOut>>, ApiError> {
    principal.require(Role::Supervisor)?;
    if q.to <= q.from {
        return Err(ApiError::invalid_field("to", "must be after from"));
    }
    if q.to - q.from > chrono::Duration::days(366) {
        return Err(ApiError::invalid_field(
            "to",
            "the period is at most 366 days",
        ));
    }
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        reports::agents(&mut conn, principal.tenant_id, q.from, q.to)
            .await?
            .into_iter()
            .map(AgentReportOut::from)
            .collect(),
    ))
}
