//! Authentication: password hashing, access tokens, and the `Principal` extractor.
//!
//! Tokens are HS256 JWTs (algorithm pinned, `exp` required) carrying the user, tenant and
//! role. The extractor also checks the user is still active and takes the role from the
//! database, so deactivating a user or changing a role takes effect at once.

use std::time::Duration;

use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use parley_core::{Principal, Role, TenantId, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{app::AppState, error::ApiError};

const ISSUER: &str = "parley";

/// Signing and verification keys for access tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    tid: Uuid,
    role: Role,
    iss: String,
    iat: i64,
    exp: i64,
    /// The login session the token belongs to (absent on tokens minted by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
}

/// What a verified access token says.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    /// Who, as the token claims it (the role is re-read from the database).
    pub principal: Principal,
    /// Its login session.
    pub sid: Option<Uuid>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Past its `exp`.
    Expired,
    /// Forged, malformed, wrong algorithm or issuer.
    Invalid,
}

impl JwtKeys {
    /// Keys from a shared secret; tokens live for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// How long an access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Sign an access token for `p` outside any session (tests, tools).
    pub fn issue(&self, p: &Principal) -> Result<String, jsonwebtoken::errors::Error> {
        self.issue_for(p, None)
    }

    /// Sign an access token for `p` in login session `sid`.
    pub fn issue_for(
        &self,
        p: &Principal,
        sid: Option<Uuid>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: p.user_id.0,
            tid: p.tenant_id.0,
            role: p.role,
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(900),
            sid,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Check a token's signature, algorithm, issuer, expiry, `nbf` and `iat`.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        self.verify_full(token).map(|v| v.principal)
    }

    /// [`Self::verify`], with the token's session and times.
    pub fn verify_full(&self, token: &str) -> Result<Verified, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            // A token issued in the future was not issued by us (replicas share a
            // clock to within a minute).
            Ok(data) if data.claims.iat > chrono::Utc::now().timestamp() + 60 => {
                Err(TokenError::Invalid)
            }
            Ok(data) => Ok(Verified {
                principal: Principal {
                    user_id: UserId(data.claims.sub),
                    tenant_id: TenantId(data.claims.tid),
                    role: data.claims.role,
                },
                sid: data.claims.sid,
                iat: data.claims.iat,
                exp: data.claims.exp,
            }),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

/// Hash a password with Argon2id (PHC string). CPU- and memory-heavy: runs on the
/// hashing threads (see [`hashing`]).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    hashing::run(move || hashing::hash(password.as_bytes()))
        .await?
        .map_err(|e| ApiError::internal(&HashError(e)))
}

/// Check `password` against a stored PHC hash. CPU- and memory-heavy: runs on the hashing
/// threads (see [`hashing`]).
pub async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    hashing::run(move || hashing::verify(password.as_bytes(), &hash)).await
}

/// A few threads of their own for password hashing, each with its Argon2 memory.
///
/// Each Argon2id hash with the default parameters fills 19 MiB of memory. On the blocking
/// pool (up to 512 threads) a burst of logins (a shift starting, or someone spraying
/// guesses from many addresses) hashed all at once, and the allocator kept most of each
/// hash's 19 MiB afterwards: the gateway grew by about that much per login (10 agents
/// provisioned and logged in: 182 MiB). Here at most one hash per core runs at a time, on
/// the same few threads, each reusing one buffer of its own for the hash's memory, so the
/// gateway holds at most 19 MiB per core for passwords however many logins come; the
/// others wait their turn without holding a thread, and one whose caller has gone (its
/// request timed out) is dropped unhashed.
pub mod hashing {
    use std::{
        cell::RefCell,
        sync::{
            Arc, Mutex, OnceLock,
            atomic::{AtomicUsize, Ordering},
            mpsc,
        },
    };

    use argon2::{
        Algorithm, Argon2, Block, Params, PasswordHash, Version,
        password_hash::phc::{Output, ParamsString, Salt},
    };

    use crate::error::ApiError;

    thread_local! {
        /// This thread's Argon2 memory, kept from one hash to the next.
        static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    }

    /// Run `f` with `count` blocks of this thread's Argon2 memory (every block is written
    /// before it is read, so what a previous hash left there does not matter).
    fn with_blocks<T>(count: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
        BLOCKS.with_borrow_mut(|blocks| {
            if blocks.len() != count {
                *blocks = vec![Block::new(); count];
            }
            f(blocks)
        })
    }

