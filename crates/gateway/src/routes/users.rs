//! A tenant's users: admins create, list, read and change them.

use chrono::{DateTime, Utc};
use conversation_store::accounts::{self, NewUser, User, UserPatch};
use parley_core::{Principal, Role, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::{RequireRole as _, hash_password},
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath, ApiQuery},
    validate::Checks,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, patch_user))
}

/// A user as the API shows it (never with a password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    /// Id.
    pub id: Uuid,
    /// The user's tenant.
    pub tenant_id: Uuid,
    /// Login email.
    pub email: String,
    /// Name shown to colleagues and contacts.
    pub display_name: String,
    /// `agent`, `supervisor` or `admin`.
    #[schema(value_type = String, example = "agent")]
    pub role: Role,
    /// Routing skills.
    pub skills: Vec<String>,
    /// Chat interactions handled at once.
    pub capacity: i32,
    /// Deactivated users cannot log in.
    pub active: bool,
    /// Created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed (RFC 3339, UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        Self {
            id: u.id.0,
            tenant_id: u.tenant_id.0,
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            skills: u.skills,
            capacity: u.capacity,
            active: u.active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserIn {
    /// Login email; unique within the tenant.
    pub email: String,
    /// Name shown to colleagues and contacts.
    pub display_name: String,
    /// At least 8 characters.
    pub password: String,
    /// `agent`, `supervisor` or `admin`.
    #[schema(value_type = String, example = "agent")]
    pub role: Role,
    /// Routing skills.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Chat interactions at once (default 3).
    #[serde(default)]
    pub capacity: Option<i32>,
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUserIn {
    /// New shown name.
    pub display_name: Option<String>,
    /// New role.
    #[schema(value_type = Option<String>, example = "supervisor")]
    pub role: Option<Role>,
    /// New password (at least 8 characters).
    pub password: Option<String>,
    /// New skills (replaces the list).
    pub skills: Option<Vec<String>>,
    /// New capacity.
    pub capacity: Option<i32>,
    /// Activate or deactivate.
    pub active: Option<bool>,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    /// Users in id (creation) order.
    pub items: Vec<UserOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// From a previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
}

/// A user id in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UserPath {
    /// The user's id.
    pub user_id: Uuid,
}

/// Create a user in the caller's tenant (admin).
#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = [])),
    request_body = CreateUserIn,
    responses(
        (status = 201, description = "Created", body = UserOut),
        (status = 409, description = "The email is taken", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn create_user(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<CreateUserIn>,
) -> Result<(axum::http::StatusCode, axum::Json<UserOut>), ApiError> {
    principal.require(Role::Admin)?;
    let mut c = Checks::default();
    let email = c.email("email", &input.email);
    let display_name = c.text("display_name", &input.display_name, 100);
    c.password("password", &input.password);
    let skills = c.skills("skills", &input.skills);
    let capacity = input.capacity.unwrap_or(3);
    c.capacity("capacity", capacity);
    c.finish()?;
    let password_hash = hash_password(input.password).await?;
    let mut conn = state.db.acquire().await?;
    let user = accounts::create_user(
        &mut conn,
        principal.tenant_id,
        &NewUser {
            email,
            display_name,
            role: input.role,
            password_hash,
            skills,
            capacity,
        },
    )
    .await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(user.into())))
}

/// List the caller's tenant's users (admin).
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn list_users(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<UserPage>, ApiError> {
    principal.require(Role::Admin)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 200",
        ));
    }
    let mut conn = state.db.acquire().await?;
    let mut users = accounts::list_users(
        &mut conn,
        principal.tenant_id,
        q.cursor.map(UserId),
        limit + 1,
    )
    .await?;
    let more = users.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    users.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        users.last().map(|u| u.id.to_string())
    } else {
        None
    };
    Ok(axum::Json(UserPage {
        items: users.into_iter().map(UserOut::from).collect(),
        next_cursor,
    }))
}

/// One user of the caller's tenant (admin, or the user themself).
#[utoipa::path(get, path = "/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The user", body = UserOut),
        (status = 404, description = "No such user in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn get_user(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<axum::Json<UserOut>, ApiError> {
    if principal.user_id.0 != path.user_id {
        principal.require(Role::Admin)?;
    }
    let mut conn = state.db.acquire().await?;
    let user = accounts::get_user(&mut conn, principal.tenant_id, UserId(path.user_id))
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(axum::Json(user.into()))
}

/// Change a user of the caller's tenant (admin).
#[utoipa::path(patch, path = "/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(UserPath),
    request_body = PatchUserIn,
    responses(
        (status = 200, description = "The changed user", body = UserOut),
        (status = 404, description = "No such user in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::AdminOnly, CommonErrors,
    ))]
pub async fn patch_user(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<UserPath>,
    ApiJson(input): ApiJson<PatchUserIn>,
) -> Result<axum::Json<UserOut>, ApiError> {
    principal.require(Role::Admin)?;
    let mut c = Checks::default();
    let display_name = input
        .display_name
        .as_deref()
        .map(|d| c.text("display_name", d, 100));
    if let Some(pw) = &input.password {
        c.password("password", pw);
    }
    let skills = input.skills.as_deref().map(|s| c.skills("skills", s));
    if let Some(cap) = input.capacity {
        c.capacity("capacity", cap);
    }
    // An admin cannot lock themself out.
    if principal.user_id.0 == path.user_id {
        if input.active == Some(false) {
            c.fail("active", "you cannot deactivate yourself");
        }
        if input.role.is_some_and(|r| r != Role::Admin) {
            c.fail("role", "you cannot remove your own admin role");
        }
    }
    c.finish()?;
    let password_hash = match input.password {
        Some(pw) => Some(hash_password(pw).await?),
        None => None,
    };
    let mut tx = state.db.begin().await?;
    let user = accounts::update_user(
        &mut tx,
        principal.tenant_id,
        UserId(path.user_id),
        &UserPatch {
            display_name,
            role: input.role,
            password_hash,
            skills,
            capacity: input.capacity,
            active: input.active,
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    tx.commit().await?;
    Ok(axum::Json(user.into()))
}
