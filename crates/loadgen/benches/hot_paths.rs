//! Micro-benchmarks of the hot paths that need no database: webhook signature check and
//! parse, template validation and rendering, event serialisation. `cargo bench -p loadgen`.

use std::{collections::BTreeMap, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn webhook() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"},
            "contacts": [{"profile": {"name": "Ana Lima"}, "wa_id": "14155552671"}],
            "messages": [{"from": "14155552671", "id": "wamid.HBgLMTQxNTU1NTI2NzEVAgASGBQzQTdGRjY0", "timestamp": "1764000000",
                          "type": "text", "text": {"body": "Hello, I would like to move my appointment to Friday please."}}]
        }}]}]
    }))
    .unwrap_or_default()
}

fn webhooks(c: &mut Criterion) {
    let body = webhook();
    let secret = b"an app secret of the usual length";
    let sig = channel_connector::signature::sign(secret, &body);
    c.bench_function("webhook: verify signature + parse", |b| {
        b.iter(|| {
            let ok = channel_connector::signature::verify(secret, black_box(&body), Some(&sig));
            let env = channel_connector::whatsapp::webhook::parse(black_box(&body));
            black_box((ok.is_ok(), env.is_ok()))
        });
    });
}

fn templates(c: &mut Criterion) {
    use notification_templates::{fill, model};
    let components = json!([
        {"type": "HEADER", "format": "IMAGE"},
        {"type": "BODY", "text": "Hello {{1}}, we can offer you an appointment on {{2}} at {{3}}. Does that suit you?",
         "example": {"body_text": [["Ana", "Monday", "10:00"]]}},
        {"type": "FOOTER", "text": "Reply STOP to opt out"},
        {"type": "BUTTONS", "buttons": [
            {"type": "QUICK_REPLY", "text": "Yes", "payload": "APPT_YES"},
            {"type": "QUICK_REPLY", "text": "No", "payload": "APPT_NO"},
            {"type": "URL", "text": "Details", "url": "https://example.com/a/{{1}}", "example": ["9931"]}]}
    ]);
    c.bench_function("template: validate (strict parse)", |b| {
        b.iter(|| black_box(model::parse(black_box(&components), true).is_ok()));
    });
    let Ok(def) = model::parse(&components, true) else {
        return;
    };
    let mut bindings = fill::Bindings::new();
    bindings.insert(
        "1".into(),
        fill::Binding {
            bind: Some("contact.first_name".into()),
            default: None,
        },
    );
    let ctx = fill::Context {
        contact_name: "Ana Lima".into(),
        contact_attributes: json!({"account_number": "4411"}),
        contact_phone: Some("+14155552671".into()),
        agent_name: "Sam Agent".into(),
        now: chrono::Utc::now(),
    };
    let mut inputs = BTreeMap::new();
    inputs.insert("2".to_owned(), "Monday".to_owned());
    inputs.insert("3".to_owned(), "10:00".to_owned());
    inputs.insert("button.3".to_owned(), "9931?src=wa".to_owned());
    c.bench_function("template: render + Cloud API components", |b| {
        b.iter(|| {
            let r = fill::render(&def, &bindings, black_box(&inputs), &ctx);
            let content = fill::template_content(&def, &r, "appointment", "en", None);
            black_box(channel_connector::whatsapp::request::template_components(
                &content,
            ))
        });
    });
}

fn events(c: &mut Criterion) {
    let e = conversation_store::events::StreamEvent {
        id: 123_456,
        kind: "message.created".into(),
        payload: json!({"message": {
            "id": "01a2140b-8a9e-7d3c-9f53-0c1e1b7c2d11", "contact_id": "01a2140b-8a9e-7d3c-9f53-0c1e1b7c2d12",
            "interaction_id": "01a2140b-8a9e-7d3c-9f53-0c1e1b7c2d13", "channel": "whatsapp", "direction": "inbound",
            "sender": {"type": "contact", "user_id": null}, "kind": "text", "text": "Hello, I would like to move my appointment to Friday please.",
            "status": "received", "provider_message_id": "wamid.HBgLMTQxNTU1NTI2NzEVAgASGBQzQTdGRjY0",
            "created_at": "2026-11-25T10:00:00Z", "payload": {}, "attachments": []}}),
        created_at: chrono::Utc::now(),
    };
    c.bench_function("event: serialise a message.created frame", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&e)).map(|s| s.len())));
    });
}

criterion_group!(benches, webhooks, templates, events);
criterion_main!(benches);
