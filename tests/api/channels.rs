//! The channel contract suite: the same checks run against every provider with its
//! simulator. Adding a provider means a module, a simulator, and a `Harness` arm here
//! (the `contract!` list at the bottom then runs every check for it).

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Sms, TestApp, Wa, spawn_app};

/// One provider, set up on a fresh app with its simulator.
enum Harness {
    Whatsapp(Wa),
    Sms(Sms),
}

const CONTACT: &str = "+13105550142";

impl Harness {
    async fn new(app: &TestApp, provider: &str) -> Self {
        match provider {
            "whatsapp" => Self::Whatsapp(app.whatsapp().await),
            "twilio_sms" => Self::Sms(app.sms().await),
            other => panic!("no harness for {other}"),
        }
    }

    fn channel(&self) -> &'static str {
        match self {
            Self::Whatsapp(_) => "whatsapp",
            Self::Sms(_) => "sms",
        }
    }

    fn webhook_path(&self) -> &str {
        match self {
            Self::Whatsapp(w) => &w.webhook_path,
            Self::Sms(s) => &s.webhook_path,
        }
    }

    /// The contact writes `text` (again with the same provider id when `id` is given, as
    /// a redelivery does); the provider's message id and the gateway's answer.
    async fn contact_writes(&self, text: &str, id: Option<&str>) -> (String, u16) {
        match self {
            Self::Whatsapp(w) => {
                let mut m = json!({"type": "text", "text": {"body": text}});
                if let Some(id) = id {
                    m["id"] = json!(id);
                }
                w.sim
                    .contact_sends(CONTACT, "Ana", m)
                    .await
                    .expect("webhook")
            }
            Self::Sms(s) => s
                .sim
                .contact_sends(CONTACT, text, id)
                .await
                .expect("webhook"),
        }
    }

    /// A body the provider would send, with the signature header it uses set to `sig`
    /// (or absent).
    fn forged(&self, sig: Option<&str>) -> (&'static str, &'static str, String, Option<String>) {
        match self {
            Self::Whatsapp(_) => (
                "x-hub-signature-256",
                "application/json",
                json!({"object": "whatsapp_business_account", "entry": []}).to_string(),
                sig.map(|s| format!("sha256={}", hex_of(s))),
            ),
            Self::Sms(_) => (
                "x-twilio-signature",
                "application/x-www-form-urlencoded",
                format!(
                    "MessageSid=SM{}&From=%2B13105550142&Body=forged",
                    "2".repeat(32)
                ),
                sig.map(str::to_owned),
            ),
        }
    }

    /// A signed body that is not readable as a message; what the provider expects back.
    async fn post_unreadable(&self) -> u16 {
        match self {
            Self::Whatsapp(w) => w
                .sim
                .post_webhook(&json!({"object": "whatsapp_business_account", "entry": "nonsense"}))
                .await
                .expect("post"),
            Self::Sms(s) => {
                let url = s.sim.webhook_url().expect("url");
                s.sim
                    .post_signed(&url, &[("Body".to_owned(), "no sid".to_owned())])
                    .await
                    .expect("post")
            }
        }
    }

    /// The texts the provider accepted, in order.
    fn sent_texts(&self) -> Vec<String> {
        match self {
            Self::Whatsapp(w) => w
                .sim
                .sent()
                .iter()
                .filter_map(|b| b["text"]["body"].as_str().map(str::to_owned))
                .collect(),
            Self::Sms(s) => s.sim.sent().into_iter().map(|m| m.body).collect(),
        }
    }

    /// The provider refuses the next sends as a busy or failing provider does.
    fn fail_next_transiently(&self) {
        match self {
            Self::Whatsapp(w) => w.sim.fail_next([
                whatsapp_sim::Failure {
                    status: 429,
                    code: Some(130_429),
                    hang_ms: 0,
                },
                whatsapp_sim::Failure {
                    status: 503,
                    code: None,
                    hang_ms: 0,
                },
            ]),
            Self::Sms(s) => s
                .sim
                .fail_next([sms_sim::Failure::TooMany, sms_sim::Failure::ServerError]),
        }
    }

    /// A late status (`sent`) for the provider's message `pid` to the contact.
    async fn late_sent_status(&self, pid: &str, our_id: &str) -> u16 {
        match self {
            Self::Whatsapp(w) => {
                let body = w.sim.envelope(json!({"statuses": [{
                    "id": pid, "status": "sent", "timestamp": "1", "recipient_id": "13105550142",
                    "biz_opaque_callback_data": our_id,
                }]}));
                w.sim.post_webhook(&body).await.expect("status")
            }
            Self::Sms(s) => {
                let sent = s
                    .sim
                    .sent()
                    .into_iter()
                    .find(|m| m.sid == pid)
                    .expect("sent");
                s.sim.status(&sent, "sent", None).await.expect("status")
            }
        }
    }
}

