//! Templates as WhatsApp defines them, and WhatsApp's rules for them.

use serde_json::Value;

use crate::Problem;

/// Body text limit.
pub const MAX_BODY: usize = 1024;
/// Header text and footer limit.
pub const MAX_HEADER: usize = 60;
/// Button label limit.
pub const MAX_BUTTON_TEXT: usize = 25;
/// Buttons per template.
pub const MAX_BUTTONS: usize = 10;
/// URL buttons per template.
pub const MAX_URL_BUTTONS: usize = 2;
/// Phone buttons per template.
pub const MAX_PHONE_BUTTONS: usize = 1;
/// Quick-reply payload limit (the same as an interactive reply id).
pub const MAX_PAYLOAD: usize = 256;
/// URL limit.
pub const MAX_URL: usize = 2000;

/// Categories.
pub const CATEGORIES: [&str; 3] = ["marketing", "utility", "authentication"];
/// Statuses; only `approved` can be sent.
pub const STATUSES: [&str; 5] = ["approved", "pending", "rejected", "paused", "disabled"];

/// Where a field sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "component", content = "index")]
pub enum Location {
    /// The text header.
    Header,
    /// The body.
    Body,
    /// A URL button's dynamic suffix (button index).
    Button(usize),
}

/// A field of a template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldSpec {
    /// How requests name it: the body's `1` or `first_name`, `header.1`, `button.2`.
    pub key: String,
    /// The placeholder's own name (`1`, `first_name`).
    pub name: String,
    /// Where it is.
    pub location: Location,
    /// The example value given with the template.
    pub example: Option<String>,
}

/// The header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// No header.
    None,
    /// Text, with at most one field.
    Text(String),
    /// A media placeholder (`IMAGE`, `VIDEO`, `DOCUMENT`, `LOCATION`) filled at send time.
    Media(String),
}

/// A button.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Button {
    /// `QUICK_REPLY`, `URL`, `PHONE_NUMBER` (or another provider type, kept as is).
    #[serde(rename = "type")]
    pub kind: String,
    /// Label.
    pub text: String,
    /// URL (may end with one field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Quick reply: what comes back when tapped (Parley's; the provider sets it per send).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Definition {
    /// Header.
    pub header: Header,
    /// Body text.
    pub body: String,
    /// Footer text.
    pub footer: Option<String>,
    /// Buttons in order.
    pub buttons: Vec<Button>,
    /// Named (`{{first_name}}`) rather than positional (`{{1}}`) fields.
    pub named: bool,
    /// Fields in send order: header, body (positional in number order), buttons.
    pub fields: Vec<FieldSpec>,
}

impl Definition {
    /// A plain text with fields (a standard response): numbered or named, in order of
    /// first appearance.
    pub fn plain(text: &str) -> Result<Self, String> {
        let mut fields: Vec<FieldSpec> = Vec::new();
        for p in placeholders(text)? {
            if !fields.iter().any(|f| f.key == p.name) {
                fields.push(FieldSpec {
                    key: p.name.clone(),
                    name: p.name,
                    location: Location::Body,
                    example: None,
                });
            }
        }
        Ok(Self {
            header: Header::None,
            body: text.to_owned(),
            footer: None,
            buttons: Vec::new(),
            named: true,
            fields,
        })
    }
}

/// A placeholder found in a text: byte range and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Start of `{{`.
    pub start: usize,
    /// End after `}}`.
    pub end: usize,
    /// The name inside, trimmed.
    pub name: String,
}

/// Every `{{…}}` in `text`. A name is digits (positional) or a lowercase identifier
/// (named); anything else is an error.
pub fn placeholders(text: &str) -> Result<Vec<Placeholder>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("{{") {
        let start = from + i;
        let Some(j) = text[start + 2..].find("}}") else {
            return Err("has a `{{` without a closing `}}`".into());
        };
        let name = text[start + 2..start + 2 + j].trim().to_owned();
        let digits = !name.is_empty() && name.chars().all(|c| c.is_ascii_digit());
        let ident = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !digits && !ident {
            return Err(format!(
                "field `{{{{{name}}}}}` must be a number ({{{{1}}}}) or a lowercase name ({{{{first_name}}}})"
            ));
        }
        let end = start + 2 + j + 2;
        out.push(Placeholder { start, end, name });
        from = end;
    }
    Ok(out)
}

/// Replace each placeholder using `value` (left as is when it returns `None`).
pub fn substitute(text: &str, mut value: impl FnMut(&str) -> Option<String>) -> String {
    let Ok(found) = placeholders(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for p in found {
        out.push_str(&text[at..p.start]);
        match value(&p.name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&text[p.start..p.end]),
        }
        at = p.end;
    }
    out.push_str(&text[at..]);
    out
}

