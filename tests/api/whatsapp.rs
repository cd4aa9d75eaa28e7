//! The WhatsApp Cloud API channel: webhooks in (every message type, statuses, signatures,
//! dead letters), sends out through the outbox, the 24-hour window.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::{TestApp, Wa, read_reply, spawn_app};

async fn post_signed(
    app: &TestApp,
    wa: &Wa,
    body: &[u8],
    signature: Option<String>,
) -> test_support::Reply {
    let mut req = app
        .client
        .post(app.url(&wa.webhook_path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("x-hub-signature-256", s);
    }
    read_reply(req.send().await.expect("send")).await
}

fn sign(wa: &Wa, body: &[u8]) -> String {
    channel_connector::signature::sign(wa.app_secret.as_bytes(), body)
}

fn envelope(entries: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": entries.into_iter().map(|v| json!({
            "id": "WABA-SIM",
            "changes": [{"field": "messages", "value": v}]
        })).collect::<Vec<_>>()
    }))
    .expect("json")
}

fn value(from: &str, name: &str, messages: Vec<Value>) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"},
        "contacts": [{"profile": {"name": name}, "wa_id": from}],
        "messages": messages
    })
}

/// A provider's `timestamp` for a message written a minute ago, plus `k` seconds.
fn written(k: i64) -> String {
    (chrono::Utc::now().timestamp() - 60 + k).to_string()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.db)
        .await
        .expect("count")
}

async fn transcript(app: &TestApp, contact: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/v1/contacts/{contact}/messages?limit=200"),
            &app.agent.token,
        )
        .await;
    r.json["items"].as_array().cloned().unwrap_or_default()
}

async fn contact_of(app: &TestApp, phone: &str) -> String {
    let r = app
        .get(
            &format!("/api/v1/contacts?q={}", phone.trim_start_matches('+')),
            &app.agent.token,
        )
        .await;
    r.json["items"][0]["id"]
        .as_str()
        .expect("contact")
        .to_owned()
}

#[tokio::test]
async fn a_new_app_secret_signs_the_very_next_webhook_and_the_old_one_no_longer_does() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let body = |n: u32| {
        envelope(vec![value(
            "14155552671",
            "Ana",
            vec![
                json!({"from": "14155552671", "id": format!("wamid.R{n}"), "timestamp": "1", "type": "text", "text": {"body": "hi"}}),
            ],
        )])
    };
    let signed = |secret: &str, b: &[u8]| channel_connector::signature::sign(secret.as_bytes(), b);
    // The account is read (and kept) for this webhook.
    let b = body(1);
    let r = post_signed(&app, &wa, &b, Some(sign(&wa, &b))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Rotated through the API: the old secret is refused at once, the new one accepted.
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &app.admin.token,
            &json!({"app_secret": "rotated-secret-1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let b = body(2);
    let r = post_signed(&app, &wa, &b, Some(sign(&wa, &b))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = post_signed(&app, &wa, &b, Some(signed("rotated-secret-1", &b))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Rotated behind this process's back (as another replica would): the new secret is
    // still accepted at once, because a signature the kept secret refuses reads again.
    sqlx::query("UPDATE channel_accounts SET app_secret = 'rotated-secret-2' WHERE id = $1")
        .bind(wa.account_id)
        .execute(&app.db)
        .await
        .expect("rotate");
    let b = body(3);
    let r = post_signed(&app, &wa, &b, Some(signed("rotated-secret-2", &b))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = post_signed(&app, &wa, &b, Some(signed("rotated-secret-1", &b))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(count(&app, "SELECT count(*) FROM messages").await, 3);
}

#[tokio::test]
async fn verification_handshake_echoes_the_challenge_only_for_the_right_token() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let ok = app
        .client
        .get(app.url(&format!(
            "{}?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444",
            wa.webhook_path
        )))
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.expect("body"), "1158201444");
    let bad = app
        .client
        .get(app.url(&format!(
            "{}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
            wa.webhook_path
        )))
        .send()
        .await
        .expect("get");
    assert_eq!(bad.status(), StatusCode::FORBIDDEN);
    let r = app
        .call(
            Method::GET,
            "/webhooks/whatsapp/01900000-0000-7000-8000-000000000000?hub.mode=subscribe",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_webhooks_are_401_and_store_nothing() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let body = envelope(vec![value(
        "14155552671",
        "Ana",
        vec![
            json!({"from": "14155552671", "id": "wamid.S1", "timestamp": "1", "type": "text", "text": {"body": "hi"}}),
        ],
    )]);
    let r = post_signed(&app, &wa, &body, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "invalid_signature");
    let r = post_signed(
        &app,
        &wa,
        &body,
        Some(channel_connector::signature::sign(b"wrong-secret", &body)),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Signed over different bytes (re-serialised JSON) fails too.
    let reser = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).expect("json"))
        .expect("json");
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &reser))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(count(&app, "SELECT count(*) FROM messages").await, 0);
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(count(&app, "SELECT count(*) FROM messages").await, 1);
}

#[tokio::test]
async fn every_message_type_in_one_batch_is_stored_and_duplicates_once() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let from = "14155552671";
    let m = |id: &str, typ: &str, obj: Value| {
        let mut v = json!({"from": from, "id": id, "timestamp": written(0), "type": typ});
        v[typ] = obj;
        v
    };
    let first = vec![
        m("wamid.T1", "text", json!({"body": "Hello, I need help 👋"})),
        m(
            "wamid.T2",
            "image",
            json!({"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "abc", "caption": "my receipt"}),
        ),
        m(
            "wamid.T3",
            "audio",
            json!({"id": "MEDIA2", "mime_type": "audio/ogg; codecs=opus", "voice": true}),
        ),
        m(
            "wamid.T4",
            "video",
            json!({"id": "MEDIA3", "mime_type": "video/mp4"}),
        ),
        m(
            "wamid.T5",
            "document",
            json!({"id": "MEDIA4", "mime_type": "application/pdf", "filename": "invoice.pdf", "caption": "invoice"}),
        ),
        m(
            "wamid.T6",
            "sticker",
            json!({"id": "MEDIA5", "mime_type": "image/webp", "animated": false}),
        ),
        m(
            "wamid.T7",
            "location",
            json!({"latitude": 51.5072, "longitude": -0.1276, "name": "Office", "address": "1 Main St"}),
        ),
        m(
            "wamid.T8",
            "contacts",
            json!([{"name": {"formatted_name": "John Doe", "first_name": "John"}, "phones": [{"phone": "+1 555 0100", "type": "CELL"}]}]),
        ),
    ];
    let mut second = vec![
        json!({"from": from, "id": "wamid.T9", "timestamp": written(1), "type": "interactive",
               "context": {"from": "15550001111", "id": "wamid.OUT1"},
               "interactive": {"type": "button_reply", "button_reply": {"id": "yes-btn", "title": "Yes"}}}),
        json!({"from": from, "id": "wamid.T10", "timestamp": written(2), "type": "interactive",
               "interactive": {"type": "list_reply", "list_reply": {"id": "opt-2", "title": "Billing", "description": "Bills"}}}),
        json!({"from": from, "id": "wamid.T11", "timestamp": written(3), "type": "button",
               "context": {"from": "15550001111", "id": "wamid.OUT2"},
               "button": {"payload": "CONFIRM_YES", "text": "Yes, confirm"}}),
        json!({"from": from, "id": "wamid.T12", "timestamp": written(4), "type": "reaction",
               "reaction": {"message_id": "wamid.T1", "emoji": "❤️"}}),
        json!({"from": from, "id": "wamid.T13", "timestamp": written(5), "type": "reaction",
               "reaction": {"message_id": "wamid.T1"}}),
        json!({"from": from, "id": "wamid.T14", "timestamp": written(6), "type": "text",
               "context": {"from": from, "id": "wamid.T1"}, "text": {"body": "replying to myself"}}),
        json!({"from": from, "id": "wamid.T15", "timestamp": written(7), "type": "unsupported",
               "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown",
                           "error_data": {"details": "Message type is currently not supported."}}],
               "unsupported": {"type": "poll_creation"}}),
        json!({"from": from, "id": "wamid.T16", "timestamp": written(8), "type": "brand_new_type",
               "brand_new_type": {"anything": [1, 2, 3]}}),
    ];
    // The same message delivered again inside the batch.
    second.push(second[0].clone());
    let body = envelope(vec![
        value(from, "Ana Silva", first),
        value(from, "Ana Silva", second),
    ]);
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // And the whole request again (a provider retry).
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK);

    let contact = contact_of(&app, from).await;
    let c = app
        .get(&format!("/api/v1/contacts/{contact}"), &app.agent.token)
        .await;
    assert_eq!(c.json["name"], "Ana Silva");
    let items = transcript(&app, &contact).await;
    let kinds: Vec<&str> = items
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "text",
            "image",
            "audio",
            "video",
            "document",
            "sticker",
            "location",
            "contacts",
            "button_reply",
            "list_reply",
            "button",
            "reaction",
            "reaction",
            "text",
            "unsupported",
            "brand_new_type"
        ]
    );
    let by_id = |pid: &str| {
        items
            .iter()
            .find(|m| m["provider_message_id"] == pid)
            .cloned()
            .expect(pid)
    };
    assert_eq!(by_id("wamid.T2")["text"], "my receipt");
    assert_eq!(by_id("wamid.T2")["payload"]["media"]["id"], "MEDIA1");
    assert_eq!(
        by_id("wamid.T7")["payload"]["location"]["latitude"],
        51.5072
    );
    assert_eq!(by_id("wamid.T8")["text"], "John Doe");
    assert_eq!(by_id("wamid.T9")["payload"]["reply_id"], "yes-btn");
    assert_eq!(by_id("wamid.T11")["payload"]["payload"], "CONFIRM_YES");
    assert_eq!(by_id("wamid.T12")["payload"]["emoji"], "❤️");
    assert_eq!(by_id("wamid.T13")["payload"]["removed"], true);
    let t1 = by_id("wamid.T1")["id"].clone();
    assert_eq!(
        by_id("wamid.T12")["reply_to_id"],
        t1,
        "a reaction points at its message"
    );
    assert_eq!(
        by_id("wamid.T14")["reply_to_id"],
        t1,
        "context.id links the reply"
    );
    assert_eq!(by_id("wamid.T15")["payload"]["errors"][0]["code"], 131051);
    assert_eq!(
        by_id("wamid.T16")["payload"]["raw"]["brand_new_type"]["anything"],
        json!([1, 2, 3])
    );
    // One interaction, queued, holding all of them.
    assert_eq!(count(&app, "SELECT count(*) FROM interactions").await, 1);
    let ident = &c.json["identities"][0];
    assert_eq!(ident["address"], "+14155552671");
    assert_eq!(ident["window_open"], true);
}

