//! A WhatsApp Cloud API stand-in, so tests and the demo need no Meta account and no
//! internet. It speaks the documented protocol over real HTTP:
//!
//! * `POST /{version}/{phone_number_id}/messages` — Bearer check, the documented success
//!   and error bodies; then signed `sent` → `delivered` → `read` status webhooks to the
//!   gateway (or `failed` with 131026 for numbers set as "no WhatsApp", 131047 for numbers
//!   outside the window).
//! * `POST /{version}/{phone_number_id}/media`, `GET /{version}/{media_id}` and the media
//!   download URL.
//! * It also plays the contact: `POST /_sim/inbound` sends a signed inbound webhook of any
//!   type to the gateway.
//!
//! Control endpoints under `/_sim/` let tests script failures (`/_sim/fail`), mark numbers
//! (`/_sim/numbers`), and read what was sent (`/_sim/sent`).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Multipart, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The gateway's webhook URL for this number (`…/webhooks/whatsapp/{account}`).
    pub webhook_url: Option<String>,
    /// Key of the webhook signatures.
    pub app_secret: String,
    /// The Bearer token the Graph API expects.
    pub access_token: String,
    /// The number's Cloud API id.
    pub phone_number_id: String,
    /// The number as contacts see it (digits).
    pub display_phone_number: String,
    /// Pause between simulated status webhooks.
    pub status_delay: Duration,
    /// Send `delivered` and `read` after `sent`.
    pub auto_read: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            app_secret: "sim-app-secret".to_owned(),
            access_token: "sim-access-token".to_owned(),
            phone_number_id: "100000000000001".to_owned(),
            display_phone_number: "15550001111".to_owned(),
            status_delay: Duration::from_millis(20),
            auto_read: true,
        }
    }
}

/// A scripted failure for the next send(s).
#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    /// HTTP status to answer.
    pub status: u16,
    /// Graph error code (e.g. 130429, 131000); none for a bare 5xx.
    pub code: Option<i64>,
    /// Hang this long before answering (to exceed a client timeout).
    #[serde(default)]
    pub hang_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    cfg: Option<SimConfig>,
    sent: Vec<Value>,
    /// While set, every send fails this way (a provider outage).
    outage: Option<Failure>,
    media: HashMap<String, (Vec<u8>, String)>,
    failures: VecDeque<Failure>,
    no_whatsapp: HashSet<String>,
    window_closed: HashSet<String>,
    webhook_results: Vec<u16>,
    read_receipts: Vec<String>,
    /// Templates beyond the built-in opt-in one, as `message_templates` lists them.
    templates: Vec<Value>,
    /// Accept sends (and post their statuses) but answer the HTTP request only after
    /// this long: a send that times out at the client although the provider took it.
    slow_accept: Option<Duration>,
    /// Who is told, as it happens, of each send accepted and each status webhook posted.
    observers: Vec<tokio::sync::mpsc::UnboundedSender<Observed>>,
}

/// What the simulator did, with when, for a load tool timing each leg of a send: the
/// gateway's request reaching the provider, and the provider's status webhook reaching
/// the agent's desktop as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A send request accepted and given a provider message id, with the sender's
    /// `biz_opaque_callback_data` (Parley puts its own message id there).
    Accepted {
        /// When the request was accepted.
        at: Instant,
        /// The provider message id it was given.
        wamid: String,
        /// The request's `biz_opaque_callback_data`.
        callback: Option<String>,
    },
    /// A status webhook about to be posted to the gateway.
    StatusPosted {
        /// When its request started.
        at: Instant,
        /// The provider message id it is about.
        wamid: String,
        /// `sent`, `delivered`, `read` or `failed`.
        status: String,
    },
}

fn builtin_templates() -> Vec<Value> {
    vec![json!({
        "name": "parley_connect_optin", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "id": "1000000000000001",
        "components": [
            {"type": "BODY", "text": "Can we continue this conversation on WhatsApp?"},
            {"type": "BUTTONS", "buttons": [
                {"type": "QUICK_REPLY", "text": "Yes"}, {"type": "QUICK_REPLY", "text": "No"}
            ]}
        ]
    })]
}

