//! Parse a Cloud API webhook envelope into what Parley stores: inbound messages (every
//! type, unknown ones kept raw) and delivery statuses.

use parley_core::channel::{is_bsuid, parse_e164};
use serde_json::{Value, json};

/// One inbound message, ready for the conversation store.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// The provider's message id (`wamid…`).
    pub provider_message_id: String,
    /// Sender phone in E.164, when the webhook carries one.
    pub phone: Option<String>,
    /// Sender business-scoped user id, when present.
    pub bsuid: Option<String>,
    /// The sender's profile name.
    pub profile_name: Option<String>,
    /// Parley's kind.
    pub kind: String,
    /// Text to show and search.
    pub body: Option<String>,
    /// Structured content, with the raw message object under `raw`.
    pub payload: Value,
    /// `context.id`: the message this one replies to (or a reaction's target).
    pub reply_to: Option<String>,
    /// Media to fetch: (media id, mime type).
    pub media: Option<(String, Option<String>)>,
    /// When the contact sent it (`timestamp`, Unix seconds), if the provider says.
    pub sent_at: Option<i64>,
}

/// One delivery status for a message we sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The provider's message id.
    pub provider_message_id: String,
    /// `sent`, `delivered`, `read`, `played`, `failed`.
    pub status: String,
    /// Unix seconds.
    pub timestamp: Option<i64>,
    /// Our message id, echoed from `biz_opaque_callback_data`.
    pub callback_data: Option<String>,
    /// The first error, for `failed`.
    pub error: Option<Value>,
    /// The recipient (phone digits or BSUID).
    pub recipient: Option<String>,
}

/// Everything in one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Envelope {
    /// Inbound messages, in order.
    pub messages: Vec<InboundMessage>,
    /// Statuses, in order.
    pub statuses: Vec<StatusUpdate>,
    /// `value.errors` and other notices, kept for the log.
    pub errors: Vec<Value>,
    /// Changes of fields Parley does not handle.
    pub ignored_fields: Vec<String>,
    /// `message_template_status_update` changes.
    pub template_statuses: Vec<TemplateStatus>,
    /// Messages that could not be read, each alone: the rest of the webhook is stored,
    /// these are kept as dead letters for an admin to replay once the cause is fixed.
    pub rejected: Vec<Rejected>,
    /// The business phone number ids (`metadata.phone_number_id`) the changes name: a
    /// webhook is only for the channel account with that number.
    pub phone_number_ids: Vec<String>,
}

/// One message of a webhook that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Why.
    pub reason: String,
    /// A webhook envelope holding just this message (with its change's `metadata` and
    /// `contacts`), so that replaying it goes through [`parse`] like any webhook.
    pub envelope: Value,
}

/// A template's new status as the provider announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateStatus {
    /// The provider's word: `APPROVED`, `REJECTED`, `PAUSED`, `DISABLED`, …
    pub event: String,
    /// The provider's template id.
    pub template_id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Why (`NONE` when there is no reason).
    pub reason: Option<String>,
}

/// Why a signed body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn str_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The largest message object stored (its JSON): WhatsApp's own messages are far smaller
/// (a text is at most 65,536 characters); a larger one is kept whole as a dead letter
/// rather than riding along in every transcript page.
pub const MAX_MESSAGE_BYTES: usize = 320 * 1024;

