//! The WhatsApp Cloud API: webhook envelopes in, message requests out.

pub mod client;
pub mod webhook;

/// What a Cloud API error means for the address: 131047 (more than 24 hours since the
/// contact wrote) closes the reply window; 131026 (undeliverable: not on WhatsApp, old
/// app, …) marks it unreachable.
pub fn failure_effect(error: &serde_json::Value) -> crate::providers::FailureEffect {
    use crate::providers::FailureEffect;
    match error.get("code").and_then(serde_json::Value::as_i64) {
        Some(131047) => FailureEffect::CloseReplyWindow,
        Some(131026) => FailureEffect::AddressUnreachable,
        _ => FailureEffect::None,
    }
}

/// Build the Cloud API body for an outbound message.
pub mod request {
    use parley_core::outbound::{
        Content, Outbound, ReplyButton, TemplateButton, TemplateContent, TemplateHeader,
        TemplateParam,
    };
    use serde_json::{Value, json};

    /// Where a message goes: a phone number (`to`) or a business-scoped user id
    /// (`recipient`, the 2026 addition).
    pub fn recipient_fields(address: &str) -> (&'static str, String) {
        if parley_core::channel::is_bsuid(address) {
            ("recipient", address.to_owned())
        } else {
            ("to", address.trim_start_matches('+').to_owned())
        }
    }

    /// The common envelope with `content` merged in; our message id rides along in
    /// `biz_opaque_callback_data` so statuses reconcile even before we record the
    /// provider's id.
    pub fn envelope(address: &str, our_id: &str, reply_to: Option<&str>, content: Value) -> Value {
        let (field, value) = recipient_fields(address);
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            field: value,
            "biz_opaque_callback_data": our_id,
        });
        if let (Some(obj), Value::Object(extra)) = (body.as_object_mut(), content) {
            for (k, v) in extra {
                obj.insert(k, v);
            }
            if let Some(ctx) = reply_to {
                obj.insert("context".to_owned(), json!({ "message_id": ctx }));
            }
        }
        body
    }

    /// A text message.
    pub fn text(body: &str) -> Value {
        json!({ "type": "text", "text": { "body": body, "preview_url": false } })
    }

    /// A reaction (an empty emoji removes it).
    pub fn reaction(provider_message_id: &str, emoji: &str) -> Value {
        json!({ "type": "reaction", "reaction": { "message_id": provider_message_id, "emoji": emoji } })
    }

    /// The quick-reply payloads of the Connect opt-in template.
    pub const CONNECT_YES: &str = "PARLEY_CONNECT_YES";
    /// See [`CONNECT_YES`].
    pub const CONNECT_NO: &str = "PARLEY_CONNECT_NO";

    /// Interactive reply buttons (at most three).
    pub fn buttons(body: &str, buttons: &[ReplyButton]) -> Value {
        let buttons: Vec<Value> = buttons
            .iter()
            .map(|b| json!({"type": "reply", "reply": {"id": b.id, "title": b.title}}))
            .collect();
        json!({ "type": "interactive", "interactive": {
            "type": "button", "body": { "text": body }, "action": { "buttons": buttons }
        }})
    }

    /// An image by media id (the dispatcher uploads the attachment first).
    pub fn image(media_id: Option<&str>, caption: Option<&str>) -> Value {
        let mut image = json!({});
        if let Some(id) = media_id {
            image["id"] = json!(id);
        }
        if let Some(c) = caption {
            image["caption"] = json!(c);
        }
        json!({ "type": "image", "image": image })
    }

    /// The Cloud API components of a template send: the header's parameter, the body's
    /// parameters in order (`parameter_name` for named templates), one component per
    /// quick reply and dynamic URL button.
    pub fn template_components(t: &TemplateContent) -> Vec<Value> {
        template_components_with(t, None)
    }

    fn param(p: &TemplateParam) -> Value {
        let mut v = json!({"type": "text", "text": p.value});
        if let Some(name) = &p.name {
            v["parameter_name"] = json!(name);
        }
        v
    }

    fn template_components_with(t: &TemplateContent, media_id: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        match &t.header {
            Some(TemplateHeader::Text(p)) => {
                out.push(json!({"type": "header", "parameters": [param(p)]}));
            }
            Some(TemplateHeader::Media { format, .. }) => {
                let mut media = json!({});
                if let Some(id) = media_id {
                    media["id"] = json!(id);
                }
                let mut p = serde_json::Map::new();
                p.insert("type".into(), json!(format));
                p.insert(format.clone(), media);
                out.push(json!({"type": "header", "parameters": [p]}));
            }
            None => {}
        }
        if !t.body.is_empty() {
            let body: Vec<Value> = t.body.iter().map(param).collect();
            out.push(json!({"type": "body", "parameters": body}));
        }
        for b in &t.buttons {
            out.push(match b {
                TemplateButton::QuickReply { index, payload } => json!({
                    "type": "button", "sub_type": "quick_reply", "index": index.to_string(),
                    "parameters": [{"type": "payload", "payload": payload}]
                }),
                TemplateButton::Url { index, suffix } => json!({
                    "type": "button", "sub_type": "url", "index": index.to_string(),
                    "parameters": [{"type": "text", "text": suffix}]
                }),
            });
        }
        out
    }

    /// The Cloud API body of a send, rendered at send time from the stored neutral form;
    /// `our_id` rides along for status reconciliation; `media_id` is the uploaded
    /// attachment of an image or a template's media header.
    pub fn render(o: &Outbound, our_id: &str, media_id: Option<&str>) -> Value {
        let content = match &o.content {
            Content::Text { body } => text(body),
            Content::Buttons { body, buttons: b } => buttons(body, b),
            Content::Image { caption, .. } => image(media_id, caption.as_deref()),
            Content::Reaction { to, emoji } => reaction(to, emoji),
            Content::Template(t) => json!({ "type": "template", "template": {
                "name": t.name, "language": { "code": t.language },
                "components": template_components_with(t, media_id),
            }}),
        };
        envelope(&o.to, our_id, o.reply_to.as_deref(), content)
    }
}

