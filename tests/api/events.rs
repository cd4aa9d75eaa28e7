//! The agent event stream over a real WebSocket.

use std::time::Duration;

use conversation_store::events::{self, Audience};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use test_support::{In, TestApp, spawn_app};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp, token: &str, after: Option<i64>) -> Ws {
    let mut url = format!("ws://{}/api/v1/events?access_token={token}", app.addr);
    if let Some(a) = after {
        url.push_str(&format!("&after={a}"));
    }
    let (ws, _) = connect_async(url).await.expect("websocket");
    ws
}

pub(crate) async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("json"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no event: {other:?}"),
        }
    }
}

async fn nothing_within(ws: &mut Ws, ms: u64) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_millis(ms), ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Text(t)))) => {
                eprintln!("unexpected event: {t}");
                return false;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return true,
        }
    }
}

#[tokio::test]
async fn an_agent_receives_a_new_message_live_and_another_tenant_receives_nothing() {
    let app = spawn_app().await;
    let (b_tenant, [_, _, b_agent]) = app.other_tenant().await;
    let mut a = connect(&app, &app.agent.token, None).await;
    let mut b = connect(&app, &b_agent.token, None).await;
    let got = app.inbound("+14155552671", "is anyone there?").await;
    let e = next_event(&mut a).await;
    assert_eq!(e["kind"], "message.created");
    assert_eq!(e["payload"]["message"]["text"], "is anyone there?");
    assert_eq!(
        e["payload"]["message"]["contact_id"],
        got.contact_id.to_string()
    );
    // The very shape the transcript shows, field for field.
    let t = app
        .get(
            &format!("/api/v1/contacts/{}/messages", got.contact_id),
            &app.agent.token,
        )
        .await;
    assert_eq!(e["payload"]["message"], t.json["items"][0]);
    assert_eq!(e["payload"]["message"]["sender"]["type"], "contact");
    let e2 = next_event(&mut a).await;
    assert_eq!(e2["kind"], "conversation.unread");
    assert!(e2["id"].as_i64() > e["id"].as_i64());
    assert!(
        nothing_within(&mut b, 700).await,
        "tenant B saw tenant A's event"
    );
    // And B's own traffic reaches B.
    app.inbound_in(
        b_tenant,
        In {
            channel: parley_core::channel::Channel::Whatsapp,
            address: "+33612345678",
            name: None,
            body: "b",
            provider_id: None,
        },
    )
    .await;
    assert_eq!(next_event(&mut b).await["kind"], "message.created");
}