/// Parse a webhook body (already signature-checked).
pub fn parse(body: &[u8]) -> Result<Envelope, ParseError> {
    let mut root: Value =
        serde_json::from_slice(body).map_err(|e| ParseError(format!("body is not JSON: {e}")))?;
    // A contact can send a NUL; PostgreSQL can store none. The message is kept with
    // U+FFFD in its place rather than refused (a refused webhook is retried forever).
    if parley_core::storable::may_hold_nul(body) {
        parley_core::storable::replace_nul(&mut root);
    }
    let object = root
        .get("object")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if object != "whatsapp_business_account" {
        return Err(ParseError(format!(
            "unexpected object `{object}` (expected whatsapp_business_account)"
        )));
    }
    let entries = root
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError("`entry` is missing or not an array".to_owned()))?;
    let mut env = Envelope::default();
    for entry in entries {
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else {
            return Err(ParseError("an entry has no `changes` array".to_owned()));
        };
        for change in changes {
            let field = change
                .get("field")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let value = change.get("value").unwrap_or(&Value::Null);
            if field == "message_template_status_update" {
                if let Some(event) = str_of(value, "event") {
                    env.template_statuses.push(TemplateStatus {
                        event,
                        template_id: str_of(value, "message_template_id"),
                        name: str_of(value, "message_template_name"),
                        language: str_of(value, "message_template_language"),
                        reason: str_of(value, "reason").filter(|r| r != "NONE"),
                    });
                }
                continue;
            }
            if field != "messages" {
                env.ignored_fields.push(field.to_owned());
                continue;
            }
            parse_value(entry, value, &mut env);
        }
    }
    Ok(env)
}

fn parse_value(entry: &Value, value: &Value, env: &mut Envelope) {
    if let Some(id) = value
        .get("metadata")
        .and_then(|m| str_of(m, "phone_number_id"))
        && !env.phone_number_ids.contains(&id)
    {
        env.phone_number_ids.push(id);
    }
    let contacts: Vec<&Value> = value
        .get("contacts")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if let Some(msgs) = value.get("messages").and_then(Value::as_array) {
        for m in msgs {
            match parse_message(m, &contacts) {
                Ok(parsed) => env.messages.push(parsed),
                Err(e) => env.rejected.push(Rejected {
                    reason: e.0,
                    envelope: json!({
                        "object": "whatsapp_business_account",
                        "entry": [{
                            "id": entry.get("id").cloned().unwrap_or(Value::Null),
                            "changes": [{ "field": "messages", "value": {
                                "messaging_product": value.get("messaging_product").cloned().unwrap_or(Value::Null),
                                "metadata": value.get("metadata").cloned().unwrap_or(Value::Null),
                                "contacts": value.get("contacts").cloned().unwrap_or(Value::Null),
                                "messages": [m],
                            }}],
                        }],
                    }),
                }),
            }
        }
    }
    if let Some(sts) = value.get("statuses").and_then(Value::as_array) {
        for s in sts {
            let Some(id) = str_of(s, "id") else {
                env.errors
                    .push(json!({"reason": "status without id", "status": s}));
                continue;
            };
            env.statuses.push(StatusUpdate {
                provider_message_id: id,
                status: str_of(s, "status").unwrap_or_default(),
                timestamp: str_of(s, "timestamp").and_then(|t| t.parse().ok()),
                callback_data: str_of(s, "biz_opaque_callback_data"),
                error: s
                    .get("errors")
                    .and_then(Value::as_array)
                    .and_then(|e| e.first())
                    .cloned(),
                recipient: str_of(s, "recipient_id").or_else(|| str_of(s, "recipient_user_id")),
            });
        }
    }
    if let Some(errs) = value.get("errors").and_then(Value::as_array) {
        env.errors.extend(errs.iter().cloned());
    }
}

