//! Auto-fill: each field takes, in order, what the agent typed, the contact or agent data
//! it is bound to, or its default; what is left is blank. Then the text the contact will
//! see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use parley_core::outbound::{TemplateButton, TemplateContent, TemplateHeader, TemplateParam};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Problem,
    model::{Definition, FieldSpec, Header, Location, substitute},
};

/// What a field is bound to and its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// A data path: `contact.name`, `contact.first_name`, `contact.phone`,
    /// `contact.attributes.<key>`, `agent.display_name`, `agent.first_name`, `now.date`,
    /// `now.time`, `now.datetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Used when neither the agent nor the data gives a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Field key → binding.
pub type Bindings = BTreeMap<String, Binding>;

/// The data fields can be bound to.
#[derive(Debug, Clone)]
pub struct Context {
    /// The contact's name.
    pub contact_name: String,
    /// The contact's attributes (an object).
    pub contact_attributes: Value,
    /// The contact's WhatsApp number, if any.
    pub contact_phone: Option<String>,
    /// The agent's display name.
    pub agent_name: String,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Whether `path` names data that can exist.
pub fn check_path(path: &str) -> Result<(), String> {
    const FIXED: [&str; 9] = [
        "contact.name",
        "contact.first_name",
        "contact.phone",
        "agent.display_name",
        "agent.first_name",
        "now.date",
        "now.time",
        "now.datetime",
        "contact.id",
    ];
    if FIXED.contains(&path) {
        return Ok(());
    }
    if let Some(key) = path.strip_prefix("contact.attributes.")
        && !key.is_empty()
        && key.len() <= 100
        && !key.contains(char::is_whitespace)
    {
        return Ok(());
    }
    Err(format!(
        "`{path}` is not a data path; use one of {}, or contact.attributes.<key>",
        FIXED.join(", ")
    ))
}

fn first_word(s: &str) -> Option<String> {
    s.split_whitespace().next().map(str::to_owned)
}

/// The value at `path` (`None` when the data has none) and its source.
pub fn resolve(path: &str, ctx: &Context) -> Option<(String, &'static str)> {
    let contact = |v: Option<String>| {
        v.filter(|s| !s.trim().is_empty())
            .map(|v| (v, "contact_data"))
    };
    let agent = |v: Option<String>| {
        v.filter(|s| !s.trim().is_empty())
            .map(|v| (v, "agent_data"))
    };
    match path {
        "contact.name" => contact(Some(ctx.contact_name.clone())),
        "contact.first_name" => contact(first_word(&ctx.contact_name)),
        "contact.phone" => contact(ctx.contact_phone.clone()),
        "agent.display_name" => agent(Some(ctx.agent_name.clone())),
        "agent.first_name" => agent(first_word(&ctx.agent_name)),
        "now.date" => Some((ctx.now.format("%Y-%m-%d").to_string(), "clock")),
        "now.time" => Some((ctx.now.format("%H:%M").to_string(), "clock")),
        "now.datetime" => Some((ctx.now.format("%Y-%m-%d %H:%M UTC").to_string(), "clock")),
        _ => {
            let key = path.strip_prefix("contact.attributes.")?;
            let v = ctx.contact_attributes.get(key)?;
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            contact(Some(s))
        }
    }
}

/// Problems with bindings for `fields`: unknown field keys, impossible paths.
pub fn check_bindings(fields: &[FieldSpec], bindings: &Bindings, at: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    for (k, b) in bindings {
        if !fields.iter().any(|f| &f.key == k) {
            out.push(Problem::new(
                format!("{at}.{k}"),
                format!(
                    "the template has no field `{k}`; its fields are: {}",
                    keys(fields)
                ),
            ));
        }
        if let Some(p) = &b.bind
            && let Err(e) = check_path(p)
        {
            out.push(Problem::new(format!("{at}.{k}.bind"), e));
        }
        if b.default.as_ref().is_some_and(|d| d.chars().count() > 1024) {
            out.push(Problem::new(
                format!("{at}.{k}.default"),
                "must be at most 1024 characters",
            ));
        }
    }
    out
}

fn keys(fields: &[FieldSpec]) -> String {
    if fields.is_empty() {
        return "none".into();
    }
    fields
        .iter()
        .map(|f| f.key.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Problems with agent input: names that are not fields.
pub fn check_inputs(fields: &[FieldSpec], inputs: &BTreeMap<String, String>) -> Vec<Problem> {
    inputs
        .keys()
        .filter(|k| !fields.iter().any(|f| &f.key == *k))
        .map(|k| {
            Problem::new(
                format!("fields.{k}"),
                format!(
                    "the template has no field `{k}`; its fields are: {}",
                    keys(fields)
                ),
            )
        })
        .collect()
}

/// A field with its value and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Filled {
    /// Field key.
    pub key: String,
    /// Where it is.
    pub location: Location,
    /// The value (`None` while blank).
    pub value: Option<String>,
    /// `agent_input`, `contact_data`, `agent_data`, `clock`, `default` or `blank`.
    pub source: &'static str,
    /// The data path it is bound to.
    pub bind: Option<String>,
    /// The template's example value (a hint for the agent).
    pub example: Option<String>,
}

/// A button as sent.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedButton {
    /// `QUICK_REPLY`, `URL`, `PHONE_NUMBER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Label.
    pub text: String,
    /// The URL with its suffix filled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// What comes back when the contact taps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// The message as the contact will see it.
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    /// Header text, filled.
    pub header_text: Option<String>,
    /// `IMAGE` (etc.) when the header is a media placeholder.
    pub header_media: Option<String>,
    /// Body, filled (blank fields stay as `{{…}}`).
    pub body: String,
    /// Footer.
    pub footer: Option<String>,
    /// Buttons.
    pub buttons: Vec<RenderedButton>,
    /// Every field.
    pub fields: Vec<Filled>,
    /// Keys of fields still blank.
    pub blank: Vec<String>,
}

impl Rendered {
    /// All the text, as the transcript shows and search finds it.
    pub fn text(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(h) = &self.header_text {
            parts.push(h);
        }
        parts.push(&self.body);
        if let Some(f) = &self.footer {
            parts.push(f);
        }
        parts.join("\n\n")
    }

