//! Login, tokens and roles.

use parley_core::{Principal, Role, TenantId, UserId};
use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::{TEST_PASSWORD, spawn_app, spawn_app_with};

#[tokio::test]
async fn login_returns_a_bearer_token_that_opens_me() {
    let app = spawn_app().await;
    let r = app.login(&app.agent.email, TEST_PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 900);
    let token = r.json["access_token"].as_str().expect("token");
    let me = app.get("/api/v1/me", token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["email"], app.agent.email);
    assert_eq!(me.json["role"], "agent");
    assert_eq!(me.json["tenant_id"], app.tenant.to_string());
    assert!(me.json.get("password_hash").is_none());
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let app = spawn_app().await;
    let r = app
        .login(&app.agent.email.to_uppercase(), TEST_PASSWORD)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = spawn_app().await;
    let wrong = app.login(&app.agent.email, "not-the-password").await;
    let unknown = app.login("nobody@nowhere.test", TEST_PASSWORD).await;
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.code(), "invalid_credentials");
    }
    assert_eq!(wrong.json["detail"], unknown.json["detail"]);
}

#[tokio::test]
async fn repeated_failures_lock_the_email_out_even_for_the_right_password() {
    let app = spawn_app_with(&[("PARLEY_LOGIN_MAX_FAILURES", "3")]).await;
    for _ in 0..3 {
        let r = app.login(&app.agent.email, "wrong-password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app.login(&app.agent.email, TEST_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.code(), "rate_limited");
    let retry: i64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry > 0 && retry <= 900);
    // Another user from the same address is not locked out by this email's failures.
    let other = app.login(&app.admin.email, TEST_PASSWORD).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_get_no_more_checks_than_the_lock_out_allows() {
    let app = spawn_app_with(&[
        ("PARLEY_LOGIN_MAX_FAILURES", "5"),
        ("PARLEY_LOGIN_MAX_FAILURES_PER_IP", "1000"),
    ])
    .await;
    // 150 wrong guesses at once. (Not the right password among them: whether it would
    // be one of the five checked depends on which requests the server happens to take
    // first, and a right password checked within the allowance logs in and clears the
    // count, as it should.)
    let guesses: Vec<String> = (0..150).map(|i| format!("guess-{i}")).collect();
    let answers =
        futures_util::future::join_all(guesses.iter().map(|pw| app.login(&app.agent.email, pw)))
            .await;
    let checked = answers
        .iter()
        .filter(|r| r.status != StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        checked <= 5,
        "{checked} of 150 concurrent guesses had their password checked"
    );
    // The lock-out holds for the right password afterwards…
    let r = app.login(&app.agent.email, TEST_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    // …and for the same email in other letter case.
    let tricky = app.agent.email.replacen('a', "A", 1).replacen('g', "G", 1);
    let r = app.login(&tricky, TEST_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
}

#[tokio::test]
async fn an_email_with_a_dotted_capital_i_is_not_another_spelling_of_a_locked_one() {
    let app = spawn_app_with(&[("PARLEY_LOGIN_MAX_FAILURES", "2")]).await;
    // A user whose address has an `i` in it.
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &serde_json::json!({"email": "victim3@a.test", "display_name": "V", "role": "agent",
                                "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for _ in 0..2 {
        let r = app.login("victim3@a.test", "wrong-password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.login("victim3@a.test", "correct horse battery")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // `İ` lowercases to `i` in the database but to `i̇` in Rust: it must not reach the
    // locked account through a lock-out key of its own.
    let r = app.login("vİctim3@a.test", "correct horse battery").await;
    assert_ne!(r.status, StatusCode::OK, "{}", r.text);
    // Upper case ASCII is the same account, and is locked too.
    let r = app.login("VICTIM3@A.TEST", "correct horse battery").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
}

#[tokio::test]
async fn too_many_failures_from_one_address_are_throttled() {
    let app = spawn_app_with(&[
        ("PARLEY_LOGIN_MAX_FAILURES_PER_IP", "4"),
        ("PARLEY_LOGIN_MAX_FAILURES", "100"),
    ])
    .await;
    for i in 0..4 {
        let r = app
            .login(&format!("guess{i}@nowhere.test"), "wrong-password")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app.login(&app.agent.email, TEST_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_successful_login_clears_earlier_failures() {
    let app = spawn_app_with(&[("PARLEY_LOGIN_MAX_FAILURES", "3")]).await;
    for _ in 0..2 {
        app.login(&app.agent.email, "wrong-password").await;
    }
    assert_eq!(
        app.login(&app.agent.email, TEST_PASSWORD).await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        app.login(&app.agent.email, "wrong-password").await;
    }
    assert_eq!(
        app.login(&app.agent.email, TEST_PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_forged_and_expired_tokens_are_401_with_distinct_codes() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "missing_token");
    assert!(r.headers.contains_key("www-authenticate"));

    let r = app
        .get("/api/v1/me", "eyJhbGciOiJIUzI1NiJ9.e30.forged")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "invalid_token");

    // Signed with another secret.
    let foreign = gateway::auth::JwtKeys::new(
        b"some-other-secret-some-other-secret",
        std::time::Duration::from_secs(60),
    );
    let token = foreign
        .issue(&Principal {
            user_id: app.agent.id,
            tenant_id: app.tenant,
            role: Role::Admin,
        })
        .expect("sign");
    let r = app.get("/api/v1/me", &token).await;
    assert_eq!(r.code(), "invalid_token");

    let short = gateway::auth::JwtKeys::new(
        test_support::TEST_JWT_SECRET.as_bytes(),
        std::time::Duration::from_secs(1),
    );
    let token = short
        .issue(&Principal {
            user_id: app.agent.id,
            tenant_id: app.tenant,
            role: Role::Agent,
        })
        .expect("sign");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = app.get("/api/v1/me", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "token_expired");
}

#[tokio::test]
async fn a_token_for_a_user_that_does_not_exist_is_refused() {
    let app = spawn_app().await;
    let token = app.token_for(&Principal {
        user_id: UserId::new(),
        tenant_id: TenantId::new(),
        role: Role::Admin,
    });
    let r = app.get("/api/v1/users", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deactivated_users_lose_access_at_once() {
    let app = spawn_app().await;
    let r = app
        .patch(
            &format!("/api/v1/users/{}", app.agent.id),
            &app.admin.token,
            &json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The token issued before deactivation no longer works…
    assert_eq!(
        app.get("/api/v1/me", &app.agent.token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // …and the user cannot log in again.
    assert_eq!(
        app.login(&app.agent.email, TEST_PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_role_comes_from_the_database_not_the_token() {
    let app = spawn_app().await;
    // A token claiming admin for an agent does not make the agent an admin.
    let token = app.token_for(&Principal {
        user_id: app.agent.id,
        tenant_id: app.tenant,
        role: Role::Admin,
    });
    let r = app.get("/api/v1/users", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "forbidden");
}

/// Base64url without padding, as JWTs use it.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A token with any header and claims, HMAC-SHA256-signed with `secret` (or unsigned).
fn craft(header: &serde_json::Value, claims: &serde_json::Value, secret: Option<&[u8]>) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = match secret {
        Some(s) => {
            let hexed = channel_connector::signature::sign(s, signing_input.as_bytes());
            let raw = hex::decode(hexed.trim_start_matches("sha256=")).expect("hex");
            b64url(&raw)
        }
        None => String::new(),
    };
    format!("{signing_input}.{sig}")
}

#[tokio::test]
async fn tokens_with_the_wrong_algorithm_issuer_time_or_contents_are_refused() {
    let app = spawn_app().await;
    let secret = test_support::TEST_JWT_SECRET.as_bytes();
    let now = chrono::Utc::now().timestamp();
    let claims = |extra: serde_json::Value| {
        let mut c = json!({"sub": app.admin.id.0, "tid": app.tenant.0, "role": "admin",
                           "iss": "parley", "iat": now, "exp": now + 600});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    // The crafting is right: a well-formed token made this way is accepted.
    let good = craft(&hs256, &claims(json!({})), Some(secret));
    let r = app.get("/api/v1/users", &good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let tampered = {
        // The admin's signed token with the payload swapped for another tenant's claim.
        let parts: Vec<&str> = good.split('.').collect();
        let other = claims(json!({"tid": TenantId::new().0}));
        format!(
            "{}.{}.{}",
            parts[0],
            b64url(other.to_string().as_bytes()),
            parts[2]
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none, unsigned",
            craft(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims(json!({})),
                None,
            ),
        ),
        (
            "alg none with a signature",
            craft(&json!({"alg": "none"}), &claims(json!({})), Some(secret)),
        ),
        (
            "RS256 header over an HMAC with the secret (algorithm confusion)",
            craft(&json!({"alg": "RS256"}), &claims(json!({})), Some(secret)),
        ),
        (
            "HS384 header",
            craft(&json!({"alg": "HS384"}), &claims(json!({})), Some(secret)),
        ),
        (
            "wrong issuer",
            craft(
                &hs256,
                &claims(json!({"iss": "someone-else"})),
                Some(secret),
            ),
        ),
        (
            "no issuer",
            craft(&hs256, &claims(json!({"iss": null})), Some(secret)),
        ),
        (
            "no expiry",
            craft(&hs256, &claims(json!({"exp": null})), Some(secret)),
        ),
        (
            "not valid before an hour from now",
            craft(&hs256, &claims(json!({"nbf": now + 3600})), Some(secret)),
        ),
        (
            "issued an hour in the future",
            craft(
                &hs256,
                &claims(json!({"iat": now + 3600, "exp": now + 7200})),
                Some(secret),
            ),
        ),
        ("tampered payload", tampered),
        ("truncated", good[..good.len() - 4].to_owned()),
        (
            "two segments",
            good.rsplit_once('.')
                .map(|x| x.0)
                .unwrap_or_default()
                .to_owned(),
        ),
        ("garbage", "not a token at all".to_owned()),
    ];
    for (what, token) in cases {
        let r = app.get("/api/v1/users", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert_eq!(r.code(), "invalid_token", "{what}");
        assert_eq!(r.content_type(), "application/problem+json", "{what}");
        // The socket refuses the same token.
        let url = format!(
            "ws://{}/api/v1/events?access_token={}",
            app.addr,
            token.replace(' ', "%20")
        );
        assert!(
            tokio_tungstenite::connect_async(url).await.is_err(),
            "{what}: the event stream accepted it"
        );
    }
    let expired = craft(
        &hs256,
        &claims(json!({"iat": now - 7200, "exp": now - 3600})),
        Some(secret),
    );
    let r = app.get("/api/v1/users", &expired).await;
    assert_eq!(r.code(), "token_expired");
}
