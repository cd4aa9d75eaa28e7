//! Queues (skills, relaxation, per-queue timeout, wrap-up codes, what counts against
//! capacity, default queue per channel account), Not Ready reasons, presence, transfer,
//! sending through an interaction, agent reports, and routing at scale across replicas.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use parley_core::{Principal, Role, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::{TestApp, TestUser, spawn_app, spawn_app_with};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    events::{connect, next_event},
    routing::{act, offers_for, ready, wait_offer},
};

async fn sim_inbound(app: &TestApp, wa: &test_support::Wa, from: &str, text: &str) {
    let r = app
        .client
        .post(format!("{}/_sim/inbound", wa.sim_base))
        .json(&json!({"from": from, "name": "Ann", "text": text}))
        .send()
        .await
        .expect("sim");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["gateway_status"], 200, "{body}");
}

async fn queue(app: &TestApp, body: Value) -> String {
    let r = app.post("/api/v1/queues", &app.admin.token, &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"].as_str().expect("id").to_owned()
}

async fn set_user(app: &TestApp, who: &TestUser, body: Value) {
    let r = app
        .patch(
            &format!("/api/v1/users/{}", who.id),
            &app.admin.token,
            &body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn state_of(app: &TestApp, who: &TestUser) -> String {
    let r = app.get("/api/v1/agents", &app.supervisor.token).await;
    r.json
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["user_id"] == who.id.to_string())
        .and_then(|a| a["state"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn put_state(app: &TestApp, who: &TestUser, body: Value) -> test_support::Reply {
    app.call(
        Method::PUT,
        "/api/v1/me/state",
        Some(&who.token),
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn queues_are_admin_defined_and_validated() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/queues",
            &app.agent.token,
            &json!({"name": "Sales"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": " ", "channels": ["pigeon"], "skills": ["es"],
                    "relaxable_skills": ["fr"], "offer_timeout_secs": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for f in [
        "name",
        "channels[0]",
        "relaxable_skills[0]",
        "offer_timeout_secs",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    let id = queue(
        &app,
        json!({"name": "Support", "channels": ["whatsapp"], "skills": ["billing"],
               "wrap_up_codes": ["resolved", "callback"]}),
    )
    .await;
    let r = app
        .post(
            "/api/v1/queues",
            &app.admin.token,
            &json!({"name": "Support"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("\"name\""), "{}", r.text);
    let r = app
        .get(&format!("/api/v1/queues/{id}"), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["offer_timeout_secs"], 30);
    assert_eq!(r.json["ended_counts"], true);
    assert_eq!(r.json["waiting_count"], 0);
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/queues/{id}"),
            Some(&app.admin.token),
            Some(&json!({"name": "Billing", "skills": ["billing"], "offer_timeout_secs": 45})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "Billing");
    assert_eq!(r.json["offer_timeout_secs"], 45);
    let (_, [other_admin, ..]) = app.other_tenant().await;
    let r = app
        .get(&format!("/api/v1/queues/{id}"), &other_admin.token)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/queues/{id}"),
            Some(&app.admin.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get("/api/v1/queues", &app.agent.token).await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn skills_decide_who_is_offered_and_relaxation_drops_them_after_the_wait() {
    let app = spawn_app().await;
    queue(
        &app,
        json!({"name": "Spanish", "skills": ["spanish", "vip"], "relaxable_skills": ["vip"],
               "relax_after_secs": 2}),
    )
    .await;
    set_user(&app, &app.agent, json!({"skills": ["spanish"]})).await;
    set_user(&app, &app.supervisor, json!({"skills": ["spanish", "vip"]})).await;
    ready(&app, &app.agent).await;
    let first = app.inbound("+34612345678", "hola").await;
    // Only the supervisor has both skills; the agent is passed over until relaxation.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(offers_for(&app, &app.agent).await.is_empty());
    assert_eq!(
        wait_offer(&app, &app.agent).await,
        first.interaction.id.to_string(),
        "after 2 s the vip skill is no longer required"
    );
    // An agent without the required skill never gets it.
    act(
        &app,
        &app.agent,
        &first.interaction.id.to_string(),
        "decline",
    )
    .await;
    ready(&app, &app.admin).await;
    ready(&app, &app.supervisor).await;
    assert_eq!(
        wait_offer(&app, &app.supervisor).await,
        first.interaction.id.to_string()
    );
    assert!(offers_for(&app, &app.admin).await.is_empty());
}

#[tokio::test]
async fn a_queue_sets_the_offer_timeout_and_shows_waiting_positions() {
    let app = spawn_app().await;
    let q = queue(&app, json!({"name": "Fast", "offer_timeout_secs": 1})).await;
    let a = app.inbound("+14155550001", "one").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = app.inbound("+14155550002", "two").await;
    app.eventually("both waiting in the queue", || async {
        app.get(&format!("/api/v1/queues/{q}"), &app.agent.token)
            .await
            .json["waiting_count"]
            == 2
    })
    .await;
    let status = app
        .get(&format!("/api/v1/queues/{q}"), &app.agent.token)
        .await
        .json;
    assert_eq!(
        status["waiting"][0]["interaction_id"],
        a.interaction.id.to_string()
    );
    assert_eq!(status["waiting"][0]["position"], 1);
    assert_eq!(
        status["waiting"][1]["interaction_id"],
        b.interaction.id.to_string()
    );
    assert_eq!(status["waiting"][1]["position"], 2);
    assert!(status["oldest_wait_secs"].as_f64().is_some_and(|s| s > 0.0));
    ready(&app, &app.agent).await;
    wait_offer(&app, &app.agent).await;
    // The queue's 1 s timeout, not the 30 s default, makes the agent not responding.
    app.eventually("the agent missed the offer", || async {
        state_of(&app, &app.agent).await == "not_responding"
    })
    .await;
}

#[tokio::test]
async fn the_channel_accounts_default_queue_takes_its_interactions() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    queue(&app, json!({"name": "First"})).await;
    let vip = queue(&app, json!({"name": "VIP"})).await;
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &app.admin.token,
            &json!({"default_queue_id": vip}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["default_queue_id"], vip);
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &app.admin.token,
            &json!({"default_queue_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("default_queue_id"));
    sim_inbound(&app, &wa, "14155552671", "hello").await;
    app.eventually("the interaction joined the VIP queue", || async {
        sqlx::query_scalar::<_, Option<uuid::Uuid>>("SELECT queue_id FROM interactions")
            .fetch_optional(&app.db)
            .await
            .ok()
            .flatten()
            .flatten()
            .is_some_and(|q| q.to_string() == vip)
    })
    .await;
    // The interaction records the account it came in on (which is how the router found
    // the account's queue).
    let account: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT channel_account_id FROM interactions")
            .fetch_one(&app.db)
            .await
            .expect("interaction");
    assert_eq!(account, Some(wa.account_id));
    // Without a default, the tenant's first queue that takes the channel.
    let r = app
        .patch(
            &format!("/api/v1/channel-accounts/{}", wa.account_id),
            &app.admin.token,
            &json!({"default_queue_id": null}),
        )
        .await;
    assert_eq!(r.json["default_queue_id"], Value::Null);
}

#[tokio::test]
async fn wrap_up_codes_and_whether_ended_counts_come_from_the_queue() {
    let app = spawn_app().await;
    queue(
        &app,
        json!({"name": "Async", "wrap_up_codes": ["resolved", "no_answer"], "ended_counts": false}),
    )
    .await;
    set_user(&app, &app.agent, json!({"capacity": 1})).await;
    ready(&app, &app.agent).await;
    let a = app.inbound("+14155550001", "one").await;
    let b = app.inbound("+14155550002", "two").await;
    let i = wait_offer(&app, &app.agent).await;
    assert_eq!(i, a.interaction.id.to_string());
    act(&app, &app.agent, &i, "accept").await;
    act(&app, &app.agent, &i, "end").await;
    // Ended does not count in this queue: the next one comes before Done.
    assert_eq!(
        wait_offer(&app, &app.agent).await,
        b.interaction.id.to_string()
    );
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/done"),
            &app.agent.token,
            &json!({"disposition": "whatever"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("disposition") && r.text.contains("resolved"));
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/done"),
            &app.agent.token,
            &json!({"disposition": "resolved"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["disposition"], "resolved");
}

#[tokio::test]
async fn not_ready_reasons_are_admin_defined_codes() {
    let app = spawn_app().await;
    // Before any are defined, a free reason is fine.
    let r = put_state(
        &app,
        &app.agent,
        json!({"state": "not_ready", "reason": "coffee"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post(
            "/api/v1/not-ready-reasons",
            &app.agent.token,
            &json!({"code": "lunch", "label": "Lunch"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for (code, label) in [("lunch", "Lunch"), ("training", "Training")] {
        let r = app
            .post(
                "/api/v1/not-ready-reasons",
                &app.admin.token,
                &json!({"code": code, "label": label}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = app.get("/api/v1/not-ready-reasons", &app.agent.token).await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(2));
    let r = put_state(
        &app,
        &app.agent,
        json!({"state": "not_ready", "reason": "coffee"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text.contains("reason") && r.text.contains("lunch"),
        "{}",
        r.text
    );
    let r = put_state(&app, &app.agent, json!({"state": "not_ready"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = put_state(
        &app,
        &app.agent,
        json!({"state": "not_ready", "reason": "lunch"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["reason"], "lunch");
    let (_, [other_admin, ..]) = app.other_tenant().await;
    let r = app
        .get("/api/v1/not-ready-reasons", &other_admin.token)
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(0), "per tenant");
}

#[tokio::test]
async fn an_agent_without_a_live_socket_goes_offline_after_the_grace_period() {
    let app = spawn_app_with(&[("PARLEY_OFFLINE_GRACE_SECS", "1")]).await;
    let mut ws = connect(&app, &app.agent.token, None).await;
    ready(&app, &app.agent).await;
    ready(&app, &app.supervisor).await;
    // The supervisor has no socket: offline after the grace period.
    app.eventually("the socketless supervisor went offline", || async {
        state_of(&app, &app.supervisor).await == "offline"
    })
    .await;
    // The connected agent stays Ready well past it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(state_of(&app, &app.agent).await, "ready");
    let got = app.inbound("+14155552671", "hello").await;
    assert_eq!(
        wait_offer(&app, &app.agent).await,
        got.interaction.id.to_string()
    );
    ws.close(None).await.expect("close");
    drop(ws);
    app.eventually("the agent went offline once the socket closed", || async {
        state_of(&app, &app.agent).await == "offline"
    })
    .await;
}

#[tokio::test]
async fn an_agent_transfers_to_another_agent_or_to_a_queue() {
    let app = spawn_app().await;
    queue(&app, json!({"name": "General"})).await;
    let q = queue(&app, json!({"name": "Tier 2", "skills": ["tier2"]})).await;
    ready(&app, &app.agent).await;
    let got = app.inbound("+14155552671", "help").await;
    let i = wait_offer(&app, &app.agent).await;
    act(&app, &app.agent, &i, "accept").await;
    let mut sup_ws = connect(&app, &app.supervisor.token, None).await;
    // Not to someone who isn't ready.
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/transfer"),
            &app.agent.token,
            &json!({"agent_id": app.supervisor.id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/transfer"),
            &app.agent.token,
            &json!({"agent_id": app.supervisor.id, "queue_id": q}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    ready(&app, &app.supervisor).await;
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/transfer"),
            &app.agent.token,
            &json!({"agent_id": app.supervisor.id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "offered");
    assert_eq!(r.json["agent_id"], Value::Null);
    assert_eq!(offers_for(&app, &app.supervisor).await, vec![i.clone()]);
    let mut seen = Vec::new();
    while !seen.iter().any(|t: &String| t == "interaction.transferred") {
        let e = next_event(&mut sup_ws).await;
        seen.push(e["kind"].as_str().unwrap_or_default().to_owned());
    }
    let r = act(&app, &app.supervisor, &i, "accept").await;
    assert_eq!(r.json["agent_id"], app.supervisor.id.to_string());
    // The supervisor sends it on to the tier-2 queue; the agent, lacking the skill,
    // is not offered it; an agent with it is.
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/transfer"),
            &app.supervisor.token,
            &json!({"queue_id": q}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["queue_id"], q);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(offers_for(&app, &app.agent).await.is_empty());
    set_user(&app, &app.admin, json!({"skills": ["tier2"]})).await;
    ready(&app, &app.admin).await;
    assert_eq!(
        wait_offer(&app, &app.admin).await,
        got.interaction.id.to_string()
    );
    let history: Vec<(String, String)> = sqlx::query_as(
        "SELECT state, actor FROM interaction_history WHERE interaction_id = $1 ORDER BY id",
    )
    .bind(got.interaction.id)
    .fetch_all(&app.db)
    .await
    .expect("history");
    let actors: Vec<&str> = history.iter().map(|(_, a)| a.as_str()).collect();
    assert!(actors.contains(&app.agent.id.to_string().as_str()));
    assert!(actors.contains(&app.supervisor.id.to_string().as_str()));
}

#[tokio::test]
async fn an_agent_sends_through_the_interaction_once_per_key_and_it_resumes_when_ended() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    ready(&app, &app.agent).await;
    sim_inbound(&app, &wa, "14155552671", "hello").await;
    let i = wait_offer(&app, &app.agent).await;
    let send = |key: &'static str, text: &'static str| {
        let app = &app;
        let i = i.clone();
        async move {
            let res = app
                .client
                .post(app.url(&format!("/api/v1/interactions/{i}/messages")))
                .bearer_auth(&app.agent.token)
                .header("idempotency-key", key)
                .json(&json!({"text": text}))
                .send()
                .await
                .expect("send");
            test_support::read_reply(res).await
        }
    };
    let r = send("k0", "too early").await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "offered, not accepted: {}",
        r.text
    );
    act(&app, &app.agent, &i, "accept").await;
    let first = send("k1", "Hi Ann, how can I help?").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let again = send("k1", "Hi Ann, how can I help?").await;
    assert_eq!(again.json["id"], first.json["id"], "same key, same message");
    assert_eq!(first.json["interaction_id"], i);
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/messages"),
            &app.supervisor.token,
            &json!({"text": "a supervisor may"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let (_, [.., other_agent]) = app.other_tenant().await;
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/messages"),
            &other_agent.token,
            &json!({"text": "not mine"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    act(&app, &app.agent, &i, "end").await;
    let r = send("k2", "One more thing").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = app
        .get("/api/v1/interactions?state=active", &app.agent.token)
        .await;
    assert_eq!(
        r.json[0]["id"], i,
        "an agent message resumes an ended interaction"
    );
    app.eventually("three texts reached the provider", || async {
        wa.sim.sent().len() == 3
    })
    .await;
    act(&app, &app.agent, &i, "done").await;
    let r = send("k3", "after done").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_agent_report_gives_handled_handle_time_and_first_response() {
    let app = spawn_app().await;
    let wa = app.whatsapp().await;
    ready(&app, &app.agent).await;
    let from = chrono::Utc::now() - chrono::Duration::minutes(1);
    sim_inbound(&app, &wa, "14155552671", "hello").await;
    let i = wait_offer(&app, &app.agent).await;
    act(&app, &app.agent, &i, "accept").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app
        .post(
            &format!("/api/v1/interactions/{i}/messages"),
            &app.agent.token,
            &json!({"text": "Hello!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    act(&app, &app.agent, &i, "end").await;
    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let q = format!(
        "/api/v1/reports/agents?from={}&to={}",
        urlencode(&from.to_rfc3339()),
        urlencode(&to.to_rfc3339())
    );
    let r = app.get(&q, &app.agent.token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.get(&q, &app.supervisor.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rows = r.json.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let me = &rows[0];
    assert_eq!(me["agent_id"], app.agent.id.to_string());
    assert_eq!(me["interactions_handled"], 1);
    let handle = me["total_handle_secs"].as_f64().expect("handle");
    assert!((0.5..30.0).contains(&handle), "{me}");
    let first = me["avg_first_response_secs"]
        .as_f64()
        .expect("first response");
    assert!(first >= 0.3 && first < handle, "{me}");
    assert!(me["avg_time_to_accept_secs"].as_f64().is_some());
    let r = app
        .get(
            "/api/v1/reports/agents?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            &app.supervisor.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("\"to\""));
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn agent(app: &TestApp, n: usize) -> TestUser {
    let email = format!("agent{n}@test.example");
    let r = app
        .post(
            "/api/v1/users",
            &app.admin.token,
            &json!({"email": email, "display_name": format!("Agent {n}"), "password": "correct horse",
                    "role": "agent", "capacity": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = UserId(
        r.json["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id"),
    );
    let token = app.token_for(&Principal {
        user_id: id,
        tenant_id: app.tenant,
        role: Role::Agent,
    });
    TestUser {
        id,
        tenant_id: app.tenant,
        email,
        role: Role::Agent,
        token,
    }
}

/// Two replicas, 200 simultaneous inbound conversations through both replicas' webhooks,
/// 10 agents of capacity 3 on sockets split over the replicas, accepting and finishing
/// what they are offered: no interaction is ever offered to two agents at once, no agent
/// ever holds more than its capacity, and every interaction is offered and handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_route_200_conversations_to_10_agents_without_double_offers_or_overload() {
    let app = std::sync::Arc::new(spawn_app().await);
    let wa = app.whatsapp().await;
    let (b_addr, _b) = test_support::spawn_replica(&app).await;
    let mut agents = Vec::new();
    for n in 0..10 {
        agents.push(agent(&app, n).await);
    }
    // Each agent: a socket on replica A or B, Ready, accepts every offer, ends and marks
    // it Done shortly after, and records the highest load it ever saw.
    let mut workers = Vec::new();
    for (n, who) in agents.into_iter().enumerate() {
        let app = app.clone();
        let addr = if n % 2 == 0 {
            app.addr.to_string()
        } else {
            b_addr.clone()
        };
        workers.push(tokio::spawn(async move {
            let url = format!("ws://{addr}/api/v1/events?access_token={}", who.token);
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
            ready(&app, &who).await;
            let base = format!("http://{addr}");
            let mut handled = 0usize;
            loop {
                let msg = match tokio::time::timeout(Duration::from_secs(8), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => t,
                    Ok(Some(Ok(Message::Ping(p)))) => {
                        let _ = ws.send(Message::Pong(p)).await;
                        continue;
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => break,
                };
                let e: Value = serde_json::from_str(&msg).expect("event");
                if e["kind"] != "interaction.offered" {
                    continue;
                }
                let i = e["payload"]["interaction_id"]
                    .as_str()
                    .expect("id")
                    .to_owned();
                let act_on = |what: &'static str| {
                    let (app, base, token, i) =
                        (app.clone(), base.clone(), who.token.clone(), i.clone());
                    async move {
                        app.client
                            .post(format!("{base}/api/v1/interactions/{i}/{what}"))
                            .bearer_auth(&token)
                            .json(&json!({}))
                            .send()
                            .await
                            .expect("act")
                            .status()
                    }
                };
                assert_eq!(act_on("accept").await, StatusCode::OK);
                handled += 1;
                let finish = act_on("done");
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    assert_eq!(finish.await, StatusCode::OK);
                });
            }
            handled
        }));
    }
    // 200 conversations, signed webhooks alternately into A and B, all at once.
    let mut sends = Vec::new();
    for n in 0..200 {
        let app = app.clone();
        let base = if n % 2 == 0 {
            app.base.clone()
        } else {
            format!("http://{b_addr}")
        };
        let body = serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA-SIM", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"},
                "contacts": [{"profile": {"name": format!("Contact {n}")}, "wa_id": format!("1415600{n:04}")}],
                "messages": [{"from": format!("1415600{n:04}"), "id": format!("wamid.load{n}"),
                              "timestamp": chrono::Utc::now().timestamp().to_string(), "type": "text", "text": {"body": "hello"}}]
            }}]}]
        }))
        .expect("json");
        let sig = channel_connector::signature::sign(wa.app_secret.as_bytes(), &body);
        let url = format!("{base}{}", wa.webhook_path);
        sends.push(tokio::spawn(async move {
            app.client
                .post(url)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", sig)
                .body(body)
                .send()
                .await
                .expect("webhook")
                .status()
        }));
    }
    for s in sends {
        assert_eq!(s.await.expect("task"), StatusCode::OK);
    }
    let mut total = 0;
    for w in workers {
        total += w.await.expect("agent");
    }
    assert_eq!(total, 200, "every interaction accepted exactly once");
    let not_done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM interactions WHERE state <> 'done'")
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(not_done, 0);
    let accepted_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT interaction_id FROM offers WHERE state = 'accepted'
                               GROUP BY interaction_id HAVING count(*) > 1) d",
    )
    .fetch_one(&app.db)
    .await
    .expect("dups");
    assert_eq!(accepted_twice, 0);
    // Capacity, replayed from the history: at no moment did an agent hold more than 3
    // interactions (offered to them, or active/ended with them).
    let over: Option<(uuid::Uuid, i64)> = sqlx::query_as(
        "WITH spans AS (
             SELECT agent_id, created_at AS t0, COALESCE(decided_at, now()) AS t1 FROM offers WHERE state <> 'accepted'
             UNION ALL
             SELECT o.agent_id, o.created_at, COALESCE(i.done_at, now()) FROM offers o JOIN interactions i ON i.id = o.interaction_id
             WHERE o.state = 'accepted'
         ), points AS (SELECT DISTINCT agent_id, t0 AS t FROM spans)
         SELECT p.agent_id, count(*) FROM points p JOIN spans s ON s.agent_id = p.agent_id AND s.t0 <= p.t AND p.t < s.t1
         GROUP BY p.agent_id, p.t HAVING count(*) > 3 LIMIT 1",
    )
    .fetch_optional(&app.db)
    .await
    .expect("capacity");
    assert_eq!(over, None, "an agent held more than its capacity");
    let concurrent_pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM offers a JOIN offers b ON a.interaction_id = b.interaction_id AND a.id < b.id
         WHERE a.created_at < COALESCE(b.decided_at, now()) AND b.created_at < COALESCE(a.decided_at, now())",
    )
    .fetch_one(&app.db)
    .await
    .expect("overlap");
    assert_eq!(
        concurrent_pending, 0,
        "an interaction was offered to two agents at once"
    );
}
