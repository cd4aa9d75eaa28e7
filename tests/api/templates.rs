//! Notification templates: the seed's appointment proposal (auto-filled name, image
//! header, Yes/No buttons) rendered, sent through the simulator and answered; WhatsApp's
//! rules; sync with the provider; standard responses.

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TestApp, Wa, read_reply, spawn_app};

use crate::attachments::{PNG, upload};

pub(crate) fn appointment() -> Value {
    json!({
        "name": "appointment_proposal", "language": "en", "category": "utility", "status": "approved",
        "components": [
            {"type": "HEADER", "format": "IMAGE"},
            {"type": "BODY", "text": "Hello {{1}}, we can offer you an appointment on {{2}}. Does that suit you?",
             "example": {"body_text": [["Ana", "Monday at 10:00"]]}},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [
                {"type": "QUICK_REPLY", "text": "Yes", "payload": "APPT_YES"},
                {"type": "QUICK_REPLY", "text": "No", "payload": "APPT_NO"}]}
        ],
        "bindings": {"1": {"bind": "contact.attributes.preferred_name"}}
    })
}

/// The provider's copy of the same template.
pub(crate) fn at_provider(status: &str) -> Value {
    json!({"name": "appointment_proposal", "language": "en", "status": status, "category": "UTILITY",
           "id": "777000111", "components": appointment()["components"].clone()})
}

async fn create(app: &TestApp, body: &Value) -> test_support::Reply {
    app.post("/api/v1/templates", &app.supervisor.token, body)
        .await
}

async fn sim_inbound(wa: &Wa, app: &TestApp, body: Value) {
    let r = app
        .client
        .post(format!("{}/_sim/inbound", wa.sim_base))
        .json(&body)
        .send()
        .await
        .expect("sim");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["gateway_status"], 200, "{v}");
}

async fn contact_id_for(app: &TestApp, digits: &str) -> String {
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT contact_id FROM channel_identities WHERE address = $1")
            .bind(format!("+{digits}"))
            .fetch_one(&app.db)
            .await
            .expect("contact");
    id.to_string()
}

