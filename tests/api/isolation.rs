//! Tenant isolation over every route, generated from the OpenAPI document: tenant B's
//! admin, aimed at tenant A's objects, gets 404 everywhere (never 403, never data);
//! B's lists and searches never carry A's rows; A's objects are unchanged afterwards; and
//! B's event stream carries nothing of A's. A route added later without an entry here
//! fails the test, so isolation is decided for it on purpose.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::{In, Reply, TestApp, read_reply, spawn_app};

use crate::attachments::{PNG, upload};
use crate::events::{Ws, connect};

/// A's objects, by the path parameter that names them.
pub(crate) struct Objects {
    pub(crate) ids: BTreeMap<&'static str, String>,
    /// Strings that only A's data contains: ids, names, message text, secrets.
    pub(crate) markers: Vec<String>,
}

const A_NAME: &str = "Alphonse Isolation-Marker";
const A_TEXT: &str = "alpha-isolation-text";

pub(crate) async fn seed_a(app: &TestApp) -> Objects {
    let wa = app.whatsapp().await;
    let r = app
        .client
        .post(format!("{}/_sim/inbound", wa.sim_base))
        .json(&json!({"from": "+14155550101", "name": A_NAME, "text": A_TEXT}))
        .send()
        .await
        .expect("sim");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["gateway_status"], 200, "{v}");
    let (contact, identity, interaction, message): (
        uuid::Uuid,
        uuid::Uuid,
        uuid::Uuid,
        uuid::Uuid,
    ) = sqlx::query_as(
        "SELECT m.contact_id, i.id, m.interaction_id, m.id
             FROM messages m JOIN channel_identities i ON i.contact_id = m.contact_id
             WHERE m.tenant_id = $1 AND m.body = $2",
    )
    .bind(app.tenant.0)
    .bind(A_TEXT)
    .fetch_one(&app.db)
    .await
    .expect("A's message");
    let created = |r: Reply| {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_str().expect("id").to_owned()
    };
    let attachment = created(
        upload(
            app,
            &app.agent.token,
            PNG.to_vec(),
            "alpha.png",
            "image/png",
        )
        .await,
    );
    let queue = created(
        app.post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Alpha queue", "channels": ["whatsapp"]}),
        )
        .await,
    );
    let template = created(
        app.post(
            "/api/v1/templates",
            &app.supervisor.token,
            &json!({"name": "alpha_notice", "language": "en", "category": "utility", "status": "approved",
                    "components": [{"type": "BODY", "text": "Hello {{1}}, welcome.", "example": {"body_text": [["Ana"]]}}]}),
        )
        .await,
    );
    let response = created(
        app.post(
            "/api/v1/standard-responses",
            &app.supervisor.token,
            &json!({"name": "Alpha greeting", "text": "Hi {{name}}", "bindings": {"name": {"bind": "contact.name"}}}),
        )
        .await,
    );
    let r = app
        .post(
            "/api/v1/not-ready-reasons",
            &app.admin.token,
            &json!({"code": "alpha_break", "label": "Alpha break"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // A dead letter: a signed body that cannot be read.
    let junk = b"alpha dead letter".to_vec();
    let r = app
        .client
        .post(app.url(&wa.webhook_path))
        .header(
            "x-hub-signature-256",
            channel_connector::signature::sign(wa.app_secret.as_bytes(), &junk),
        )
        .body(junk)
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.status(), StatusCode::OK);
    let dead_letter: i64 = sqlx::query_scalar(
        "SELECT id FROM webhook_dead_letters WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(app.tenant.0)
    .fetch_one(&app.db)
    .await
    .expect("dead letter");

    let mut ids = BTreeMap::new();
    ids.insert("dead_letter_id", dead_letter.to_string());
    ids.insert("contact_id", contact.to_string());
    ids.insert("identity_id", identity.to_string());
    ids.insert("interaction_id", interaction.to_string());
    ids.insert("message_id", message.to_string());
    ids.insert("attachment_id", attachment);
    ids.insert("account_id", wa.account_id.to_string());
    ids.insert("channel_account_id", wa.account_id.to_string());
    ids.insert("queue_id", queue);
    ids.insert("template_id", template);
    ids.insert("response_id", response);
    ids.insert("user_id", app.agent.id.to_string());
    ids.insert("code", "alpha_break".to_owned());
    let mut markers: Vec<String> = ids
        .iter()
        // Not unique enough to look for: a short word and a small number.
        .filter(|(k, _)| !matches!(**k, "code" | "dead_letter_id"))
        .map(|(_, v)| v.clone())
        .collect();
    markers.extend([
        A_NAME.to_owned(),
        A_TEXT.to_owned(),
        "Alpha queue".to_owned(),
        "alpha_notice".to_owned(),
        "Alpha greeting".to_owned(),
        "Alpha break".to_owned(),
        app.tenant.to_string(),
        app.agent.email.clone(),
        wa.app_secret.clone(),
    ]);
    Objects { ids, markers }
}

/// A body that would be valid for the operation, so that only the object's tenant can be
/// the reason for a refusal. `None`: no body. Panics for an operation this test does not
/// know yet.
pub(crate) fn body_for(method: &str, path: &str, b_user: &str) -> Option<Value> {
    match (method, path) {
        ("get" | "delete", _) => None,
        ("patch", "/api/v1/channel-accounts/{account_id}") => Some(json!({"name": "hijacked"})),
        ("post", "/api/v1/channel-accounts/{account_id}/templates/sync") => None,
        ("post", "/api/v1/channel-accounts/{account_id}/dead-letters/{dead_letter_id}/replay") => {
            None
        }
        ("patch", "/api/v1/contacts/{contact_id}") => Some(json!({"name": "hijacked"})),
        ("post", "/api/v1/contacts/{contact_id}/identities") => {
            Some(json!({"channel": "whatsapp", "address": "+14155550999"}))
        }
        (
            "post",
            "/api/v1/contacts/{contact_id}/identities/{identity_id}/connect"
            | "/api/v1/contacts/{contact_id}/identities/{identity_id}/validate"
            | "/api/v1/interactions/{interaction_id}/accept"
            | "/api/v1/interactions/{interaction_id}/decline"
            | "/api/v1/interactions/{interaction_id}/end",
        ) => None,
        ("post", "/api/v1/contacts/{contact_id}/interactions") => {
            Some(json!({"channel": "whatsapp"}))
        }
        (
            "post",
            "/api/v1/contacts/{contact_id}/messages"
            | "/api/v1/interactions/{interaction_id}/messages",
        ) => Some(json!({"channel": "whatsapp", "text": "hijacked"})),
        ("post", "/api/v1/contacts/{contact_id}/notifications") => {
            Some(json!({"template_id": "{template_id}", "fields": {"1": "x"}}))
        }
        ("post", "/api/v1/contacts/{contact_id}/read") => {
            Some(json!({"up_to_message_id": "{message_id}"}))
        }
        ("post", "/api/v1/interactions/{interaction_id}/done") => Some(json!({})),
        ("post", "/api/v1/interactions/{interaction_id}/transfer") => {
            Some(json!({"agent_id": b_user}))
        }
        ("put", "/api/v1/queues/{queue_id}") => {
            Some(json!({"name": "hijacked", "channels": ["whatsapp"]}))
        }
        ("patch", "/api/v1/standard-responses/{response_id}") => Some(json!({"text": "hijacked"})),
        ("patch", "/api/v1/templates/{template_id}") => Some(json!({"status": "rejected"})),
        (
            "post",
            "/api/v1/standard-responses/{response_id}/render"
            | "/api/v1/templates/{template_id}/render",
        ) => Some(json!({"contact_id": "{contact_id}"})),
        ("patch", "/api/v1/users/{user_id}") => Some(json!({"display_name": "hijacked"})),
        // Operations without an id (the role matrix calls these too).
        ("post", "/api/v1/channel-accounts") => Some(json!({
            "provider": "whatsapp", "name": "Second number", "phone_number_id": "PNID-ROLE-2",
            "waba_id": "WABA-2", "display_phone_number": "+1 555 0100", "access_token": "tok-role-2",
            "app_secret": "secret-role-2", "verify_token": "verify-role-2",
            "api_base_url": "https://graph.facebook.com/v21.0"})),
        ("post", "/api/v1/contacts") => Some(json!({"name": "Made by a role check"})),
        ("post", "/api/v1/not-ready-reasons") => {
            Some(json!({"code": "role_check", "label": "Role check"}))
        }
        ("post", "/api/v1/queues") => {
            Some(json!({"name": "Role check queue", "channels": ["whatsapp"]}))
        }
        ("post", "/api/v1/standard-responses") => {
            Some(json!({"name": "Role check", "text": "hello"}))
        }
        ("post", "/api/v1/templates") => Some(json!({"name": "role_check", "language": "en",
            "category": "utility", "components": [{"type": "BODY", "text": "Hello"}]})),
        ("post", "/api/v1/users") => Some(json!({"email": "made-by-role-check@example.test",
            "display_name": "Role check", "password": "a-long-enough-password", "role": "agent"})),
        ("put", "/api/v1/me/state") => Some(json!({"state": "ready"})),
        ("post", "/api/v1/sms/segments") => Some(json!({"text": "hello"})),
        _ => {
            panic!("{method} {path} takes an id but the isolation test has no body for it; add one")
        }
    }
}

pub(crate) fn fill(template: &str, ids: &BTreeMap<&'static str, String>) -> String {
    let mut out = template.to_owned();
    for (k, v) in ids {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

pub(crate) fn fill_value(v: &Value, ids: &BTreeMap<&'static str, String>) -> Value {
    match v {
        Value::String(s) => Value::String(fill(s, ids)),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), fill_value(v, ids)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill_value(v, ids)).collect()),
        other => other.clone(),
    }
}

pub(crate) async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Reply {
    let method: Method = method.to_uppercase().parse().expect("method");
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", format!("iso-{}", uuid::Uuid::new_v4()));
    if let Some(b) = body {
        req = req.json(b);
    }
    read_reply(req.send().await.expect("send")).await
}

fn leaks<'a>(text: &str, markers: &'a [String]) -> Vec<&'a str> {
    markers
        .iter()
        .filter(|m| text.contains(m.as_str()))
        .map(String::as_str)
        .collect()
}

