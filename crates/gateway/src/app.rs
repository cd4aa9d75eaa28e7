//! The application: shared state, the router with its middleware, and `serve`.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use conversation_store::attachments::{BlobStore, FsBlobStore, PgBlobStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa_axum::router::OpenApiRouter;

use crate::{auth::JwtKeys, config::Config, error::ApiError, metrics::Metrics, routes};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database pool.
    pub db: sqlx::PgPool,
    /// Access-token keys.
    pub jwt: Arc<JwtKeys>,
    /// Settings.
    pub config: Arc<Config>,
    /// Metric registry.
    pub metrics: Arc<Metrics>,
    /// Where attachment bytes live.
    pub blobs: Arc<dyn BlobStore>,
    /// HTTP client for best-effort provider calls made by handlers (read receipts).
    pub provider_http: reqwest::Client,
    /// Wake-ups from this process's one LISTEN connection (workers and event sockets).
    pub wakeups: channel_connector::worker::Wakeups,
    /// Open event-stream sockets per user on this process.
    pub sockets: crate::events::SocketCounts,
    /// When this process last wrote each connected user's presence.
    pub presence: crate::events::PresenceMarks,
    /// Turns for reading uploads (`PARLEY_UPLOADS_AT_ONCE`).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Newly sequenced events, read once per process and shared by its sockets.
    pub feed: crate::events::Feed,
    /// The group-commit writer that stores webhooks.
    pub ingest: crate::ingest::IngestWriter,
    /// Channel accounts as webhooks last read them.
    pub webhook_accounts: crate::routes::webhooks::WebhookAccounts,
    /// Cancelled at shutdown; WebSocket tasks and workers watch it (axum's graceful
    /// shutdown does not wait for upgraded sockets).
    pub shutdown: CancellationToken,
}

impl AppState {
    /// State over an existing pool.
    pub fn new(db: sqlx::PgPool, config: Config, jwt_secret: &[u8]) -> Self {
        let jwt = Arc::new(JwtKeys::new(jwt_secret, config.access_token_ttl));
        // Files in PostgreSQL; ones an earlier version wrote to the attachments
        // directory are read from there (and copied in) on first use.
        let blobs: Arc<dyn BlobStore> = Arc::new(PgBlobStore::new(
            db.clone(),
            Some(FsBlobStore::new(config.attachments_dir())),
        ));
        let metrics = Metrics::new();
        let wakeups = channel_connector::worker::Wakeups::new(&[
            channel_connector::outbox::CHANNEL,
            channel_connector::media::CHANNEL,
            conversation_store::events::APPEND_CHANNEL,
            conversation_store::events::READY_CHANNEL,
            interaction_router::ROUTE_CHANNEL,
            conversation_store::accounts::AUTH_CHANNEL,
            conversation_store::events::ERASED_CHANNEL,
        ]);
        Self {
            provider_http: channel_connector::http_client(Duration::from_secs(10)),
            wakeups: wakeups.clone(),
            shutdown: CancellationToken::new(),
            feed: crate::events::feed(config.event_feed_pages),
            sockets: crate::events::SocketCounts::default(),
            presence: crate::events::PresenceMarks::default(),
            uploads: Arc::new(tokio::sync::Semaphore::new(config.uploads_at_once)),
            webhook_accounts: Default::default(),
            ingest: crate::ingest::IngestWriter::new(
                db.clone(),
                metrics.clone(),
                wakeups,
                config.ingest_writers,
                config.ingest_batch_max,
            ),
            db,
            jwt,
            blobs,
            config: Arc::new(config),
            metrics,
        }
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// All routes and their OpenAPI description, without state or middleware.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(routes::health::router())
        .nest("/api/v1", routes::v1())
        .merge(routes::platform::router())
        .merge(routes::webhooks::router())
        .merge(routes::sms::webhooks())
}

/// The complete HTTP application.
pub fn build_router(state: AppState) -> Router {
    let (router, _) = api_router().split_for_parts();
    let cors = cors_layer(&state.config.cors_origins);
    let body_limit = state.config.body_limit;
    let timeout = state.config.request_timeout;
    router
        .route(
            "/openapi.yaml",
            axum::routing::get(routes::health::openapi_yaml),
        )
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
        // Outermost last: request id → trace span → propagate id → catch panic → timeout →
        // body limit → CORS.
        .layer(cors)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            request_timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        // One line per request at INFO (method, route, status, latency); 5xx answers are
        // logged once by the error itself, with their cause, not again here.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                )
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            MakeRequestUuid,
        ))
}