async fn notify(app: &TestApp, contact: &str, key: &str, body: &Value) -> test_support::Reply {
    let res = app
        .client
        .post(app.url(&format!("/api/v1/contacts/{contact}/notifications")))
        .bearer_auth(&app.agent.token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("send");
    read_reply(res).await
}

fn fields_of(r: &test_support::Reply) -> Vec<String> {
    r.json["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_seed_appointment_proposal_renders_sends_and_its_yes_comes_back() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim.set_template(at_provider("APPROVED"));
    let r = create(&app, &appointment()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let template = r.json["id"].as_str().expect("id").to_owned();
    assert_eq!(r.json["fields"][0]["key"], "1");
    assert_eq!(
        r.json["fields"][0]["bind"],
        "contact.attributes.preferred_name"
    );
    // Two contacts write in; one has the attribute.
    sim_inbound(
        &wa,
        &app,
        json!({"from": "14155552671", "name": "Ana Lima", "text": "hi"}),
    )
    .await;
    sim_inbound(
        &wa,
        &app,
        json!({"from": "14155552672", "name": "Bo", "text": "hello"}),
    )
    .await;
    let ana = contact_id_for(&app, "14155552671").await;
    let bo = contact_id_for(&app, "14155552672").await;
    let r = app
        .patch(
            &format!("/api/v1/contacts/{ana}"),
            &app.agent.token,
            &json!({"attributes": {"preferred_name": "Ana"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let render = |contact: String, fields: Value| {
        let app = &app;
        let template = template.clone();
        async move {
            app.post(
                &format!("/api/v1/templates/{template}/render"),
                &app.agent.token,
                &json!({"contact_id": contact, "fields": fields}),
            )
            .await
        }
    };
    let r = render(ana.clone(), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["body"],
        "Hello Ana, we can offer you an appointment on {{2}}. Does that suit you?"
    );
    assert_eq!(r.json["fields"][0]["source"], "contact_data");
    assert_eq!(r.json["blank"], json!(["2"]));
    assert_eq!(r.json["header_media"], "IMAGE");
    assert_eq!(r.json["buttons"][0]["payload"], "APPT_YES");
    let r = render(bo.clone(), json!({})).await;
    assert_eq!(
        r.json["blank"],
        json!(["1", "2"]),
        "Bo has no preferred_name"
    );
    let r = render(bo.clone(), json!({"1": "Bo", "2": "Friday"})).await;
    assert_eq!(r.json["blank"], json!([]));
    assert_eq!(r.json["fields"][0]["source"], "agent_input");
    let r = render(ana.clone(), json!({"3": "x"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields_of(&r), vec!["fields.3"]);

    // Refusals: a blank field, a missing image; nothing is sent.
    let r = notify(&app, &ana, "n0", &json!({"template_id": template})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let f = fields_of(&r);
    assert!(
        f.contains(&"fields.2".to_owned()) && f.contains(&"header_image_attachment_id".to_owned()),
        "{f:?}"
    );
    let img = upload(
        &app,
        &app.agent.token,
        PNG.to_vec(),
        "offer.png",
        "image/png",
    )
    .await;
    let img = img.json["id"].as_str().expect("attachment").to_owned();
    let send = json!({"template_id": template, "fields": {"2": "Monday at 10:00"}, "header_image_attachment_id": img});
    let r = notify(&app, &ana, "n1", &send).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["kind"], "template");
    let again = notify(&app, &ana, "n1", &send).await;
    assert_eq!(again.json["id"], r.json["id"], "same key: sent once");
    let notification = r.json["id"].as_str().expect("id").to_owned();
    app.eventually("the template reached the provider", || async {
        wa.sim.sent().iter().any(|m| m["type"] == "template")
    })
    .await;
    let sent: Vec<Value> = wa
        .sim
        .sent()
        .into_iter()
        .filter(|m| m["type"] == "template")
        .collect();
    assert_eq!(sent.len(), 1);
    let media_id = sent[0]["template"]["components"][0]["parameters"][0]["image"]["id"].clone();
    assert!(
        media_id.as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        sent[0]
    );
    assert_eq!(
        sent[0],
        json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "14155552671",
            "biz_opaque_callback_data": notification, "type": "template",
            "template": {"name": "appointment_proposal", "language": {"code": "en"}, "components": [
                {"type": "header", "parameters": [{"type": "image", "image": {"id": media_id}}]},
                {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "Monday at 10:00"}]},
                {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "APPT_YES"}]},
                {"type": "button", "sub_type": "quick_reply", "index": "1", "parameters": [{"type": "payload", "payload": "APPT_NO"}]}
            ]}
        })
    );
    // The transcript shows the rendered notification with its image and buttons.
    let wamid = {
        let mut found = None;
        for _ in 0..100 {
            let m = app
                .get(
                    &format!("/api/v1/contacts/{ana}/messages"),
                    &app.agent.token,
                )
                .await;
            found = m.json["items"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"] == notification.as_str()).cloned())
                .filter(|x| x["provider_message_id"].is_string());
            if found.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let n = found.expect("the notification in the transcript, sent");
        assert_eq!(
            n["text"],
            "Hello Ana, we can offer you an appointment on Monday at 10:00. Does that suit you?\n\nReply STOP to opt out"
        );
        assert_eq!(n["payload"]["buttons"][1]["text"], "No");
        assert_eq!(n["attachments"][0]["id"], img.as_str());
        n["provider_message_id"].as_str().expect("wamid").to_owned()
    };
    // Ana taps "Yes".
    sim_inbound(
        &wa,
        &app,
        json!({"from": "14155552671", "name": "Ana Lima", "message": {
            "type": "button", "button": {"payload": "APPT_YES", "text": "Yes"},
            "context": {"from": "15550001111", "id": wamid}}}),
    )
    .await;
    let m = app
        .get(
            &format!("/api/v1/contacts/{ana}/messages"),
            &app.agent.token,
        )
        .await;
    let tap = m.json["items"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["kind"] == "button").cloned())
        .expect("the tap in the transcript");
    assert_eq!(tap["text"], "Yes");
    assert_eq!(tap["payload"]["payload"], "APPT_YES");
    assert_eq!(
        tap["reply_to_id"],
        notification.as_str(),
        "linked to the notification it answers"
    );
}

#[tokio::test]
async fn templates_are_refused_unless_approved_known_and_to_a_connected_contact() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let mut t = appointment();
    t["components"] = json!([{"type": "BODY", "text": "Your order {{1}} has shipped.",
                               "example": {"body_text": [["A-1"]]}}]);
    t["name"] = json!("order_shipped");
    t["status"] = json!("pending");
    t["bindings"] = json!({});
    let r = create(&app, &t).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_owned();
    // A contact we never heard from on WhatsApp.
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "Cold", "identities": [{"channel": "whatsapp", "address": "+14155550199"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let cold = r.json["id"].as_str().expect("id").to_owned();
    sim_inbound(
        &wa,
        &app,
        json!({"from": "14155552671", "name": "Ana", "text": "hi"}),
    )
    .await;
    let ana = contact_id_for(&app, "14155552671").await;
    let body = json!({"template_id": id, "fields": {"1": "A-1"}});
    let r = notify(&app, &ana, "a", &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("pending"), "{}", r.text);
    let r = app
        .patch(
            &format!("/api/v1/templates/{id}"),
            &app.supervisor.token,
            &json!({"status": "approved"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = notify(&app, &cold, "b", &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("Connect and Validate"), "{}", r.text);
    // A sync that does not list it: unknown to the provider, refused.
    let r = app
        .post(
            &format!("/api/v1/channel-accounts/{}/templates/sync", wa.account_id),
            &app.admin.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["unknown_to_provider"], json!(["order_shipped (en)"]));
    let r = notify(&app, &ana, "c", &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("provider does not know"), "{}", r.text);
    assert!(
        !wa.sim.sent().iter().any(|m| m["type"] == "template"),
        "nothing was sent"
    );
    // Agents read templates but cannot write them.
    let r = app
        .post("/api/v1/templates", &app.agent.token, &appointment())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .get("/api/v1/templates?status=approved", &app.agent.token)
        .await;
    let names: Vec<&str> = r
        .json
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["order_shipped", "parley_connect_optin"],
        "the sync brought the opt-in"
    );
}

#[tokio::test]
async fn a_sync_brings_the_providers_templates_and_marks_a_rejection() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim.set_template(at_provider("APPROVED"));
    let sync = || async {
        app.post(
            &format!("/api/v1/channel-accounts/{}/templates/sync", wa.account_id),
            &app.admin.token,
            &json!({}),
        )
        .await
    };
    let r = sync().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["synced"], 2,
        "the opt-in template and the appointment"
    );
    assert_eq!(r.json["created"], 2);
    let list = app.get("/api/v1/templates", &app.agent.token).await;
    let appt = list
        .json
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|t| t["name"] == "appointment_proposal")
                .cloned()
        })
        .expect("synced");
    assert_eq!(appt["status"], "approved");
    assert_eq!(appt["category"], "utility");
    assert_eq!(appt["known_to_provider"], true);
    let id = appt["id"].as_str().expect("id").to_owned();
    // Bind the name, then the provider rejects the template.
    let r = app
        .patch(
            &format!("/api/v1/templates/{id}"),
            &app.supervisor.token,
            &json!({"bindings": {"1": {"bind": "contact.first_name"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut rejected = at_provider("REJECTED");
    rejected["rejected_reason"] = json!("INVALID_FORMAT");
    wa.sim.set_template(rejected);
    let r = sync().await;
    assert_eq!(r.json["created"], 0);
    let t = app
        .get(&format!("/api/v1/templates/{id}"), &app.agent.token)
        .await;
    assert_eq!(t.json["status"], "rejected");
    assert_eq!(t.json["provider_status"], "REJECTED");
    assert_eq!(t.json["rejected_reason"], "INVALID_FORMAT");
    assert_eq!(
        t.json["bindings"]["1"]["bind"], "contact.first_name",
        "our bindings survive a sync"
    );
    let (_, [other_admin, ..]) = app.other_tenant().await;
    let r = app
        .post(
            &format!("/api/v1/channel-accounts/{}/templates/sync", wa.account_id),
            &other_admin.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_templates_get_422s_that_name_component_and_rule() {
    let app = spawn_app().await;
    let mut t = appointment();
    t["components"][1]["text"] = json!("{{1}} hello {{3}}");
    t["components"][3]["buttons"][0]["payload"] = json!("p".repeat(300));
    t["components"][3]["buttons"][1]["text"] = json!("No, not on that day, sorry");
    t["bindings"] = json!({"1": {"bind": "contact.shoe_size"}, "9": {"bind": "contact.name"}});
    t["category"] = json!("spam");
    let r = create(&app, &t).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let f = fields_of(&r);
    for want in [
        "category",
        "components[1].text",
        "components[3].buttons[0].payload",
        "components[3].buttons[1].text",
    ] {
        assert!(f.contains(&want.to_owned()), "{want} missing from {f:?}");
    }
    assert!(r.text.contains("may not start with a field"), "{}", r.text);
    assert!(r.text.contains("without gaps"), "{}", r.text);
    // Bindings are checked against a valid template.
    let mut t = appointment();
    t["bindings"] = json!({"1": {"bind": "contact.shoe_size"}, "9": {"bind": "contact.name"}});
    let r = create(&app, &t).await;
    let f = fields_of(&r);
    assert!(
        f.contains(&"bindings.1.bind".to_owned()) && f.contains(&"bindings.9".to_owned()),
        "{f:?}"
    );
    let r = create(&app, &appointment()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = create(&app, &appointment()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "same name and language");
    // A 20 MB header image never becomes an attachment.
    let big = upload(
        &app,
        &app.agent.token,
        vec![0u8; 20 * 1024 * 1024],
        "big.png",
        "image/png",
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn standard_responses_are_searched_and_filled() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/standard-responses",
            &app.supervisor.token,
            &json!({"name": "Greeting", "category": "openers", "shortcut": "/hi",
                    "text": "Hi {{first_name}}, I'm {{agent}}. How can I help?",
                    "bindings": {"first_name": {"bind": "contact.first_name", "default": "there"},
                                 "agent": {"bind": "agent.first_name"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_owned();
    let r = app
        .post(
            "/api/v1/standard-responses",
            &app.supervisor.token,
            &json!({"name": "Bye", "text": "Thanks for writing, {{name}}!", "bindings": {"nme": {"bind": "contact.name"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields_of(&r), vec!["bindings.nme"]);
    let r = app
        .post(
            "/api/v1/standard-responses",
            &app.agent.token,
            &json!({"name": "Mine", "text": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .get("/api/v1/standard-responses?q=help", &app.agent.token)
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1));
    let r = app
        .get("/api/v1/standard-responses?q=%2Fhi", &app.agent.token)
        .await;
    assert_eq!(r.json[0]["id"], id.as_str());
    let r = app
        .get("/api/v1/standard-responses?q=nothing", &app.agent.token)
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(0));
    let got = app.inbound("+14155552671", "hello").await;
    sqlx::query("UPDATE contacts SET name = 'Ana Lima' WHERE id = $1")
        .bind(got.contact_id.0)
        .execute(&app.db)
        .await
        .expect("name");
    let r = app
        .post(
            &format!("/api/v1/standard-responses/{id}/render"),
            &app.agent.token,
            &json!({"contact_id": got.contact_id.0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.json["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("Hi Ana, I'm ")),
        "{}",
        r.json
    );
    assert_eq!(r.json["blank"], json!([]));
    let (_, [.., other_agent]) = app.other_tenant().await;
    let r = app
        .get(
            &format!("/api/v1/standard-responses/{id}"),
            &other_agent.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_template_status_webhook_updates_the_template() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim.set_template(at_provider("APPROVED"));
    let r = app
        .post(
            &format!("/api/v1/channel-accounts/{}/templates/sync", wa.account_id),
            &app.admin.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA-SIM", "changes": [{"field": "message_template_status_update", "value": {
            "event": "PAUSED", "message_template_id": 777000111,
            "message_template_name": "appointment_proposal", "message_template_language": "en",
            "reason": "LOW_QUALITY"}}]}]
    }))
    .expect("json");
    let sig = channel_connector::signature::sign(wa.app_secret.as_bytes(), &body);
    let res = app
        .client
        .post(app.url(&wa.webhook_path))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(res.status(), StatusCode::OK);
    let list = app.get("/api/v1/templates", &app.agent.token).await;
    let t = list
        .json
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|t| t["name"] == "appointment_proposal")
                .cloned()
        })
        .expect("template");
    assert_eq!(t["status"], "paused");
    assert_eq!(t["provider_status"], "PAUSED");
    assert_eq!(t["rejected_reason"], "LOW_QUALITY");
    let opt_in = list
        .json
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|t| t["name"] == "parley_connect_optin")
                .cloned()
        })
        .expect("opt-in");
    assert_eq!(
        opt_in["status"], "approved",
        "only the named template changes"
    );
}