/// Every frame B's socket has received so far (waiting `ms` for more).
async fn drain(ws: &mut Ws, ms: u64) -> Vec<String> {
    use futures_util::StreamExt as _;
    let mut frames = Vec::new();
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(std::time::Duration::from_millis(ms), ws.next()).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            frames.push(t.to_string());
        }
    }
    frames
}

/// The GETs whose answers must be the same for A before and after B's attempts.
const SNAPSHOTS: &[&str] = &[
    "/api/v1/contacts/{contact_id}",
    "/api/v1/contacts/{contact_id}/messages",
    "/api/v1/contacts/{contact_id}/interactions",
    "/api/v1/channel-accounts/{account_id}",
    "/api/v1/queues/{queue_id}",
    "/api/v1/templates/{template_id}",
    "/api/v1/standard-responses/{response_id}",
    "/api/v1/users/{user_id}",
    "/api/v1/not-ready-reasons",
    "/api/v1/attachments/{attachment_id}",
];

async fn snapshot(app: &TestApp, ids: &BTreeMap<&'static str, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in SNAPSHOTS {
        let path = fill(p, ids);
        let r = app.get(&path, &app.admin.token).await;
        assert_eq!(r.status, StatusCode::OK, "A's own {path}: {}", r.text);
        // Waiting times grow by themselves; everything else must stay as it was.
        let text = if r.json.is_null() {
            r.text
        } else {
            without_clocks(r.json).to_string()
        };
        out.push((path, text));
    }
    out
}

