//! A stand-in for Twilio Programmable Messaging, for tests and the demo. It speaks real
//! HTTP: `POST /2010-04-01/Accounts/{sid}/Messages.json` (Basic auth, form-encoded, 201
//! with the message resource), then status callbacks (`sent`, `delivered`) to each send's
//! `StatusCallback`; and it plays the contact, posting form-encoded message webhooks
//! signed with `X-Twilio-Signature` exactly as Twilio does. Failures can be scripted
//! (429, 5xx, 21610 unsubscribed, 21211 invalid number) and numbers marked unsubscribed.
//!
//! Control endpoints for people trying the demo: `POST /_sim/inbound` (form or JSON
//! `{from, body}`: the contact writes), `GET /_sim/sent` (what was sent),
//! `POST /_sim/fail` (`{"failures": ["429", "500", "21610", "21211"]}`).

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use channel_connector::twilio_sms;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// How the simulated account is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// `AC…`.
    pub account_sid: String,
    /// The auth token (Basic auth password, webhook signing key).
    pub auth_token: String,
    /// The business number (E.164).
    pub number: String,
    /// The gateway's message webhook URL for this number.
    pub webhook_url: Option<String>,
    /// Pause before each status callback.
    pub status_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            account_sid: format!("AC{}", "5".repeat(32)),
            auth_token: "sim-auth-token-0123456789abcdef".to_owned(),
            number: "+15005550006".to_owned(),
            webhook_url: None,
            status_delay: Duration::from_millis(20),
        }
    }
}

/// A failure to answer the next send with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 Too Many Requests (20429): never processed.
    TooMany,
    /// 500: outcome unknown to the caller (the simulator did not take it).
    ServerError,
    /// 400 21610: the recipient unsubscribed.
    Unsubscribed,
    /// 400 21211: invalid `To`.
    InvalidNumber,
}

impl Failure {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "429" => Some(Self::TooMany),
            "500" => Some(Self::ServerError),
            "21610" => Some(Self::Unsubscribed),
            "21211" => Some(Self::InvalidNumber),
            _ => None,
        }
    }
}

/// One message the simulator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its sid.
    pub sid: String,
    /// `To`.
    pub to: String,
    /// `From` or `MessagingServiceSid`.
    pub from: String,
    /// `Body`.
    pub body: String,
    /// `StatusCallback`.
    pub status_callback: Option<String>,
    /// The media fetched from each `MediaUrl` (as Twilio fetches them): content type and
    /// bytes.
    pub media: Vec<(String, Vec<u8>)>,
    /// Each `MediaUrl` as given.
    pub media_urls: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    media: std::collections::HashMap<String, (Vec<u8>, String)>,
    sent: Vec<Sent>,
    fail_next: VecDeque<Failure>,
    unsubscribed: HashSet<String>,
    webhook_results: Vec<u16>,
    seq: u64,
}

/// The simulator (cheap to clone; shared state).
#[derive(Debug, Clone)]
pub struct Simulator {
    cfg: Arc<Mutex<SimConfig>>,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
    base_url: Arc<Mutex<String>>,
}

