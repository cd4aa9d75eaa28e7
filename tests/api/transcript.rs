//! One transcript per contact across interactions and channels; search; unread counts;
//! the Communication tab.

use conversation_store::{
    StoreError, events, interactions,
    messages::{self, Direction, NewMessage},
};
use parley_core::{ContactId, InteractionId, channel::Channel};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{In, TestApp, spawn_app};

fn ids(r: &test_support::Reply) -> Vec<String> {
    r.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

fn texts(r: &test_support::Reply) -> Vec<String> {
    r.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn mark_done(app: &TestApp, interaction: uuid::Uuid) {
    let mut conn = app.db.acquire().await.expect("conn");
    interactions::set_state(
        &mut conn,
        app.tenant,
        InteractionId(interaction),
        parley_core::state::InteractionState::Done,
        None,
        None,
        Some("resolved"),
    )
    .await
    .expect("done");
}

/// An agent's text reply to a contact, stored straight through the store.
fn reply(
    app: &TestApp,
    contact: ContactId,
    interaction: Option<InteractionId>,
    body: String,
) -> NewMessage {
    NewMessage {
        contact_id: contact,
        interaction_id: interaction,
        channel: Channel::Whatsapp,
        direction: Direction::Outbound,
        sender_user_id: Some(app.agent.id),
        kind: "text".into(),
        body: Some(body),
        payload: json!({}),
        channel_account_id: None,
        provider_message_id: None,
        reply_to_id: None,
        status: "queued".into(),
        attachment_ids: vec![],
    }
}

#[tokio::test]
async fn an_unknown_sender_becomes_a_contact_named_from_the_profile() {
    let app = spawn_app().await;
    let got = app
        .inbound_in(
            app.tenant,
            In {
                channel: Channel::Whatsapp,
                address: "+14155552671",
                name: Some("Maria G."),
                body: "hola",
                provider_id: Some("wamid.1"),
            },
        )
        .await;
    assert!(got.contact_created && got.interaction_created);
    assert_eq!(got.interaction.state.as_str(), "queued");
    let c = app
        .get(
            &format!("/api/v1/contacts/{}", got.contact_id),
            &app.agent.token,
        )
        .await;
    assert_eq!(c.json["name"], "Maria G.");
    assert_eq!(c.json["identities"][0]["address"], "+14155552671");
    assert!(c.json["identities"][0]["last_inbound_at"].is_string());
    // A second message joins the same contact and interaction.
    let again = app.inbound("+14155552671", "¿hay alguien?").await;
    assert_eq!(again.contact_id, got.contact_id);
    assert_eq!(again.interaction.id, got.interaction.id);
    assert!(!again.contact_created && !again.interaction_created);
}

#[tokio::test]
async fn a_replayed_provider_message_id_is_stored_once() {
    let app = spawn_app().await;
    let m = In {
        channel: Channel::Whatsapp,
        address: "+14155552671",
        name: None,
        body: "once",
        provider_id: Some("wamid.dup"),
    };
    let first = app.inbound_in(app.tenant, m.clone()).await;
    assert!(first.message.is_some());
    let second = app.inbound_in(app.tenant, m).await;
    assert!(second.message.is_none());
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE provider_message_id = 'wamid.dup'")
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(count, 1);
    // Even after the interaction is done, a replay does not reopen anything.
    mark_done(&app, first.interaction.id).await;
    let third = app
        .inbound_in(
            app.tenant,
            In {
                channel: Channel::Whatsapp,
                address: "+14155552671",
                name: None,
                body: "once",
                provider_id: Some("wamid.dup"),
            },
        )
        .await;
    assert!(third.message.is_none());
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM interactions WHERE state <> 'done'")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(open, 0);
}

#[tokio::test]
async fn the_transcript_spans_interactions_and_channels_in_time_order() {
    let app = spawn_app().await;
    let a = app.inbound("+14155552671", "first, on WhatsApp").await;
    mark_done(&app, a.interaction.id).await;
    let b = app
        .inbound("+14155552671", "second, a new WhatsApp interaction")
        .await;
    assert_ne!(a.interaction.id, b.interaction.id);
    // The same person over SMS: added to the contact, then writing.
    let r = app
        .post(
            &format!("/api/v1/contacts/{}/identities", a.contact_id),
            &app.agent.token,
            &json!({"channel": "sms", "address": "+14155552671"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let c = app
        .inbound_in(
            app.tenant,
            In {
                channel: Channel::Sms,
                address: "+14155552671",
                name: None,
                body: "third, by SMS",
                provider_id: None,
            },
        )
        .await;
    assert_eq!(c.contact_id, a.contact_id);
    // An agent's reply inside the SMS interaction.
    let mut conn = app.db.acquire().await.expect("conn");
    messages::insert(
        &mut conn,
        app.tenant,
        &NewMessage {
            channel: Channel::Sms,
            ..reply(
                &app,
                c.contact_id,
                Some(InteractionId(c.interaction.id)),
                "fourth, our reply".into(),
            )
        },
    )
    .await
    .expect("insert")
    .expect("stored");
    drop(conn);

    let r = app
        .get(
            &format!("/api/v1/contacts/{}/messages", a.contact_id),
            &app.agent.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        texts(&r),
        vec![
            "first, on WhatsApp",
            "second, a new WhatsApp interaction",
            "third, by SMS",
            "fourth, our reply"
        ]
    );
    let items = r.json["items"].as_array().expect("items");
    let interaction_ids: Vec<&str> = items
        .iter()
        .map(|m| m["interaction_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(interaction_ids[0], a.interaction.id.to_string());
    assert_eq!(interaction_ids[1], b.interaction.id.to_string());
    assert_eq!(interaction_ids[2], c.interaction.id.to_string());
    assert_eq!(interaction_ids[3], c.interaction.id.to_string());
    assert_eq!(items[2]["channel"], "sms");
    assert_eq!(
        items[0]["sender"],
        json!({"type": "contact", "user_id": null})
    );
    assert_eq!(items[3]["sender"]["type"], "agent");
    assert_eq!(items[3]["sender"]["user_id"], app.agent.id.to_string());
    assert_eq!(items[3]["status"], "queued");

    let h = app
        .get(
            &format!("/api/v1/contacts/{}/interactions", a.contact_id),
            &app.agent.token,
        )
        .await;
    let hist = h.json.as_array().expect("list");
    assert_eq!(hist.len(), 3);
    let states: Vec<&str> = hist
        .iter()
        .map(|i| i["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, vec!["queued", "queued", "done"]);
    assert_eq!(hist[2]["disposition"], "resolved");
    assert!(hist[2]["done_at"].is_string());
}

#[tokio::test]
async fn paging_back_and_forth_neither_repeats_nor_skips_when_messages_arrive() {
    let app = spawn_app().await;
    let first = app.inbound("+33612345678", "m1").await;
    for i in 2..=7 {
        app.inbound("+33612345678", &format!("m{i}")).await;
    }
    let base = format!("/api/v1/contacts/{}/messages", first.contact_id);
    let newest = app.get(&format!("{base}?limit=3"), &app.agent.token).await;
    assert_eq!(texts(&newest), vec!["m5", "m6", "m7"]);
    assert!(newest.json["next_cursor"].is_null());
    let prev = newest.json["prev_cursor"]
        .as_str()
        .expect("prev")
        .to_owned();
    let last_seen = ids(&newest).last().cloned().expect("last");

    // New messages arrive while the agent scrolls back.
    app.inbound("+33612345678", "m8").await;
    app.inbound("+33612345678", "m9").await;

    let older = app
        .get(&format!("{base}?limit=3&before={prev}"), &app.agent.token)
        .await;
    assert_eq!(texts(&older), vec!["m2", "m3", "m4"]);
    let prev = older.json["prev_cursor"].as_str().expect("prev").to_owned();
    let oldest = app
        .get(&format!("{base}?limit=3&before={prev}"), &app.agent.token)
        .await;
    assert_eq!(texts(&oldest), vec!["m1"]);
    assert!(oldest.json["prev_cursor"].is_null());
    let newer = app
        .get(
            &format!("{base}?limit=3&after={last_seen}"),
            &app.agent.token,
        )
        .await;
    assert_eq!(texts(&newer), vec!["m8", "m9"]);

    // Around a message: it and its neighbours.
    let m4 = ids(&older)[2].clone();
    let around = app
        .get(&format!("{base}?limit=4&around={m4}"), &app.agent.token)
        .await;
    assert_eq!(texts(&around), vec!["m3", "m4", "m5", "m6"]);

    let r = app
        .get(&format!("{base}?before={m4}&after={m4}"), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .get(&format!("{base}?limit=201"), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let other = app.inbound("+14155552671", "someone else").await;
    let foreign = other.message.expect("stored").id;
    let r = app
        .get(&format!("{base}?before={foreign}"), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "before");
}

#[tokio::test]
async fn media_filter_separates_private_chat_from_open_media() {
    let app = spawn_app().await;
    let chat = app.inbound("+14155552671", "private question").await;
    app.inbound_in(
        app.tenant,
        In {
            channel: Channel::TwitterPublic,
            address: "mariag",
            name: None,
            body: "public complaint",
            provider_id: None,
        },
    )
    .await;
    // Put the public handle on the same contact first? It made its own contact; link it
    // by adding the handle to the WhatsApp contact and writing again.
    let r = app
        .post(
            &format!("/api/v1/contacts/{}/identities", chat.contact_id),
            &app.agent.token,
            &json!({"channel": "twitter_public", "address": "@maria_public"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    app.inbound_in(
        app.tenant,
        In {
            channel: Channel::TwitterPublic,
            address: "maria_public",
            name: None,
            body: "also public",
            provider_id: None,
        },
    )
    .await;
    let base = format!("/api/v1/contacts/{}/messages", chat.contact_id);
    let all = app.get(&base, &app.agent.token).await;
    assert_eq!(texts(&all), vec!["private question", "also public"]);
    let chat_only = app
        .get(&format!("{base}?media=chat"), &app.agent.token)
        .await;
    assert_eq!(texts(&chat_only), vec!["private question"]);
    let public = app
        .get(&format!("{base}?media=open_media"), &app.agent.token)
        .await;
    assert_eq!(texts(&public), vec!["also public"]);
    assert_eq!(public.json["items"][0]["media"], "open_media");
    let r = app
        .get(&format!("{base}?media=fax"), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn search_finds_cyrillic_emoji_and_a_word_deep_in_a_long_message() {
    let app = spawn_app().await;
    let long = format!(
        "{} needle {}",
        "lorem ipsum ".repeat(170),
        "dolor sit ".repeat(200)
    );
    let long: String = long.chars().take(4000).collect();
    assert!(long.contains("needle"));
    let c = app
        .inbound("+14155552671", "Здравствуйте, у меня вопрос по счёту")
        .await;
    app.inbound("+14155552671", "thanks 🙏 you're great").await;
    app.inbound("+14155552671", &long).await;
    app.inbound("+14155552671", "nothing to see").await;
    let other = app.inbound("+33612345678", "another счёту here").await;

    let base = format!("/api/v1/contacts/{}/messages", c.contact_id);
    let r = app
        .get(
            &format!("{base}?q=%D0%A1%D0%A7%D0%81%D0%A2%D0%A3"),
            &app.agent.token,
        )
        .await; // СЧЁТУ
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(texts(&r), vec!["Здравствуйте, у меня вопрос по счёту"]);
    let r = app
        .get(&format!("{base}?q=%F0%9F%99%8F"), &app.agent.token)
        .await; // 🙏
    assert_eq!(texts(&r), vec!["thanks 🙏 you're great"]);
    let r = app.get(&format!("{base}?q=needle"), &app.agent.token).await;
    assert_eq!(r.json["items"].as_array().map(Vec::len), Some(1));
    let r = app.get(&format!("{base}?q=absent"), &app.agent.token).await;
    assert_eq!(r.json["items"], json!([]));

    // Across the tenant, newest first, highlighted, with a cursor to jump to.
    let r = app
        .get(
            "/api/v1/messages/search?q=%D1%81%D1%87%D1%91%D1%82%D1%83",
            &app.agent.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.json["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["message"]["contact_id"],
        other.contact_id.to_string()
    );
    assert_eq!(
        items[1]["highlight"],
        "Здравствуйте, у меня вопрос по <mark>счёту</mark>"
    );
    let around = items[1]["around_cursor"].as_str().expect("cursor");
    let page = app
        .get(&format!("{base}?around={around}&limit=2"), &app.agent.token)
        .await;
    assert!(ids(&page).contains(&around.to_owned()));
    let r = app
        .get("/api/v1/messages/search?q=%20", &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Paging through tenant search.
    let r = app
        .get(
            "/api/v1/messages/search?q=%D1%81%D1%87%D1%91%D1%82%D1%83&limit=1",
            &app.agent.token,
        )
        .await;
    let next = r.json["next_cursor"].as_str().expect("next");
    let r2 = app
        .get(
            &format!(
                "/api/v1/messages/search?q=%D1%81%D1%87%D1%91%D1%82%D1%83&limit=1&cursor={next}"
            ),
            &app.agent.token,
        )
        .await;
    assert_eq!(
        r2.json["items"][0]["message"]["contact_id"],
        c.contact_id.to_string()
    );
    assert!(r2.json["next_cursor"].is_null());
}

#[tokio::test]
async fn search_never_crosses_tenants() {
    let app = spawn_app().await;
    let (b_tenant, [_, _, b_agent]) = app.other_tenant().await;
    app.inbound_in(
        b_tenant,
        In {
            channel: Channel::Whatsapp,
            address: "+14155552671",
            name: None,
            body: "confidential merger",
            provider_id: None,
        },
    )
    .await;
    app.inbound("+14155552671", "ordinary words").await;
    let r = app
        .get("/api/v1/messages/search?q=merger", &app.agent.token)
        .await;
    assert_eq!(r.json["items"], json!([]));
    let r = app
        .get("/api/v1/messages/search?q=merger", &b_agent.token)
        .await;
    assert_eq!(r.json["items"].as_array().map(Vec::len), Some(1));
    let r = app.get("/api/v1/conversations", &app.agent.token).await;
    assert_eq!(r.json["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn text_round_trips_byte_for_byte() {
    let app = spawn_app().await;
    let samples = [
        "emoji 👩‍👩‍👧‍👦 and flags 🇺🇦🇯🇵",
        "combining: e\u{301} a\u{308} n\u{303}",
        "RTL: שלום עולם مرحبا بالعالم",
        "4-byte: 𝄞 𠜎 🀄",
        "control-ish: tab\tnewline\nend",
    ];
    let mut last = None;
    for s in samples {
        last = Some(app.inbound("+14155552671", s).await);
    }
    let contact = last.expect("ingested").contact_id;
    let r = app
        .get(
            &format!("/api/v1/contacts/{contact}/messages"),
            &app.agent.token,
        )
        .await;
    let got = texts(&r);
    assert_eq!(
        got,
        samples.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    );
    for (g, s) in got.iter().zip(samples) {
        assert_eq!(g.as_bytes(), s.as_bytes());
    }
}

#[tokio::test]
async fn a_body_over_65536_characters_is_refused_not_truncated() {
    let app = spawn_app().await;
    let c = app.inbound("+14155552671", "hi").await;
    let mut conn = app.db.acquire().await.expect("conn");
    let new = |body: String| reply(&app, c.contact_id, None, body);
    // 65,536 characters of 4-byte UTF-8 is fine (a provider's text is kept whole)…
    let ok = messages::insert(&mut conn, app.tenant, &new("🦀".repeat(65_536)))
        .await
        .expect("ok");
    assert_eq!(
        ok.and_then(|m| m.body).map(|b| b.chars().count()),
        Some(65_536)
    );
    // …one more is not.
    let err = messages::insert(&mut conn, app.tenant, &new("a".repeat(65_537))).await;
    assert!(
        matches!(err, Err(StoreError::Invalid { field: "body", .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn unread_counts_and_read_marks_with_an_event_for_other_desktops() {
    let app = spawn_app().await;
    let a = app.inbound("+14155552671", "one").await;
    let two = app
        .inbound("+14155552671", "two")
        .await
        .message
        .expect("stored");
    app.inbound("+14155552671", "three").await;
    let b = app.inbound("+33612345678", "hello from b").await;

    let r = app.get("/api/v1/conversations", &app.agent.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.json["items"].as_array().expect("items");
    // Most recent first.
    assert_eq!(items[0]["contact_id"], b.contact_id.to_string());
    assert_eq!(items[0]["unread_count"], 1);
    assert_eq!(items[1]["contact_id"], a.contact_id.to_string());
    assert_eq!(items[1]["unread_count"], 3);
    assert_eq!(items[1]["last_message"]["text"], "three");

    let r = app
        .post(
            &format!("/api/v1/contacts/{}/read", a.contact_id),
            &app.agent.token,
            &json!({"up_to_message_id": two.id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["unread_count"], 1);
    // A read mark never moves backwards.
    let one_id = ids(&app
        .get(
            &format!("/api/v1/contacts/{}/messages", a.contact_id),
            &app.agent.token,
        )
        .await)[0]
        .clone();
    let r = app
        .post(
            &format!("/api/v1/contacts/{}/read", a.contact_id),
            &app.agent.token,
            &json!({"up_to_message_id": one_id}),
        )
        .await;
    assert_eq!(r.json["unread_count"], 1);

    let mut conn = app.db.acquire().await.expect("conn");
    let evs = events::list_after(&mut conn, app.tenant, 0, 1000)
        .await
        .expect("events");
    let last_unread: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e.kind == "conversation.unread" && e.payload["contact_id"] == a.contact_id.to_string()
        })
        .map(|e| &e.payload)
        .collect();
    assert_eq!(
        last_unread.last().map(|p| p["unread_count"].clone()),
        Some(json!(1))
    );
    assert!(evs.iter().filter(|e| e.kind == "message.created").count() >= 4);

    // Search and media filters on the list.
    let r = app
        .get("/api/v1/conversations?q=%2B336", &app.agent.token)
        .await;
    assert_eq!(r.json["items"].as_array().map(Vec::len), Some(1));
    let r = app
        .get("/api/v1/conversations?media=open_media", &app.agent.token)
        .await;
    assert_eq!(r.json["items"], json!([]));
    let r = app
        .get("/api/v1/conversations?limit=1", &app.agent.token)
        .await;
    let cursor = r.json["next_cursor"].as_str().expect("cursor");
    let r = app
        .get(
            &format!("/api/v1/conversations?limit=1&cursor={cursor}"),
            &app.agent.token,
        )
        .await;
    assert_eq!(r.json["items"][0]["contact_id"], a.contact_id.to_string());
    let r = app
        .get("/api/v1/conversations?cursor=garbage", &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let r = app
        .post(
            &format!("/api/v1/contacts/{}/read", b.contact_id),
            &app.agent.token,
            &json!({"up_to_message_id": two.id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "up_to_message_id");
    let _ = ContactId(a.contact_id.0);
}

#[tokio::test]
async fn transcript_and_search_queries_use_their_indexes() {
    let app = spawn_app().await;
    let c = app.inbound("+14155552671", "index me").await;
    // Enough data for the planner to choose for real: 200 contacts, 20,000 messages, one
    // rare word.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO contacts (id, tenant_id, name)
           SELECT gen_random_uuid(), '{t}', 'bulk ' || g FROM generate_series(1, 200) g;
         INSERT INTO messages (id, tenant_id, contact_id, channel, media, direction, kind, body, status, search, created_at)
           SELECT gen_random_uuid(), '{t}', c.id, 'whatsapp', 'chat', 'inbound', 'text',
                  'common words ' || g, 'received', to_tsvector('simple', 'common words ' || g),
                  now() - make_interval(secs => g)
           FROM generate_series(1, 20000) g
           JOIN LATERAL (SELECT id FROM contacts WHERE tenant_id = '{t}' AND name = 'bulk ' || (g % 200 + 1)) c ON true;
         UPDATE messages SET search = to_tsvector('simple', 'zebra') WHERE body = 'common words 777';
         ANALYZE contacts; ANALYZE messages;",
        t = app.tenant
    )))
    .execute(&app.db)
    .await
    .expect("bulk data");
    let mut tx = app.db.begin().await.expect("tx");
    let rows: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN SELECT id FROM messages m WHERE m.tenant_id = $1 AND m.contact_id = $2
         ORDER BY m.created_at DESC, m.id DESC LIMIT 51",
    )
    .bind(app.tenant.0)
    .bind(c.contact_id.0)
    .fetch_all(&mut *tx)
    .await
    .expect("explain");
    let plan = rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
    assert!(plan.contains("messages_contact_time_idx"), "{plan}");
    // Searches first walk a bounded number of messages by signature (in-contact: the
    // contact's; tenant-wide: the newest), in the index alone, reading a message by its
    // key only when its signature may match, and stopping at the page's end.
    let sig = conversation_store::search::query_signature("zebra").expect("searchable");
    for (scope, index) in [
        (
            "w.tenant_id = $1 AND w.contact_id = $4",
            "messages_contact_time_idx",
        ),
        ("w.tenant_id = $1", "messages_tenant_recent_idx"),
    ] {
        let walk = messages::signature_walk(
            scope,
            "DESC",
            5000,
            ("$5", "$6"),
            "m.search @@ $2::tsquery AND ($3::text IS NULL OR m.media = $3)",
            "21",
        );
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {walk}")))
            .bind(app.tenant.0)
            .bind("'zebra'")
            .bind(None::<String>)
            .bind(c.contact_id.0)
            .bind(sig.0)
            .bind(sig.1)
            .fetch_all(&mut *tx)
            .await
            .expect("explain");
        let plan = rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
        assert!(plan.contains(index), "{plan}");
        assert!(
            plan.contains("Nested Loop") && plan.contains("messages_pkey"),
            "{plan}"
        );
        assert!(
            !plan.contains("Sort") && !plan.contains("Seq Scan"),
            "{plan}"
        );
    }
    // …and when that does not fill the page it allows no plan but the full-text index:
    // walking the recency index for a rare word reads the whole tenant (left to itself
    // the planner picks exactly that here, misjudging the word's frequency), and a
    // sequential scan reads every tenant.
    sqlx::raw_sql("SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .expect("set");
    let rows: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN SELECT id FROM messages m WHERE m.tenant_id = $1 AND m.search @@ $2::tsquery
         ORDER BY m.created_at DESC, m.id DESC LIMIT 21",
    )
    .bind(app.tenant.0)
    .bind("'zebra'")
    .fetch_all(&mut *tx)
    .await
    .expect("explain");
    let plan = rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
    assert!(plan.contains("messages_search_idx"), "{plan}");
}

#[tokio::test]
async fn concurrent_first_messages_from_one_sender_make_one_contact_and_one_interaction() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.inbound_in(
                app.tenant,
                In {
                    channel: Channel::Whatsapp,
                    address: "+14155552671",
                    name: Some("Racer"),
                    body: &format!("burst {i}"),
                    provider_id: None,
                },
            )
            .await
        }));
    }
    let mut contacts = std::collections::HashSet::new();
    let mut interactions = std::collections::HashSet::new();
    for t in tasks {
        let got = t.await.expect("task");
        contacts.insert(got.contact_id);
        interactions.insert(got.interaction.id);
    }
    assert_eq!(contacts.len(), 1);
    assert_eq!(interactions.len(), 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(n, 1);
    let m: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(m, 8);
}

#[tokio::test]
async fn a_message_stored_alone_keeps_its_plan_instead_of_planning_anew_each_time() {
    // A message stored on its own (a new contact's first, an agent's reply) goes through
    // the batch insert with one row. Over `unnest` of one-element arrays PostgreSQL found
    // every kept plan dearer than planning anew, and planned the statement (0.7 ms) on
    // every call; as a one-row SELECT it keeps the plan after its first few calls.
    let app = spawn_app().await;
    let c = app.inbound("+14155552671", "hi").await;
    let mut conn = app.db.acquire().await.expect("conn");
    // A tenant of some size, analysed: on a few rows every plan costs about the same.
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, name)
         SELECT gen_random_uuid(), $1, 'contact ' || g FROM generate_series(1, 20000) g",
    )
    .bind(app.tenant.0)
    .execute(&mut *conn)
    .await
    .expect("contacts");
    sqlx::query("ANALYZE contacts")
        .execute(&mut *conn)
        .await
        .expect("analyze");
    for i in 0..12 {
        messages::insert(
            &mut conn,
            app.tenant,
            &reply(
                &app,
                c.contact_id,
                Some(InteractionId(c.interaction.id)),
                format!("reply {i}"),
            ),
        )
        .await
        .expect("insert")
        .expect("stored");
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements
         WHERE statement LIKE 'WITH ins AS (%INSERT INTO messages AS m%'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("the insert is a prepared statement of this connection");
    assert!(
        generic >= 6 && custom <= 6,
        "12 single inserts: {generic} with the kept plan, {custom} planned anew"
    );
    // Every reply is there, in order.
    let r = app
        .get(
            &format!("/api/v1/contacts/{}/messages?limit=50", c.contact_id.0),
            &app.agent.token,
        )
        .await;
    let got = texts(&r);
    assert_eq!(got.len(), 13, "{got:?}");
}

#[tokio::test]
async fn in_contact_search_finds_every_match_whether_the_walk_fills_the_page_or_not() {
    use conversation_store::search;
    let app = spawn_app().await;
    // The contact's history, oldest first: three old matches stored before signatures
    // existed (every bit set), 6,000 other messages (more than one walk of the contact),
    // then two matches written through the product.
    let first = app.inbound("+14155552671", "hello").await;
    let contact = first.contact_id;
    let old: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, contact_id, channel, media, direction, kind, body,
                               status, search, created_at)
         SELECT o.id, $2, $3, 'whatsapp', 'chat', 'inbound', 'text', 'an old zebra', 'received',
                $4::tsvector, now() - make_interval(days => 2, secs => o.n::int)
         FROM unnest($1::uuid[]) WITH ORDINALITY AS o(id, n)",
    )
    .bind(&old)
    .bind(app.tenant.0)
    .bind(contact.0)
    .bind(search::indexed("an old zebra").tsvector)
    .execute(&app.db)
    .await
    .expect("old rows");
    let bodies: Vec<String> = (0..6000).map(|i| format!("filler number{i}")).collect();
    let indexed: Vec<search::Indexed> = bodies.iter().map(|b| search::indexed(b)).collect();
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, contact_id, channel, media, direction, kind, body,
                               status, search, search_sig_a, search_sig_b, created_at)
         SELECT gen_random_uuid(), $1, $2, 'whatsapp', 'chat', 'outbound', 'text', f.body,
                'sent', f.search::tsvector, f.a, f.b, now() - make_interval(secs => 3600 + f.n::int)
         FROM unnest($3::text[], $4::text[], $5::int8[], $6::int8[]) WITH ORDINALITY
              AS f(body, search, a, b, n)",
    )
    .bind(app.tenant.0)
    .bind(contact.0)
    .bind(&bodies)
    .bind(
        indexed
            .iter()
            .map(|i| i.tsvector.clone())
            .collect::<Vec<_>>(),
    )
    .bind(indexed.iter().map(|i| i.signature.0).collect::<Vec<_>>())
    .bind(indexed.iter().map(|i| i.signature.1).collect::<Vec<_>>())
    .execute(&app.db)
    .await
    .expect("filler");
    let mut new = Vec::new();
    for body in ["a zebra crossing", "another Zebra, striped"] {
        let m = app
            .inbound("+14155552671", body)
            .await
            .message
            .expect("stored");
        new.push(m.id);
    }
    // What the product stores carries the signature of its lexemes.
    let stored: (i64, i64) =
        sqlx::query_as("SELECT search_sig_a, search_sig_b FROM messages WHERE id = $1")
            .bind(new[0])
            .fetch_one(&app.db)
            .await
            .expect("signature");
    let sig = search::indexed("a zebra crossing").signature;
    assert_eq!(stored, (sig.0, sig.1));
    sqlx::query("ANALYZE messages")
        .execute(&app.db)
        .await
        .expect("analyze");

    // The oracle: every match of the contact, newest first, by the full-text condition.
    let expected = |q: &str| {
        let tsquery = search::tsquery_literal(q).expect("searchable");
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT id FROM messages WHERE tenant_id = $1 AND contact_id = $2
                   AND search @@ $3::tsquery ORDER BY created_at DESC, id DESC",
            )
            .bind(app.tenant.0)
            .bind(contact.0)
            .bind(tsquery)
            .fetch_all(&db)
            .await
            .expect("oracle")
            .into_iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
        }
    };
    let path =
        |q: &str, extra: &str| format!("/api/v1/contacts/{}/messages?q={q}{extra}", contact.0);
    // The walk reaches two matches, then the full statement finds the old three beyond it.
    let zebra = expected("zebra").await;
    assert_eq!(zebra.len(), 5);
    let r = app.get(&path("zebra", "&limit=50"), &app.agent.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let mut got = ids(&r);
    got.reverse();
    assert_eq!(got, zebra);
    assert_eq!(r.json["prev_cursor"], Value::Null);
    // A page the walk fills (limit 1: two matches in the walk), then the pages after it.
    let mut seen = Vec::new();
    let mut before = String::new();
    loop {
        let r = app
            .get(
                &path("zebra", &format!("&limit=1{before}")),
                &app.agent.token,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        seen.extend(ids(&r));
        match r.json["prev_cursor"].as_str() {
            Some(c) => before = format!("&before={c}"),
            None => break,
        }
    }
    assert_eq!(seen, zebra);
    // A common word fills the page within the walk: the newest 50 of 6,000.
    let filler = expected("filler").await;
    let r = app
        .get(&path("filler", "&limit=50"), &app.agent.token)
        .await;
    let mut got = ids(&r);
    got.reverse();
    assert_eq!(got, filler[..50]);
    assert!(r.json["prev_cursor"].is_string());
    // Two words, one of them in a single filler message deep in the history; and a word
    // no message has.
    let r = app
        .get(&path("filler%20number5990", "&limit=50"), &app.agent.token)
        .await;
    let want = expected("filler number5990").await;
    assert_eq!(want.len(), 1);
    assert_eq!(ids(&r), want);
    let r = app.get(&path("okapi", "&limit=50"), &app.agent.token).await;
    assert_eq!(ids(&r), Vec::<String>::new());
    // Oldest first from a point in the history (`after`): the walk goes forwards too.
    let r = app
        .get(
            &path("zebra", &format!("&limit=2&after={}", zebra[4])),
            &app.agent.token,
        )
        .await;
    assert_eq!(ids(&r), vec![zebra[3].clone(), zebra[2].clone()]);
    let _ = old;
}