/// The simulator's shared state; clone freely.
#[derive(Debug, Clone)]
pub struct Simulator {
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
    base_url: Arc<Mutex<String>>,
}

impl Simulator {
    /// A simulator with `cfg`.
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                cfg: Some(cfg),
                ..Inner::default()
            })),
            http: channel_connector::http_client(Duration::from_secs(10)),
            base_url: Arc::new(Mutex::new(String::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cfg(&self) -> SimConfig {
        self.lock().cfg.clone().unwrap_or_default()
    }

    /// Add or replace (by name and language) a template the provider holds, in its own
    /// shape (`name`, `language`, `status`, `category`, `components`, `id`).
    pub fn set_template(&self, t: Value) {
        let key = |v: &Value| (v.get("name").cloned(), v.get("language").cloned());
        let mut g = self.lock();
        g.templates.retain(|x| key(x) != key(&t));
        g.templates.push(t);
    }

    fn templates(&self) -> Vec<Value> {
        let extra = self.lock().templates.clone();
        let mut all: Vec<Value> = builtin_templates()
            .into_iter()
            .filter(|b| {
                !extra.iter().any(|e| {
                    e.get("name") == b.get("name") && e.get("language") == b.get("language")
                })
            })
            .collect();
        all.extend(extra);
        all
    }

    /// Point status and inbound webhooks at the gateway.
    pub fn set_webhook(&self, url: &str, app_secret: &str) {
        let mut g = self.lock();
        if let Some(c) = g.cfg.as_mut() {
            c.webhook_url = Some(url.to_owned());
            c.app_secret = app_secret.to_owned();
        }
    }

    /// Be told of each send accepted and each status webhook posted from now on, as they
    /// happen (see [`Observed`]). Dropping the receiver stops the telling.
    pub fn observe(&self) -> tokio::sync::mpsc::UnboundedReceiver<Observed> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.lock().observers.push(tx);
        rx
    }

    fn tell(&self, what: &Observed) {
        self.lock()
            .observers
            .retain(|tx| tx.send(what.clone()).is_ok());
    }

    /// The send requests received so far.
    pub fn sent(&self) -> Vec<Value> {
        self.lock().sent.clone()
    }

    /// Fail every send this way until called with `None` (a provider outage).
    pub fn set_outage(&self, failure: Option<Failure>) {
        self.lock().outage = failure;
    }

    /// Accept every send but answer only after `delay` (`None`: answer at once), as a
    /// provider does that takes a message and then is slow to say so.
    pub fn set_slow_accept(&self, delay: Option<Duration>) {
        self.lock().slow_accept = delay;
    }

    /// Answer the next sends with these failures, in order.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.lock().failures.extend(failures);
    }

    /// Numbers (digits or E.164) that are not on WhatsApp: sends fail with 131026.
    pub fn set_no_whatsapp(&self, number: &str) {
        self.lock().no_whatsapp.insert(digits(number));
    }

    /// Numbers outside the 24-hour window: free-form sends fail with 131047.
    pub fn set_window_closed(&self, number: &str) {
        self.lock().window_closed.insert(digits(number));
    }

    /// Hold media the contact is about to send; returns its media id.
    pub fn add_media(&self, bytes: Vec<u8>, mime: &str) -> String {
        let id = format!(
            "{}",
            8_000_000_000_000_u64 + u64::from(uuid::Uuid::new_v4().as_fields().0)
        );
        self.lock()
            .media
            .insert(id.clone(), (bytes, mime.to_owned()));
        id
    }

    /// Provider message ids the business marked read.
    pub fn read_receipts(&self) -> Vec<String> {
        self.lock().read_receipts.clone()
    }

    /// HTTP statuses the gateway answered to our webhooks.
    pub fn webhook_results(&self) -> Vec<u16> {
        self.lock().webhook_results.clone()
    }

    /// The `api_base_url` a channel account should use.
    pub fn api_base_url(&self) -> String {
        format!(
            "{}/v21.0",
            self.base_url.lock().map(|b| b.clone()).unwrap_or_default()
        )
    }

    /// POST a signed webhook body to the gateway; returns the gateway's status.
    pub async fn post_webhook(&self, body: &Value) -> Result<u16, String> {
        let cfg = self.cfg();
        let url = cfg.webhook_url.ok_or("no webhook URL configured")?;
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let sig = channel_connector::signature::sign(cfg.app_secret.as_bytes(), &bytes);
        let res = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(bytes)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        self.lock().webhook_results.push(status);
        Ok(status)
    }

    /// Wrap a `value` (messages / statuses) in the webhook envelope.
    pub fn envelope(&self, value: Value) -> Value {
        let cfg = self.cfg();
        let mut value = value;
        if let Some(o) = value.as_object_mut() {
            o.insert("messaging_product".into(), json!("whatsapp"));
            o.insert(
                "metadata".into(),
                json!({"display_phone_number": cfg.display_phone_number, "phone_number_id": cfg.phone_number_id}),
            );
        }
        json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA-SIM", "changes": [{"field": "messages", "value": value}]}]
        })
    }

    /// The contact sends `message` (a Cloud API message object without `from`/`id`/
    /// `timestamp`, which are filled in). Returns the provider id and the gateway's status.
    pub async fn contact_sends(
        &self,
        from: &str,
        name: &str,
        mut message: Value,
    ) -> Result<(String, u16), String> {
        let id = format!("wamid.SIM{}", uuid::Uuid::new_v4().simple());
        if let Some(o) = message.as_object_mut() {
            o.entry("from").or_insert(json!(digits(from)));
            o.entry("id").or_insert(json!(id.clone()));
            o.entry("timestamp")
                .or_insert(json!(unix_now().to_string()));
        }
        let id = message
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(&id)
            .to_owned();
        let body = self.envelope(json!({
            "contacts": [{"profile": {"name": name}, "wa_id": digits(from)}],
            "messages": [message],
        }));
        let status = self.post_webhook(&body).await?;
        Ok((id, status))
    }

    async fn send_status(
        &self,
        wamid: &str,
        to: &str,
        status: &str,
        callback: Option<&str>,
        error: Option<Value>,
    ) {
        let mut st = json!({
            "id": wamid, "status": status, "timestamp": unix_now().to_string(), "recipient_id": to,
        });
        if let Some(c) = callback {
            st["biz_opaque_callback_data"] = json!(c);
        }
        if let Some(e) = error {
            st["errors"] = json!([e]);
        }
        let body = self.envelope(json!({ "statuses": [st] }));
        if self.cfg().webhook_url.is_some() {
            self.tell(&Observed::StatusPosted {
                at: Instant::now(),
                wamid: wamid.to_owned(),
                status: status.to_owned(),
            });
        }
        if let Err(e) = self.post_webhook(&body).await {
            tracing::debug!(error = %e, "status webhook not delivered");
        }
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn graph_error(status: StatusCode, code: i64, message: &str, details: &str) -> Response {
    (
        status,
        Json(json!({"error": {
            "message": message, "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "SIMTRACE"
        }})),
    )
        .into_response()
}

fn authorized(sim: &Simulator, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", sim.cfg().access_token);
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

fn unauthorized() -> Response {
    graph_error(
        StatusCode::UNAUTHORIZED,
        190,
        "Invalid OAuth access token - Cannot parse access token",
        "",
    )
}

async fn send_message(
    State(sim): State<Simulator>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&sim, &headers) {
        return unauthorized();
    }
    if phone_number_id != sim.cfg().phone_number_id {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "Unsupported post request. Object does not exist",
            "",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "body is not JSON",
        );
    };
    let failure = {
        let mut inner = sim.lock();
        inner.failures.pop_front().or_else(|| inner.outage.clone())
    };
    if let Some(f) = failure {
        if f.hang_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.hang_ms)).await;
        }
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return match f.code {
            Some(code) => graph_error(status, code, "Simulated failure", "scripted by the test"),
            None => (status, "simulated outage").into_response(),
        };
    }
    if req.get("status").and_then(Value::as_str) == Some("read") {
        sim.lock().read_receipts.push(
            req.get("message_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        );
        return Json(json!({"success": true})).into_response();
    }
    if req.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "The parameter messaging_product is required.",
            "",
        );
    }
    let to = req
        .get("to")
        .or_else(|| req.get("recipient"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if to.is_empty() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "The parameter to is required.",
            "",
        );
    }
    if req.get("type").and_then(Value::as_str) == Some("template") {
        let name = req.pointer("/template/name").and_then(Value::as_str);
        let lang = req
            .pointer("/template/language/code")
            .and_then(Value::as_str);
        let approved = sim.templates().iter().any(|t| {
            t.get("name").and_then(Value::as_str) == name
                && t.get("language").and_then(Value::as_str) == lang
                && t.get("status").and_then(Value::as_str) == Some("APPROVED")
        });
        if !approved {
            return graph_error(
                StatusCode::NOT_FOUND,
                132001,
                "(#132001) Template name does not exist in the translation",
                "template name or language not found among approved templates",
            );
        }
    }
    let wamid = format!("wamid.SIM{}", uuid::Uuid::new_v4().simple());
    sim.lock().sent.push(req.clone());
    let callback = req
        .get("biz_opaque_callback_data")
        .and_then(Value::as_str)
        .map(str::to_owned);
    sim.tell(&Observed::Accepted {
        at: Instant::now(),
        wamid: wamid.clone(),
        callback: callback.clone(),
    });
    let to_digits = digits(&to);
    let kind = req
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("text")
        .to_owned();
    let (no_wa, closed) = {
        let g = sim.lock();
        (
            g.no_whatsapp.contains(&to_digits),
            g.window_closed.contains(&to_digits),
        )
    };
    let cfg = sim.cfg();
    let sim2 = sim.clone();
    let wamid2 = wamid.clone();
    let answer_wa_id = to_digits.clone();
    tokio::spawn(async move {
        tokio::time::sleep(cfg.status_delay).await;
        let cb = callback.as_deref();
        if no_wa {
            let err = json!({"code": 131026, "title": "Message Undeliverable",
                "message": "Message Undeliverable", "error_data": {"details": "Message could not be delivered"}});
            sim2.send_status(&wamid2, &to_digits, "failed", cb, Some(err))
                .await;
            return;
        }
        if closed && kind != "template" {
            let err = json!({"code": 131047, "title": "Re-engagement message",
                "message": "Re-engagement message", "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}});
            sim2.send_status(&wamid2, &to_digits, "failed", cb, Some(err))
                .await;
            return;
        }
        sim2.send_status(&wamid2, &to_digits, "sent", cb, None)
            .await;
        if cfg.auto_read {
            tokio::time::sleep(cfg.status_delay).await;
            sim2.send_status(&wamid2, &to_digits, "delivered", cb, None)
                .await;
            tokio::time::sleep(cfg.status_delay).await;
            sim2.send_status(&wamid2, &to_digits, "read", cb, None)
                .await;
        }
    });
    let slow = sim.lock().slow_accept;
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": answer_wa_id}],
        "messages": [{"id": wamid}]
    }))
    .into_response()
}