impl Simulator {
    /// A simulator with this set-up.
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            cfg: Arc::new(Mutex::new(cfg)),
            inner: Arc::default(),
            http: reqwest::Client::new(),
            base_url: Arc::default(),
        }
    }

    fn cfg(&self) -> SimConfig {
        self.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the gateway's message webhook for this number is.
    pub fn set_webhook(&self, url: &str) {
        self.cfg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .webhook_url = Some(url.to_owned());
    }

    /// Where the gateway's message webhook is, once set.
    pub fn webhook_url(&self) -> Option<String> {
        self.cfg().webhook_url
    }

    /// The API base for the account (`…/2010-04-01`), once serving.
    pub fn api_base_url(&self) -> String {
        format!(
            "{}/2010-04-01",
            self.base_url.lock().unwrap_or_else(|e| e.into_inner())
        )
    }

    /// The account SID.
    pub fn account_sid(&self) -> String {
        self.cfg().account_sid
    }

    /// The auth token.
    pub fn auth_token(&self) -> String {
        self.cfg().auth_token
    }

    /// The business number.
    pub fn number(&self) -> String {
        self.cfg().number
    }

    /// Everything accepted so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.inner().sent.clone()
    }

    /// Answer the next sends with these failures, in order.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.inner().fail_next.extend(failures);
    }

    /// Sends to `number` are refused with 21610 (it replied STOP).
    pub fn set_unsubscribed(&self, number: &str) {
        self.inner().unsubscribed.insert(number.to_owned());
    }

    /// The HTTP status of every webhook the simulator posted.
    pub fn webhook_results(&self) -> Vec<u16> {
        self.inner().webhook_results.clone()
    }

    fn next_sid(&self, prefix: &str) -> String {
        let mut inner = self.inner();
        inner.seq += 1;
        let n = inner.seq;
        drop(inner);
        format!(
            "{prefix}{:032x}",
            u128::from(n) ^ (uuid::Uuid::new_v4().as_u128() << 64)
        )
    }

    /// Post form `params` to `url`, signed as Twilio signs (over `url` and every
    /// parameter); the gateway's status code.
    pub async fn post_signed(&self, url: &str, params: &[(String, String)]) -> Result<u16, String> {
        let cfg = self.cfg();
        let sig = twilio_sms::expected_signature(url, params, &cfg.auth_token);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let res = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .header(
                "i-twilio-idempotency-token",
                uuid::Uuid::new_v4().to_string(),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        self.inner().webhook_results.push(status);
        Ok(status)
    }

    /// The contact at `from` writes `body`: the message webhook as Twilio posts it (the
    /// same `MessageSid` when `sid` is given, as a redelivery does). Returns the sid and
    /// the gateway's status code.
    pub async fn contact_sends(
        &self,
        from: &str,
        body: &str,
        sid: Option<&str>,
    ) -> Result<(String, u16), String> {
        let cfg = self.cfg();
        let url = cfg.webhook_url.clone().ok_or("no webhook URL set")?;
        let sid = sid.map_or_else(|| self.next_sid("SM"), str::to_owned);
        let segments = twilio_sms::segments(body).segments.max(1);
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let params = vec![
            p("ToCountry", "US"),
            p("ToState", ""),
            p("SmsMessageSid", &sid),
            p("NumMedia", "0"),
            p("ToCity", ""),
            p("FromZip", ""),
            p("SmsSid", &sid),
            p("FromState", ""),
            p("SmsStatus", "received"),
            p("FromCity", ""),
            p("Body", body),
            p("FromCountry", ""),
            p("To", &cfg.number),
            p("ToZip", ""),
            p("NumSegments", &segments.to_string()),
            p("MessageSid", &sid),
            p("AccountSid", &cfg.account_sid),
            p("From", from),
            p("ApiVersion", "2010-04-01"),
        ];
        let status = self.post_signed(&url, &params).await?;
        Ok((sid, status))
    }

    /// The contact sends an MMS: `body` (none for a picture alone) and one media file,
    /// served by the simulator under the account's API (Basic auth) as Twilio serves it.
    pub async fn contact_sends_media(
        &self,
        from: &str,
        body: Option<&str>,
        bytes: Vec<u8>,
        mime: &str,
    ) -> Result<(String, u16), String> {
        let cfg = self.cfg();
        let url = cfg.webhook_url.clone().ok_or("no webhook URL set")?;
        let sid = self.next_sid("MM");
        let media_id = self.next_sid("ME");
        self.inner()
            .media
            .insert(media_id.clone(), (bytes, mime.to_owned()));
        let media_url = format!(
            "{}/Accounts/{}/Messages/{sid}/Media/{media_id}",
            self.api_base_url(),
            cfg.account_sid
        );
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let mut params = vec![
            p("MessageSid", &sid),
            p("SmsMessageSid", &sid),
            p("AccountSid", &cfg.account_sid),
            p("From", from),
            p("To", &cfg.number),
            p("NumMedia", "1"),
            p("MediaContentType0", mime),
            p("MediaUrl0", &media_url),
            p("NumSegments", "1"),
            p("SmsStatus", "received"),
            p("ApiVersion", "2010-04-01"),
        ];
        if let Some(b) = body {
            params.push(p("Body", b));
        }
        let status = self.post_signed(&url, &params).await?;
        Ok((sid, status))
    }

    /// Post a status callback for `sent` (as Twilio would).
    pub async fn status(
        &self,
        sent: &Sent,
        status: &str,
        error_code: Option<&str>,
    ) -> Result<u16, String> {
        let Some(url) = &sent.status_callback else {
            return Ok(0);
        };
        let cfg = self.cfg();
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let mut params = vec![
            p("SmsSid", &sent.sid),
            p("SmsStatus", status),
            p("MessageStatus", status),
            p("To", &sent.to),
            p("MessageSid", &sent.sid),
            p("AccountSid", &cfg.account_sid),
            p("From", &sent.from),
            p("ApiVersion", "2010-04-01"),
        ];
        if let Some(code) = error_code {
            params.push(p("ErrorCode", code));
        }
        self.post_signed(url, &params).await
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({
            "code": code, "message": message, "status": status.as_u16(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        })),
    )
        .into_response()
}