/// Hex of a short string, for a well-formed but wrong `sha256=` header.
fn hex_of(s: &str) -> String {
    let mut h: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    while h.len() < 64 {
        h.push('0');
    }
    h.truncate(64);
    h
}

async fn contact_of(app: &TestApp) -> String {
    app.contact_id_of(CONTACT).await
}

async fn transcript(app: &TestApp, contact: &str) -> Vec<Value> {
    app.transcript_of(contact).await
}

/// Wait until message `id` is `want` or further (a provider that reports reads moves on
/// from `delivered` to `read` at once).
async fn wait_status(app: &TestApp, contact: &str, id: &str, want: &str) -> Value {
    let rank = |s: &str| {
        ["queued", "sent", "delivered", "read"]
            .iter()
            .position(|x| *x == s)
    };
    app.eventually(&format!("message {id} to be {want}"), || async {
        transcript(app, contact)
            .await
            .iter()
            .any(|m| m["id"] == id && rank(m["status"].as_str().unwrap_or_default()) >= rank(want))
    })
    .await;
    transcript(app, contact)
        .await
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or(Value::Null)
}

async fn reply(app: &TestApp, h: &Harness, contact: &str, text: &str, key: Option<&str>) -> String {
    let mut req = app
        .client
        .post(app.url(&format!("/api/v1/contacts/{contact}/messages")))
        .bearer_auth(&app.agent.token)
        .json(&json!({"channel": h.channel(), "text": text}));
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = test_support::read_reply(req.send().await.expect("send")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    r.json["id"].as_str().expect("id").to_owned()
}

async fn forged_or_missing_signatures_store_nothing(provider: &str) {
    let app = spawn_app().await;
    let h = Harness::new(&app, provider).await;
    for (sig, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("not-the-signature"), StatusCode::FORBIDDEN),
    ] {
        let (header, content_type, body, value) = h.forged(sig);
        let mut req = app
            .client
            .post(app.url(h.webhook_path()))
            .header("content-type", content_type)
            .body(body);
        if let Some(v) = value {
            req = req.header(header, v);
        }
        let status = req.send().await.expect("post").status();
        // (WhatsApp answers a wrong signature 401 as well: both are refusals.)
        assert!(
            status == want || (status == StatusCode::UNAUTHORIZED && provider == "whatsapp"),
            "{provider}: {status}"
        );
    }
    let r = app
        .get("/api/v1/contacts?q=13105550142", &app.agent.token)
        .await;
    assert_eq!(r.json["items"], json!([]), "{provider}");
}

async fn a_redelivered_webhook_is_stored_once(provider: &str) {
    let app = spawn_app().await;
    let h = Harness::new(&app, provider).await;
    let (id, status) = h.contact_writes("hello once", None).await;
    assert_eq!(status, 200);
    let (_, status) = h.contact_writes("hello once", Some(&id)).await;
    assert_eq!(status, 200);
    let contact = contact_of(&app).await;
    let msgs = transcript(&app, &contact).await;
    assert_eq!(msgs.len(), 1, "{provider}: {msgs:?}");
    assert_eq!(msgs[0]["channel"], h.channel());
}