#[tokio::test]
async fn a_contact_known_only_by_business_scoped_id_is_a_contact_too() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let body = envelope(vec![json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"},
        "contacts": [{"profile": {"name": "Username User", "username": "@uu"}, "user_id": "US.13491208655302741918"}],
        "messages": [{"from_user_id": "US.13491208655302741918", "id": "wamid.B1", "timestamp": "1", "type": "text", "text": {"body": "no phone here"}}]
    })]);
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .get("/api/v1/contacts?q=US.1349", &app.agent.token)
        .await;
    assert_eq!(r.json["items"][0]["name"], "Username User");
    assert_eq!(
        r.json["items"][0]["identities"][0]["address"],
        "US.13491208655302741918"
    );
    // Later the same person writes with both ids: one contact, two identities.
    let body = envelope(vec![json!({
        "contacts": [{"profile": {"name": "Username User"}, "wa_id": "14155552671", "user_id": "US.13491208655302741918"}],
        "messages": [{"from": "14155552671", "from_user_id": "US.13491208655302741918", "id": "wamid.B2", "timestamp": "2", "type": "text", "text": {"body": "now with phone"}}]
    })]);
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(count(&app, "SELECT count(*) FROM contacts").await, 1);
    assert_eq!(
        count(&app, "SELECT count(*) FROM channel_identities").await,
        2
    );
}

#[tokio::test]
async fn a_signed_body_that_cannot_be_parsed_is_kept_as_a_dead_letter_and_answered_200() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    for body in [&b"this is not json"[..], br#"{"object":"page","entry":[]}"#] {
        let r = post_signed(&app, &wa, body, Some(sign(&wa, body))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = app
        .get(
            &format!("/api/v1/channel-accounts/{}/dead-letters", wa.account_id),
            &app.admin.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = r.json.as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["body"], "this is not json");
    assert!(
        list[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not JSON")
    );
    let r = app
        .get(
            &format!("/api/v1/channel-accounts/{}/dead-letters", wa.account_id),
            &app.agent.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn channel_account_secrets_are_write_only() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let r = app
        .get(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &app.admin.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text.clone();
    for secret in ["sim-access-token", "sim-app-secret", "verify-me"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(r.json.get("access_token").is_none());
    assert_eq!(r.json["webhook_path"], wa.webhook_path);
    let r = app.get("/api/v1/channel-accounts", &app.agent.token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (_, [b_admin, _, _]) = app.other_tenant().await;
    let r = app
        .get(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &b_admin.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn wait_status(app: &TestApp, contact: &str, message_id: &str, want: &str) {
    app.eventually(&format!("message {message_id} to be {want}"), || async {
        transcript(app, contact)
            .await
            .iter()
            .any(|m| m["id"] == message_id && m["status"] == want)
    })
    .await;
}

#[tokio::test]
async fn an_agent_reply_reaches_the_provider_and_statuses_come_back() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let (pid, status) = wa
        .sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "where is my order?"}}),
        )
        .await
        .expect("inbound");
    assert_eq!(status, 200);
    let contact = contact_of(&app, "14155552671").await;
    let inbound_id = transcript(&app, &contact).await[0]["id"].clone();
    // The load tool times the legs of a send from what the simulator tells.
    let mut observed = wa.sim.observe();
    let res = app
        .client
        .post(app.url(&format!("/api/v1/contacts/{contact}/messages")))
        .bearer_auth(&app.agent.token)
        .header("idempotency-key", "reply-1")
        .json(&json!({"channel": "whatsapp", "text": "It ships today 📦", "reply_to": inbound_id}))
        .send()
        .await
        .expect("send");
    let r = read_reply(res).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["status"], "queued");
    let id = r.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "read").await;
    let sent = wa.sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], "14155552671");
    assert_eq!(sent[0]["type"], "text");
    assert_eq!(sent[0]["text"]["body"], "It ships today 📦");
    assert_eq!(sent[0]["context"]["message_id"], pid);
    assert_eq!(sent[0]["biz_opaque_callback_data"], id);
    let msgs = transcript(&app, &contact).await;
    let out = msgs
        .iter()
        .find(|m| m["id"] == id.as_str())
        .expect("outbound");
    assert!(
        out["provider_message_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("wamid.")
    );
    assert_eq!(out["sender"]["user_id"], app.agent.id.to_string());
    let wamid = out["provider_message_id"].as_str().unwrap_or_default();
    let mut told = Vec::new();
    while let Ok(o) = observed.try_recv() {
        told.push(o);
    }
    let Some(whatsapp_sim::Observed::Accepted {
        at,
        wamid: w,
        callback,
    }) = told.first()
    else {
        panic!("the send was not told first: {told:?}");
    };
    assert_eq!(
        (w.as_str(), callback.as_deref()),
        (wamid, Some(id.as_str()))
    );
    let mut last = *at;
    let statuses: Vec<&str> = told[1..]
        .iter()
        .map(|o| match o {
            whatsapp_sim::Observed::StatusPosted {
                at,
                wamid: w,
                status,
            } => {
                assert_eq!(w, wamid);
                assert!(*at >= last, "told in the order they happened");
                last = *at;
                status.as_str()
            }
            other => panic!("one send, told twice: {other:?}"),
        })
        .collect();
    assert_eq!(statuses, ["sent", "delivered", "read"]);
    // Event log has the status moves.
    let statuses = count(&app, &format!("SELECT count(*) FROM events WHERE kind = 'message.status' AND payload->>'message_id' = '{id}'")).await;
    assert_eq!(statuses, 3, "sent, delivered, read");
}