fn upper(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_uppercase()
}

fn text_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Read `components` (WhatsApp's shape; type and format names in any case). With
/// `strict`, apply WhatsApp's rules for creating a template; without, accept what a
/// provider already holds as long as it can be rendered.
pub fn parse(components: &Value, strict: bool) -> Result<Definition, Vec<Problem>> {
    let mut p: Vec<Problem> = Vec::new();
    let Some(list) = components.as_array() else {
        return Err(vec![Problem::new("components", "must be an array")]);
    };
    let mut header = Header::None;
    let mut header_examples: Vec<String> = Vec::new();
    let mut body: Option<(usize, String, Value)> = None;
    let mut footer = None;
    let mut buttons: Vec<(usize, Button, Option<String>)> = Vec::new();
    let mut seen = [false; 4];
    for (i, c) in list.iter().enumerate() {
        let at = format!("components[{i}]");
        let kind = upper(c.get("type"));
        let slot = match kind.as_str() {
            "HEADER" => 0,
            "BODY" => 1,
            "FOOTER" => 2,
            "BUTTONS" => 3,
            _ => {
                p.push(Problem::new(
                    format!("{at}.type"),
                    "must be HEADER, BODY, FOOTER or BUTTONS",
                ));
                continue;
            }
        };
        if seen[slot] {
            p.push(Problem::new(
                format!("{at}.type"),
                format!("a template has at most one {kind}"),
            ));
            continue;
        }
        seen[slot] = true;
        match slot {
            0 => {
                let format = upper(c.get("format"));
                match format.as_str() {
                    "TEXT" => {
                        let t = text_of(c, "text").unwrap_or_default();
                        if strict && t.trim().is_empty() {
                            p.push(Problem::new(
                                format!("{at}.text"),
                                "a TEXT header needs text",
                            ));
                        }
                        if strict && t.chars().count() > MAX_HEADER {
                            p.push(Problem::new(
                                format!("{at}.text"),
                                format!("header text is at most {MAX_HEADER} characters"),
                            ));
                        }
                        header_examples = c
                            .pointer("/example/header_text")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .or_else(|| {
                                c.pointer("/example/header_text_named_params")
                                    .and_then(Value::as_array)
                                    .map(|a| {
                                        a.iter().filter_map(|v| text_of(v, "example")).collect()
                                    })
                            })
                            .unwrap_or_default();
                        header = Header::Text(t);
                    }
                    "IMAGE" => header = Header::Media(format),
                    "VIDEO" | "DOCUMENT" | "LOCATION" if !strict => header = Header::Media(format),
                    _ => p.push(Problem::new(
                        format!("{at}.format"),
                        "a header is TEXT or IMAGE",
                    )),
                }
            }
            1 => body = Some((i, text_of(c, "text").unwrap_or_default(), c.clone())),
            2 => {
                let t = text_of(c, "text").unwrap_or_default();
                if strict && t.chars().count() > MAX_HEADER {
                    p.push(Problem::new(
                        format!("{at}.text"),
                        format!("footer is at most {MAX_HEADER} characters"),
                    ));
                }
                if strict && t.contains("{{") {
                    p.push(Problem::new(format!("{at}.text"), "a footer has no fields"));
                }
                footer = Some(t);
            }
            _ => {
                let Some(bs) = c.get("buttons").and_then(Value::as_array) else {
                    p.push(Problem::new(format!("{at}.buttons"), "must be an array"));
                    continue;
                };
                for (j, b) in bs.iter().enumerate() {
                    let bat = format!("{at}.buttons[{j}]");
                    let kind = upper(b.get("type"));
                    let text = text_of(b, "text").unwrap_or_default();
                    let n = text.trim().chars().count();
                    if strict && (n == 0 || n > MAX_BUTTON_TEXT) {
                        p.push(Problem::new(
                            format!("{bat}.text"),
                            format!("button text is 1 to {MAX_BUTTON_TEXT} characters"),
                        ));
                    }
                    let payload = text_of(b, "payload");
                    if payload
                        .as_ref()
                        .is_some_and(|x| x.is_empty() || x.chars().count() > MAX_PAYLOAD)
                    {
                        p.push(Problem::new(
                            format!("{bat}.payload"),
                            format!("a quick-reply payload is 1 to {MAX_PAYLOAD} characters"),
                        ));
                    }
                    let example = b
                        .get("example")
                        .and_then(|e| e.as_array().and_then(|a| a.first()).or(Some(e)))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let button = Button {
                        kind: kind.clone(),
                        text,
                        url: text_of(b, "url"),
                        phone_number: text_of(b, "phone_number"),
                        payload,
                    };
                    match kind.as_str() {
                        "QUICK_REPLY" => {}
                        "URL" => match &button.url {
                            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                                if u.chars().count() > MAX_URL {
                                    p.push(Problem::new(
                                        format!("{bat}.url"),
                                        format!("a URL is at most {MAX_URL} characters"),
                                    ));
                                }
                                match placeholders(u) {
                                    Ok(f)
                                        if f.len() > 1
                                            || f.first().is_some_and(|f| f.end != u.len()) =>
                                    {
                                        p.push(Problem::new(
                                            format!("{bat}.url"),
                                            "a URL may have one field, at its very end",
                                        ));
                                    }
                                    Ok(f) if !f.is_empty() && strict && example.is_none() => {
                                        p.push(Problem::new(
                                            format!("{bat}.example"),
                                            "a URL with a field needs an example value",
                                        ));
                                    }
                                    Ok(_) => {}
                                    Err(e) => p.push(Problem::new(format!("{bat}.url"), e)),
                                }
                            }
                            _ => p.push(Problem::new(
                                format!("{bat}.url"),
                                "a URL button needs an http(s) url",
                            )),
                        },
                        "PHONE_NUMBER" => {
                            let ok = button.phone_number.as_ref().is_some_and(|n| {
                                let d = n.trim_start_matches('+');
                                !d.is_empty()
                                    && d.len() <= 20
                                    && d.chars().all(|c| c.is_ascii_digit())
                            });
                            if !ok {
                                p.push(Problem::new(
                                    format!("{bat}.phone_number"),
                                    "a phone button needs a number of at most 20 digits",
                                ));
                            }
                        }
                        _ if strict => p.push(Problem::new(
                            format!("{bat}.type"),
                            "must be QUICK_REPLY, URL or PHONE_NUMBER",
                        )),
                        _ => {}
                    }
                    buttons.push((j, button, example));
                }
                if strict {
                    let count = |k: &str| buttons.iter().filter(|(_, b, _)| b.kind == k).count();
                    if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
                        p.push(Problem::new(
                            format!("{at}.buttons"),
                            format!("give 1 to {MAX_BUTTONS} buttons"),
                        ));
                    }
                    if count("URL") > MAX_URL_BUTTONS {
                        p.push(Problem::new(
                            format!("{at}.buttons"),
                            format!("at most {MAX_URL_BUTTONS} URL buttons"),
                        ));
                    }
                    if count("PHONE_NUMBER") > MAX_PHONE_BUTTONS {
                        p.push(Problem::new(
                            format!("{at}.buttons"),
                            format!("at most {MAX_PHONE_BUTTONS} phone button"),
                        ));
                    }
                    // Quick replies grouped: QR,QR,URL is fine; QR,URL,QR is not.
                    let kinds: Vec<bool> = buttons
                        .iter()
                        .map(|(_, b, _)| b.kind == "QUICK_REPLY")
                        .collect();
                    let groups = kinds.windows(2).filter(|w| w[0] != w[1]).count();
                    if groups > 1 {
                        p.push(Problem::new(
                            format!("{at}.buttons"),
                            "quick replies must be grouped together, before or after the other buttons",
                        ));
                    }
                }
            }
        }
    }
    let Some((bi, body, body_c)) = body else {
        p.push(Problem::new("components", "a template needs a BODY"));
        return Err(p);
    };
    let at = format!("components[{bi}]");
    if body.trim().is_empty() {
        p.push(Problem::new(format!("{at}.text"), "the body needs text"));
    }
    if strict && body.chars().count() > MAX_BODY {
        p.push(Problem::new(
            format!("{at}.text"),
            format!("the body is at most {MAX_BODY} characters"),
        ));
    }
    let mut fields: Vec<FieldSpec> = Vec::new();
    let mut named = false;
    // Header field.
    if let Header::Text(t) = &header {
        match placeholders(t) {
            Ok(found) if found.len() > 1 => p.push(Problem::new(
                "components.header.text",
                "a text header has at most one field",
            )),
            Ok(found) => {
                for f in found {
                    if strict && header_examples.is_empty() {
                        p.push(Problem::new(
                            "components.header.example",
                            "a header field needs an example value",
                        ));
                    }
                    fields.push(FieldSpec {
                        key: format!("header.{}", f.name),
                        example: header_examples.first().cloned(),
                        name: f.name,
                        location: Location::Header,
                    });
                }
            }
            Err(e) => p.push(Problem::new("components.header.text", e)),
        }
    }
    match placeholders(&body) {
        Err(e) => p.push(Problem::new(format!("{at}.text"), e)),
        Ok(found) => {
            let numeric = found
                .iter()
                .filter(|f| f.name.chars().all(|c| c.is_ascii_digit()))
                .count();
            named = numeric == 0 && !found.is_empty();
            if numeric != 0 && numeric != found.len() {
                p.push(Problem::new(
                    format!("{at}.text"),
                    "fields are either all numbered ({{1}}) or all named ({{first_name}})",
                ));
            }
            if strict && !found.is_empty() {
                let trimmed_start = body.len() - body.trim_start().len();
                let trimmed_end = body.trim_end().len();
                if found.first().is_some_and(|f| f.start == trimmed_start) {
                    p.push(Problem::new(
                        format!("{at}.text"),
                        "the body may not start with a field",
                    ));
                }
                if found.last().is_some_and(|f| f.end == trimmed_end) {
                    p.push(Problem::new(
                        format!("{at}.text"),
                        "the body may not end with a field",
                    ));
                }
                if found
                    .windows(2)
                    .any(|w| body[w[0].end..w[1].start].trim().is_empty())
                {
                    p.push(Problem::new(
                        format!("{at}.text"),
                        "two fields may not be next to each other",
                    ));
                }
            }
            let mut names: Vec<String> = Vec::new();
            for f in &found {
                if !names.contains(&f.name) {
                    names.push(f.name.clone());
                }
            }
            if !named && !names.is_empty() {
                let mut nums: Vec<usize> = names.iter().filter_map(|n| n.parse().ok()).collect();
                nums.sort_unstable();
                if nums.iter().enumerate().any(|(i, n)| *n != i + 1) {
                    p.push(Problem::new(
                        format!("{at}.text"),
                        format!(
                            "numbered fields run {{{{1}}}} to {{{{{}}}}} without gaps or repeats of a number under another spelling",
                            nums.len()
                        ),
                    ));
                }
                names.sort_by_key(|n| n.parse::<usize>().unwrap_or(usize::MAX));
            }
            let examples: Vec<(String, String)> = if named {
                body_c
                    .pointer("/example/body_text_named_params")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| {
                                Some((text_of(v, "param_name")?, text_of(v, "example")?))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                body_c
                    .pointer("/example/body_text/0")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .enumerate()
                            .filter_map(|(i, v)| {
                                Some(((i + 1).to_string(), v.as_str()?.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for n in names {
                let example = examples
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.clone());
                if strict && example.is_none() {
                    p.push(Problem::new(
                        format!("{at}.example"),
                        format!("field {{{{{n}}}}} needs an example value"),
                    ));
                }
                fields.push(FieldSpec {
                    key: n.clone(),
                    name: n,
                    location: Location::Body,
                    example,
                });
            }
        }
    }
    for (j, b, example) in &buttons {
        if let Some(u) = &b.url
            && let Ok(found) = placeholders(u)
            && let Some(f) = found.first()
        {
            fields.push(FieldSpec {
                key: format!("button.{j}"),
                name: f.name.clone(),
                location: Location::Button(*j),
                example: example.clone(),
            });
        }
    }
    if p.is_empty() {
        Ok(Definition {
            header,
            body,
            footer,
            buttons: buttons.into_iter().map(|(_, b, _)| b).collect(),
            named,
            fields,
        })
    } else {
        Err(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(c: Value) -> Vec<String> {
        match parse(&c, true) {
            Ok(_) => vec![],
            Err(p) => p
                .into_iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect(),
        }
    }

    fn body(text: &str, examples: &[&str]) -> Value {
        json!({"type": "BODY", "text": text, "example": {"body_text": [examples]}})
    }

    #[test]
    fn the_seed_example_parses_with_its_fields_in_order() {
        let d = parse(
            &json!([
                {"type": "header", "format": "image"},
                body("Hello {{1}}, can we see you on {{2}} at the branch?", &["Ana", "Monday"]),
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Yes", "payload": "APPT_YES"},
                    {"type": "QUICK_REPLY", "text": "No", "payload": "APPT_NO"}]}
            ]),
            true,
        )
        .expect("valid");
        assert_eq!(d.header, Header::Media("IMAGE".into()));
        let keys: Vec<&str> = d.fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["1", "2"]);
        assert_eq!(d.fields[0].example.as_deref(), Some("Ana"));
        assert_eq!(d.buttons[1].payload.as_deref(), Some("APPT_NO"));
    }

    #[test]
    fn each_whatsapp_limit_is_reported_where_it_is_broken() {
        let long = "x".repeat(1025);
        assert!(problems(json!([body(&format!("a {long}"), &[])]))[0].contains("at most 1024"));
        let p = problems(json!([
            {"type": "HEADER", "format": "TEXT", "text": "h".repeat(61)},
            body("Hi there", &[]),
            {"type": "FOOTER", "text": "f".repeat(61)}
        ]));
        assert!(
            p.iter()
                .any(|s| s.starts_with("components[0].text") && s.contains("60")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|s| s.starts_with("components[2].text") && s.contains("footer")),
            "{p:?}"
        );
        let p = problems(json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": [
            {"type": "QUICK_REPLY", "text": "This label is far too long to show"}]}]));
        assert!(
            p.iter()
                .any(|s| s.contains("buttons[0].text") && s.contains("25")),
            "{p:?}"
        );
        let many: Vec<Value> = (0..11)
            .map(|i| json!({"type": "QUICK_REPLY", "text": format!("B{i}")}))
            .collect();
        let p = problems(json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": many}]));
        assert!(p.iter().any(|s| s.contains("1 to 10 buttons")), "{p:?}");
        let url = |t: &str| json!({"type": "URL", "text": t, "url": "https://x.example/a"});
        let p = problems(
            json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": [url("a"), url("b"), url("c")]}]),
        );
        assert!(p.iter().any(|s| s.contains("at most 2 URL")), "{p:?}");
        let phone =
            |t: &str| json!({"type": "PHONE_NUMBER", "text": t, "phone_number": "+14155550000"});
        let p = problems(
            json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": [phone("a"), phone("b")]}]),
        );
        assert!(p.iter().any(|s| s.contains("at most 1 phone")), "{p:?}");
        let qr = |t: &str| json!({"type": "QUICK_REPLY", "text": t});
        let p = problems(
            json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": [qr("a"), url("b"), qr("c")]}]),
        );
        assert!(p.iter().any(|s| s.contains("grouped")), "{p:?}");
        assert!(problems(json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": [qr("a"), qr("c"), url("b")]}])).is_empty());
        let p = problems(json!([body("Hi {{1}} and {{3}} ok", &["a", "b"])]));
        assert!(p.iter().any(|s| s.contains("without gaps")), "{p:?}");
        let p = problems(json!([body("{{1}} is here", &["a"])]));
        assert!(p.iter().any(|s| s.contains("may not start")), "{p:?}");
        let p = problems(json!([body("Here is {{1}}", &["a"])]));
        assert!(p.iter().any(|s| s.contains("may not end")), "{p:?}");
        let p = problems(json!([body("Hi {{1}}{{2}} there", &["a", "b"])]));
        assert!(p.iter().any(|s| s.contains("next to each other")), "{p:?}");
        let p = problems(json!([{"type": "BODY", "text": "Hi {{1}} there"}]));
        assert!(p.iter().any(|s| s.contains("example")), "{p:?}");
        let p = problems(json!([body("Hi {{1}} and {{name}} ok", &["a"])]));
        assert!(p.iter().any(|s| s.contains("all numbered")), "{p:?}");
        let p = problems(
            json!([{"type": "HEADER", "format": "TEXT", "text": "{{1}} {{2}}"}, body("Hi", &[])]),
        );
        assert!(p.iter().any(|s| s.contains("at most one field")), "{p:?}");
        let p = problems(json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": [
            {"type": "QUICK_REPLY", "text": "Yes", "payload": "p".repeat(257)}]}]));
        assert!(p.iter().any(|s| s.contains("payload")), "{p:?}");
        let p = problems(json!([body("Hi", &[]), {"type": "BUTTONS", "buttons": [
            {"type": "URL", "text": "Go", "url": "https://x.example/{{1}}/more"}]}]));
        assert!(p.iter().any(|s| s.contains("very end")), "{p:?}");
    }

    #[test]
    fn named_fields_take_named_examples_and_urls_a_suffix_field() {
        let d = parse(
            &json!([
                {"type": "BODY", "text": "Hi {{first_name}}, your order {{order}} shipped.",
                 "example": {"body_text_named_params": [
                    {"param_name": "first_name", "example": "Raj"}, {"param_name": "order", "example": "A1"}]}},
                {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Track", "url": "https://t.example/{{1}}", "example": ["A1"]}]}
            ]),
            true,
        )
        .expect("valid");
        assert!(d.named);
        let keys: Vec<&str> = d.fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["first_name", "order", "button.0"]);
    }

    #[test]
    fn substitution_leaves_unknown_fields() {
        assert_eq!(
            substitute("Hi {{1}}, {{ 2 }}!", |n| (n == "1")
                .then(|| "Ana".to_owned())),
            "Hi Ana, {{ 2 }}!"
        );
    }
}