fn make_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(req.uri().path(), MatchedPath::as_str);
    tracing::info_span!("request", request_id, method = %req.method(), route)
}

/// Requests that store a provider's data are answered with what became of it, however
/// long the commit takes: a webhook answered 503 after its data was committed would be
/// sent again by the provider for nothing, and one answered 200 before would be a lie.
fn answers_after_commit(path: &str) -> bool {
    path.starts_with("/webhooks/") || path.ends_with("/replay")
}

/// `PARLEY_REQUEST_TIMEOUT_SECS` for every request but those that answer after a commit.
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if answers_after_commit(req.uri().path()) {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request took too long and was abandoned; it may be tried again",
        )
        .into_response(),
    }
}

fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred; it has been logged",
    )
    .into_response()
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([X_REQUEST_ID.clone()])
        .max_age(Duration::from_secs(600))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.yaml",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support that method; see /openapi.yaml",
    )
}

/// The outbox dispatcher for this state's database and settings.
pub fn dispatcher(state: &AppState) -> channel_connector::outbox::Dispatcher {
    channel_connector::outbox::Dispatcher::new(
        state.db.clone(),
        state.blobs.clone(),
        channel_connector::outbox::DispatchConfig {
            backoff_base: state.config.outbox_backoff,
            provider_timeout: state.config.provider_timeout,
            lease: state.config.provider_timeout + Duration::from_secs(40),
            owner: Some(state.wakeups.instance()),
            ..Default::default()
        },
    )
}

/// Start the background work of one gateway process: its one LISTEN connection, the
/// outbox dispatcher, the media fetcher, the event sequencer, the router, the event pruner
/// and the presence sweeper. All stop when `state.shutdown` is cancelled.
pub fn spawn_workers(state: &AppState, tracker: &tokio_util::task::TaskTracker) {
    let stop = state.shutdown.clone();
    tracker.spawn(channel_connector::worker::listen(
        state.db.clone(),
        state.wakeups.clone(),
        stop.clone(),
    ));
    tracker.spawn(dispatcher(state).run(
        state.wakeups.subscribe(channel_connector::outbox::CHANNEL),
        stop.clone(),
    ));
    tracker.spawn(media_fetcher(state).run(
        state.wakeups.subscribe(channel_connector::media::CHANNEL),
        stop.clone(),
    ));
    tracker.spawn(crate::events::run_sequencer(state.clone(), stop.clone()));
    tracker.spawn(crate::events::run_feed(state.clone(), stop.clone()));
    tracker.spawn(run_router(state.clone(), stop.clone()));
    tracker.spawn(run_search_reindex(state.db.clone(), stop.clone()));
    tracker.spawn(crate::events::run_pruner(
        state.db.clone(),
        state.config.event_retention,
        stop,
    ));
}

