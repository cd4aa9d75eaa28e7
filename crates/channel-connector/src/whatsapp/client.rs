//! Calls to the Graph API: send a message, upload media, download media.

use serde_json::Value;

use crate::accounts::{Account, Secrets};

/// What a send achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Accepted; the provider's message id.
    Accepted(String),
    /// Try again later (network trouble, 5xx, rate limits).
    Retry(String),
    /// The request may have reached the provider and been taken (it timed out, or the
    /// connection broke after it was sent): look for the provider's status before
    /// sending again.
    Unknown(String),
    /// Will never succeed as is; the provider's error object.
    Permanent(Value),
}

/// Error codes worth retrying: throttling and transient server trouble.
pub fn is_retryable_code(code: i64) -> bool {
    matches!(
        code,
        1 | 2 | 4 | 17 | 32 | 613 | 80007 | 130429 | 131000 | 131016 | 131056 | 133004
    )
}

fn classify(status: reqwest::StatusCode, body: &str) -> SendOutcome {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if status.is_success() {
        return match json
            .get("messages")
            .and_then(|m| m.get(0))
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
        {
            Some(id) => SendOutcome::Accepted(id.to_owned()),
            None => SendOutcome::Retry(format!("success without a message id: {body:.200}")),
        };
    }
    let error = json.get("error").cloned().unwrap_or(Value::Null);
    let code = error
        .get("code")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || is_retryable_code(code)
    {
        return SendOutcome::Retry(format!(
            "HTTP {status}: {}",
            error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no detail")
        ));
    }
    if error.is_null() {
        return SendOutcome::Permanent(
            serde_json::json!({ "code": status.as_u16(), "title": format!("HTTP {status}") }),
        );
    }
    SendOutcome::Permanent(error)
}

/// POST `{base}/{phone_number_id}/messages`.
pub async fn send(
    http: &reqwest::Client,
    account: &Account,
    secrets: &Secrets,
    body: &Value,
) -> SendOutcome {
    let url = format!(
        "{}/{}/messages",
        account.api_base_url.trim_end_matches('/'),
        account.phone_number_id
    );
    match http
        .post(&url)
        .bearer_auth(&secrets.access_token)
        .json(body)
        .send()
        .await
    {
        Ok(res) => {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            classify(status, &text)
        }
        // Never connected: the provider cannot have taken it.
        Err(e) if e.is_connect() => SendOutcome::Retry(format!("network: {e}")),
        Err(e) => SendOutcome::Unknown(format!("no answer: {e}")),
    }
}

/// Mark an inbound message read at the provider (blue ticks). Best effort: the outcome
/// is only logged.
pub async fn mark_read(
    http: &reqwest::Client,
    account: &Account,
    secrets: &Secrets,
    provider_message_id: &str,
) -> bool {
    let url = format!(
        "{}/{}/messages",
        account.api_base_url.trim_end_matches('/'),
        account.phone_number_id
    );
    let body = serde_json::json!({
        "messaging_product": "whatsapp", "status": "read", "message_id": provider_message_id
    });
    match http
        .post(&url)
        .bearer_auth(&secrets.access_token)
        .json(&body)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            tracing::info!(status = %r.status(), "mark-read refused by the provider");
            false
        }
        Err(e) => {
            tracing::info!(error = %e, "mark-read not delivered");
            false
        }
    }
}

/// Ask a provider's legacy contacts check whether `phone` (E.164) is a WhatsApp user:
/// `Some(true)` valid, `Some(false)` invalid, `None` when the check could not answer.
pub async fn contacts_check(
    http: &reqwest::Client,
    url: &str,
    secrets: &Secrets,
    phone: &str,
) -> Option<bool> {
    let body = serde_json::json!({ "blocking": "wait", "contacts": [phone], "force_check": true });
    let res = http
        .post(url)
        .bearer_auth(&secrets.access_token)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let json: Value = res.json().await.ok()?;
    match json.get("contacts")?.get(0)?.get("status")?.as_str()? {
        "valid" => Some(true),
        "invalid" => Some(false),
        _ => None,
    }
}

/// Upload bytes to `{base}/{phone_number_id}/media`; the media id, or the outcome to use.
pub async fn upload_media(
    http: &reqwest::Client,
    account: &Account,
    secrets: &Secrets,
    bytes: Vec<u8>,
    mime: &str,
    filename: &str,
) -> Result<String, SendOutcome> {
    let url = format!(
        "{}/{}/media",
        account.api_base_url.trim_end_matches('/'),
        account.phone_number_id
    );
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str(mime)
        .map_err(|e| SendOutcome::Permanent(serde_json::json!({"title": e.to_string()})))?;
    let form = reqwest::multipart::Form::new()
        .text("messaging_product", "whatsapp")
        .text("type", mime.to_owned())
        .part("file", part);
    match http
        .post(&url)
        .bearer_auth(&secrets.access_token)
        .multipart(form)
        .send()
        .await
    {
        Ok(res) => {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            if status.is_success() {
                let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                json.get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        SendOutcome::Retry("media upload answered without an id".to_owned())
                    })
            } else {
                Err(classify(status, &text))
            }
        }
        Err(e) => Err(SendOutcome::Retry(format!("network: {e}"))),
    }
}

/// Every message template of the account's WhatsApp Business Account
/// (`GET /<WABA_ID>/message_templates`, following `paging.next`), as the provider
/// describes them.
pub async fn message_templates(
    http: &reqwest::Client,
    account: &Account,
    secrets: &Secrets,
) -> Result<Vec<serde_json::Value>, String> {
    let waba = account
        .waba_id
        .as_deref()
        .ok_or_else(|| "the channel account has no waba_id".to_owned())?;
    let mut url = format!(
        "{}/{waba}/message_templates?limit=100&fields=name,status,language,category,components,parameter_format,rejected_reason,id",
        account.api_base_url
    );
    let mut out = Vec::new();
    for _ in 0..100 {
        let res = http
            .get(&url)
            .bearer_auth(&secrets.access_token)
            .send()
            .await
            .map_err(|e| format!("the provider could not be reached: {e}"))?;
        let status = res.status();
        let body: serde_json::Value = res
            .json()
            .await
            .map_err(|e| format!("the provider answered {status} without JSON: {e}"))?;
        if !status.is_success() {
            let msg = body
                .pointer("/error/message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no message");
            return Err(format!("the provider answered {status}: {msg}"));
        }
        if let Some(data) = body.get("data").and_then(serde_json::Value::as_array) {
            out.extend(data.iter().cloned());
        }
        match body
            .pointer("/paging/next")
            .and_then(serde_json::Value::as_str)
        {
            Some(next) if next.starts_with(&account.api_base_url) => url = next.to_owned(),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified() {
        let ok = r#"{"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.Z"}]}"#;
        assert_eq!(
            classify(reqwest::StatusCode::OK, ok),
            SendOutcome::Accepted("wamid.Z".into())
        );
        let rate = r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429}}"#;
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_REQUEST, rate),
            SendOutcome::Retry(_)
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::INTERNAL_SERVER_ERROR, ""),
            SendOutcome::Retry(_)
        ));
        let window = r#"{"error":{"message":"Re-engagement message","code":131047,"error_data":{"details":"more than 24 hours"}}}"#;
        match classify(reqwest::StatusCode::BAD_REQUEST, window) {
            SendOutcome::Permanent(e) => assert_eq!(e["code"], 131047),
            other => panic!("{other:?}"),
        }
    }
}
