//! SMS through Twilio Programmable Messaging (the format most SMS providers mirror):
//! form-encoded webhooks signed with `X-Twilio-Signature`, sends to `Messages.json` with
//! Basic auth, status callbacks that carry Parley's own message id, opt-out keywords,
//! and the GSM-7 / UCS-2 segment arithmetic an agent sees before sending.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};

use crate::{providers::FailureEffect, whatsapp::client::SendOutcome};

/// The longest body Twilio takes (in UTF-16 units, which is how emoji count against it).
pub const MAX_BODY_CHARS: usize = 1600;

/// What a Twilio SMS account needs beyond the common columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `AC…`.
    pub account_sid: String,
    /// The sender: an E.164 number, or a Messaging Service (`MG…`).
    pub from: String,
    /// The inbound webhook's URL as configured at Twilio (signatures cover it): the
    /// account's public URL plus `/webhooks/twilio_sms/{id}`; status callbacks go to it
    /// plus `/status`.
    pub webhook_url: String,
    /// `https://api.twilio.com/2010-04-01` (the simulator's in the demo).
    pub api_base_url: String,
}

impl Config {
    /// The status callback URL for Parley message `message_id`.
    pub fn status_callback(&self, message_id: &str) -> String {
        format!(
            "{}/status?m={message_id}",
            self.webhook_url.trim_end_matches('/')
        )
    }

    /// A link Twilio can fetch attachment `attachment_id` from (MMS media go by URL),
    /// valid until `expires` (Unix seconds): the webhook URL plus
    /// `/media/{attachment_id}?expires=…&sig=…`, signed with the account's auth token so
    /// that nobody else can make one and the link names nothing guessable.
    pub fn media_link(&self, auth_token: &str, attachment_id: &str, expires: i64) -> String {
        format!(
            "{}/media/{attachment_id}?expires={expires}&sig={}",
            self.webhook_url.trim_end_matches('/'),
            media_signature(auth_token, attachment_id, expires)
        )
    }
}