#[tokio::test]
async fn a_retried_send_with_the_same_idempotency_key_sends_once() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    let send = |key: &'static str, text: &'static str| {
        let app = &app;
        let contact = contact.clone();
        async move {
            let res = app
                .client
                .post(app.url(&format!("/api/v1/contacts/{contact}/messages")))
                .bearer_auth(&app.agent.token)
                .header("idempotency-key", key)
                .json(&json!({"channel": "whatsapp", "text": text}))
                .send()
                .await
                .expect("send");
            read_reply(res).await
        }
    };
    let (a, b) = tokio::join!(send("k-1", "once"), send("k-1", "once"));
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
    assert_eq!(b.status, StatusCode::ACCEPTED, "{}", b.text);
    assert_eq!(a.json["id"], b.json["id"]);
    let c = send("k-1", "once").await;
    assert_eq!(c.json["id"], a.json["id"]);
    let d = send("k-1", "something else").await;
    assert_eq!(d.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(d.code(), "idempotency_key_reused");
    let id = a.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "read").await;
    assert_eq!(wa.sim.sent().len(), 1);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM messages WHERE direction = 'outbound'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_outbox_retries_through_provider_errors_and_delivers_once() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    wa.sim.fail_next([
        whatsapp_sim::Failure {
            status: 500,
            code: None,
            hang_ms: 0,
        },
        whatsapp_sim::Failure {
            status: 429,
            code: Some(130429),
            hang_ms: 0,
        },
    ]);
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "after the outage"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let id = r.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "read").await;
    assert_eq!(wa.sim.sent().len(), 1, "accepted exactly once");
    let attempts = count(
        &app,
        &format!("SELECT attempts::bigint FROM outbox WHERE message_id = '{id}'"),
    )
    .await;
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn a_permanent_provider_error_fails_the_message_with_the_providers_words() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    wa.sim.fail_next([whatsapp_sim::Failure {
        status: 400,
        code: Some(131009),
        hang_ms: 0,
    }]);
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "bad"}),
        )
        .await;
    let id = r.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "failed").await;
    let m = transcript(&app, &contact)
        .await
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .expect("m");
    assert_eq!(m["status_error"]["code"], 131009);
    assert_eq!(m["status_error"]["message"], "Simulated failure");
}

#[tokio::test]
async fn a_send_queued_while_the_gateway_is_down_goes_out_after_restart() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    app.stop_dispatcher();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "queued"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let id = r.json["id"].as_str().expect("id").to_owned();
    // A worker that claimed it and died mid-send: the lease is taken, then expires.
    sqlx::query("UPDATE outbox SET attempts = 1, locked_until = now() - interval '1 second' WHERE message_id = $1::uuid")
        .bind(&id)
        .execute(&app.db)
        .await
        .expect("simulate crash");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(wa.sim.sent().is_empty());
    app.start_dispatcher();
    wait_status(&app, &contact, &id, "read").await;
    assert_eq!(wa.sim.sent().len(), 1);
}

#[tokio::test]
async fn outside_the_24_hour_window_free_form_is_refused_up_front() {
    let app = spawn_app().await;
    let _wa = app.whatsapp().await;
    let c = app
        .post("/api/v1/contacts", &app.agent.token, &json!({"name": "Cold", "identities": [{"channel": "whatsapp", "address": "+33612345678"}]}))
        .await;
    let contact = c.json["id"].as_str().expect("id").to_owned();
    assert_eq!(c.json["identities"][0]["window_open"], false);
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "hello?"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "whatsapp_window_closed");
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("template")
    );
    // The contact wrote 25 hours ago: closed, and the answer says when it closed.
    sqlx::query("UPDATE channel_identities SET last_inbound_at = now() - interval '25 hours'")
        .execute(&app.db)
        .await
        .expect("age");
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "hello?"}),
        )
        .await;
    assert_eq!(r.code(), "whatsapp_window_closed");
    assert!(r.json["window_closed_at"].is_string());
    assert_eq!(count(&app, "SELECT count(*) FROM outbox").await, 0);
}

/// A text message from +33612345678 sent at `at` (Unix seconds), as the provider posts it.
fn text_at(id: &str, at: i64, text: &str) -> Vec<u8> {
    envelope(vec![value(
        "33612345678",
        "Late",
        vec![
            json!({"from": "33612345678", "id": id, "timestamp": at.to_string(),
                    "type": "text", "text": {"body": text}}),
        ],
    )])
}

