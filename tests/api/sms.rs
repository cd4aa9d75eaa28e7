//! SMS through Twilio, end to end against the bundled simulator: signed form webhooks in,
//! `Messages.json` sends out through the outbox, status callbacks, opt-out, limits.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sms_sim::Failure;
use test_support::{Sms, TestApp, spawn_app};

async fn contact_of(app: &TestApp, phone: &str) -> String {
    app.contact_id_of(phone).await
}

async fn transcript(app: &TestApp, contact: &str) -> Vec<Value> {
    app.transcript_of(contact).await
}

async fn identity(app: &TestApp, contact: &str, channel: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/contacts/{contact}"), &app.agent.token)
        .await;
    r.json["identities"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["channel"] == channel).cloned())
        .unwrap_or_else(|| panic!("a {channel} identity: {}", r.text))
}

async fn send(app: &TestApp, contact: &str, body: Value) -> test_support::Reply {
    app.post(
        &format!("/api/v1/contacts/{contact}/messages"),
        &app.agent.token,
        &body,
    )
    .await
}

async fn wait_status(app: &TestApp, contact: &str, id: &str, want: &str) -> Value {
    app.eventually(&format!("message {id} to be {want}"), || async {
        transcript(app, contact)
            .await
            .iter()
            .any(|m| m["id"] == id && m["status"] == want)
    })
    .await;
    transcript(app, contact)
        .await
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or(Value::Null)
}

async fn writes(sms: &Sms, from: &str, body: &str) -> String {
    let (sid, status) = sms
        .sim
        .contact_sends(from, body, None)
        .await
        .expect("webhook");
    assert_eq!(status, 200, "webhook for {body:?}");
    sid
}

#[tokio::test]
async fn a_contact_chats_over_sms_through_the_simulator() {
    let app = spawn_app().await;
    let sms = app.sms().await;
    // The contact writes: stored once, answered with empty TwiML.
    let sid = writes(&sms, "+13105550142", "Olá 👋 is my order ready? 50% off?").await;
    let contact = contact_of(&app, "+13105550142").await;
    let msgs = transcript(&app, &contact).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["channel"], "sms");
    assert_eq!(msgs[0]["text"], "Olá 👋 is my order ready? 50% off?");
    assert_eq!(msgs[0]["provider_message_id"], sid.as_str());
    // Twilio retries: the same MessageSid stores nothing twice.
    let (_, status) = sms
        .sim
        .contact_sends(
            "+13105550142",
            "Olá 👋 is my order ready? 50% off?",
            Some(&sid),
        )
        .await
        .expect("redelivery");
    assert_eq!(status, 200);
    assert_eq!(transcript(&app, &contact).await.len(), 1);
    assert!(sms.sim.webhook_results().iter().all(|s| *s == 200));

    // The agent replies without naming a channel: it goes back by SMS, the channel the
    // contact wrote on, and its statuses come back through the signed callbacks.
    let r = send(&app, &contact, json!({"text": "Yes — ready for pickup."})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["channel"], "sms");
    let id = r.json["id"].as_str().expect("id").to_owned();
    let done = wait_status(&app, &contact, &id, "delivered").await;
    let sent = sms.sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "+13105550142");
    assert_eq!(sent[0].from, sms.sim.number());
    assert_eq!(sent[0].body, "Yes — ready for pickup.");
    assert!(
        sent[0]
            .status_callback
            .as_deref()
            .is_some_and(|u| u.ends_with(&format!("{}/status?m={id}", sms.webhook_path))),
        "{:?}",
        sent[0].status_callback
    );
    assert_eq!(done["provider_message_id"], sent[0].sid.as_str());
    // A late `sent` never undoes `delivered`.
    let status = sms.sim.status(&sent[0], "sent", None).await.expect("late");
    assert_eq!(status, 200);
    let again = transcript(&app, &contact).await;
    assert_eq!(
        again.iter().find(|m| m["id"] == id.as_str()).expect("msg")["status"],
        "delivered"
    );
}