fn without_clocks(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| k != "waiting_secs" && k != "oldest_wait_secs")
                .map(|(k, v)| (k, without_clocks(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_clocks).collect()),
        other => other,
    }
}

#[tokio::test]
async fn another_tenant_gets_404_on_every_route_that_names_an_object() {
    let app = spawn_app().await;
    let a = seed_a(&app).await;
    let (b_tenant, [b_admin, _, b_agent]) = app.other_tenant().await;
    // B's own traffic, so B's lists are not trivially empty.
    app.inbound_in(
        b_tenant,
        In {
            channel: parley_core::channel::Channel::Whatsapp,
            address: "+33612345678",
            name: Some("Beatrix"),
            body: "bravo text",
            provider_id: None,
        },
    )
    .await;
    let mut b_socket = connect(&app, &b_admin.token, Some(0)).await;
    let before = snapshot(&app, &a.ids).await;

    let doc: Value =
        yaml_serde::from_str(&gateway::openapi::yaml().expect("generate")).expect("yaml");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !path.contains('{') || path.starts_with("/webhooks/") {
            // Webhooks are authenticated by the account's own signature secret (tested
            // with the channel); they take no bearer token to misuse.
            continue;
        }
        for (method, _) in item.as_object().expect("item") {
            let body =
                body_for(method, path, &b_agent.id.to_string()).map(|b| fill_value(&b, &a.ids));
            let url = fill(path, &a.ids);
            assert!(!url.contains('{'), "no id for a parameter of {path}");
            let r = send(&app, method, &url, &b_admin.token, body.as_ref()).await;
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "{} {path} as another tenant's admin: {}",
                method.to_uppercase(),
                r.text
            );
            assert_eq!(
                r.content_type(),
                "application/problem+json",
                "{method} {path}"
            );
            let leaked = leaks(&r.text, &a.markers);
            assert!(leaked.is_empty(), "{method} {path} leaked {leaked:?}");
            checked += 1;
        }
    }
    assert!(checked >= 38, "only {checked} operations checked");

    // Every list (generated: each GET without an id), then searches and filters with A's
    // words and ids as the query.
    let mut lists: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if path.starts_with("/api/v1/")
            && !path.contains('{')
            && path != "/api/v1/events"
            && let Some(op) = item.get("get")
        {
            lists.push(format!("{path}{}", required_query(op)));
        }
    }
    assert!(lists.len() >= 12, "only {} lists", lists.len());
    lists.extend([
        format!("/api/v1/contacts?q={}", urlencode(A_NAME)),
        format!("/api/v1/conversations?q={A_TEXT}"),
        format!("/api/v1/messages/search?q={A_TEXT}"),
        format!("/api/v1/interactions?agent={}", a.ids["user_id"]),
        format!("/api/v1/standard-responses?q={}", urlencode("Alpha")),
    ]);
    for path in &lists {
        let r = app.get(path, &b_admin.token).await;
        assert!(
            r.status.is_success() || r.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {}",
            r.text
        );
        let leaked = leaks(&r.text, &a.markers);
        assert!(leaked.is_empty(), "{path} leaked {leaked:?}");
    }

    // A's objects are exactly as they were.
    assert_eq!(snapshot(&app, &a.ids).await, before);

    // B's socket, open through all of the above and resumed from the start, carried
    // nothing of A's (and did carry B's own message). Events are delivered once every
    // transaction that could commit an earlier one has ended, and the suite's other tests
    // share the database server (a test holding a long transaction delays delivery): so
    // wait for B's own event rather than for a fixed while, then for anything after it.
    let mut frames = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !frames.iter().any(|f: &String| f.contains("bravo text"))
        && std::time::Instant::now() < deadline
    {
        let got = drain(&mut b_socket, 500).await;
        if got.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        frames.extend(got);
    }
    frames.extend(drain(&mut b_socket, 700).await);
    assert!(
        frames.iter().any(|f| f.contains("bravo text")),
        "B's own event missing: {frames:?}"
    );
    for f in &frames {
        let leaked = leaks(f, &a.markers);
        assert!(leaked.is_empty(), "B's socket carried {leaked:?}: {f}");
    }
}

