//! Tenants, users and login throttling.

use chrono::{DateTime, Utc};
use parley_core::{Role, TenantId, UserId};
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::StoreError;

/// A contact-center organisation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    /// Its id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// When it was provisioned.
    pub created_at: DateTime<Utc>,
}

/// A user of a tenant, without the password hash.
#[derive(Debug, Clone)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Login email (unique across the platform, compared case-insensitively).
    pub email: String,
    /// Name shown to colleagues and contacts.
    pub display_name: String,
    /// What the user may do.
    pub role: Role,
    /// Routing skills.
    pub skills: Vec<String>,
    /// How many chat interactions at once.
    pub capacity: i32,
    /// Deactivated users cannot log in.
    pub active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    tenant_id: Uuid,
    email: String,
    display_name: String,
    role: String,
    skills: Vec<String>,
    capacity: i32,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        let role = r
            .role
            .parse::<Role>()
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
        Ok(User {
            id: UserId(r.id),
            tenant_id: TenantId(r.tenant_id),
            email: r.email,
            display_name: r.display_name,
            role,
            skills: r.skills,
            capacity: r.capacity,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// The columns of [`UserRow`], as a literal so queries stay `&'static str`.
macro_rules! user_columns {
    () => {
        "id, tenant_id, email, display_name, role, skills, capacity, active, created_at, updated_at"
    };
}

/// Fields of a new user; the password is already hashed by the caller.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login email.
    pub email: String,
    /// Shown name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Password hash (PHC string).
    pub password_hash: String,
    /// Routing skills.
    pub skills: Vec<String>,
    /// Chat capacity.
    pub capacity: i32,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New shown name.
    pub display_name: Option<String>,
    /// New role.
    pub role: Option<Role>,
    /// New password hash.
    pub password_hash: Option<String>,
    /// New skills.
    pub skills: Option<Vec<String>>,
    /// New capacity.
    pub capacity: Option<i32>,
    /// Activate or deactivate.
    pub active: Option<bool>,
}

/// Create a tenant.
pub async fn create_tenant(conn: &mut PgConnection, name: &str) -> Result<Tenant, StoreError> {
    sqlx::query_as::<_, Tenant>(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
    )
    .bind(TenantId::new().0)
    .bind(name)
    .fetch_one(conn)
    .await
    .map_err(StoreError::from_db)
}

/// The one spelling of an email that Parley stores, looks up and throttles by: trimmed,
/// Unicode NFC, lowercased by Rust's rules. (Lowercasing in the database and in Rust
/// differently let `vİctim@…` log in as `victim@…` under a lock-out key of its own.)
pub fn normalise_email(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    raw.trim().nfc().collect::<String>().to_lowercase()
}

/// Create a user in `tenant` (the email is stored normalised: [`normalise_email`]).
pub async fn create_user(
    conn: &mut PgConnection,
    tenant: TenantId,
    new: &NewUser,
) -> Result<User, StoreError> {
    let row = sqlx::query_as::<_, UserRow>(concat!("INSERT INTO users (id, tenant_id, email, display_name, role, password_hash, skills, capacity)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ", user_columns!()))
    .bind(UserId::new().0)
    .bind(tenant.0)
    .bind(normalise_email(&new.email))
    .bind(&new.display_name)
    .bind(new.role.as_str())
    .bind(&new.password_hash)
    .bind(&new.skills)
    .bind(new.capacity)
    .fetch_one(conn)
    .await
    .map_err(StoreError::from_db)?;
    row.try_into()
}

/// One user of `tenant`; `None` when it does not exist in that tenant.
pub async fn get_user(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: UserId,
) -> Result<Option<User>, StoreError> {
    let row = sqlx::query_as::<_, UserRow>(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    row.map(User::try_from).transpose()
}

/// A page of `tenant`'s users in id order, starting after `after`.
pub async fn list_users(
    conn: &mut PgConnection,
    tenant: TenantId,
    after: Option<UserId>,
    limit: i64,
) -> Result<Vec<User>, StoreError> {
    let rows = sqlx::query_as::<_, UserRow>(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(tenant.0)
    .bind(after.map(|a| a.0))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(User::try_from).collect()
}

/// Apply `patch` to a user of `tenant`; `None` when no such user.
pub async fn update_user(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: UserId,
    patch: &UserPatch,
) -> Result<Option<User>, StoreError> {
    // A change that takes an admin away (deactivated, or another role) must leave the
    // tenant one active admin. The tenant's active admins are locked in id order first,
    // so two admins deactivating each other at once are served one after the other and
    // the second sees the first's change. (Call inside a transaction.)
    let demotes = patch.active == Some(false) || patch.role.is_some_and(|r| r != Role::Admin);
    if demotes {
        let admins: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM users WHERE tenant_id = $1 AND role = 'admin' AND active
             ORDER BY id FOR UPDATE",
        )
        .bind(tenant.0)
        .fetch_all(&mut *conn)
        .await?;
        if admins == [id.0] {
            return Err(StoreError::Invalid {
                field: if patch.active == Some(false) {
                    "active"
                } else {
                    "role"
                },
                message: "this is the tenant's last active admin; make another user admin first"
                    .to_owned(),
            });
        }
    }
    let row = sqlx::query_as::<_, UserRow>(concat!(
        "UPDATE users SET
            display_name  = COALESCE($3, display_name),
            role          = COALESCE($4, role),
            password_hash = COALESCE($5, password_hash),
            skills        = COALESCE($6, skills),
            capacity      = COALESCE($7, capacity),
            active        = COALESCE($8, active),
            updated_at    = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING ",
        user_columns!()
    ))
    .bind(tenant.0)
    .bind(id.0)
    .bind(patch.display_name.as_deref())
    .bind(patch.role.map(Role::as_str))
    .bind(patch.password_hash.as_deref())
    .bind(patch.skills.as_deref())
    .bind(patch.capacity)
    .bind(patch.active)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::from_db)?;
    if row.is_some() {
        if patch.password_hash.is_some() {
            // A new password ends every session and token issued under the old one.
            revoke_user_tokens(conn, tenant, id).await?;
        } else if patch.active.is_some() || patch.role.is_some() {
            announce_auth_change(conn).await?;
        }
    }
    row.map(User::try_from).transpose()
}

/// What login needs to check a password.
#[derive(Debug, Clone)]
pub struct LoginCandidate {
    /// The user.
    pub user: User,
    /// The stored PHC hash.
    pub password_hash: String,
}

/// The accounts with `email` for login, in every tenant (an address is unique within a
/// tenant, not across the platform), at most `limit`. The one unscoped user query: login
/// happens before a tenant is known.
pub async fn find_logins(
    conn: &mut PgConnection,
    email: &str,
    limit: i64,
) -> Result<Vec<LoginCandidate>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        ", password_hash FROM users WHERE lower(email) = $1 ORDER BY created_at, id LIMIT $2"
    ))
    .bind(normalise_email(email))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let password_hash: String = row.try_get("password_hash")?;
            let user = <UserRow as sqlx::FromRow<'_, sqlx::postgres::PgRow>>::from_row(row)?;
            Ok(LoginCandidate {
                user: user.try_into()?,
                password_hash,
            })
        })
        .collect()
}