/// The signature in a media link: HMAC-SHA256 over `"{attachment_id}.{expires}"`,
/// URL-safe base64.
fn media_signature(auth_token: &str, attachment_id: &str, expires: i64) -> String {
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{attachment_id}.{expires}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Is `sig` the signature of a media link for `attachment_id` until `expires`, and has
/// it not expired at `now` (Unix seconds)?
pub fn media_link_ok(
    auth_token: &str,
    attachment_id: &str,
    expires: i64,
    sig: &str,
    now: i64,
) -> bool {
    now <= expires
        && crate::signature::constant_time_eq(
            media_signature(auth_token, attachment_id, expires).as_bytes(),
            sig.as_bytes(),
        )
}

/// How long a media link stays valid: long enough for the outbox's retries, short enough
/// that a leaked link soon stops working.
pub const MEDIA_LINK_SECONDS: i64 = 24 * 3600;

// ---------------------------------------------------------------------------------------
// Signatures

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Twilio-Signature` header.
    #[error("the X-Twilio-Signature header is missing")]
    Missing,
    /// It does not match.
    #[error("the X-Twilio-Signature header does not match the URL and parameters")]
    Mismatch,
}

/// The form parameters of `body`, decoded once, blanks and repeats kept, untrimmed.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Twilio's signature of a request to `url` with form `params`: the URL, then each
/// parameter's name and value sorted by name (repeated names: their values sorted and
/// deduplicated), HMAC-SHA1 with the auth token, Base64.
pub fn expected_signature(url: &str, params: &[(String, String)], auth_token: &str) -> String {
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in params {
        by_name.entry(k.as_str()).or_default().push(v.as_str());
    }
    let mut data = url.to_owned();
    for (name, mut values) in by_name {
        values.sort_unstable();
        values.dedup();
        for v in values {
            data.push_str(name);
            data.push_str(v);
        }
    }
    let mut mac = <Hmac<sha1::Sha1>>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The forms of `url` Twilio may have signed: as configured, and with the default port
/// added or removed ("signature generation on the back end is inconsistent").
fn url_forms(url: &str) -> Vec<String> {
    let mut forms = vec![url.to_owned()];
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        let Some(rest) = url.strip_prefix(scheme) else {
            continue;
        };
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host, tail) = rest.split_at(host_end);
        if let Some(bare) = host.strip_suffix(port) {
            forms.push(format!("{scheme}{bare}{tail}"));
        } else if !host.contains(':') {
            forms.push(format!("{scheme}{host}{port}{tail}"));
        }
    }
    forms
}

/// Check `header` against a request to `url` (the configured public URL, never one rebuilt
/// from request headers) with form `body`, in constant time.
pub fn verify(
    url: &str,
    body: &[u8],
    header: Option<&str>,
    auth_token: &str,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let params = form(body);
    let ok = url_forms(url).iter().any(|u| {
        crate::signature::constant_time_eq(
            expected_signature(u, &params, auth_token).as_bytes(),
            header.as_bytes(),
        )
    });
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------------------------------
// Inbound

/// An inbound SMS or MMS.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// `SM…` / `MM…`: the dedupe key.
    pub message_sid: String,
    /// The contact's number (E.164).
    pub from: String,
    /// Our number.
    pub to: String,
    /// The text (absent for an MMS without text).
    pub body: Option<String>,
    /// Media: URL and content type, in order.
    pub media: Vec<(String, Option<String>)>,
    /// `STOP` / `START` / `HELP` from Advanced Opt-Out, when the number has it.
    pub opt_out_type: Option<String>,
    /// Every parameter, for the transcript's raw payload.
    pub params: BTreeMap<String, String>,
}

fn params_map(body: &[u8]) -> BTreeMap<String, String> {
    // A repeated name keeps its first value (Twilio does not repeat message parameters).
    let mut map = BTreeMap::new();
    for (k, v) in form(body) {
        map.entry(k).or_insert(v);
    }
    map
}

/// Read an inbound message webhook; the reason when it is not one.
pub fn parse_inbound(body: &[u8]) -> Result<InboundMessage, String> {
    let p = params_map(body);
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
    let message_sid = get("MessageSid")
        .or_else(|| get("SmsMessageSid"))
        .or_else(|| get("SmsSid"))
        .ok_or("MessageSid is missing")?;
    let from = get("From").ok_or("From is missing")?;
    let to = get("To").unwrap_or_default();
    let count: usize = get("NumMedia")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        .min(10);
    let media = (0..count)
        .filter_map(|i| {
            get(&format!("MediaUrl{i}")).map(|u| (u, get(&format!("MediaContentType{i}"))))
        })
        .collect();
    Ok(InboundMessage {
        message_sid,
        from,
        to,
        // Present but empty is a text of nothing; absent is no text (an MMS).
        body: p.get("Body").cloned(),
        media,
        opt_out_type: get("OptOutType"),
        params: p,
    })
}

/// A status callback.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusCallback {
    /// The message's sid.
    pub message_sid: String,
    /// Twilio's status (`queued`, `sent`, `delivered`, `undelivered`, `failed`, …).
    pub status: String,
    /// The error, for `failed` / `undelivered`.
    pub error: Option<Value>,
}

impl StatusCallback {
    /// Parley's status for it (`None`: nothing to record).
    pub fn parley_status(&self) -> Option<&'static str> {
        match self.status.as_str() {
            "sent" => Some("sent"),
            "delivered" => Some("delivered"),
            "read" => Some("read"),
            "failed" | "undelivered" => Some("failed"),
            _ => None,
        }
    }
}

/// Read a status callback.
pub fn parse_status(body: &[u8]) -> Result<StatusCallback, String> {
    let p = params_map(body);
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
    let message_sid = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or("MessageSid is missing")?;
    let status = get("MessageStatus")
        .or_else(|| get("SmsStatus"))
        .ok_or("MessageStatus is missing")?;
    let error = get("ErrorCode").map(|code| {
        let mut e = json!({"code": code.parse::<i64>().map_or(json!(code), |n| json!(n))});
        e["title"] = json!(get("ErrorMessage").unwrap_or_else(|| error_title(&code).to_owned()));
        e
    });
    Ok(StatusCallback {
        message_sid,
        status,
        error,
    })
}

/// A short description of the errors an agent meets most.
fn error_title(code: &str) -> &'static str {
    match code {
        "21610" => "the recipient unsubscribed (replied STOP)",
        "21211" => "invalid 'To' phone number",
        "21614" | "21635" => "the number is not a mobile number (a landline?)",
        "30003" => "unreachable destination handset",
        "30005" => "unknown destination handset",
        "30006" => "landline or unreachable carrier",
        "30007" => "filtered by the carrier",
        "30008" => "unknown error",
        "11200" | "12300" => "Twilio could not fetch the media from Parley's link",
        _ => "delivery failed",
    }
}

fn code_of(error: &Value) -> Option<i64> {
    let code = error.get("code")?;
    code.as_i64()
        .or_else(|| code.as_str().and_then(|s| s.parse().ok()))
}

/// What a Twilio error means for the address.
pub fn failure_effect(error: &Value) -> FailureEffect {
    match code_of(error) {
        Some(21610) => FailureEffect::OptedOut,
        Some(21211 | 21614 | 21635) => FailureEffect::AddressUnreachable,
        _ => FailureEffect::None,
    }
}

/// Whether `text` is exactly an opt-out keyword (case-insensitive, surrounding spaces
/// ignored): "STOP PLEASE" is a message, not an opt-out.
pub fn is_opt_out(text: &str) -> bool {
    const WORDS: [&str; 8] = [
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
    ];
    WORDS.iter().any(|w| text.trim().eq_ignore_ascii_case(w))
}

/// Whether `text` is exactly an opt-in keyword.
pub fn is_opt_in(text: &str) -> bool {
    ["START", "YES", "UNSTOP"]
        .iter()
        .any(|w| text.trim().eq_ignore_ascii_case(w))
}

// ---------------------------------------------------------------------------------------
// Segments

/// GSM 03.38 basic characters (one septet each).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension characters (an escape and the character: two septets).
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How a text travels as SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Segments {
    /// `GSM-7` or `UCS-2`.
    pub encoding: &'static str,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    /// How many SMS it takes (billed per segment).
    pub segments: usize,
    /// Units per segment at this length (160/153 or 70/67).
    pub per_segment: usize,
}

/// The encoding and segment count of `text` (one character outside GSM-7 makes the whole
/// message UCS-2, where an emoji takes two units).
pub fn segments(text: &str) -> Segments {
    let gsm: Option<usize> = text.chars().try_fold(0, |n, c| {
        if GSM_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM_EXTENDED.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    let (encoding, units, single, multi) = match gsm {
        Some(n) => ("GSM-7", n, 160, 153),
        None => ("UCS-2", text.encode_utf16().count(), 70, 67),
    };
    let (segments, per_segment) = if units <= single {
        (usize::from(units > 0), single)
    } else {
        (units.div_ceil(multi), multi)
    };
    Segments {
        encoding,
        units,
        segments,
        per_segment,
    }
}

/// How long `text` is against [`MAX_BODY_CHARS`] (UTF-16 units).
pub fn body_units(text: &str) -> usize {
    text.encode_utf16().count()
}

// ---------------------------------------------------------------------------------------
// Sending

/// Send `body` to `to` through `Messages.json`. Twilio has no idempotency key, so only a
/// request refused before it was processed (429, a connection that never opened) is
/// retried; a timeout or a 5xx may have been taken and waits for the status callback
/// (which carries our id) before anything is sent again.
pub async fn send(
    http: &reqwest::Client,
    cfg: &Config,
    auth_token: &str,
    to: &str,
    body: &str,
    media_url: Option<&str>,
    message_id: &str,
) -> SendOutcome {
    let url = format!(
        "{}/Accounts/{}/Messages.json",
        cfg.api_base_url.trim_end_matches('/'),
        cfg.account_sid
    );
    let sender = if cfg.from.starts_with("MG") {
        "MessagingServiceSid"
    } else {
        "From"
    };
    let callback = cfg.status_callback(message_id);
    let mut form = vec![("To", to), (sender, cfg.from.as_str())];
    // An MMS may go without text.
    if !body.is_empty() || media_url.is_none() {
        form.push(("Body", body));
    }
    if let Some(url) = media_url {
        form.push(("MediaUrl", url));
    }
    form.push(("StatusCallback", callback.as_str()));
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let res = http
        .post(&url)
        .basic_auth(&cfg.account_sid, Some(auth_token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encoded)
        .send()
        .await;
    let res = match res {
        Ok(r) => r,
        Err(e) if e.is_connect() => return SendOutcome::Retry(format!("connect: {e}")),
        Err(e) => return SendOutcome::Unknown(e.to_string()),
    };
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return match json.get("sid").and_then(Value::as_str) {
            Some(sid) => SendOutcome::Accepted(sid.to_owned()),
            None => SendOutcome::Unknown(format!("{status} without a sid")),
        };
    }
    if status.as_u16() == 429 {
        return SendOutcome::Retry(format!("429: {}", json["message"]));
    }
    if status.is_server_error() {
        return SendOutcome::Unknown(format!("{status}: {text}"));
    }
    let code = json.get("code").cloned().unwrap_or(Value::Null);
    let code_str = code_of(&json!({"code": code})).map(|c| c.to_string());
    let message = json
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error_title(code_str.as_deref().unwrap_or_default()).to_owned());
    SendOutcome::Permanent(json!({
        "code": code, "title": message, "status": status.as_u16(),
        "more_info": json.get("more_info"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_links_verify_only_as_made_and_until_they_expire() {
        let cfg = Config {
            account_sid: "AC1".into(),
            from: "+15005550006".into(),
            webhook_url: "https://parley.example/webhooks/twilio_sms/acc/".into(),
            api_base_url: String::new(),
        };
        let link = cfg.media_link("token", "att-1", 1_000);
        assert!(link.starts_with(
            "https://parley.example/webhooks/twilio_sms/acc/media/att-1?expires=1000&sig="
        ));
        let sig = link.rsplit("sig=").next().unwrap_or_default();
        assert!(media_link_ok("token", "att-1", 1_000, sig, 999));
        assert!(media_link_ok("token", "att-1", 1_000, sig, 1_000));
        assert!(
            !media_link_ok("token", "att-1", 1_000, sig, 1_001),
            "expired"
        );
        assert!(
            !media_link_ok("token", "att-2", 1_000, sig, 0),
            "another attachment"
        );
        assert!(
            !media_link_ok("token", "att-1", 2_000, sig, 0),
            "a later expiry"
        );
        assert!(
            !media_link_ok("other", "att-1", 1_000, sig, 0),
            "another account's key"
        );
        assert!(!media_link_ok("token", "att-1", 1_000, "", 0));
    }

    #[test]
    fn signatures_match_twilios_published_vectors() {
        // The digest's worked example (token, URL and body as Twilio would post them).
        // Parley-shaped: an empty value still counts; a wrong URL does not verify.
        let body = "MessageSid=SM0123456789abcdef0123456789abcdef&AccountSid=AC00000000000000000000000000000000&From=%2B13105550142&To=%2B12125550100&Body=Ol%C3%A1+%F0%9F%91%8B+50%25+off%3F&NumMedia=0&ToCity=";
        let url = "https://parley.example.com/webhooks/twilio/01923f4e-5b6c-7d8e-9f01-23456789abcd";
        let token = "3f8a1c5e9b2d4f6a8c0e2b4d6f8a0c1e";
        assert_eq!(
            expected_signature(url, &form(body.as_bytes()), token),
            "6T1WQyLqBuURIrjYen39/dzeylY="
        );
        assert_eq!(
            verify(
                url,
                body.as_bytes(),
                Some("6T1WQyLqBuURIrjYen39/dzeylY="),
                token
            ),
            Ok(())
        );
        let without_blank = body.trim_end_matches("&ToCity=");
        assert_eq!(
            expected_signature(url, &form(without_blank.as_bytes()), token),
            "NbSuMuRrUx0OST6ap4e/PK7qUrg="
        );
        for wrong in [format!("{url}/"), url.replace("https", "http")] {
            assert_eq!(
                verify(
                    &wrong,
                    body.as_bytes(),
                    Some("6T1WQyLqBuURIrjYen39/dzeylY="),
                    token
                ),
                Err(SignatureError::Mismatch)
            );
        }
        assert_eq!(
            verify(url, body.as_bytes(), None, token),
            Err(SignatureError::Missing)
        );
        // The default port, signed or not, verifies either way.
        let with_port =
            "https://parley.example.com:443/webhooks/twilio/01923f4e-5b6c-7d8e-9f01-23456789abcd";
        let sig = expected_signature(with_port, &form(body.as_bytes()), token);
        assert_eq!(verify(url, body.as_bytes(), Some(&sig), token), Ok(()));
    }

    #[test]
    fn inbound_keeps_the_text_exact_and_reads_media() {
        let m = parse_inbound(
            b"MessageSid=SMabc&From=%2B13105550142&To=%2B12125550100&Body=+hi+%2B+%D7%A9%D7%9C%D7%95%D7%9D+&NumMedia=1&MediaUrl0=https%3A%2F%2Fapi.twilio.com%2Fm%2F1&MediaContentType0=image%2Fjpeg",
        )
        .expect("inbound");
        assert_eq!(m.message_sid, "SMabc");
        assert_eq!(m.from, "+13105550142");
        assert_eq!(m.body.as_deref(), Some(" hi + שלום "));
        assert_eq!(
            m.media,
            vec![(
                "https://api.twilio.com/m/1".to_owned(),
                Some("image/jpeg".to_owned())
            )]
        );
        let mms = parse_inbound(b"MessageSid=MMx&From=%2B1310&NumMedia=0").expect("mms");
        assert_eq!(mms.body, None);
        assert!(parse_inbound(b"From=%2B1310&Body=hi").is_err());
    }

    #[test]
    fn statuses_and_errors_are_read() {
        let s =
            parse_status(b"MessageSid=SM1&MessageStatus=undelivered&ErrorCode=30003&To=%2B1310")
                .expect("status");
        assert_eq!(s.parley_status(), Some("failed"));
        assert_eq!(
            s.error.as_ref().map(|e| e["code"].clone()),
            Some(json!(30003))
        );
        let s = parse_status(b"MessageSid=SM1&MessageStatus=sending").expect("status");
        assert_eq!(s.parley_status(), None);
    }

    #[test]
    fn opt_out_words_count_only_alone() {
        assert!(is_opt_out("stop"));
        assert!(is_opt_out(" Unsubscribe "));
        assert!(!is_opt_out("STOP PLEASE"));
        assert!(is_opt_in("unstop"));
        assert!(!is_opt_in("HELP"));
    }

    #[test]
    fn segments_follow_gsm7_and_ucs2() {
        assert_eq!(segments("").segments, 0);
        assert_eq!(segments(&"a".repeat(160)).segments, 1);
        let two = segments(&"a".repeat(161));
        assert_eq!(
            (two.encoding, two.segments, two.per_segment),
            ("GSM-7", 2, 153)
        );
        // Extension characters take two septets.
        assert_eq!(segments("€").units, 2);
        // One character outside GSM-7 makes the whole text UCS-2; an emoji is two units.
        let u = segments(&format!("{}👋", "a".repeat(68)));
        assert_eq!((u.encoding, u.units, u.segments), ("UCS-2", 70, 1));
        let u = segments(&format!("{}👋", "a".repeat(69)));
        assert_eq!((u.units, u.segments, u.per_segment), (71, 2, 67));
        assert_eq!(body_units("👋"), 2);
    }
}
