//! Search finds what people type: case and accents folded in every script, word
//! prefixes, parts of numbers, attached Hebrew and Arabic prefixes, scripts written
//! without spaces; the directory finds names without accents, numbers in any format
//! and attribute values; rows stored under the previous analysis are analysed again.

use reqwest::StatusCode;
use serde_json::json;
use test_support::{Reply, spawn_app};

/// `s` percent-encoded for a query string.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn texts(r: &Reply) -> Vec<String> {
    r.json["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {}", r.text))
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn names(r: &Reply) -> Vec<String> {
    let mut names: Vec<String> = r.json["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {}", r.text))
        .iter()
        .map(|c| {
            c["name"]
                .as_str()
                .or_else(|| c["contact_name"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn transcript_and_tenant_search_find_what_people_type() {
    let app = spawn_app().await;
    let messages = [
        "¿Ya llegó el pedido?",
        "Η παραγγελία σας στάλθηκε",
        "איפה ההזמנה שלי",
        "제 주문을 취소하고 싶어요",
        "call me on +1 (555) 123-4567 please",
        "私の注文はどこですか",
        "ขอบคุณสำหรับคำสั่งซื้อ",
        "أين الطلب بالعالم",
        "nothing to see here",
    ];
    let first = app.inbound("+14155552671", messages[0]).await;
    for m in &messages[1..] {
        app.inbound("+14155552671", m).await;
    }
    let base = format!("/api/v1/contacts/{}/messages", first.contact_id);
    for (query, expected) in [
        ("llego", messages[0]),
        ("LLEGÓ", messages[0]),
        ("pedid", messages[0]),
        ("ΠΑΡΑΓΓΕΛΙΑ", messages[1]),
        ("παραγγελια", messages[1]),
        ("הזמנה", messages[2]),
        ("주문", messages[3]),
        ("5551234567", messages[4]),
        ("4567", messages[4]),
        ("555-123-4567", messages[4]),
        ("注文", messages[5]),
        ("คำสั่งซื้อ", messages[6]),
        ("عالم", messages[7]),
    ] {
        let r = app
            .get(&format!("{base}?q={}", enc(query)), &app.agent.token)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(texts(&r), vec![expected], "in-contact {query:?}");
        let r = app
            .get(
                &format!("/api/v1/messages/search?q={}", enc(query)),
                &app.agent.token,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let found: Vec<&str> = r.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|h| h["message"]["text"].as_str())
            .collect();
        assert_eq!(found, vec![expected], "tenant-wide {query:?}");
    }
    // A prefix longer than the word, and characters out of order, find nothing.
    for query in ["pedidos", "文注", "1239"] {
        let r = app
            .get(&format!("{base}?q={}", enc(query)), &app.agent.token)
            .await;
        assert_eq!(texts(&r), Vec::<String>::new(), "{query:?}");
    }

    // Highlights mark whole words and phrases, never stray characters.
    let highlight = |q: &'static str| {
        let app = &app;
        async move {
            let r = app
                .get(
                    &format!("/api/v1/messages/search?q={}", enc(q)),
                    &app.agent.token,
                )
                .await;
            r.json["items"][0]["highlight"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(
        highlight("pedid llego").await,
        "¿Ya <mark>llegó</mark> el <mark>pedido</mark>?"
    );
    assert_eq!(highlight("注文").await, "私の<mark>注文</mark>はどこですか");
    assert_eq!(highlight("คำสั่ง").await, "ขอบคุณสำหรับ<mark>คำสั่ง</mark>ซื้อ");
    assert_eq!(highlight("הזמנה").await, "איפה <mark>ההזמנה</mark> שלי");
}

#[tokio::test]
async fn the_directory_finds_names_without_accents_numbers_in_any_format_and_attribute_values() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (name, phone, attributes) in [
        (
            "Gabi Gómez",
            "+447700900123",
            json!({"account": "ACME-00042", "city": "Zürich"}),
        ),
        (
            "Gabriel Gomes",
            "+14155550123",
            json!({"tier": {"level": "Gold"}}),
        ),
        ("Σοφία Παπαδοπούλου", "+306912345678", json!({})),
    ] {
        let r = app
            .post(
                "/api/v1/contacts",
                &app.agent.token,
                &json!({"name": name, "attributes": attributes,
                        "identities": [{"channel": "whatsapp", "address": phone}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.json["id"].as_str().expect("id").to_owned());
    }
    for (query, expected) in [
        ("gomez", vec!["Gabi Gómez"]),
        ("GÓMEZ", vec!["Gabi Gómez"]),
        ("gomez gabi", vec!["Gabi Gómez"]),
        ("gab", vec!["Gabi Gómez", "Gabriel Gomes"]),
        ("acme-00042", vec!["Gabi Gómez"]),
        ("zurich", vec!["Gabi Gómez"]),
        ("gold", vec!["Gabriel Gomes"]),
        ("σοφια", vec!["Σοφία Παπαδοπούλου"]),
        ("ΠΑΠΑΔΟΠΟΥΛΟΥ", vec!["Σοφία Παπαδοπούλου"]),
        ("+44 7700 900123", vec!["Gabi Gómez"]),
        ("07700 900123", vec!["Gabi Gómez"]),
        ("0044 7700 900123", vec!["Gabi Gómez"]),
        ("(415) 555-0123", vec!["Gabriel Gomes"]),
        ("nobody", vec![]),
    ] {
        let r = app
            .get(
                &format!("/api/v1/contacts?q={}", enc(query)),
                &app.agent.token,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(names(&r), expected, "{query:?}");
    }
    // An edit is searchable at once, and what was removed no longer is.
    let r = app
        .patch(
            &format!("/api/v1/contacts/{}", ids[0]),
            &app.agent.token,
            &json!({"name": "Gabriela Núñez", "attributes": {"city": null}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let search = |q: &'static str| {
        let app = &app;
        async move {
            names(
                &app.get(&format!("/api/v1/contacts?q={}", enc(q)), &app.agent.token)
                    .await,
            )
        }
    };
    assert_eq!(search("nunez").await, vec!["Gabriela Núñez"]);
    assert_eq!(search("zurich").await, Vec::<String>::new());
    assert_eq!(search("acme").await, vec!["Gabriela Núñez"]);

    // The Communication tab searches the same way.
    app.inbound("+447700900123", "hola").await;
    let r = app
        .get("/api/v1/conversations?q=NUNEZ", &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(names(&r), vec!["Gabriela Núñez"]);
}

#[tokio::test]
async fn rows_stored_under_the_previous_analysis_are_analysed_again() {
    let app = spawn_app().await;
    let c = app.inbound("+14155552671", "hello").await;
    // A message and a contact as the previous release stored them: lexemes only
    // lower-cased (no folding, no prefixes), no signature, no contact search text.
    let old = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, contact_id, channel, media, direction, kind, body,
                               status, search, search_version, created_at)
         VALUES ($1, $2, $3, 'whatsapp', 'chat', 'inbound', 'text', '¿Ya llegó el pedido?',
                 'received', $4::tsvector, 1, now() - interval '1 day')",
    )
    .bind(old)
    .bind(app.tenant.0)
    .bind(c.contact_id.0)
    .bind("'el':3 'llegó':2 'pedido':4 'ya':1")
    .execute(&app.db)
    .await
    .expect("old message");
    sqlx::query("UPDATE contacts SET name = 'Gabi Gómez', search_text = NULL WHERE id = $1")
        .bind(c.contact_id.0)
        .execute(&app.db)
        .await
        .expect("old contact");
    let base = format!("/api/v1/contacts/{}/messages", c.contact_id);
    let found = |q: &'static str| {
        let (app, base) = (&app, &base);
        async move { texts(&app.get(&format!("{base}?q={q}"), &app.agent.token).await) }
    };
    // Before: the old lexemes answer only what they hold; the directory still finds the
    // name as it is written.
    assert_eq!(found("llego").await, Vec::<String>::new());
    assert_eq!(found("pedido").await, vec!["¿Ya llegó el pedido?"]);
    let r = app
        .get(
            &format!("/api/v1/contacts?q={}", enc("Gómez")),
            &app.agent.token,
        )
        .await;
    assert_eq!(names(&r), vec!["Gabi Gómez"]);

    gateway::app::run_search_reindex(app.db.clone(), tokio_util::sync::CancellationToken::new())
        .await;

    let (version, sig_a): (i16, i64) =
        sqlx::query_as("SELECT search_version, search_sig_a FROM messages WHERE id = $1")
            .bind(old)
            .fetch_one(&app.db)
            .await
            .expect("row");
    assert_eq!(version, conversation_store::search::VERSION);
    assert_ne!(sig_a, -1);
    assert_eq!(found("llego").await, vec!["¿Ya llegó el pedido?"]);
    assert_eq!(found("pedid").await, vec!["¿Ya llegó el pedido?"]);
    let r = app.get("/api/v1/contacts?q=gomez", &app.agent.token).await;
    assert_eq!(names(&r), vec!["Gabi Gómez"]);
    let stale: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM messages WHERE search_version < 2)
              + (SELECT count(*) FROM contacts WHERE search_text IS NULL)",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(stale, 0);
}
