//! The operator's provisioning API, enabled only when `PARLEY_PLATFORM_TOKEN` is set.

use axum::{extract::State, http::HeaderMap};
use chrono::{DateTime, Utc};
use conversation_store::accounts::{self, NewUser};
use parley_core::{Role, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::hash_password,
    error::{ApiError, CommonErrors},
    extract::ApiJson,
    routes::users::UserOut,
    validate::Checks,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_tenant))
}

/// A new tenant and its first admin.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantIn {
    /// The organisation's name.
    pub name: String,
    /// The first admin's login email.
    pub admin_email: String,
    /// The first admin's password (at least 8 characters).
    pub admin_password: String,
    /// The first admin's shown name (default: "Administrator").
    pub admin_display_name: Option<String>,
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantOut {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Provisioned at.
    pub created_at: DateTime<Utc>,
}

/// The provisioned tenant and its admin.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreatedOut {
    /// The tenant.
    pub tenant: TenantOut,
    /// Its first admin.
    pub admin: UserOut,
}

/// The operator, proven by the platform token. An extractor, so that it runs before the
/// body is read: nobody without the token learns what the body should look like.
pub struct PlatformOperator;

impl axum::extract::FromRequestParts<AppState> for PlatformOperator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_platform_token(state, &parts.headers)?;
        Ok(Self)
    }
}

fn check_platform_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.config.platform_token else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "platform_api_disabled",
            "the platform API is disabled; the operator enables it by setting PARLEY_PLATFORM_TOKEN",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "this endpoint needs `Authorization: Bearer <platform token>`",
            )
        })?;
    if crate::auth::constant_time_eq(given.trim().as_bytes(), expected.0.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_token",
            "the platform token is wrong",
        ))
    }
}

/// Provision a tenant with its first admin (operator only).
#[utoipa::path(post, path = "/platform/v1/tenants", tag = "platform",
    security(("platform_token" = [])),
    request_body = CreateTenantIn,
    responses(
        (status = 201, description = "Provisioned", body = TenantCreatedOut),
        (status = 401, description = "Missing or wrong platform token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "The platform API is disabled", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The admin email is taken", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn create_tenant(
    State(state): State<AppState>,
    _operator: PlatformOperator,
    ApiJson(input): ApiJson<CreateTenantIn>,
) -> Result<(axum::http::StatusCode, axum::Json<TenantCreatedOut>), ApiError> {
    let mut c = Checks::default();
    let name = c.text("name", &input.name, 200);
    let email = c.email("admin_email", &input.admin_email);
    c.password("admin_password", &input.admin_password);
    let display_name = c.text(
        "admin_display_name",
        input
            .admin_display_name
            .as_deref()
            .unwrap_or("Administrator"),
        100,
    );
    c.finish()?;
    let password_hash = hash_password(input.admin_password).await?;
    let mut tx = state.db.begin().await?;
    // Emails are unique per tenant, but the operator (who sees every tenant) provisions a
    // first admin only with an address no account uses yet.
    if !accounts::find_logins(&mut tx, &email, 1).await?.is_empty() {
        return Err(ApiError::conflict(
            "admin_email",
            "admin_email is already taken",
        ));
    }
    let tenant = accounts::create_tenant(&mut tx, &name).await?;
    let admin = accounts::create_user(
        &mut tx,
        TenantId(tenant.id),
        &NewUser {
            email,
            display_name,
            role: Role::Admin,
            password_hash,
            skills: Vec::new(),
            capacity: 3,
        },
    )
    .await
    .map_err(|e| match e {
        conversation_store::StoreError::Conflict { .. } => {
            ApiError::conflict("admin_email", "admin_email is already taken")
        }
        other => other.into(),
    })?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant.id, "tenant provisioned");
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(TenantCreatedOut {
            tenant: TenantOut {
                id: tenant.id,
                name: tenant.name,
                created_at: tenant.created_at,
            },
            admin: admin.into(),
        }),
    ))
}