#[tokio::test]
async fn a_client_that_reconnects_with_after_gets_every_later_event_once_in_order() {
    let app = spawn_app().await;
    let mut ws = connect(&app, &app.agent.token, Some(0)).await;
    app.inbound("+14155552671", "one").await;
    let first = next_event(&mut ws).await;
    let second = next_event(&mut ws).await;
    let last_seen = second["id"].as_i64().expect("id");
    drop(ws);
    for t in ["two", "three", "four"] {
        app.inbound("+14155552671", t).await;
    }
    let mut ws = connect(&app, &app.agent.token, Some(last_seen)).await;
    let mut ids = vec![first["id"].as_i64().expect("id"), last_seen];
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let e = next_event(&mut ws).await;
        ids.push(e["id"].as_i64().expect("id"));
        if e["kind"] == "message.created" {
            bodies.push(
                e["payload"]["message"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    assert!(
        nothing_within(&mut ws, 500).await,
        "an event was delivered twice"
    );
    assert_eq!(bodies, vec!["two", "three", "four"]);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids strictly increase: {ids:?}"
    );
}

/// A transaction that defers its wake-up (as the webhook writer does, to keep its commit
/// out of PostgreSQL's notification lock) and whose wake-up is then lost (the process died
/// after committing) still has its events delivered: the sequencer's own round finds them.
#[tokio::test]
async fn events_whose_wake_up_was_lost_are_still_delivered() {
    let app = spawn_app().await;
    let mut ws = connect(&app, &app.agent.token, None).await;
    let mut conn = app.db.acquire().await.expect("conn");
    let mut tx = sqlx::Connection::begin_with(&mut *conn, events::BEGIN_DEFERRING_WAKEUP)
        .await
        .expect("tx");
    events::append(
        &mut tx,
        app.tenant,
        Audience::Tenant,
        "test.quiet",
        &json!({"n": 1}),
    )
    .await
    .expect("append");
    tx.commit().await.expect("commit");
    let e = next_event(&mut ws).await;
    assert_eq!(e["kind"], "test.quiet");
    // The deferral is the transaction's only: the connection wakes as usual afterwards.
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('parley.defer_event_wakeup', true)")
            .fetch_one(&mut *conn)
            .await
            .expect("setting");
    assert_ne!(setting.as_deref(), Some("on"));
}

#[tokio::test]
async fn events_committed_out_of_id_order_are_delivered_in_order_and_never_skipped() {
    let app = spawn_app().await;
    let mut ws = connect(&app, &app.agent.token, None).await;
    // Transaction A writes first (lower id, lower xid) but commits last.
    let mut a = app.db.begin().await.expect("a");
    events::append(
        &mut a,
        app.tenant,
        Audience::Tenant,
        "test.a",
        &json!({"n": "a"}),
    )
    .await
    .expect("a");
    let mut b = app.db.begin().await.expect("b");
    events::append(
        &mut b,
        app.tenant,
        Audience::Tenant,
        "test.b",
        &json!({"n": "b"}),
    )
    .await
    .expect("b");
    b.commit().await.expect("commit b");
    // A naive reader paging by id would hand out B now and skip A for ever.
    assert!(
        nothing_within(&mut ws, 1500).await,
        "B was delivered while A could still commit before it"
    );
    a.commit().await.expect("commit a");
    let ea = next_event(&mut ws).await;
    let eb = next_event(&mut ws).await;
    assert_eq!(
        (ea["kind"].as_str(), eb["kind"].as_str()),
        (Some("test.a"), Some("test.b"))
    );
    // A client resuming after A gets B and only B.
    let mut again = connect(&app, &app.agent.token, ea["id"].as_i64()).await;
    assert_eq!(next_event(&mut again).await["kind"], "test.b");
    assert!(nothing_within(&mut again, 500).await);
}

#[tokio::test]
async fn audiences_are_respected() {
    let app = spawn_app().await;
    let mut agent = connect(&app, &app.agent.token, None).await;
    let mut sup = connect(&app, &app.supervisor.token, None).await;
    let mut tx = app.db.begin().await.expect("tx");
    events::append(
        &mut tx,
        app.tenant,
        Audience::Supervisors,
        "agent.state",
        &json!({"who": "x"}),
    )
    .await
    .expect("e");
    events::append(
        &mut tx,
        app.tenant,
        Audience::User(app.agent.id),
        "interaction.offered",
        &json!({"to": "agent"}),
    )
    .await
    .expect("e");
    tx.commit().await.expect("commit");
    assert_eq!(next_event(&mut sup).await["kind"], "agent.state");
    assert_eq!(next_event(&mut agent).await["kind"], "interaction.offered");
    assert!(
        nothing_within(&mut agent, 500).await,
        "an agent saw a supervisors' event"
    );
    assert!(
        nothing_within(&mut sup, 300).await,
        "a supervisor saw another user's event"
    );
}

#[tokio::test]
async fn the_stream_needs_a_valid_token() {
    let app = spawn_app().await;
    for url in [
        format!("ws://{}/api/v1/events", app.addr),
        format!("ws://{}/api/v1/events?access_token=forged", app.addr),
    ] {
        match connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    // The header works as well as the query parameter.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/api/v1/events", app.addr),
    )
    .expect("req");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", app.agent.token)
            .parse()
            .expect("header"),
    );
    assert!(connect_async(req).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_one_replica_hears_what_happens_on_another() {
    let app = spawn_app().await;
    let mut ws = connect(&app, &app.agent.token, None).await;
    let (replica_b, _stop) = test_support::spawn_replica(&app).await;
    // A contact and a message exist; the read mark is set through replica B.
    let got = app.inbound("+14155552671", "hi").await;
    assert_eq!(next_event(&mut ws).await["kind"], "message.created");
    assert_eq!(next_event(&mut ws).await["kind"], "conversation.unread");
    let mid = got.message.expect("stored").id;
    let res = app
        .client
        .post(format!(
            "http://{replica_b}/api/v1/contacts/{}/read",
            got.contact_id
        ))
        .bearer_auth(&app.supervisor.token)
        .json(&json!({"up_to_message_id": mid}))
        .send()
        .await
        .expect("read via B");
    assert_eq!(res.status(), 200);
    let e = next_event(&mut ws).await;
    assert_eq!(e["kind"], "conversation.unread");
    assert_eq!(e["payload"]["unread_count"], 0);
    assert_eq!(e["payload"]["read_by"], app.supervisor.id.to_string());
}

#[tokio::test]
async fn resuming_from_before_pruned_events_is_told_to_resync() {
    let app = spawn_app().await;
    app.inbound("+14155552671", "old news").await;
    app.eventually("sequenced", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_stream")
            .fetch_one(&app.db)
            .await
            .unwrap_or(0)
            >= 2
    })
    .await;
    let mut conn = app.db.acquire().await.expect("conn");
    sqlx::query("UPDATE events SET created_at = now() - interval '30 days'")
        .execute(&mut *conn)
        .await
        .expect("age");
    assert!(
        events::prune(&mut conn, 7.0 * 24.0 * 3600.0)
            .await
            .expect("prune")
            > 0
    );
    drop(conn);
    let mut ws = connect(&app, &app.agent.token, Some(0)).await;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(u16::from(frame.code), 4002),
        other => panic!("expected a resync close, got {other:?}"),
    }
    // Without `after` the client starts from now.
    let mut ws = connect(&app, &app.agent.token, None).await;
    app.inbound("+14155552671", "new").await;
    assert_eq!(next_event(&mut ws).await["kind"], "message.created");
}

/// A client that stops reading is not buffered for without bound: once a frame cannot be
/// handed to it within the send timeout, it is disconnected (close code 4001 when the
/// frame gets through), and resuming with `after` gets the rest, nothing missing or twice.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_resumes_without_loss() {
    let app = test_support::spawn_app_with(&[("PARLEY_WS_SEND_TIMEOUT_MS", "300")]).await;
    let mut ws = connect(&app, &app.agent.token, Some(0)).await;
    // 400 events of 64 KiB: far more than the kernel's socket buffers hold.
    let blob = "x".repeat(64 * 1024);
    let mut conn = app.db.acquire().await.expect("conn");
    for n in 0..400 {
        events::append(
            &mut conn,
            app.tenant,
            Audience::Tenant,
            "test.bulk",
            &json!({ "n": n, "blob": blob }),
        )
        .await
        .expect("append");
    }
    drop(conn);
    // Don't read while the server tries to push it all.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got: Vec<i64> = Vec::new();
    let mut ns: Vec<i64> = Vec::new();
    let mut close_code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let e: Value = serde_json::from_str(&t).expect("json");
                got.push(e["id"].as_i64().expect("id"));
                ns.push(e["payload"]["n"].as_i64().expect("n"));
            }
            Ok(Some(Ok(Message::Close(f)))) => {
                close_code = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => break,
            Err(_) => panic!("the slow client was neither served in full nor disconnected"),
        }
    }
    assert!(
        ns.len() < 400,
        "the server kept buffering for a client that did not read"
    );
    assert!(
        close_code.is_none() || close_code == Some(4001),
        "{close_code:?}"
    );
    let last = got.last().copied().unwrap_or(0);
    let mut ws = connect(&app, &app.agent.token, Some(last)).await;
    while ns.len() < 400 {
        let e = next_event(&mut ws).await;
        got.push(e["id"].as_i64().expect("id"));
        ns.push(e["payload"]["n"].as_i64().expect("n"));
    }
    assert_eq!(
        ns,
        (0..400).collect::<Vec<i64>>(),
        "every event once, in order"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert!(nothing_within(&mut ws, 300).await, "nothing repeated");
}

