//! What a provider delivers reaches a transcript: senders our phone metadata does not
//! know, a bad message beside good ones, long texts, huge webhooks, and bodies meant for
//! another tenant's number.

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TestApp, Wa, read_reply, spawn_app, spawn_app_with};

async fn post(app: &TestApp, path: &str, secret: &str, body: &[u8]) -> test_support::Reply {
    let res = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            channel_connector::signature::sign(secret.as_bytes(), body),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("send");
    read_reply(res).await
}

async fn post_wa(app: &TestApp, wa: &Wa, body: &Value) -> test_support::Reply {
    let bytes = serde_json::to_vec(body).expect("json");
    post(app, &wa.webhook_path, &wa.app_secret, &bytes).await
}

/// A Cloud API webhook for the simulator's number with these messages from `from`.
fn webhook(phone_number_id: &str, from: &str, messages: Vec<Value>) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA-SIM", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": "Someone"}, "wa_id": from}],
            "messages": messages
        }}]}]
    })
}

const SIM_NUMBER: &str = "100000000000001";

fn text(from: &str, id: &str, body: &str) -> Value {
    json!({"from": from, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(),
           "type": "text", "text": {"body": body}})
}

async fn stored_texts(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT i.address, coalesce(m.body, '') FROM messages m
         JOIN channel_identities i ON i.contact_id = m.contact_id
         ORDER BY m.created_at, m.id",
    )
    .fetch_all(&app.db)
    .await
    .expect("messages")
}