async fn a_retried_send_request_sends_once(provider: &str) {
    let app = spawn_app().await;
    let h = Harness::new(&app, provider).await;
    h.contact_writes("hi", None).await;
    let contact = contact_of(&app).await;
    let first = reply(&app, &h, &contact, "only once", Some("key-1")).await;
    let again = reply(&app, &h, &contact, "only once", Some("key-1")).await;
    assert_eq!(first, again, "{provider}");
    wait_status(&app, &contact, &first, "delivered").await;
    assert_eq!(h.sent_texts(), vec!["only once"], "{provider}");
}

async fn transient_refusals_are_retried_in_order(provider: &str) {
    let app = spawn_app().await;
    let h = Harness::new(&app, provider).await;
    h.contact_writes("hi", None).await;
    let contact = contact_of(&app).await;
    h.fail_next_transiently();
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(reply(&app, &h, &contact, text, None).await);
    }
    for id in &ids {
        wait_status(&app, &contact, id, "delivered").await;
    }
    assert_eq!(h.sent_texts(), vec!["one", "two", "three"], "{provider}");
}

async fn statuses_never_move_backwards(provider: &str) {
    let app = spawn_app().await;
    let h = Harness::new(&app, provider).await;
    h.contact_writes("hi", None).await;
    let contact = contact_of(&app).await;
    let id = reply(&app, &h, &contact, "status check", None).await;
    let done = wait_status(&app, &contact, &id, "delivered").await;
    let pid = done["provider_message_id"]
        .as_str()
        .expect("pid")
        .to_owned();
    assert_eq!(h.late_sent_status(&pid, &id).await, 200);
    let after = transcript(&app, &contact).await;
    let status = &after.iter().find(|m| m["id"] == id.as_str()).expect("msg")["status"];
    assert!(
        status == "delivered" || status == "read",
        "{provider}: {status}"
    );
}

async fn an_unreadable_body_is_kept_and_answered_as_the_provider_expects(provider: &str) {
    let app = spawn_app().await;
    let h = Harness::new(&app, provider).await;
    assert_eq!(h.post_unreadable().await, 200, "{provider}");
    let account = match &h {
        Harness::Whatsapp(w) => w.account_id,
        Harness::Sms(s) => s.account_id,
    };
    let r = app
        .get(
            &format!("/api/v1/channel-accounts/{account}/dead-letters"),
            &app.admin.token,
        )
        .await;
    assert_eq!(
        r.json.as_array().map(Vec::len),
        Some(1),
        "{provider}: {}",
        r.text
    );
}

async fn the_reply_window_is_the_channels(provider: &str) {
    let app = spawn_app().await;
    let h = Harness::new(&app, provider).await;
    h.contact_writes("hi", None).await;
    let contact = contact_of(&app).await;
    sqlx::query(
        "UPDATE channel_identities SET last_inbound_at = now() - interval '25 hours'
         WHERE contact_id = $1::uuid",
    )
    .bind(&contact)
    .execute(&app.db)
    .await
    .expect("age the window");
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": h.channel(), "text": "a day later"}),
        )
        .await;
    match h {
        // WhatsApp: free-form only within 24 hours of the contact's last message.
        Harness::Whatsapp(_) => {
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
            assert_eq!(r.json["code"], "whatsapp_window_closed");
            assert!(h.sent_texts().is_empty());
        }
        // SMS has no window.
        Harness::Sms(_) => assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text),
    }
}

macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod whatsapp {
            $(#[tokio::test] async fn $check() { super::$check("whatsapp").await })*
        }
        mod twilio_sms {
            $(#[tokio::test] async fn $check() { super::$check("twilio_sms").await })*
        }
    };
}

contract!(
    forged_or_missing_signatures_store_nothing,
    a_redelivered_webhook_is_stored_once,
    a_retried_send_request_sends_once,
    transient_refusals_are_retried_in_order,
    statuses_never_move_backwards,
    an_unreadable_body_is_kept_and_answered_as_the_provider_expects,
    the_reply_window_is_the_channels,
);