#[tokio::test]
async fn a_supervisor_sees_agent_states_and_another_tenant_sees_nothing() {
    let app = spawn_app().await;
    let (_, [.., other_sup, other_agent]) = app.other_tenant().await;
    let mut sup = connect(&app, &app.supervisor.token, None).await;
    let mut foreign_sup = connect(&app, &other_sup.token, None).await;
    let mut foreign_agent = connect(&app, &other_agent.token, None).await;
    let r = app
        .call(
            reqwest::Method::PUT,
            "/api/v1/me/state",
            Some(&app.agent.token),
            Some(&json!({"state": "ready"})),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::OK);
    app.inbound("+14155552671", "hello").await;
    let e = next_event(&mut sup).await;
    assert_eq!(e["kind"], "agent.state");
    assert_eq!(e["payload"]["agent"]["user_id"], app.agent.id.to_string());
    assert_eq!(e["payload"]["agent"]["state"], "ready");
    assert!(nothing_within(&mut foreign_sup, 500).await);
    assert!(nothing_within(&mut foreign_agent, 300).await);
}

/// With a feed that keeps a single page, a burst spanning several pages leaves sockets
/// behind the feed: they catch up from the database and still get everything once, in
/// order.
#[tokio::test]
async fn a_socket_behind_the_in_memory_feed_catches_up_from_the_database() {
    let app = test_support::spawn_app_with(&[("PARLEY_EVENT_FEED_PAGES", "1")]).await;
    let mut ws = connect(&app, &app.agent.token, None).await;
    let mut conn = app.db.acquire().await.expect("conn");
    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("tx");
    for n in 0..1000 {
        events::append(
            &mut tx,
            app.tenant,
            Audience::Tenant,
            "test.burst",
            &json!({ "n": n }),
        )
        .await
        .expect("append");
    }
    tx.commit().await.expect("commit");
    drop(conn);
    let mut ns = Vec::new();
    let mut ids = Vec::new();
    while ns.len() < 1000 {
        let e = next_event(&mut ws).await;
        ids.push(e["id"].as_i64().expect("id"));
        ns.push(e["payload"]["n"].as_i64().expect("n"));
    }
    assert_eq!(ns, (0..1000).collect::<Vec<i64>>());
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(nothing_within(&mut ws, 300).await, "nothing twice");
}