async fn dead_letters(app: &TestApp, wa: &Wa) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/v1/channel-accounts/{}/dead-letters", wa.account_id),
            &app.admin.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn senders_the_phone_metadata_calls_invalid_still_reach_the_transcript() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    // Numbers WhatsApp delivers that libphonenumber refuses: an older Brazilian mobile
    // without the ninth digit, Mexico's 521 form, a UK drama range, an Israeli number.
    let senders = [
        "552185123456",
        "5215512345678",
        "447700900123",
        "972501234567",
    ];
    for (i, from) in senders.iter().enumerate() {
        let r = post_wa(
            &app,
            &wa,
            &webhook(
                SIM_NUMBER,
                from,
                vec![text(from, &format!("wamid.V{i}"), "hola")],
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let stored = stored_texts(&app).await;
    let want: Vec<(String, String)> = senders
        .iter()
        .map(|s| (format!("+{s}"), "hola".to_owned()))
        .collect();
    assert_eq!(stored, want);
    assert!(dead_letters(&app, &wa).await.is_empty());
    // Each became an interaction an agent can be offered.
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM interactions")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(queued, 4);
}

#[tokio::test]
async fn an_agent_typed_number_the_metadata_does_not_know_is_kept_with_a_warning() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "Bia", "identities": [
                {"channel": "whatsapp", "address": "+55 21 8512-3456"},
                {"channel": "sms", "address": "+44 20 7946 0958"}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let ids = r.json["identities"].as_array().cloned().unwrap_or_default();
    let by = |ch: &str| {
        ids.iter()
            .find(|i| i["channel"] == ch)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by("whatsapp")["address"], "+552185123456");
    assert!(
        by("whatsapp")["address_warning"].as_str().is_some(),
        "{}",
        r.text
    );
    assert_eq!(by("sms")["address_warning"], Value::Null);
    // Not a number at all is still refused, naming the field.
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "X", "identities": [{"channel": "sms", "address": "call me"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("identities[0].address"), "{}", r.text);
}

#[tokio::test]
async fn one_bad_message_is_a_dead_letter_of_its_own_and_its_neighbours_are_stored() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let from = "14155552671";
    let body = webhook(
        SIM_NUMBER,
        from,
        vec![
            text(from, "wamid.G1", "first"),
            json!({"id": "wamid.BAD", "type": "text", "text": {"body": "who am I"}}),
            text(from, "wamid.G2", "second"),
        ],
    );
    let r = post_wa(&app, &wa, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stored = stored_texts(&app).await;
    assert_eq!(
        stored,
        vec![
            (format!("+{from}"), "first".to_owned()),
            (format!("+{from}"), "second".to_owned())
        ]
    );
    let letters = dead_letters(&app, &wa).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("wamid.BAD"), "{reason}");
    let kept: Value =
        serde_json::from_str(letters[0]["body"].as_str().unwrap_or_default()).expect("json");
    let kept_messages = &kept["entry"][0]["changes"][0]["value"]["messages"];
    assert_eq!(kept_messages.as_array().map(Vec::len), Some(1));
    assert_eq!(kept_messages[0]["id"], "wamid.BAD");

    // The provider sends the same webhook again: nothing is stored or kept twice.
    let r = post_wa(&app, &wa, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(stored_texts(&app).await.len(), 2);
    assert_eq!(dead_letters(&app, &wa).await.len(), 1);

    // Replaying it while it still cannot be read says why and changes nothing.
    let id = letters[0]["id"].as_i64().expect("id");
    let replay = format!(
        "/api/v1/channel-accounts/{}/dead-letters/{id}/replay",
        wa.account_id
    );
    let r = app.post(&replay, &app.admin.token, &json!({})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "still_unreadable");
    // Agents may not replay.
    let r = app.post(&replay, &app.agent.token, &json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // The cause fixed (here: the kept body mended, as an upgrade that reads it would):
    // the replay stores the message once and marks the letter.
    let mended = webhook(SIM_NUMBER, from, vec![text(from, "wamid.BAD", "who am I")]);
    sqlx::query("UPDATE webhook_dead_letters SET body = $1 WHERE id = $2")
        .bind(serde_json::to_vec(&mended).expect("json"))
        .bind(id)
        .execute(&app.db)
        .await
        .expect("mend");
    let r = app.post(&replay, &app.admin.token, &json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["replayed_at"].is_string(), "{}", r.text);
    let r = app.post(&replay, &app.admin.token, &json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        stored_texts(&app).await.last().map(|(_, b)| b.clone()),
        Some("who am I".to_owned())
    );
    assert_eq!(
        stored_texts(&app).await.len(),
        3,
        "replayed twice, stored once"
    );
}

#[tokio::test]
async fn a_long_text_is_kept_whole_and_the_raw_copy_does_not_repeat_it() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let from = "14155552671";
    let long = "palabra ".repeat(2_000); // 16,000 characters
    let r = post_wa(
        &app,
        &wa,
        &webhook(SIM_NUMBER, from, vec![text(from, "wamid.LONG", &long)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let contact: uuid::Uuid = sqlx::query_scalar("SELECT contact_id FROM messages")
        .fetch_one(&app.db)
        .await
        .expect("contact");
    let r = app
        .get(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let m = &r.json["items"][0];
    assert_eq!(m["text"].as_str(), Some(long.as_str()));
    assert_eq!(m["payload"]["raw"]["id"], "wamid.LONG");
    assert!(
        r.text.len() < long.len() + 4_000,
        "the text rides once in the page, not twice ({} bytes)",
        r.text.len()
    );
    // Longer than WhatsApp delivers: kept whole as a dead letter, not cut.
    let huge = "x".repeat(65_537);
    let r = post_wa(
        &app,
        &wa,
        &webhook(SIM_NUMBER, from, vec![text(from, "wamid.HUGE", &huge)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let letters = dead_letters(&app, &wa).await;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]["body"]
            .as_str()
            .unwrap_or_default()
            .contains(&huge)
    );
}

#[tokio::test]
async fn a_webhook_slower_than_the_request_timeout_is_answered_200_once_committed() {
    // A request timeout of one second; a webhook of 1,500 new senders takes longer to
    // store than that (each new contact is its own set of rows).
    let app = spawn_app_with(&[("PARLEY_REQUEST_TIMEOUT_SECS", "1")]).await;
    let wa = app.whatsapp().await;
    let messages: Vec<Value> = (0..1_500)
        .map(|i| {
            let from = format!("1415555{i:04}");
            text(&from, &format!("wamid.MANY{i}"), "hi")
        })
        .collect();
    let body = webhook(SIM_NUMBER, "14155550000", messages);
    let started = std::time::Instant::now();
    let r = post_wa(&app, &wa, &body).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "after {took:?}: {}", r.text);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(stored, 1_500, "answered 200 means every message is stored");
    // Other requests still have the timeout: they are answered within it or refused.
    let r = app.get("/api/v1/me", &app.agent.token).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_signed_webhook_naming_another_business_number_is_refused() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    // Another tenant's account on the same app (so the same signing secret), with its
    // own number.
    let (_, [other_admin, ..]) = app.other_tenant().await;
    let r = app
        .post(
            "/api/v1/channel-accounts",
            &other_admin.token,
            &json!({
                "provider": "whatsapp", "name": "Theirs", "phone_number_id": "200000000000002",
                "access_token": "t", "app_secret": wa.app_secret, "verify_token": "v",
                "api_base_url": format!("{}/v21.0", wa.sim_base),
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let theirs = format!("/webhooks/whatsapp/{}", r.json["id"].as_str().expect("id"));
    // A genuine body for our number, replayed to their account.
    let from = "14155552671";
    let body = serde_json::to_vec(&webhook(
        SIM_NUMBER,
        from,
        vec![text(from, "wamid.X", "mine")],
    ))
    .expect("json");
    let r = post(&app, &theirs, &wa.app_secret, &body).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "wrong_business_number");
    assert!(r.text.contains("phone_number_id"), "{}", r.text);
    assert!(stored_texts(&app).await.is_empty());
    // The same body to our own account is stored.
    let r = post(&app, &wa.webhook_path, &wa.app_secret, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(stored_texts(&app).await.len(), 1);
}

#[tokio::test]
async fn an_html_document_from_a_contact_is_served_as_an_opaque_download() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let html = b"<html><script>fetch('/api/v1/users')</script></html>".to_vec();
    let media_id = wa.sim.add_media(html.clone(), "text/html");
    let (_, status) = wa
        .sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "document", "document": {"id": media_id, "mime_type": "text/html",
                   "filename": "invoice.html"}}),
        )
        .await
        .expect("inbound");
    assert_eq!(status, 200);
    let mut attachment = None;
    for _ in 0..200 {
        attachment = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM attachments LIMIT 1")
            .fetch_optional(&app.db)
            .await
            .expect("attachments");
        if attachment.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let attachment = attachment.expect("the document was fetched");
    let res = app
        .client
        .get(app.url(&format!("/api/v1/attachments/{attachment}")))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("download");
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "application/octet-stream");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap_or_default()
            .starts_with("attachment;")
    );
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .starts_with("sandbox")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    // The bytes are the contact's, unchanged.
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), html.as_slice());
}
