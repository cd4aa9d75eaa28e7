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

#[tokio::test]
async fn connect_then_create_gives_the_requesting_agent_the_chat_the_yes_opened() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let c = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "Ana", "identities": [{"channel": "whatsapp", "address": "+14155552671"}]}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.text);
    let contact = c.json["id"].as_str().expect("id").to_owned();
    let ident = c.json["identities"][0]["id"]
        .as_str()
        .expect("identity")
        .to_owned();
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/identities/{ident}/connect"),
            &app.agent.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // Another agent (here the supervisor) is Ready: the "Yes" opens an interaction that
    // is offered to them.
    ready(&app, &app.supervisor).await;
    let mut sup_ws = crate::events::connect(&app, &app.supervisor.token, None).await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "button", "button": {"payload": "PARLEY_CONNECT_YES", "text": "Yes"}}),
        )
        .await
        .expect("answer");
    let offered = wait_offer(&app, &app.supervisor).await;
    // The agent who asked creates the interaction, as the guide says: it is theirs now,
    // the other offer is withdrawn, and their reply goes out.
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/interactions"),
            &app.agent.token,
            &json!({"channel": "whatsapp"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["id"], offered.as_str());
    assert_eq!(r.json["state"], "active");
    assert_eq!(r.json["agent_id"], app.agent.id.to_string());
    let mut revoked = false;
    for _ in 0..20 {
        let e = crate::events::next_event(&mut sup_ws).await;
        if e["kind"] == "interaction.offer_revoked" {
            assert_eq!(e["payload"]["reason"], "taken");
            revoked = true;
            break;
        }
    }
    assert!(revoked);
    let r = app
        .post(
            &format!("/api/v1/interactions/{offered}/messages"),
            &app.agent.token,
            &json!({"text": "Thanks for connecting!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // Creating again answers the same, and the supervisor cannot take it from them.
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/interactions"),
            &app.supervisor.token,
            &json!({"channel": "whatsapp"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn creating_an_interaction_is_announced() {
    let app = spawn_app().await;
    let _wa = app.whatsapp().await;
    let c = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "Bo", "identities": [{"channel": "whatsapp", "address": "+14155552672"}]}),
        )
        .await;
    let contact = c.json["id"].as_str().expect("id").to_owned();
    let mut sup_ws = crate::events::connect(&app, &app.supervisor.token, None).await;
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/interactions"),
            &app.agent.token,
            &json!({"channel": "whatsapp"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // As an inbound one is: created (queue views), then accepted by its agent.
    let e = crate::events::next_event(&mut sup_ws).await;
    assert_eq!(e["kind"], "interaction.created");
    assert_eq!(e["payload"]["interaction"]["id"], r.json["id"]);
    let e = crate::events::next_event(&mut sup_ws).await;
    assert_eq!(e["kind"], "interaction.accepted");
    assert_eq!(e["payload"]["interaction"]["id"], r.json["id"]);
}