fn parse_message(m: &Value, contacts: &[&Value]) -> Result<InboundMessage, ParseError> {
    if !m.is_object() {
        return Err(ParseError("a message is not a JSON object".to_owned()));
    }
    let id = str_of(m, "id").ok_or_else(|| ParseError("a message has no `id`".to_owned()))?;
    let size = serde_json::to_vec(m).map_or(0, |v| v.len());
    if size > MAX_MESSAGE_BYTES {
        return Err(ParseError(format!(
            "message {id} is {size} bytes of JSON (at most {MAX_MESSAGE_BYTES} are stored)"
        )));
    }
    let from = str_of(m, "from");
    let from_user = str_of(m, "from_user_id");
    // `from` is the wa_id (international digits); never phone-normalise a BSUID.
    let (phone, bsuid_from_from) = match &from {
        Some(f) if is_bsuid(f) => (None, Some(f.clone())),
        Some(f) => (parse_e164(f).ok(), None),
        None => (None, None),
    };
    let bsuid = from_user.filter(|u| is_bsuid(u)).or(bsuid_from_from);
    if phone.is_none() && bsuid.is_none() {
        return Err(ParseError(format!(
            "message {id} has no usable sender (`from` / `from_user_id`)"
        )));
    }
    let contact = contacts
        .iter()
        .find(|c| {
            (from.is_some() && str_of(c, "wa_id") == from)
                || (bsuid.is_some() && str_of(c, "user_id") == bsuid)
        })
        .or_else(|| contacts.first());
    let profile_name = contact
        .and_then(|c| c.get("profile"))
        .and_then(|p| str_of(p, "name"));
    let typ = str_of(m, "type").unwrap_or_else(|| "unknown".to_owned());
    let reply_to = m.get("context").and_then(|c| str_of(c, "id"));
    let obj = m.get(&typ).cloned().unwrap_or(Value::Null);
    let mut media = None;
    let (kind, body, mut payload): (String, Option<String>, Value) = match typ.as_str() {
        "text" => ("text".into(), str_of(&obj, "body"), json!({})),
        "image" | "video" | "audio" | "document" | "sticker" => {
            if let Some(mid) = str_of(&obj, "id") {
                media = Some((mid, str_of(&obj, "mime_type")));
            }
            let caption = str_of(&obj, "caption");
            (
                typ.clone(),
                caption.clone(),
                json!({ "media": obj, "caption": caption }),
            )
        }
        "location" => {
            let label = [str_of(&obj, "name"), str_of(&obj, "address")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            (
                "location".into(),
                (!label.is_empty()).then_some(label),
                json!({ "location": obj }),
            )
        }
        "contacts" => {
            let names = obj
                .as_array()
                .map(|cards| {
                    cards
                        .iter()
                        .filter_map(|c| c.get("name").and_then(|n| str_of(n, "formatted_name")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            (
                "contacts".into(),
                (!names.is_empty()).then_some(names),
                json!({ "contacts": obj }),
            )
        }
        "interactive" => {
            let itype = str_of(&obj, "type").unwrap_or_default();
            match itype.as_str() {
                "button_reply" | "list_reply" => {
                    let reply = obj.get(&itype).cloned().unwrap_or(Value::Null);
                    (
                        itype.clone(),
                        str_of(&reply, "title"),
                        json!({ "reply_id": str_of(&reply, "id"), "title": str_of(&reply, "title"),
                                "description": str_of(&reply, "description") }),
                    )
                }
                _ => ("interactive".into(), None, json!({ "interactive": obj })),
            }
        }
        "button" => (
            "button".into(),
            str_of(&obj, "text"),
            json!({ "payload": str_of(&obj, "payload"), "text": str_of(&obj, "text") }),
        ),
        "reaction" => {
            let emoji = str_of(&obj, "emoji");
            (
                "reaction".into(),
                emoji.clone(),
                json!({ "message_id": str_of(&obj, "message_id"), "emoji": emoji, "removed": emoji.is_none() }),
            )
        }
        other => (
            if other == "unsupported" || other == "unknown" {
                "unsupported".into()
            } else {
                other.to_owned()
            },
            None,
            json!({ "errors": m.get("errors").cloned() }),
        ),
    };
    let reply_to = if kind == "reaction" {
        payload
            .get("message_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        reply_to
    };
    if let Some(b) = &body
        && b.chars().count() > conversation_store::messages::MAX_STORED_BODY_CHARS
    {
        return Err(ParseError(format!(
            "message {id} has a text of more than {} characters",
            conversation_store::messages::MAX_STORED_BODY_CHARS
        )));
    }
    if let Some(o) = payload.as_object_mut() {
        // The raw copy without the text it carries: that is `body`, kept whole.
        let mut raw = m.clone();
        if typ == "text"
            && let Some(t) = raw.get_mut("text").and_then(Value::as_object_mut)
        {
            t.remove("body");
        }
        o.insert("raw".to_owned(), raw);
        if let Some(ts) = str_of(m, "timestamp") {
            o.insert("timestamp".to_owned(), json!(ts));
        }
        if let Some(u) = contact
            .and_then(|c| c.get("profile"))
            .and_then(|p| str_of(p, "username"))
        {
            o.insert("username".to_owned(), json!(u));
        }
    }
    Ok(InboundMessage {
        provider_message_id: id,
        phone,
        bsuid,
        profile_name,
        kind,
        body,
        payload,
        reply_to,
        media,
        sent_at: str_of(m, "timestamp").and_then(|t| t.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(value: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": value }] }]
        }))
        .unwrap_or_default()
    }

    #[test]
    fn a_text_with_profile_name() {
        let env = parse(&wrap(json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "14155552671"}],
            "messages": [{"from": "14155552671", "id": "wamid.A", "timestamp": "1700000000",
                          "type": "text", "text": {"body": "hola"}}]
        })))
        .expect("parse");
        let m = &env.messages[0];
        assert_eq!(m.phone.as_deref(), Some("+14155552671"));
        assert_eq!(m.profile_name.as_deref(), Some("Ana"));
        assert_eq!((m.kind.as_str(), m.body.as_deref()), ("text", Some("hola")));
        assert_eq!(m.payload["raw"]["id"], "wamid.A");
        assert_eq!(m.sent_at, Some(1_700_000_000));
    }

    #[test]
    fn a_bsuid_only_sender_is_not_phone_normalised() {
        let env = parse(&wrap(json!({
            "contacts": [{"profile": {"name": "U"}, "user_id": "US.13491208655302741918"}],
            "messages": [{"from_user_id": "US.13491208655302741918", "id": "wamid.B", "type": "text", "text": {"body": "x"}}]
        })))
        .expect("parse");
        assert_eq!(env.messages[0].phone, None);
        assert_eq!(
            env.messages[0].sent_at, None,
            "no timestamp: the store uses now"
        );
        assert_eq!(
            env.messages[0].bsuid.as_deref(),
            Some("US.13491208655302741918")
        );
    }

    #[test]
    fn unknown_types_are_kept_raw_template_statuses_read_and_other_fields_ignored() {
        let body = serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "W", "changes": [
                { "field": "message_template_status_update", "value": {"event": "REJECTED",
                  "message_template_id": 777, "message_template_name": "appt", "message_template_language": "en",
                  "reason": "INVALID_FORMAT"} },
                { "field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"} },
                { "field": "messages", "value": { "messages": [
                    {"from": "14155552671", "id": "wamid.C", "type": "poll_creation", "poll_creation": {"q": 1}},
                    {"from": "14155552671", "id": "wamid.D", "type": "unsupported",
                     "errors": [{"code": 131051, "title": "Message type unknown"}]}
                ]}}
            ]}]
        }))
        .expect("json");
        let env = parse(&body).expect("parse");
        assert_eq!(env.ignored_fields, vec!["account_update"]);
        assert_eq!(
            env.template_statuses,
            vec![TemplateStatus {
                event: "REJECTED".into(),
                template_id: Some("777".into()),
                name: Some("appt".into()),
                language: Some("en".into()),
                reason: Some("INVALID_FORMAT".into()),
            }]
        );
        assert_eq!(env.messages[0].kind, "poll_creation");
        assert_eq!(env.messages[0].payload["raw"]["poll_creation"]["q"], 1);
        assert_eq!(env.messages[1].kind, "unsupported");
        assert_eq!(env.messages[1].payload["errors"][0]["code"], 131051);
    }

    #[test]
    fn not_a_whatsapp_envelope_is_an_error() {
        assert!(parse(b"{}").is_err());
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"object":"whatsapp_business_account"}"#).is_err());
        // Nesting beyond serde_json's limit is an error, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(deep.as_bytes()).is_err());
    }
}