    /// A new Argon2id PHC string for `password` (default parameters, 16 random bytes of
    /// salt), as `argon2`'s own `PasswordHasher` writes it.
    pub fn hash(password: &[u8]) -> Result<String, String> {
        let argon = Argon2::default();
        let params = argon.params().clone();
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        with_blocks(params.block_count(), |blocks| {
            argon.hash_password_into_with_memory(password, &salt, &mut out, blocks)
        })
        .map_err(|e| e.to_string())?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
            salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `stored` (with the algorithm, version and
    /// parameters it names; compared in constant time). An unreadable hash matches nothing.
    pub fn verify(password: &[u8], stored: &str) -> bool {
        let Ok(phc) = PasswordHash::new(stored) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
            return false;
        };
        let (Ok(algorithm), Ok(params)) = (
            Algorithm::try_from(phc.algorithm.as_str()),
            Params::try_from(&phc),
        ) else {
            return false;
        };
        let version = match phc.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        let hashed = with_blocks(params.block_count(), |blocks| {
            argon.hash_password_into_with_memory(password, salt.as_ref(), &mut out, blocks)
        });
        hashed.is_ok() && Output::new(&out).is_ok_and(|o| o == *expected)
    }

    type Job = Box<dyn FnOnce() + Send>;

    struct Pool {
        jobs: mpsc::Sender<Job>,
        threads: usize,
    }

    /// Hashes running now, and the most that ever ran at once.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn pool() -> Option<&'static Pool> {
        static POOL: OnceLock<Option<Pool>> = OnceLock::new();
        POOL.get_or_init(|| {
            let wanted = std::thread::available_parallelism()
                .map_or(2, std::num::NonZeroUsize::get)
                .clamp(1, 8);
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let mut threads = 0;
            for k in 0..wanted {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("password-hash-{k}"))
                    .spawn(move || {
                        loop {
                            let job = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    });
                match spawned {
                    Ok(_) => threads += 1,
                    Err(e) => tracing::warn!(error = %e, "no thread for password hashing"),
                }
            }
            if threads == 0 {
                return None;
            }
            Some(Pool { jobs: tx, threads })
        })
        .as_ref()
    }

    /// How many hashes may run at once.
    pub fn threads() -> usize {
        pool().map_or(1, |p| p.threads)
    }

    /// The most hashes that ran at once so far in this process.
    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }

    /// Run `f` on a hashing thread and wait for its result without holding a thread.
    pub async fn run<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if done.is_closed() {
                return;
            }
            let now = RUNNING.fetch_add(1, Ordering::Relaxed) + 1;
            PEAK.fetch_max(now, Ordering::Relaxed);
            let out = f();
            RUNNING.fetch_sub(1, Ordering::Relaxed);
            let _ = done.send(out);
        });
        let sent = pool().and_then(|p| p.jobs.send(job).ok());
        if sent.is_none() {
            return Err(ApiError::internal(&NoHashing));
        }
        answer.await.map_err(|_| ApiError::internal(&NoHashing))
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the password hashing threads are gone")]
    struct NoHashing;
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
struct HashError(String);

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        authenticate(state, token).await
    }
}

/// Verify an access token and load its user: the role comes from the database, and a
/// deactivated or deleted user, a revoked session and a token from before a password
/// change are refused.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    authenticate_full(state, token).await.map(|a| a.principal)
}

/// [`authenticate`], with what the event stream needs to watch the token.
pub async fn authenticate_full(state: &AppState, token: &str) -> Result<Verified, ApiError> {
    let claimed = state.jwt.verify_full(token).map_err(|e| match e {
        TokenError::Expired => ApiError::unauthorized(
            "token_expired",
            "the access token has expired; refresh it or log in again",
        ),
        TokenError::Invalid => {
            ApiError::unauthorized("invalid_token", "the access token is not valid")
        }
    })?;
    let mut conn = state.db.acquire().await?;
    let principal = still_valid(&mut conn, &claimed).await?;
    Ok(Verified {
        principal,
        ..claimed
    })
}

/// Whether a verified token still stands: its user active, its session live, issued after
/// the last password change. The principal with the user's current role.
pub async fn still_valid(
    conn: &mut sqlx::PgConnection,
    claimed: &Verified,
) -> Result<Principal, ApiError> {
    let p = claimed.principal;
    let subject =
        conversation_store::accounts::token_subject(conn, p.tenant_id, p.user_id, claimed.sid)
            .await?;
    let refused = |code: &'static str, why: &'static str| Err(ApiError::unauthorized(code, why));
    match subject {
        None => refused(
            "invalid_token",
            "the access token's user no longer exists or is deactivated",
        ),
        Some(s) if !s.user.active => refused(
            "invalid_token",
            "the access token's user no longer exists or is deactivated",
        ),
        Some(s) if s.session_live == Some(false) => refused(
            "session_ended",
            "this login session has ended (logged out, or the password changed); log in again",
        ),
        // A token of no session (minted by a tool) issued up to the second of a password
        // change is refused (a session's tokens end with the session instead).
        Some(s)
            if claimed.sid.is_none()
                && s.tokens_valid_after
                    .is_some_and(|t| claimed.iat <= t.timestamp()) =>
        {
            refused(
                "session_ended",
                "the password changed after this token was issued; log in again",
            )
        }
        Some(s) => Ok(Principal {
            user_id: s.user.id,
            tenant_id: s.user.tenant_id,
            role: s.user.role,
        }),
    }
}

