//! The WhatsApp Cloud API: webhook envelopes in, message requests out.

pub mod client;
pub mod webhook;

/// Build the Cloud API body for an outbound message.
pub mod request {
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

    /// A template message; `quick_reply_payloads` set each quick-reply button's payload
    /// by index.
    pub fn template(name: &str, language: &str, quick_reply_payloads: &[&str]) -> Value {
        let components: Vec<Value> = quick_reply_payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({"type": "button", "sub_type": "quick_reply", "index": i.to_string(),
                       "parameters": [{"type": "payload", "payload": p}]})
            })
            .collect();
        json!({ "type": "template", "template": {
            "name": name, "language": { "code": language }, "components": components
        }})
    }

    /// Interactive reply buttons (at most three).
    pub fn buttons(body: &str, buttons: &[(String, String)]) -> Value {
        let buttons: Vec<Value> = buttons
            .iter()
            .map(|(id, title)| json!({"type": "reply", "reply": {"id": id, "title": title}}))
            .collect();
        json!({ "type": "interactive", "interactive": {
            "type": "button", "body": { "text": body }, "action": { "buttons": buttons }
        }})
    }

    /// An image by media id; the dispatcher uploads the attachment and fills the id.
    pub fn image(caption: Option<&str>) -> Value {
        let mut image = json!({});
        if let Some(c) = caption {
            image["caption"] = json!(c);
        }
        json!({ "type": "image", "image": image })
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
}