#[tokio::test]
async fn forged_or_unsigned_webhooks_store_nothing_and_unreadable_ones_are_kept() {
    let app = spawn_app().await;
    let sms = app.sms().await;
    let body = format!(
        "MessageSid=SM{}&From=%2B13105550142&To=%2B15005550006&Body=hi&NumMedia=0",
        "1".repeat(32)
    );
    for (sig, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("bm90IHRoZSBzaWduYXR1cmU="), StatusCode::FORBIDDEN),
    ] {
        let mut req = app
            .client
            .post(app.url(&sms.webhook_path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone());
        if let Some(s) = sig {
            req = req.header("x-twilio-signature", s);
        }
        let res = req.send().await.expect("post");
        assert_eq!(res.status(), want);
    }
    // An SMS account's id on the WhatsApp route, signed with its auth token: no such
    // WhatsApp account.
    let wa_body = json!({"object": "whatsapp_business_account", "entry": []}).to_string();
    let res = app
        .client
        .post(app.url(&format!("/webhooks/whatsapp/{}", sms.account_id)))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            channel_connector::signature::sign(sms.sim.auth_token().as_bytes(), wa_body.as_bytes()),
        )
        .body(wa_body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let r = app
        .get("/api/v1/contacts?q=13105550142", &app.agent.token)
        .await;
    assert_eq!(r.json["items"], json!([]));
    // Signed, but not a message (no MessageSid): kept as a dead letter, answered as
    // Twilio expects (so it is not sent to the fallback URL).
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let status = sms
        .sim
        .post_signed(
            &app.url(&sms.webhook_path),
            &[p("From", "+13105550142"), p("Body", "no sid")],
        )
        .await
        .expect("post");
    assert_eq!(status, 200);
    let r = app
        .get(
            &format!("/api/v1/channel-accounts/{}/dead-letters", sms.account_id),
            &app.admin.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let kept = r.json.as_array().cloned().unwrap_or_default();
    assert_eq!(kept.len(), 1, "{}", r.text);
    assert_eq!(kept[0]["reason"], "MessageSid is missing");
    // Replayed through Twilio's own path: still unreadable, said so, nothing stored.
    let r = app
        .post(
            &format!(
                "/api/v1/channel-accounts/{}/dead-letters/{}/replay",
                sms.account_id, kept[0]["id"]
            ),
            &app.admin.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["code"], "still_unreadable");
    assert!(r.text.contains("MessageSid"), "{}", r.text);
}

#[tokio::test]
async fn stop_opts_out_until_start_and_a_refusal_21610_opts_out_too() {
    let app = spawn_app().await;
    let sms = app.sms().await;
    writes(&sms, "+13105550142", "hello").await;
    let contact = contact_of(&app, "+13105550142").await;
    // A sentence with "stop" in it is a message like any other.
    writes(&sms, "+13105550142", "STOP PLEASE, I mean wait").await;
    assert_ne!(identity(&app, &contact, "sms").await["status"], "opted_out");
    writes(&sms, "+13105550142", "Stop").await;
    assert_eq!(identity(&app, &contact, "sms").await["status"], "opted_out");
    let r = send(&app, &contact, json!({"text": "are you sure?"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["code"], "contact_opted_out");
    // HELP changes nothing; START opts back in.
    writes(&sms, "+13105550142", "HELP").await;
    assert_eq!(identity(&app, &contact, "sms").await["status"], "opted_out");
    writes(&sms, "+13105550142", "start").await;
    assert_ne!(identity(&app, &contact, "sms").await["status"], "opted_out");
    let r = send(&app, &contact, json!({"text": "welcome back"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    wait_status(
        &app,
        &contact,
        r.json["id"].as_str().expect("id"),
        "delivered",
    )
    .await;

    // The provider refuses a send with 21610 (the contact opted out at the carrier):
    // the message fails with Twilio's reason and the address is opted out.
    sms.sim.set_unsubscribed("+13105550142");
    let r = send(&app, &contact, json!({"text": "one more thing"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let failed = wait_status(&app, &contact, r.json["id"].as_str().expect("id"), "failed").await;
    assert_eq!(failed["status_error"]["code"], 21610, "{failed}");
    assert_eq!(identity(&app, &contact, "sms").await["status"], "opted_out");
}

#[tokio::test]
async fn throttled_sends_are_retried_in_order_and_long_bodies_are_refused_up_front() {
    let app = spawn_app().await;
    let sms = app.sms().await;
    writes(&sms, "+13105550142", "hi").await;
    let contact = contact_of(&app, "+13105550142").await;
    sms.sim.fail_next([Failure::TooMany, Failure::TooMany]);
    let mut ids = Vec::new();
    for text in ["first", "second", "third"] {
        let r = send(&app, &contact, json!({"text": text})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        ids.push(r.json["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        wait_status(&app, &contact, id, "delivered").await;
    }
    let bodies: Vec<String> = sms.sim.sent().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, vec!["first", "second", "third"]);

    // Over 1,600 UTF-16 units (801 emoji are 1,602): refused before anything is queued.
    let r = send(&app, &contact, json!({"text": "👋".repeat(801)})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("1600"), "{}", r.text);
    assert!(r.text.contains("\"text\""), "{}", r.text);
    // What SMS cannot carry is refused too.
    let r = send(
        &app,
        &contact,
        json!({"text": "pick one", "buttons": [{"id": "a", "title": "A"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("buttons"), "{}", r.text);
    assert_eq!(sms.sim.sent().len(), 3);

    // The agent sees the encoding and segment count before sending.
    let r = app
        .post(
            "/api/v1/sms/segments",
            &app.agent.token,
            &json!({"text": "a".repeat(161)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json["encoding"].clone(), r.json["segments"].clone()),
        (json!("GSM-7"), json!(2))
    );
    let r = app
        .post(
            "/api/v1/sms/segments",
            &app.agent.token,
            &json!({"text": "Olá 👋"}),
        )
        .await;
    assert_eq!(r.json["encoding"], "UCS-2");
    assert_eq!(r.json["units"], 6);
    assert_eq!(r.json["within_limit"], true);
}

#[tokio::test]
async fn one_contact_on_whatsapp_and_sms_has_one_transcript_and_replies_follow_the_last_channel() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let sms = app.sms().await;
    let (_, status) = wa
        .sim
        .contact_sends(
            "+13105550142",
            "Ana",
            json!({"type": "text", "text": {"body": "on whatsapp"}}),
        )
        .await
        .expect("wa");
    assert_eq!(status, 200);
    let contact = contact_of(&app, "+13105550142").await;
    // The same person's number on SMS belongs to the same contact.
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/identities"),
            &app.agent.token,
            &json!({"channel": "sms", "address": "+13105550142"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    writes(&sms, "+13105550142", "now by text").await;
    let msgs = transcript(&app, &contact).await;
    let channels: Vec<&str> = msgs.iter().filter_map(|m| m["channel"].as_str()).collect();
    assert_eq!(channels, vec!["whatsapp", "sms"]);
    // The reply goes where the contact last wrote (SMS) unless the agent picks another.
    let r = send(&app, &contact, json!({"text": "got it"})).await;
    assert_eq!(r.json["channel"], "sms", "{}", r.text);
    let r = send(
        &app,
        &contact,
        json!({"channel": "whatsapp", "text": "also here"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["channel"], "whatsapp");
    app.eventually("both sent", || async {
        sms.sim.sent().len() == 1 && wa.sim.sent().len() == 1
    })
    .await;
}

#[tokio::test]
async fn an_sms_conversation_joins_the_sms_accounts_queue() {
    let app = spawn_app().await;
    let sms = app.sms().await;
    let queue = |body: Value| {
        let app = &app;
        async move {
            let r = app.post("/api/v1/queues", &app.admin.token, &body).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            r.json["id"].as_str().expect("id").to_owned()
        }
    };
    queue(json!({"name": "WhatsApp only", "channels": ["whatsapp"]})).await;
    let texts = queue(json!({"name": "Texts", "channels": ["sms"]})).await;
    let vip = queue(json!({"name": "VIP texts", "channels": ["sms"]})).await;
    // No default: the first queue that takes SMS.
    writes(&sms, "+13105550142", "first").await;
    let queued_in = |phone: &'static str| {
        let app = &app;
        async move {
            sqlx::query_scalar::<_, Option<uuid::Uuid>>(
                "SELECT i.queue_id FROM interactions i JOIN channel_identities c
                   ON c.contact_id = i.contact_id AND c.address = $1",
            )
            .bind(phone)
            .fetch_optional(&app.db)
            .await
            .ok()
            .flatten()
            .flatten()
            .map(|q| q.to_string())
        }
    };
    app.eventually("the SMS chat joined the SMS queue", || async {
        queued_in("+13105550142").await.as_deref() == Some(texts.as_str())
    })
    .await;
    // The account's default queue comes first.
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{}", sms.account_id),
            &app.admin.token,
            &json!({"default_queue_id": vip}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    writes(&sms, "+13105550143", "second").await;
    app.eventually("the next one joined the account's queue", || async {
        queued_in("+13105550143").await.as_deref() == Some(vip.as_str())
    })
    .await;
}

#[tokio::test]
async fn an_mms_picture_becomes_an_attachment_of_its_message() {
    let app = spawn_app().await;
    let sms = app.sms().await;
    let (sid, status) = sms
        .sim
        .contact_sends_media(
            "+13105550142",
            Some("the damaged box"),
            crate::attachments::PNG.to_vec(),
            "image/png",
        )
        .await
        .expect("mms");
    assert_eq!(status, 200);
    let contact = contact_of(&app, "+13105550142").await;
    app.eventually("the picture was fetched", || async {
        transcript(&app, &contact).await.iter().any(|m| {
            m["provider_message_id"] == sid.as_str()
                && m["attachments"][0]["mime_type"] == "image/png"
        })
    })
    .await;
    let msg = transcript(&app, &contact)
        .await
        .into_iter()
        .find(|m| m["provider_message_id"] == sid.as_str())
        .expect("mms");
    assert_eq!(msg["text"], "the damaged box");
    // The bytes are Parley's own now, served from its attachments.
    let att = msg["attachments"][0]["id"].as_str().expect("attachment");
    let res = app
        .client
        .get(app.url(&format!("/api/v1/attachments/{att}")))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("download");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.bytes().await.expect("bytes").as_ref(),
        crate::attachments::PNG
    );
    // A media URL anywhere but the provider's API host is never fetched.
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let status = sms
        .sim
        .post_signed(
            &app.url(&sms.webhook_path),
            &[
                p("MessageSid", &format!("MM{}", "9".repeat(32))),
                p("From", "+13105550142"),
                p("To", &sms.sim.number()),
                p("NumMedia", "1"),
                p("MediaUrl0", "http://169.254.169.254/latest/meta-data/"),
                p("MediaContentType0", "image/png"),
            ],
        )
        .await
        .expect("post");
    assert_eq!(status, 200);
    app.eventually("the foreign URL was refused", || async {
        sqlx::query_scalar::<_, String>(
            "SELECT state FROM media_downloads WHERE media_id LIKE 'http://169.254%'",
        )
        .fetch_optional(&app.db)
        .await
        .ok()
        .flatten()
        .as_deref()
            == Some("failed")
    })
    .await;
}

#[tokio::test]
async fn an_image_goes_out_as_mms_by_a_signed_link_only_twilio_can_use() {
    let app = spawn_app().await;
    let sms = app.sms().await;
    writes(&sms, "+13105550142", "can you send the label?").await;
    let contact = contact_of(&app, "+13105550142").await;
    let up = crate::attachments::upload(
        &app,
        &app.agent.token,
        crate::attachments::PNG.to_vec(),
        "label.png",
        "image/png",
    )
    .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text);
    let att = up.json["id"].as_str().expect("id").to_owned();
    let r = send(
        &app,
        &contact,
        json!({"channel": "sms", "attachment_id": att, "caption": "here it is"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_owned();
    wait_status(&app, &contact, &id, "delivered").await;
    let sent = sms.sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, "here it is");
    // Twilio fetched the very bytes, with their type, from Parley's link.
    assert_eq!(
        sent[0].media,
        vec![("image/png".to_owned(), crate::attachments::PNG.to_vec())]
    );
    let link = sent[0].media_urls[0].clone();
    assert!(
        link.starts_with(&app.url(&format!("{}/media/{att}?expires=", sms.webhook_path))),
        "{link}"
    );
    // The link works as given and not otherwise: another signature, another
    // attachment, a later expiry, no signature.
    let get = |url: String| {
        let client = app.client.clone();
        async move { client.get(url).send().await.expect("get").status() }
    };
    assert_eq!(get(link.clone()).await, StatusCode::OK);
    let (base, sig) = link.split_once("&sig=").expect("sig");
    let mut forged = sig.to_owned();
    let last = if forged.ends_with('A') { 'B' } else { 'A' };
    forged.pop();
    forged.push(last);
    assert_eq!(
        get(format!("{base}&sig={forged}")).await,
        StatusCode::FORBIDDEN
    );
    let other = uuid::Uuid::new_v4().to_string();
    assert_eq!(get(link.replace(&att, &other)).await, StatusCode::FORBIDDEN);
    let (_, expires) = base.split_once("expires=").expect("expires");
    let later: i64 = expires.parse::<i64>().expect("number") + 1;
    assert_eq!(
        get(link.replace(&format!("expires={expires}"), &format!("expires={later}"))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(base.to_owned()).await, StatusCode::BAD_REQUEST);
}
