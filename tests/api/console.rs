//! The agent console in a real browser (headless Chromium through chromedriver) against
//! the real gateway, its PostgreSQL and the WhatsApp simulator.

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TEST_PASSWORD, TestApp, TestUser, browser::Browser, spawn_app};

/// Where the run leaves its screenshots (the README's come from here).
fn shots() -> std::path::PathBuf {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

async fn signed_in(app: &TestApp, who: &TestUser) -> Browser {
    let b = Browser::start().await;
    b.goto(&app.url("/")).await;
    b.type_into("#login-email", &who.email).await;
    // Enter submits the form: the keyboard alone signs in.
    b.type_into("#login-password", &format!("{TEST_PASSWORD}\u{E007}"))
        .await;
    b.wait_text("#state-now", "show the agent's state", |t| !t.is_empty())
        .await;
    b.wait_text("#conn", "open the event stream", |t| t == "live")
        .await;
    b
}

/// The transcript's messages as (direction, text) pairs, in order.
async fn transcript(b: &Browser) -> Vec<(String, String)> {
    let v = b
        .js(
            "return [...document.querySelectorAll('#transcript .msg')].map(li => \
               [li.classList.contains('outbound') ? 'out' : 'in', li.querySelector('.text').textContent]);",
            json!([]),
        )
        .await;
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap_or_default().to_owned(),
                        p[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The agent signed in and Ready, with the chat `phone` (`name`) started by writing
/// `text` accepted and open.
async fn chatting(
    app: &TestApp,
    wa: &test_support::Wa,
    phone: &str,
    name: &str,
    text: &str,
) -> Browser {
    let b = signed_in(app, &app.agent).await;
    ready(&b).await;
    writes(wa, phone, name, text).await;
    b.click(".offer .accept").await;
    b.wait_text("#iv-title", "open the interaction", |t| t == name)
        .await;
    wait_message(&b, text).await;
    b
}

/// Find `query` in the Directory and open the (first) contact found.
async fn open_in_directory(b: &Browser, query: &str) {
    b.click("button[data-view=\"directory\"]").await;
    b.type_into("#dir-search", query).await;
    b.click("#dir-list button").await;
}

/// The agent goes Ready from the state menu.
async fn ready(b: &Browser) {
    b.select("#state-select", "ready").await;
    b.wait_text("#state-now", "say Ready", |t| t == "Ready")
        .await;
}

/// The contact at `phone` (named `name`) writes `text` on the simulated WhatsApp.
async fn writes(wa: &test_support::Wa, phone: &str, name: &str, text: &str) {
    wa.sim
        .contact_sends(phone, name, json!({"type": "text", "text": {"body": text}}))
        .await
        .expect("inbound");
}

async fn wait_message(b: &Browser, text: &str) {
    b.wait_js(
        &format!("`{text}` in the transcript"),
        "return [...document.querySelectorAll('#transcript .msg .text')].some(t => t.textContent === arguments[0]);",
        json!([text]),
    )
    .await;
}

async fn interaction_state(app: &TestApp, contact_phone: &str) -> (String, Option<String>) {
    sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT i.state, i.disposition FROM interactions i JOIN channel_identities ci
           ON ci.contact_id = i.contact_id
         WHERE ci.address IN ($1, ltrim($1, '+')) ORDER BY i.created_at DESC LIMIT 1",
    )
    .bind(contact_phone)
    .fetch_one(&app.db)
    .await
    .expect("interaction")
}

#[tokio::test]
async fn a_working_day_in_the_console() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Support", "wrap_up_codes": ["resolved", "callback"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // The agent signs in and goes Ready; a supervisor watches in a browser of their own.
    let b = signed_in(&app, &app.agent).await;
    let sup = signed_in(&app, &app.supervisor).await;
    sup.click("#tab-supervisor").await;
    ready(&b).await;
    b.wait_text("#conn", "be live", |t| t == "live").await;
    let row = format!("#agents tr[data-agent=\"{}\"] .agent-state", app.agent.id.0);
    sup.wait_text(&row, "show the agent Ready", |t| t == "Ready")
        .await;

    // A contact writes; the offer shows who, where and what, with a countdown.
    let ana = "+14155552671";
    writes(&wa, ana, "Ana", "¿Dónde está mi pedido?").await;
    b.wait_text(".offer .who", "name the contact", |t| t == "Ana")
        .await;
    b.wait_text(".offer .first", "show the first message", |t| {
        t == "¿Dónde está mi pedido?"
    })
    .await;
    b.wait_text(".offer .countdown", "count down", |t| {
        t.ends_with("s to answer")
    })
    .await;
    assert!(
        b.text_of(&b.wait(".offer").await)
            .await
            .contains("whatsapp")
    );
    std::fs::write(shots().join("offer.png"), b.screenshot().await).expect("shot");
    b.click(".offer .accept").await;
    b.wait_text("#iv-title", "open the interaction", |t| t == "Ana")
        .await;
    wait_message(&b, "¿Dónde está mi pedido?").await;
    b.wait_text("#iv-window", "show the reply window", |t| {
        t.starts_with("Free-form replies allowed until")
    })
    .await;

    // A reply with text and an emoji from the palette (typed keys cannot carry emoji).
    b.type_into("#compose", "Está en camino ").await;
    b.click("#emoji-toggle").await;
    b.click("#emoji button[aria-label=\"Insert 📦\"]").await;
    b.click("#send").await;
    wait_message(&b, "Está en camino 📦").await;
    // The simulated phone reads it: the status follows live.
    b.wait_js(
        "the reply to show read",
        "const li = [...document.querySelectorAll('#transcript .msg.outbound')].pop(); \
         return !!li && li.querySelector('.status').dataset.status === 'read';",
        json!([]),
    )
    .await;
    let sent = wa.sim.sent();
    assert_eq!(sent[0]["text"]["body"], "Está en camino 📦");

    // An image, picked from a file, previewed, sent and shown.
    let _ = std::fs::create_dir_all(&app.data_dir);
    let file = app.data_dir.join("receipt.png");
    std::fs::write(&file, crate::attachments::PNG).expect("png");
    b.upload("#attach", &file).await;
    b.wait("#preview").await;
    b.type_into("#compose", "the receipt").await;
    b.click("#send").await;
    b.wait_js(
        "the image to show in the transcript",
        "const img = document.querySelector('#transcript .msg.outbound img'); \
         return !!img && img.complete && img.naturalWidth > 0;",
        json!([]),
    )
    .await;
    app.eventually("the image reached the phone", || async {
        wa.sim.sent().iter().any(|m| m["type"] == "image")
    })
    .await;

    // The contact answers: it arrives live.
    writes(&wa, ana, "Ana", "Gracias, lo espero").await;
    wait_message(&b, "Gracias, lo espero").await;
    std::fs::write(shots().join("interaction.png"), b.screenshot().await).expect("shot");

    // Search the transcript: the hit is listed, jumped to, and highlighted.
    b.type_into("#search", "pedido\u{E007}").await;
    b.click("#search-hits button").await;
    b.wait_text("#transcript .focus mark", "highlight the hit", |t| {
        t == "pedido"
    })
    .await;

    // End; the contact writes again and the ended interaction resumes.
    b.click("#iv-end").await;
    b.wait_text("#iv-meta", "show it ended", |t| t.contains("ended"))
        .await;
    writes(&wa, ana, "Ana", "una cosa más").await;
    b.wait_text("#iv-meta", "show it resumed", |t| t.contains("active"))
        .await;
    wait_message(&b, "una cosa más").await;

    // The socket drops; the contact writes twice meanwhile; the console says so,
    // catches up, and shows each message once.
    b.js(
        "const Real = window.WebSocket; \
         window.WebSocket = class extends Real { constructor(u) { super(window.__offline ? 'ws://127.0.0.1:9/' : u); } }; \
         window.__offline = true; S.socket.close(); return true;",
        json!([]),
    )
    .await;
    b.wait_text("#conn", "say reconnecting", |t| t == "reconnecting…")
        .await;
    for text in ["primero", "segundo"] {
        writes(&wa, ana, "Ana", text).await;
    }
    // Stored, but not on screen while the socket is down.
    app.eventually("both stored", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM messages WHERE body IN ('primero', 'segundo')",
        )
        .fetch_one(&app.db)
        .await
        .unwrap_or(0)
            == 2
    })
    .await;
    assert!(!transcript(&b).await.iter().any(|(_, t)| t == "primero"));
    b.js("window.__offline = false; return true;", json!([]))
        .await;
    b.wait_text("#conn", "be live again", |t| t == "live").await;
    wait_message(&b, "segundo").await;
    let shown = transcript(&b).await;
    for text in ["primero", "segundo", "una cosa más", "Gracias, lo espero"] {
        assert_eq!(
            shown.iter().filter(|(_, t)| t == text).count(),
            1,
            "{text} once: {shown:?}"
        );
    }
    let order: Vec<&str> = shown.iter().map(|(_, t)| t.as_str()).collect();
    let p = order.iter().position(|t| *t == "primero");
    let s = order.iter().position(|t| *t == "segundo");
    assert!(p < s, "in order: {order:?}");

    // End, then Done with the queue's wrap-up code.
    b.click("#iv-end").await;
    b.wait_text("#iv-meta", "show it ended", |t| t.contains("ended"))
        .await;
    b.select("#iv-wrapup", "resolved").await;
    b.click("#iv-done").await;
    b.wait_js(
        "the interaction view to close",
        "return document.getElementById('iv').hidden;",
        json!([]),
    )
    .await;
    assert_eq!(
        interaction_state(&app, ana).await,
        ("done".to_owned(), Some("resolved".to_owned()))
    );

    // After Done a new chat is offered and opens in a fresh interaction.
    writes(&wa, "+447700900123", "Bob", "Hello there").await;
    b.click(".offer .accept").await;
    b.wait_text("#iv-title", "open Bob's interaction", |t| t == "Bob")
        .await;
    wait_message(&b, "Hello there").await;

    // A notification template: the name filled from Bob's data (and said so), the blank
    // typed, the header image dropped on its placeholder, the buttons previewed.
    let bob = app.contact_id_of("+447700900123").await;
    let r = app
        .patch(
            &format!("/api/v1/contacts/{bob}"),
            &app.agent.token,
            &json!({"attributes": {"preferred_name": "Bobby"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    wa.sim
        .set_template(crate::templates::at_provider("APPROVED"));
    let r = app
        .post(
            "/api/v1/templates",
            &app.supervisor.token,
            &crate::templates::appointment(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let template = r.json["id"].as_str().expect("id").to_owned();
    b.click("#iv-notify").await;
    b.select("#nv-template", &template).await;
    b.wait_text("#nv-body", "show the filled body", |t| {
        t == "Hello Bobby, we can offer you an appointment on {{2}}. Does that suit you?"
    })
    .await;
    b.wait_text(
        "#nv-fields tr[data-key=\"1\"] .source",
        "say where the name came from",
        |t| t == "the contact's data",
    )
    .await;
    let blank = b
        .js(
            "const i = document.querySelector('#nv-fields input[data-key=\"2\"]'); return [i.required, i.classList.contains('blank')];",
            json!([]),
        )
        .await;
    assert_eq!(
        blank,
        json!([true, true]),
        "the blank is highlighted and required"
    );
    assert_eq!(
        b.text_of(&b.wait("#nv-buttons").await)
            .await
            .replace('\n', " "),
        "Yes No"
    );
    // Sending before the blank is filled is refused, naming the field.
    b.click("#nv-send").await;
    b.wait_text("#nv-error", "name what is missing", |t| {
        t.contains("header image")
    })
    .await;
    b.js(
        "const bytes = new Uint8Array(arguments[0]);          const dt = new DataTransfer(); dt.items.add(new File([bytes], 'clinic.png', {type: 'image/png'}));          document.getElementById('nv-drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));          return true;",
        json!([crate::attachments::PNG]),
    )
    .await;
    b.wait("#nv-image-preview").await;
    b.type_into("#nv-fields input[data-key=\"2\"]", "Monday at 10:00")
        .await;
    b.click("#nv-send").await;
    let sent_text = "Hello Bobby, we can offer you an appointment on Monday at 10:00. Does that suit you?\n\nReply STOP to opt out";
    wait_message(&b, sent_text).await;
    let notification = app
        .transcript_of(&bob)
        .await
        .into_iter()
        .find(|m| m["kind"] == "template")
        .expect("the notification");
    let mut wamid = None;
    for _ in 0..100 {
        wamid = app
            .transcript_of(&bob)
            .await
            .into_iter()
            .find(|m| m["id"] == notification["id"])
            .and_then(|m| m["provider_message_id"].as_str().map(str::to_owned));
        if wamid.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let wamid = wamid.expect("sent");
    let template_out = wa
        .sim
        .sent()
        .into_iter()
        .find(|m| m["type"] == "template")
        .expect("template at the provider");
    assert_eq!(
        template_out["template"]["components"][1]["parameters"][0]["text"],
        "Bobby"
    );
    // Bob taps "Yes": it shows, linked to the notification.
    wa.sim
        .contact_sends(
            "+447700900123",
            "Bob",
            json!({"type": "button", "button": {"payload": "APPT_YES", "text": "Yes"},
                   "context": {"from": "15550001111", "id": wamid}}),
        )
        .await
        .expect("tap");
    wait_message(&b, "Yes").await;
    let linked = b
        .js(
            "const li = [...document.querySelectorAll('#transcript .msg')].find(l => l.querySelector('.text').textContent === 'Yes');              const r = li && li.querySelector('.reply-to'); return r ? [r.dataset.replyTo, r.textContent] : null;",
            json!([]),
        )
        .await;
    assert_eq!(linked[0], notification["id"], "{linked}");
    assert!(
        linked[1]
            .as_str()
            .is_some_and(|t| t.starts_with("↪ Hello Bobby")),
        "{linked}"
    );
    std::fs::write(shots().join("notification.png"), b.screenshot().await).expect("shot");

    // The supervisor sees the agent's state change live.
    b.select("#state-select", "after_work").await;
    sup.wait_text(&row, "show After Work", |t| t == "After Work")
        .await;
    std::fs::write(shots().join("supervisor.png"), sup.screenshot().await).expect("shot");

    // A reload keeps the agent's state and work.
    b.goto(&app.url("/")).await;
    b.wait_text("#state-now", "still After Work", |t| t == "After Work")
        .await;
    b.wait_text("#iv-title", "reopen the interaction", |t| t == "Bob")
        .await;

    // And the narrow window still shows the composer, with nothing wider than the window.
    b.resize(420, 800).await;
    b.wait("#compose").await;
    let fits = b
        .js(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            json!([]),
        )
        .await;
    assert_eq!(fits, true, "no horizontal scrolling at 420 px");

    assert_eq!(b.script_errors().await, Vec::<String>::new());
}

#[tokio::test]
async fn what_a_contact_sends_is_shown_as_text_never_run() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let b = signed_in(&app, &app.agent).await;
    ready(&b).await;
    let name = "<img src=x onerror=\"window.__xss='name'\">";
    let text = "<script>window.__xss='text'</script><b>bold</b> שלום";
    writes(&wa, "+14155550199", name, text).await;
    b.wait_text(".offer .who", "show the name", |t| t == name)
        .await;
    b.wait_text(".offer .first", "show the text", |t| t == text)
        .await;
    b.click(".offer .accept").await;
    b.wait_text("#iv-title", "show the name as text", |t| t == name)
        .await;
    wait_message(&b, text).await;
    // A long unbroken word wraps inside its bubble.
    let word = "x".repeat(400);
    writes(&wa, "+14155550199", name, &word).await;
    wait_message(&b, &word).await;
    let wraps = b
        .js(
            "const li = [...document.querySelectorAll('#transcript .msg')].pop(); \
             return li.scrollWidth <= li.clientWidth && li.getBoundingClientRect().right <= window.innerWidth;",
            json!([]),
        )
        .await;
    assert_eq!(wraps, true, "the long word stays inside its bubble");
    let v: Value = b
        .js(
            "return {xss: window.__xss || null, \
                     tags: document.querySelectorAll('#transcript b, #transcript script, #iv-title img, #offers img').length};",
            json!([]),
        )
        .await;
    assert_eq!(v["xss"], Value::Null, "nothing ran: {v}");
    assert_eq!(v["tags"], 0, "no element made from the contact's text: {v}");
    // The page refuses inline script outright.
    let res = app.client.get(app.url("/")).send().await.expect("index");
    let csp = res
        .headers()
        .get("content-security-policy")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(b.script_errors().await, Vec::<String>::new());
}

#[tokio::test]
async fn the_directory_communication_tab_and_supervisor_kpis() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let carla = "+14155550123";
    writes(&wa, carla, "Carla Gómez", "¿Hay alguien?").await;
    let b = signed_in(&app, &app.agent).await;

    // Communication tab: the conversation with its unread count; reading it; writing.
    b.click("button[data-view=\"communication\"]").await;
    b.wait_text("#conv-list li .count", "count the unread", |t| t == "1")
        .await;
    b.click("#conv-list button").await;
    b.wait_text("#cv-title", "open the conversation", |t| t == "Carla Gómez")
        .await;
    b.wait_text("#cv-transcript .msg .text", "show the message", |t| {
        t == "¿Hay alguien?"
    })
    .await;
    b.wait_js(
        "the unread count to clear once read",
        "return !document.querySelector('#conv-list .count');",
        json!([]),
    )
    .await;
    b.type_into("#cv-compose", "Sí, dígame").await;
    b.click("#cv-send").await;
    app.eventually("the reply reached the phone", || async {
        wa.sim
            .sent()
            .iter()
            .any(|m| m["text"]["body"] == "Sí, dígame")
    })
    .await;
    // The contact's answer shows live in the open conversation.
    writes(&wa, carla, "Carla Gómez", "Mi factura").await;
    b.wait_js(
        "the answer in the Communication tab",
        "return [...document.querySelectorAll('#cv-transcript .msg .text')].some(t => t.textContent === 'Mi factura');",
        json!([]),
    )
    .await;
    // Open, it stays read.
    b.wait_js(
        "no unread count while the conversation is open",
        "return !document.querySelector('#conv-list .count');",
        json!([]),
    )
    .await;

    // Directory: found by a word of the name, its channel and state, Validate, a new
    // number, data edited.
    open_in_directory(&b, "gomez").await;
    b.wait_text(
        "#dir-identities li[data-channel=\"whatsapp\"]",
        "list the WhatsApp number",
        |t| t.contains("+14155550123"),
    )
    .await;
    b.click("#dir-identities li[data-channel=\"whatsapp\"] summary")
        .await;
    b.click("#dir-identities li[data-channel=\"whatsapp\"] .validate")
        .await;
    b.wait_text("#dir-verdict", "give the verdict", |t| {
        t.starts_with("connected: the contact wrote from this number")
    })
    .await;
    b.wait_text(
        "#dir-identities li[data-channel=\"whatsapp\"] .status",
        "show connected",
        |t| t == "connected",
    )
    .await;
    b.select("#dir-add-channel", "sms").await;
    b.type_into("#dir-add-address", "+1 (310) 555-0142").await;
    b.click("#dir-add button[type=\"submit\"]").await;
    b.wait_text(
        "#dir-identities li[data-channel=\"sms\"]",
        "list the new number, normalised",
        |t| t.contains("+13105550142"),
    )
    .await;
    b.type_into("#dir-attr-key", "customer_id").await;
    b.type_into("#dir-attr-value", "ACME-00042").await;
    b.click("#dir-attr-form button").await;
    b.wait_text(
        "#dir-attrs tr[data-key=\"customer_id\"] td",
        "show the data",
        |t| t == "ACME-00042",
    )
    .await;
    // Connect on a second WhatsApp number: the opt-in template goes out.
    b.select("#dir-add-channel", "whatsapp").await;
    b.type_into("#dir-add-address", "+14155550124").await;
    b.click("#dir-add button[type=\"submit\"]").await;
    let second = "#dir-identities li[data-channel=\"whatsapp\"]:nth-child(3)";
    b.wait_text(second, "list the second WhatsApp number", |t| {
        t.contains("+14155550124")
    })
    .await;
    b.click(&format!("{second} summary")).await;
    b.click(&format!("{second} .connect")).await;
    b.wait_text(
        &format!("{second} .status"),
        "show connect requested",
        |t| t == "connect requested",
    )
    .await;
    app.eventually("the opt-in template went out", || async {
        wa.sim
            .sent()
            .iter()
            .any(|m| m["type"] == "template" && m["to"] == "14155550124")
    })
    .await;
    std::fs::write(shots().join("directory.png"), b.screenshot().await).expect("shot");
    // Create WhatsApp interaction: it opens in the interaction view, active and mine.
    b.click("#dir-identities li[data-channel=\"whatsapp\"] summary")
        .await;
    b.click("#dir-identities li[data-channel=\"whatsapp\"] .create")
        .await;
    b.wait_text("#iv-title", "open the interaction", |t| t == "Carla Gómez")
        .await;
    b.wait_text("#iv-meta", "show it active", |t| t.contains("active"))
        .await;

    // The supervisor: queue depths and the agent's KPIs for today.
    let sup = signed_in(&app, &app.supervisor).await;
    sup.click("#tab-supervisor").await;
    sup.wait_text(
        &format!("#kpis tr[data-agent=\"{}\"] .handled", app.agent.id.0),
        "count the agent's interaction",
        |t| t == "1",
    )
    .await;
    sup.wait("#queue-depths").await;
    assert_eq!(b.script_errors().await, Vec::<String>::new());
    assert_eq!(sup.script_errors().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_session_outlives_its_access_token_and_a_lost_one_keeps_the_draft() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let b = chatting(&app, &wa, "+972521234567", "Dana", "שלום, איפה ההזמנה שלי?").await;
    // Right-to-left text runs right to left, message by message.
    let dir = b
        .js(
            "return getComputedStyle(document.querySelector('#transcript .msg .text')).direction;",
            json!([]),
        )
        .await;
    assert_eq!(dir, "rtl");
    b.type_into("#compose", "half a thought").await;

    // The access token expires: the next call refreshes it and carries on.
    b.js(
        "S.session.access_token = 'expired'; return true;",
        json!([]),
    )
    .await;
    b.click("button[data-view=\"communication\"]").await;
    b.wait_text("#conv-list", "list the conversation", |t| {
        t.contains("Dana")
    })
    .await;
    let token = b.js("return S.session.access_token;", json!([])).await;
    assert!(
        token
            .as_str()
            .is_some_and(|t| t != "expired" && t.len() > 20),
        "{token}"
    );
    assert!(
        b.find("#login-view:not([hidden])").await.is_none(),
        "still signed in"
    );

    // The socket moved to the new token with the refresh: the contact's next message is
    // live.
    writes(&wa, "+972521234567", "Dana", "עדיין כאן?").await;
    b.click("button[data-view=\"interactions\"]").await;
    wait_message(&b, "עדיין כאן?").await;

    // The session ends elsewhere (logged out with its token): the server closes the
    // socket, the refresh is refused, and the console goes back to sign-in, draft kept.
    let token = b.js("return S.session.access_token;", json!([])).await;
    let res = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(token.as_str().expect("token"))
        .send()
        .await
        .expect("logout");
    assert!(res.status().is_success(), "{}", res.status());
    b.wait_text("#login-error", "say why", |t| {
        t.starts_with("Your session ended")
    })
    .await;
    // The email is kept; the password typed again.
    let email = b
        .js(
            "return document.getElementById('login-email').value;",
            json!([]),
        )
        .await;
    assert_eq!(email, app.agent.email.as_str());
    b.type_into("#login-password", &format!("{TEST_PASSWORD}\u{E007}"))
        .await;
    b.click("button[data-view=\"interactions\"]").await;
    b.wait_text("#iv-title", "reopen the interaction", |t| t == "Dana")
        .await;
    let draft = b
        .js(
            "return document.getElementById('compose').value;",
            json!([]),
        )
        .await;
    assert_eq!(draft, "half a thought");
    // Signed out, a colleague signs in on the same page: nothing of the agent's shows.
    b.click("#logout").await;
    b.wait("#login-email").await;
    b.clear("#login-email").await;
    b.type_into("#login-email", &app.supervisor.email).await;
    b.type_into("#login-password", &format!("{TEST_PASSWORD}\u{E007}"))
        .await;
    b.wait_text("#me-name", "greet the supervisor", |t| {
        t == "Test supervisor"
    })
    .await;
    let left = b
        .js(
            "return [document.getElementById('iv').hidden, \
                     document.querySelectorAll('#interaction-list li').length, \
                     Object.keys(localStorage).filter(k => k.includes(arguments[0])).length];",
            json!([app.supervisor.id.0.to_string()]),
        )
        .await;
    assert_eq!(
        left,
        json!([true, 0, 0]),
        "the agent's chat and draft stay the agent's"
    );
    // The browser logged the refused calls (the expired token, the lost session and its
    // refresh), and nothing else.
    let errors = b.script_errors().await;
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e.contains("401 (Unauthorized)")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn paging_responses_failures_and_transfer_in_the_console() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let r = app
        .post(
            "/api/v1/standard-responses",
            &app.supervisor.token,
            &json!({"name": "Greeting", "shortcut": "/hi",
                    "text": "Hi {{first_name}}, I'm {{agent}}. How can I help?",
                    "bindings": {"first_name": {"bind": "contact.first_name", "default": "there"},
                                 "agent": {"bind": "agent.first_name"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Billing"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let billing = r.json["id"].as_str().expect("id").to_owned();
    // Forty messages before anyone is there.
    let eva = "+34612345678";
    for n in 1..=40 {
        writes(&wa, eva, "Eva Ruiz", &format!("m{n:02}")).await;
    }
    let b = signed_in(&app, &app.agent).await;
    ready(&b).await;
    b.click(".offer .accept").await;
    wait_message(&b, "m40").await;
    // A page at a time, older ones on request.
    let shown = transcript(&b).await.len();
    assert!(shown < 40, "one page first: {shown}");
    b.click("#load-earlier").await;
    wait_message(&b, "m01").await;
    let texts: Vec<String> = transcript(&b).await.into_iter().map(|(_, t)| t).collect();
    let expected: Vec<String> = (1..=40).map(|n| format!("m{n:02}")).collect();
    assert_eq!(texts, expected, "every message once, in order");

    // A standard response found by its shortcut, filled for Eva and the agent.
    b.click("#sr-toggle").await;
    b.type_into("#sr-q", "/hi").await;
    b.wait_text("#sr-list", "find the response", |t| t.contains("Greeting"))
        .await;
    b.click("#sr-list button").await;
    b.wait_js(
        "the filled response in the draft",
        "return document.getElementById('compose').value === arguments[0];",
        json!(["Hi Eva, I'm Test. How can I help?"]),
    )
    .await;
    b.click("#send").await;
    wait_message(&b, "Hi Eva, I'm Test. How can I help?").await;

    // The window closes at the provider (131047): the failure shows with its reason and
    // the composer offers a template instead.
    wa.sim.set_window_closed(eva);
    b.type_into("#compose", "are you there?").await;
    b.click("#send").await;
    b.wait_js(
        "the failure with its reason",
        "const li = [...document.querySelectorAll('#transcript .msg.outbound')].pop(); \
         return !!li && li.querySelector('.status').textContent.startsWith('failed: ');",
        json!([]),
    )
    .await;
    b.wait("#window-closed #window-notify").await;
    let disabled = b
        .js(
            "return document.getElementById('compose').disabled;",
            json!([]),
        )
        .await;
    assert_eq!(disabled, true);
    b.click("#window-notify").await;
    b.wait("#nv-template").await;
    b.click("#nv-close").await;

    // Transfer to a queue: it leaves the agent's view and waits in Billing.
    b.select("#iv-transfer", &format!("queue:{billing}")).await;
    b.click("#iv-transfer-go").await;
    b.wait_js(
        "the interaction to leave the view",
        "return document.getElementById('iv').hidden;",
        json!([]),
    )
    .await;
    let queue: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT queue_id FROM interactions WHERE state IN ('queued', 'offered') ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .expect("queued");
    assert_eq!(queue.map(|q| q.to_string()), Some(billing));

    // A number not on WhatsApp shows invalid, with a warning and the provider's reason.
    let finn = "+33612345678";
    writes(&wa, finn, "Finn", "hello").await;
    wa.sim.set_no_whatsapp(finn);
    let contact = app.contact_id_of(finn).await;
    let r = app
        .post(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "text": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    app.eventually("the send failed", || async {
        app.transcript_of(&contact)
            .await
            .iter()
            .any(|m| m["status"] == "failed")
    })
    .await;
    open_in_directory(&b, "Finn").await;
    b.wait_text(
        "#dir-identities li[data-channel=\"whatsapp\"] .status",
        "show invalid",
        |t| t == "invalid",
    )
    .await;
    let warning = b
        .js(
            "const li = document.querySelector('#dir-identities li[data-channel=\"whatsapp\"]'); \
             return [!!li.querySelector('.warn[aria-label=\"warning\"]'), li.querySelector('.why').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(warning[0], true);
    assert!(
        warning[1].as_str().is_some_and(|t| !t.is_empty()),
        "the provider's reason: {warning}"
    );
    assert_eq!(b.script_errors().await, Vec::<String>::new());
}

#[tokio::test]
async fn the_desktop_is_notified_in_the_background_and_the_keyboard_alone_works() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let b = signed_in(&app, &app.agent).await;
    ready(&b).await;
    // The window is in the background; the browser's Notification API records what it
    // would show.
    b.js(
        "window.__notes = []; \
         window.Notification = class { \
           constructor(title, o) { window.__notes.push([title, (o && o.body) || '']); } \
           static get permission() { return 'granted'; } \
           static requestPermission() { return Promise.resolve('granted'); } }; \
         Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); \
         return true;",
        json!([]),
    )
    .await;
    writes(&wa, "+14155550177", "Gus", "anyone there?").await;
    b.wait_js(
        "a desktop notification of the offer",
        "return window.__notes.some(n => n[0] === 'New interaction');",
        json!([]),
    )
    .await;
    // Enter on the focused Accept button accepts; the composer takes the focus; Enter
    // sends.
    b.type_into(".offer .accept", "\u{E007}").await;
    b.wait_text("#iv-title", "open the interaction", |t| t == "Gus")
        .await;
    let focused = b.js("return document.activeElement.id;", json!([])).await;
    assert_eq!(focused, "compose");
    b.type_into("#compose", "yes, here\u{E007}").await;
    wait_message(&b, "yes, here").await;
    app.eventually("the reply reached the phone", || async {
        wa.sim
            .sent()
            .iter()
            .any(|m| m["text"]["body"] == "yes, here")
    })
    .await;
    // An image dropped on the composer is previewed and sent.
    b.js(
        "const dt = new DataTransfer(); \
         dt.items.add(new File([new Uint8Array(arguments[0])], 'photo.png', {type: 'image/png'})); \
         document.getElementById('composer').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); \
         return true;",
        json!([crate::attachments::PNG]),
    )
    .await;
    b.wait("#preview").await;
    b.click("#send").await;
    app.eventually("the dropped image reached the phone", || async {
        wa.sim.sent().iter().any(|m| m["type"] == "image")
    })
    .await;
    // The contact's reply, in the background, is notified with its text.
    writes(&wa, "+14155550177", "Gus", "great, thanks").await;
    b.wait_js(
        "a desktop notification of the reply",
        "return window.__notes.some(n => n[0] === 'New message' && n[1] === 'great, thanks');",
        json!([]),
    )
    .await;
    // Every control has a name a screen reader can read.
    let unnamed = b
        .js(
            "return [...document.querySelectorAll('button, input, select, textarea')] \
               .filter(e => e.offsetParent !== null) \
               .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') \
                            && !e.textContent.trim() && !e.placeholder) \
               .map(e => e.id || e.outerHTML.slice(0, 60));",
            json!([]),
        )
        .await;
    assert_eq!(unnamed, json!([]), "controls without a name");
    assert_eq!(b.script_errors().await, Vec::<String>::new());
}

#[tokio::test]
async fn an_agent_transfers_to_a_colleague_who_is_ready() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    let b = chatting(&app, &wa, "+14155550166", "Hana", "I need billing").await;
    // The supervisor is not Ready: not offered as a target.
    let targets = || async {
        b.js(
            "return [...document.querySelectorAll('#iv-transfer option')].map(o => o.value);",
            json!([]),
        )
        .await
    };
    let colleague = format!("agent:{}", app.supervisor.id.0);
    assert!(
        !targets()
            .await
            .as_array()
            .is_some_and(|a| a.contains(&json!(colleague)))
    );
    crate::routing::ready(&app, &app.supervisor).await;
    // Reopening the interaction reads who can take it now.
    b.click("#interaction-list button").await;
    b.wait_js(
        "the Ready colleague listed",
        "return [...document.querySelectorAll('#iv-transfer option')].some(o => o.value === arguments[0]);",
        json!([colleague]),
    )
    .await;
    b.select("#iv-transfer", &colleague).await;
    b.click("#iv-transfer-go").await;
    b.wait_js(
        "the interaction to leave the view",
        "return document.getElementById('iv').hidden;",
        json!([]),
    )
    .await;
    let offered = crate::routing::wait_offer(&app, &app.supervisor).await;
    assert_eq!(
        offered,
        sqlx::query_scalar::<_, uuid::Uuid>(
            "SELECT id FROM interactions ORDER BY created_at DESC LIMIT 1"
        )
        .fetch_one(&app.db)
        .await
        .expect("interaction")
        .to_string()
    );
    assert_eq!(b.script_errors().await, Vec::<String>::new());
}