    /// The value of field `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.key == key)
            .and_then(|f| f.value.as_deref())
    }
}

/// Fill every field and render.
pub fn render(
    def: &Definition,
    bindings: &Bindings,
    inputs: &BTreeMap<String, String>,
    ctx: &Context,
) -> Rendered {
    let fields: Vec<Filled> = def
        .fields
        .iter()
        .map(|f| {
            let b = bindings.get(&f.key).cloned().unwrap_or_default();
            let (value, source) = match inputs.get(&f.key).filter(|v| !v.trim().is_empty()) {
                Some(v) => (Some(v.clone()), "agent_input"),
                None => match b.bind.as_deref().and_then(|p| resolve(p, ctx)) {
                    Some((v, src)) => (Some(v), src),
                    None => match b.default.clone().filter(|d| !d.is_empty()) {
                        Some(d) => (Some(d), "default"),
                        None => (None, "blank"),
                    },
                },
            };
            Filled {
                key: f.key.clone(),
                location: f.location,
                value,
                source,
                bind: b.bind,
                example: f.example.clone(),
            }
        })
        .collect();
    let lookup = |loc: Location, name: &str| -> Option<String> {
        def.fields
            .iter()
            .zip(&fields)
            .find(|(s, _)| s.location == loc && s.name == name)
            .and_then(|(_, f)| f.value.clone())
    };
    let header_text = match &def.header {
        Header::Text(t) => Some(substitute(t, |n| lookup(Location::Header, n))),
        _ => None,
    };
    let header_media = match &def.header {
        Header::Media(m) => Some(m.clone()),
        _ => None,
    };
    let buttons = def
        .buttons
        .iter()
        .enumerate()
        .map(|(i, b)| RenderedButton {
            kind: b.kind.clone(),
            text: b.text.clone(),
            url: b.url.as_ref().map(|u| {
                substitute(u, |n| {
                    lookup(Location::Button(i), n).map(|v| percent_encode(&v))
                })
            }),
            phone_number: b.phone_number.clone(),
            payload: if b.kind == "QUICK_REPLY" {
                Some(b.payload.clone().unwrap_or_else(|| b.text.clone()))
            } else {
                None
            },
        })
        .collect();
    let blank = fields
        .iter()
        .filter(|f| f.value.is_none())
        .map(|f| f.key.clone())
        .collect();
    Rendered {
        header_text,
        header_media,
        body: substitute(&def.body, |n| lookup(Location::Body, n)),
        footer: def.footer.clone(),
        buttons,
        fields,
        blank,
    }
}

