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
async fn made_up_method_names_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    for i in 0..300 {
        let method = Method::from_bytes(format!("INVENTED{i}").as_bytes()).expect("method");
        let r = app.call(method, "/api/v1/me", None, None).await;
        assert!(r.status.is_client_error(), "{}", r.status);
    }
    let r = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.text.contains("INVENTED"),
        "a made-up method became a label"
    );
    assert!(
        r.text.contains(r#"method="other""#),
        "made-up methods are counted together"
    );
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

/// A client that opens connections and trickles nothing (slow-loris) holds at most
/// `PARLEY_MAX_CONNECTIONS_PER_IP` of them; the next is closed at once, and a slot frees
/// when one of its connections closes.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = test_support::spawn_app_with(&[("PARLEY_MAX_CONNECTIONS_PER_IP", "3")]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect");
        // Half a request line, then nothing.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        held.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The fourth is accepted by the kernel and closed by the gateway without an answer.
    let mut extra = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        extra.read_to_end(&mut buf),
    )
    .await
    .expect("closed promptly");
    assert!(
        read.is_err() || buf.is_empty(),
        "answered beyond the cap: {}",
        String::from_utf8_lossy(&buf)
    );
    // One of the held connections goes away: a new client is served again.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..50 {
        let client = test_support::http();
        if let Ok(r) = client.get(app.url("/healthz")).send().await
            && r.status().is_success()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "a freed slot was not reused");
}

/// Event-stream sockets are capped per client address as well as per user.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_event_sockets() {
    let app = test_support::spawn_app_with(&[("PARLEY_WS_MAX_PER_IP", "2")]).await;
    let url = |token: &str| format!("ws://{}/api/v1/events?access_token={token}", app.addr);
    let (_a, _) = tokio_tungstenite::connect_async(url(&app.agent.token))
        .await
        .expect("first");
    let (_b, _) = tokio_tungstenite::connect_async(url(&app.supervisor.token))
        .await
        .expect("second");
    match tokio_tungstenite::connect_async(url(&app.admin.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 429);
        }
        other => panic!("a third socket from one address was not refused: {other:?}"),
    }
}

/// A client that starts a request and never finishes its headers (slow-loris) is cut off
/// after `PARLEY_HEADER_TIMEOUT_SECS`, while a prompt client on another connection is
/// served meanwhile.
#[tokio::test]
async fn a_request_whose_headers_never_finish_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = test_support::spawn_app_with(&[("PARLEY_HEADER_TIMEOUT_SECS", "1")]).await;
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let r = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("prompt");
    assert!(r.status().is_success());
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut buf),
    )
    .await
    .expect("the half-sent request was never cut off");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        read.is_err() || buf.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text}"
    );
}
