//! The operator's provisioning API.

use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::{TEST_PLATFORM_TOKEN, spawn_app, spawn_app_with};

#[tokio::test]
async fn operator_provisions_a_tenant_whose_admin_can_log_in() {
    let app = spawn_app().await;
    let body = json!({"name": "Acme Support", "admin_email": "boss@acme.test", "admin_password": "acme-password"});
    let r = app
        .post("/platform/v1/tenants", TEST_PLATFORM_TOKEN, &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["tenant"]["name"], "Acme Support");
    assert_eq!(r.json["admin"]["role"], "admin");
    assert_eq!(r.json["admin"]["tenant_id"], r.json["tenant"]["id"]);
    let login = app.login("boss@acme.test", "acme-password").await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.json["access_token"].as_str().expect("token");
    let users = app.get("/api/v1/users", token).await;
    assert_eq!(users.json["items"].as_array().map(Vec::len), Some(1));

    // The same admin email again: 409, and no half-made tenant is left behind.
    let again = app
        .post("/platform/v1/tenants", TEST_PLATFORM_TOKEN, &body)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json["errors"][0]["field"], "admin_email");
    let tenants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE name = 'Acme Support'")
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(tenants, 1);
}

#[tokio::test]
async fn wrong_or_missing_platform_token_is_401_and_user_tokens_do_not_work() {
    let app = spawn_app().await;
    let body = json!({"name": "X", "admin_email": "x@x.test", "admin_password": "x-password"});
    let r = app
        .call(Method::POST, "/platform/v1/tenants", None, Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post("/platform/v1/tenants", "wrong-token-wrong-token", &body)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post("/platform/v1/tenants", &app.admin.token, &body)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Without the token, a malformed body says nothing about the body's schema.
    for bad in [json!({}), json!([1, 2]), json!({"nmae": "X"})] {
        let r = app
            .call(Method::POST, "/platform/v1/tenants", None, Some(&bad))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        for field in ["name", "admin_email", "admin_password", "nmae"] {
            assert!(!r.text.contains(field), "{}", r.text);
        }
    }
}

#[tokio::test]
async fn platform_api_is_off_without_a_platform_token() {
    let app = spawn_app_with(&[("PARLEY_PLATFORM_TOKEN", "")]).await;
    let body = json!({"name": "X", "admin_email": "x@x.test", "admin_password": "x-password"});
    let r = app
        .post("/platform/v1/tenants", TEST_PLATFORM_TOKEN, &body)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "platform_api_disabled");
}

#[tokio::test]
async fn provisioning_input_is_validated_field_by_field() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/platform/v1/tenants",
            TEST_PLATFORM_TOKEN,
            &json!({"name": "  ", "admin_email": "not-an-email", "admin_password": ""}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["name", "admin_email", "admin_password"]);
}
