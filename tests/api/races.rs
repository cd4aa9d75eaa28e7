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
    let path = format!("/api/v1/contacts/{contact}/messages");
    for round in 0..3 {
        let sends = (0..30).map(|i| {
            let body = json!({"channel": "whatsapp", "text": format!("reply {round}-{i}")});
            let token = if i % 2 == 0 {
                &app.agent.token
            } else {
                &app.supervisor.token
            };
            let app = &app;
            let path = &path;
            async move { app.post(path, token, &body).await }
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