fn basic_auth_ok(headers: &HeaderMap, cfg: &SimConfig) -> bool {
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", cfg.account_sid, cfg.auth_token));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v == expected)
}

/// `POST /2010-04-01/Accounts/{sid}/Messages.json`.
async fn create_message(
    State(sim): State<Simulator>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = sim.cfg();
    if account != cfg.account_sid || !basic_auth_ok(&headers, &cfg) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let params = twilio_sms::form(&body);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let to = get("To").unwrap_or_default();
    let text = get("Body").unwrap_or_default();
    if to.is_empty() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    }
    if text.encode_utf16().count() > twilio_sms::MAX_BODY_CHARS {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    let failure = sim.inner().fail_next.pop_front();
    let unsubscribed = sim.inner().unsubscribed.contains(&to);
    match failure {
        Some(Failure::TooMany) => {
            return twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
        }
        Some(Failure::ServerError) => {
            return twilio_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "Internal Server Error",
            );
        }
        Some(Failure::InvalidNumber) => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21211,
                &format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        Some(Failure::Unsubscribed) => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21610,
                "Attempt to send to unsubscribed recipient",
            );
        }
        None if unsubscribed => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21610,
                "Attempt to send to unsubscribed recipient",
            );
        }
        None => {}
    }
    let from = get("From")
        .or_else(|| get("MessagingServiceSid"))
        .unwrap_or_default();
    // Twilio fetches each MediaUrl (and fails the message with 11200 when it cannot).
    let mut media = Vec::new();
    let mut media_error = None;
    for (_, url) in params.iter().filter(|(k, _)| k == "MediaUrl") {
        match fetch_media(&sim.http, url).await {
            Ok(m) => media.push(m),
            Err(e) => {
                tracing::debug!(error = %e, %url, "media not retrievable");
                media_error = Some("11200");
            }
        }
    }
    if text.is_empty() && params.iter().all(|(k, _)| k != "MediaUrl") {
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    }
    let sent = Sent {
        sid: sim.next_sid("SM"),
        to: to.clone(),
        from: from.clone(),
        body: text.clone(),
        status_callback: get("StatusCallback"),
        media,
        media_urls: params
            .iter()
            .filter(|(k, _)| k == "MediaUrl")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    sim.inner().sent.push(sent.clone());
    let segments = twilio_sms::segments(&text).segments;
    let answer = json!({
        "sid": sent.sid, "account_sid": cfg.account_sid, "to": to, "from": from,
        "body": text, "status": "queued", "num_segments": segments.to_string(),
        "num_media": sent.media.len().to_string(), "direction": "outbound-api", "error_code": null,
        "error_message": null, "api_version": "2010-04-01",
    });
    // Statuses follow, as separate requests (Twilio does not order them; these come
    // in order).
    let delay = cfg.status_delay;
    let later = sim;
    tokio::spawn(async move {
        if let Some(code) = media_error {
            tokio::time::sleep(delay).await;
            if let Err(e) = later.status(&sent, "failed", Some(code)).await {
                tracing::debug!(error = %e, "status callback not delivered");
            }
            return;
        }
        for status in ["sent", "delivered"] {
            tokio::time::sleep(delay).await;
            if let Err(e) = later.status(&sent, status, None).await {
                tracing::debug!(error = %e, "status callback not delivered");
            }
        }
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Fetch an MMS's `MediaUrl`: its content type and bytes.
async fn fetch_media(http: &reqwest::Client, url: &str) -> Result<(String, Vec<u8>), String> {
    let res = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("{}", res.status()));
    }
    let mime = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let bytes = res.bytes().await.map_err(|e| e.to_string())?;
    Ok((mime, bytes.to_vec()))
}

/// `GET …/Messages/{sid}/Media/{id}`: a media file, with the account's credentials.
async fn media(
    State(sim): State<Simulator>,
    Path((account, _message, media)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let cfg = sim.cfg();
    if account != cfg.account_sid || !basic_auth_ok(&headers, &cfg) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    match sim.inner().media.get(&media).cloned() {
        Some((bytes, mime)) => (StatusCode::OK, [("content-type", mime)], bytes).into_response(),
        None => twilio_error(StatusCode::NOT_FOUND, 20404, "Not found"),
    }
}

/// What `POST /_sim/inbound` takes.
#[derive(Debug, Deserialize)]
struct InboundIn {
    from: String,
    body: String,
}

/// `POST /_sim/inbound`: the contact writes (JSON `{from, body}`).
async fn control_inbound(State(sim): State<Simulator>, Json(i): Json<InboundIn>) -> Response {
    match sim.contact_sends(&i.from, &i.body, None).await {
        Ok((sid, status)) => Json(json!({"sid": sid, "webhook_status": status})).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

/// `GET /_sim/sent`.
async fn control_sent(State(sim): State<Simulator>) -> Json<Value> {
    Json(Value::Array(
        sim.sent()
            .into_iter()
            .map(|s| {
                json!({"sid": s.sid, "to": s.to, "from": s.from, "body": s.body,
                    "media": s.media.iter().map(|(mime, bytes)| json!({"content_type": mime, "bytes": bytes.len()})).collect::<Vec<_>>()})
            })
            .collect(),
    ))
}

/// What `POST /_sim/fail` takes.
#[derive(Debug, Deserialize)]
struct FailIn {
    failures: Vec<String>,
}

/// `POST /_sim/fail`: answer the next sends with these (`429`, `500`, `21610`, `21211`).
async fn control_fail(State(sim): State<Simulator>, Json(f): Json<FailIn>) -> StatusCode {
    let parsed: Option<Vec<Failure>> = f.failures.iter().map(|s| Failure::parse(s)).collect();
    match parsed {
        Some(list) => {
            sim.fail_next(list);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The simulator's routes.
pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(create_message),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Messages/{message}/Media/{media}",
            get(media),
        )
        .route("/_sim/inbound", post(control_inbound))
        .route("/_sim/sent", get(control_sent))
        .route("/_sim/fail", post(control_fail))
        .with_state(sim)
}

/// Serve the simulator on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Simulator,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr()
        && let Ok(mut b) = sim.base_url.lock()
    {
        *b = format!("http://{addr}");
    }
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