/// Ids of tenant A inside tenant B's own requests (bodies, filters) are as unknown as in
/// a path.
#[tokio::test]
async fn another_tenant_s_ids_in_a_body_are_unknown() {
    let app = spawn_app().await;
    let a = seed_a(&app).await;
    let (b_tenant, [b_admin, b_sup, b_agent]) = app.other_tenant().await;
    let got = app
        .inbound_in(
            b_tenant,
            In {
                channel: parley_core::channel::Channel::Whatsapp,
                address: "+33612345678",
                name: Some("Beatrix"),
                body: "bravo text",
                provider_id: None,
            },
        )
        .await;
    let b_contact = got.contact_id.to_string();
    let b_interaction = got.interaction.id.to_string();
    // B's agent takes B's conversation, so that it can be transferred.
    let r = send(
        &app,
        "put",
        "/api/v1/me/state",
        &b_agent.token,
        Some(&json!({"state": "ready"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let accept = format!("/api/v1/interactions/{b_interaction}/accept");
    let mut accepted = false;
    for _ in 0..200 {
        if send(&app, "post", &accept, &b_agent.token, None)
            .await
            .status
            == StatusCode::OK
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(accepted, "B's agent never got B's conversation");
    let r = app
        .post(
            "/api/v1/templates",
            &b_sup.token,
            &json!({"name": "bravo_notice", "language": "en", "category": "utility", "status": "approved",
                    "components": [{"type": "BODY", "text": "Hi {{1}}, welcome.", "example": {"body_text": [["B"]]}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let b_template = r.json["id"].as_str().expect("id").to_owned();
    let r = app
        .post(
            "/api/v1/standard-responses",
            &b_sup.token,
            &json!({"name": "Bravo", "text": "Hi {{name}}", "bindings": {"name": {"bind": "contact.name"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let b_response = r.json["id"].as_str().expect("id").to_owned();
    let ids = &a.ids;
    // An error may name the id the caller sent; it must not carry A's data.
    let data: Vec<String> = a
        .markers
        .iter()
        .filter(|m| !ids.values().any(|v| v == *m))
        .cloned()
        .collect();
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "post",
            format!("/api/v1/templates/{b_template}/render"),
            json!({"contact_id": ids["contact_id"]}),
        ),
        (
            "post",
            format!("/api/v1/standard-responses/{b_response}/render"),
            json!({"contact_id": ids["contact_id"]}),
        ),
        (
            "post",
            format!("/api/v1/contacts/{b_contact}/notifications"),
            json!({"template_id": ids["template_id"], "fields": {"1": "x"}}),
        ),
        (
            "post",
            format!("/api/v1/contacts/{b_contact}/read"),
            json!({"up_to_message_id": ids["message_id"]}),
        ),
        (
            "post",
            format!("/api/v1/contacts/{b_contact}/messages"),
            json!({"channel": "whatsapp", "attachment_id": ids["attachment_id"]}),
        ),
        (
            "post",
            format!("/api/v1/contacts/{b_contact}/messages"),
            json!({"channel": "whatsapp", "text": "x", "identity_id": ids["identity_id"]}),
        ),
        (
            "post",
            format!("/api/v1/interactions/{b_interaction}/transfer"),
            json!({"agent_id": ids["user_id"]}),
        ),
        (
            "post",
            format!("/api/v1/interactions/{b_interaction}/transfer"),
            json!({"queue_id": ids["queue_id"]}),
        ),
    ];
    for (method, path, body) in cases {
        let r = send(&app, method, &path, &b_admin.token, Some(&body)).await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}: {} {}",
            r.status,
            r.text
        );
        let leaked = leaks(&r.text, &data);
        assert!(leaked.is_empty(), "{path} {body} leaked {leaked:?}");
    }
}

/// A valid value for a required query parameter.
pub(crate) fn query_value(name: &str) -> &'static str {
    match name {
        "from" => "2026-01-01T00:00:00Z",
        "to" => "2099-01-01T00:00:00Z",
        "q" => "hello",
        other => panic!("no value for the required query parameter {other}; add one"),
    }
}

/// `?name=value&…` for the operation's required query parameters (empty when none).
pub(crate) fn required_query(op: &Value) -> String {
    let query: Vec<String> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query" && p["required"] == true)
        .filter_map(|p| p["name"].as_str())
        .map(|n| format!("{n}={}", query_value(n)))
        .collect();
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.replace(' ', "%20")
}
