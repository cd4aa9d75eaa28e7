//! Who may do what beyond roles: one agent's live chat is theirs.

use reqwest::StatusCode;
use serde_json::json;
use test_support::spawn_app;

use crate::routing::{act, ready, wait_offer};

#[tokio::test]
async fn another_agents_live_chat_cannot_be_written_into_from_the_communication_tab() {
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
    ready(&app, &app.agent).await;
    let interaction = wait_offer(&app, &app.agent).await;
    assert_eq!(
        act(&app, &app.agent, &interaction, "accept").await.status,
        StatusCode::OK
    );
    // A second agent of the tenant.
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": "second@agents.test", "display_name": "Second", "role": "agent",
                    "password": "a-long-enough-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let login = app
        .login("second@agents.test", "a-long-enough-password")
        .await;
    let second = login.json["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let path = format!("/api/v1/contacts/{contact}/messages");
    let text = json!({"channel": "whatsapp", "text": "I'll take it from here"});
    let r = app.post(&path, &second, &text).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("another agent"), "{}", r.text);
    // The per-interaction endpoint says the same.
    let r = app
        .post(
            &format!("/api/v1/interactions/{interaction}/messages"),
            &second,
            &text,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // The owner and a supervisor may write.
    for token in [&app.agent.token, &app.supervisor.token] {
        let r = app.post(&path, token, &text).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    // Once ended, anyone may continue the conversation from the Communication tab.
    assert_eq!(
        act(&app, &app.agent, &interaction, "end").await.status,
        StatusCode::OK
    );
    let r = app.post(&path, &second, &text).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}