#[tokio::test]
async fn a_user_may_hold_only_so_many_sockets() {
    let app = test_support::spawn_app_with(&[("PARLEY_WS_MAX_PER_USER", "2")]).await;
    let a = connect(&app, &app.agent.token, None).await;
    let _b = connect(&app, &app.agent.token, None).await;
    let url = format!(
        "ws://{}/api/v1/events?access_token={}",
        app.addr, app.agent.token
    );
    match connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a third socket was not refused: {:?}", other.map(|_| ())),
    }
    // Someone else is not affected.
    let _c = connect(&app, &app.supervisor.token, None).await;
    // Closing one frees its slot.
    drop(a);
    let mut reopened = false;
    for _ in 0..50 {
        if connect_async(url.clone()).await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "the closed socket's slot was not freed");
}

#[tokio::test]
async fn one_tenants_sockets_cannot_take_the_others_places() {
    let app = test_support::spawn_app_with(&[
        ("PARLEY_WS_MAX_PER_TENANT", "3"),
        ("PARLEY_WS_MAX_TOTAL", "5"),
    ])
    .await;
    let mut held = Vec::new();
    for token in [&app.agent.token, &app.supervisor.token, &app.admin.token] {
        held.push(connect(&app, token, None).await);
    }
    let url = |t: &str| format!("ws://{}/api/v1/events?access_token={t}", app.addr);
    match connect_async(url(&app.agent.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!(
            "a fourth socket of the tenant was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // Another tenant still connects, and its requests are served.
    let (_, [b_admin, b_sup, _]) = app.other_tenant().await;
    held.push(connect(&app, &b_admin.token, None).await);
    held.push(connect(&app, &b_sup.token, None).await);
    assert_eq!(
        app.get("/api/v1/me", &b_admin.token).await.status,
        reqwest::StatusCode::OK
    );
    // The process's own limit holds beyond the tenants' (503: try another replica).
    match connect_async(url(&b_admin.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a sixth socket was not refused: {:?}", other.map(|_| ())),
    }
}

/// Upgrading a database whose events carried their positions on the event row: the
/// positions given keep their events, the events not yet sequenced get the next ones in
/// commit-safe order, and a client resuming from an old position misses nothing.
#[tokio::test]
async fn an_upgraded_database_keeps_its_stream_positions() {
    use sqlx::Connection as _;
    let url = test_support::fresh_database_url().await.expect("database");
    let name = format!("parley_upgrade_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    let db = sqlx::PgPool::connect_with(options.database(&name))
        .await
        .expect("pool");
    // The schema as it was before the stream table.
    conversation_store::MIGRATOR
        .run_to(20261201000005, &db)
        .await
        .expect("old schema");
    let tenant = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'upgrade')")
        .bind(tenant)
        .execute(&db)
        .await
        .expect("tenant");
    // Three events sequenced the old way, then two not yet sequenced.
    sqlx::query(
        "INSERT INTO events (tenant_id, audience, kind, payload, position)
         SELECT $1, 'tenant', 'old.' || g, '{}', g FROM generate_series(1, 3) g",
    )
    .bind(tenant)
    .execute(&db)
    .await
    .expect("sequenced events");
    sqlx::query(
        "INSERT INTO events (tenant_id, audience, kind, payload)
         SELECT $1, 'tenant', 'new.' || g, '{}' FROM generate_series(1, 2) g",
    )
    .bind(tenant)
    .execute(&db)
    .await
    .expect("unsequenced events");
    conversation_store::MIGRATOR
        .run(&db)
        .await
        .expect("upgrade");
    let mut conn = db.acquire().await.expect("conn");
    assert_eq!(events::global_head(&mut conn).await.expect("head"), 3);
    // The sequencer returns what it sequenced, in position order, as the feed reads it.
    let sequenced: Vec<(i64, String)> = events::sequence(&mut conn)
        .await
        .expect("sequence")
        .into_iter()
        .map(|e| (e.position, e.kind))
        .collect();
    assert_eq!(
        sequenced,
        [(4, "new.1".to_owned()), (5, "new.2".to_owned())]
    );
    assert!(
        events::sequence(&mut conn)
            .await
            .expect("sequence")
            .is_empty()
    );
    let user = parley_core::UserId(uuid::Uuid::new_v4());
    let all = events::stream_after(&mut conn, parley_core::TenantId(tenant), user, false, 0, 10)
        .await
        .expect("stream");
    let got: Vec<(i64, String)> = all.into_iter().map(|e| (e.id, e.kind)).collect();
    assert_eq!(
        got,
        [
            (1, "old.1".to_owned()),
            (2, "old.2".to_owned()),
            (3, "old.3".to_owned()),
            (4, "new.1".to_owned()),
            (5, "new.2".to_owned()),
        ]
    );
    let resumed =
        events::stream_after(&mut conn, parley_core::TenantId(tenant), user, false, 2, 10)
            .await
            .expect("stream");
    assert_eq!(resumed.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
    drop(conn);
    db.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("drop database");
}
