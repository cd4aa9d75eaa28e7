//! Small things a newcomer and a front-end developer trip over: an empty Done, a resume
//! from beyond the stream, one state change told once, one spelling of a channel.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::spawn_app;
use tokio_tungstenite::tungstenite::Message;

use crate::events::connect;
use crate::routing::{act, ready, wait_offer};

#[tokio::test]
async fn done_takes_no_body_at_all() {
    let app = spawn_app().await;
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "hi").await;
    let id = wait_offer(&app, &app.agent).await;
    assert_eq!(id, got.interaction.id.to_string());
    assert_eq!(
        act(&app, &app.agent, &id, "accept").await.status,
        StatusCode::OK
    );
    assert_eq!(
        act(&app, &app.agent, &id, "end").await.status,
        StatusCode::OK
    );
    // As `curl -X POST …/done` sends it: no body, no content type.
    let res = app
        .client
        .post(app.url(&format!("/api/v1/interactions/{id}/done")))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("done");
    assert_eq!(res.status(), StatusCode::OK);
    let v: serde_json::Value = res.json().await.expect("json");
    assert_eq!(v["state"], "done");
}

#[tokio::test]
async fn resuming_from_beyond_the_newest_event_is_told_to_resync() {
    let app = spawn_app().await;
    app.inbound("+14155552671", "something to sequence").await;
    let mut ws = connect(&app, &app.agent.token, Some(1_000_000)).await;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => {
            assert_eq!(u16::from(f.code), 4002, "{}", f.reason);
            assert!(f.reason.contains("beyond"), "{}", f.reason);
        }
        other => panic!("no resync close: {other:?}"),
    }
}

#[tokio::test]
async fn an_admin_hears_of_their_own_state_change_once() {
    let app = spawn_app().await;
    let mut ws = connect(&app, &app.admin.token, None).await;
    let r = app
        .call(
            Method::PUT,
            "/api/v1/me/state",
            Some(&app.admin.token),
            Some(&json!({"state": "ready"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut states = 0;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await {
        if let Message::Text(t) = m
            && t.contains("\"agent.state\"")
        {
            states += 1;
        }
    }
    assert_eq!(states, 1);
}

#[tokio::test]
async fn a_queue_takes_channels_by_the_names_used_everywhere() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Social", "channels": ["twitter", "messenger"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Bad", "channels": ["x"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("twitter"), "{}", r.text);
}

#[tokio::test]
async fn an_interaction_event_carries_the_rest_object() {
    let app = spawn_app().await;
    let mut ws = connect(&app, &app.supervisor.token, None).await;
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "hi").await;
    let id = wait_offer(&app, &app.agent).await;
    assert_eq!(
        act(&app, &app.agent, &id, "accept").await.status,
        StatusCode::OK
    );
    let mut event = None;
    for _ in 0..30 {
        let e = crate::events::next_event(&mut ws).await;
        if e["kind"] == "interaction.accepted" {
            event = Some(e["payload"]["interaction"].clone());
            break;
        }
    }
    let event = event.expect("interaction.accepted");
    let rest = app
        .get(
            &format!("/api/v1/contacts/{}/interactions", got.contact_id),
            &app.agent.token,
        )
        .await;
    let rest = rest.json[0].clone();
    for (k, v) in rest.as_object().expect("object") {
        assert_eq!(&event[k], v, "field {k}: event {event} vs REST {rest}");
    }
}

#[tokio::test]
async fn a_new_interaction_after_done_is_announced() {
    let app = spawn_app().await;
    let mut ws = connect(&app, &app.supervisor.token, None).await;
    let first = app.inbound("+14155552671", "one").await;
    let second_after_done = {
        ready(&app, &app.agent).await;
        let id = wait_offer(&app, &app.agent).await;
        assert_eq!(id, first.interaction.id.to_string());
        for step in ["accept", "end", "done"] {
            assert_eq!(
                act(&app, &app.agent, &id, step).await.status,
                StatusCode::OK
            );
        }
        app.inbound("+14155552671", "two").await
    };
    assert_ne!(second_after_done.interaction.id, first.interaction.id);
    let mut created = Vec::new();
    for _ in 0..40 {
        let e = crate::events::next_event(&mut ws).await;
        if e["kind"] == "interaction.created" {
            created.push(
                e["payload"]["interaction"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            if created.len() == 2 {
                break;
            }
        }
    }
    assert_eq!(
        created,
        vec![
            first.interaction.id.to_string(),
            second_after_done.interaction.id.to_string()
        ]
    );
}