async fn upload_media(
    State(sim): State<Simulator>,
    Path((_version, _pnid)): Path<(String, String)>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    if !authorized(&sim, &headers) {
        return unauthorized();
    }
    let mut file: Option<(Vec<u8>, String)> = None;
    let mut product = None;
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("file") => {
                let mime = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                if let Ok(b) = field.bytes().await {
                    file = Some((b.to_vec(), mime));
                }
            }
            Some("messaging_product") => product = field.text().await.ok(),
            _ => {}
        }
    }
    if product.as_deref() != Some("whatsapp") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "The parameter messaging_product is required.",
            "",
        );
    }
    let Some(file) = file else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "The parameter file is required.",
            "",
        );
    };
    let id = format!(
        "{}",
        9_000_000_000_000_u64 + u64::from(uuid::Uuid::new_v4().as_fields().0)
    );
    sim.lock().media.insert(id.clone(), file);
    Json(json!({ "id": id })).into_response()
}

async fn media_info(
    State(sim): State<Simulator>,
    Path((_version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&sim, &headers) {
        return unauthorized();
    }
    let found = sim.lock().media.get(&media_id).cloned();
    match found {
        Some((bytes, mime)) => {
            use sha2::Digest as _;
            let base = sim.base_url.lock().map(|b| b.clone()).unwrap_or_default();
            Json(json!({
                "messaging_product": "whatsapp",
                "url": format!("{base}/_media/{media_id}"),
                "mime_type": mime,
                "sha256": hex::encode(sha2::Sha256::digest(&bytes)),
                "file_size": bytes.len(),
                "id": media_id,
            }))
            .into_response()
        }
        None => graph_error(StatusCode::NOT_FOUND, 100, "Unsupported get request.", ""),
    }
}

async fn media_download(
    State(sim): State<Simulator>,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&sim, &headers) {
        return unauthorized();
    }
    let found = sim.lock().media.get(&media_id).cloned();
    match found {
        Some((bytes, mime)) => ([("content-type", mime)], bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn message_templates(
    State(sim): State<Simulator>,
    Path((_version, _waba)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&sim, &headers) {
        return unauthorized();
    }
    Json(json!({
        "data": sim.templates(),
        "paging": {"cursors": {"before": "MAA", "after": "MAA"}}
    }))
    .into_response()
}

/// The legacy On-Premises contacts check (`POST /v1/contacts`), still offered by some
/// providers: which inputs are WhatsApp users.
async fn contacts_check(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&sim, &headers) {
        return unauthorized();
    }
    let no_wa = sim.lock().no_whatsapp.clone();
    let contacts: Vec<Value> = body
        .get("contacts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|input| {
                    let d = digits(input);
                    if no_wa.contains(&d) {
                        json!({"input": input, "status": "invalid"})
                    } else {
                        json!({"input": input, "status": "valid", "wa_id": d})
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Json(json!({ "contacts": contacts })).into_response()
}

/// `POST /_sim/inbound`: the contact writes.
#[derive(Debug, Deserialize)]
struct InboundReq {
    from: String,
    #[serde(default)]
    name: Option<String>,
    /// A whole Cloud API message object; or `text` for a plain text.
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    text: Option<String>,
}

async fn control_inbound(State(sim): State<Simulator>, Json(req): Json<InboundReq>) -> Response {
    let message = req
        .message
        .unwrap_or_else(|| json!({"type": "text", "text": {"body": req.text.unwrap_or_default()}}));
    match sim
        .contact_sends(
            &req.from,
            req.name.as_deref().unwrap_or("Simulated Contact"),
            message,
        )
        .await
    {
        Ok((id, status)) => Json(json!({"id": id, "gateway_status": status})).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

async fn control_sent(State(sim): State<Simulator>) -> Json<Value> {
    Json(Value::Array(sim.sent()))
}

async fn control_fail(State(sim): State<Simulator>, Json(f): Json<Vec<Failure>>) -> StatusCode {
    sim.fail_next(f);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct NumbersReq {
    #[serde(default)]
    no_whatsapp: Vec<String>,
    #[serde(default)]
    window_closed: Vec<String>,
}

async fn control_numbers(State(sim): State<Simulator>, Json(n): Json<NumbersReq>) -> StatusCode {
    for x in n.no_whatsapp {
        sim.set_no_whatsapp(&x);
    }
    for x in n.window_closed {
        sim.set_window_closed(&x);
    }
    StatusCode::NO_CONTENT
}

/// `POST /_sim/templates`: the provider now holds this template (its own shape).
async fn control_templates(State(sim): State<Simulator>, Json(t): Json<Value>) -> StatusCode {
    sim.set_template(t);
    StatusCode::NO_CONTENT
}

/// The simulator's routes.
pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/{version}/{phone_number_id}/messages", post(send_message))
        .route("/{version}/{phone_number_id}/media", post(upload_media))
        .route("/{version}/{media_id}", get(media_info))
        .route(
            "/{version}/{waba_id}/message_templates",
            get(message_templates),
        )
        .route("/_media/{media_id}", get(media_download))
        .route("/v1/contacts", post(contacts_check))
        .route("/_sim/inbound", post(control_inbound))
        .route("/_sim/sent", get(control_sent))
        .route("/_sim/fail", post(control_fail))
        .route("/_sim/numbers", post(control_numbers))
        .route("/_sim/templates", post(control_templates))
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