fn time_of(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

#[tokio::test]
async fn the_window_counts_from_when_the_contact_wrote_not_from_when_the_webhook_came() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let now = chrono::Utc::now().timestamp();
    let day = 24 * 3600;
    // The first message of a new contact, delivered 25 hours late (a provider retrying
    // after an outage): stored, but the window it opened has closed.
    let body = text_at("wamid.LATE1", now - day - 3600, "written yesterday");
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let contact = contact_of(&app, "33612345678").await;
    assert_eq!(transcript(&app, &contact).await.len(), 1);
    let i = identity(&app, &contact).await;
    assert_eq!(i["window_open"], false, "{i}");
    assert_eq!(time_of(&i["last_inbound_at"]), now - day - 3600);
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "sorry for the wait"}),
        )
        .await;
    assert_eq!(r.code(), "whatsapp_window_closed", "{}", r.text);
    // The known contact's next message (the batched path), written two hours ago: the
    // window is open and ends 24 hours after it was written.
    let body = text_at("wamid.LATE2", now - 2 * 3600, "still there?");
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let i = identity(&app, &contact).await;
    assert_eq!(i["window_open"], true, "{i}");
    assert_eq!(time_of(&i["window_expires_at"]), now - 2 * 3600 + day);
    // An older message arriving after it moves nothing back.
    let body = text_at("wamid.LATE3", now - 3 * 3600, "out of order");
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let i = identity(&app, &contact).await;
    assert_eq!(time_of(&i["window_expires_at"]), now - 2 * 3600 + day);
    // A timestamp from the future (a skewed clock) counts as now, not later.
    let body = text_at("wamid.LATE4", now + 5 * 3600, "from the future");
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let after = chrono::Utc::now().timestamp();
    let expires = time_of(&identity(&app, &contact).await["window_expires_at"]);
    assert!(
        (now + day..=after + day).contains(&expires),
        "{expires} is not within [{}, {}]",
        now + day,
        after + day
    );
    assert_eq!(transcript(&app, &contact).await.len(), 4);
}

#[tokio::test]
async fn provider_errors_131047_and_131026_update_the_identity() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    for n in ["+14155552671", "+33612345678"] {
        wa.sim
            .contact_sends(n, "X", json!({"type": "text", "text": {"body": "hi"}}))
            .await
            .expect("inbound");
    }
    wa.sim.set_window_closed("+14155552671");
    wa.sim.set_no_whatsapp("+33612345678");
    let a = contact_of(&app, "14155552671").await;
    let b = contact_of(&app, "33612345678").await;
    let ra = app
        .post(
            &format!("/api/v1/contacts/{a}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "x"}),
        )
        .await;
    let rb = app
        .post(
            &format!("/api/v1/contacts/{b}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "x"}),
        )
        .await;
    wait_status(&app, &a, ra.json["id"].as_str().expect("id"), "failed").await;
    wait_status(&app, &b, rb.json["id"].as_str().expect("id"), "failed").await;
    let ca = app
        .get(&format!("/api/v1/contacts/{a}"), &app.agent.token)
        .await;
    assert_eq!(ca.json["identities"][0]["window_open"], false);
    let r = app
        .post(
            &format!("/api/v1/contacts/{a}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "again"}),
        )
        .await;
    assert_eq!(r.code(), "whatsapp_window_closed");
    let cb = app
        .get(&format!("/api/v1/contacts/{b}"), &app.agent.token)
        .await;
    assert_eq!(cb.json["identities"][0]["status"], "invalid");
    assert_eq!(cb.json["identities"][0]["last_error"]["code"], 131026);
}

#[tokio::test]
async fn statuses_never_move_backwards_and_unknown_ones_are_harmless() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "x"}),
        )
        .await;
    let id = r.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "read").await;
    let wamid = transcript(&app, &contact)
        .await
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .expect("m")["provider_message_id"]
        .clone();
    let st = |status: &str, pid: Value| json!({"statuses": [{"id": pid, "status": status, "timestamp": "9", "recipient_id": "14155552671"}]});
    for body in [
        st("delivered", wamid.clone()),
        st("sent", wamid.clone()),
        st("delivered", json!("wamid.SOMEONE_ELSES")),
        json!({"statuses": [{"id": "wamid.NEVER", "status": "read", "timestamp": "9", "recipient_id": "1", "biz_opaque_callback_data": "not-a-uuid"}]}),
    ] {
        let env = wa.sim.envelope(body);
        let status = wa.sim.post_webhook(&env).await.expect("post");
        assert_eq!(status, 200);
    }
    let m = transcript(&app, &contact)
        .await
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .expect("m");
    assert_eq!(m["status"], "read");
}

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

#[tokio::test]
async fn inbound_media_is_fetched_into_attachment_storage_after_the_200() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let media_id = wa.sim.add_media(PNG.to_vec(), "image/png");
    let (_, status) = wa
        .sim
        .contact_sends("+14155552671", "Ana", json!({"type": "image", "image": {"id": media_id, "mime_type": "image/png", "caption": "photo of the damage"}}))
        .await
        .expect("inbound");
    assert_eq!(status, 200);
    let contact = contact_of(&app, "14155552671").await;
    app.eventually("the image to be fetched", || async {
        transcript(&app, &contact).await[0]["attachments"][0].is_object()
    })
    .await;
    let attachment = transcript(&app, &contact).await[0]["attachments"][0].clone();
    assert_eq!(attachment["mime_type"], "image/png");
    assert_eq!(attachment["width"], 1);
    let res = app
        .client
        .get(app.url(&format!(
            "/api/v1/attachments/{}",
            attachment["id"].as_str().expect("id")
        )))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("download");
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), PNG);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE kind = 'message.updated'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn an_agent_sends_an_uploaded_image_by_media_id() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "send me the form"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    let part = reqwest::multipart::Part::bytes(PNG.to_vec())
        .file_name("form.png")
        .mime_str("image/png")
        .expect("mime");
    let res = app
        .client
        .post(app.url("/api/v1/attachments"))
        .bearer_auth(&app.agent.token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    let up = read_reply(res).await;
    let att = up.json["id"].as_str().expect("id").to_owned();
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "attachment_id": att, "caption": "here it is"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "read").await;
    let sent = wa.sim.sent();
    assert_eq!(sent[0]["type"], "image");
    assert_eq!(sent[0]["image"]["caption"], "here it is");
    assert!(
        sent[0]["image"]["id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "sent by media id: {}",
        sent[0]
    );
    assert!(sent[0].get("parley_attachment_id").is_none());
}

async fn identity(app: &TestApp, contact: &str) -> Value {
    app.get(&format!("/api/v1/contacts/{contact}"), &app.agent.token)
        .await
        .json["identities"][0]
        .clone()
}

#[tokio::test]
async fn connect_yes_connects_with_consent_and_no_declines() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    for (n, answer) in [
        ("+14155552671", "PARLEY_CONNECT_YES"),
        ("+33612345678", "PARLEY_CONNECT_NO"),
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
            .expect("identity")
            .to_owned();
        // Outside any window: Connect still goes out, as a template.
        let r = app
            .post(
                &format!("/api/v1/contacts/{contact}/identities/{ident}/connect"),
                &app.agent.token,
                &json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(r.json["identity"]["status"], "connect_requested");
        let msg_id = r.json["message"]["id"]
            .as_str()
            .expect("message")
            .to_owned();
        wait_status(&app, &contact, &msg_id, "read").await;
        let sent = wa.sim.sent();
        let t = sent.last().expect("sent");
        assert_eq!(t["type"], "template");
        assert_eq!(t["template"]["name"], "parley_connect_optin");
        assert_eq!(
            t["template"]["components"][0]["parameters"][0]["payload"],
            "PARLEY_CONNECT_YES"
        );
        assert_eq!(
            t["template"]["components"][1]["parameters"][0]["payload"],
            "PARLEY_CONNECT_NO"
        );
        let wamid = transcript(&app, &contact)
            .await
            .into_iter()
            .find(|m| m["id"] == msg_id.as_str())
            .expect("m")["provider_message_id"]
            .clone();
        // The contact taps a quick reply.
        let label = if answer.ends_with("YES") { "Yes" } else { "No" };
        wa.sim
            .contact_sends(n, "Contact", json!({"type": "button", "context": {"from": "15550001111", "id": wamid}, "button": {"payload": answer, "text": label}}))
            .await
            .expect("answer");
        let i = identity(&app, &contact).await;
        if label == "Yes" {
            assert_eq!(i["status"], "connected");
            assert_eq!(i["consent"]["answer_payload"], "PARLEY_CONNECT_YES");
            assert_eq!(i["consent"]["request_message_id"], msg_id);
            assert!(i["consent"]["answered_at"].is_string());
            assert_eq!(i["window_open"], true, "answering opens the window");
        } else {
            assert_eq!(i["status"], "declined");
        }
    }
    assert!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE kind = 'contact.identity_status'"
        )
        .await
            >= 4
    );
}

