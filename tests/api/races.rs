//! Requests that race each other, as an attacker's (or a busy desktop's) concurrent calls
//! do: none of them may end in a 500 or act twice.

use reqwest::StatusCode;
use serde_json::json;
use test_support::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_one_contact_are_all_queued_without_a_500() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hello?"}}),
        )
        .await
        .expect("inbound");
    let contact: uuid::Uuid = sqlx::query_scalar("SELECT id FROM contacts")
        .fetch_one(&app.db)
        .await
        .expect("contact");
    // The agent takes the chat, then writes from the interaction view and the
    // Communication tab at once (two desktops, or a double-click on each).
    crate::routing::ready(&app, &app.agent).await;
    let interaction = crate::routing::wait_offer(&app, &app.agent).await;
    let r = crate::routing::act(&app, &app.agent, &interaction, "accept").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let by_contact = format!("/api/v1/contacts/{contact}/messages");
    let by_interaction = format!("/api/v1/interactions/{interaction}/messages");
    for round in 0..3 {
        let sends = (0..30).map(|i| {
            let body = json!({"channel": "whatsapp", "text": format!("reply {round}-{i}")});
            let path = if i % 2 == 0 {
                &by_contact
            } else {
                &by_interaction
            };
            let app = &app;
            async move { app.post(path, &app.agent.token, &body).await }
        });
        let answers = futures_util::future::join_all(sends).await;
        for r in &answers {
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        }
    }
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'outbound'")
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(queued, 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_deactivating_each_other_at_once_leave_the_tenant_one() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "second.admin@a.test", "display_name": "Second admin",
                    "role": "admin", "password": "a-long-enough-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let second_id = r.json["id"].as_str().expect("id").to_owned();
    let second = app
        .login("second.admin@a.test", "a-long-enough-password")
        .await
        .json["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for _ in 0..5 {
        let off = json!({"active": false});
        let (to_second, to_first) = (
            format!("/api/v1/users/{second_id}"),
            format!("/api/v1/users/{}", app.admin.id),
        );
        let (a, b) = tokio::join!(
            app.patch(&to_second, &app.admin.token, &off),
            app.patch(&to_first, &second, &off),
        );
        let ok = [&a, &b]
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE tenant_id = $1 AND role = 'admin' AND active",
        )
        .bind(app.tenant.0)
        .fetch_one(&app.db)
        .await
        .expect("count");
        assert_eq!(active, 1, "{} / {}", a.text, b.text);
        assert!(ok <= 1);
        // The refused one names the field.
        for r in [&a, &b] {
            if r.status != StatusCode::OK {
                assert!(
                    r.status == StatusCode::UNPROCESSABLE_ENTITY
                        || r.status == StatusCode::UNAUTHORIZED,
                    "{}",
                    r.text
                );
            }
        }
        // Both active again for the next round.
        sqlx::query("UPDATE users SET active = true WHERE tenant_id = $1")
            .bind(app.tenant.0)
            .execute(&app.db)
            .await
            .expect("reactivate");
    }
    // Alone, the last admin cannot be deactivated or demoted by anyone.
    sqlx::query("UPDATE users SET active = false WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&second_id).expect("uuid"))
        .execute(&app.db)
        .await
        .expect("deactivate");
    let r = app
        .patch(
            &format!("/api/v1/users/{}", app.admin.id),
            &app.admin.token,
            &json!({"role": "agent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
}