/// A tenant's name, for a person with accounts in several tenants choosing one.
pub async fn tenant_name(conn: &mut PgConnection, tenant: TenantId) -> Result<String, StoreError> {
    Ok(sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant.0)
        .fetch_one(conn)
        .await?)
}

/// The tenant whose user has `email`, if any (used to seed the demo tenant once).
pub async fn tenant_of_email(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<TenantId>, StoreError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM users WHERE lower(email) = $1 ORDER BY created_at LIMIT 1",
    )
    .bind(normalise_email(email))
    .fetch_optional(conn)
    .await?;
    Ok(id.map(TenantId))
}

/// Take one login attempt for `key` before the password is checked: counted at once, in
/// one statement, so that concurrent guesses cannot all pass a check made before any of
/// them is counted. `Some(seconds to wait)` once `max_attempts` unsuccessful attempts were
/// taken in the current window of `window_secs`; a successful login forgets them
/// ([`clear_login_failures`]).
pub async fn take_login_attempt(
    conn: &mut PgConnection,
    key: &str,
    max_attempts: i32,
    window_secs: f64,
) -> Result<Option<i64>, StoreError> {
    let (attempts, remaining): (i32, f64) = sqlx::query_as(
        "INSERT INTO login_attempts (key, window_start, failures) VALUES ($1, now(), 1)
         ON CONFLICT (key) DO UPDATE SET
           failures = CASE WHEN login_attempts.window_start + make_interval(secs => $2) <= now()
                           THEN 1 ELSE least(login_attempts.failures + 1, 1000000) END,
           window_start = CASE WHEN login_attempts.window_start + make_interval(secs => $2) <= now()
                           THEN now() ELSE login_attempts.window_start END
         RETURNING failures,
           EXTRACT(EPOCH FROM (window_start + make_interval(secs => $2) - now()))::float8",
    )
    .bind(key)
    .bind(window_secs)
    .fetch_one(conn)
    .await?;
    Ok((attempts > max_attempts).then(|| remaining.ceil().max(1.0) as i64))
}

