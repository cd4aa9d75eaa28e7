//! Bad input gets a 4xx problem+json that names what is wrong; never a 500.

use reqwest::StatusCode;
use serde_json::json;
use test_support::{read_reply, spawn_app, spawn_app_with};

async fn raw_post(
    app: &test_support::TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> test_support::Reply {
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.admin.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("send");
    read_reply(res).await
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let r = raw_post(
        &app,
        "/api/v1/users",
        "application/json",
        b"{\"email\": ".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.content_type(), "application/problem+json");
    assert_eq!(r.code(), "invalid_json");
}

#[tokio::test]
async fn a_json_array_or_scalar_where_an_object_is_expected_is_refused() {
    let app = spawn_app().await;
    for body in [
        &br#"["someone@a.test", "Someone", "a-long-enough-password", "agent"]"#[..],
        b"  [1]",
        b"\"text\"",
        b"42",
        b"null",
    ] {
        let r = raw_post(&app, "/api/v1/users", "application/json", body.to_vec()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert!(r.text.contains("JSON object"), "{}", r.text);
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = $1")
        .bind(app.tenant.0)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(users, 3, "nothing was created from an array");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let r = raw_post(&app, "/api/v1/auth/login", "text/plain", b"{}".to_vec()).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.code(), "unsupported_media_type");
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(
        read_reply(res).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app_with(&[("PARLEY_BODY_LIMIT_BYTES", "2048")]).await;
    let big = json!({"email": "a@b.test", "password": "x".repeat(4096)});
    let r = raw_post(
        &app,
        "/api/v1/auth/login",
        "application/json",
        serde_json::to_vec(&big).expect("json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "payload_too_large");
}

#[tokio::test]
async fn unknown_fields_are_rejected_by_name() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "a@b.test", "display_name": "A", "password": "s3cret-enough", "role": "agent", "skils": ["x"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "skils");
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_named() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "a@b.test"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "display_name");
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "a@b.test", "display_name": "A", "password": "s3cret-enough", "role": "agent", "capacity": "lots"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "capacity");
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "a@b.test", "display_name": "A", "password": "s3cret-enough", "role": "root"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "role");
}

#[tokio::test]
async fn invalid_emails_and_empty_passwords_are_named() {
    let app = spawn_app().await;
    let r = app.login("not an email", "").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.code(), "validation_failed");
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["email", "password"]);
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "a@b", "display_name": "", "password": "short", "role": "agent", "capacity": 500}),
        )
        .await;
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        vec!["email", "display_name", "password", "capacity"]
    );
}

#[tokio::test]
async fn hostile_strings_never_cause_a_server_error() {
    let app = spawn_app().await;
    let nasty = [
        "\u{0000}",
        "'; DROP TABLE users; --",
        "🦀🦀🦀@😀.test",
        "\u{202e}evil@x.test",
        &"a".repeat(10_000),
    ];
    for s in nasty {
        for body in [
            json!({"email": s, "password": s}),
            json!({"email": "a@b.test", "display_name": s, "password": "s3cret-enough", "role": "agent", "skills": [s]}),
        ] {
            let path = if body.get("role").is_some() {
                "/api/v1/users"
            } else {
                "/api/v1/auth/login"
            };
            let r = app.post(path, &app.admin.token, &body).await;
            assert!(
                r.status.is_client_error() || r.status.is_success(),
                "{s:?} -> {} {}",
                r.status,
                r.text
            );
            if r.status.is_client_error() {
                assert_eq!(r.content_type(), "application/problem+json");
            }
        }
    }
}
