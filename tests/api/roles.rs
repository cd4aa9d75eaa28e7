//! The role matrix, generated from the OpenAPI document: every operation that documents a
//! role's 403 refuses the roles below it (and only those), every other operation never
//! answers an authenticated agent 403 for their role, and the set of restricted
//! operations is the one written here, so widening or narrowing a permission is a
//! deliberate change to this file.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;
use test_support::{TestApp, TestUser, spawn_app};

use crate::isolation::{body_for, fill, fill_value, required_query, seed_a, send};

/// Operations only admins may call.
const ADMIN_ONLY: &[&str] = &[
    "get /api/v1/channel-accounts",
    "post /api/v1/channel-accounts",
    "get /api/v1/channel-accounts/{account_id}",
    "patch /api/v1/channel-accounts/{account_id}",
    "get /api/v1/channel-accounts/{account_id}/dead-letters",
    "post /api/v1/channel-accounts/{account_id}/dead-letters/{dead_letter_id}/replay",
    "post /api/v1/channel-accounts/{account_id}/templates/sync",
    "post /api/v1/not-ready-reasons",
    "delete /api/v1/not-ready-reasons/{code}",
    "post /api/v1/queues",
    "put /api/v1/queues/{queue_id}",
    "delete /api/v1/queues/{queue_id}",
    "get /api/v1/users",
    "post /api/v1/users",
    // Another user's record; one's own is open to everyone.
    "get /api/v1/users/{user_id}",
    "patch /api/v1/users/{user_id}",
];

/// Operations only supervisors and admins may call.
const SUPERVISOR_ONLY: &[&str] = &[
    "get /api/v1/agents",
    "delete /api/v1/contacts/{contact_id}",
    "get /api/v1/contacts/{contact_id}/export",
    "get /api/v1/reports/agents",
    "post /api/v1/standard-responses",
    "patch /api/v1/standard-responses/{response_id}",
    "delete /api/v1/standard-responses/{response_id}",
    "post /api/v1/templates",
    "patch /api/v1/templates/{template_id}",
    "delete /api/v1/templates/{template_id}",
];

struct Op {
    key: String,
    method: String,
    path: String,
    forbidden: Option<String>,
    /// Required query parameters, filled with a valid value.
    query: String,
}

fn operations() -> Vec<Op> {
    let doc: Value =
        yaml_serde::from_str(&gateway::openapi::yaml().expect("generate")).expect("yaml");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // The bearer-token API; login, refresh and logout (every role's own session), the
        // event socket (tested on its own), uploads (multipart, open to every role) and the
        // operator's routes are not role-checked.
        if !path.starts_with("/api/v1/")
            || path.starts_with("/api/v1/auth/")
            || path == "/api/v1/events"
            || path == "/api/v1/attachments"
        {
            continue;
        }
        for (method, op) in item.as_object().expect("item") {
            let forbidden = op["responses"]["403"]["description"]
                .as_str()
                .map(str::to_owned);
            ops.push(Op {
                query: required_query(op),
                key: format!("{method} {path}"),
                method: method.clone(),
                path: path.clone(),
                forbidden,
            });
        }
    }
    ops
}

async fn call(app: &TestApp, op: &Op, who: &TestUser, ids: &Objects) -> test_support::Reply {
    let body = body_for(&op.method, &op.path, &who.id.to_string()).map(|b| fill_value(&b, ids));
    let path = format!("{}{}", fill(&op.path, ids), op.query);
    send(app, &op.method, &path, &who.token, body.as_ref()).await
}

type Objects = std::collections::BTreeMap<&'static str, String>;

#[tokio::test]
async fn every_role_restricted_operation_refuses_the_roles_below_it() {
    let app = spawn_app().await;
    let mut ids = seed_a(&app).await.ids;
    // "Another user" for the user routes.
    ids.insert("user_id", app.admin.id.to_string());
    let ops = operations();

    // The contract documents exactly the restrictions listed here.
    let documented = |needle: &str| -> BTreeSet<String> {
        ops.iter()
            .filter(|o| o.forbidden.as_deref().is_some_and(|d| d.contains(needle)))
            .map(|o| o.key.clone())
            .collect()
    };
    let expect = |list: &[&str]| {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(documented("Not an admin"), expect(ADMIN_ONLY));
    assert_eq!(
        documented("Not a supervisor or admin"),
        expect(SUPERVISOR_ONLY)
    );

    // Refusals first (they change nothing).
    for op in &ops {
        let below: Vec<&TestUser> = if ADMIN_ONLY.contains(&op.key.as_str()) {
            vec![&app.agent, &app.supervisor]
        } else if SUPERVISOR_ONLY.contains(&op.key.as_str()) {
            vec![&app.agent]
        } else {
            vec![]
        };
        for who in below {
            let r = call(&app, op, who, &ids).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{} as {:?}: {}",
                op.key,
                who.role,
                r.text
            );
            assert_eq!(r.code(), "forbidden", "{}", op.key);
        }
    }
    // Then every operation as the least role allowed to call it: never refused for the
    // role, never a server error. Deletions go last so that the others find their objects.
    let mut ordered: Vec<&Op> = ops.iter().collect();
    ordered.sort_by_key(|o| o.method == "delete");
    for op in ordered {
        let who = if ADMIN_ONLY.contains(&op.key.as_str()) {
            &app.admin
        } else if SUPERVISOR_ONLY.contains(&op.key.as_str()) {
            &app.supervisor
        } else {
            &app.agent
        };
        let r = call(&app, op, who, &ids).await;
        assert!(
            !r.status.is_server_error(),
            "{} as {:?}: {} {}",
            op.key,
            who.role,
            r.status,
            r.text
        );
        if r.status == StatusCode::FORBIDDEN {
            // Only the owner rule of interactions may refuse an allowed role.
            assert!(
                op.forbidden
                    .as_deref()
                    .is_some_and(|d| d.contains("another agent")),
                "{} refused {:?}: {}",
                op.key,
                who.role,
                r.text
            );
        }
    }
}
