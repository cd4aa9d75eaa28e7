//! Admin management of users.

use reqwest::StatusCode;
use serde_json::json;
use test_support::spawn_app;

#[tokio::test]
async fn admin_creates_a_user_who_can_then_log_in() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({
                "email": "  New.Agent@Example.com ",
                "display_name": "Nora Agent",
                "password": "s3cret-enough",
                "role": "agent",
                "skills": ["Spanish", "billing", "billing"],
                "capacity": 5
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Stored in the one spelling it is looked up and throttled by.
    assert_eq!(r.json["email"], "new.agent@example.com");
    assert_eq!(r.json["skills"], json!(["spanish", "billing"]));
    assert_eq!(r.json["capacity"], 5);
    assert_eq!(r.json["active"], true);
    assert!(r.json.get("password").is_none() && r.json.get("password_hash").is_none());
    let login = app.login("new.agent@example.com", "s3cret-enough").await;
    assert_eq!(login.status, StatusCode::OK);
}

#[tokio::test]
async fn duplicate_email_is_409_naming_the_field() {
    let app = spawn_app().await;
    let body = json!({
        "email": app.agent.email.to_uppercase(),
        "display_name": "Dup",
        "password": "s3cret-enough",
        "role": "agent"
    });
    let r = app.post("/api/v1/users", &app.admin.token, &body).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "conflict");
    assert_eq!(r.json["errors"][0]["field"], "email");
}

#[tokio::test]
async fn agents_and_supervisors_cannot_manage_users() {
    let app = spawn_app().await;
    let body = json!({"email": "x@y.test", "display_name": "X", "password": "s3cret-enough", "role": "admin"});
    for token in [&app.agent.token, &app.supervisor.token] {
        let r = app.post("/api/v1/users", token, &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.content_type(), "application/problem+json");
        let r = app.get("/api/v1/users", token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // But anyone may read their own record.
    let r = app
        .get(&format!("/api/v1/users/{}", app.agent.id), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .get(&format!("/api/v1/users/{}", app.admin.id), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn listing_pages_through_every_user_once() {
    let app = spawn_app().await;
    for i in 0..5 {
        let r = app
            .post(
                "/api/v1/users",
                &app.admin.token,
                &json!({"email": format!("u{i}@page.test"), "display_name": format!("U{i}"), "password": "s3cret-enough", "role": "agent"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/users?limit=3&cursor={c}"),
            None => "/api/v1/users?limit=3".to_owned(),
        };
        let r = app.get(&path, &app.admin.token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let items = r.json["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|u| u["id"].as_str().expect("id").to_owned()),
        );
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // 3 seeded + 5 created, no repeats.
    assert_eq!(seen.len(), 8);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 8);

    let r = app.get("/api/v1/users?limit=0", &app.admin.token).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "limit");
    let r = app.get("/api/v1/users?cursor=nope", &app.admin.token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("cursor"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn admin_changes_role_skills_and_password() {
    let app = spawn_app().await;
    let path = format!("/api/v1/users/{}", app.agent.id);
    let r = app
        .patch(
            &path,
            &app.admin.token,
            &json!({"role": "supervisor", "skills": ["vip"], "password": "a-new-password", "capacity": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["role"], "supervisor");
    assert_eq!(r.json["skills"], json!(["vip"]));
    assert_eq!(r.json["capacity"], 0);
    assert_eq!(
        app.login(&app.agent.email, "a-new-password").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_admin_cannot_lock_themself_out() {
    let app = spawn_app().await;
    let path = format!("/api/v1/users/{}", app.admin.id);
    let r = app
        .patch(
            &path,
            &app.admin.token,
            &json!({"active": false, "role": "agent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["active", "role"]);
}

#[tokio::test]
async fn unknown_user_is_404() {
    let app = spawn_app().await;
    let r = app
        .get(
            "/api/v1/users/01900000-0000-7000-8000-000000000000",
            &app.admin.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    let r = app.get("/api/v1/users/not-a-uuid", &app.admin.token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_path_parameter");
}

#[tokio::test]
async fn names_with_direction_overrides_or_invisible_characters_are_refused_by_field() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "spoof@a.test", "display_name": "Ana\u{202E}nimda",
                    "role": "agent", "password": "a-long-enough-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("display_name"), "{}", r.text);
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "Ana\u{200B}"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Persian with its zero-width non-joiner is a name like any other.
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "می\u{200C}خواهم"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn an_email_taken_in_another_tenant_is_not_disclosed_and_each_account_logs_in() {
    let app = spawn_app().await;
    let (b_tenant, [b_admin, ..]) = app.other_tenant().await;
    let new = |pw: &str| {
        json!({"email": "shared@people.test", "display_name": "Sam", "role": "agent",
               "password": pw})
    };
    // Tenant A has it; B's admin creating the same address learns nothing: it is created.
    let r = app
        .post("/api/v1/users", &app.admin.token, &new("password-in-a"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .post("/api/v1/users", &b_admin.token, &new("password-in-b"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Within one tenant the address is still unique.
    let r = app
        .post("/api/v1/users", &b_admin.token, &new("another-password"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // The password decides which account logs in.
    for (pw, tenant) in [("password-in-a", app.tenant), ("password-in-b", b_tenant)] {
        let r = app.login("shared@people.test", pw).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let me = app
            .get(
                "/api/v1/me",
                r.json["access_token"].as_str().expect("token"),
            )
            .await;
        assert_eq!(me.json["tenant_id"], tenant.to_string(), "{}", me.text);
    }
    // The same password in both: the person chooses.
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "twice@people.test", "display_name": "T", "role": "agent",
                    "password": "same-everywhere"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .post(
            "/api/v1/users",
            &b_admin.token,
            &json!({"email": "twice@people.test", "display_name": "T", "role": "agent",
                    "password": "same-everywhere"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.login("twice@people.test", "same-everywhere").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "choose_tenant");
    let r = app
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                &json!({"email": "twice@people.test", "password": "same-everywhere",
                         "tenant_id": b_tenant}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