/// The caller's verified access token (logout needs its session).
impl FromRequestParts<AppState> for Verified {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        authenticate_full(state, token).await
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "this endpoint needs `Authorization: Bearer <access token>`",
            )
        })?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_token",
                "the Authorization header must be `Bearer <access token>`",
            )
        })
}

/// Compare secrets without leaking where they differ (the length may leak).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    channel_connector::signature::constant_time_eq(a, b)
}

/// Role guard: `principal.require(Role::Admin)?`.
pub trait RequireRole {
    /// 403 unless the principal's role is at least `min`.
    fn require(&self, min: Role) -> Result<(), ApiError>;
}

impl RequireRole for Principal {
    fn require(&self, min: Role) -> Result<(), ApiError> {
        if self.has_role(min) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this requires the {min} role; you are {}",
                self.role
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            user_id: UserId::new(),
            tenant_id: TenantId::new(),
            role: Role::Agent,
        }
    }

    // jsonwebtoken ≥ 10 panics at run time unless exactly one crypto backend is enabled;
    // this signs and verifies for real.
    #[test]
    fn a_signed_token_verifies_and_carries_the_principal() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let p = principal();
        let token = keys.issue(&p).expect("sign");
        assert_eq!(keys.verify(&token), Ok(p));
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let other = JwtKeys::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        let token = other.issue(&principal()).expect("sign");
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
        assert_eq!(keys.verify("not.a.token"), Err(TokenError::Invalid));
        // alg=none with the same claims.
        let parts: Vec<&str> = token.split('.').collect();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert_eq!(keys.verify(&none), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_tokens_are_refused_as_expired() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let now = chrono::Utc::now().timestamp();
        let p = principal();
        let claims = Claims {
            sub: p.user_id.0,
            tid: p.tenant_id.0,
            role: p.role,
            iss: ISSUER.to_owned(),
            iat: now - 120,
            exp: now - 60,
            sid: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .expect("sign");
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_logins_hashes_a_few_at_a_time_and_each_gets_its_answer() {
        let hash = hash_password("correct horse".into()).await.expect("hash");
        let n = hashing::threads() * 3 + 2;
        let checks: Vec<_> = (0..n)
            .map(|k| {
                let (password, right) = if k % 2 == 0 {
                    ("correct horse", true)
                } else {
                    ("wrong horse", false)
                };
                let hash = hash.clone();
                tokio::spawn(async move {
                    (
                        verify_password(password.into(), hash)
                            .await
                            .expect("verify"),
                        right,
                    )
                })
            })
            .collect();
        for c in checks {
            let (got, right) = c.await.expect("join");
            assert_eq!(got, right);
        }
        assert!(hashing::peak() >= 1);
        assert!(
            hashing::peak() <= hashing::threads(),
            "{} hashes ran at once with {} hashing threads",
            hashing::peak(),
            hashing::threads()
        );
    }

    #[test]
    fn hashes_are_the_standard_phc_strings_both_ways() {
        use argon2::{
            Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version,
        };
        // Ours, checked by the crate's own verifier.
        let ours = hashing::hash(b"correct horse").expect("hash");
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", ours.as_str())
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong horse", ours.as_str())
                .is_err()
        );
        // Salted afresh each time.
        assert_ne!(ours, hashing::hash(b"correct horse").expect("hash"));
        // The crate's, and one with other parameters, checked by ours (the thread's memory
        // resized for it and back).
        let standard = Argon2::default()
            .hash_password(b"correct horse")
            .expect("hash")
            .to_string();
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).expect("params"),
        )
        .hash_password(b"correct horse")
        .expect("hash")
        .to_string();
        for h in [&standard, &small, &ours, &standard] {
            assert!(hashing::verify(b"correct horse", h), "{h}");
            assert!(!hashing::verify(b"correct hors", h), "{h}");
        }
        for junk in [
            "",
            "plain",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA",
        ] {
            assert!(!hashing::verify(b"", junk), "{junk}");
        }
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse".into(), hash.clone())
                .await
                .expect("verify")
        );
        assert!(
            !verify_password("wrong horse".into(), hash)
                .await
                .expect("verify")
        );
    }
}
