//! A user of one tenant never sees or changes another tenant's objects.

use reqwest::StatusCode;
use serde_json::json;
use test_support::spawn_app;

#[tokio::test]
async fn tenant_a_gets_404_for_tenant_b_objects() {
    let app = spawn_app().await;
    let (_, [b_admin, _, b_agent]) = app.other_tenant().await;

    // Read another tenant's user by id.
    let r = app
        .get(&format!("/api/v1/users/{}", b_agent.id), &app.admin.token)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.code(), "not_found");

    // Change another tenant's user by id.
    let r = app
        .patch(
            &format!("/api/v1/users/{}", b_agent.id),
            &app.admin.token,
            &json!({"display_name": "hijacked"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .get(&format!("/api/v1/users/{}", b_agent.id), &b_admin.token)
        .await;
    assert_eq!(r.json["display_name"], "Test agent");

    // Listing shows only one's own tenant.
    let r = app.get("/api/v1/users?limit=200", &app.admin.token).await;
    let tenants: Vec<&str> = r.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["tenant_id"].as_str())
        .collect();
    assert_eq!(tenants.len(), 3);
    assert!(tenants.iter().all(|t| *t == app.tenant.to_string()));

    // And the other way round.
    let r = app
        .get(&format!("/api/v1/users/{}", app.agent.id), &b_admin.token)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_token_naming_another_tenant_for_a_real_user_is_refused() {
    let app = spawn_app().await;
    let (b_tenant, _) = app.other_tenant().await;
    // A correctly signed token whose user is in tenant A but claims tenant B.
    let token = app.token_for(&parley_core::Principal {
        user_id: app.admin.id,
        tenant_id: b_tenant,
        role: parley_core::Role::Admin,
    });
    let r = app.get("/api/v1/users", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn each_state_machine_has_the_databases_spellings() {
    use parley_core::state::{
        AgentState, IdentityStatus, InteractionState, OfferState, OutboxState,
    };
    let app = test_support::spawn_app().await;
    for (constraint, ours) in [
        (
            "interactions_state_check",
            InteractionState::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        ),
        (
            "offers_state_check",
            OfferState::ALL.iter().map(|s| s.as_str()).collect(),
        ),
        (
            "agent_states_state_check",
            AgentState::ALL.iter().map(|s| s.as_str()).collect(),
        ),
        (
            "channel_identities_status_check",
            IdentityStatus::ALL.iter().map(|s| s.as_str()).collect(),
        ),
        (
            "outbox_state_check",
            OutboxState::ALL.iter().map(|s| s.as_str()).collect(),
        ),
    ] {
        let def: String = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1",
        )
        .bind(constraint)
        .fetch_one(&app.db)
        .await
        .unwrap_or_else(|e| panic!("{constraint}: {e}"));
        let mut allowed: Vec<&str> = def.split('\'').skip(1).step_by(2).collect();
        allowed.sort_unstable();
        let mut ours = ours;
        ours.sort_unstable();
        assert_eq!(allowed, ours, "{constraint}: {def}");
    }
}
