//! Login and "who am I".

use axum::extract::{ConnectInfo, State};
use conversation_store::accounts;
use parley_core::Principal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    auth::verify_password,
    error::{ApiError, CommonErrors},
    extract::ApiJson,
    routes::users::UserOut,
    validate::Checks,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(me))
}

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    /// Login email.
    #[schema(example = "agent@demo.local")]
    pub email: String,
    /// Password.
    #[schema(example = "parley-demo")]
    pub password: String,
}

/// An access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenOut {
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// A hash to verify against when the email is unknown, so a wrong email takes as long as
/// a wrong password and response times don't reveal which accounts exist. Made once, on
/// the hashing threads like every other hash.
async fn dummy_hash() -> Result<String, ApiError> {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_try_init(|| crate::auth::hash_password("parley-no-such-user".to_owned()))
        .await
        .cloned()
}

/// Exchange email and password for an access token. Repeated failures lock the email
/// (and, more loosely, the client address) out for a window: 429 with `Retry-After`.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = LoginIn,
    responses(
        (status = 200, description = "Logged in", body = TokenOut),
        (status = 401, description = "Wrong email or password (`invalid_credentials`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts (`rate_limited`)", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(crate::app::ClientAddr(peer)): ConnectInfo<crate::app::ClientAddr>,
    ApiJson(input): ApiJson<LoginIn>,
) -> Result<axum::Json<TokenOut>, ApiError> {
    let mut c = Checks::default();
    let email = c.email("email", &input.email);
    if input.password.is_empty() {
        c.fail("password", "must not be empty");
    }
    c.finish()?;
    let cfg = &state.config;
    let window = cfg.login_window.as_secs_f64();
    // The same spelling the users table is searched by (`Checks::email` normalised it).
    let email_key = format!("email:{email}");
    let ip_key = format!("ip:{}", peer.ip());

    // Every attempt is counted before its password is checked, so concurrent guesses
    // get at most the allowed number of checks between them.
    let mut conn = state.db.acquire().await?;
    for (key, max) in [
        (&email_key, cfg.login_max_failures),
        (&ip_key, cfg.login_max_failures_per_ip),
    ] {
        if let Some(wait) = accounts::take_login_attempt(&mut conn, key, max, window).await? {
            return Err(ApiError::rate_limited(
                format!("too many failed logins; try again in {wait} s"),
                wait,
            ));
        }
    }
    let candidate = accounts::find_login(&mut conn, &email).await?;
    // Don't hold a connection while hashing.
    drop(conn);
    let (hash, user) = match candidate {
        Some(c) => (c.password_hash, Some(c.user)),
        None => (dummy_hash().await?, None),
    };
    let password_ok = verify_password(input.password, hash).await?;
    let mut conn = state.db.acquire().await?;
    match user {
        Some(user) if password_ok && user.active => {
            accounts::clear_login_failures(&mut conn, &email_key).await?;
            accounts::give_back_login_attempt(&mut conn, &ip_key).await?;
            let principal = Principal {
                user_id: user.id,
                tenant_id: user.tenant_id,
                role: user.role,
            };
            let token = state
                .jwt
                .issue(&principal)
                .map_err(|e| ApiError::internal(&e))?;
            tracing::info!(user_id = %user.id, tenant_id = %user.tenant_id, "login");
            Ok(axum::Json(TokenOut {
                access_token: token,
                token_type: "Bearer",
                expires_in: state.jwt.ttl().as_secs(),
            }))
        }
        _ => {
            // Already counted, before the check.
            drop(conn);
            Err(ApiError::unauthorized(
                "invalid_credentials",
                "the email or password is wrong",
            ))
        }
    }
}

/// The calling user.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The calling user", body = UserOut),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<UserOut>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let user = accounts::get_user(&mut conn, principal.tenant_id, principal.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "the user no longer exists"))?;
    Ok(axum::Json(user.into()))
}
