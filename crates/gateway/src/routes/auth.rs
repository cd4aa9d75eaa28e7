//! Login and "who am I".

use axum::extract::{ConnectInfo, State};
use conversation_store::accounts;
use parley_core::Principal;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
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
        .routes(routes!(refresh))
        .routes(routes!(logout))
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
    /// Which organisation, for an email with accounts in several whose passwords are
    /// the same (the login answers 409 `choose_tenant` naming them).
    pub tenant_id: Option<uuid::Uuid>,
}

/// An access token, and the refresh token that renews it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenOut {
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Exchange it at `POST /auth/refresh` for a new pair before the access token
    /// expires; each is good for one exchange. Keep it secret.
    pub refresh_token: String,
    /// Seconds until the login session ends and the password is needed again.
    pub refresh_expires_in: u64,
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshIn {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

fn new_refresh_token() -> Result<(String, Vec<u8>), ApiError> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    let token = hex::encode(bytes);
    let sha = sha2::Sha256::digest(token.as_bytes()).to_vec();
    Ok((token, sha))
}

fn tokens(
    state: &AppState,
    principal: &Principal,
    session: uuid::Uuid,
    refresh_token: String,
) -> Result<TokenOut, ApiError> {
    let access_token = state
        .jwt
        .issue_for(principal, Some(session))
        .map_err(|e| ApiError::internal(&e))?;
    Ok(TokenOut {
        access_token,
        token_type: "Bearer",
        expires_in: state.jwt.ttl().as_secs(),
        refresh_token,
        refresh_expires_in: state.config.session_ttl.as_secs(),
    })
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
        (status = 409, description = "The email and password open accounts in several tenants: give `tenant_id` (`choose_tenant`)", body = crate::error::Problem, content_type = "application/problem+json"),
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
    // The same address may have an account in several tenants: the password decides
    // which (and a person with the same password in two says which with `tenant_id`).
    let candidates: Vec<_> = accounts::find_logins(&mut conn, &email, MAX_ACCOUNTS_PER_EMAIL)
        .await?
        .into_iter()
        .filter(|c| input.tenant_id.is_none_or(|t| c.user.tenant_id.0 == t))
        .collect();
    // Don't hold a connection while hashing.
    drop(conn);
    let mut matched = Vec::new();
    if candidates.is_empty() {
        // As long as a wrong password, so response times don't reveal which addresses
        // have accounts.
        verify_password(input.password.clone(), dummy_hash().await?).await?;
    }
    for c in candidates {
        if verify_password(input.password.clone(), c.password_hash).await? && c.user.active {
            matched.push(c.user);
        }
    }
    let mut conn = state.db.acquire().await?;
    match matched.as_slice() {
        [user] => {
            accounts::clear_login_failures(&mut conn, &email_key).await?;
            accounts::give_back_login_attempt(&mut conn, &ip_key).await?;
            let principal = Principal {
                user_id: user.id,
                tenant_id: user.tenant_id,
                role: user.role,
            };
            let (refresh_token, sha) = new_refresh_token()?;
            let session = accounts::create_session(
                &mut conn,
                user.tenant_id,
                user.id,
                &sha,
                state.config.session_ttl.as_secs_f64(),
            )
            .await?;
            tracing::info!(user_id = %user.id, tenant_id = %user.tenant_id, "login");
            Ok(axum::Json(tokens(
                &state,
                &principal,
                session,
                refresh_token,
            )?))
        }
        [] => {
            // Already counted, before the check.
            drop(conn);
            Err(ApiError::unauthorized(
                "invalid_credentials",
                "the email or password is wrong",
            ))
        }
        several => {
            // The caller proved the password of each: they may know the tenants' names.
            accounts::clear_login_failures(&mut conn, &email_key).await?;
            accounts::give_back_login_attempt(&mut conn, &ip_key).await?;
            let mut names = Vec::new();
            for u in several {
                let name = accounts::tenant_name(&mut conn, u.tenant_id).await?;
                names.push(format!("{name} ({})", u.tenant_id));
            }
            Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "choose_tenant",
                format!(
                    "this email and password open accounts in several organisations; log in again with `tenant_id` set to one of: {}",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The most accounts one email may have across tenants that a login checks.
const MAX_ACCOUNTS_PER_EMAIL: i64 = 5;

/// Exchange a refresh token for a new access token and refresh token (the old refresh
/// token is spent: presenting it again ends the session, since someone holds a copy).
/// No password and no lock-out: a desktop stays logged in through the working day.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    request_body = RefreshIn,
    responses(
        (status = 200, description = "A new pair", body = TokenOut),
        (status = 401, description = "Unknown, spent, expired or revoked (`session_ended`): log in again", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<RefreshIn>,
) -> Result<axum::Json<TokenOut>, ApiError> {
    let old = sha2::Sha256::digest(input.refresh_token.trim().as_bytes()).to_vec();
    let (refresh_token, sha) = new_refresh_token()?;
    let mut tx = state.db.begin().await?;
    let found = accounts::refresh_session(&mut tx, &old, &sha).await?;
    tx.commit().await?;
    match found {
        accounts::Refreshed::Live { session, user } => {
            let principal = Principal {
                user_id: user.id,
                tenant_id: user.tenant_id,
                role: user.role,
            };
            Ok(axum::Json(tokens(
                &state,
                &principal,
                session,
                refresh_token,
            )?))
        }
        accounts::Refreshed::Reused => {
            tracing::warn!("a spent refresh token was presented again; its session is revoked");
            Err(ApiError::unauthorized(
                "session_ended",
                "this refresh token was already used; the session is ended, log in again",
            ))
        }
        accounts::Refreshed::Unknown => Err(ApiError::unauthorized(
            "session_ended",
            "the refresh token is not valid (expired, revoked or unknown); log in again",
        )),
    }
}

/// Log out: the session ends, its refresh token and every access token of it stop
/// working at once, and its open event streams are closed.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn logout(
    State(state): State<AppState>,
    token: crate::auth::Verified,
) -> Result<axum::http::StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    match token.sid {
        Some(sid) => {
            accounts::revoke_session(&mut tx, token.principal.tenant_id, sid).await?;
        }
        // A token from no session (minted by a tool): every session of the user ends.
        None => {
            accounts::revoke_user_tokens(
                &mut tx,
                token.principal.tenant_id,
                token.principal.user_id,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
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
