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