/// Give back one attempt taken for `key` (a successful login from a shared address is
/// no failure of that address).
pub async fn give_back_login_attempt(conn: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE login_attempts SET failures = greatest(failures - 1, 0) WHERE key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forget failures for `key` (after a successful login).
pub async fn clear_login_failures(conn: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_attempts WHERE key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// What an access token's user and session are now, for checking the token.
#[derive(Debug, Clone)]
pub struct TokenSubject {
    /// The user (its current role and whether it is active).
    pub user: User,
    /// Tokens issued before this are refused (a password change).
    pub tokens_valid_after: Option<DateTime<Utc>>,
    /// For a token naming a session: whether that session is live (this user's, not
    /// revoked, not expired).
    pub session_live: Option<bool>,
}

/// The user an access token names, with its session's state (`sid`), in one read.
pub async fn token_subject(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    sid: Option<Uuid>,
) -> Result<Option<TokenSubject>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        ", tokens_valid_after,
           CASE WHEN $3::uuid IS NULL THEN NULL ELSE EXISTS (
             SELECT 1 FROM sessions s WHERE s.id = $3 AND s.tenant_id = $1 AND s.user_id = $2
               AND s.revoked_at IS NULL AND s.expires_at > now()) END AS session_live
         FROM users WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.0)
    .bind(user.0)
    .bind(sid)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let tokens_valid_after: Option<DateTime<Utc>> = row.try_get("tokens_valid_after")?;
    let session_live: Option<bool> = row.try_get("session_live")?;
    let u = <UserRow as sqlx::FromRow<'_, sqlx::postgres::PgRow>>::from_row(&row)?;
    Ok(Some(TokenSubject {
        user: u.try_into()?,
        tokens_valid_after,
        session_live,
    }))
}

/// The NOTIFY channel on which a change to who may hold a token (a user deactivated, a
/// role or password changed, a session revoked) is announced, so that open event
/// streams check their credentials again at once.
pub const AUTH_CHANNEL: &str = "parley_auth";

async fn announce_auth_change(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(AUTH_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Start a session for a login: its refresh token's SHA-256, live for `ttl_secs`.
pub async fn create_session(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    refresh_sha256: &[u8],
    ttl_secs: f64,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO sessions (id, tenant_id, user_id, refresh_sha256, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(id)
    .bind(tenant.0)
    .bind(user.0)
    .bind(refresh_sha256)
    .bind(ttl_secs)
    .execute(conn)
    .await?;
    Ok(id)
}

/// What a refresh found.
#[derive(Debug, Clone)]
pub enum Refreshed {
    /// The session, now with the new refresh token; its (active) user.
    Live {
        /// The session.
        session: Uuid,
        /// Its user.
        user: User,
    },
    /// No live session has that refresh token (expired, revoked, or never issued).
    Unknown,
    /// The token was already used once: someone holds a copy. The session is revoked.
    Reused,
}

/// Exchange a refresh token (by its SHA-256) for a new one: the old one is spent. Using a
/// spent one again revokes the whole session (the token was copied), as OAuth's
/// refresh-token rotation advises.
pub async fn refresh_session(
    conn: &mut PgConnection,
    old_sha256: &[u8],
    new_sha256: &[u8],
) -> Result<Refreshed, StoreError> {
    let live: Option<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "UPDATE sessions SET refresh_sha256 = $2, previous_refresh_sha256 = $1, refreshed_at = now()
         WHERE refresh_sha256 = $1 AND revoked_at IS NULL AND expires_at > now()
         RETURNING id, tenant_id, user_id",
    )
    .bind(old_sha256)
    .bind(new_sha256)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((session, tenant, user)) = live {
        return match get_user(conn, TenantId(tenant), UserId(user)).await? {
            Some(u) if u.active => Ok(Refreshed::Live { session, user: u }),
            _ => Ok(Refreshed::Unknown),
        };
    }
    // The token this session's current one replaced, presented again: a copy is about.
    let reused: Option<Uuid> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now()
         WHERE previous_refresh_sha256 = $1 AND revoked_at IS NULL RETURNING id",
    )
    .bind(old_sha256)
    .fetch_optional(&mut *conn)
    .await?;
    if reused.is_some() {
        announce_auth_change(conn).await?;
        return Ok(Refreshed::Reused);
    }
    Ok(Refreshed::Unknown)
}

/// Revoke one session (logout): its refresh token and every access token naming it stop
/// working at once.
pub async fn revoke_session(
    conn: &mut PgConnection,
    tenant: TenantId,
    session: Uuid,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE sessions SET revoked_at = now() WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant.0)
    .bind(session)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    announce_auth_change(conn).await?;
    Ok(n > 0)
}

/// Revoke every session of a user and refuse access tokens issued before now (a password
/// change).
pub async fn revoke_user_tokens(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = now()
         WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant.0)
    .bind(user.0)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE users SET tokens_valid_after = now() WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(user.0)
        .execute(&mut *conn)
        .await?;
    announce_auth_change(conn).await
}

/// A user's display name.
pub async fn display_name(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: parley_core::UserId,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT display_name FROM users WHERE id = $1 AND tenant_id = $2")
            .bind(user.0)
            .bind(tenant.0)
            .fetch_optional(conn)
            .await?,
    )
}