/// Percent-encode a URL suffix (WhatsApp wants special characters encoded).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a send of `r` says, provider-neutral: the header's parameter (its text, or the
/// media placeholder with `header_attachment`), the body's parameters in order (named
/// for named templates), each quick reply's payload and each dynamic URL button's
/// suffix. The provider's module renders its wire form from it.
pub fn template_content(
    def: &Definition,
    r: &Rendered,
    name: &str,
    language: &str,
    header_attachment: Option<uuid::Uuid>,
) -> TemplateContent {
    let param = |s: &FieldSpec, f: &Filled| TemplateParam {
        name: def.named.then(|| s.name.clone()),
        value: f.value.clone().unwrap_or_default(),
    };
    let header = if let Some(format) = &r.header_media {
        Some(TemplateHeader::Media {
            format: format.to_lowercase(),
            attachment_id: header_attachment,
        })
    } else {
        def.fields
            .iter()
            .zip(&r.fields)
            .find(|(s, _)| s.location == Location::Header)
            .map(|(s, f)| TemplateHeader::Text(param(s, f)))
    };
    let body = def
        .fields
        .iter()
        .zip(&r.fields)
        .filter(|(s, _)| s.location == Location::Body)
        .map(|(s, f)| param(s, f))
        .collect();
    let buttons = r
        .buttons
        .iter()
        .enumerate()
        .filter_map(|(index, b)| match b.kind.as_str() {
            "QUICK_REPLY" => Some(TemplateButton::QuickReply {
                index,
                payload: b.payload.clone().unwrap_or_default(),
            }),
            "URL" => def
                .fields
                .iter()
                .zip(&r.fields)
                .find(|(s, _)| s.location == Location::Button(index))
                .map(|(_, f)| TemplateButton::Url {
                    index,
                    suffix: percent_encode(f.value.as_deref().unwrap_or_default()),
                }),
            _ => None,
        })
        .collect();
    TemplateContent {
        name: name.to_owned(),
        language: language.to_owned(),
        header,
        body,
        buttons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse;
    use serde_json::json;

    fn ctx(attrs: Value) -> Context {
        Context {
            contact_name: "Ana Lima".into(),
            contact_attributes: attrs,
            contact_phone: Some("+14155552671".into()),
            agent_name: "Sam Agent".into(),
            now: DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn fields_come_from_input_then_data_then_default_and_the_rest_is_blank() {
        let def = parse(
            &json!([{"type": "BODY", "text": "Hi {{1}}, account {{2}}, from {{3}} on {{4}}.",
                     "example": {"body_text": [["a", "b", "c", "d"]]}}]),
            true,
        )
        .expect("valid");
        let mut b = Bindings::new();
        b.insert(
            "1".into(),
            Binding {
                bind: Some("contact.first_name".into()),
                default: None,
            },
        );
        b.insert(
            "2".into(),
            Binding {
                bind: Some("contact.attributes.account_number".into()),
                default: None,
            },
        );
        b.insert(
            "3".into(),
            Binding {
                bind: Some("agent.display_name".into()),
                default: Some("us".into()),
            },
        );
        let r = render(&def, &b, &BTreeMap::new(), &ctx(json!({})));
        assert_eq!(r.blank, vec!["2", "4"]);
        assert_eq!(r.body, "Hi Ana, account {{2}}, from Sam Agent on {{4}}.");
        let sources: Vec<&str> = r.fields.iter().map(|f| f.source).collect();
        assert_eq!(sources, ["contact_data", "blank", "agent_data", "blank"]);
        let mut input = BTreeMap::new();
        input.insert("4".to_owned(), "Monday".to_owned());
        let r = render(&def, &b, &input, &ctx(json!({"account_number": 4411})));
        assert!(r.blank.is_empty());
        assert_eq!(r.body, "Hi Ana, account 4411, from Sam Agent on Monday.");
        assert_eq!(r.fields[3].source, "agent_input");
    }

    #[test]
    fn paths_that_cannot_exist_are_refused() {
        assert!(check_path("contact.name").is_ok());
        assert!(check_path("contact.attributes.account_number").is_ok());
        assert!(check_path("contact.shoe_size").is_err());
        assert!(check_path("contact.attributes.").is_err());
    }
}