#[cfg(test)]
mod tests {
    use super::request::*;

    #[test]
    fn phone_recipients_use_to_and_bsuids_use_recipient() {
        let b = envelope("+14155552671", "m1", Some("wamid.X"), text("hi"));
        assert_eq!(b["to"], "14155552671");
        assert_eq!(b["type"], "text");
        assert_eq!(b["text"]["body"], "hi");
        assert_eq!(b["context"]["message_id"], "wamid.X");
        assert_eq!(b["biz_opaque_callback_data"], "m1");
        let b = envelope("US.13491208655302741918", "m2", None, text("hi"));
        assert_eq!(b["recipient"], "US.13491208655302741918");
        assert!(b.get("to").is_none() && b.get("context").is_none());
    }

    #[test]
    fn the_neutral_form_renders_the_cloud_api_body() {
        use parley_core::outbound::*;
        let t = Outbound::new(
            "+14155552671",
            None,
            Content::Template(TemplateContent {
                name: "order_update".to_owned(),
                language: "en_US".to_owned(),
                header: Some(TemplateHeader::Media {
                    format: "image".to_owned(),
                    attachment_id: Some(uuid::Uuid::nil()),
                }),
                body: vec![TemplateParam {
                    name: Some("order".to_owned()),
                    value: "#42".to_owned(),
                }],
                buttons: vec![
                    TemplateButton::QuickReply {
                        index: 0,
                        payload: "YES".to_owned(),
                    },
                    TemplateButton::Url {
                        index: 2,
                        suffix: "9931%3Fsrc".to_owned(),
                    },
                ],
            }),
        );
        let b = render(&t, "m1", Some("media-7"));
        assert_eq!(b["to"], "14155552671");
        assert_eq!(b["type"], "template");
        assert_eq!(b["template"]["language"]["code"], "en_US");
        let c = &b["template"]["components"];
        assert_eq!(c[0]["parameters"][0]["image"]["id"], "media-7");
        assert_eq!(c[1]["parameters"][0]["parameter_name"], "order");
        assert_eq!(c[1]["parameters"][0]["text"], "#42");
        assert_eq!(c[2]["sub_type"], "quick_reply");
        assert_eq!(c[2]["parameters"][0]["payload"], "YES");
        assert_eq!(c[3]["index"], "2");
        assert_eq!(c[3]["parameters"][0]["text"], "9931%3Fsrc");
        let i = render(
            &Outbound::new(
                "+14155552671",
                Some("wamid.Y"),
                Content::Image {
                    attachment_id: uuid::Uuid::nil(),
                    caption: Some("receipt".to_owned()),
                },
            ),
            "m2",
            Some("media-8"),
        );
        assert_eq!(i["image"]["id"], "media-8");
        assert_eq!(i["image"]["caption"], "receipt");
        assert_eq!(i["context"]["message_id"], "wamid.Y");
    }
}
