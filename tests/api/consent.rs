//! Consent: STOP opts an address out, a declined Connect is not asked again, templates
//! need an opt-in, and the contact writing again reopens the conversation.

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TestApp, Wa, spawn_app};

async fn writes(wa: &Wa, from: &str, text: &str) {
    wa.sim
        .contact_sends(from, "Ana", json!({"type": "text", "text": {"body": text}}))
        .await
        .expect("inbound");
}

async fn identity(app: &TestApp, contact: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/contacts/{contact}"), &app.agent.token)
        .await;
    r.json["identities"][0].clone()
}

async fn reply(app: &TestApp, contact: &str, text: &str) -> test_support::Reply {
    app.post(
        &format!("/api/v1/contacts/{contact}/messages"),
        &app.agent.token,
        &json!({"channel": "whatsapp", "text": text}),
    )
    .await
}

async fn template(app: &TestApp, wa: &Wa) -> String {
    let components = json!([{"type": "BODY", "text": "Your order has shipped."}]);
    wa.sim.set_template(
        json!({"name": "order_shipped", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "id": "555", "components": components}),
    );
    let r = app
        .post(
            "/api/v1/templates",
            &app.supervisor.token,
            &json!({"name": "order_shipped", "language": "en", "category": "utility",
                    "status": "approved", "components": components}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"].as_str().expect("id").to_owned()
}

async fn notify(app: &TestApp, contact: &str, template: &str) -> test_support::Reply {
    app.post(
        &format!("/api/v1/contacts/{contact}/notifications"),
        &app.agent.token,
        &json!({"template_id": template, "fields": {}}),
    )
    .await
}

#[tokio::test]
async fn stop_opts_out_until_the_contact_writes_again() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let t = template(&app, &wa).await;
    writes(&wa, "+14155552671", "hi").await;
    let contact: String = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM contacts")
        .fetch_one(&app.db)
        .await
        .expect("contact")
        .to_string();
    assert_eq!(
        reply(&app, &contact, "hello!").await.status,
        StatusCode::ACCEPTED
    );
    // STOP, in any case, with punctuation.
    writes(&wa, "+14155552671", "Stop.").await;
    let i = identity(&app, &contact).await;
    assert_eq!(i["status"], "opted_out", "{i}");
    assert!(i["consent"]["opted_out_at"].is_string());
    let r = reply(&app, &contact, "are you sure?").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "contact_opted_out");
    let r = notify(&app, &contact, &t).await;
    assert_eq!(r.code(), "contact_opted_out", "{}", r.text);
    let ident = i["id"].as_str().expect("id");
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/identities/{ident}/connect"),
            &app.agent.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.code(), "contact_opted_out", "{}", r.text);
    // "don't stop" is not an opt-out; and writing again reopens the conversation.
    writes(&wa, "+14155552671", "please don't stop helping me").await;
    let i = identity(&app, &contact).await;
    assert_eq!(i["status"], "unverified", "{i}");
    assert!(i["consent"]["reopened_at"].is_string());
    assert_eq!(
        reply(&app, &contact, "welcome back").await.status,
        StatusCode::ACCEPTED
    );
    // Within the window they opened, a template may go too.
    assert_eq!(
        notify(&app, &contact, &t).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn templates_need_an_opt_in_and_a_declined_connect_is_not_asked_again() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let t = template(&app, &wa).await;
    for (n, answer, label) in [
        ("+14155552673", "PARLEY_CONNECT_YES", "Yes"),
        ("+14155552674", "PARLEY_CONNECT_NO", "No"),
    ] {
        let c = app
            .post(
                "/api/v1/contacts",
                &app.agent.token,
                &json!({"name": n, "identities": [{"channel": "whatsapp", "address": n}]}),
            )
            .await;
        let contact = c.json["id"].as_str().expect("id").to_owned();
        let ident = c.json["identities"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        // Never wrote, never connected: no template.
        let r = notify(&app, &contact, &t).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.code(), "no_opt_in");
        let connect = format!("/api/v1/contacts/{contact}/identities/{ident}/connect");
        let r = app.post(&connect, &app.agent.token, &json!({})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        wa.sim
            .contact_sends(
                n,
                "C",
                json!({"type": "button", "button": {"payload": answer, "text": label}}),
            )
            .await
            .expect("answer");
        if label == "Yes" {
            assert_eq!(identity(&app, &contact).await["status"], "connected");
            assert_eq!(
                notify(&app, &contact, &t).await.status,
                StatusCode::ACCEPTED
            );
        } else {
            assert_eq!(identity(&app, &contact).await["status"], "declined");
            let r = app.post(&connect, &app.agent.token, &json!({})).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
            assert_eq!(r.code(), "contact_declined");
            let r = notify(&app, &contact, &t).await;
            assert_eq!(r.code(), "contact_declined", "{}", r.text);
        }
    }
}
