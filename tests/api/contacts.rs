//! The contact directory and identities.

use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::spawn_app;

#[tokio::test]
async fn create_contact_normalises_phone_numbers_to_e164() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({
                "name": "Maria Gomez",
                "attributes": {"first_name": "Maria", "account_number": "AC-1001"},
                "identities": [
                    {"channel": "whatsapp", "address": "+1 (415) 555-2671"},
                    {"channel": "sms", "address": "0014155552671"},
                    {"channel": "twitter", "address": "@MariaG"}
                ]
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["name"], "Maria Gomez");
    assert_eq!(r.json["attributes"]["account_number"], "AC-1001");
    let addrs: Vec<(&str, &str)> = r.json["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .map(|i| {
            (
                i["channel"].as_str().unwrap_or(""),
                i["address"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("whatsapp", "+14155552671"),
            ("sms", "+14155552671"),
            ("twitter", "mariag")
        ]
    );
    assert_eq!(r.json["identities"][0]["status"], "unverified");
}

#[tokio::test]
async fn invalid_phone_numbers_are_422_naming_the_field() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "X", "identities": [{"channel": "whatsapp", "address": "+1 555"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "identities[0].address");
    let contact = app
        .post("/api/v1/contacts", &app.agent.token, &json!({"name": "Y"}))
        .await;
    let id = contact.json["id"].as_str().expect("id");
    let r = app
        .post(
            &format!("/api/v1/contacts/{id}/identities"),
            &app.agent.token,
            &json!({"channel": "sms", "address": "not a number"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "address");
    let r = app
        .post(
            &format!("/api/v1/contacts/{id}/identities"),
            &app.agent.token,
            &json!({"channel": "carrier_pigeon", "address": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "channel");
}

#[tokio::test]
async fn an_address_cannot_belong_to_two_contacts_409_names_the_owner() {
    let app = spawn_app().await;
    let a = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "A", "identities": [{"channel": "whatsapp", "address": "+442079460958"}]}),
        )
        .await;
    let owner = a.json["id"].as_str().expect("id").to_owned();
    let b = app
        .post("/api/v1/contacts", &app.agent.token, &json!({"name": "B"}))
        .await;
    let b_id = b.json["id"].as_str().expect("id");
    // Written differently, same number.
    let r = app
        .post(
            &format!("/api/v1/contacts/{b_id}/identities"),
            &app.agent.token,
            &json!({"channel": "whatsapp", "address": "0044 20 7946 0958"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["existing_id"], owner);
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&owner)
    );
    // Creating a contact with it is refused too, and leaves nothing behind.
    let r = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "C", "identities": [{"channel": "whatsapp", "address": "+442079460958"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let list = app.get("/api/v1/contacts?q=C", &app.agent.token).await;
    assert!(
        list.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|c| c["name"] != "C")
    );
}

#[tokio::test]
async fn directory_search_matches_names_and_addresses_and_pages_by_name() {
    let app = spawn_app().await;
    for (name, phone) in [
        ("Zoë Adams", "+14155552671"),
        ("Ángel Ruiz", "+33612345678"),
        ("bob marley", "+442079460958"),
        ("Chidi Anagonye", "+14155550123"),
    ] {
        let r = app
            .post(
                "/api/v1/contacts",
                &app.agent.token,
                &json!({"name": name, "identities": [{"channel": "sms", "address": phone}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let names = |r: &test_support::Reply| -> Vec<String> {
        r.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let r = app.get("/api/v1/contacts?q=MARLEY", &app.agent.token).await;
    assert_eq!(names(&r), vec!["bob marley"]);
    let r = app
        .get("/api/v1/contacts?q=415-555-2671", &app.agent.token)
        .await;
    assert_eq!(names(&r), vec!["Zoë Adams"]);
    let r = app
        .get("/api/v1/contacts?q=%2B3361", &app.agent.token)
        .await;
    assert_eq!(names(&r), vec!["Ángel Ruiz"]);
    // A LIKE wildcard in the query is a literal.
    let r = app.get("/api/v1/contacts?q=%25", &app.agent.token).await;
    assert!(names(&r).is_empty());

    // Two pages of two, ordered by name, no repeats.
    let p1 = app.get("/api/v1/contacts?limit=2", &app.agent.token).await;
    let cursor = p1.json["next_cursor"].as_str().expect("cursor").to_owned();
    let p2 = app
        .get(
            &format!("/api/v1/contacts?limit=2&cursor={cursor}"),
            &app.agent.token,
        )
        .await;
    let mut all = names(&p1);
    all.extend(names(&p2));
    assert_eq!(
        all,
        vec!["Ángel Ruiz", "bob marley", "Chidi Anagonye", "Zoë Adams"]
    );
    assert!(p2.json["next_cursor"].is_null());
}

#[tokio::test]
async fn attributes_merge_and_null_removes_one() {
    let app = spawn_app().await;
    let c = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "N", "attributes": {"first_name": "Nia", "tier": "gold"}}),
        )
        .await;
    let id = c.json["id"].as_str().expect("id");
    let r = app
        .patch(
            &format!("/api/v1/contacts/{id}"),
            &app.agent.token,
            &json!({"name": "Nia Long", "attributes": {"tier": null, "account_number": "42"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "Nia Long");
    assert_eq!(
        r.json["attributes"],
        json!({"first_name": "Nia", "account_number": "42"})
    );
    let r = app
        .patch(
            &format!("/api/v1/contacts/{id}"),
            &app.agent.token,
            &json!({"attributes": [1, 2]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "attributes");
}

#[tokio::test]
async fn identities_can_be_removed_and_contacts_deleted_by_supervisors() {
    let app = spawn_app().await;
    let c = app
        .post(
            "/api/v1/contacts",
            &app.agent.token,
            &json!({"name": "D", "identities": [{"channel": "webchat", "address": "visitor-1"}]}),
        )
        .await;
    let id = c.json["id"].as_str().expect("id").to_owned();
    let ident = c.json["identities"][0]["id"]
        .as_str()
        .expect("identity")
        .to_owned();
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/contacts/{id}/identities/{ident}"),
            Some(&app.agent.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .get(&format!("/api/v1/contacts/{id}"), &app.agent.token)
        .await;
    assert_eq!(r.json["identities"], json!([]));

    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/contacts/{id}"),
            Some(&app.agent.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/contacts/{id}"),
            Some(&app.supervisor.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .get(&format!("/api/v1/contacts/{id}"), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn contacts_of_another_tenant_are_404_everywhere() {
    let app = spawn_app().await;
    let (_, [_, _, b_agent]) = app.other_tenant().await;
    let c = app
        .post(
            "/api/v1/contacts",
            &b_agent.token,
            &json!({"name": "Secret", "identities": [{"channel": "whatsapp", "address": "+14155552671"}]}),
        )
        .await;
    let id = c.json["id"].as_str().expect("id");
    let me = &app.agent.token;
    for path in [
        format!("/api/v1/contacts/{id}"),
        format!("/api/v1/contacts/{id}/messages"),
        format!("/api/v1/contacts/{id}/interactions"),
    ] {
        let r = app.get(&path, me).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = app
        .patch(&format!("/api/v1/contacts/{id}"), me, &json!({"name": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(
            &format!("/api/v1/contacts/{id}/identities"),
            me,
            &json!({"channel": "sms", "address": "+33612345678"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/contacts/{id}"),
            Some(&app.admin.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The same number is free in this tenant: tenants don't see each other's addresses.
    let r = app
        .post(
            "/api/v1/contacts",
            me,
            &json!({"name": "Mine", "identities": [{"channel": "whatsapp", "address": "+14155552671"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.get("/api/v1/contacts?q=Secret", me).await;
    assert_eq!(r.json["items"], json!([]));
}

#[tokio::test]
async fn a_contacts_data_is_exported_and_erasure_takes_files_and_event_text_too() {
    use crate::attachments::PNG;
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    wa.sim
        .contact_sends(
            "+14155552671",
            "Erin",
            serde_json::json!({"type": "text", "text": {"body": "my secret order 4711"}}),
        )
        .await
        .expect("text");
    let media = wa.sim.add_media(PNG.to_vec(), "image/png");
    wa.sim
        .contact_sends(
            "+14155552671",
            "Erin",
            serde_json::json!({"type": "image", "image": {"id": media, "mime_type": "image/png"}}),
        )
        .await
        .expect("image");
    let contact: uuid::Uuid = sqlx::query_scalar("SELECT id FROM contacts")
        .fetch_one(&app.db)
        .await
        .expect("contact");
    let mut attachment = None;
    for _ in 0..200 {
        attachment = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM attachments")
            .fetch_optional(&app.db)
            .await
            .expect("attachment");
        if attachment.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let attachment = attachment.expect("the image was fetched");
    // The access request: everything, for supervisors only.
    let export = format!("/api/v1/contacts/{contact}/export");
    assert_eq!(
        app.get(&export, &app.agent.token).await.status,
        StatusCode::FORBIDDEN
    );
    let r = app.get(&export, &app.supervisor.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["contact"]["name"], "Erin");
    assert_eq!(
        r.json["contact"]["identities"][0]["address"],
        "+14155552671"
    );
    let messages = r.json["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["text"], "my secret order 4711");
    assert_eq!(messages[1]["attachments"][0]["id"], attachment.to_string());
    assert_eq!(r.json["interactions"].as_array().map(Vec::len), Some(1));
    // Erasure.
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/contacts/{contact}"),
            Some(&app.supervisor.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = app
        .get(
            &format!("/api/v1/attachments/{attachment}"),
            &app.agent.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "the file still downloads");
    let blobs: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs")
        .fetch_one(&app.db)
        .await
        .expect("blobs");
    assert_eq!(blobs, 0, "the file's bytes are still stored");
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload::text LIKE '%secret order%' OR payload::text LIKE '%Erin%'",
    )
    .fetch_one(&app.db)
    .await
    .expect("events");
    assert_eq!(
        leaked, 0,
        "the event stream still carries the contact's words"
    );
    // And a client resuming the stream from the start reads none of it.
    // (Events are delivered once every transaction that could still commit an earlier
    // one has ended, and the suite's other tests share the database server: wait for the
    // first frame rather than for a fixed while.)
    let mut ws = crate::events::connect(&app, &app.supervisor.token, Some(0)).await;
    let mut frames = Vec::new();
    let mut wait = std::time::Duration::from_secs(30);
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(wait, futures_util::StreamExt::next(&mut ws)).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            frames.push(t.to_string());
            wait = std::time::Duration::from_millis(700);
        }
    }
    assert!(!frames.is_empty(), "the stream replays (redacted) events");
    assert!(
        frames.iter().all(|f| !f.contains("secret order")),
        "{frames:?}"
    );
}
