//! Agent states, offers, capacity and the interaction lifecycle.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::{TestApp, TestUser, spawn_app, spawn_app_with};

pub(crate) async fn ready(app: &TestApp, who: &TestUser) {
    let r = app
        .call(
            Method::PUT,
            "/api/v1/me/state",
            Some(&who.token),
            Some(&json!({"state": "ready"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

pub(crate) async fn offers_for(app: &TestApp, agent: &TestUser) -> Vec<String> {
    sqlx::query_scalar::<_, uuid::Uuid>("SELECT interaction_id FROM offers WHERE agent_id = $1 AND state = 'pending' ORDER BY created_at")
        .bind(agent.id.0)
        .fetch_all(&app.db)
        .await
        .expect("offers")
        .into_iter()
        .map(|u| u.to_string())
        .collect()
}

pub(crate) async fn wait_offer(app: &TestApp, agent: &TestUser) -> String {
    let mut found = String::new();
    for _ in 0..200 {
        if let Some(o) = offers_for(app, agent).await.into_iter().next() {
            found = o;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!found.is_empty(), "no offer reached {}", agent.email);
    found
}

pub(crate) async fn act(
    app: &TestApp,
    who: &TestUser,
    interaction: &str,
    action: &str,
) -> test_support::Reply {
    app.post(
        &format!("/api/v1/interactions/{interaction}/{action}"),
        &who.token,
        &json!({}),
    )
    .await
}

#[tokio::test]
async fn an_inbound_chat_is_offered_to_the_ready_agent_who_accepts_it() {
    let app = spawn_app().await;
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "hello?").await;
    let offered = wait_offer(&app, &app.agent).await;
    assert_eq!(offered, got.interaction.id.to_string());
    let r = act(&app, &app.agent, &offered, "accept").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "active");
    assert_eq!(r.json["agent_id"], app.agent.id.to_string());
    // Someone else cannot accept or end it.
    let r = act(&app, &app.supervisor, &offered, "end").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mine = app
        .get("/api/v1/interactions?state=active", &app.agent.token)
        .await;
    assert_eq!(mine.json.as_array().map(Vec::len), Some(1));
    let r = act(&app, &app.agent, &offered, "end").await;
    assert_eq!(r.json["state"], "ended");
    let r = app
        .post(
            &format!("/api/v1/interactions/{offered}/done"),
            &app.agent.token,
            &json!({"disposition": "resolved"}),
        )
        .await;
    assert_eq!(r.json["state"], "done");
    assert_eq!(r.json["disposition"], "resolved");
    assert!(r.json["handle_seconds"].is_number());
}

#[tokio::test]
async fn with_no_agent_ready_it_waits_and_is_offered_as_soon_as_one_is() {
    let app = spawn_app().await;
    let got = app.inbound("+14155552671", "anyone?").await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(offers_for(&app, &app.agent).await.is_empty());
    ready(&app, &app.agent).await;
    assert_eq!(
        wait_offer(&app, &app.agent).await,
        got.interaction.id.to_string()
    );
}

#[tokio::test]
async fn a_declined_offer_goes_to_the_next_ready_agent() {
    let app = spawn_app().await;
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "hi").await;
    let first = wait_offer(&app, &app.agent).await;
    ready(&app, &app.supervisor).await;
    let r = act(&app, &app.agent, &first, "decline").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        wait_offer(&app, &app.supervisor).await,
        got.interaction.id.to_string()
    );
    assert!(
        offers_for(&app, &app.agent).await.is_empty(),
        "not offered again to who declined while they stay Ready"
    );
    let r = act(&app, &app.agent, &first, "accept").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

async fn set_state(app: &TestApp, who: &TestUser, state: &str) {
    let r = app
        .call(
            Method::PUT,
            "/api/v1/me/state",
            Some(&who.token),
            Some(&json!({"state": state})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_chat_every_agent_declined_is_offered_again_to_who_goes_ready_anew() {
    let app = spawn_app().await;
    ready(&app, &app.agent).await;
    ready(&app, &app.supervisor).await;
    let got = app.inbound("+14155552671", "anyone?").await;
    let id = got.interaction.id.to_string();
    // Both decline it in turn.
    let first = if wait_any_offer(&app).await == app.agent.id.0 {
        (&app.agent, &app.supervisor)
    } else {
        (&app.supervisor, &app.agent)
    };
    assert_eq!(
        act(&app, first.0, &id, "decline").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(wait_offer(&app, first.1).await, id);
    assert_eq!(
        act(&app, first.1, &id, "decline").await.status,
        StatusCode::NO_CONTENT
    );
    // Staying Ready does not bring it back to either (no offer loop)…
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(offers_for(&app, &app.agent).await.is_empty());
    assert!(offers_for(&app, &app.supervisor).await.is_empty());
    // …going Not Ready and Ready again does.
    set_state(&app, first.0, "not_ready").await;
    set_state(&app, first.0, "ready").await;
    assert_eq!(wait_offer(&app, first.0).await, id);
    let r = act(&app, first.0, &id, "accept").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn wait_any_offer(app: &TestApp) -> uuid::Uuid {
    for _ in 0..200 {
        let who: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT agent_id FROM offers WHERE state = 'pending' LIMIT 1")
                .fetch_optional(&app.db)
                .await
                .expect("offers");
        if let Some(w) = who {
            return w;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no offer was made");
}

#[tokio::test]
async fn a_missed_offer_comes_back_to_the_only_agent_once_ready_again() {
    // The README's demo: one agent, an offer that times out before it is answered.
    let app = spawn_app_with(&[("PARLEY_OFFER_TIMEOUT_SECS", "1")]).await;
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "hello").await;
    let id = got.interaction.id.to_string();
    assert_eq!(wait_offer(&app, &app.agent).await, id);
    // Missed: the agent is Not Responding and the offer gone.
    for _ in 0..100 {
        if offers_for(&app, &app.agent).await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(offers_for(&app, &app.agent).await.is_empty());
    let r = act(&app, &app.agent, &id, "accept").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // Ready again: offered again, and this time taken.
    ready(&app, &app.agent).await;
    assert_eq!(wait_offer(&app, &app.agent).await, id);
    let r = act(&app, &app.agent, &id, "accept").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_supervisor_assigns_a_waiting_chat_to_an_agent() {
    let app = spawn_app().await;
    // Nobody Ready: it waits, queued.
    let got = app.inbound("+14155552671", "waiting").await;
    let id = got.interaction.id.to_string();
    let path = format!("/api/v1/interactions/{id}/transfer");
    // An agent may not assign it (not theirs); the supervisor may, to a Ready agent.
    let r = app
        .post(&path, &app.agent.token, &json!({"agent_id": app.agent.id}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    ready(&app, &app.agent).await;
    // It may already have been offered to the agent by now: assigning withdraws that
    // offer and makes a new one, so either way the agent ends up with one offer.
    let r = app
        .post(
            &path,
            &app.supervisor.token,
            &json!({"agent_id": app.agent.id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "offered");
    assert_eq!(offers_for(&app, &app.agent).await, vec![id.clone()]);
    let r = act(&app, &app.agent, &id, "accept").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn one_tenants_backlog_does_not_hold_up_another_tenants_chats() {
    let app = spawn_app().await;
    // Tenant A: a Ready agent with room for one, and 300 chats waiting.
    ready(&app, &app.agent).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO contacts (id, tenant_id, name)
           SELECT gen_random_uuid(), '{t}', 'backlog ' || g FROM generate_series(1, 300) g;
         INSERT INTO interactions (id, tenant_id, contact_id, channel, state, queued_at, created_at)
           SELECT gen_random_uuid(), '{t}', k.id, 'whatsapp', 'queued',
                  now() - interval '1 hour', now() - interval '1 hour'
           FROM contacts k WHERE k.tenant_id = '{t}' AND k.name LIKE 'backlog %';",
        t = app.tenant,
    )))
    .execute(&app.db)
    .await
    .expect("backlog");
    sqlx::query("UPDATE users SET capacity = 1 WHERE id = $1")
        .bind(app.agent.id.0)
        .execute(&app.db)
        .await
        .expect("capacity");
    wait_offer(&app, &app.agent).await;
    // Tenant B: a Ready agent and one new chat, behind A's 299 older ones.
    let (b, [_, _, b_agent]) = app.other_tenant().await;
    ready(&app, &b_agent).await;
    let got = app
        .inbound_in(
            b,
            test_support::In {
                channel: parley_core::channel::Channel::Whatsapp,
                address: "+14155550199",
                name: None,
                body: "B's customer",
                provider_id: None,
            },
        )
        .await;
    assert_eq!(
        wait_offer(&app, &b_agent).await,
        got.interaction.id.to_string()
    );
}

#[tokio::test]
async fn an_unanswered_offer_times_out_to_the_next_agent_and_the_missing_agent_is_not_responding() {
    let app = spawn_app_with(&[("PARLEY_OFFER_TIMEOUT_SECS", "1")]).await;
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "hi").await;
    wait_offer(&app, &app.agent).await;
    ready(&app, &app.supervisor).await;
    // The supervisor is ready now but the agent holds the offer until it times out.
    assert_eq!(
        wait_offer(&app, &app.supervisor).await,
        got.interaction.id.to_string()
    );
    let agents = app.get("/api/v1/agents", &app.supervisor.token).await;
    let me = agents
        .json
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["user_id"] == app.agent.id.to_string())
        .cloned()
        .expect("agent");
    assert_eq!(me["state"], "not_responding");
    let r = app.get("/api/v1/agents", &app.agent.token).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "agents don't see others' states"
    );
}

#[tokio::test]
async fn capacity_is_respected_ended_still_counts_and_done_frees_it() {
    let app = spawn_app().await;
    let r = app
        .patch(
            &format!("/api/v1/users/{}", app.agent.id),
            &app.admin.token,
            &json!({"capacity": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    ready(&app, &app.agent).await;
    let a = app.inbound("+14155552671", "first").await;
    let b = app.inbound("+33612345678", "second").await;
    let first = wait_offer(&app, &app.agent).await;
    assert_eq!(first, a.interaction.id.to_string(), "oldest first");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(offers_for(&app, &app.agent).await.len(), 1, "capacity 1");
    act(&app, &app.agent, &first, "accept").await;
    act(&app, &app.agent, &first, "end").await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        offers_for(&app, &app.agent).await.is_empty(),
        "an ended interaction still counts until Done"
    );
    act(&app, &app.agent, &first, "done").await;
    assert_eq!(
        wait_offer(&app, &app.agent).await,
        b.interaction.id.to_string()
    );
}

#[tokio::test]
async fn a_continuation_goes_to_the_contacts_last_agent() {
    let app = spawn_app().await;
    ready(&app, &app.agent).await;
    let a = app.inbound("+14155552671", "first chat").await;
    let i = wait_offer(&app, &app.agent).await;
    act(&app, &app.agent, &i, "accept").await;
    act(&app, &app.agent, &i, "done").await;
    // The supervisor has been idle longer, but the contact's last agent comes first.
    ready(&app, &app.supervisor).await;
    sqlx::query(
        "UPDATE agent_states SET idle_since = now() - interval '1 hour' WHERE user_id = $1",
    )
    .bind(app.supervisor.id.0)
    .execute(&app.db)
    .await
    .expect("idle");
    let again = app.inbound("+14155552671", "me again").await;
    assert_ne!(again.interaction.id, a.interaction.id);
    assert_eq!(
        wait_offer(&app, &app.agent).await,
        again.interaction.id.to_string()
    );
}

#[tokio::test]
async fn a_message_on_an_ended_interaction_resumes_it() {
    let app = spawn_app().await;
    ready(&app, &app.agent).await;
    let a = app.inbound("+14155552671", "hi").await;
    let i = wait_offer(&app, &app.agent).await;
    act(&app, &app.agent, &i, "accept").await;
    act(&app, &app.agent, &i, "end").await;
    let again = app.inbound("+14155552671", "one more thing").await;
    assert_eq!(again.interaction.id, a.interaction.id);
    assert_eq!(again.interaction.state.as_str(), "active");
    assert_eq!(again.interaction.agent_id, Some(app.agent.id.0));
}

#[tokio::test]
async fn two_routers_never_offer_twice_nor_overfill_an_agent() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.start_second_router();
    for who in [&app.agent, &app.supervisor, &app.admin] {
        let r = app
            .patch(
                &format!("/api/v1/users/{}", who.id),
                &app.admin.token,
                &json!({"capacity": 2}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        ready(&app, who).await;
    }
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.inbound(&format!("+1415555{:04}", 2600 + i), "burst")
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    app.eventually("six offers", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM offers WHERE state = 'pending'")
            .fetch_one(&app.db)
            .await
            .unwrap_or(0)
            == 6
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let per_agent: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT agent_id, count(*) FROM offers WHERE state = 'pending' GROUP BY agent_id",
    )
    .fetch_all(&app.db)
    .await
    .expect("per agent");
    assert_eq!(per_agent.len(), 3);
    assert!(per_agent.iter().all(|(_, n)| *n == 2), "{per_agent:?}");
    let dup: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT interaction_id FROM offers GROUP BY interaction_id HAVING count(*) > 1) d")
        .fetch_one(&app.db)
        .await
        .expect("dups");
    assert_eq!(dup, 0);
    let waiting: Vec<Value> = app
        .get("/api/v1/interactions?state=queued", &app.supervisor.token)
        .await
        .json
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(waiting.len(), 14);
}

#[tokio::test]
async fn picking_an_agent_reads_the_contacts_interactions_by_index_not_every_interaction() {
    // The router runs this for every queued interaction. Its "contact's last agent" part
    // once looked interactions up by contact alone, which no index answers: a scan of
    // every interaction of every tenant, on every routed interaction.
    let app = spawn_app().await;
    let c = app.inbound("+14155552671", "route me").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO contacts (id, tenant_id, name)
           SELECT gen_random_uuid(), '{t}', 'bulk ' || g FROM generate_series(1, 2000) g;
         INSERT INTO interactions (id, tenant_id, contact_id, channel, state, agent_id,
                                   created_at, accepted_at, done_at)
           SELECT gen_random_uuid(), '{t}', k.id, 'whatsapp', 'done', '{agent}',
                  now() - make_interval(mins => g), now() - make_interval(mins => g),
                  now() - make_interval(mins => g)
           FROM generate_series(1, 20) g, contacts k WHERE k.tenant_id = '{t}' AND k.name LIKE 'bulk %';
         ANALYZE contacts; ANALYZE interactions;",
        t = app.tenant,
        agent = app.agent.id.0,
    )))
    .execute(&app.db)
    .await
    .expect("bulk data");
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        interaction_router::agent_pick_sql()
    )))
    .bind(app.tenant.0)
    .bind(c.interaction.id)
    .bind(c.contact_id.0)
    .bind(Vec::<String>::new())
    .bind(None::<uuid::Uuid>)
    .bind(3600.0_f64)
    .bind(None::<uuid::Uuid>)
    .bind(None::<chrono::DateTime<chrono::Utc>>)
    .fetch_all(&app.db)
    .await
    .expect("explain");
    let plan = rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
    assert!(!plan.contains("Seq Scan on interactions"), "{plan}");
    assert!(plan.contains("interactions_contact_idx"), "{plan}");
}

#[tokio::test]
async fn a_chat_handed_to_a_queue_goes_to_someone_else_not_straight_back() {
    let app = spawn_app().await;
    let q = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "General"}),
        )
        .await;
    assert_eq!(q.status, StatusCode::CREATED, "{}", q.text);
    let queue = q.json["id"].as_str().expect("id").to_owned();
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "help").await;
    let id = got.interaction.id.to_string();
    assert_eq!(wait_offer(&app, &app.agent).await, id);
    assert_eq!(
        act(&app, &app.agent, &id, "accept").await.status,
        StatusCode::OK
    );
    let r = app
        .post(
            &format!("/api/v1/interactions/{id}/transfer"),
            &app.agent.token,
            &json!({"queue_id": queue}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The agent is still Ready with room, and the only one: it does not bounce back.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(offers_for(&app, &app.agent).await.is_empty());
    // Someone else who comes Ready gets it.
    ready(&app, &app.supervisor).await;
    assert_eq!(wait_offer(&app, &app.supervisor).await, id);
}

async fn my_state(app: &TestApp, who: &TestUser) -> Value {
    let r = app.get("/api/v1/me/state", &who.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

#[tokio::test]
async fn a_desktop_reads_its_state_and_offers_after_a_reload_and_a_dropped_socket_gets_no_new_offers()
 {
    let app = spawn_app().await;
    // Ready with no event stream: allowed, but said plainly, and not offline at once.
    let r = app
        .call(
            Method::PUT,
            "/api/v1/me/state",
            Some(&app.agent.token),
            Some(&json!({"state": "ready"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "ready");
    assert_eq!(r.json["event_stream"], false);
    assert!(
        r.json["warning"]
            .as_str()
            .is_some_and(|w| w.contains("/api/v1/events"))
    );
    // The desktop opens its stream: no warning any more.
    let ws = crate::events::connect(&app, &app.agent.token, None).await;
    let mut connected = false;
    for _ in 0..100 {
        let s = my_state(&app, &app.agent).await;
        if s["event_stream"] == true {
            assert_eq!(s["warning"], Value::Null);
            connected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(connected, "the open socket was never seen");
    // An offer arrives; the page reloads (socket closed, then a new one): the offer is
    // read back from GET /me/state and accepted.
    let first = app.inbound("+14155552671", "one").await;
    wait_offer(&app, &app.agent).await;
    drop(ws);
    let s = my_state(&app, &app.agent).await;
    assert_eq!(s["state"], "ready");
    assert_eq!(
        s["offers"][0]["interaction_id"],
        first.interaction.id.to_string()
    );
    assert!(s["offers"][0]["expires_at"].is_string());
    // With the socket gone, a new chat is not offered to the agent…
    for _ in 0..100 {
        if my_state(&app, &app.agent).await["event_stream"] == false {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let second = app.inbound("+14155552672", "two").await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        offers_for(&app, &app.agent).await,
        vec![first.interaction.id.to_string()]
    );
    // …until a socket of theirs is back.
    let _ws = crate::events::connect(&app, &app.agent.token, None).await;
    for _ in 0..200 {
        if offers_for(&app, &app.agent).await.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        offers_for(&app, &app.agent).await,
        vec![
            first.interaction.id.to_string(),
            second.interaction.id.to_string()
        ]
    );
}

#[tokio::test]
async fn a_chat_nobody_writes_in_is_ended_by_the_system_and_frees_the_agent() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Quick", "inactivity_timeout_secs": 2}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["inactivity_timeout_secs"], 2);
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Bad", "inactivity_timeout_secs": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("inactivity_timeout_secs"));
    ready(&app, &app.agent).await;
    let mut sup = crate::events::connect(&app, &app.supervisor.token, None).await;
    let got = app.inbound("+14155552671", "hello, then silence").await;
    let id = got.interaction.id.to_string();
    assert_eq!(wait_offer(&app, &app.agent).await, id);
    assert_eq!(
        act(&app, &app.agent, &id, "accept").await.status,
        StatusCode::OK
    );
    let mut ended = None;
    for _ in 0..30 {
        let e = crate::events::next_event(&mut sup).await;
        if e["kind"] == "interaction.ended" {
            ended = Some(e);
            break;
        }
    }
    let e = ended.expect("the idle chat was ended");
    assert_eq!(e["payload"]["reason"], "inactivity");
    assert_eq!(e["payload"]["interaction"]["ended_by"], "system");
    assert_eq!(e["payload"]["interaction"]["id"], id.as_str());
    let agents = app.get("/api/v1/agents", &app.supervisor.token).await;
    let me = agents
        .json
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["user_id"] == app.agent.id.to_string())
                .cloned()
        })
        .expect("agent");
    assert_eq!(me["load"], 0, "the ended chat no longer holds the agent");
    // The agent may still wrap it up.
    let r = act(&app, &app.agent, &id, "done").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn ready_after_an_old_socket_is_not_offline_moments_later() {
    // The agent had an event stream long ago (its presence is old) and now goes Ready
    // by hand: the grace period counts from now, not from the old socket.
    let app = spawn_app().await;
    sqlx::query(
        "INSERT INTO agent_states (user_id, tenant_id, state, last_seen_at, since)
         VALUES ($1, $2, 'offline', now() - interval '10 minutes', now() - interval '10 minutes')",
    )
    .bind(app.agent.id.0)
    .bind(app.tenant.0)
    .execute(&app.db)
    .await
    .expect("old presence");
    ready(&app, &app.agent).await;
    // Several routing rounds (twice a second) later, still Ready.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(my_state(&app, &app.agent).await["state"], "ready");
}