/// After an upgrade that changed how text is analysed for search, analyse again the
/// messages and contacts stored before it (newest messages first), a batch per
/// transaction, then stop. Replicas share the work (`SKIP LOCKED`); until a row is done
/// it is found as its old analysis allows.
pub async fn run_search_reindex(db: sqlx::PgPool, shutdown: CancellationToken) {
    use conversation_store::{contacts, messages};
    const BATCH: i64 = 500;
    let (mut done_messages, mut done_contacts, mut logged) = (0_u64, 0_u64, 0_u64);
    while !shutdown.is_cancelled() {
        let round = async {
            let mut tx = db.begin().await?;
            let m = messages::reindex_stale(&mut tx, BATCH).await?;
            let c = contacts::reindex_stale(&mut tx, BATCH).await?;
            tx.commit().await?;
            Ok::<_, conversation_store::StoreError>((m, c))
        }
        .await;
        match round {
            Ok((0, 0)) => break,
            Ok((m, c)) => {
                done_messages += m;
                done_contacts += c;
                if done_messages >= logged + 100_000 {
                    logged = done_messages;
                    tracing::info!(messages = done_messages, "search re-index in progress");
                }
                // Leave the database room for the traffic it serves meanwhile.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "search re-index failed; retrying in 30 s");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }
    if done_messages + done_contacts > 0 {
        tracing::info!(
            messages = done_messages,
            contacts = done_contacts,
            "search re-index finished"
        );
    }
}

/// Route queued interactions and expire unanswered offers, woken by NOTIFY
/// `parley_route`, polling twice a second for offer timeouts.
pub async fn run_router(state: AppState, shutdown: CancellationToken) {
    let settings = interaction_router::RouteSettings {
        offer_timeout_secs: state.config.offer_timeout.as_secs_f64(),
        offline_grace_secs: state.config.offline_grace.as_secs_f64(),
        continuation_window_secs: state.config.continuation_window.as_secs_f64(),
    };
    let pool = state.db.clone();
    channel_connector::worker::run(
        state.wakeups.subscribe(interaction_router::ROUTE_CHANNEL),
        "router",
        Duration::from_millis(500),
        shutdown,
        || {
            let pool = pool.clone();
            async move {
                let mut conn = pool.acquire().await?;
                match interaction_router::route_round(&mut conn, &settings).await {
                    Ok(n) => Ok(n),
                    Err(interaction_router::RouterError::Database(e)) => Err(e),
                    Err(e) => Err(sqlx::Error::Protocol(e.to_string())),
                }
            }
        },
    )
    .await;
}

/// The inbound media fetcher for this state.
pub fn media_fetcher(state: &AppState) -> channel_connector::media::MediaFetcher {
    channel_connector::media::MediaFetcher::new(
        state.db.clone(),
        state.blobs.clone(),
        state.config.outbox_backoff,
    )
}

/// Serve `router` on an already-bound listener until `shutdown` is cancelled, then finish
/// in-flight requests. At most `max_per_ip` connections from one client address are held
/// open (one beyond is closed as soon as it is accepted), and a client has
/// `header_timeout` to send a request's headers once it has started them (slow-loris).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    max_per_ip: usize,
    header_timeout: Duration,
) -> std::io::Result<()> {
    use axum::serve::Listener as _;
    let mut listener = CappedListener {
        inner: listener,
        counts: crate::events::SocketCounts::default(),
        max_per_ip,
    };
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(ClientAddr(addr)));
                tower::ServiceExt::oneshot(router.clone(), req)
            });
        let stop = shutdown.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The client's address, as `ConnectInfo<ClientAddr>` (the TCP peer; behind a proxy, the
/// proxy).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// A TCP listener that refuses a client address more than `max_per_ip` open connections.
pub struct CappedListener {
    inner: TcpListener,
    counts: crate::events::SocketCounts,
    max_per_ip: usize,
}

/// An accepted connection holding its address's slot until it closes.
pub struct Counted {
    stream: tokio::net::TcpStream,
    _slot: crate::events::SocketSlot,
}

impl axum::serve::Listener for CappedListener {
    type Io = Counted;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            let key = crate::events::SlotKey::ConnectionsFrom(addr.ip());
            match self.counts.take(key, self.max_per_ip) {
                Some(slot) => {
                    // Every write goes out at once: with Nagle's algorithm a small write
                    // (an event frame) waits while an earlier one is unacknowledged, and
                    // a client delaying its acknowledgement holds it up to 40 ms.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    return (
                        Counted {
                            stream,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                None => {
                    tracing::warn!(client = %addr.ip(), "connection refused: too many from this address");
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = inner.local_addr().expect("addr");
        let mut listener = CappedListener {
            inner,
            counts: crate::events::SocketCounts::default(),
            max_per_ip: 4,
        };
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = axum::serve::Listener::accept(&mut listener).await;
        assert!(
            accepted.stream.nodelay().expect("read TCP_NODELAY"),
            "Nagle's algorithm is on for an accepted connection"
        );
    }
}