#[tokio::test]
async fn validate_judges_from_evidence() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    // Wrote recently: connected.
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let a = contact_of(&app, "14155552671").await;
    let ai = identity(&app, &a).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = app
        .post(
            &format!("/api/v1/contacts/{a}/identities/{ai}/validate"),
            &app.agent.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "connected");
    assert!(r.json["evidence"]["last_inbound_at"].is_string());
    assert_eq!(r.json["identity"]["status"], "connected");

    // Never heard of: unverified, with advice.
    let c = app
        .post("/api/v1/contacts", &app.agent.token, &json!({"name": "New", "identities": [{"channel": "whatsapp", "address": "+33612345678"}]}))
        .await;
    let b = c.json["id"].as_str().expect("id").to_owned();
    let bi = c.json["identities"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = app
        .post(
            &format!("/api/v1/contacts/{b}/identities/{bi}/validate"),
            &app.agent.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.json["status"], "unverified");
    assert!(
        r.json["advice"]
            .as_str()
            .unwrap_or_default()
            .contains("template")
    );

    // Not on WhatsApp: the Connect template fails with 131026 → invalid, and Validate says why.
    wa.sim.set_no_whatsapp("+33612345678");
    let r = app
        .post(
            &format!("/api/v1/contacts/{b}/identities/{bi}/connect"),
            &app.agent.token,
            &json!({}),
        )
        .await;
    let msg = r.json["message"]["id"].as_str().expect("id").to_owned();
    wait_status(&app, &b, &msg, "failed").await;
    assert_eq!(identity(&app, &b).await["status"], "invalid");
    let r = app
        .post(
            &format!("/api/v1/contacts/{b}/identities/{bi}/validate"),
            &app.agent.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.json["status"], "invalid");
    assert_eq!(r.json["evidence"]["last_send_error"]["code"], 131026);
    assert_eq!(r.json["identity"]["last_error"]["code"], 131026);
}

