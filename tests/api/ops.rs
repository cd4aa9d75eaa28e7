//! Health, readiness, metrics, request ids and unknown routes.

use reqwest::{Method, StatusCode};
use test_support::{read_reply, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "ok");
    let r = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "ready");
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database_as_503() {
    let app = spawn_app().await;
    app.db.close().await;
    let r = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.content_type(), "application/problem+json");
    assert_eq!(r.code(), "unavailable");
    // Liveness does not depend on the database.
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.get("/api/v1/me", &app.agent.token).await;
    app.get("/api/v1/me", &app.agent.token).await;
    app.get("/api/v1/users", &app.agent.token).await;
    let r = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let m = &r.text;
    assert!(
        m.contains(r#"parley_http_requests_total{method="GET",route="/api/v1/me",status="200"} 2"#),
        "{m}"
    );
    assert!(m.contains(
        r#"parley_http_requests_total{method="GET",route="/api/v1/users",status="403"} 1"#
    ));
    assert!(m.contains("parley_http_request_duration_seconds_bucket"));
    assert!(m.contains("parley_db_pool_max_connections 10"));
    assert!(m.contains("parley_db_pool_connections"));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_a_given_one() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/healthz", None, None).await;
    let id = r.headers["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("send");
    assert_eq!(res.headers()["x-request-id"], "trace-me-123");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_json() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/api/v1/nope", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.content_type(), "application/problem+json");
    let r = app
        .call(Method::DELETE, "/api/v1/auth/login", None, None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.content_type(), "application/problem+json");
}

#[tokio::test]
async fn openapi_yaml_is_served() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/openapi.yaml"))
        .send()
        .await
        .expect("send");
    let r = read_reply(res).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.starts_with("openapi: 3."),
        "{}",
        &r.text[..r.text.len().min(80)]
    );
    assert!(r.text.contains("/api/v1/auth/login"));
}
