//! A working day's login: refresh tokens, logout, a password change, and event streams
//! that close as soon as their credentials no longer stand.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TEST_PASSWORD, TestApp, spawn_app, spawn_app_with};
use tokio_tungstenite::tungstenite::Message;

use crate::events::{Ws, connect};

async fn login(app: &TestApp, email: &str) -> Value {
    let r = app.login(email, TEST_PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

async fn refresh(app: &TestApp, token: &Value) -> test_support::Reply {
    app.call(
        reqwest::Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(&json!({"refresh_token": token})),
    )
    .await
}

fn access(pair: &Value) -> String {
    pair["access_token"].as_str().expect("access").to_owned()
}

/// The close frame the server sends, waiting up to `secs`.
async fn closed_with(ws: &mut Ws, secs: u64) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string());
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_refresh_token_renews_access_once_and_a_reused_one_ends_the_session() {
    let app = spawn_app().await;
    let first = login(&app, &app.agent.email).await;
    assert!(
        first["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 32)
    );
    assert!(
        first["refresh_expires_in"]
            .as_u64()
            .is_some_and(|s| s >= 3600)
    );
    let r = refresh(&app, &first["refresh_token"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let second = r.json;
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(
        app.get("/api/v1/me", &access(&second)).await.status,
        StatusCode::OK
    );
    // The first refresh token is spent; presenting it again (a stolen copy) ends the
    // session: the newer tokens stop working too.
    let r = refresh(&app, &first["refresh_token"]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.code(), "session_ended");
    let r = app.get("/api/v1/me", &access(&second)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.code(), "session_ended");
    assert_eq!(
        refresh(&app, &second["refresh_token"]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Garbage is refused the same way.
    assert_eq!(
        refresh(&app, &json!("not-a-token")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_only_that_session() {
    let app = spawn_app().await;
    let desk = login(&app, &app.agent.email).await;
    let phone = login(&app, &app.agent.email).await;
    let r = app
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            Some(&access(&desk)),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = app.get("/api/v1/me", &access(&desk)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &desk["refresh_token"]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/v1/me", &access(&phone)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_password_change_revokes_every_token_issued_before_it() {
    let app = spawn_app().await;
    let pair = login(&app, &app.agent.email).await;
    let r = app
        .patch(
            &format!("/api/v1/users/{}", app.agent.id),
            &app.admin.token,
            &json!({"password": "a-brand-new-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.get("/api/v1/me", &access(&pair)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(
        refresh(&app, &pair["refresh_token"]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A token minted outside any session before the change is refused too.
    assert_eq!(
        app.get("/api/v1/me", &app.agent.token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app.login(&app.agent.email, "a-brand-new-password").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn sockets_close_when_their_user_is_deactivated_demoted_or_logged_out() {
    let app = spawn_app().await;
    // Deactivated.
    let agent = login(&app, &app.agent.email).await;
    let mut ws = connect(&app, &access(&agent), None).await;
    let r = app
        .patch(
            &format!("/api/v1/users/{}", app.agent.id),
            &app.admin.token,
            &json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (code, reason) = closed_with(&mut ws, 5).await;
    assert_eq!(code, 4401, "{reason}");
    // Demoted: what a supervisor sees is no longer theirs.
    let sup = login(&app, &app.supervisor.email).await;
    let mut ws = connect(&app, &access(&sup), None).await;
    let r = app
        .patch(
            &format!("/api/v1/users/{}", app.supervisor.id),
            &app.admin.token,
            &json!({"role": "agent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (code, reason) = closed_with(&mut ws, 5).await;
    assert_eq!(code, 4403, "{reason}");
    // Logged out.
    let admin = login(&app, &app.admin.email).await;
    let mut ws = connect(&app, &access(&admin), None).await;
    let r = app
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            Some(&access(&admin)),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (code, reason) = closed_with(&mut ws, 5).await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("session_ended"), "{reason}");
}

#[tokio::test]
async fn a_socket_closes_when_its_token_expires() {
    let app = spawn_app_with(&[("PARLEY_ACCESS_TOKEN_TTL_SECS", "10")]).await;
    let pair = login(&app, &app.agent.email).await;
    let mut ws = connect(&app, &access(&pair), None).await;
    let (code, reason) = closed_with(&mut ws, 20).await;
    assert_eq!(code, 4401);
    assert!(reason.contains("token_expired"), "{reason}");
}