#[tokio::test]
async fn an_agent_starts_a_whatsapp_interaction_with_a_contact() {
    let app = spawn_app().await;
    let _wa = app.whatsapp().await;
    let c = app
        .post("/api/v1/contacts", &app.agent.token, &json!({"name": "Out", "identities": [{"channel": "whatsapp", "address": "+14155552671"}]}))
        .await;
    let contact = c.json["id"].as_str().expect("id").to_owned();
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/interactions"),
            &app.agent.token,
            &json!({"channel": "whatsapp"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["state"], "active");
    assert_eq!(r.json["agent_id"], app.agent.id.to_string());
    // Desktops and queue views hear of it as of an inbound one: created, then accepted.
    let kinds: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, audience FROM events WHERE payload->'interaction'->>'id' = $1 ORDER BY id",
    )
    .bind(r.json["id"].as_str().expect("id"))
    .fetch_all(&app.db)
    .await
    .expect("events");
    assert_eq!(
        kinds,
        vec![
            ("interaction.created".to_owned(), "supervisors".to_owned()),
            ("interaction.accepted".to_owned(), "tenant".to_owned())
        ]
    );
    let again = app
        .post(
            &format!("/api/v1/contacts/{contact}/interactions"),
            &app.agent.token,
            &json!({"channel": "whatsapp"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["id"], r.json["id"]);
    let none = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "No WA"}),
        )
        .await;
    let nid = none.json["id"].as_str().expect("id");
    let r = app
        .post(
            &format!("/api/v1/contacts/{nid}/interactions"),
            &app.agent.token,
            &json!({"channel": "whatsapp"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn interactive_reply_buttons_go_out_and_the_tap_comes_back() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "I want to cancel"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "Are you sure?", "buttons": [{"id": "cancel-yes", "title": "Yes, cancel"}, {"id": "cancel-no", "title": "Keep it"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "read").await;
    let sent = wa.sim.sent();
    assert_eq!(sent[0]["type"], "interactive");
    assert_eq!(
        sent[0]["interactive"]["action"]["buttons"][1]["reply"]["id"],
        "cancel-no"
    );
    let wamid = transcript(&app, &contact)
        .await
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .expect("m")["provider_message_id"]
        .clone();
    wa.sim
        .contact_sends("+14155552671", "Ana", json!({"type": "interactive", "context": {"from": "15550001111", "id": wamid},
            "interactive": {"type": "button_reply", "button_reply": {"id": "cancel-no", "title": "Keep it"}}}))
        .await
        .expect("tap");
    let last = transcript(&app, &contact).await.pop().expect("last");
    assert_eq!(last["kind"], "button_reply");
    assert_eq!(last["payload"]["reply_id"], "cancel-no");
    assert_eq!(last["reply_to_id"], id);
    let r = app
        .post(&format!("/api/v1/contacts/{contact}/messages"), &app.agent.token,
            &json!({"channel": "whatsapp", "text": "x", "buttons": [{"id": "a", "title": "a title that is far too long"}, {"id": "a", "title": "b"}]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["buttons[0].title", "buttons[1].id"]);
}

#[tokio::test]
async fn reading_a_conversation_sends_read_receipts_when_the_account_wants_them() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let (pid, _) = wa
        .sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    let mid = transcript(&app, &contact).await[0]["id"].clone();
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/read"),
            &app.agent.token,
            &json!({"up_to_message_id": mid}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(wa.sim.read_receipts().is_empty(), "off by default");
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &app.admin.token,
            &json!({"mark_read": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/read"),
            &app.agent.token,
            &json!({"up_to_message_id": mid}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    app.eventually("a read receipt at the provider", || async {
        wa.sim.read_receipts() == vec![pid.clone()]
    })
    .await;
}

#[tokio::test]
async fn gigantic_and_deeply_nested_webhooks_get_their_documented_answers() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let big = vec![b' '; 5 * 1024 * 1024];
    let r = post_signed(&app, &wa, &big, Some(sign(&wa, &big))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let r = post_signed(&app, &wa, &deep, Some(sign(&wa, &deep))).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "signed but unparseable: kept, answered 200"
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM webhook_dead_letters").await,
        1
    );
    // A truncated body.
    let body = envelope(vec![value(
        "14155552671",
        "A",
        vec![
            json!({"from": "14155552671", "id": "wamid.TR", "type": "text", "text": {"body": "x"}}),
        ],
    )]);
    let cut = &body[..body.len() / 2];
    let r = post_signed(&app, &wa, cut, Some(sign(&wa, cut))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        count(&app, "SELECT count(*) FROM webhook_dead_letters").await,
        2
    );
    assert_eq!(count(&app, "SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn two_dispatchers_on_one_database_send_each_message_once_and_in_order() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    // A second replica's dispatcher on the same database.
    app.start_second_dispatcher();
    wa.sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    wa.sim
        .contact_sends(
            "+33612345678",
            "Bo",
            json!({"type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect("inbound");
    let a = contact_of(&app, "14155552671").await;
    let b = contact_of(&app, "33612345678").await;
    let mut ids = Vec::new();
    for i in 0..15 {
        for c in [&a, &b] {
            let r = app
                .post(
                    &format!("/api/v1/contacts/{c}/messages"),
                    &app.agent.token,
                    &json!({"channel": "whatsapp", "text": format!("n{i}")}),
                )
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED);
            ids.push(r.json["id"].as_str().expect("id").to_owned());
        }
    }
    app.eventually("all 30 accepted", || async { wa.sim.sent().len() >= 30 })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sent = wa.sim.sent();
    assert_eq!(sent.len(), 30, "no message sent twice");
    let mut callbacks: Vec<&str> = sent
        .iter()
        .filter_map(|m| m["biz_opaque_callback_data"].as_str())
        .collect();
    callbacks.sort_unstable();
    callbacks.dedup();
    assert_eq!(callbacks.len(), 30);
    for to in ["14155552671", "33612345678"] {
        let order: Vec<&str> = sent
            .iter()
            .filter(|m| m["to"] == to)
            .filter_map(|m| m["text"]["body"].as_str())
            .collect();
        let want: Vec<String> = (0..15).map(|i| format!("n{i}")).collect();
        assert_eq!(order, want, "messages to {to} left in order");
    }
}

#[tokio::test]
async fn an_agent_reacts_to_a_contacts_message() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let (pid, _) = wa
        .sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "thanks!"}}),
        )
        .await
        .expect("inbound");
    let contact = contact_of(&app, "14155552671").await;
    let mid = transcript(&app, &contact).await[0]["id"].clone();
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "reaction": {"message_id": mid, "emoji": "👍"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["kind"], "reaction");
    app.eventually("the reaction to reach the provider", || async {
        !wa.sim.sent().is_empty()
    })
    .await;
    let sent = &wa.sim.sent()[0];
    assert_eq!(sent["type"], "reaction");
    assert_eq!(sent["reaction"]["message_id"], pid);
    assert_eq!(sent["reaction"]["emoji"], "👍");
}

#[tokio::test]
async fn validate_asks_the_providers_contacts_check_when_it_has_one() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &app.admin.token,
            &json!({"contacts_check_url": format!("{}/v1/contacts", wa.sim_base)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    wa.sim.set_no_whatsapp("+33612345678");
    for (number, want) in [("+14155552671", "connected"), ("+33612345678", "invalid")] {
        let c = app
            .post("/api/v1/contacts", &app.agent.token, &json!({"name": number, "identities": [{"channel": "whatsapp", "address": number}]}))
            .await;
        let id = c.json["id"].as_str().expect("id");
        let ident = c.json["identities"][0]["id"].as_str().expect("identity");
        let r = app
            .post(
                &format!("/api/v1/contacts/{id}/identities/{ident}/validate"),
                &app.agent.token,
                &json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], want, "{number}: {}", r.text);
        assert!(r.json["evidence"]["contacts_check"].is_string());
    }
}

/// Provider URLs set by admins may only point at allowed hosts, so an admin cannot make
/// the server call internal addresses (SSRF).
#[tokio::test]
async fn provider_urls_must_point_at_allowed_hosts() {
    let app =
        test_support::spawn_app_with(&[("PARLEY_PROVIDER_HOSTS", "graph.facebook.com")]).await;
    let account = |base: &str, pnid: &str| {
        json!({"provider": "whatsapp", "name": "Number", "phone_number_id": pnid,
               "access_token": "token", "app_secret": "secret", "verify_token": "verify",
               "api_base_url": base})
    };
    for (n, bad) in [
        "http://127.0.0.1:9/v21.0",
        "http://169.254.169.254/latest/meta-data",
        "https://graph.facebook.com@10.0.0.1/v21.0",
        "https://internal.example/v21.0",
        "file:///etc/passwd",
    ]
    .iter()
    .enumerate()
    {
        let r = app
            .post(
                "/api/v1/channel-accounts",
                &app.admin.token,
                &account(bad, &format!("pn{n}")),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert!(r.text.contains("api_base_url"), "{}", r.text);
    }
    let r = app
        .post(
            "/api/v1/channel-accounts",
            &app.admin.token,
            &account("https://graph.facebook.com/v21.0", "pn-ok"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_owned();
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{id}"),
            &app.admin.token,
            &json!({"contacts_check_url": "http://10.1.2.3/v1/contacts"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("contacts_check_url"), "{}", r.text);
}

#[tokio::test]
async fn webhooks_arriving_together_share_a_commit_and_a_bad_one_spoils_only_itself() {
    // One writer: webhooks that arrive while it commits wait and go into its next batch.
    let app = test_support::spawn_app_with(&[
        ("PARLEY_INGEST_WRITERS", "1"),
        ("PARLEY_INGEST_BATCH_MAX", "64"),
    ])
    .await;
    let wa = std::sync::Arc::new(app.whatsapp().await);
    let app = std::sync::Arc::new(app);
    let text = |from: &str, id: &str, body: &str| {
        envelope(vec![value(
            from,
            "Batch",
            vec![
                json!({"from": from, "id": id, "timestamp": written(0), "type": "text", "text": {"body": body}}),
            ],
        )])
    };
    let contacts: Vec<String> = (0..8).map(|c| format!("1415555{c:04}")).collect();
    let send_all = |round: u32| {
        let mut tasks = tokio::task::JoinSet::new();
        for from in &contacts {
            let (app, wa, from) = (app.clone(), wa.clone(), from.clone());
            tasks.spawn(async move {
                let mut answers = Vec::new();
                // Each contact writes in order; the contacts write at the same time.
                for n in 0..5 {
                    let body = text(
                        &from,
                        &format!("wamid.G{from}-{n}"),
                        &format!("{from} #{n}"),
                    );
                    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
                    answers.push((round, r.status));
                }
                answers
            });
        }
        tasks
    };
    // One webhook the database refuses (as it would a row breaking a constraint).
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.provider_message_id = 'wamid.POISON' THEN
                 RAISE EXCEPTION 'refused for the test';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(&app.db)
    .await
    .expect("trigger");
    let mut tasks = send_all(1);
    let bad = text("14155559999", "wamid.POISON", "refused");
    let bad_answer = post_signed(&app, &wa, &bad, Some(sign(&wa, &bad))).await;
    while let Some(answers) = tasks.join_next().await {
        for (_, status) in answers.expect("task") {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_ne!(
        bad_answer.status,
        StatusCode::OK,
        "the refused webhook is not acknowledged: {bad_answer:?}"
    );
    for from in &contacts {
        let items = transcript(&app, &contact_of(&app, from).await).await;
        let bodies: Vec<&str> = items.iter().filter_map(|m| m["text"].as_str()).collect();
        let want: Vec<String> = (0..5).map(|n| format!("{from} #{n}")).collect();
        assert_eq!(
            bodies, want,
            "each contact's messages once, in the order written"
        );
    }
    // Provider retries of everything, together again: nothing is stored twice.
    let mut again = send_all(2);
    while let Some(answers) = again.join_next().await {
        for (_, status) in answers.expect("task") {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_eq!(count(&app, "SELECT count(*) FROM messages").await, 40);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM messages WHERE provider_message_id = 'wamid.POISON'"
        )
        .await,
        0
    );
    // Grouped: the 40 messages' events came from fewer than 40 transactions.
    let transactions = count(
        &app,
        "SELECT count(DISTINCT xid) FROM events WHERE kind = 'message.created'",
    )
    .await;
    assert!(
        transactions < 40,
        "40 concurrent webhooks took {transactions} commits"
    );
    // Operators see the grouping: every acknowledged webhook (40, then their 40 replays)
    // counted once, in fewer transactions than webhooks.
    let r = app.call(Method::GET, "/metrics", None, None).await;
    let metric = |name: &str| -> f64 {
        r.text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {}", r.text))
    };
    assert_eq!(metric("parley_ingest_batch_webhooks_sum"), 80.0);
    assert!(metric("parley_ingest_batch_webhooks_count") < 80.0);
}

#[tokio::test]
async fn several_messages_of_a_known_contact_in_one_webhook_keep_order_and_count_unread_each() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let from = "14155550142";
    let msg = |id: &str, body: &str| json!({"from": from, "id": id, "timestamp": written(0), "type": "text", "text": {"body": body}});
    // The first message creates the contact and its interaction (the full path)...
    let first = envelope(vec![value(from, "Ana", vec![msg("wamid.K0", "zero")])]);
    let r = post_signed(&app, &wa, &first, Some(sign(&wa, &first))).await;
    assert_eq!(r.status, StatusCode::OK);
    // ...the next three, in one webhook, are a known sender's (the batched path), one of
    // them repeated.
    let three = envelope(vec![value(
        from,
        "Ana",
        vec![
            msg("wamid.K1", "one"),
            msg("wamid.K2", "two"),
            msg("wamid.K2", "two"),
            msg("wamid.K3", "three"),
        ],
    )]);
    let r = post_signed(&app, &wa, &three, Some(sign(&wa, &three))).await;
    assert_eq!(r.status, StatusCode::OK);
    let contact = contact_of(&app, from).await;
    let bodies: Vec<String> = transcript(&app, &contact)
        .await
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, ["zero", "one", "two", "three"]);
    let mut conn = app.db.acquire().await.expect("conn");
    let evs = conversation_store::events::list_after(&mut conn, app.tenant, 0, 1000)
        .await
        .expect("events");
    let created: Vec<&str> = evs
        .iter()
        .filter(|e| e.kind == "message.created")
        .filter_map(|e| e.payload["message"]["text"].as_str())
        .collect();
    assert_eq!(
        created,
        ["zero", "one", "two", "three"],
        "one event per message, in order"
    );
    let unread: Vec<Value> = evs
        .iter()
        .filter(|e| e.kind == "conversation.unread" && e.payload["contact_id"] == contact)
        .map(|e| e.payload["unread_count"].clone())
        .collect();
    assert_eq!(
        unread,
        [json!(1), json!(2), json!(3), json!(4)],
        "the count as of each message"
    );
    // The same webhook again: nothing new.
    let r = post_signed(&app, &wa, &three, Some(sign(&wa, &three))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(count(&app, "SELECT count(*) FROM messages").await, 4);
}

/// The unread count is kept on the contact rather than counted each time, so it must stay
/// equal to a count of the inbound messages after the read mark while messages arrive (in
/// group-committed batches, several per webhook) and agents mark them read at the same
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_unread_count_matches_a_recount_while_reads_race_arrivals() {
    let app = std::sync::Arc::new(spawn_app().await);
    let wa = std::sync::Arc::new(app.whatsapp().await);
    const FROM: &str = "14155550177";
    let from = FROM;
    let msg = move |id: String| json!({"from": from, "id": id, "timestamp": written(0), "type": "text", "text": {"body": "hi"}});
    let first = envelope(vec![value(from, "Race", vec![msg("wamid.R-first".into())])]);
    let r = post_signed(&app, &wa, &first, Some(sign(&wa, &first))).await;
    assert_eq!(r.status, StatusCode::OK);
    let contact = contact_of(&app, from).await;
    let recount = format!(
        "SELECT count(*) FROM messages m JOIN contacts c ON c.id = m.contact_id
         WHERE c.id = '{contact}' AND m.direction = 'inbound'
           AND (c.read_up_to_at IS NULL OR (m.created_at, m.id) > (c.read_up_to_at, c.read_up_to_id))"
    );
    let kept = format!("SELECT unread_count::bigint FROM contacts WHERE id = '{contact}'");
    let mut tasks = Vec::new();
    for s in 0..4 {
        let (app, wa) = (app.clone(), wa.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..12 {
                let batch = (0..1 + (n % 3))
                    .map(|k| msg(format!("wamid.R-{s}-{n}-{k}")))
                    .collect();
                let body = envelope(vec![value(from, "Race", batch)]);
                let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }));
    }
    // Two desktops mark read up to the newest message as fast as they can meanwhile.
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (app, contact, sending) = (app.clone(), contact.clone(), sending.clone());
        readers.push(tokio::spawn(async move {
            let mut marks = 0;
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let r = read_to_newest(&app, &contact).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                marks += 1;
            }
            marks
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.expect("reader") > 0, "the reads raced nothing");
    }
    assert_eq!(
        count(&app, "SELECT count(*) FROM messages").await,
        1 + 4 * 24
    );
    let expected = count(&app, &recount).await;
    assert_eq!(count(&app, &kept).await, expected, "kept count drifted");
    let r = app.get("/api/v1/conversations", &app.agent.token).await;
    assert_eq!(r.json["items"][0]["unread_count"], expected, "{}", r.text);
    // Read to the end: nothing unread; one more message: one.
    let r = read_to_newest(&app, &contact).await;
    assert_eq!(r.json["unread_count"], 0, "{}", r.text);
    let last = envelope(vec![value(from, "Race", vec![msg("wamid.R-last".into())])]);
    let r = post_signed(&app, &wa, &last, Some(sign(&wa, &last))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(count(&app, &kept).await, 1);
    assert_eq!(count(&app, &recount).await, 1);
}

/// Mark the contact's messages read up to its newest one, as a desktop does.
async fn read_to_newest(app: &TestApp, contact: &str) -> test_support::Reply {
    let newest: uuid::Uuid = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM messages WHERE contact_id = '{contact}'
         ORDER BY created_at DESC, id DESC LIMIT 1"
    )))
    .fetch_one(&app.db)
    .await
    .expect("newest");
    app.post(
        &format!("/api/v1/contacts/{contact}/read"),
        &app.agent.token,
        &json!({"up_to_message_id": newest}),
    )
    .await
}

/// Stopping a gateway lets its webhook writers go: their thread ends and their own
/// connections close. (A writer that held on to the queue's sender kept both forever, and
/// a suite of many gateways in one process ran out of database connections.)
#[tokio::test]
async fn a_stopped_gateway_closes_its_webhook_writers_connections() {
    use sqlx::Connection as _;
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let body = envelope(vec![value(
        "14155550123",
        "Stop",
        vec![
            json!({"from": "14155550123", "id": "wamid.STOP1", "timestamp": written(0), "type": "text", "text": {"body": "hi"}}),
        ],
    )]);
    let r = post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut conn = sqlx::PgConnection::connect(&app.db_url)
        .await
        .expect("connect");
    let writers = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(gateway::ingest::WRITER_APPLICATION_NAME)
    };
    let open = writers().fetch_one(&mut conn).await.expect("count");
    assert!(open >= 1, "the webhook was stored on a writer connection");
    drop(wa);
    drop(app);
    let started = std::time::Instant::now();
    loop {
        let open = writers().fetch_one(&mut conn).await.expect("count");
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{open} writer connections still open after the gateway stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_gathering_company_while_the_other_is_stuck_still_stores_its_webhook() {
    // Two writers. One is stuck on a contact row the test holds; a webhook of another
    // contact then finds a writer storing and waits a moment for company, but not for the
    // stuck one: it is stored and answered while the first is still blocked.
    let app = test_support::spawn_app_with(&[("PARLEY_INGEST_WRITERS", "2")]).await;
    let wa = std::sync::Arc::new(app.whatsapp().await);
    let app = std::sync::Arc::new(app);
    let text = |from: &str, id: &str| {
        envelope(vec![value(
            from,
            "Gather",
            vec![
                json!({"from": from, "id": id, "timestamp": written(0), "type": "text", "text": {"body": id}}),
            ],
        )])
    };
    let first = text("14155550161", "wamid.GATHER0");
    let r = post_signed(&app, &wa, &first, Some(sign(&wa, &first))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let contact = contact_of(&app, "14155550161").await;
    let mut hold = app.db.begin().await.expect("begin");
    sqlx::query("SELECT id FROM contacts WHERE id = $1::uuid FOR UPDATE")
        .bind(&contact)
        .execute(&mut *hold)
        .await
        .expect("lock");
    let stuck = {
        let (app, wa) = (app.clone(), wa.clone());
        tokio::spawn(async move {
            let body = text("14155550161", "wamid.GATHER1");
            post_signed(&app, &wa, &body, Some(sign(&wa, &body))).await
        })
    };
    app.eventually("a writer waits on the held contact", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1
               AND wait_event_type = 'Lock'",
        )
        .bind(gateway::ingest::WRITER_APPLICATION_NAME)
        .fetch_one(&app.db)
        .await
        .unwrap_or(0)
            == 1
    })
    .await;
    let other = text("14155550162", "wamid.GATHER2");
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        post_signed(&app, &wa, &other, Some(sign(&wa, &other))),
    )
    .await
    .expect("the other writer stores a webhook while the first is stuck");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!stuck.is_finished(), "the first writer was still held");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM messages WHERE provider_message_id = 'wamid.GATHER2'"
        )
        .await,
        1
    );
    hold.rollback().await.expect("release");
    let r = stuck.await.expect("join");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM messages WHERE provider_message_id LIKE 'wamid.GATHER%'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn outbox_rows_queued_by_the_previous_release_are_sent_as_they_were() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let (_, status) = wa
        .sim
        .contact_sends(
            "+14155552671",
            "Ana",
            json!({"type": "text", "text": {"body": "hello"}}),
        )
        .await
        .expect("inbound");
    assert_eq!(status, 200);
    let contact = contact_of(&app, "14155552671").await;
    // Rows queued while no dispatcher runs (as across an upgrade).
    app.stop_dispatcher();
    let image = crate::attachments::upload(
        &app,
        &app.agent.token,
        crate::attachments::PNG.to_vec(),
        "receipt.png",
        "image/png",
    )
    .await;
    let attachment = image.json["id"].as_str().expect("attachment").to_owned();
    let mut ids = Vec::new();
    for body in [
        json!({"channel": "whatsapp", "text": "queued before the upgrade"}),
        json!({"channel": "whatsapp", "attachment_id": attachment, "caption": "your receipt"}),
        json!({"channel": "whatsapp", "text": "queued after the upgrade"}),
    ] {
        let r = app
            .post(
                &format!("/api/v1/contacts/{contact}/messages"),
                &app.agent.token,
                &body,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        ids.push(uuid::Uuid::parse_str(r.json["id"].as_str().expect("id")).expect("uuid"));
    }
    // This release stores what to send, provider-neutral, and no wire body.
    let (content, request): (Value, Option<Value>) =
        sqlx::query_as("SELECT content, request FROM outbox WHERE message_id = $1")
            .bind(ids[2])
            .fetch_one(&app.db)
            .await
            .expect("row");
    assert_eq!(content["v"], 1);
    assert_eq!(content["to"], "+14155552671");
    assert_eq!(content["content"]["kind"], "text");
    assert_eq!(request, None);
    // The first two as the previous release wrote them: the Cloud API body, the image's
    // attachment spliced in under `parley_attachment_id`.
    for (id, old) in [
        (
            ids[0],
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "14155552671", "biz_opaque_callback_data": ids[0].to_string(),
                   "type": "text", "text": {"body": "queued before the upgrade", "preview_url": false}}),
        ),
        (
            ids[1],
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "14155552671", "biz_opaque_callback_data": ids[1].to_string(),
                   "type": "image", "image": {"caption": "your receipt"},
                   "parley_attachment_id": attachment}),
        ),
    ] {
        sqlx::query("UPDATE outbox SET content = NULL, request = $2 WHERE message_id = $1")
            .bind(id)
            .bind(&old)
            .execute(&app.db)
            .await
            .expect("old format");
    }
    app.start_dispatcher();
    // (Sent, or already further along: the simulator reports delivery and reads at once.)
    for id in &ids {
        let id = id.to_string();
        app.eventually(&format!("message {id} to be sent"), || async {
            transcript(&app, &contact).await.iter().any(|m| {
                m["id"] == id.as_str()
                    && matches!(m["status"].as_str(), Some("sent" | "delivered" | "read"))
            })
        })
        .await;
    }
    let sent = wa.sim.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    // In order, each once, the old ones exactly as queued (the attachment uploaded and
    // its media id filled in), the new one rendered at send time.
    assert_eq!(sent[0]["text"]["body"], "queued before the upgrade");
    assert_eq!(sent[1]["type"], "image");
    assert_eq!(sent[1]["image"]["caption"], "your receipt");
    assert!(
        sent[1]["image"]["id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(sent[1].get("parley_attachment_id").is_none());
    assert_eq!(sent[2]["text"]["body"], "queued after the upgrade");
    assert_eq!(sent[2]["to"], "14155552671");
    assert_eq!(sent[2]["biz_opaque_callback_data"], ids[2].to_string());
    for (s, id) in sent.iter().zip(&ids) {
        assert_eq!(s["biz_opaque_callback_data"], id.to_string());
    }
}
